"""Which kind of source a model name is, behind one small interface per kind.

Each source (`embedded.py`, `controls.py`, `organism.py`, `local.py`, `hub.py`) answers the same four questions:
does it claim a name, what is the content fingerprint of what it would load (without torch), what
is the model's config (no weights), and load it. Asked in order; the hub takes any name left.
Light at import, so the CLI checks names and computes stage keys at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from successor_lens.models.controls import ControlSource
from successor_lens.models.embedded import DEFAULT_MODEL as DEFAULT_MODEL  # re-exported: the CLI reads it here
from successor_lens.models.embedded import EmbeddedSource, embedded_alias
from successor_lens.models.hub import HubSource
from successor_lens.models.local import LocalSource
from successor_lens.models.organism import OrganismSource

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
else:  # at run time these are Any, so runtime type checkers accept them and the module stays free of torch
    HookedTransformer = HookedTransformerConfig = Any


@runtime_checkable
class ModelSource(Protocol):
    kind: str

    def claims(self, name: str) -> bool: ...

    def fingerprint(self, name: str) -> str:
        """A content hash of what `load(name)` loads, known without loading it."""
        ...

    def config(self, name: str) -> HookedTransformerConfig:
        """The model's config, from its files alone (no weights)."""
        ...

    def load(self, name: str) -> HookedTransformer:
        """The model with unprocessed fp32 weights, its `successor_lens_source` set."""
        ...


SOURCES: tuple[ModelSource, ...] = (EmbeddedSource(), ControlSource(), OrganismSource(), LocalSource(), HubSource())


DTYPES = ("fp32", "bf16", "fp16")
"""What `--dtype` accepts: the precision a model's weights are rounded to and held in (`loading.load_model`,
`lean.LeanCheckpoint`). The arithmetic runs in fp32 either way."""


def torch_dtype(name: str):
    """The torch dtype of a `DTYPES` name (imports torch)."""
    import torch

    from successor_lens.errors import ModelLoadError

    if name not in DTYPES:
        raise ModelLoadError(f"--dtype {name!r}: use one of {', '.join(DTYPES)}")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def canonical_name(name: str) -> str:
    """The name a model is known by here: an embedded model's Hugging Face id is that model
    (`embedded_alias`), every other name is itself."""
    return embedded_alias(name)


def source_for(name: str) -> ModelSource:
    return next(source for source in SOURCES if source.claims(name))


def source_kind(name: str) -> str:
    """"embedded", "control", "local" (a folder) or "hub" (a TransformerLens name)."""
    return source_for(canonical_name(name)).kind


def source_fingerprint(name: str) -> str:
    """A content hash of what `load_model(name)` loads, computed without loading it: the GGUF's
    sha256 and the converting libraries (embedded), the weight files' sha256 and config (local
    folder, hub snapshot), or the generator's source (controls). File hashes are remembered per
    (path, size, mtime), so this is instant after the first time: the stage cache of a fully cached
    run never needs the model."""
    name = canonical_name(name)
    return source_for(name).fingerprint(name)


def loaded_fingerprint(name: str, dtype: str = "fp32") -> str:
    """`source_fingerprint` of what `load_model(name, dtype=dtype)` gives: the weights rounded to `dtype`
    are other weights, so every cache and run folder keyed by it tells the two apart (fp32 is the
    plain fingerprint, as before `--dtype` existed)."""
    fingerprint = source_fingerprint(name)
    return fingerprint if dtype == "fp32" else f"{fingerprint}-{dtype}"


def fingerprint_dtype(fingerprint: str) -> str:
    """The dtype a `loaded_fingerprint` was made for."""
    return fingerprint.partition("-")[2] or "fp32"
