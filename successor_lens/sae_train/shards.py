"""Cached activations on disk: safetensors shards with provenance, written one at a time (so a
corpus larger than memory streams through) and read back lazily.

A cache is written in a temporary folder that replaces the old one whole (meta.json last), so a
half-written cache is never mistaken for a whole one; a cached shard that does not read back whole
is recomputed (`ShardedActivations.check`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from successor_lens.errors import UserError
from successor_lens.filenames import ACTIVATIONS_META
from successor_lens.io import TMP_TAG, BadFileError, atomic_dir, atomic_path, check_safetensors, read_json, refuse_links, write_json

SHARD_ROWS = 65536


def write_ranked(folders: dict[str, Path], batches: Iterable[tuple[int, dict[str, Tensor]]], metas: dict[str, dict], dist) -> dict[str, ShardedActivations]:
    """The harvest split across the ranks of a job: each rank writes the batches it ran as part files
    in a staging folder beside each site's folder (on a filesystem every rank shares); rank 0 then
    folds them, in batch order, into the same shards, data hash and meta.json one process writes.
    A killed job leaves only the staging folder, a tagged leftover the next run removes."""
    staging = {site: Path(folder).parent / f".{Path(folder).name}{TMP_TAG}ranks" for site, folder in folders.items()}
    if dist.main:
        for path in staging.values():
            refuse_links(path)
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
    dist.barrier()
    for j, chunk in batches:
        for site, rows in chunk.items():
            with atomic_path(staging[site] / f"part_{j:08d}.safetensors") as tmp:
                save_file({"acts": rows.float().contiguous()}, tmp)
    dist.barrier()
    if dist.main:
        for site, folder in folders.items():
            parts = sorted(staging[site].glob("part_*.safetensors"))
            with atomic_dir(folder) as tmp:
                writer = _ShardWriter(tmp)
                for part in parts:
                    writer.add(load_file(part)["acts"])
                writer.finish(metas[site])
            shutil.rmtree(staging[site])
    dist.barrier()
    return {site: ShardedActivations(folder) for site, folder in folders.items()}


def write_activations(folder: str | os.PathLike, chunks: Iterable[Tensor], meta: dict) -> ShardedActivations:
    """Stream chunks into shards of at most SHARD_ROWS rows, meta.json (with a data hash) last, in
    a temporary folder that replaces `folder` whole once every shard is written."""
    return write_many({"one": folder}, ({"one": c} for c in chunks), {"one": meta})["one"]


def write_many(folders: Mapping[str, str | os.PathLike], chunks: Iterable[dict[str, Tensor]], metas: dict[str, dict]) -> dict[str, ShardedActivations]:
    """`write_activations` for several sites fed by one stream of {site: rows} (one forward pass per
    batch for all of them); each folder is swapped in whole when the stream ends."""
    with contextlib.ExitStack() as stack:
        writers = {site: _ShardWriter(stack.enter_context(atomic_dir(folder))) for site, folder in folders.items()}
        for chunk in chunks:
            for site, rows in chunk.items():
                writers[site].add(rows)
        for site, writer in writers.items():
            writer.finish(metas[site])
    return {site: ShardedActivations(folder) for site, folder in folders.items()}


class _ShardWriter:
    def __init__(self, folder: Path):
        self.folder, self.digest, self.n_pending = folder, hashlib.sha256(), 0
        self.sizes: list[int] = []
        self.pending: list[Tensor] = []

    def add(self, rows: Tensor) -> None:
        self.pending.append(rows)
        self.n_pending += len(rows)
        if self.n_pending >= SHARD_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        shard = torch.cat(self.pending).float().contiguous()
        save_file({"acts": shard}, self.folder / f"shard_{len(self.sizes):05d}.safetensors")
        self.digest.update(shard.numpy().tobytes())
        self.sizes.append(len(shard))
        self.pending, self.n_pending = [], 0

    def finish(self, meta: dict) -> None:
        self.flush()
        if not self.sizes:
            raise UserError("no activations were produced: the token set or corpus is empty")
        d_in = load_file(self.folder / "shard_00000.safetensors")["acts"].shape[1]
        write_json(self.folder / ACTIVATIONS_META, {**meta, "d_in": d_in, "shard_rows": self.sizes, "n_rows": sum(self.sizes),
                                               "data_sha256": self.digest.hexdigest()})


class ShardedActivations:
    """Read-only rows over the shards of a cache folder, loading shards lazily."""

    def __init__(self, folder: str | os.PathLike, max_loaded: int = 4):
        self.folder = Path(folder)
        meta_path = self.folder / ACTIVATIONS_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.folder}: no meta.json (incomplete or missing activation cache): recompute it")
        self.meta = read_json(meta_path, "activation cache", dict, BadFileError, "recompute it", max_bytes=16 << 20)
        self.sizes = self.meta.get("shard_rows")
        if not (isinstance(self.sizes, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in self.sizes)):
            raise BadFileError(f"{meta_path}: no shard_rows list: recompute it")
        self.starts = torch.tensor([0] + list(torch.tensor(self.sizes).cumsum(0)[:-1].tolist()))
        self._loaded: dict[int, Tensor] = {}
        self.max_loaded = max_loaded

    def __len__(self) -> int:
        return int(self.meta["n_rows"])

    def check(self) -> None:
        """Every shard present and whole, with the rows meta.json says (headers only; cheap):
        `BadFileError` otherwise, and the cache is recomputed."""
        for i, rows in enumerate(self.sizes):
            path = self.folder / f"shard_{i:05d}.safetensors"
            if not path.is_file():
                raise BadFileError(f"{path}: missing")
            entry = check_safetensors(path).get("acts")
            if not isinstance(entry, dict) or entry.get("shape") != [rows, self.meta["d_in"]]:
                raise BadFileError(f"{path}: holds {entry.get('shape') if isinstance(entry, dict) else 'no acts'}, not [{rows}, {self.meta['d_in']}] rows")

    def _shard(self, i: int) -> Tensor:
        if i not in self._loaded:
            if len(self._loaded) >= self.max_loaded:
                self._loaded.pop(next(iter(self._loaded)))
            self._loaded[i] = load_file(self.folder / f"shard_{i:05d}.safetensors")["acts"]
        return self._loaded[i]

    def rows(self, index: Tensor) -> Tensor:
        shard_of = torch.searchsorted(self.starts, index, right=True) - 1
        out = torch.empty(len(index), self.meta["d_in"])
        for s in shard_of.unique().tolist():
            mask = shard_of == s
            out[mask] = self._shard(s)[index[mask] - self.starts[s]]
        return out

    def chunks(self) -> Iterator[Tensor]:
        """The rows shard by shard, without holding them all in memory."""
        for i in range(len(self.sizes)):
            yield self._shard(i)
