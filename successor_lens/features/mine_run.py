"""Mining on a real model: items, activations, SAEs (trained or loaded), classes, recurrence."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer

from successor_lens.errors import ConfigError, UserError
from successor_lens.features.class_test import ClassTest, class_test, unsplit_rows, untrained_codes, untrained_key, untrained_statistics
from successor_lens.features.matrix import ItemTable
from successor_lens.features.mine_config import MineConfig
from successor_lens.features.mining import MinedFeatures, MiningNull, Recurrence, mine, mining_null, recurrence
from successor_lens.filenames import MINE
from successor_lens.io import BadFileError, atomic_path, check_safetensors, file_sha256, read_json
from successor_lens.nulls import ALPHA, all_of, benjamini_hochberg, draws_for, fmt_p, holm, value_vs_draws
from successor_lens.paper import FIGURES
from successor_lens.progress import bar, honours_progress
from successor_lens.sae_train.dictionary import load_dictionary, rotated_like, untrained_like, weights_digest
from successor_lens.sae_train.harvest import cached_item_rows
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sae_train.train_config import default_train_config
from successor_lens.sae_train.train_run import train_sae
from successor_lens.sites import hook_name, item_activations
from successor_lens.tasks import Task, build_token_set, sae_tasks


def item_table(model: HookedTransformer, tasks: list[Task] | None = None) -> ItemTable:
    """The SAE-data items (default `sae_tasks()`: numbers 0..500 and the other tasks, both variants, Roman held out)."""
    return ItemTable.from_token_set(build_token_set(model.tokenizer, tasks or sae_tasks()))


def item_acts(model: HookedTransformer, table: ItemTable, site_or_hook: str, run_folder: Path | None = None,
              tasks: list[Task] | None = None) -> torch.Tensor:
    """The items' activations at a site ("mlp0", "embed") or any hook, on the CPU. With `run_folder`,
    the rows the activations stage cached there (for these `tasks`) are read, not recomputed; the
    others (the held-out tasks, which the SAE data leaves out) are computed."""
    hook = hook_name(site_or_hook)
    site = next((s for s in ("mlp0", "embed") if hook_name(s) == hook), None)
    found = cached_item_rows(model, site, run_folder, tasks) if run_folder is not None and site is not None else None
    if found is None:
        return item_activations(model, table.ids, hook)
    row_of, cached = found
    have = [n for n, ids in enumerate(table.ids) if ids in row_of]
    out = torch.empty(len(table.ids), cached.meta["d_in"])
    out[have] = cached.rows(torch.tensor([row_of[table.ids[n]] for n in have], dtype=torch.long))
    rest = [n for n, ids in enumerate(table.ids) if ids not in row_of]
    if rest:
        out[rest] = item_activations(model, [table.ids[n] for n in rest], hook)
    return out


@dataclass
class MineRun:
    mined: list[MinedFeatures]
    recurrence: Recurrence
    directions: dict[int, torch.Tensor]
    """The features passed downstream: modal (recurring) ones, else the first SAE's."""
    sae_sources: list[str]
    nulls: list[MiningNull] = field(default_factory=list)
    sae_digests: list[str | None] = field(default_factory=list)
    untrained_null: str = "rotated-dictionary null"
    """Which untrained-dictionary null: our trainer's initialisation for dictionaries trained in this
    run, the tested dictionary rotated for dictionaries loaded from elsewhere."""
    class_tests: list[ClassTest] = field(default_factory=list)
    """Per SAE: the per-class test (`class_test.py`), corrected over every (SAE, class) in `figures`."""

    def figures(self) -> dict:
        """Headline mining figures (means over the dictionaries), each with its null draws and verdict.

        Three nulls, each measured in the same run (docs/method.md, "Nulls"): the index
        permutation, the tokenizer-aware relabelling (numbers relabelled keeping the token they are
        read at) and an untrained dictionary built from the tested one (`untrained_null`). A figure
        is above its null when its permutation p against each null is at most `ALPHA` (`nulls.all_of`)
        and it beats the nulls' means by its minimum effect (`MIN_EFFECT`). `classes_found` is the
        per-class test's count (`classes_figure`); `classes_found_raw` is the plain count of
        classes with an assigned latent, beside the three nulls.
        """
        stats = {
            "classes_found_raw": lambda m: len(m.classes_found),
            "class_latents": lambda m: len(m.latent_class),
            "modal_coverage": lambda m: m.mean_modal_coverage_unsplit,
            "modal_coverage_all_items": lambda m: m.mean_modal_coverage,
        }
        out: dict[str, dict[str, Any]] = {}
        have_nulls = bool(self.nulls and self.nulls[0].permuted and self.nulls[0].untrained)
        for name, stat in stats.items():
            value = mean([stat(m) for m in self.mined])
            entry: dict[str, Any] = {"value": value}
            if have_nulls:
                kinds = {"permuted": "index-permutation null", "relabelled": "tokenizer-aware relabelling null"}
                verdicts = {}
                for kind, what in kinds.items():
                    draws = len(getattr(self.nulls[0], kind))
                    if draws:
                        entry[kind] = [mean([stat(getattr(n, kind)[r]) for n in self.nulls]) for r in range(draws)]
                        verdicts[kind] = value_vs_draws(value, entry[kind], what, MIN_EFFECT[name])
                entry["untrained"] = [stat(u) for u in self.nulls[0].untrained]
                verdicts["untrained"] = value_vs_draws(value, entry["untrained"], self.untrained_null, MIN_EFFECT[name])
                entry.update({f"null_{k}": v.null for k, v in verdicts.items()})
                entry.update({k: v for k, v in all_of(verdicts, "the three nulls").to_json().items() if k != "value"})
            out[name] = entry
        out["classes_found"] = self.classes_figure() if self.class_tests else {
            "value": out["classes_found_raw"]["value"], "test": "no null computed: the raw count"}
        return out

    def classes_figure(self) -> dict[str, Any]:
        """Classes found: per SAE, the classes whose per-class test (`class_test.py`) is rejected by
        Holm over every (SAE, class) of the run at `ALPHA`; the figure is the mean count, above its
        null when any class is rejected (family-wise error <= ALPHA under the null that no SAE holds
        any class). Benjamini-Hochberg's count (false-discovery rate ALPHA) is given beside it."""
        tests = self.class_tests
        modulus = len(tests[0].p)
        flat = [p for t in tests for p in t.p]
        holm_ok, bh_ok = holm(flat, ALPHA), benjamini_hochberg(flat, ALPHA)
        classes = [[c for c in range(modulus) if holm_ok[i * modulus + c]] for i in range(len(tests))]
        bh = [sum(bh_ok[i * modulus : (i + 1) * modulus]) for i in range(len(tests))]
        value = mean([len(c) for c in classes])
        smallest = min(flat)
        test = (f"per class: the best latent's standardised activation difference in vs outside the class (Cohen's d) on the "
                f"{tests[0].n_items} items whose class is not in their "
                f"read-at token, above {tests[0].draws} within-task permutations and {tests[0].untrained_draws} draws of the "
                f"{self.untrained_null}; Holm over {len(flat)} (SAE, class) tests, alpha {ALPHA}")
        above = any(holm_ok)
        note = None if above else f"no class passes Holm (smallest p {fmt_p(smallest)}, threshold {ALPHA / len(flat):.2g})"
        return {"value": value, "null": 0.0, "above": above, "p": min(1.0, smallest * len(flat)), "test": test, "note": note,
                "per_sae": [len(c) for c in classes], "classes": classes, "bh_per_sae": bh,
                "per_class": [t.to_json() for t in tests]}

    def to_json(self) -> dict:
        return {
            "saes": self.sae_sources,
            "per_sae": [{**m.summary(), "weights_sha256": d} for m, d in zip(self.mined, self.sae_digests or [None] * len(self.mined))],
            "recurrence": self.recurrence.summary(),
            "downstream_features": sorted(self.directions),
            "figures": self.figures(),
            "untrained_null": self.untrained_null,
            "paper": FIGURES,
        }


