"""`successor-lens organism`: the trained model organism `organism-gpt2` (describe it, or train it)."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import config_option, nonnegative_int, positive_int
from successor_lens.models.organism_config import OrganismConfig

HELP = ("the trained model organism organism-gpt2: describe the shipped weights, or --train them again "
        "(deterministic from --seed, with progress; rerun the same command to resume)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", action="store_true", help="train the organism into --out (resumes from the folder's checkpoint)")
    p.add_argument("--out", default="runs/organism", help="folder for the weights, manifest, checkpoint and curve (default runs/organism)")
    for name, kind in (("steps", positive_int), ("seed", nonnegative_int), ("n_layers", positive_int), ("d_model", positive_int),
                       ("n_heads", positive_int), ("documents", positive_int)):
        config_option(p, OrganismConfig, name, type=kind)


def run(args: argparse.Namespace) -> None:
    if not args.train:
        return describe()
    from successor_lens.models.organism_train import default_prose, train_organism
    from successor_lens.runner.folders import check_folder, run_folder

    config = OrganismConfig(steps=args.steps, seed=args.seed, n_layers=args.n_layers, d_model=args.d_model,
                            n_heads=args.n_heads, documents=args.documents)
    check_folder(args.out, "organism")
    prose = default_prose()
    with run_folder(args.out, "organism") as out:
        manifest = train_organism(out, config, prose)
    print(f"trained in {manifest['train_wall_s']:.0f} s: final loss {manifest['final_loss']:.3f} over {manifest['tokens_seen']:,} tokens; "
          f"weights {manifest['weights_bytes'] / 1e6:.1f} MB ({manifest['weights_dtype']}); curve {out / manifest['curve']}")
    print(f"to ship them: copy {out}/organism-gpt2.safetensors and {out}/manifest.json into successor_lens/data/organism/")


def describe() -> None:
    from successor_lens.models.organism import ORGANISM, read_manifest, shipped_folder, verified_weights

    folder = shipped_folder()
    verified_weights(folder)
    m = read_manifest(folder)
    c, corpus = m["config"], m["corpus"]
    print(f"{ORGANISM}: GPT-2 architecture, {c['n_layers']} layers x {c['n_heads']} heads, d_model {c['d_model']}, "
          f"trained rows for {corpus['distinct_tokens']} of GPT-2's 50,257 tokens")
    print(f"weights {folder / 'organism-gpt2.safetensors'}: {m['weights_bytes'] / 1e6:.1f} MB {m['weights_dtype']}, sha256 matches the manifest")
    print(f"trained from seed {c['seed']}: {c['steps']} steps, {m['tokens_seen']:,} tokens, {m['train_wall_s']:.0f} s, final loss {m['final_loss']:.3f}; "
          f"corpus {corpus['documents']} documents, sha256 {m['corpus_sha256'][:12]}")
