"""The facts successor-lens attaches to a model it loaded, as plain attributes beside the module's own:

- `successor_lens_source`: how it was loaded (`kind`, `source`, content hashes; `provenance.py` reads it);
- `successor_lens_fingerprint`: `registry.loaded_fingerprint` of its name and dtype, at load;
- `successor_lens_dtype`: the `--dtype` its weights were rounded to ("fp32", "bf16", "fp16");
- `successor_lens_weights`: `provenance.model_fingerprint` of its weights at load, to notice edits;
- `_successor_lens_tokenizer_facts`: `provenance.tokenizer_facts`, computed once.
"""

from __future__ import annotations

from typing import Any, TypeVar

M = TypeVar("M")


def note(model: M, **facts: Any) -> M:
    """Attach `facts` to `model` (read back with `getattr(model, name, None)`); returns the model."""
    vars(model).update(facts)
    return model