MIN_EFFECT = {"classes_found_raw": 1.0, "class_latents": 1.0, "modal_coverage": 0.05, "modal_coverage_all_items": 0.05}
"""The smallest excess over a null's mean that a mining figure must show to be above it: one class,
one latent, five points of coverage (a null that is 0 in every draw makes 0.003 "significant")."""


def mean(values) -> float:
    return sum(values) / len(values) if values else float("nan")


@honours_progress
def mine_model(
    model: HookedTransformer, out: Path, runtime: Runtime, saes: list[str] | None = None, seeds: int = 3,
    steps: int | None = None, cfg: MineConfig | None = None, site: str = "mlp0", progress: bool = True,
    tasks: list[Task] | None = None, null_draws: int | None = None,
) -> MineRun:
    """Mine the dictionaries in `saes` (or `seeds` new ones trained on the succession items) at `site`,
    with the index-permutation and untrained-dictionary nulls and the recurrence across dictionaries."""
    cfg = cfg or MineConfig()
    null_draws = cfg.null_draws if null_draws is None else null_draws
    table = item_table(model, tasks)
    acts = item_acts(model, table, site, out, tasks)
    dictionaries, sources, ours = [], [], []
    if saes is not None and not saes:
        raise ConfigError("no dictionary to mine: pass --sae FOLDER, or leave it out to train --seeds new ones")
    if saes:
        for path in saes:
            d = load_dictionary(path, device="cpu", expected_d_in=model.cfg.d_model, expected_hook=hook_name(site))
            dictionaries.append(d.sae)
            sources.append(d.source)
            ours.append(d.provenance.get("package") == "successor-lens" and "train_config" in d.provenance)
    else:
        for seed in range(seeds):
            cfg_s = default_train_config("succession", model.cfg.d_model, steps=steps, seed=seed)
            run = train_sae(model, site, cfg_s, out, runtime, progress=progress, tasks=tasks)
            assert run is not None  # one process: it saves the dictionary
            dictionaries.append(run.sae)
            sources.append(str(run.folder))
            ours.append(True)
    mined = [mine(sae, acts, table, cfg) for sae in dictionaries]
    rec = recurrence(mined)
    directions = rec.modal_directions or mined[0].directions
    if not ours[0]:  # a dictionary from elsewhere: its own weights, rotated (its initialisation is not known here)
        untrained, kind = [rotated_like(dictionaries[0], 1000 + r) for r in range(null_draws)], "rotated-dictionary null"
    else:  # trained by this package (its provenance says so): what our trainer starts from
        data_mean = acts[~table.held_out].mean(0)
        untrained = [untrained_like(dictionaries[0], 1000 + r, data_mean) for r in range(null_draws)]
        kind = "untrained-dictionary null (this trainer's initialisation)"
    nulls = [mining_null(sae, acts, table, untrained if i == 0 else [], cfg, null_draws, seed=i)
             for i, sae in enumerate(bar(dictionaries, desc="mining nulls", unit="SAE", leave=False))]
    tests = class_tests(dictionaries, ours, acts, table, cfg.modulus) if null_draws else []
    digests = [weights_digest(s) for s in sources]
    return MineRun(mined, rec, directions, [_within(s, out) for s in sources], nulls, digests, kind, tests)


