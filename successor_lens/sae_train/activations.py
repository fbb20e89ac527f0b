"""Activation sources for SAE training, cached to disk as safetensors shards with provenance.

- Vocabulary level: each token alone at a site (`hook_embed` = W_E[t], or the layer-0 MLP of it),
  for the succession items, every vocabulary token, or any token list; a succession item that
  splits into several tokens (a number for a digit-splitting tokenizer) is read at its last token.
- In context: the hook's activations over a text corpus (local text files through `datasets`,
  or a hub dataset name when online), one row per token position.

Shards are written one at a time (so a corpus larger than memory streams through) and read
back lazily. A cache is written in a temporary folder that replaces the old one whole (meta.json
last), so a half-written cache is never mistaken for a whole one; a cached shard that does not
read back whole is recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from successor_lens.errors import UserError
from successor_lens.io import TMP_TAG, BadFileError, atomic_dir, atomic_path, check_safetensors, provenance, write_json
from successor_lens.models import model_provenance
from successor_lens.sites import hook_depth, hook_name, item_activations
from successor_lens.tasks import Task, build_token_set, sae_tasks

SHARD_ROWS = 65536


def succession_items(tokenizer, tasks: list[Task] | None = None) -> tuple[list[tuple[int, ...]], dict]:
    """Unique items of the SAE data (`sae_tasks()`, or `tasks`), held-out Roman numerals excluded,
    as token-id sequences: single tokens, and numbers that split into digits (read in context)."""
    token_set = build_token_set(tokenizer, tasks or sae_tasks(), include_held_out=False)
    items = sorted({item.ids or (item.token,) for item in token_set.items})
    n_multi = sum(len(i) > 1 for i in items)
    source = {"token_set": "succession", "n_tokens": len(items) - n_multi, "n_multi_token_items": n_multi,
              "n_dropped": len(token_set.dropped)}
    if tasks:
        source["tasks"] = [[t.name, list(t.items)] for t in tasks]
    return items, source


def vocab_tokens(model: HookedTransformer) -> tuple[list[tuple[int, ...]], dict]:
    return [(t,) for t in range(model.cfg.d_vocab)], {"token_set": "vocab", "n_tokens": model.cfg.d_vocab}


def vocab_activations(model: HookedTransformer, items: list[tuple[int, ...]], site: str, batch: int = 8192) -> Iterator[Tensor]:
    for start in tqdm(range(0, len(items), batch), desc=f"{site} activations", leave=False):
        yield item_activations(model, items[start : start + batch], hook_name(site))


def corpus_rows(tokenizer, texts: Iterable[str], seq_len: int, max_tokens: int) -> Iterator[Tensor]:
    """Token windows of `seq_len` from a stream of texts, made as the texts arrive: memory holds one
    window, never the corpus. The first `max_tokens` tokens are used; a corpus shorter than one
    window is one short row."""
    buffer: list[int] = []
    used = 0
    for text in texts:
        buffer.extend(tokenizer.encode(text, add_special_tokens=False))
        while len(buffer) >= seq_len and used + seq_len <= max_tokens:
            yield torch.tensor(buffer[:seq_len])
            del buffer[:seq_len]
            used += seq_len
        if used + seq_len > max_tokens:
            if used == 0 and buffer:
                yield torch.tensor(buffer[:max_tokens])
            return
    if used == 0 and buffer:
        yield torch.tensor(buffer[:max_tokens])


def corpus_activations(
    model: HookedTransformer, texts: Iterable[str], sites: str | list[str], seq_len: int = 128, max_tokens: int = 200_000, batch: int = 16,
) -> Iterator[Tensor] | Iterator[dict[str, Tensor]]:
    """The sites' activations at every position of the corpus, in context, `batch` windows at a time:
    every site from the same forward pass (run only as deep as the deepest). `texts` may be a stream
    (`corpus.stream_texts`): memory is bounded by the batch, not the corpus. One site gives row
    tensors; a list gives {site: rows} per batch."""
    for _, out in corpus_batches(model, texts, [sites] if isinstance(sites, str) else list(sites), seq_len, max_tokens, batch):
        yield out[sites] if isinstance(sites, str) else out


@torch.no_grad()
def corpus_batches(
    model: HookedTransformer, texts: Iterable[str], sites: list[str], seq_len: int = 128, max_tokens: int = 200_000, batch: int = 16,
    part: tuple[int, int] | None = None,
) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """(batch index, {site: rows}) for every batch of windows; with `part` = (rank, world) only the
    batches j with j % world == rank are run (every rank still reads the stream to know where the
    windows fall, which costs tokenising, not forward passes)."""
    hooks = {hook_name(s): s for s in sites}
    depths = [hook_depth(h, model.cfg.n_layers) for h in hooks]
    stop = None if None in depths else max(depths)
    rows = corpus_rows(model.tokenizer, texts, min(seq_len, model.cfg.n_ctx), max_tokens)
    device = model.W_E.device
    bar = tqdm(desc=f"{', '.join(sites)} corpus activations", unit="window", leave=False, disable=part is not None and part[0] != 0)
    for j in itertools.count():
        chunk = list(itertools.islice(rows, batch))
        if not chunk:
            break
        if part is None or j % part[1] == part[0]:
            _, cache = model.run_with_cache(torch.stack(chunk).to(device), names_filter=lambda n: n in hooks, stop_at_layer=stop)
            yield j, {site: cache[hook].reshape(-1, cache[hook].shape[2:].numel()).cpu() for hook, site in hooks.items()}
        bar.update(len(chunk))
    bar.close()


def write_ranked(folders: dict[str, Path], batches: Iterable[tuple[int, dict[str, Tensor]]], metas: dict[str, dict], dist) -> dict[str, "ShardedActivations"]:
    """The harvest split across the ranks of a job: each rank writes the batches it ran as part files
    in a staging folder beside each site's folder (on a filesystem every rank shares); rank 0 then
    folds them, in batch order, into the same shards, data hash and meta.json one process writes.
    A killed job leaves only the staging folder, a tagged leftover the next run removes."""
    staging = {site: Path(folder).parent / f".{Path(folder).name}{TMP_TAG}ranks" for site, folder in folders.items()}
    if dist.main:
        for path in staging.values():
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


def write_activations(folder: str | os.PathLike, chunks: Iterable[Tensor], meta: dict) -> "ShardedActivations":
    """Stream chunks into shards of at most SHARD_ROWS rows, meta.json (with a data hash) last, in
    a temporary folder that replaces `folder` whole once every shard is written."""
    return write_many({"one": folder}, ({"one": c} for c in chunks), {"one": meta})["one"]


def write_many(folders: dict[str, str | os.PathLike], chunks: Iterable[dict[str, Tensor]], metas: dict[str, dict]) -> dict[str, "ShardedActivations"]:
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
        self.folder, self.digest, self.sizes, self.pending, self.n_pending = folder, hashlib.sha256(), [], [], 0

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
        write_json(self.folder / "meta.json", {**meta, "d_in": d_in, "shard_rows": self.sizes, "n_rows": sum(self.sizes),
                                               "data_sha256": self.digest.hexdigest()})


class ShardedActivations:
    """Read-only rows over the shards of a cache folder, loading shards lazily."""

    def __init__(self, folder: str | os.PathLike, max_loaded: int = 4):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.folder}: no meta.json (incomplete or missing activation cache): recompute it")
        try:
            self.meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadFileError(f"{meta_path}: not valid JSON") from None
        self.sizes = self.meta["shard_rows"]
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


def activation_meta(model: HookedTransformer, site: str, source: dict) -> dict:
    """The provenance of a site's activations (`d_in` is added from the rows when they are written)."""
    return provenance(**model_provenance(model), site=site, hook=hook_name(site), **source)
