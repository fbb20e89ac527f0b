"""`successor-lens run`: the whole pipeline, model to feature atlas, reusing cached stages."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import add_context_arguments, add_model_arguments, context_options, out_dir, positive_int, resolve_device
from successor_lens.confighelp import constant

HELP = "the main job: head scan -> activations -> SAEs -> mod-10 mining -> probes -> feature atlas (cached stages)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    STAGES = constant("successor_lens.artifacts.stages:STAGES")  # noqa: N806 (read from the source: --help stays instant)
    add_model_arguments(p)
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL); the atlas goes to OUT/atlas/index.html")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", choices=list(STAGES) + ["all"],
                   help=f"recompute STAGE and every later one even if cached ({', '.join(STAGES)} or all; repeatable)")
    p.add_argument("--seeds", type=positive_int, default=3, help="MLP0 dictionaries to train (seeds 0..N-1) for the recurrence check")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps per dictionary (default 1500)")
    p.add_argument("--head", default=None, help="head for arithmetic and logit effects, as L{layer}H{head} (default: the scan's best)")
    p.add_argument("--latents", type=positive_int, default=24, help="latent pages per dictionary in the atlas")
    add_context_arguments(p)


def run(args: argparse.Namespace) -> None:
    import json

    from successor_lens.artifacts.stages import STAGES, StageCache, cached_line
    from successor_lens.corpus import corpus_digest
    from successor_lens.io import code_digest
    from successor_lens.rundir import run_folder
    from successor_lens.sources import source_fingerprint

    context = context_options(args)
    out = out_dir(args)
    if args.device is not None:
        resolve_device(args.device)  # (imports torch: only when a device is named)
    # everything the stage keys depend on, by content: a request seen before whose stages are all still
    # fresh is answered from the cache without importing torch, the model code or the pipeline
    request = {"model": source_fingerprint(args.model), "code": code_digest(), "corpus_sha256": corpus_digest(context["corpus"]),
               **{k: getattr(args, k) for k in ("seeds", "steps", "head", "latents")}, **context}  # (context's "corpus" is the name)
    if not args.force and StageCache(out).replay(request) is not None:
        with run_folder(out, "run"):  # read under the lock, so no other run is rewriting the stages
            seconds = StageCache(out).replay(request)
            if seconds is not None:
                for i, stage in enumerate(STAGES):
                    print(cached_line(i, seconds[stage]))
                print(f"ran nothing; cached {', '.join(STAGES)}; 0.0s in stages")
                _print_result(out, json.loads((out / "atlas" / "atlas.json").read_text())["summary"]["lines"])
                return
    result = _run(args, out, context, request)
    total = sum(result.seconds.values())
    print(f"ran {', '.join(result.ran) or 'nothing'}; cached {', '.join(result.cached) or 'nothing'}; {total:.1f}s in stages")
    _print_result(out, result.summary)


def _run(args: argparse.Namespace, out, context: dict, request: dict):
    from successor_lens.artifacts.atlas import AtlasConfig
    from successor_lens.artifacts.pipeline import RunConfig, run_pipeline
    from successor_lens.artifacts.stages import StageCache
    from successor_lens.models import LazyModel, model_shape
    from successor_lens.rundir import run_folder
    from successor_lens.sae_train.runtime import Runtime

    runtime = Runtime(resolve_device(args.device))
    config = RunConfig(seeds=args.seeds, steps=args.steps, head=args.head, atlas=AtlasConfig(latents=args.latents, **context))
    config.check(model_shape(args.model))  # every argument checked before the folder is claimed
    with run_folder(out, "run"):
        model = LazyModel(args.model, runtime.device, log=lambda line: print(line, flush=True))  # loaded only if a stage runs
        result = run_pipeline(model, out, config, runtime, tuple(args.force))
        StageCache(out).remember(request, result.keys)
    return result


def _print_result(out, summary: list[str]) -> None:
    print(f"atlas: {out / 'atlas' / 'index.html'}  (open it in a browser; report: {out / 'report.md'})")
    for line in summary:
        print("  " + line)
