"""`successor-lens tune --goal GOAL`: search for an edit that moves in-context succession, confirm it on
a held-out split, and write the decision (tune.json, pareto.png, chosen_edit.json, the atlas's page)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from successor_lens.cli.common import (
    add_corpus_argument,
    add_model_arguments,
    add_window_arguments,
    check_ctx,
    corpus_choice,
    finite_float,
    nonnegative_int,
    old_spelling,
    out_dir,
    positive_int,
    resolve_device,
)
from successor_lens.probes.tune_config import DEFAULT_BUDGET, DEFAULT_MAX_KL, DEFAULT_MAX_LOSS_INCREASE, GOALS

HELP = "automated edit search (head scales and ablations, feature edits, pairs) confirmed on held-out prompts against a null search"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--goal", required=True, help=f"{' or '.join(GOALS)}")
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL) holding the run's heads.json, incontext.json (and "
                   "features.safetensors for feature edits); writes tune/GOAL/")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help=f"evaluations per continuous scale (golden-section; default {DEFAULT_BUDGET})")
    p.add_argument("--max-kl", type=finite_float, default=DEFAULT_MAX_KL,
                   help=f"side-effect budget: KL(unedited || edited) per corpus token, nats (default {DEFAULT_MAX_KL})")
    p.add_argument("--max-loss-increase", type=finite_float, default=DEFAULT_MAX_LOSS_INCREASE,
                   help=f"side-effect budget: rise of the corpus next-token loss, nats (default {DEFAULT_MAX_LOSS_INCREASE})")
    old_spelling(p, "--heads", p.add_argument("--top-heads", dest="heads", type=positive_int, default=4,
                                              help="how many top heads of the run's evidence to search (default 4)"))
    add_corpus_argument(p, "the corpus windows (search and held-out)")
    add_window_arguments(p, 32, 64, "corpus windows, halved into search and held-out")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="the splits and the null's random heads and directions (default 0; "
                   "the run's seed keeps the held-out prompts those the analysis head was not chosen on)")


def evidence_heads(heads_json: Mapping[str, Any], incontext: Mapping[str, Any], n: int) -> list[str]:
    """The analysed head, then the in-context choice's candidates (OV x DLA), then the top OV heads."""
    names = [incontext["choice"]["head"]] + [c["head"] for c in incontext["choice"]["candidates"]] + [t["head"] for t in heads_json["top_heads"]]
    return list(dict.fromkeys(names))[:n]


def run(args: argparse.Namespace) -> None:
    import time

    from successor_lens.artifacts.atlas_site import add_tune_pages
    from successor_lens.artifacts.decision import plain_lines, tune_entry
    from successor_lens.artifacts.records import HEADS_RECORD, INCONTEXT_RECORD, recorded_heads
    from successor_lens.artifacts.stage_files import invalidate_tune, tune_folder, write_tune
    from successor_lens.corpus import WINDOW_RULE, corpus_windows
    from successor_lens.errors import ConfigError
    from successor_lens.features.mine_run import load_directions
    from successor_lens.filenames import FEATURES, HEADS, INCONTEXT, TUNE, TUNE_RECORDS
    from successor_lens.models.loading import load_model, model_shape
    from successor_lens.models.provenance import model_fingerprint
    from successor_lens.probes.head_id import parse_head_name
    from successor_lens.probes.incontext import fitting, succession_prompts
    from successor_lens.probes.tune import Evidence, tune
    from successor_lens.probes.tune_config import TuneConfig
    from successor_lens.probes.tune_data import make_splits, side_prompts
    from successor_lens.runner.folders import check_folder, model_identity, run_folder
    from successor_lens.tasks import build_token_set

    cfg = TuneConfig(args.goal, args.budget, args.max_kl, args.max_loss_increase, args.heads, args.seed)
    device = resolve_device(args.device)
    shape = model_shape(args.model)
    check_ctx(args.ctx, shape)
    if args.contexts < 4:
        raise ConfigError(f"--contexts {args.contexts}: the search and held-out splits need at least 2 windows each: use 4 or more")
    out = check_folder(out_dir(args), "run", model=args.model, dtype=args.dtype)
    for name in (HEADS, INCONTEXT):
        if not (out / name).is_file():
            raise ConfigError(f"{out} has no {name}: tune searches the run's evidence; run `successor-lens run --model {args.model} "
                              f"--out {out}` first")
    heads_json, incontext = HEADS_RECORD.read(out), INCONTEXT_RECORD.read(out)
    rerun = f"`successor-lens run --model {args.model} --out {out}`"
    recorded_heads(out / INCONTEXT, [incontext["choice"]["head"]], shape, rerun)
    heads = [parse_head_name(h) for h in recorded_heads(out / INCONTEXT, evidence_heads(heads_json, incontext, cfg.heads), shape, rerun)]
    directions = load_directions(out / FEATURES) if (out / FEATURES).is_file() else {}
    if not directions:
        print(f"note: {out} has no mined features ({FEATURES}): the search tries head edits only")
    corpus = corpus_choice(args.corpus)
    folder = tune_folder(out, cfg.goal)
    with run_folder(out, "run", model=args.model, dtype=args.dtype):
        start = time.time()
        invalidate_tune(folder)
        model = load_model(args.model, device=device, dtype=args.dtype)
        prompts = fitting(model, succession_prompts(model.tokenizer))
        if len(prompts) < 4:
            raise ConfigError(f"{args.model}: only {len(prompts)} succession prompts fit its tokenizer; tune needs at least 4")
        windows = corpus_windows(model, corpus, args.contexts, args.ctx, args.seed)
        search_data, held = make_splits(prompts, windows, side_prompts(model.tokenizer, args.seed), args.seed)
        evidence = Evidence(heads, parse_head_name(incontext["choice"]["head"]), directions)
        key = {"model": model_fingerprint(model)}  # a record holds measurements only: every goal and budget reads it
        print(f"tune {cfg.goal} on {args.model}: heads {', '.join(evidence_heads(heads_json, incontext, cfg.heads))}"
              f"{', features ' + str(sorted(directions)) if directions else ''}; search split {len(search_data.prompts)} prompts, "
              f"{len(search_data.windows)} windows; held-out {len(held.prompts)} prompts, {len(held.windows)} windows", flush=True)
        doc = tune(model, search_data, held, evidence, cfg, build_token_set(model.tokenizer).tokens, out / TUNE / TUNE_RECORDS, key,
                   log=lambda line: print(line, flush=True))
        doc["wall_s"] = round(time.time() - start, 1)
        written = write_tune(doc, model, folder, {"corpus": corpus, "windows": list(windows.shape), "window_rule": WINDOW_RULE,
                                                  "prompts": len(prompts), "seed": args.seed,
                                                  "replay": {"model": model_identity(args.model)["name"], "dtype": args.dtype}})
        add_tune_pages(out)  # its pages only: the rest of the atlas is unchanged by a tune
    print("\n".join(plain_lines(tune_entry(doc))))
    print(f"wall time {doc['wall_s']:.0f} s, {doc['evaluations']['new']} new evaluations ({doc['evaluations']['total']} in all)")
    print("wrote " + ", ".join(str(p) for p in written))