def class_tests(dictionaries: list, ours: list[bool], acts: torch.Tensor, table: ItemTable, modulus: int = 10) -> list[ClassTest]:
    """The per-class test of each dictionary, with draws enough for Holm over all of them
    (`draws_for`). Its untrained null: our trainer's initialisation for ours (one set of draws for
    dictionaries whose untrained draws are the same, `untrained_key`), the dictionary rotated for
    one from elsewhere."""
    draws = draws_for(len(dictionaries) * modulus)
    data_mean = acts[~table.held_out].mean(0)
    rows = unsplit_rows(table)
    shared: dict[tuple, torch.Tensor] = {}
    out = []
    for i, (sae, own) in enumerate(bar(list(zip(dictionaries, ours)), desc="per-class tests", unit="SAE", leave=False)):
        key = untrained_key(sae) if own else None
        if key is None or key not in shared:
            codes = untrained_codes(sae, acts[rows], seed=2000 + i, data_mean=data_mean if own else None)
            null = untrained_statistics(codes, table, draws, modulus)
            if key is not None:
                shared[key] = null
        out.append(class_test(sae, acts, table, draws, shared.get(key, null) if key is not None else null, seed=i, modulus=modulus))
    return out


def _within(source: str, out) -> str:
    """A dictionary inside the run folder by its path relative to it (the folder can move or be
    shared); any other source as given."""
    path = Path(source)
    if out is not None and path.exists() and path.resolve().is_relative_to(Path(out).resolve()):
        return str(path.resolve().relative_to(Path(out).resolve()))
    return source


def save_directions(path: Path, directions: dict[int, torch.Tensor]) -> Path:
    with atomic_path(path) as tmp:
        save_file({f"f{c}": v.contiguous() for c, v in directions.items()}, tmp)
    return path


def load_directions(path: Path) -> dict[int, torch.Tensor]:
    """The mod-10 directions f0..f9 saved beside mine.json, checked to be the very file mine.json
    describes (its `features_sha256`): a `mine` stopped between writing the two is caught here."""
    if not path.is_file():
        raise UserError(f"{path} not found: run `successor-lens mine` (or `run`) with the same --out first")
    record = path.parent / MINE
    fix = "rerun `successor-lens mine` (or `run`) with the same --out"
    expected = read_json(record, "mine record", dict, UserError, fix).get("features_sha256") if record.is_file() else None
    if expected != file_sha256([path]):
        raise UserError(f"{path} is not the file {record} describes (no or another features_sha256: a `mine` was stopped "
                        f"between writing the two, or one was replaced): {fix}")
    try:
        check_safetensors(path)
        tensors = load_file(path)
        directions = {int(k[1:]): v for k, v in tensors.items()}
    except (BadFileError, ValueError, OSError) as err:
        raise UserError(f"{path}: unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__}): rerun `successor-lens mine`") from None
    if not all(0 <= c <= 9 and v.ndim == 1 and torch.isfinite(v).all() for c, v in directions.items()):
        raise UserError(f"{path}: not the mod-10 feature directions f0..f9 (finite vectors): rerun `successor-lens mine`")
    return directions
