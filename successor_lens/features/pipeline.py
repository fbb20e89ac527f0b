"""Mining on a real model: items, activations, SAEs (trained or loaded), classes, recurrence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer

from successor_lens.features.matrix import ItemTable
from successor_lens.features.mining import MineConfig, MinedFeatures, Recurrence, mine, recurrence
from successor_lens.io import atomic_path
from successor_lens.sae_train.dictionary import load_dictionary
from successor_lens.sae_train.pipeline import default_train_config, train_sae
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sites import hook_name, token_activations
from successor_lens.tasks import Task, build_token_set, standard_tasks

FEATURES_FILE = "features.safetensors"


def item_table(model: HookedTransformer, tasks: list[Task] | None = None) -> tuple[ItemTable, torch.Tensor]:
    """The SAE-data items (default: numbers 0..500 and the other tasks, both variants, Roman held out)."""
    token_set = build_token_set(model.tokenizer, tasks or standard_tasks(range(0, 501)))
    return ItemTable.from_token_set(token_set), token_set.tokens


@dataclass
class MineRun:
    mined: list[MinedFeatures]
    recurrence: Recurrence
    directions: dict[int, torch.Tensor]
    """The features passed downstream: modal (recurring) ones, else the first SAE's."""
    sae_sources: list[str]

    def to_json(self) -> dict:
        return {
            "saes": self.sae_sources,
            "per_sae": [m.summary() for m in self.mined],
            "recurrence": self.recurrence.summary(),
            "downstream_features": sorted(self.directions),
            "paper": {"mean_modal_coverage": 0.585, "model": "Pythia-1.4B"},
        }


def mine_model(
    model: HookedTransformer, out: Path, runtime: Runtime, saes: list[str] | None = None, seeds: int = 3,
    steps: int | None = None, cfg: MineConfig = MineConfig(), site: str = "mlp0", progress: bool = True,
    tasks: list[Task] | None = None,
) -> MineRun:
    table, tokens = item_table(model, tasks)
    acts = token_activations(model, tokens, site).cpu()
    dictionaries, sources = [], []
    if saes:
        for path in saes:
            d = load_dictionary(path, device="cpu", expected_d_in=model.cfg.d_model, expected_hook=hook_name(site))
            dictionaries.append(d.sae)
            sources.append(d.source)
    else:
        for seed in range(seeds):
            cfg_s = default_train_config("succession", model.cfg.d_model, steps=steps, seed=seed)
            run = train_sae(model, site, cfg_s, out, runtime, progress=progress, tasks=tasks)
            dictionaries.append(run.sae)
            sources.append(str(run.folder))
    mined = [mine(sae, acts, table, cfg) for sae in dictionaries]
    rec = recurrence(mined)
    directions = rec.modal_directions or mined[0].directions
    return MineRun(mined, rec, directions, sources)


def save_directions(path: Path, directions: dict[int, torch.Tensor]) -> Path:
    with atomic_path(path) as tmp:
        save_file({f"f{c}": v.contiguous() for c, v in directions.items()}, tmp)
    return path


def load_directions(path: Path) -> dict[int, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `successor-lens mine` with the same --out first")
    return {int(k[1:]): v for k, v in load_file(path).items()}
