"""`successor-lens mine`: group SAE latents on MLP0 outputs into mod-10 classes."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import add_model_arguments, config_option, finite_float, out_dir, positive_int, print_table, resolve_device
from successor_lens.features.mine_config import MineConfig
from successor_lens.runner.run_config import RunConfig
from successor_lens.sae_train.train_config import DEFAULTS

HELP = "mine mod-10 features from SAEs on MLP0 outputs (trains --seeds SAEs unless --sae is given)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--sae", action="append", default=None, help="an SAE folder to mine (repeat for several); default: train --seeds new ones")
    config_option(p, RunConfig, "seeds", type=positive_int)
    steps = DEFAULTS["succession"]["steps"]
    p.add_argument("--steps", type=positive_int, default=steps, help=f"training steps per SAE (default {steps})")
    config_option(p, MineConfig, "selectivity", type=finite_float)
    config_option(p, MineConfig, "n_clusters", type=positive_int)
    config_option(p, MineConfig, "null_draws", type=positive_int)
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.stage_files import write_mine
    from successor_lens.features.mine_run import mine_model
    from successor_lens.models.loading import load_model, model_shape
    from successor_lens.runner.folders import run_folder
    from successor_lens.sae_train.dictionary import load_dictionary
    from successor_lens.sae_train.runtime import Runtime
    from successor_lens.sites import hook_name

    runtime = Runtime(resolve_device(args.device))
    cfg = MineConfig(selectivity=args.selectivity, n_clusters=args.n_clusters, null_draws=args.null_draws)
    shape = model_shape(args.model)
    for path in args.sae or []:  # each dictionary readable, finite and of this model's MLP0, before the model loads
        load_dictionary(path, expected_d_in=shape.d_model, expected_hook=hook_name("mlp0"))
    with run_folder(out_dir(args), "run", model=args.model, dtype=args.dtype) as out:
        model = load_model(args.model, device=runtime.device, dtype=args.dtype)
        result = mine_model(model, out, runtime, args.sae, args.seeds, args.steps, cfg)
        written = write_mine(result, model, out)

    from successor_lens.nulls import Verdict, words
    from successor_lens.paper import HEADLINES

    found = [len(m.classes_found) for m in result.mined]
    print(f"mod-10 classes found per SAE: {found} (of 10); recurrence across {len(result.mined)} SAEs:")
    rows = []
    for c in range(10):
        cov = [f"{m.modal_coverage[c]:.2f}" if c in m.modal_coverage else "-" for m in result.mined]
        rows.append([c, result.recurrence.counts.get(c, 0), " ".join(cov), "yes" if c in result.recurrence.modal_directions else "no"])
    print_table(["class", f"SAEs recurring in all others (firing cos >= {result.recurrence.threshold})", "modal coverage per SAE", "modal"], rows)
    figures = result.figures()
    per = ", ".join(str(n) for n in figures["classes_found"].get("per_sae", found))
    for name in ("classes_found", "classes_found_raw", "modal_coverage"):
        f, label = figures[name], HEADLINES[name].label.format(per=per)
        print(words(label, Verdict.from_json(f), HEADLINES[name].paper) if "above" in f else f"{label}: {f['value']:.2f} (no null computed)")
    print("wrote " + ", ".join(str(p) for p in written))
