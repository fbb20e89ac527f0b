"""Benchmark: the batched head scan against a straightforward per-head loop, in one run.

Prints the cold (GGUF -> TransformerLens conversion) and cached model-load times, the batched
scan time for each effective-embedding option, and the per-head loop time with the ratio.
Targets (issue 2): all three options under 2 s after load, and >= 30x the per-head loop.

    python bench/heads.py
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from successor_lens.models.loading import load_model  # noqa: E402
from successor_lens.probes.circuit import effective_embeddings  # noqa: E402
from successor_lens.probes.probe_configs import ScanConfig  # noqa: E402
from successor_lens.probes.scan import scan_heads  # noqa: E402
from successor_lens.tasks import build_token_set  # noqa: E402


@torch.no_grad()
def loop_scan(model, token_set, embedding="mlp0"):
    """The straightforward version: one head and one token at a time."""
    tokens = token_set.tokens
    x_all = effective_embeddings(model, tokens, embedding)
    held_out = {name for name, task in token_set.tasks.items() if task.held_out}
    pairs = [(r, s) for r, s in token_set.successor_pairs() if token_set.items[r].task not in held_out]
    task_of = [item.task for item in token_set.items]
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        block = model.blocks[layer]
        x = x_all[layer if x_all.shape[0] > 1 else 0]
        for head in range(model.cfg.n_heads):
            hits = 0
            for row, succ in pairs:
                xn = block.ln1(x[row][None, None])[0, 0]
                out = (xn @ block.attn.W_V[head] + block.attn.b_V[head]) @ block.attn.W_O[head]
                cands = [i for i, t in enumerate(task_of) if t == task_of[row]]
                logits = out @ model.W_U[:, tokens[cands]]
                hits += cands[int(logits.argmax())] == succ
            scores[layer, head] = hits / len(pairs)
    return scores


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as cold_cache:
        t0 = time.perf_counter()
        load_model(cache_dir=cold_cache)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = load_model(cache_dir=cold_cache)
        warm = time.perf_counter() - t0
    print(f"model load: cold {cold:.1f} s (GGUF dequantise + convert + cache), cached {warm:.1f} s")

    token_set = build_token_set(model.tokenizer)
    scan_heads(model, token_set)  # warm-up
    total = 0.0
    for embedding in ("mlp0", "embed+mlp0", "residual"):
        seconds, _ = timed(lambda embedding=embedding: scan_heads(model, token_set, ScanConfig(embedding=embedding)))
        total += seconds
        print(f"batched scan, {embedding:<10}: {seconds:.3f} s (270 heads, {len(token_set.successor_pairs())} pairs)")
    print(f"batched scan, all three options: {total:.3f} s (target < 2 s)")

    batched, fast = timed(lambda: scan_heads(model, token_set).scores)
    t0 = time.perf_counter()
    slow = loop_scan(model, token_set)
    loop = time.perf_counter() - t0
    agree = torch.allclose(fast, slow)
    print(f"mlp0 scan: batched {batched:.3f} s, per-head loop {loop:.2f} s, ratio {loop / batched:.0f}x "
          f"(target >= 30x); scores identical: {agree}")


if __name__ == "__main__":
    main()
