"""Scale-out figures on this machine: data-parallel training throughput with 1 and 2 processes
(gloo, same global batch, same activations), and the streaming harvest's peak memory at 1x and 4x
corpus size (it must stay flat: memory is bounded by the batch and one shard, not the corpus).

    python bench/scale.py [--steps 30] [--tokens 100000]

Each harvest runs in a fresh process (its peak RSS is its own); each training setting is timed
after a warm-up step, inside the processes, from a barrier to a barrier.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from successor_lens.sae_train.batches import ShuffledBatches  # noqa: E402
from successor_lens.sae_train.distributed import Dist  # noqa: E402
from successor_lens.sae_train.train_config import TrainConfig  # noqa: E402
from successor_lens.sae_train.trainer import make_sae, train  # noqa: E402

D, ROWS = 576, 65536


def config(steps: int) -> TrainConfig:
    return TrainConfig(d_sae=8 * D, k=32, steps=steps, batch_size=4096, warmup_frac=0.0, decay_frac=0.0, log_every=10**9)


def data() -> torch.Tensor:
    return torch.randn(ROWS, D, generator=torch.Generator().manual_seed(0))


def _rank(rank: int, world: int, port: int, steps: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist = Dist.from_env("cpu")
    cfg, acts = config(steps), data()
    train(cfg, make_sae(cfg, D), ShuffledBatches(acts, cfg.batch_size), progress=False, stop_after=1, dist=dist)  # warm-up
    sae = make_sae(cfg, D)
    dist.barrier()
    t0 = time.perf_counter()
    train(cfg, sae, ShuffledBatches(acts, cfg.batch_size), progress=False, dist=dist)
    dist.barrier()
    if rank == 0:
        Path(out).write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    torch.distributed.destroy_process_group()


def throughput(world: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "t.json")
        if world == 1:
            cfg, acts = config(steps), data()
            train(cfg, make_sae(cfg, D), ShuffledBatches(acts, cfg.batch_size), progress=False, stop_after=1)
            t0 = time.perf_counter()
            train(cfg, make_sae(cfg, D), ShuffledBatches(acts, cfg.batch_size), progress=False)
            seconds = time.perf_counter() - t0
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            torch.multiprocessing.spawn(_rank, args=(world, port, steps, out), nprocs=world)
            seconds = json.loads(Path(out).read_text())["seconds"]
    return steps * config(steps).batch_size / seconds


HARVEST = """
import os, sys, threading, time
from pathlib import Path
from successor_lens.models.loading import load_model
from successor_lens.corpus import stream_texts
from successor_lens.sae_train.harvest import corpus_activations
from successor_lens.sae_train.shards import write_many
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page  # resident now (not a high-water mark)
model = load_model()
before, peak, done = rss(), [0], []
def sample():
    while not done:
        peak[0] = max(peak[0], rss())
        time.sleep(0.02)
watcher = threading.Thread(target=sample, daemon=True)
watcher.start()
t0 = time.perf_counter()
written = write_many({"mlp0": Path(sys.argv[2])}, corpus_activations(model, stream_texts(sys.argv[1]), ["mlp0"], max_tokens=10**9),
                     {"mlp0": {"bench": True}})["mlp0"]
seconds = time.perf_counter() - t0
done.append(1)
watcher.join()
print(len(written), before // 1024, max(peak[0], rss()) // 1024, seconds)
"""


def harvest_peak(tokens: int, tmp: Path) -> tuple[int, float, float, float]:
    """(rows, resident MiB with the model loaded, peak resident MiB during the harvest (sampled every 20 ms), seconds)."""
    corpus = tmp / f"corpus-{tokens}.txt"
    words = "one two three Monday Tuesday January February first second 1 2 3 10 11 12 the of and list item".split()
    with open(corpus, "w") as f:
        n = 0
        while n < tokens:
            f.write(" ".join(words[(n + i) % len(words)] for i in range(40)) + "\n\n")
            n += 45  # about one token per word, plus punctuation and spaces
    done = subprocess.run([sys.executable, "-c", HARVEST, str(corpus), str(tmp / f"acts-{tokens}")], capture_output=True, text=True,
                          env={**os.environ}, check=True)
    rows, base, peak, seconds = done.stdout.split()[-4:]
    return int(rows), int(base) / 1024, int(peak) / 1024, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=100_000, help="the 1x corpus size (the 4x one is four times it)")
    args = parser.parse_args()
    print(f"data-parallel training, TopK d {D}, d_sae {8 * D}, k 32, global batch 4096, {args.steps} steps, gloo on {os.cpu_count()} cores:")
    one = throughput(1, args.steps)
    two = throughput(2, args.steps)
    print(f"    1 process : {one:8.0f} activations/s")
    print(f"    2 processes: {two:8.0f} activations/s ({two / one:.2f}x; each process gets {max(1, (os.cpu_count() or 1) // 2)} thread(s))")
    print("streaming harvest of the default model's MLP0 over a text corpus (fresh process each):")
    with tempfile.TemporaryDirectory() as tmp:
        small = harvest_peak(args.tokens, Path(tmp))
        large = harvest_peak(4 * args.tokens, Path(tmp))
    for label, (rows, base, peak, seconds) in (("1x", small), ("4x", large)):
        print(f"    {label}: {rows:7d} rows in {seconds:5.1f} s; peak resident {peak:7.0f} MiB, {peak - base:+.0f} MiB over the loaded model")
    print(f"    4x / 1x harvest memory (over the model): {(large[2] - large[1]) / max(small[2] - small[1], 1):.2f} (flat is 1.00; "
          f"one shard is {ROWS} rows x {D} x 4 B = {ROWS * D * 4 / 2**20:.0f} MiB)")
    print(f"    this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB peak")


if __name__ == "__main__":
    main()
