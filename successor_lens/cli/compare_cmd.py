"""`successor-lens compare RUN_DIR...`: the headline figures of several runs side by side."""

from __future__ import annotations

import argparse

from successor_lens.cli.common import print_table

HELP = "compare finished run folders: headline figures beside their nulls, per model, with links to each atlas"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by `successor-lens run --out RUN_DIR`")
    p.add_argument("--out", default="runs/compare", help="folder for compare.md, compare.json, index.html and the plot (default runs/compare)")


def run(args: argparse.Namespace) -> None:
    from successor_lens.artifacts.compare import compare_runs, load_run
    from successor_lens.runner.folders import check_folder, run_folder

    check_folder(args.out, "compare")
    for folder in args.runs:  # every run readable before anything is written
        load_run(folder)
    with run_folder(args.out, "compare") as out:
        written, table = compare_runs(args.runs, out)
    print_table(table[0], table[1:])
    print("wrote " + ", ".join(str(p) for p in written))
