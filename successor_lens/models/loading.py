"""`load_model` and `model_shape` over every kind of source (`registry.py`).

Weights are always loaded *unprocessed* (no LayerNorm folding, no centring): SAEs on the embedding
and the MLP0 output learn different things when those are changed, so the choice is explicit and
recorded in `model_provenance(model)`, with the tokenizer's facts (BOS, how numbers tokenize).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer

from successor_lens.models.attributes import note
from successor_lens.models.embedded import EmbeddedSource
from successor_lens.models.provenance import model_fingerprint
from successor_lens.models.registry import DEFAULT_MODEL, canonical_name, loaded_fingerprint, source_for, torch_dtype


@dataclass(frozen=True)
class ModelShape:
    """A model's dimensions, known before its weights load: arguments are checked against it first."""

    name: str
    n_layers: int
    n_heads: int
    d_model: int
    n_ctx: int
    d_vocab: int


def model_shape(name: str) -> ModelShape:
    """The shape of `name` from its config alone (no weights). Raises `ModelLoadError` for a name
    that cannot be loaded, so that is known before any work too."""
    name = canonical_name(name)
    cfg = source_for(name).config(name)
    return ModelShape(name, cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.n_ctx, cfg.d_vocab)


def shape_of(model: HookedTransformer) -> ModelShape:
    c = model.cfg
    return ModelShape(c.model_name, c.n_layers, c.n_heads, c.d_model, c.n_ctx, c.d_vocab)


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
    dtype: str = "fp32",
) -> HookedTransformer:
    """Load `name` as a HookedTransformer with unprocessed weights, in eval mode, its weights rounded
    to `dtype` ("fp32", "bf16" or "fp16": `round_weights`) and its arithmetic in fp32.

    `name` is an embedded model ("smollm2-135m", the default, or "gemma3-270m"; offline), the
    trained model organism ("organism-gpt2"; shipped, offline), a generated control ("planted-gpt2": a known answer at the paper's scale; "random-gpt2": a null),
    a local Hugging Face folder ("./my-checkpoint"), or any TransformerLens model name (gpt2,
    EleutherAI/pythia-70m, ...), which needs the Hugging Face hub or its local cache. `cache_dir`
    overrides where an embedded model's conversion is cached. An embedded model's Hugging Face id
    ("HuggingFaceTB/SmolLM2-135M-Instruct") loads the embedded model unless the hub cache holds it.
    """
    name = canonical_name(name)
    torch_dtype(dtype)  # a bad name before the weights load
    source = source_for(name)
    model = source.load(name, Path(cache_dir) if cache_dir else None) if isinstance(source, EmbeddedSource) else source.load(name)
    model.to(device)
    model.eval()
    round_weights(model, dtype)
    linear_layout(model)
    # the weights' own hash too, to notice weights edited after loading
    note(model, successor_lens_dtype=dtype, successor_lens_fingerprint=loaded_fingerprint(name, dtype),
         successor_lens_weights=model_fingerprint(model))
    return model


@torch.no_grad()
def round_weights(model: HookedTransformer, dtype: str) -> HookedTransformer:
    """Round every weight to `dtype` and hold it back in fp32: the model as a bf16 or fp16 checkpoint
    runs, with every sum in fp32. This is the lean path's convention too (weights held in `--dtype`, each
    layer computed in fp32), so the two paths give one answer. Computing in bf16 on the CPU would be slower and
    would make every analysis that meets the weights cast them. The peak memory is the fp32 load's either way."""
    if dtype != "fp32":
        low = torch_dtype(dtype)
        for param in model.parameters():
            param.copy_(param.to(low).float())
    return model


@torch.no_grad()
def linear_layout(model: HookedTransformer) -> HookedTransformer:
    """Store the weights that TransformerLens multiplies through `F.linear(x, W.T.contiguous())` (gated
    MLPs, the unembedding) already transposed in memory, so that `.T.contiguous()` is the tensor itself
    rather than a copy of it on every forward pass (for SmolLM2 about 0.4 GB copied per call; a tenth of
    the time of a pass). The values, and the layout `F.linear` sees, are the same: the same sums."""
    for module in model.modules():
        names = ("W_in", "W_gate", "W_out") if hasattr(module, "W_gate") else ("W_U",) if hasattr(module, "b_U") else ()
        for name in names:
            param = getattr(module, name, None)
            if isinstance(param, torch.nn.Parameter) and param.ndim == 2 and param.is_contiguous():
                param.data = param.data.T.contiguous().T
    return model


@dataclass
class LazyModel:
    """`load_model(name, device, dtype=dtype)` deferred until called; its `fingerprint` is known at once."""

    name: str
    device: str = "cpu"
    log: Any = print
    dtype: str = "fp32"

    def __post_init__(self):
        self.name = canonical_name(self.name)
        self.fingerprint = loaded_fingerprint(self.name, self.dtype)

    def __call__(self) -> HookedTransformer:
        self.log(f"loading {self.name}{'' if self.dtype == 'fp32' else f' (weights rounded to {self.dtype})'} ...")
        return load_model(self.name, device=self.device, dtype=self.dtype)
