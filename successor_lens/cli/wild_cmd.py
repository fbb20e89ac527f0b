"""`successor-lens wild`: what the top heads do on natural text, and who increments in context."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import (
    add_corpus_argument,
    add_model_arguments,
    add_window_arguments,
    check_ctx,
    config_option,
    corpus_choice,
    nonnegative_int,
    old_spelling,
    out_dir,
    positive_int,
    print_table,
    resolve_device,
)
from successor_lens.probes.probe_configs import WildConfig

HELP = "in-the-wild direct effects of heads on a text corpus (categories, wins) and in-context succession attribution"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--head", action="append", default=None, help="head L{layer}H{head} to analyse (repeatable; default: the top 2 of the folder's scan, heads.json, else of a fresh scan)")
    add_corpus_argument(p, "the corpus windows")
    add_window_arguments(p, 64, 128)
    old_spelling(p, "--top", config_option(p, WildConfig, "top_positions", type=positive_int))
    config_option(p, WildConfig, "rank_positions", type=positive_int)
    config_option(p, WildConfig, "succession_cases", "--cases", type=positive_int)
    config_option(p, WildConfig, "seed", type=nonnegative_int)
    p.add_argument("--out", default=None, help="run folder (default runs/MODEL)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.atlas_site import refresh_atlas
    from successor_lens.artifacts.records import HEADS_RECORD
    from successor_lens.artifacts.stage_files import write_wild
    from successor_lens.corpus import WINDOW_RULE, corpus_windows
    from successor_lens.filenames import HEADS
    from successor_lens.models.loading import load_model, model_shape
    from successor_lens.paper import WILD_TEXT
    from successor_lens.probes.head_id import check_head, parse_head_name
    from successor_lens.probes.incontext import in_context_dla, succession_prompts
    from successor_lens.probes.scan import scan_heads
    from successor_lens.probes.wild import wild_analysis
    from successor_lens.runner.folders import run_folder
    from successor_lens.tasks import build_token_set

    device = resolve_device(args.device)
    shape = model_shape(args.model)
    heads = [parse_head_name(check_head(h, shape)) for h in args.head] if args.head else None
    check_ctx(args.ctx, shape)
    corpus = corpus_choice(args.corpus)
    with run_folder(out_dir(args), "run", model=args.model, dtype=args.dtype) as out:
        model = load_model(args.model, device=device, dtype=args.dtype)
        if (out / HEADS).is_file():  # the folder's own scan (`run --embedding ...` included): one ranking of heads per folder
            scanned = HEADS_RECORD.read(out)
            ov = {name: h["succession"] for name, h in scanned["heads"].items()}
            top = [h["head"] for h in scanned["top_heads"]]
        else:
            scan = scan_heads(model, build_token_set(model.tokenizer))
            ov = {name: score for name, score, _ in scan.top_heads(model.cfg.n_layers * model.cfg.n_heads)}
            top = list(ov)
        heads = heads or [parse_head_name(name) for name in top[:2]]
        windows = corpus_windows(model, corpus, args.contexts, args.ctx, args.seed)
        results = wild_analysis(model, windows, heads, WildConfig(top_positions=args.top_positions, rank_positions=args.rank_positions, succession_cases=args.cases, seed=args.seed))
        incontext = in_context_dla(model, succession_prompts(model.tokenizer))
        written = write_wild(results, incontext, ov, model, out, {"corpus": corpus, "windows": list(windows.shape),
                                                                  "window_rule": WINDOW_RULE})
        refresh_atlas(out)

    print(f"{len(windows)} windows x {windows.shape[1]} tokens of {corpus}")
    print("category shares of the positions where each head helps most (mean-ablation, direct path):")
    cats = list(results[0].shares)
    print_table(["head", "OV score", "mean d loss", "helped positions"] + cats,
                [[r.head, ov.get(r.head, float("nan")), r.mean_delta_loss, len(r.top)] + [r.shares[c] for c in cats] for r in results])
    print(f"paper: {WILD_TEXT}")
    first = results[0]
    print(f"succession cases in the corpus: {first.n_cases}; largest direct effect: "
          + ", ".join(f"{h} {n}" for h, n in list(first.wins.items())[:5])
          + "; " + ", ".join(f"{r.head} wins {r.wins.get(r.head, 0)}/{r.n_cases}" for r in results))
    print("heads by exact mean direct effect on the loss at sampled positions: "
          + ", ".join(f"{h} {v:.3f}" for h, v in first.head_ranking[:6]))
    print("in-context succession prompts, model top-1 accuracy over the vocabulary / among the task's items: "
          + ", ".join(f"{t} {a:.2f}/{incontext.accuracy_in_task[t]:.2f}" for t, a in incontext.accuracy.items()))
    print("heads by direct logit attribution on the answer (vs the task's other items), with their OV score:")
    print_table(["head", "DLA", "OV succession"], [[h, v, ov.get(h, float("nan"))] for h, v in incontext.ranking(8)])
    print("wrote " + ", ".join(str(p) for p in written))
