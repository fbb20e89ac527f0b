"""One SAE training run, end to end: model -> cached activations -> trained, saved dictionary."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from sae_lens import SAE
from transformer_lens import HookedTransformer

from successor_lens.corpus import WINDOW_RULE, load_corpus, token_windows
from successor_lens.filenames import CHECKPOINTS, METRICS
from successor_lens.io import digest, write_json
from successor_lens.models.provenance import model_provenance
from successor_lens.progress import honours_progress
from successor_lens.sae_train.batches import ShuffledBatches
from successor_lens.sae_train.checkpoint import Checkpointer
from successor_lens.sae_train.dictionary import SAEMetrics, evaluate, save_dictionary
from successor_lens.sae_train.distributed import Dist
from successor_lens.sae_train.harvest import harvest
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sae_train.spliced import SplicedLoss, spliced_loss
from successor_lens.sae_train.train_config import SPLICE_WINDOWS, TrainConfig
from successor_lens.sae_train.trainer import TrainResult, make_sae, train
from successor_lens.sites import hook_name
from successor_lens.tasks import Task


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

    def __repr__(self) -> str:
        c = self.config
        return (f"TrainRun({self.folder}: {self.site} {c.arch} d_sae {c.d_sae} k {c.k}, {c.steps} steps; {self.metrics!r}"
                + (f"; loss recovered spliced in {self.spliced.loss_recovered:.3f}" if self.spliced else "") + ")")


def checkpoint_folder(out: Path, name: str, cfg: TrainConfig, data_sha256: str) -> Path:
    """Checkpoints of one training config on one dataset: `checkpoints/NAME/KEY`, so runs with other
    options in the same folder never prune or resume each other's checkpoints."""
    return Path(out) / CHECKPOINTS / name / digest({"train_config": asdict(cfg), "data_sha256": data_sha256})


@honours_progress
def train_sae(
    model: HookedTransformer,
    site: str,
    cfg: TrainConfig,
    out: str | os.PathLike,
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
            extra = {"spliced": {**asdict(spliced[0]), "windows": list(windows.shape), "window_seed": 1, "window_rule": WINDOW_RULE}}
        write_json(tmp / METRICS, {"fvu_formula": "sum((x - x_hat)^2) / sum((x - mean(x))^2)", **asdict(evaluated[0]), **extra})

    folder = save_dictionary(sae, out / name, {
        **model_provenance(model), "site": site, "hook": hook_name(site), "token_source": tokens, "corpus": corpus,
        "train_config": asdict(cfg), "data_sha256": acts.meta["data_sha256"], "n_rows": len(acts),
        "steps_done": result.steps, "resumed_from": result.resumed_from, "processes": dist.world,
    }, finish=add_metrics)
    loaded, metrics = SAE.load_from_disk(folder, device=runtime.device), evaluated[0]
    return TrainRun(folder, loaded, metrics, result, cfg, spliced[0] if spliced else None, site)


@honours_progress
def train_sites(
    model: HookedTransformer, sites: list[str], cfg: TrainConfig, out: str | os.PathLike, runtime: Runtime, tokens: str = "succession",
    corpus: str | None = None, resume: bool = False, progress: bool = True, tasks: list[Task] | None = None,
    dist: Dist = Dist(), site_parallel: bool = False,
) -> list[TrainRun]:
    """One SAE per site, from one harvest (for a corpus: one forward pass per batch for every site),
    each trained exactly as `train_sae` trains it alone. Several ranks split every batch
    (data parallel), or with `site_parallel` each rank trains its own sites (sites[rank::world]) on
    whole batches. Returns the runs this process saved."""
    out = Path(out)
    harvest(model, sites, tokens, out, corpus, tasks, dist)  # every rank takes part (a corpus is split by batch)
    mine = sites[dist.rank :: dist.world] if site_parallel else sites
    runs = [train_sae(model, site, cfg, out, runtime, tokens, corpus, resume, progress and (dist.main or site_parallel), tasks=tasks,
                      dist=Dist() if site_parallel else dist) for site in mine]
    return [r for r in runs if r is not None]
