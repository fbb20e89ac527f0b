"""Wall time of `successor-lens run` on the default model: cold (empty run folder), then warm.

Prints the per-stage breakdown from the stage manifests and the warm/cold ratio, and the time of
`successor-lens --help` and of an argument error (no model, no torch import); with --cold-model the
first run also rebuilds the converted-model cache (a first install).
Targets (issue 5): cold under 5 minutes, warm under 30 s on 2 cores; (issue 13) `--help` well under
a second and a fully cached run in a few seconds. The warm run is timed twice: answered by the CLI
from the stage keys (`runner/run_config.py`, no torch import) and through the pipeline (`--force`
of nothing is not possible, so the second warm run calls `run_pipeline` itself with a `LazyModel`).
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

from successor_lens.filenames import STAGES as STAGES_FOLDER
from successor_lens.runner.stage_cache import STAGES

THROUGH_PIPELINE = ("import sys; from successor_lens.models.loading import LazyModel; from successor_lens.runner.run import run_pipeline; "
                    "from successor_lens.runner.run_config import RunConfig; from successor_lens.artifacts.atlas_config import AtlasConfig; "
                    "from successor_lens.corpus import context_corpus; "
                    "r = run_pipeline(LazyModel('smollm2-135m'), sys.argv[1], RunConfig(atlas=AtlasConfig(corpus=context_corpus(None))), "
                    "progress=False, log=lambda s: None); assert r.ran == [], r.ran")


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
        stages = {name: json.loads((out / STAGES_FOLDER / f"{name}.json").read_text())["seconds"] for name in STAGES}
        warm, stdout = timed_run(out, env)
        start = time.perf_counter()  # the same warm run through the pipeline's stage cache (imports torch, computes every key)
        subprocess.run([sys.executable, "-c", THROUGH_PIPELINE, str(out)], check=True, env=env)
        warm_pipeline = time.perf_counter() - start
    print(f"cold run{' (empty model cache)' if args.cold_model else ' (model cache warm)'}: {cold:6.1f} s (target < 300 s)")
    for name in STAGES:
        print(f"    {name:<12}{stages.get(name, float('nan')):6.1f} s")
    print(f"    {'outside stages (imports, model load, hashing)':<12} {cold - sum(stages.values()):.1f} s")
    print(f"warm run (every stage cached, answered by the CLI from the stage keys): {warm:6.2f} s")
    print(f"warm run through the pipeline (imports torch, computes every stage key): {warm_pipeline:6.2f} s")
    print(f"warm / cold: {warm / cold:.4f} ({cold / warm:.0f}x faster)")
    bare = timed_cli(["--version"], env)
    print(f"successor-lens --help: {timed_cli(['--help'], env):.2f} s; an argument error (run --steps 0): "
          f"{timed_cli(['run', '--steps', '0'], env):.2f} s; --version: {bare:.2f} s (median of 5; no torch import)")
    print("summary of the run:")
    print("\n".join(line for line in stdout.splitlines() if line.startswith("  ")))


if __name__ == "__main__":
    main()
