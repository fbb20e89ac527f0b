"""The export's streaming harvest: time and peak memory of `corpus_stats` as the windows grow.

Each size runs in a fresh process. The inputs are seeded random activations of SmolLM2's width
(576), made per chunk, so the figure is the harvest's own memory and time (no model forward);
the dictionary is a TopK SAE of 8 x 576 latents, k 32. Peak resident memory is read after the
setup and again at the end; the difference is what the harvest held. Work counted: windows x
tokens encoded.

    python bench/export_stream.py [--sizes 256 2048] [--ctx 128]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(n: int, ctx: int) -> dict:
    import torch

    from successor_lens.artifacts.corpus_stats import corpus_stats
    from successor_lens.sae_train.train_config import TrainConfig
    from successor_lens.sae_train.trainer import make_sae

    torch.manual_seed(0)
    sae = make_sae(TrainConfig(d_sae=8 * 576, k=32), 576, {"model_name": "bench", "hook_name": "blocks.0.hook_mlp_out"}).eval()
    windows = torch.randint(1, 40000, (n, ctx))
    windows[:, 0] = 0

    def inputs_of(start: int, stop: int) -> torch.Tensor:
        return torch.randn(stop - start, ctx, 576, generator=torch.Generator().manual_seed(start))

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        stats = corpus_stats(sae, windows, inputs_of, 0, top_k=80, sample_k=100, hist_k=1024, before=10, after=4)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"windows": n, "tokens": stats.n_tokens, "seconds": seconds, "tokens_per_s": stats.n_tokens / seconds,
            "held_mib": (after - before) / 1024, "setup_mib": before / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 2048])
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.ctx)))
        return
    rows = []
    for n in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--one", str(n), "--ctx", str(args.ctx)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'windows':>8} {'tokens':>9} {'seconds':>8} {'tokens/s':>9} {'held MiB':>9}")
    for r in rows:
        print(f"{r['windows']:>8} {r['tokens']:>9} {r['seconds']:>8.1f} {r['tokens_per_s']:>9.0f} {r['held_mib']:>9.0f}")
    first, last = rows[0], rows[-1]
    print(f"{last['windows'] / first['windows']:.0f}x the windows: {last['seconds'] / first['seconds']:.1f}x the time, "
          f"{last['held_mib'] / max(first['held_mib'], 1):.2f}x the memory held")


if __name__ == "__main__":
    main()
