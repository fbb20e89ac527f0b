"""Benchmark: our TopK trainer against sae-lens's SAETrainer, same activations, same steps.

Activations: the MLP0 output of every vocabulary token of the embedded model (49152 x 576).
SAE: TopK, d_sae = 8 * d_model, k = 32, batch 4096. sae-lens is run twice: with its defaults
(`rescale_acts_by_decoder_norm=True`) and with settings matched to ours (False), since a speed
comparison is fair only with the same math. The FLOP roofline is this machine's dense fp32
matmul rate measured in the same run; the sparse-decoder work is counted as 4*B*d*F per step.

    python bench/train.py [--steps 20] [--device cpu|cuda] [--precision auto|fp32|bf16]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig  # noqa: E402
from sae_lens.config import LoggingConfig, SAETrainerConfig  # noqa: E402

from successor_lens.models import load_model  # noqa: E402
from successor_lens.sae_train.batches import ShuffledBatches  # noqa: E402
from successor_lens.sae_train.dictionary import evaluate  # noqa: E402
from successor_lens.sae_train.runtime import Runtime  # noqa: E402
from successor_lens.sae_train.trainer import TrainConfig, make_sae, train  # noqa: E402
from successor_lens.sites import token_activations  # noqa: E402


def matmul_rate(d: int, f: int, b: int, device: str, dtype: torch.dtype) -> float:
    x, w = torch.randn(b, d, device=device, dtype=dtype), torch.randn(d, f, device=device, dtype=dtype)
    for _ in range(2):
        x @ w
    sync(device)
    t0, n = time.perf_counter(), 10
    for _ in range(n):
        x @ w
    sync(device)
    return 2 * b * d * f * n / (time.perf_counter() - t0)


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
    t0 = time.perf_counter()
    train(cfg, sae, ShuffledBatches(acts, B, cfg.seed), runtime, progress=False)
    sync(runtime.device)
    ours = time.perf_counter() - t0
    ours_fvu = evaluate(sae.cpu(), acts).fvu

    autocast = runtime.compute_dtype != torch.float32
    theirs_default, sae_d = run_saelens(acts, cfg, True, runtime.device, autocast)
    theirs_matched, sae_m = run_saelens(acts, cfg, False, runtime.device, autocast)
    fvu_default, fvu_matched = evaluate(sae_d.cpu(), acts).fvu, evaluate(sae_m.cpu(), acts).fvu

    n = cfg.steps * B
    rate = lambda s: n / s  # noqa: E731
    print(f"{'trainer':<34}{'act/s':>10}{'final FVU':>11}")
    print(f"{'successor-lens (sparse decode)':<34}{rate(ours):>10.0f}{ours_fvu:>11.4f}")
    print(f"{'sae-lens SAETrainer, defaults':<34}{rate(theirs_default):>10.0f}{fvu_default:>11.4f}")
    print(f"{'sae-lens SAETrainer, matched':<34}{rate(theirs_matched):>10.0f}{fvu_matched:>11.4f}")
    print(f"speed-up: {theirs_default / ours:.2f}x vs sae-lens defaults, {theirs_matched / ours:.2f}x vs matched (target >= 2x)")

    peak = matmul_rate(d, cfg.d_sae, B, runtime.device, runtime.compute_dtype)
    work = 4 * B * d * cfg.d_sae * cfg.steps
    print(f"dense matmul peak here: {peak / 1e9:.0f} GFLOP/s; sparse-decoder work 4*B*d*F per step done at "
          f"{work / ours / 1e9:.0f} GFLOP/s = {work / ours / peak:.0%} of the roofline (target >= 60%)")


if __name__ == "__main__":
    main()
