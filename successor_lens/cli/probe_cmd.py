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
    from successor_lens.artifacts.plots import grouped_bars, offset_plot
    from successor_lens.features.pipeline import FEATURES_FILE, item_table, load_directions
    from successor_lens.io import provenance, write_json
    from successor_lens.models import load_model, model_provenance
    from successor_lens.probes.arithmetic import OVCircuit, offset_profile, random_directions, vector_arithmetic
    from successor_lens.probes.heads import parse_head_name, scan_heads
    from successor_lens.probes.linear import leave_one_task_out, probe_feature_cosine
    from successor_lens.sites import token_activations
    from successor_lens.tasks import build_token_set

    out = out_dir(args)
    directions = load_directions(out / FEATURES_FILE)
    model = load_model(args.model, device=resolve_device(args.device))
    table, tokens = item_table(model)
    mlp0 = token_activations(model, tokens, "mlp0").cpu()
    embed = token_activations(model, tokens, "embed").cpu()

    probe = leave_one_task_out(mlp0, table, args.seed)
    probe_embed = leave_one_task_out(embed, table, args.seed)
    cosine = probe_feature_cosine(probe, directions, args.seed)

    if args.head:
        layer, head = parse_head_name(args.head)
    else:
        layer, head = scan_heads(model, build_token_set(model.tokenizer)).best()
    circuit = OVCircuit.from_model(model, layer, head, tokens)
    probe_dirs = {c: probe.directions[i] for i, c in enumerate(probe.classes) if c in directions}
    arith = {
        "SAE features": vector_arithmetic(circuit, mlp0, table, directions, args.seed),
        "random directions": vector_arithmetic(circuit, mlp0, table, random_directions(directions, args.seed), args.seed),
        "probe directions": vector_arithmetic(circuit, mlp0, table, probe_dirs, args.seed),
    }
    profile = offset_profile(circuit, mlp0, table)

    write_json(out / "probe.json", {
        "provenance": provenance(**model_provenance(model), site="mlp0", head=circuit.name),
        "probe_mlp0": probe.summary(), "probe_embed": probe_embed.summary(), "probe_feature_cosine": cosine.summary(),
        "arithmetic": {name: r.summary() for name, r in arith.items()},
        "arithmetic_examples": arith["SAE features"].predictions[:40],
        "offset_profile": profile,
        "paper": {"probe_feature_cosine": 0.71, "heldout_probe": "94/102 non-number examples",
                  "arithmetic": {"numbers 20-29": 0.89, "months": 0.53, "days": "fails", "letters": "fails"}},
    })
    grouped_bars({"MLP0 probe": probe.accuracy, "embedding probe": probe_embed.accuracy, "shuffled-label control": probe.control},
                 out / "probe_accuracy.png", "index mod 10, leave-one-task-out", "accuracy", chance=0.1)
    grouped_bars({k: v.success for k, v in arith.items()}, out / "arithmetic.png", f"vector arithmetic through {circuit.name}", "success")
    offset_plot(profile, out / "offset_profile.png", f"{circuit.name}: OV logit by index offset")

    print("leave-one-task-out probe for index mod 10 (chance 0.10):")
    print_table(["held-out task", "items", "MLP0", "embedding", "shuffled control"],
                [[t, probe.n_items[t], probe.accuracy[t], probe_embed.accuracy.get(t, float("nan")), probe.control[t]] for t in probe.accuracy])
    print(f"probe/SAE-feature cosine: mean {cosine.mean:.3f} over {len(cosine.per_class)} classes; random directions "
          f"{cosine.random_baseline:.3f}, mismatched classes {cosine.mismatched_baseline:.3f} (paper: 0.71)")
    print(f"vector arithmetic through {circuit.name} (k chosen on half of the cases, reported on the other half):")
    tasks = list(arith["SAE features"].success)
    print_table(["task"] + list(arith), [[t] + [arith[n].success.get(t, float("nan")) for n in arith] for t in tasks]
                + [["overall"] + [arith[n].overall for n in arith]])
    print(f"failures that overshoot (greater-than bias): {arith['SAE features'].overshoot:.2f}; "
          f"offset profile peak at {max(profile['all'], key=profile['all'].get):+d} (a successor head peaks at +1)")
    print("paper: arithmetic ~0.89 numbers 20-29, ~0.53 months, fails on days and letters")
    print(f"wrote {out / 'probe.json'} and plots probe_accuracy.png, arithmetic.png, offset_profile.png")
