"""How far 2 training processes drift from 1 with the same global batch, by training length.

    python bench/distributed_drift.py [--steps 40 150 600] [--out /tmp/drift] [-- extra train options]

Trains the same dictionary (`train --model planted-gpt2 --d-sae 256 --k 8 --batch-size 64`) with one
process and with `--nproc 2` (gloo) for each length, and prints the largest weight difference (absolute,
and relative to the largest weight), and each run's FVU, L0 and dead fraction. Two processes sum each
gradient in two halves and all-reduce them; one process sums it whole: the same numbers added in
another order, so they differ in the last bits (~1e-7). Training feeds those bits back, and TopK
turns a near tie between two latents' pre-activations into a different choice, so the difference
grows with the number of steps while the dictionaries stay equally good.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

ARGS = ["train", "--model", "planted-gpt2", "--d-sae", "256", "--k", "8", "--batch-size", "64", "--checkpoint-every", "100000"]


def train(out: Path, steps: int, nproc: int, extra: list[str]) -> tuple[dict, dict]:
    cmd = [sys.executable, "-m", "successor_lens", *ARGS, *extra, "--steps", str(steps), "--nproc", str(nproc), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    (folder,) = [p for p in out.glob("sae-*") if p.is_dir()]
    return load_file(folder / "sae_weights.safetensors"), json.loads((folder / "metrics.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[40, 150, 600])
    p.add_argument("--out", default=None)
    p.add_argument("extra", nargs="*", help="more `train` options after --, e.g. -- --tokens vocab --d-sae 2048 --k 32 --batch-size 1024")
    args = p.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="drift-"))
    print(f"train options: {' '.join(ARGS[1:] + args.extra)}")
    print("| steps | max abs diff | relative to max weight | FVU 1 proc | FVU 2 proc | L0 1 / 2 | dead 1 / 2 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for steps in args.steps:
        (w1, m1), (w2, m2) = train(root / f"one-{steps}", steps, 1, args.extra), train(root / f"two-{steps}", steps, 2, args.extra)
        diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
        scale = max(w1[k].abs().max().item() for k in w1)
        print(f"| {steps} | {diff:.2e} | {diff / scale:.2e} | {m1['fvu']:.4f} | {m2['fvu']:.4f} | {m1['l0']:.2f} / {m2['l0']:.2f} "
              f"| {m1['dead_frac']:.3f} / {m2['dead_frac']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
