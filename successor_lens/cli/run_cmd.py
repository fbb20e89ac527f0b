"""`successor-lens run`: the whole pipeline, model to feature atlas, reusing cached stages."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import add_model_arguments, out_dir, positive_int, resolve_device
from successor_lens.confighelp import constant

HELP = "the main job: head scan -> activations -> SAEs -> mod-10 mining -> probes -> feature atlas (cached stages)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    STAGES = constant("successor_lens.artifacts.pipeline:STAGES")  # noqa: N806 (read from the source: --help stays instant)
    add_model_arguments(p)
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL); the atlas goes to OUT/atlas/index.html")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", choices=list(STAGES) + ["all"],
                   help=f"recompute STAGE and every later one even if cached ({', '.join(STAGES)} or all; repeatable)")
    p.add_argument("--seeds", type=positive_int, default=3, help="MLP0 dictionaries to train (seeds 0..N-1) for the recurrence check")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps per dictionary (default 1500)")
    p.add_argument("--head", default=None, help="head for arithmetic and logit effects, as L{layer}H{head} (default: the scan's best)")
    p.add_argument("--latents", type=positive_int, default=24, help="latent pages per dictionary in the atlas")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.atlas import AtlasConfig
    from successor_lens.artifacts.pipeline import RunConfig, run_pipeline
    from successor_lens.models import LazyModel, model_shape
    from successor_lens.rundir import run_folder
    from successor_lens.sae_train.runtime import Runtime

    runtime = Runtime(resolve_device(args.device))
    config = RunConfig(seeds=args.seeds, steps=args.steps, head=args.head, atlas=AtlasConfig(latents=args.latents))
    config.check(model_shape(args.model))
    with run_folder(out_dir(args), "run") as out:
        model = LazyModel(args.model, runtime.device, log=lambda line: print(line, flush=True))  # loaded only if a stage runs
        result = run_pipeline(model, out, config, runtime, tuple(args.force))
    total = sum(result.seconds.values())
    print(f"ran {', '.join(result.ran) or 'nothing'}; cached {', '.join(result.cached) or 'nothing'}; {total:.1f}s in stages")
    print(f"atlas: {result.atlas}  (open it in a browser; report: {result.out / 'report.md'})")
    for line in result.summary:
        print("  " + line)
