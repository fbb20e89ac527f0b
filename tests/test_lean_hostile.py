"""The lean reader trusts nothing it reads: crafted checkpoints (lying header lengths, offsets past
the end or overlapping, unknown dtypes, shapes that overflow, an index that is not a mapping or is
nested 200,000 deep, absurd configs, broken tokenizers, special files as weights) are one line and
exit 2 from `heads --lean`, as from the full path, never a traceback, a RecursionError or a hang."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from hub_cache import snapshot

from successor_lens.cli.main import main


def _rewrite_header(path: Path, change) -> None:
    """Rewrite a safetensors file's header through `change(header) -> header`, keeping its data."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = change(json.loads(raw[8 : 8 + n]))
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])


def _tensors(header: dict) -> list[str]:
    return [k for k in header if k != "__metadata__"]


def _lying_length(folder: Path) -> None:
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(raw) * 4) + raw[8:])


def _offsets(folder: Path, make) -> None:
    def change(header):
        a, b = _tensors(header)[:2]
        header[b]["data_offsets"] = make(header[a]["data_offsets"], header[b]["data_offsets"])
        return header
    _rewrite_header(folder / "model.safetensors", change)


def _field(folder: Path, key: str, value) -> None:
    def change(header):
        header[_tensors(header)[0]][key] = value
        return header
    _rewrite_header(folder / "model.safetensors", change)


def _index(folder: Path, text: str) -> None:
    (folder / "model.safetensors.index.json").write_text(text)


def _config(folder: Path, **fields) -> None:
    doc = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**doc, **fields}))


def _special(folder: Path, kind: str) -> None:
    (folder / "model.safetensors").unlink()
    if kind == "fifo":
        os.mkfifo(folder / "model.safetensors")
    else:
        (folder / "model.safetensors").symlink_to("/dev/zero")


CRAFTED = {
    "header length past the end": (_lying_length, "header"),
    "offsets past the end": (lambda f: _offsets(f, lambda a, b: [b[0], b[1] + 10**9]), "byte count"),
    "offsets overlapping": (lambda f: _offsets(f, lambda a, b: [a[0] + 4, a[0] + 4 + b[1] - b[0]]), "overlap"),
    "offsets reversed": (lambda f: _offsets(f, lambda a, b: [b[1], b[0]]), "corrupt safetensors header"),
    "unknown dtype": (lambda f: _field(f, "dtype", "F99"), "not one safetensors defines"),
    "shape that overflows": (lambda f: _field(f, "shape", [2**40, 2**40, 2**40]), "byte count"),
    "index not a mapping": (lambda f: _index(f, "[1, 2]"), "not a JSON object"),
    "index nested 200,000 deep": (lambda f: _index(f, "[" * 200_000 + "]" * 200_000), "nested more than"),
    "index naming a missing shard": (lambda f: _index(f, json.dumps({"weight_map": {"x": "../../etc/passwd"}})), "not a file in the checkpoint"),
    "config with 10**9 layers": (lambda f: _config(f, n_layer=10**9), "n_layers"),
    "config with more heads than fit": (lambda f: _config(f, n_head=3), "divisible"),
    "config not JSON": (lambda f: (f / "config.json").write_text("{"), "config"),
    "broken tokenizer": (lambda f: [(f / n).write_text("{ not json") for n in ("vocab.json", "tokenizer.json", "tokenizer_config.json")
                                    if (f / n).exists()], "tokenizer"),
    "weights that are a FIFO": (lambda f: _special(f, "fifo"), "not a regular file"),
    "weights linked to /dev/zero": (lambda f: _special(f, "zero"), "not a regular file"),
}


@pytest.mark.parametrize("case, lean", [pytest.param(c, lean, id=f"{c}-{'lean' if lean else 'full'}") for c in CRAFTED for lean in (True, False)
                                        if lean or not c.startswith("index")])  # the full path reads one model.safetensors, not an index
def test_a_crafted_checkpoint_is_one_line_from_the_lean_reader(hub_models, tmp_path, case, lean, capsys):
    folder = tmp_path / "ckpt"
    shutil.copytree(snapshot(hub_models, "gpt2"), folder)
    craft, fragment = CRAFTED[case]
    craft(folder)
    capsys.readouterr()
    code = main(["heads", "--model", str(folder), *(["--lean"] if lean else []), "--out", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("successor-lens")]
    assert code == 2 and len(err) == 1, (case, err)
    assert not lean or fragment in err[0], (case, err[0])  # the full path says it in transformers' words
