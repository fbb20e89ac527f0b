"""`successor-lens probe`: probes, probe/feature cosine, vector arithmetic and the offset profile."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import add_model_arguments, nonnegative_int, out_dir, print_table, resolve_device

HELP = "linear probes for index mod 10, probe/feature cosine, vector arithmetic through a head, greater-than profile"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--head", default=None, help="head as L{layer}H{head} (default: chosen from the OV succession score and in-context DLA together)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed for the controls and the k selection split")
    p.add_argument("--out", default=None, help="run folder with features.safetensors from `mine` (default runs/MODEL)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.stage_files import write_probe
    from successor_lens.features.mine_run import load_directions
    from successor_lens.filenames import FEATURES
    from successor_lens.models.loading import load_model, model_shape
    from successor_lens.probes.head_id import check_head
    from successor_lens.probes.probe_run import probe_model
    from successor_lens.runner.folders import run_folder

    device = resolve_device(args.device)
    shape = model_shape(args.model)
    head = check_head(args.head, shape) if args.head else None
    with run_folder(out_dir(args), "run", model=args.model, dtype=args.dtype) as out:
        directions = load_directions(out / FEATURES)
        model = load_model(args.model, device=device, dtype=args.dtype)
        result = probe_model(model, directions, head, args.seed)
        written = write_probe(result, model, out)
    print_probe(result)
    print("wrote " + ", ".join(str(p) for p in written))


def print_probe(result) -> None:
    from successor_lens.nulls import words
    from successor_lens.paper import HEADLINES

    probe, embed, cosine, arith = result.probe, result.probe_embed, result.cosine, result.arithmetic
    print("leave-one-task-out probe for index mod 10 (chance 0.10):")
    print_table(["held-out task", "items", "MLP0", "embedding", "shuffled control"],
                [[t, probe.n_items[t], probe.accuracy[t], embed.accuracy.get(t, float("nan")), probe.control[t]] for t in probe.accuracy])
    v = result.verdicts()
    feats = arith["SAE features"]
    h = HEADLINES
    print(words(h["probe_accuracy"].label, v["probe_accuracy"], h["probe_accuracy"].paper))
    print(words(h["probe_feature_cosine"].label, v["probe_feature_cosine"], h["probe_feature_cosine"].paper)
          + f"; mismatched classes {_f(cosine.mismatched_baseline)}, class-mean directions {_f(cosine.class_mean)}")
    print(f"vector arithmetic through {result.head} (k chosen on half of the cases, reported on the other half):")
    tasks = list(feats.success)
    print_table(["task"] + list(arith), [[t] + [arith[n].success.get(t, float("nan")) for n in arith] for t in tasks]
                + [["overall"] + [_nan(arith[n].overall) for n in arith]])
    print(words(h["arithmetic"].label.format(head=result.head), v["arithmetic"], h["arithmetic"].paper)
          + f"; the head's ceiling {_f(feats.ceiling)}, success when the head is right {_f(feats.conditional)}"
          + ("; k is at the edge of its grid" if feats.scale_at_edge else ""))
    profile = result.profile["all"]
    print(words(h["overshoot"].label, v["overshoot"], h["overshoot"].paper)
          + (f"; offset profile peak at {max(profile, key=profile.get):+d} (a successor head peaks at +1)" if profile else ""))


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _nan(v) -> float:
    return float("nan") if v is None else v
