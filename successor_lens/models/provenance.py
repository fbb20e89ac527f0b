"""What every artefact records about its model: the source, the weight processing, the tokenizer's
facts, the id viewers know it by, and a content hash of its weights."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from transformer_lens import HookedTransformer

from successor_lens.models.attributes import note
from successor_lens.models.embedded import EMBEDDED
from successor_lens.models.fingerprints import WEIGHT_PROCESSING
from successor_lens.models.registry import DTYPES, torch_dtype


def model_provenance(model: HookedTransformer) -> dict[str, Any]:
    """How a model was loaded, for every artefact that depends on it: its source, the weight
    processing, and the tokenizer's facts."""
    info = getattr(model, "successor_lens_source", None)
    info = info if isinstance(info, dict) else {"kind": "in code", "source": info or "constructed in code"}
    return {
        "model": model.cfg.model_name,
        **info,
        "weight_processing": WEIGHT_PROCESSING,
        "dtype": dtype_name(model),
        "prepend_bos": model.cfg.default_prepend_bos,
        "n_layers": model.cfg.n_layers,
        "n_heads": model.cfg.n_heads,
        "d_model": model.cfg.d_model,
        "tokenizer": tokenizer_facts(model),
    }


def dtype_name(model: HookedTransformer) -> str:
    """The precision the model's weights were rounded to (`--dtype`, noted at load), else the dtype it holds them in."""
    noted = getattr(model, "successor_lens_dtype", None)
    if isinstance(noted, str):
        return noted
    return next((name for name in DTYPES if torch_dtype(name) == model.cfg.dtype), str(model.cfg.dtype))


def model_id(model: HookedTransformer) -> tuple[str, bool]:
    """The id viewers and sae-lens metadata use for `model` (`HookedTransformer.from_pretrained`'s name,
    as sae-dashboard's Neuronpedia export takes it) and whether TransformerLens knows it. An embedded
    model without a TransformerLens name (SmolLM2) gets its Hugging Face id, marked unknown."""
    from transformer_lens.loading_from_pretrained import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    info = getattr(model, "successor_lens_source", None)
    name = model.cfg.model_name
    if isinstance(info, dict) and info.get("kind") == "embedded":
        spec = next(s for s in EMBEDDED.values() if s.source == info["source"])
        return (spec.tl_name, True) if spec.tl_name else (spec.hf_id, False)
    if isinstance(info, dict) and info.get("kind") == "hub":
        name = info["source"].removeprefix("Hugging Face hub: ")
    if name in OFFICIAL_MODEL_NAMES:
        return name, True
    official = next((o for o, aliases in MODEL_ALIASES.items() if name in aliases), None)
    return (official, True) if official else (name, False)


def tokenizer_facts(model: HookedTransformer) -> dict[str, Any] | None:
    """What the analysis depends on: the tokenizer's class and size, its BOS and whether the model
    prepends it, and how the numbers 0..500 tokenize: "single tokens" (at least " 0".." 200", the scan's
    range, as GPT-2's), "digit strings" (SmolLM2, Gemma, Llama 3) or "mixed"."""
    tok = model.tokenizer
    if tok is None:
        return None
    cached = getattr(model, "_successor_lens_tokenizer_facts", None)
    if cached is None:
        single = [len(tok.encode(f" {n}", add_special_tokens=False)) == 1 for n in range(501)]
        kind = "single tokens" if all(single[:201]) else ("digit strings" if sum(single) <= 10 else "mixed")
        cached = {"class": type(tok).__name__, "vocab_size": len(tok), "bos_token": getattr(tok, "bos_token", None),
                  "prepends_bos": bool(model.cfg.default_prepend_bos), "numbers_0_500_single_token": sum(single), "numbers": kind}
        note(model, _successor_lens_tokenizer_facts=cached)
    return cached


def prepended_bos(model: HookedTransformer) -> int | None:
    """The BOS id to put before a prompt, or None when this model is run without one."""
    if not model.cfg.default_prepend_bos or model.tokenizer is None:
        return None
    return getattr(model.tokenizer, "bos_token_id", None)


@torch.no_grad()
def model_fingerprint(model: HookedTransformer, samples: int = 4096) -> str:
    """Content hash of the weights (names, shapes and a strided sample of each tensor's values).

    Cheap (no pass over every weight) and enough to tell two checkpoints or two planted models apart.
    """
    h = hashlib.sha256()
    for name, param in model.state_dict().items():
        flat = param.detach().flatten()
        step = max(1, flat.numel() // samples)
        h.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
        h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


