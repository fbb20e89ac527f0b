"""One SAE training run, end to end: model -> cached activations -> trained, saved dictionary."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from sae_lens import SAE
from transformer_lens import HookedTransformer

from successor_lens.corpus import load_corpus, stream_texts, token_windows
from successor_lens.errors import ConfigError
from successor_lens.io import BadFileError, digest, write_json
from successor_lens.models import model_provenance
from successor_lens.sae_train.activations import (
    ShardedActivations, activation_meta, corpus_activations, corpus_batches, succession_items,
    vocab_activations, vocab_tokens, write_activations, write_many, write_ranked,
)
from successor_lens.sae_train.batches import ShuffledBatches
from successor_lens.sae_train.checkpoint import Checkpointer
from successor_lens.sae_train.distributed import Dist
from successor_lens.sae_train.dictionary import SAEMetrics, evaluate, save_dictionary
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sae_train.spliced import SplicedLoss, spliced_loss
from successor_lens.sae_train.trainer import TrainConfig, TrainResult, make_sae, train
from successor_lens.sites import hook_name
from successor_lens.tasks import Task

# Per token set defaults when the user gives none. The succession set has a few hundred rows, so
# the dictionary is smaller than the number of tokens (a latent must be shared by several tokens
# rather than memorise one) and the batch is small; vocabulary and corpus data take the usual 8x.
DEFAULTS = {
    "succession": {"d_sae": 128, "k": 8, "batch_size": 256, "steps": 1500},
    "vocab": {"d_sae": None, "k": 32, "batch_size": 4096, "steps": 2000},
    "corpus": {"d_sae": None, "k": 32, "batch_size": 4096, "steps": 2000},
}


SPLICE_WINDOWS = 16
"""Corpus windows (seed 1, 128 tokens) for the spliced-in loss of an in-context dictionary."""


def default_train_config(tokens: str, d_model: int, **overrides) -> TrainConfig:
    """The TrainConfig for a token source, with `overrides` (None values ignored) on top."""
    if tokens not in DEFAULTS:
        raise ConfigError(f"unknown token source {tokens!r}: use succession, vocab or corpus")
    values = {k: v for k, v in DEFAULTS[tokens].items() if v is not None}
    values.setdefault("d_sae", 8 * d_model)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


@dataclass
class TrainRun:
    folder: Path
    sae: SAE
    """The saved dictionary as sae-lens loads it back (what the metrics were computed on)."""
    metrics: SAEMetrics
    result: TrainResult
    config: TrainConfig
    spliced: SplicedLoss | None = None
    """For corpus (in-context) dictionaries: the next-token loss with the reconstruction spliced in."""
    site: str = ""


def activations_folder(out: Path, site: str, tokens: str) -> Path:
    return Path(out) / "activations" / f"{site}-{tokens}"


def activations_for(
    model: HookedTransformer, site: str, tokens: str, out: Path, corpus: str | None = None, tasks: list[Task] | None = None,
) -> ShardedActivations:
    """Compute (or reuse) the cached activations for a site and token source (`tasks`: succession only)."""
    return harvest(model, [site], tokens, out, corpus, tasks)[site]


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
        ids, source = None, {"token_set": "corpus", "corpus": corpus}
    else:
        raise ConfigError(f"unknown token source {tokens!r}: use succession, vocab or corpus")
    found, missing = {}, {}
    for site in dict.fromkeys(sites):
        folder, meta = activations_folder(out, site, tokens), activation_meta(model, site, source)
        try:
            cached = ShardedActivations(folder)
            if all(cached.meta.get(k) == v for k, v in meta.items()):
                cached.check()
                found[site] = cached
                continue
        except FileNotFoundError:
            pass
        except BadFileError as err:
            print(f"successor-lens: note: cached activations unreadable ({err}); recomputing them", file=sys.stderr)
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
            found.update(write_many(folders, corpus_activations(model, stream_texts(corpus), list(missing)), metas))
    dist.barrier()
    return {site: found[site] if site in found else ShardedActivations(activations_folder(out, site, tokens)) for site in sites}


def checkpoint_folder(out: Path, name: str, cfg: TrainConfig, data_sha256: str) -> Path:
    """Checkpoints of one training config on one dataset: `checkpoints/NAME/KEY`, so runs with other
    options in the same folder never prune or resume each other's checkpoints."""
    return Path(out) / "checkpoints" / name / digest({"train_config": asdict(cfg), "data_sha256": data_sha256})


