"""How latents are mined into residue classes, light to import (no torch): the CLI takes its
defaults and help from it."""

from __future__ import annotations

from dataclasses import dataclass

from successor_lens.errors import check_float, check_int


@dataclass(frozen=True)
class MineConfig:
    """How latents are grouped into residue classes."""

    selectivity: float = 0.5
    """Minimum share of a latent's class-averaged activation on one class (chance is 0.1)."""
    n_clusters: int = 10
    """KMeans clusters over the latents' class profiles."""
    min_items: int = 2
    """A latent must fire on at least this many items to be considered."""
    min_tasks: int = 2
    """...and on items of at least this many tasks (variants count as one): a mod-10 feature is
    abstract, so a latent for one word (" eight" and "eight") is not one."""
    modulus: int = 10
    """Residue classes: index mod this."""
    seed: int = 0
    """KMeans seed."""
    null_draws: int = 99
    """Draws of each mining null (index permutation, tokenizer-aware relabelling, untrained
    dictionary): beating all 99 is p <= 0.01; fewer draws are a weaker test, for quick runs."""

    def __post_init__(self):
        check_float("--selectivity", self.selectivity, 0, 1, open_lo=True)
        check_int("--n-clusters", self.n_clusters, 1)
        check_int("--null-draws", self.null_draws, 1, 10_000)
