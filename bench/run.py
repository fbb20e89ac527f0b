"""Wall time of `successor-lens run` on the default model: cold (empty run folder), then warm.

Prints the per-stage breakdown from the stage manifests and the warm/cold ratio, and the time of
`successor-lens --help` and of an argument error (no model, no torch import); with --cold-model the
first run also rebuilds the converted-model cache (a first install).
Targets (issue 5): cold under 5 minutes, warm under 30 s on 2 cores; (issue 13) `--help` well under
a second and a fully cached run in a few seconds. The warm run is timed twice: answered from the
request record (`artifacts/stages.py`, no torch import) and through the pipeline's stage cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from successor_lens.confighelp import constant

STAGES = constant("successor_lens.artifacts.stages:STAGES")
REQUEST_FILE = constant("successor_lens.artifacts.stages:REQUEST_FILE")


def timed_run(out: Path, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "successor_lens.cli.main", "run", "--out", str(out)],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"run failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def timed_cli(args: list[str], env: dict, repeats: int = 5) -> float:
    """Median wall time of a CLI call that needs no model (help, argument errors)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "successor_lens.cli.main", *args], capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold-model", action="store_true", help="also time the first model conversion (empty model cache)")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    with tempfile.TemporaryDirectory() as tmp:
        if args.cold_model:
            env["SUCCESSOR_LENS_CACHE"] = str(Path(tmp) / "model-cache")
        out = Path(tmp) / "run"
        cold, _ = timed_run(out, env)
        stages = {name: json.loads((out / ".stages" / f"{name}.json").read_text())["seconds"] for name in STAGES}
        warm, stdout = timed_run(out, env)
        (out / ".stages" / REQUEST_FILE).unlink()  # the same warm run through the pipeline's stage cache (imports, keys)
        warm_pipeline, _ = timed_run(out, env)
    print(f"cold run{' (empty model cache)' if args.cold_model else ' (model cache warm)'}: {cold:6.1f} s (target < 300 s)")
    for name in STAGES:
        print(f"    {name:<12}{stages.get(name, float('nan')):6.1f} s")
    print(f"    {'outside stages (imports, model load, hashing)':<12} {cold - sum(stages.values()):.1f} s")
    print(f"warm run (every stage cached, answered from the request record): {warm:6.2f} s")
    print(f"warm run through the pipeline (request record removed: imports torch, computes every stage key): {warm_pipeline:6.2f} s")
    print(f"warm / cold: {warm / cold:.4f} ({cold / warm:.0f}x faster)")
    bare = timed_cli(["--version"], env)
    print(f"successor-lens --help: {timed_cli(['--help'], env):.2f} s; an argument error (run --steps 0): "
          f"{timed_cli(['run', '--steps', '0'], env):.2f} s; --version: {bare:.2f} s (median of 5; no torch import)")
    print("summary of the run:")
    print("\n".join(line for line in stdout.splitlines() if line.startswith("  ")))


if __name__ == "__main__":
    main()
