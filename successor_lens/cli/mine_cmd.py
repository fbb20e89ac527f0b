"""`successor-lens mine`: group SAE latents on MLP0 outputs into mod-10 classes."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import add_model_arguments, finite_float, out_dir, positive_int, print_table, resolve_device
from successor_lens.confighelp import field_docs

HELP = "mine mod-10 features from SAEs on MLP0 outputs (trains --seeds SAEs unless --sae is given)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    docs = field_docs("successor_lens.features.mining:MineConfig")
    p.add_argument("--sae", action="append", default=None, help="an SAE folder to mine (repeat for several); default: train --seeds new ones")
    p.add_argument("--seeds", type=positive_int, default=3, help="SAEs to train with seeds 0..N-1 for the recurrence check")
    p.add_argument("--steps", type=positive_int, default=1500, help="training steps per SAE")
    p.add_argument("--selectivity", type=finite_float, default=0.5, help=docs["selectivity"])
    p.add_argument("--n-clusters", type=positive_int, default=10, help=docs["n_clusters"])
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.report import write_mine
    from successor_lens.features.mining import MineConfig
    from successor_lens.features.pipeline import mine_model
    from successor_lens.models import load_model, model_shape
    from successor_lens.rundir import run_folder
    from successor_lens.sae_train.dictionary import load_dictionary
    from successor_lens.sae_train.runtime import Runtime
    from successor_lens.sites import hook_name

    runtime = Runtime(resolve_device(args.device))
    cfg = MineConfig(selectivity=args.selectivity, n_clusters=args.n_clusters)
    shape = model_shape(args.model)
    for path in args.sae or []:  # each dictionary readable, finite and of this model's MLP0, before the model loads
        load_dictionary(path, expected_d_in=shape.d_model, expected_hook=hook_name("mlp0"))
    with run_folder(out_dir(args), "run") as out:
        model = load_model(args.model, device=runtime.device)
        result = mine_model(model, out, runtime, args.sae, args.seeds, args.steps, cfg)
        written = write_mine(result, model, out)

    from successor_lens.nulls import Verdict, words

    found = [len(m.classes_found) for m in result.mined]
    print(f"mod-10 classes found per SAE: {found} (of 10); recurrence across {len(result.mined)} SAEs:")
    rows = []
    for c in range(10):
        cov = [f"{m.modal_coverage[c]:.2f}" if c in m.modal_coverage else "-" for m in result.mined]
        rows.append([c, result.recurrence.counts.get(c, 0), " ".join(cov), "yes" if c in result.recurrence.modal_directions else "no"])
    print_table(["class", f"SAEs recurring in all others (firing cos >= {result.recurrence.threshold})", "modal coverage per SAE", "modal"], rows)
    figures = result.figures()
    for name, label, paper in (("classes_found", "classes found above both nulls", "10"), ("classes_found_raw", "classes, raw count", "10"),
                               ("modal_coverage", "mean modal coverage", "0.585")):
        f = figures[name]
        print(words(label, Verdict.from_json(f), paper) if "above" in f else f"{label}: {f['value']:.2f} (no null computed)")
    print("wrote " + ", ".join(str(p) for p in written))
