"""Benchmark: our TopK trainer against sae-lens's SAETrainer, same activations, same steps.

Activations: the MLP0 output of every vocabulary token of the embedded model (49152 x 576).
SAE: TopK, d_sae = 8 * d_model, k = 32, batch 4096. sae-lens is run twice: with its defaults
(`rescale_acts_by_decoder_norm=True`) and with settings matched to ours (False), since a speed
comparison is fair only with the same math.

The roofline, counted honestly: the sparse path's only O(B*d*F) work is the encoder's forward
matmul, 2*B*d*F flops per step (the decoder, its gradient and the encoder's weight gradient touch
only the k active latents per row: O(B*k*d), `sae_train/sparse.py`). The limit is that matmul at
this machine's dense rate, measured in the same run at the same shape and dtype; the bench prints
the trainer's step time as a fraction of it, and where the rest of a step goes (top-k selection,
AuxK selection, decode + backward + optimizer), each phase timed alone at the same shapes.

Beside a competing process (`--beside N`, CPU): the same trainer alone, then while N other
processes run dense matmuls with torch's default threads (another job on the machine), at the
threads `successor_lens.threads` sets (the cores this process may use) and at one thread: steps/s
against the run alone, in the same run.

    python bench/train.py [--steps 20] [--device cpu|cuda] [--precision auto|fp32|bf16] [--beside 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: E402
from sae_lens.config import LoggingConfig, SAETrainerConfig  # noqa: E402

from successor_lens.models.loading import load_model  # noqa: E402
from successor_lens.sae_train.batches import ShuffledBatches  # noqa: E402
from successor_lens.sae_train.dictionary import evaluate  # noqa: E402
from successor_lens.sae_train.runtime import Runtime  # noqa: E402
from successor_lens.sae_train.train_config import TrainConfig  # noqa: E402
from successor_lens.sae_train.trainer import make_sae, train  # noqa: E402
from successor_lens.sites import token_activations  # noqa: E402


def matmul_rate(d: int, f: int, b: int, device: str, dtype: torch.dtype) -> float:
    """The dense [b, d] @ [d, f] rate into a preallocated output (no allocation in the timing)."""
    x, w = torch.randn(b, d, device=device, dtype=dtype), torch.randn(d, f, device=device, dtype=dtype)
    out = torch.empty(b, f, device=device, dtype=dtype)
    for _ in range(2):
        torch.mm(x, w, out=out)
    sync(device)
    t0, n = time.perf_counter(), 10
    for _ in range(n):
        torch.mm(x, w, out=out)
    sync(device)
    return 2 * b * d * f * n / (time.perf_counter() - t0)


def peak_mib(device: str) -> float | None:
    """Peak CUDA memory since the last reset (None on CPU)."""
    if not device.startswith("cuda"):
        return None
    peak = torch.cuda.max_memory_allocated() / 2**20
    torch.cuda.reset_peak_memory_stats()
    return peak


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_saelens(acts, cfg: TrainConfig, rescale: bool, device: str, autocast: bool):
    torch.manual_seed(cfg.seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=cfg.d_sae, k=cfg.k, rescale_acts_by_decoder_norm=rescale, device=device))
    batches = ShuffledBatches(acts, cfg.batch_size, cfg.seed)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=cfg.steps * cfg.batch_size, train_batch_size_samples=cfg.batch_size, lr=cfg.lr,
        lr_end=cfg.lr, device=device, autocast=autocast, logger=LoggingConfig(log_to_wandb=False),
    )
    provider = (batches.batch(step).to(device) for step in range(10**9))
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=provider)
    sync(device)
    t0 = time.perf_counter()
    trainer.fit()
    sync(device)
    return time.perf_counter() - t0, sae


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--beside", type=int, default=0, help="also time the trainer beside this many competing processes (CPU)")
    args = parser.parse_args()
    runtime = Runtime(args.device, args.precision)

    model = load_model()
    acts = torch.cat([token_activations(model, ids, "mlp0") for ids in torch.arange(model.cfg.d_vocab).split(8192)])
    del model
    d, B = acts.shape[1], 4096
    cfg = TrainConfig(d_sae=8 * d, k=32, steps=args.steps, batch_size=B, lr=4e-4, warmup_frac=0.0, decay_frac=0.0, log_every=10**9)
    print(f"activations: {tuple(acts.shape)} MLP0 outputs of every token; TopK d_sae {cfg.d_sae}, k {cfg.k}, batch {B}, "
          f"{cfg.steps} steps, device {runtime.device}, compute dtype {runtime.compute_dtype}")

    sae = make_sae(cfg, d)
    train(cfg, sae, ShuffledBatches(acts, B), runtime, progress=False, stop_after=2)  # warm-up
    sae = make_sae(cfg, d)
    sync(runtime.device)
    peak_mib(runtime.device)
    t0 = time.perf_counter()
    train(cfg, sae, ShuffledBatches(acts, B, cfg.seed), runtime, progress=False)
    sync(runtime.device)
    ours = time.perf_counter() - t0
    ours_mem = peak_mib(runtime.device)
    ours_fvu = evaluate(sae.cpu(), acts).fvu

    autocast = runtime.compute_dtype != torch.float32
    peak_mib(runtime.device)
    theirs_default, sae_d = run_saelens(acts, cfg, True, runtime.device, autocast)
    default_mem = peak_mib(runtime.device)
    theirs_matched, sae_m = run_saelens(acts, cfg, False, runtime.device, autocast)
    matched_mem = peak_mib(runtime.device)
    fvu_default, fvu_matched = evaluate(sae_d.cpu(), acts).fvu, evaluate(sae_m.cpu(), acts).fvu

    n = cfg.steps * B
    rate = lambda s: n / s  # noqa: E731
    mem = lambda m: "n/a" if m is None else f"{m:.0f}"  # noqa: E731
    print(f"{'trainer':<34}{'act/s':>10}{'final FVU':>11}{'peak MiB':>10}")
    print(f"{'successor-lens (sparse decode)':<34}{rate(ours):>10.0f}{ours_fvu:>11.4f}{mem(ours_mem):>10}")
    print(f"{'sae-lens SAETrainer, defaults':<34}{rate(theirs_default):>10.0f}{fvu_default:>11.4f}{mem(default_mem):>10}")
    print(f"{'sae-lens SAETrainer, matched':<34}{rate(theirs_matched):>10.0f}{fvu_matched:>11.4f}{mem(matched_mem):>10}")
    print(f"speed-up: {theirs_default / ours:.2f}x vs sae-lens defaults, {theirs_matched / ours:.2f}x vs matched (target >= 2x)")

    peak = matmul_rate(d, cfg.d_sae, B, runtime.device, runtime.compute_dtype)
    step = ours / cfg.steps
    limit = 2 * B * d * cfg.d_sae / peak  # seconds per step if the encoder matmul were all the work
    print(f"dense matmul rate here: {peak / 1e9:.0f} GFLOP/s; encoder-matmul limit {limit * 1e3:.1f} ms/step (2*B*d*F = "
          f"{2 * B * d * cfg.d_sae / 1e9:.1f} GFLOP); our step {step * 1e3:.1f} ms = {limit / step:.0%} of the limit (goal >= 80%)")
    print("where a step's time goes (each phase timed alone at the same shapes, ms per step):")
    for name, ms in phases(acts[:B], cfg, runtime, step).items():
        print(f"    {name:<44}{ms:7.1f}  {ms / (step * 1e3):5.0%}")
    if args.beside and runtime.device == "cpu":
        beside(acts, cfg, runtime, args.beside)


COMPETITOR = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a"
"""Another job on the machine: dense matmuls at torch's default threads, until killed."""


