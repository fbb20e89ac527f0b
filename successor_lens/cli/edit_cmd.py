"""`successor-lens edit --spec FILE`: apply declarative edits and measure gain and side effects."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import (
    add_corpus_argument,
    add_model_arguments,
    add_window_arguments,
    check_ctx,
    corpus_choice,
    nonnegative_int,
    out_dir,
    print_table,
    resolve_device,
)

HELP = "apply an edit spec (ablate/scale a head, add/subtract a mod-10 feature at a head's input) and print the KPI table"
SPEC_HELP = ('JSON spec, e.g. {"edits": [{"kind": "ablate_head", "layer": 23, "head": 3}]}; kinds: ablate_head (mode zero|mean), '
             "scale_head (factor), add_feature / subtract_feature (feature class 0-9, scale, positions all|items)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--spec", required=True, help=SPEC_HELP)
    add_corpus_argument(p, "the side-effect KPIs' corpus windows")
    add_window_arguments(p, 32, 128, "corpus windows for the side-effect KPIs")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL); features.safetensors is read from it")
    p.add_argument("--export-model", default=None, metavar="DIR", help="also write the edited model as a folder Hugging Face transformers "
                   "loads (safetensors + config + tokenizer): head scales and zero ablations only (they are exact weight edits)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.atlas_site import refresh_atlas
    from successor_lens.artifacts.model_export import check_exportable, export_model
    from successor_lens.artifacts.stage_files import write_edit
    from successor_lens.corpus import WINDOW_RULE, corpus_windows
    from successor_lens.errors import ConfigError
    from successor_lens.features.mine_run import load_directions
    from successor_lens.filenames import EDITS, FEATURES
    from successor_lens.io import UnsafePathError, overlapping
    from successor_lens.models.loading import load_model, model_shape
    from successor_lens.models.registry import source_kind
    from successor_lens.probes.edits import EditSet, kpi_table, load_spec, measure
    from successor_lens.probes.incontext import succession_prompts
    from successor_lens.runner.folders import FolderError, check_folder, run_folder
    from successor_lens.tasks import build_token_set

    device = resolve_device(args.device)
    shape = model_shape(args.model)
    name, edits = load_spec(args.spec, shape)
    check_ctx(args.ctx, shape)
    out = check_folder(out_dir(args), "run", model=args.model, dtype=args.dtype)
    if overlapping(args.spec, out / EDITS / f"{name}.json"):
        raise UnsafePathError(f"--spec {args.spec} is the record this edit writes (edits/{name}.json): keep specs outside the run's edits/ "
                              "folder, or give the spec another name")
    export = None
    if args.export_model:
        if args.dtype != "fp32":
            raise ConfigError(f"--export-model writes the checkpoint's own weights with the edit applied; --dtype {args.dtype} rounds "
                              "them only in memory: leave --dtype out to export (cast the exported folder with transformers if needed)")
        check_exportable(edits, source_kind(args.model), args.model)
        try:
            export = check_folder(args.export_model, "export", model=args.model, dtype=args.dtype)
        except FolderError as err:
            raise FolderError(str(err).replace("--out", "--export-model", 1)) from None
    directions = load_directions(out / FEATURES) if any(e.kind.endswith("feature") for e in edits) else {}
    corpus = corpus_choice(args.corpus)
    with run_folder(out, "run", model=args.model, dtype=args.dtype):
        model = load_model(args.model, device=device, dtype=args.dtype)
        items = build_token_set(model.tokenizer).tokens
        edit_set = EditSet(model, edits, directions, items)
        windows = corpus_windows(model, corpus, args.contexts, args.ctx, args.seed)
        edit_set.prepare(windows[:8])
        prompts = succession_prompts(model.tokenizer)
        before = measure(model, prompts, windows)
        after = measure(model, prompts, windows, edit_set)
        table = kpi_table(before, after)
        written = write_edit(name, edits, table, model, out, {"corpus": corpus, "windows": list(windows.shape),
                                                              "window_rule": WINDOW_RULE, "prompts": len(prompts)})
        refresh_atlas(out)
        if export is not None:
            with run_folder(export, "export", model=args.model, dtype=args.dtype) as dest:
                written += export_model(args.model, source_kind(args.model), edits, name, dest)
    print(f"edit {name!r}: " + "; ".join(f"{e.kind} L{e.layer}H{e.head}" for e in edits))
    print(f"on {len(prompts)} succession prompts and {windows.numel() - len(windows)} corpus positions ({len(windows)} windows):")
    print_table(["KPI", "before", "after", "delta"], [[r["metric"], r["before"], r["after"], r["delta"]] for r in table])
    print("wrote " + ", ".join(str(p) for p in written))
