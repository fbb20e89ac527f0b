"""`successor-lens roles`: which head does what, and where in-context succession happens."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import add_model_arguments, nonnegative_int, old_spelling, out_dir, positive_int, print_table, resolve_device

HELP = "every head's roles (copying, successor, predecessor, +2, previous-token, induction) with their nulls, and activation patching on succession prompts"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    old_spelling(p, "--top", p.add_argument("--top-heads", dest="top", type=positive_int, default=3,
                                            help="how many heads that carry the succession to read in context (default 3)"))
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the random token sequences (attention roles)")
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.atlas_site import refresh_atlas
    from successor_lens.artifacts.stage_files import write_roles
    from successor_lens.models.loading import load_model, model_shape
    from successor_lens.probes.incontext import fitting, succession_prompts
    from successor_lens.probes.roles import head_roles
    from successor_lens.runner.folders import run_folder
    from successor_lens.tasks import build_token_set

    device = resolve_device(args.device)
    model_shape(args.model)  # an unknown or missing model is one line before any work
    with run_folder(out_dir(args), "run", model=args.model, dtype=args.dtype) as out:
        model = load_model(args.model, device=device, dtype=args.dtype)
        prompts = fitting(model, succession_prompts(model.tokenizer))
        roles = head_roles(model, prompts, build_token_set(model.tokenizer), args.seed, args.top)
        written = write_roles(roles, model, out, {"seed": args.seed, "n_prompts": len(prompts)})
        refresh_atlas(out)

    print(f"{args.model}: roles of {len(roles['heads'])} heads on the residual each reads (only roles above their nulls):")
    rows = [[name, h["words"].split(": ", 1)[1]] for name, h in roles["heads"].items() if "no role above" not in h["words"]]
    print_table(["head", "roles"], rows)
    if roles["patching"]:
        print(f"activation patching on {roles['patching']['n_pairs']} succession prompts ({roles['patching']['test']}):")
        print_table(["head", "effect", "above null", "OV succession in context", "chance", "OV copying", "reads last item"],
                    [[c["head"], c["effect"], "yes" if c["above"] else "no", c["succession"], c["chance"], c["copying"], c["reads_last_item"]]
                     for c in roles["carriers"]])
    else:
        print("no pair of succession prompts of the same task and length: no patching")
    print("wrote " + ", ".join(str(p) for p in written))
