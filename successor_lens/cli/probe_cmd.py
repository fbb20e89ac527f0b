"""`successor-lens probe`: probes, probe/feature cosine, vector arithmetic and the offset profile."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import add_model_arguments, out_dir, print_table, resolve_device

HELP = "linear probes for index mod 10, probe/feature cosine, vector arithmetic through a head, greater-than profile"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--head", default=None, help="head as L{layer}H{head} (default: the top head of the scan)")
    p.add_argument("--seed", type=int, default=0, help="seed for the controls and the k selection split")
    p.add_argument("--out", default=None, help="run folder with features.safetensors from `mine` (default runs/MODEL)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.report import write_probe
    from successor_lens.features.pipeline import FEATURES_FILE, load_directions
    from successor_lens.models import load_model
    from successor_lens.probes.pipeline import probe_model

    out = out_dir(args)
    directions = load_directions(out / FEATURES_FILE)
    model = load_model(args.model, device=resolve_device(args.device))
    result = probe_model(model, directions, args.head, args.seed)
    written = write_probe(result, model, out)
    print_probe(result)
    print("wrote " + ", ".join(str(p) for p in written))


def print_probe(result) -> None:
    probe, embed, cosine, arith = result.probe, result.probe_embed, result.cosine, result.arithmetic
    print("leave-one-task-out probe for index mod 10 (chance 0.10):")
    print_table(["held-out task", "items", "MLP0", "embedding", "shuffled control"],
                [[t, probe.n_items[t], probe.accuracy[t], embed.accuracy.get(t, float("nan")), probe.control[t]] for t in probe.accuracy])
    print(f"probe/SAE-feature cosine: mean {cosine.mean:.3f} over {len(cosine.per_class)} classes; random directions "
          f"{cosine.random_baseline:.3f}, mismatched classes {cosine.mismatched_baseline:.3f} (paper: 0.71)")
    print(f"vector arithmetic through {result.head} (k chosen on half of the cases, reported on the other half):")
    tasks = list(arith["SAE features"].success)
    print_table(["task"] + list(arith), [[t] + [arith[n].success.get(t, float("nan")) for n in arith] for t in tasks]
                + [["overall"] + [arith[n].overall for n in arith]])
    profile = result.profile["all"]
    print(f"failures that overshoot (greater-than bias): {arith['SAE features'].overshoot:.2f}; "
          f"offset profile peak at {max(profile, key=profile.get):+d} (a successor head peaks at +1)")
    print("paper: arithmetic ~0.89 numbers 20-29, ~0.53 months, fails on days and letters")
