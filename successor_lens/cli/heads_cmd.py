"""`successor-lens heads`: scan every head for succession and copying."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import add_model_arguments, config_option, old_spelling, out_dir, positive_int, print_table, resolve_device
from successor_lens.confighelp import field_docs
from successor_lens.probes.probe_configs import EMBEDDINGS, ScanConfig

HELP = "find successor heads: succession and copying scores of every head (heads.json + heatmap)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    docs = field_docs(ScanConfig)
    config_option(p, ScanConfig, "embedding", choices=list(EMBEDDINGS))
    p.add_argument("--no-mlp0-norm", action="store_true", help="do not " + docs["mlp0_norm"][0].lower() + docs["mlp0_norm"][1:])
    p.add_argument("--no-post-norms", action="store_true", help="leave out the norms a model applies after a sublayer "
                   "(Gemma's ln1_post, ln2_post): the wrong reading, kept for comparison")
    p.add_argument("--lean", action="store_true", help="read the checkpoint's safetensors one layer at a time, only the tensors the "
                   "OV scan uses, never the whole model (hub and local-folder models; embeddings mlp0 and embed+mlp0)")
    old_spelling(p, "--top", p.add_argument("--top-heads", dest="top", type=positive_int, default=10, help="how many heads to print (default 10)"))
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.stage_files import write_scan
    from successor_lens.models.lean import LeanModel
    from successor_lens.models.loading import load_model, model_shape
    from successor_lens.paper import SCAN_TEXT, SUCCESSOR_BAR
    from successor_lens.probes.head_id import parse_head_name
    from successor_lens.probes.scan import READOUT_BAR, check_lean_embedding, readout_validated, scan_heads, scan_lean
    from successor_lens.runner.folders import run_folder
    from successor_lens.tasks import build_token_set

    config = ScanConfig(embedding=args.embedding, mlp0_norm=not args.no_mlp0_norm, post_norms=not args.no_post_norms)
    device = resolve_device(args.device)
    model_shape(args.model)  # an unknown or missing model is one line before any work
    if args.lean:
        check_lean_embedding(config.embedding)
    lean_model = LeanModel(args.model, args.dtype) if args.lean else None  # a checkpoint that is not safetensors: one line here
    lean = lean_model.checkpoint if lean_model is not None else None  # its headers and config checked before --out is made
    with run_folder(out_dir(args), "run", model=args.model, dtype=args.dtype) as out:
        if lean_model is not None and lean is not None:
            token_set = build_token_set(lean.tokenizer)
            result = scan_lean(lean, token_set, config)
            model = lean.stand_in(lean_model.source())  # provenance: the whole model's source, and what the scan read
            print(f"lean scan: read {lean.read_params:,} of {lean.total_params:,} parameters ({lean.read_params / lean.total_params:.0%}), "
                  f"held in {args.dtype}")
        else:
            model = load_model(args.model, device=device, dtype=args.dtype)
            token_set = build_token_set(model.tokenizer)
            result = scan_heads(model, token_set, config)
        json_path, png_path, _ = write_scan(result, model, out)

    print(f"{args.model}: {len(token_set.items)} single-token items in {len(token_set.task_names)} task variants, "
          f"{len(token_set.dropped)} dropped (listed in heads.json)")
    print(f"succession score by OV circuit, effective embedding {config.embedding!r} (copying score = OV control)")
    rows = []
    for name, score, copy in result.top_heads(args.top):
        layer, head = parse_head_name(name)
        best_task = max(result.per_task, key=lambda t: result.per_task[t][layer, head].item())
        rows.append([name, score, copy, f"{best_task} {result.per_task[best_task][layer, head].item():.2f}"])
    print_table(["head", "succession", "copying", "best task"], rows)
    best = result.top_heads(1)[0]
    if not readout_validated(result.copying.max().item(), best[1]):
        print(f"readout not validated: the best copying score is {result.copying.max():.2f} < {READOUT_BAR}, so this OV readout "
              f"cannot find copying in {args.model} and its succession scores show nothing either way.")
    elif best[1] > SUCCESSOR_BAR:
        print(f"{best[0]} passes the paper's successor-head bar (> {SUCCESSOR_BAR}).")
    else:
        print(f"no head passes the paper's successor-head bar (> {SUCCESSOR_BAR}); best is {best[0]} at {best[1]:.3f}. "
              f"This model's successor behaviour is weak by the OV score (paper: {SCAN_TEXT}).")
    print(f"wrote {json_path} and {png_path}")

