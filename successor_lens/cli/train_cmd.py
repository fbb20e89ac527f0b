"""`successor-lens train`: train an SAE on embedding or MLP0 activations."""

from __future__ import annotations

import argparse
import dataclasses

from successor_lens.cli.common import add_model_arguments, finite_float, nonnegative_int, out_dir, positive_int, resolve_device
from successor_lens.confighelp import field_docs
from successor_lens.sae_train.train_config import ARCHS, TrainConfig

RUNTIME = "successor_lens.sae_train.runtime:Runtime"  # read from the source: runtime.py imports torch

HELP = "train an SAE on the embedding or MLP0 output (sae-lens format, with provenance)"
_FLAGS = ("d_sae", "k", "steps", "batch_size", "lr", "seed", "checkpoint_every", "l1_coefficient", "l0_coefficient")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    docs = field_docs(TrainConfig)
    p.add_argument("--site", choices=["mlp0", "embed"], default=None, help="mlp0 = blocks.0.hook_mlp_out (default), embed = hook_embed")
    p.add_argument("--sites", default=None, help="several sites in one job, comma-separated: mlp0, embed or TransformerLens hook names "
                   "(blocks.3.hook_resid_post,...); one harvest (one forward pass per batch for a corpus), one SAE per site")
    p.add_argument("--site-parallel", action="store_true", help="with --sites and several processes: each process trains its own "
                   "sites on whole batches instead of every process splitting every batch")
    p.add_argument("--tokens", default="succession", choices=["succession", "vocab", "corpus"], help="succession (default), vocab, or corpus")
    p.add_argument("corpus", nargs="?", default=None, help="with --tokens corpus: a text file, a folder of them, or a hub dataset name")
    p.add_argument("--arch", choices=ARCHS, default=TrainConfig.arch, help=docs["arch"])
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name in _FLAGS:
        kind = finite_float if types[name] == "float" else nonnegative_int if name == "seed" else positive_int
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=docs[name])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help=field_docs(RUNTIME)["precision"])
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out (same options)")
    p.add_argument("--nproc", type=positive_int, default=1, help="data-parallel processes on this machine (launches torchrun "
                   "--standalone --nproc-per-node N; gloo on CPU, nccl on CUDA); for several nodes run torchrun yourself")
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL)")


def config_from_args(args: argparse.Namespace, d_model: int) -> TrainConfig:
    from successor_lens.sae_train.train_config import default_train_config

    return default_train_config(args.tokens, d_model, arch=args.arch, **{name: getattr(args, name) for name in _FLAGS})


def run(args: argparse.Namespace) -> int | None:
    import os
    from contextlib import nullcontext

    from successor_lens.corpus import check_source
    from successor_lens.errors import ConfigError
    from successor_lens.models.loading import load_model, model_shape
    from successor_lens.runner.folders import check_folder, run_folder
    from successor_lens.sae_train.distributed import Dist
    from successor_lens.sae_train.runtime import Runtime, check_fits
    from successor_lens.sae_train.train_run import train_sites
    from successor_lens.sites import check_site

    device = resolve_device(args.device)
    if args.tokens == "corpus":
        if not args.corpus:
            raise ConfigError("--tokens corpus needs a CORPUS argument: a text file, a folder of them, or a hub dataset name")
        check_source(args.corpus)
    elif args.corpus:
        raise ConfigError(f"a corpus ({args.corpus}) was given but --tokens is {args.tokens}: add --tokens corpus, or drop the corpus")
    shape = model_shape(args.model)
    cfg = config_from_args(args, shape.d_model)
    check_fits(shape.d_model, cfg.d_sae, cfg.batch_size, device)
    if args.sites and args.site:
        raise ConfigError("--site and --sites both given: use --sites for several, --site for one")
    sites = [s.strip() for s in args.sites.split(",")] if args.sites else [args.site or "mlp0"]
    for site in sites:
        check_site(site, shape.n_layers)
    if len(set(sites)) != len(sites) or not all(sites):
        raise ConfigError(f"--sites {args.sites}: a site is empty or repeated: list each site once")
    if args.site_parallel and not args.sites:
        raise ConfigError("--site-parallel splits the sites of --sites over the processes: give --sites")
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.nproc > 1 and not under_torchrun:
        Dist(0, args.nproc).check_batch(cfg.batch_size)
        check_folder(out_dir(args), "run", model=args.model, dtype=args.dtype)
        return _launch(args)
    dist = Dist.from_env(device)
    runtime = Runtime(dist.device(device), args.precision)
    if not args.site_parallel:
        dist.check_batch(cfg.batch_size)
    with run_folder(out_dir(args), "run", model=args.model, dtype=args.dtype) if dist.main else nullcontext(out_dir(args)) as out:  # rank 0 owns the folder
        model = load_model(args.model, device=runtime.device, dtype=args.dtype)
        runs = train_sites(model, sites, cfg, out, runtime, tokens=args.tokens, corpus=args.corpus, resume=args.resume, dist=dist,
                           site_parallel=args.site_parallel)
    for run_ in runs:
        _report(run_, args.tokens)
    return None


def _report(run_, tokens: str) -> None:
    cfg = run_.config
    m = run_.metrics
    resumed = f" (resumed from step {run_.result.resumed_from})" if run_.result.resumed_from else ""
    print(f"{run_.site} SAE ({cfg.arch}, d_sae {cfg.d_sae}, k {cfg.k}, {cfg.steps} steps{resumed}) on {tokens} activations:")
    print(f"  L0 {m.l0:.2f}   FVU {m.fvu:.4f}   MSE {m.mse:.4g}   dead fraction {m.dead_frac:.3f}")
    print("  FVU = sum((x - x_hat)^2) / sum((x - mean x)^2), evaluated by sae-lens's own encode/decode on the saved SAE")
    if run_.spliced is not None:
        print("  " + run_.spliced.summary())
    print(f"saved {run_.folder} (loads with sae_lens.SAE.load_from_disk)")


def _launch(args: argparse.Namespace) -> int:
    """`train --nproc N`: the same command under torchrun on this machine, one process per rank."""
    import subprocess
    import sys

    argv, skip = [], False
    for a in args._argv:  # the command line without --nproc
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}", "-m", "successor_lens", *argv]
    print(f"launching {args.nproc} processes: torchrun --standalone --nproc-per-node={args.nproc} -m successor_lens {' '.join(argv)}", flush=True)
    code = subprocess.run(cmd).returncode
    if code:
        print(f"successor-lens train: a training process failed (exit {code}, see above); checkpoints are kept in "
              f"{out_dir(args) / 'checkpoints'}: rerun the same command with --resume to continue", file=sys.stderr)
    return code