def train_sae(
    model: HookedTransformer,
    site: str,
    cfg: TrainConfig,
    out: Path,
    runtime: Runtime,
    tokens: str = "succession",
    corpus: str | None = None,
    resume: bool = False,
    progress: bool = True,
    name: str | None = None,
    tasks: list[Task] | None = None,
    dist: Dist = Dist(),
) -> TrainRun | None:
    """Train one SAE on `site` ("mlp0" or "embed") of `model` and save it in `out/name` (an sae-lens
    folder with provenance.json and metrics.json).

    `tokens`: "succession" (the task items, `tasks`), "vocab" (every token) or "corpus" (every
    position of `corpus` in context; the spliced-in loss is measured too). Activations are cached in
    `out/activations/`, checkpoints in `out/checkpoints/NAME/KEY/` (`resume` continues the one with
    this config). The caller owns `out` (the CLI claims and locks it: rundir.py).

    With `dist` (several processes): the ranks split a corpus harvest between them (`harvest`), every
    rank trains on its part of each batch, rank 0 writes checkpoints and the dictionary; the other
    ranks write only their part of the harvest and return None.
    """
    out = Path(out)
    acts = harvest(model, [site], tokens, out, corpus, tasks, dist)[site]
    meta = {"model_name": model.cfg.model_name, "hook_name": hook_name(site), "hook_head_index": None, "prepend_bos": model.cfg.default_prepend_bos}
    sae = make_sae(cfg, acts.meta["d_in"], meta)
    name = name or f"sae-{site}-{tokens}-{cfg.arch}-s{cfg.seed}"
    checkpointer = Checkpointer(checkpoint_folder(out, name, cfg, acts.meta["data_sha256"]))
    if resume and not checkpointer.paths() and dist.main:
        others = sorted(p.name for p in checkpointer.folder.parent.glob("*") if p != checkpointer.folder and any(p.glob("ckpt_*")))
        print(f"successor-lens: note: --resume: no checkpoint of these options in {checkpointer.folder.parent}"
              + (f" (there are checkpoints of other options: {', '.join(others)}; pass the options of the run to resume)" if others else "")
              + "; starting from step 0", file=sys.stderr)
    result = train(cfg, sae, ShuffledBatches(acts, cfg.batch_size, cfg.seed), runtime, checkpointer=checkpointer, resume=resume,
                   progress=progress, dist=dist)
    if not dist.main:
        return None
    evaluated: list[SAEMetrics] = []
    spliced: list[SplicedLoss] = []

    def add_metrics(tmp: Path) -> None:  # measured on the weights as saved, as sae-lens loads them
        saved = SAE.load_from_disk(tmp, device=runtime.device)
        evaluated.append(evaluate(saved, acts.chunks()))
        extra = {}
        if tokens == "corpus":  # an in-context dictionary: the loss with its reconstruction spliced in
            windows = token_windows(model, load_corpus(corpus), SPLICE_WINDOWS, min(128, model.cfg.n_ctx), seed=1)
            spliced.append(spliced_loss(model, saved, windows, hook_name(site)))
            extra = {"spliced": {**asdict(spliced[0]), "windows": list(windows.shape), "window_seed": 1}}
        write_json(tmp / "metrics.json", {"fvu_formula": "sum((x - x_hat)^2) / sum((x - mean(x))^2)", **asdict(evaluated[0]), **extra})

    folder = save_dictionary(sae, out / name, {
        **model_provenance(model), "site": site, "hook": hook_name(site), "token_source": tokens, "corpus": corpus,
        "train_config": asdict(cfg), "data_sha256": acts.meta["data_sha256"], "n_rows": len(acts),
        "steps_done": result.steps, "resumed_from": result.resumed_from, "processes": dist.world,
    }, finish=add_metrics)
    loaded, metrics = SAE.load_from_disk(folder, device=runtime.device), evaluated[0]
    return TrainRun(folder, loaded, metrics, result, cfg, spliced[0] if spliced else None, site)


def train_sites(
    model: HookedTransformer, sites: list[str], cfg: TrainConfig, out: Path, runtime: Runtime, tokens: str = "succession",
    corpus: str | None = None, resume: bool = False, progress: bool = True, tasks: list[Task] | None = None,
    dist: Dist = Dist(), site_parallel: bool = False,
) -> list[TrainRun]:
    """One SAE per site, from one harvest (for a corpus: one forward pass per batch for every site),
    each trained exactly as `train_sae` trains it alone. Several ranks split every batch
    (data parallel), or with `site_parallel` each rank trains its own sites (sites[rank::world]) on
    whole batches. Returns the runs this process saved."""
    harvest(model, sites, tokens, out, corpus, tasks, dist)  # every rank takes part (a corpus is split by batch)
    mine = sites[dist.rank :: dist.world] if site_parallel else sites
    runs = [train_sae(model, site, cfg, out, runtime, tokens, corpus, resume, progress and (dist.main or site_parallel), tasks=tasks,
                      dist=Dist() if site_parallel else dist) for site in mine]
    return [r for r in runs if r is not None]
