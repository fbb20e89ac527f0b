"""`successor-lens run`: the whole pipeline, model to feature atlas, reusing cached stages."""

from __future__ import annotations

import argparse

from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.cli.common import add_context_arguments, add_model_arguments, config_option, context_options, out_dir, positive_int, resolve_device
from successor_lens.features.mine_config import MineConfig
from successor_lens.filenames import ATLAS, INDEX
from successor_lens.probes.probe_configs import EMBEDDINGS, ScanConfig
from successor_lens.runner.run_config import RunConfig
from successor_lens.runner.stage_cache import STAGES, WHOLE_MODEL

HELP = "the main job: head scan -> activations -> SAEs -> mod-10 mining -> probes -> feature atlas (cached stages)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--out", default=None, help=f"run folder (default runs/MODEL); the atlas goes to OUT/{ATLAS}/{INDEX}")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", choices=list(STAGES) + ["all"],
                   help=f"recompute STAGE and every stage that reads it, even if cached ({', '.join(STAGES)} or all; repeatable)")
    config_option(p, RunConfig, "seeds", type=positive_int)
    config_option(p, RunConfig, "steps", type=positive_int)
    config_option(p, RunConfig, "head", help_suffix="as L{layer}H{head}")
    config_option(p, ScanConfig, "embedding", choices=list(EMBEDDINGS), help_suffix="of the head scan; `residual` is what each head reads, "
                  "layer-0 heads included")
    config_option(p, AtlasConfig, "latents", type=positive_int)
    config_option(p, MineConfig, "null_draws", type=positive_int)
    p.add_argument("--lean", action="store_true", help="never load the whole model (hub and local-folder safetensors checkpoints): the "
                   "head scan reads one layer at a time, the activations, dictionaries and mining read the embeddings and layer 0 only; "
                   f"{', '.join(WHOLE_MODEL)} need the whole model and are left to a run without --lean, which reuses the rest")
    add_context_arguments(p)


def config_from_args(args: argparse.Namespace, context: dict) -> RunConfig:
    return RunConfig(seeds=args.seeds, steps=args.steps, head=args.head, scan=ScanConfig(embedding=args.embedding),
                     atlas=AtlasConfig(latents=args.latents, **context),
                     mine=MineConfig(null_draws=args.null_draws))


def run(args: argparse.Namespace) -> None:
    from successor_lens.filenames import ATLAS_JSON
    from successor_lens.models.registry import loaded_fingerprint
    from successor_lens.runner.folders import run_folder
    from successor_lens.runner.run_config import stage_keys
    from successor_lens.runner.stage_cache import StageCache, cached_line

    context = context_options(args)
    out = out_dir(args)
    if args.device is not None:
        resolve_device(args.device)  # (imports torch: only when a device is named)
    config = config_from_args(args, context)
    # the pipeline's own stage keys, computed without torch: when every stage is fresh under them the
    # result is printed from the cache without importing the model code or the pipeline
    keys = stage_keys(loaded_fingerprint(args.model, args.dtype), config)
    if not args.force and StageCache(out).all_fresh(keys) is not None:
        with run_folder(out, "run", model=args.model, dtype=args.dtype):  # read under the lock, so no other run is rewriting the stages
            seconds = StageCache(out).all_fresh(keys)
            if seconds is not None:
                for i, stage in enumerate(STAGES):
                    print(cached_line(i, seconds[stage]))
                print(f"ran nothing; cached {', '.join(STAGES)}; 0.0s in stages")
                _print_result(out, _cached_summary(out / ATLAS / ATLAS_JSON))
                return
    result = _run(args, out, config)
    total = sum(result.seconds.values())
    left = f"; not run {', '.join(result.skipped)} (they need the whole model)" if result.skipped else ""
    print(f"ran {', '.join(result.ran) or 'nothing'}; cached {', '.join(result.cached) or 'nothing'}{left}; {total:.1f}s in stages")
    _print_result(out, result.summary, result.atlas is not None)


def _run(args: argparse.Namespace, out, config: RunConfig):
    from successor_lens.models.loading import LazyModel, model_shape
    from successor_lens.runner.folders import run_folder
    from successor_lens.runner.run import run_pipeline
    from successor_lens.sae_train.runtime import Runtime

    runtime = Runtime(resolve_device(args.device))
    config.check(model_shape(args.model))  # every argument checked before the folder is claimed
    log = lambda line: print(line, flush=True)  # noqa: E731
    if args.lean:
        from successor_lens.models.lean import LeanModel
        from successor_lens.probes.scan import check_lean_embedding

        check_lean_embedding(config.scan.embedding)
        lean = LeanModel(args.model, args.dtype, log)  # a checkpoint that is not safetensors: one line here
        lean.checkpoint  # noqa: B018 -- its headers and config checked before --out is made
        model: LazyModel | LeanModel = lean
    else:
        model = LazyModel(args.model, runtime.device, log=log, dtype=args.dtype)  # loaded only if a stage runs
    with run_folder(out, "run", model=args.model, dtype=args.dtype):
        return run_pipeline(model, out, config, runtime, tuple(args.force))


def _cached_summary(path) -> list[str]:
    """The headline lines of a cached run's atlas.json, read without the atlas code (no torch)."""
    from successor_lens.errors import UserError
    from successor_lens.io import read_json

    fix = "rebuild it with `successor-lens run --force atlas`"
    lines = (read_json(path, "atlas JSON", dict, UserError, fix).get("summary") or {}).get("lines")
    if not (isinstance(lines, list) and all(isinstance(line, str) for line in lines)):
        raise UserError(f"atlas JSON {path}: no summary lines: {fix}")
    return lines


def _print_result(out, summary: list[str], atlas: bool = True) -> None:
    from successor_lens.filenames import ATLAS, HEADS, INDEX, MINE, REPORT, SAES

    if atlas:
        print(f"atlas: {out / ATLAS / INDEX}  (open it in a browser; report: {out / REPORT})")
    else:
        print(f"no atlas yet (it needs the whole model): {out / HEADS}, the dictionaries in {out / SAES}, {out / MINE}")
    for line in summary:
        print("  " + line)