def timed_train(acts: torch.Tensor, cfg: TrainConfig, runtime: Runtime) -> float:
    """Steps per second of the trainer on `acts` (after a two-step warm-up)."""
    train(cfg, make_sae(cfg, acts.shape[1]), ShuffledBatches(acts, cfg.batch_size), runtime, progress=False, stop_after=2)
    t0 = time.perf_counter()
    train(cfg, make_sae(cfg, acts.shape[1]), ShuffledBatches(acts, cfg.batch_size, cfg.seed), runtime, progress=False)
    return cfg.steps / (time.perf_counter() - t0)


def beside(acts: torch.Tensor, cfg: TrainConfig, runtime: Runtime, n: int) -> None:
    """The trainer alone, then beside `n` competing processes at the threads we set and at one."""
    from successor_lens.threads import set_threads, usable_cores

    default = set_threads()
    alone = timed_train(acts, cfg, runtime)
    rows = [(f"alone, {default} threads", alone)]
    competitors = [subprocess.Popen([sys.executable, "-c", COMPETITOR]) for _ in range(n)]
    try:
        time.sleep(2)  # the competitors at full speed
        for threads in dict.fromkeys([default, 1]):
            set_threads(threads)
            rows.append((f"beside {n} competing process(es), {threads} thread(s)", timed_train(acts, cfg, runtime)))
    finally:
        for c in competitors:
            c.kill()
        set_threads(default)
    print(f"beside other jobs ({usable_cores()} usable cores; steps/s, and against the run alone in this run):")
    for name, rate in rows:
        print(f"    {name:<52}{rate:7.2f}  {rate / alone:5.0%}")


def phases(x: torch.Tensor, cfg: TrainConfig, runtime: Runtime, step: float) -> dict[str, float]:
    """Milliseconds per step of the encoder matmul, the top-k selection and the AuxK selection, each
    alone, and the rest of the measured step (sparse decode, backward, Adam, the decoder renorm)."""
    device = runtime.device
    x = x.to(device)
    sae = make_sae(cfg, x.shape[1]).to(device)
    dtype = runtime.compute_dtype
    W, b = sae.W_enc.detach().to(dtype), sae.b_enc.detach().to(dtype)
    pre = torch.addmm(b, x.to(dtype), W).float()
    buffer = torch.empty_like(pre)
    dead = torch.rand(cfg.d_sae, device=device) < 0.1  # AuxK runs whenever latents are dead
    k_aux = x.shape[1] // 2

    def timed(fn, n: int = 5) -> float:
        fn()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync(device)
        return (time.perf_counter() - t0) / n * 1e3

    out = {
        "encoder matmul (2*B*d*F, the limit)": timed(lambda: torch.mm(x.to(dtype), W, out=buffer) if dtype == torch.float32
                                                      else torch.addmm(b, x.to(dtype), W)),
        "top-k selection over [B, F]": timed(lambda: pre.topk(cfg.k, dim=-1, sorted=False)),
    }
    out["decode, backward, Adam, renorm (the rest)"] = max(0.0, step * 1e3 - sum(out.values()))
    # not in the timed run (no latent is dead before dead_after_steps): what a step adds once some are
    out["+ AuxK selection, once latents are dead (extra)"] = timed(lambda: pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False))
    return out

if __name__ == "__main__":
    main()
