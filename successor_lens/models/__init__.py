"""Models from four kinds of source, each recorded in the model's provenance:

- embedded, offline: `smollm2-135m` (the default) and `gemma3-270m` (`embedded.py`);
- a TransformerLens official name, through the Hugging Face hub or its cache (`hub.py`);
- a local Hugging Face checkpoint folder (`local.py`);
- generated controls, `planted-gpt2` and `random-gpt2` (`controls.py`, built by `planted.py`).

`registry.py` picks the source of a name; `loading.py` loads any of them; `provenance.py` says how
a model was loaded; `fingerprints.py` hashes what a source would load without loading it. The
names below are imported lazily, so `successor_lens.models.registry` stays free of torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "load_model": "loading", "model_shape": "loading", "shape_of": "loading", "ModelShape": "loading", "LazyModel": "loading",
    "LeanModel": "lean", "LeanCheckpoint": "lean",
    "model_provenance": "provenance", "model_id": "provenance", "tokenizer_facts": "provenance", "prepended_bos": "provenance",
    "model_fingerprint": "provenance",
    "DEFAULT_MODEL": "registry", "source_kind": "registry", "source_fingerprint": "registry", "source_for": "registry",
    "cache_root": "fingerprints", "WEIGHT_PROCESSING": "fingerprints",
    "EMBEDDED": "embedded", "load_embedded_hf": "embedded",
    "llama_config": "hf_configs", "gemma3_config": "hf_configs",
    "ModelLoadError": "successor_lens.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'successor_lens.models' has no attribute {name!r}")
    module = _EXPORTS[name]
    return getattr(import_module(module if "." in module else f"successor_lens.models.{module}"), name)
