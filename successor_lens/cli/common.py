"""Arguments shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from successor_lens.models import DEFAULT_MODEL


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL}, embedded, offline; or any TransformerLens name)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def resolve_device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device: use --device cpu")
    return name


def out_dir(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    return Path("runs") / args.model.replace("/", "_")


def print_table(header: list[str], rows: list[list], file=None) -> None:
    cells = [[str(c) for c in header]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))), file=file)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=file)
