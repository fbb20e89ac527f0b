"""The probes' configs, light to import (no torch): the CLI takes its defaults and help from them."""

from __future__ import annotations

from dataclasses import dataclass

from successor_lens.errors import ConfigError, check_int

EMBEDDINGS: tuple[str, ...] = ("mlp0", "embed+mlp0", "residual")


@dataclass(frozen=True)
class ScanConfig:
    embedding: str = "mlp0"
    """Effective embedding: "mlp0" (paper), "embed+mlp0", or "residual" (token run alone)."""
    mlp0_norm: bool = True
    """Apply the layer-0 MLP's input norm to W_E before MLP0 (the paper's choice is unconfirmed)."""
    input_norm: bool = True
    """Apply each layer's attention input norm (ln1) before W_V, as a pre-norm model does."""
    post_norms: bool = True
    """Apply the norms a model puts after a sublayer (Gemma 2/3's ln2_post after MLP0 and ln1_post
    after attention), so the circuit is what the model writes; False is the reading that skips them."""

    def __post_init__(self):
        if self.embedding not in EMBEDDINGS:
            raise ConfigError(f"unknown embedding {self.embedding!r}: use one of {', '.join(EMBEDDINGS)}")


@dataclass
class WildConfig:
    top_positions: int = 100
    """Positions (where each head helps most) that are classified."""
    attend_top: int = 3
    """Tokens each head attends to most at a position, for its category."""
    mean_contexts: int = 16
    """Windows whose positions give each head's mean output for the ablation."""
    batch: int = 8
    """Windows per forward pass."""
    succession_cases: int = 64
    """Succession cases (next token follows an item seen shortly before) to attribute."""
    lookback: int = 24
    """Tokens before a position searched for the item a succession case continues."""
    rank_positions: int = 128
    """Random positions where every head's exact direct effect is measured (head ranking)."""
    seed: int = 0
    """Seed of the window order and the ranking sample."""

    def __post_init__(self):
        for name in ("top_positions", "attend_top", "mean_contexts", "batch", "succession_cases", "lookback", "rank_positions"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
