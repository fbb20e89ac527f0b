"""The main job's config and its stage keys, light to import (no torch): the CLI builds the same
`RunConfig` from its options and, with `stage_keys`, finds out whether every stage is already
cached without importing the pipeline or loading the model.

A stage's key is a hash of its own config, the model's content fingerprint, this package's source
and the keys of the stages it reads (`stage_cache.NEEDS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.corpus import context_corpus, corpus_digest
from successor_lens.errors import check_int
from successor_lens.features.mine_config import MineConfig
from successor_lens.io import code_digest, digest
from successor_lens.probes.head_id import check_head, parse_head_name
from successor_lens.probes.probe_configs import ScanConfig
from successor_lens.runner.stage_cache import STAGES, upstream

if TYPE_CHECKING:
    from successor_lens.tasks import Task
else:  # at run time these are Any, so runtime type checkers accept them and the module stays free of torch
    Task = Any


@dataclass
class RunConfig:
    scan: ScanConfig = field(default_factory=ScanConfig)
    seeds: int = 3
    """MLP0 dictionaries trained with seeds 0..seeds-1 (the recurrence check); the embedding gets one."""
    steps: int | None = None
    """Training steps per dictionary (default: the succession default)."""
    mine: MineConfig = field(default_factory=MineConfig)
    head: str | None = None
    """Head for the arithmetic and the latents' logit effects (default: chosen from the OV score
    and in-context DLA together, `probes/head_choice.py`)."""
    seed: int = 0
    """Seed of the probes' controls and splits."""
    atlas: AtlasConfig = field(default_factory=AtlasConfig)
    tasks: list[Task] | None = None
    """Item tasks for the dictionaries, mining and probes (default: numbers 0..500 and the rest)."""
    scan_tasks: list[Task] | None = None
    """Tasks of the head scan (default: the standard set, numbers 1..200)."""

    def __post_init__(self):
        check_int("--seeds", self.seeds, 1, 64, "train at least one MLP0 dictionary (2 or more for the recurrence check)")
        if self.steps is not None:
            check_int("--steps", self.steps, 1)
        check_int("seed", self.seed, 0)
        if self.head is not None:
            parse_head_name(self.head)

    def check(self, shape) -> None:
        """Checks against the model's shape (a `ModelShape`), before it loads."""
        if self.head is not None:
            check_head(self.head, shape)

    def sae_names(self) -> dict[str, tuple[str, int]]:
        names = {f"mlp0-s{s}": ("mlp0", s) for s in range(self.seeds)}
        names["embed-s0"] = ("embed", 0)
        return names


STAGE_CONFIG: dict[str, Callable[[RunConfig], dict]] = {
    "heads": lambda c: {"scan": asdict(c.scan), "tasks": c.scan_tasks},
    "incontext": lambda c: {"head": c.head},
    "activations": lambda c: {"tasks": c.tasks},
    "saes": lambda c: {"seeds": c.seeds, "steps": c.steps},
    "mine": lambda c: {"mine": asdict(c.mine)},
    "probes": lambda c: {"seed": c.seed},
    "atlas": lambda c: _atlas_key(c),
}


def _atlas_key(c: RunConfig) -> dict:
    """The atlas stage's config with its corpus resolved (None and the name it stands for are one key)
    and the corpus's content hash."""
    corpus = context_corpus(c.atlas.corpus)
    return {"atlas": {**asdict(c.atlas), "corpus": corpus}, "corpus": corpus_digest(corpus), "tasks": c.tasks}


def stage_keys(model_fingerprint: str, config: RunConfig) -> dict[str, str]:
    """Every stage's cache key, in stage order: the one function the pipeline and the CLI's cached
    path both use."""
    base = {"model": model_fingerprint, "code": code_digest()}
    keys: dict[str, str] = {}
    for stage in STAGES:
        keys[stage] = digest({**base, "stage": stage, "config": STAGE_CONFIG[stage](config), "upstream": [keys[s] for s in upstream(stage)]})
    return keys
