"""Mining on a real model: items, activations, SAEs (trained or loaded), classes, recurrence."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer

from successor_lens.errors import ConfigError, UserError
from successor_lens.features.matrix import ItemTable
from successor_lens.features.mine_config import MineConfig
from successor_lens.features.mining import MinedFeatures, MiningNull, Recurrence, mine, mining_null, recurrence
from successor_lens.filenames import MINE
from successor_lens.io import BadFileError, atomic_path, check_safetensors, file_sha256, read_json
from successor_lens.nulls import value_vs_draws
from successor_lens.paper import FIGURES
from successor_lens.progress import honours_progress
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
    """Per SAE: sha256 of its weights file, so every artefact can be matched to the dictionary it describes."""
    """Per SAE: the index-permutation and untrained-SAE nulls (empty when not computed)."""

    def figures(self) -> dict:
        """Headline mining figures (means over the dictionaries), each with its null draws and verdict.

        Three nulls, each measured in the same run (docs/method.md, "Nulls"): the index
        permutation, the tokenizer-aware relabelling (numbers relabelled keeping the token they are
        read at) and an untrained dictionary built from the tested one (`untrained_null`). A figure
        is above its null only when it beats every draw of every null. `classes_found` counts the
        classes whose modal feature beats the 99% quantile of the pooled null draws for that class
        (quality = selectivity x modal coverage); its null is the same count for each null draw
        against the others (leave one out). `classes_found_raw` is the plain
        count of classes with an assigned latent, beside the same nulls.
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
                        verdicts[kind] = value_vs_draws(value, entry[kind], what)
                entry["untrained"] = [stat(u) for u in self.nulls[0].untrained]
                verdicts["untrained"] = value_vs_draws(value, entry["untrained"], self.untrained_null)
                entry.update({f"null_{k}": v.null for k, v in verdicts.items()})
                entry.update(null=max(v.null or 0.0 for v in verdicts.values()), above=all(v.above for v in verdicts.values()),
                             test="above every draw of the " + ", ".join(v.test.split(" of the ")[-1] for v in verdicts.values()))
            out[name] = entry
        if have_nulls:
            pools = [n.label_draws + self.nulls[0].untrained for n in self.nulls]
            found = [len(beats_null(m, pool)) for m, pool in zip(self.mined, pools)]
            pool = pools[0]
            loo = [len(beats_null(d, pool[:r] + pool[r + 1 :])) for r, d in enumerate(pool)]
            v = value_vs_draws(mean(found), loo, "same count for each null draw against the others")
            out["classes_found"] = {"value": mean(found), "per_sae": found, "null_draws": loo, "null": v.null, "above": v.above,
                                    "classes": [sorted(beats_null(m, p)) for m, p in zip(self.mined, pools)],
                                    "test": v.test}
        else:
            out["classes_found"] = {"value": out["classes_found_raw"]["value"], "test": "no null computed: the raw count"}
        return out

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


def class_quality(m: MinedFeatures) -> dict[int, float]:
    """Per class: the modal latent's selectivity times its coverage of the class (0 when not found)."""
    return {c: float(m.selectivity[m.modal_latent[c]]) * m.modal_coverage[c] if c in m.modal_latent else 0.0
            for c in range(m.config.modulus)}


def beats_null(m: MinedFeatures, draws: list[MinedFeatures], q: float = 0.99) -> list[int]:
    """Classes whose feature quality in `m` is above the `q` quantile of that class's quality over
    the null draws (p <= 1 - q per class; with fewer than 1 / (1 - q) draws, above every draw)."""
    quality, nulls = class_quality(m), [class_quality(d) for d in draws]
    if not nulls:
        return [c for c in quality if quality[c] > 0]
    return [c for c in quality if quality[c] > 0 and quality[c] > float(np.quantile([n[c] for n in nulls], q, method="higher"))]




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
    nulls = [mining_null(sae, acts, table, untrained if i == 0 else [], cfg, null_draws, seed=i) for i, sae in enumerate(dictionaries)]
    digests = [weights_digest(s) for s in sources]
    return MineRun(mined, rec, directions, [_within(s, out) for s in sources], nulls, digests, kind)


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
