"""How to train an SAE, and the training defaults of each token source: defined once, light to
import (no torch), so the CLI takes its defaults and help from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from successor_lens.errors import ConfigError, check_float, check_int

ARCHS = ("topk", "batchtopk", "standard", "jumprelu")
SPARSE_ARCHS = ("topk", "batchtopk")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Saved with every SAE (device and precision are not: see `Runtime`)."""

    arch: str = "topk"
    """SAE architecture: topk, batchtopk (exported as JumpReLU), standard (L1) or jumprelu."""
    d_sae: int = 128
    """Number of latents (the default suits the succession token set, the CLI's default; vocabulary and
    corpus data default to 8 x d_model: `DEFAULTS`)."""
    k: int = 8
    """Active latents per input (topk), or on average per input (batchtopk)."""
    steps: int = 1500
    """Training steps."""
    batch_size: int = 256
    """Activations per step."""
    lr: float = 4e-4
    """Peak Adam learning rate."""
    warmup_frac: float = 0.05
    """Fraction of steps of linear lr warm-up from 0."""
    decay_frac: float = 0.2
    """Fraction of final steps of linear lr decay to 0."""
    l1_coefficient: float = 5.0
    """Sparsity penalty for the standard (L1) architecture."""
    l0_coefficient: float = 1.0
    """Sparsity penalty for JumpReLU."""
    aux_k: int = 0
    """Latents used by the AuxK loss on dead latents (0: d_in // 2)."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss (topk family)."""
    dead_after_steps: int = 100
    """A latent that has not fired for this many steps counts as dead (AuxK, dead fraction)."""
    seed: int = 0
    """Fixes initialisation and data order; with it a CPU run is bit-for-bit repeatable."""
    checkpoint_every: int = 200
    """Steps between checkpoints (when a checkpoint folder is given)."""
    log_every: int = 20
    """Steps between progress updates and `on_log` calls."""

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown architecture {self.arch!r}: use one of {', '.join(ARCHS)}")
        for name in ("d_sae", "steps", "batch_size", "checkpoint_every", "log_every", "dead_after_steps"):
            check_int(f"--{name.replace('_', '-')}", getattr(self, name), 1)
        if self.arch in SPARSE_ARCHS:
            check_int("--k", self.k, 1, self.d_sae, "k active latents need at least k latents (--d-sae)")
        check_int("aux_k", self.aux_k, 0)
        check_int("--seed", self.seed, 0)
        check_float("--lr", self.lr, 0, 1, open_lo=True)
        for name in ("l1_coefficient", "l0_coefficient", "aux_coefficient", "warmup_frac", "decay_frac"):
            check_float(f"--{name.replace('_', '-')}", getattr(self, name), 0)
        if not 0 <= self.warmup_frac + self.decay_frac <= 1:
            raise ConfigError("warmup_frac + decay_frac must lie in [0, 1]")

    def lr_at(self, step: int) -> float:
        warm = max(1, round(self.warmup_frac * self.steps))
        decay = round(self.decay_frac * self.steps)
        if step < warm:
            return self.lr * (step + 1) / warm
        if decay and step >= self.steps - decay:
            return self.lr * (self.steps - step) / decay
        return self.lr


# Per token set defaults when the user gives none. The succession set has a few hundred rows, so
# the dictionary is smaller than the number of tokens (a latent must be shared by several tokens
# rather than memorise one) and the batch is small; vocabulary and corpus data take the usual 8x.
# The succession set's defaults are TrainConfig's own (one set of defaults for the API and the CLI).
DEFAULTS: dict[str, dict[str, int | None]] = {
    "succession": {"d_sae": TrainConfig.d_sae, "k": TrainConfig.k, "batch_size": TrainConfig.batch_size, "steps": TrainConfig.steps},
    "vocab": {"d_sae": None, "k": 32, "batch_size": 4096, "steps": 2000},
    "corpus": {"d_sae": None, "k": 32, "batch_size": 4096, "steps": 2000},
}


SPLICE_WINDOWS = 16
"""Corpus windows (seed 1, 128 tokens) for the spliced-in loss of an in-context dictionary."""


def default_train_config(tokens: str, d_model: int, **overrides) -> TrainConfig:
    """The TrainConfig for a token source, with `overrides` (None values ignored) on top."""
    if tokens not in DEFAULTS:
        raise ConfigError(f"unknown token source {tokens!r}: use succession, vocab or corpus")
    values: dict[str, Any] = {k: v for k, v in DEFAULTS[tokens].items() if v is not None}
    values.setdefault("d_sae", 8 * d_model)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)
