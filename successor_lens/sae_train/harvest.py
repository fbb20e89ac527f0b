"""Harvesting activations for SAE training, into the shard cache (`shards.py`) with provenance.

- Vocabulary level: each token alone at a site (`hook_embed` = W_E[t], or the layer-0 MLP of it),
  for the succession items, every vocabulary token, or any token list; a succession item that
  splits into several tokens (a number for a digit-splitting tokenizer) is read at its last token.
- In context: the hook's activations over a text corpus (local text files through `datasets`,
  or a hub dataset name when online), one row per token position of the corpus windows
  (`corpus.cut_windows`: BOS first when the model prepends one).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from successor_lens.corpus import WINDOW_RULE, paragraph_ids, stream_texts, windows_of
from successor_lens.errors import ConfigError
from successor_lens.filenames import ACTIVATIONS
from successor_lens.io import BadFileError, provenance
from successor_lens.models.provenance import model_provenance
from successor_lens.progress import bar as progress_bar
from successor_lens.sae_train.distributed import Dist
from successor_lens.sae_train.shards import ShardedActivations, write_activations, write_many, write_ranked
from successor_lens.sites import hook_depth, hook_name, item_activations
from successor_lens.tasks import Task, build_token_set, sae_tasks


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
    for start in progress_bar(range(0, len(items), batch), desc=f"{site} activations", leave=False):
        yield item_activations(model, items[start : start + batch], hook_name(site))


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
    stop = None if None in depths else max(d for d in depths if d is not None)
    rows = windows_of(model, paragraph_ids(model.tokenizer, texts), min(seq_len, model.cfg.n_ctx), max_tokens)
    device = model.W_E.device
    bar = progress_bar(desc=f"{', '.join(sites)} corpus activations", unit="window", leave=False, disable=part is not None and part[0] != 0)
    for j in itertools.count():
        chunk = list(itertools.islice(rows, batch))
        if not chunk:
            break
        if part is None or j % part[1] == part[0]:
            _, cache = model.run_with_cache(torch.stack(chunk).to(device), names_filter=lambda n: n in hooks, stop_at_layer=stop)
            yield j, {site: cache[hook].reshape(-1, cache[hook].shape[2:].numel()).cpu() for hook, site in hooks.items()}
        bar.update(len(chunk))
    bar.close()


def activation_meta(model: HookedTransformer, site: str, source: dict) -> dict:
    """The provenance of a site's activations (`d_in` is added from the rows when they are written)."""
    return provenance(**model_provenance(model), site=site, hook=hook_name(site), **source)


def activations_folder(out: Path, site: str, tokens: str) -> Path:
    return Path(out) / ACTIVATIONS / f"{site}-{tokens}"


def activations_for(
    model: HookedTransformer, site: str, tokens: str, out: Path, corpus: str | None = None, tasks: list[Task] | None = None,
) -> ShardedActivations:
    """Compute (or reuse) the cached activations for a site and token source (`tasks`: succession only)."""
    return harvest(model, [site], tokens, out, corpus, tasks)[site]


def fresh_cache(folder: Path, meta: dict) -> ShardedActivations | None:
    """The cache in `folder` when it was made with `meta` (model, site, items or corpus) and reads
    back whole; else None (an unreadable one with a notice: it is recomputed)."""
    try:
        cached = ShardedActivations(folder)
        if all(cached.meta.get(k) == v for k, v in meta.items()):
            cached.check()
            return cached
    except FileNotFoundError:
        pass
    except BadFileError as err:
        print(f"successor-lens: note: cached activations unreadable ({err}); recomputing them", file=sys.stderr)
    return None


def cached_item_rows(model: HookedTransformer, site: str, out: Path, tasks: list[Task] | None = None) -> tuple[dict, ShardedActivations] | None:
    """The activations stage's cache of the succession items at `site` in run folder `out`, as
    ({item ids: row}, cache), when it is there, whole and made for this model and these tasks."""
    items, source = succession_items(model.tokenizer, tasks)
    cached = fresh_cache(activations_folder(out, site, "succession"), activation_meta(model, site, source))
    return ({ids: row for row, ids in enumerate(items)}, cached) if cached is not None else None


def harvest(
    model: HookedTransformer, sites: list[str], tokens: str, out: Path, corpus: str | None = None, tasks: list[Task] | None = None,
    dist: Dist = Dist(),
) -> dict[str, ShardedActivations]:
    """The cached activations of several sites, computing the missing ones: for a corpus, all of them
    from one forward pass per batch over a `datasets` stream (memory bounded by the batch, each site
    written as shards with provenance). Every rank of a job calls it: a corpus harvest is split
    across the ranks by batch (`write_ranked`) and ends in the same shards as one process; the
    small item-level harvests run on rank 0."""
    if tokens == "succession":
        ids, source = succession_items(model.tokenizer, tasks)
    elif tokens == "vocab":
        ids, source = vocab_tokens(model)
    elif tokens == "corpus":
        if not corpus:
            raise ConfigError("--tokens corpus needs a PATH (a text file or folder) or a hub dataset name")
        ids, source = None, {"token_set": "corpus", "corpus": corpus, "windows": WINDOW_RULE}
    else:
        raise ConfigError(f"unknown token source {tokens!r}: use succession, vocab or corpus")
    found, missing = {}, {}
    for site in dict.fromkeys(sites):
        folder, meta = activations_folder(out, site, tokens), activation_meta(model, site, source)
        cached = fresh_cache(folder, meta)
        if cached is not None:
            found[site] = cached
        else:
            missing[site] = (folder, meta)
    dist.barrier()  # every rank has looked at the cache before anyone rewrites it
    folders, metas = {s: f for s, (f, _) in missing.items()}, {s: m for s, (_, m) in missing.items()}
    if missing and ids is None and dist.active:
        batches = corpus_batches(model, stream_texts(corpus), list(missing), part=(dist.rank, dist.world))
        found.update(write_ranked(folders, batches, metas, dist))
    elif missing and dist.main:
        if ids is not None:
            for site in missing:
                found[site] = write_activations(folders[site], vocab_activations(model, ids, site), metas[site])
        else:
            found.update(write_many(folders, (rows for _, rows in corpus_batches(model, stream_texts(corpus), list(missing))), metas))
    dist.barrier()
    return {site: found[site] if site in found else ShardedActivations(activations_folder(out, site, tokens)) for site in sites}
