"""Content fingerprints of what a model source loads, and where converted weights are cached.

Light to import (no torch, no TransformerLens): the stage keys of a fully cached run are computed
from these without loading, or even importing, the model code.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from successor_lens.errors import ModelLoadError, UserError
from successor_lens.filenames import FILE_DIGESTS
from successor_lens.io import digest, file_sha256, read_json, regular_file, write_json

WEIGHT_PROCESSING = {
    "fold_ln": False,
    "center_writing_weights": False,
    "center_unembed": False,
    "fold_value_biases": False,
    "refactor_factored_attn_matrices": False,
}
"""TransformerLens's weight processing, all off: SAEs on the embedding and the MLP0 output learn
different things when LayerNorm is folded or weights are centred, so weights load unprocessed."""


def cache_root() -> Path:
    """Where converted weights live: $SUCCESSOR_LENS_CACHE, else ~/.cache/successor_lens."""
    env = os.environ.get("SUCCESSOR_LENS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "successor_lens"


FULL_CHECK = False
"""Set by `--verify-cache`: every cached file is hashed in full, no remembered hash trusted."""


def remembered_sha256(paths: list[Path]) -> str:
    """sha256 of the files' concatenated contents, remembered per (path, inode, size, mtime) in the
    cache folder so an unchanged file is hashed once. The memo is ours, but an unreadable one (or
    an entry that is not a sha256) is only ignored and rebuilt."""
    for p in paths:  # a FIFO or a device named like a weights file would hang the hash, never end it
        regular_file(p, "file", 1 << 50, ModelLoadError, "a checkpoint's files must be regular files")
    stamps = [(p.resolve(), p.stat()) for p in paths]
    stamp = digest([[str(r), st.st_ino, st.st_size, st.st_mtime_ns] for r, st in stamps])
    memo_path = cache_root() / FILE_DIGESTS
    try:
        memo = read_json(memo_path, "memo", dict, max_bytes=16 << 20) if memo_path.is_file() else {}
    except UserError:
        memo = {}
    if FULL_CHECK or not (isinstance(memo.get(stamp), str) and len(memo[stamp]) == 64):
        memo[stamp] = file_sha256(paths)
        with contextlib.suppress(OSError):  # a read-only cache only costs the hash next time
            write_json(memo_path, memo)
    return memo[stamp]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
                   "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model", "chat_template.jinja", "generation_config.json")
"""The files of a checkpoint folder besides its weights and config that change a result: which
token an item is, what is prepended, how prompts are cut (transformers reads these by name)."""


def folder_fingerprint(kind: str, folder: Path) -> str:
    """A checkpoint folder by content: its safetensors weights and config.json, every tokenizer and
    generation file present (`TOKENIZER_FILES`, each by name), and the converter's version. Two
    folders with one set of weights and different tokenizers are two models."""
    import importlib.metadata

    files = sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
    tokenizer = {name: remembered_sha256([folder / name]) for name in TOKENIZER_FILES if (folder / name).is_file()}
    return digest({"kind": kind, "files": remembered_sha256(files), "tokenizer": tokenizer,
                   "transformer_lens": importlib.metadata.version("transformer-lens")})
