"""The model organism's shape and recipe, and its compact-vocabulary architecture: light at import
(no torch), so the CLI and the model registry read it at once (`organism.py`, `organism_train.py`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from successor_lens.errors import ConfigError, check_int

BOS = 50256
"""GPT-2's <|endoftext|>: first in every training window, as TransformerLens prepends it."""


@dataclass(frozen=True)
class OrganismConfig:
    """The organism's shape and training recipe (the shipped weights record theirs)."""

    n_layers: int = 4
    """Transformer blocks."""
    d_model: int = 128
    """Residual stream width."""
    n_heads: int = 4
    """Attention heads per layer (d_head = d_model / n_heads)."""
    d_mlp: int = 128
    """MLP hidden width (at 512 no successor head emerged: the MLPs looked successors up instead; docs/models.md)."""
    n_ctx: int = 128
    """Positions the model has."""
    seq_len: int = 64
    """Tokens per training window (BOS first)."""
    batch: int = 32
    """Windows per step."""
    steps: int = 3000
    """Optimiser steps (AdamW)."""
    lr: float = 2e-3
    """Peak learning rate (linear warm-up, cosine decay to a tenth)."""
    warmup: int = 100
    """Warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not biases, gains or positions)."""
    documents: int = 60000
    """Documents generated for the corpus (cycled in a seeded order per epoch)."""
    seed: int = 0
    """Fixes the corpus, the initial weights and the batch order."""

    def __post_init__(self):
        for name in ("n_layers", "d_model", "n_heads", "d_mlp", "n_ctx", "seq_len", "batch", "steps", "documents"):
            check_int(name, getattr(self, name), 1)
        check_int("warmup", self.warmup, 0)
        check_int("seed", self.seed, 0)
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}: pick sizes that divide")
        if self.seq_len > self.n_ctx:
            raise ConfigError(f"seq_len {self.seq_len} exceeds n_ctx {self.n_ctx}: lower --seq-len")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, not {value!r}")


def compact_config(config: OrganismConfig, n_vocab: int, name: str = "organism-gpt2"):
    """The HookedTransformerConfig the organism trains in: GPT-2's architecture over `n_vocab` rows."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        n_layers=config.n_layers, d_model=config.d_model, d_head=config.d_model // config.n_heads, n_heads=config.n_heads,
        d_mlp=config.d_mlp, d_vocab=n_vocab, n_ctx=config.n_ctx, act_fn="gelu_new", normalization_type="LN",
        positional_embedding_type="standard", original_architecture="GPT2LMHeadModel", default_prepend_bos=True,
        model_name=name, seed=config.seed,
    )
