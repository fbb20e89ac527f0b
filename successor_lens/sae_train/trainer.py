"""The SAE trainer: sae-lens SAE classes, trained on any addressable source of batches.

`train(cfg, sae, batches, runtime, on_log, checkpointer)` sees only batches and a callback; it
loads no model and writes nothing except through the checkpointer it is given.

TopK and BatchTopK use the sparse path of `sparse.py` (decoder and gradients only on active
latents, unit-norm decoder, AuxK for dead latents). Standard (L1) and JumpReLU use sae-lens's
own `training_forward_pass` and loss terms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from sae_lens import (
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.saes.sae import TrainCoefficientConfig, TrainingSAE, TrainStepInput

from successor_lens.errors import ConfigError, UserError
from successor_lens.progress import bar as progress_bar
from successor_lens.sae_train.batches import BatchSource
from successor_lens.sae_train.checkpoint import Checkpointer, CheckpointError, load_optimizer, optimizer_tensors
from successor_lens.sae_train.distributed import Dist
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sae_train.sparse import encode_at, sparse_decode, sparse_encode
from successor_lens.sae_train.train_config import SPARSE_ARCHS, TrainConfig


class NonFiniteError(UserError, RuntimeError):
    """NaN or inf in the activations or the loss; training stopped, the last checkpoint is kept."""


def make_sae(cfg: TrainConfig, d_in: int, metadata: dict[str, Any] | None = None) -> TrainingSAE:
    """A freshly initialised sae-lens training SAE (seeded), parameters in fp32 on CPU."""
    common = dict(d_in=d_in, d_sae=cfg.d_sae, dtype="float32", device="cpu")
    if cfg.arch == "topk":
        sae_cfg = TopKTrainingSAEConfig(k=cfg.k, rescale_acts_by_decoder_norm=False, aux_loss_coefficient=cfg.aux_coefficient, **common)
        cls = TopKTrainingSAE
    elif cfg.arch == "batchtopk":
        sae_cfg = BatchTopKTrainingSAEConfig(k=cfg.k, rescale_acts_by_decoder_norm=False, aux_loss_coefficient=cfg.aux_coefficient, **common)
        cls = BatchTopKTrainingSAE
    elif cfg.arch == "standard":
        sae_cfg, cls = StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common), StandardTrainingSAE
    else:
        sae_cfg, cls = JumpReLUTrainingSAEConfig(l0_coefficient=cfg.l0_coefficient, **common), JumpReLUTrainingSAE
    for key, value in (metadata or {}).items():
        sae_cfg.metadata[key] = value
    torch.manual_seed(cfg.seed)
    sae = cls(sae_cfg)
    if cfg.arch in SPARSE_ARCHS:
        with torch.no_grad():
            sae.W_dec.data = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)
            sae.W_enc.data = sae.W_dec.t().contiguous()
    return sae


@dataclass
class StepStats:
    loss: torch.Tensor
    x_hat: torch.Tensor
    l0: float
    fired: torch.Tensor
    """[d_sae] bool: which latents fired in this batch."""


def _sparse_step(cfg: TrainConfig, sae: TrainingSAE, x: torch.Tensor, dead: torch.Tensor, runtime: Runtime, dist: Dist = Dist(),
                 workspace: torch.Tensor | None = None) -> StepStats:
    x_in = (x - sae.b_dec).detach()  # b_dec's encoder gradient is passed separately (sparse.py)
    codes = sparse_encode(x_in, sae.W_enc, sae.b_enc, cfg.arch, cfg.k, runtime.compute_dtype, sae.b_dec, workspace)
    x_hat = sparse_decode(codes.cols, codes.vals, codes.offsets, sae.W_dec) + sae.b_dec
    loss = (x_hat - x).pow(2).sum(-1).mean()
    n_dead = int(dead.sum())
    if n_dead and cfg.aux_coefficient > 0:
        k_aux = min(cfg.aux_k or x.shape[1] // 2, n_dead)
        chosen = codes.pre_BF.masked_fill_(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False).indices  # in place: pre_BF is done with
        aux = encode_at(x_in, sae.W_enc, sae.b_enc, chosen, codes.pre_BF, sae.b_dec)
        err = (x - x_hat).detach()
        e_hat = sparse_decode(aux[0], aux[1], aux[2], sae.W_dec)
        aux_loss = (e_hat - err).pow(2).sum(-1).mean() / batch_variance(err, dist).clamp_min(1e-12)
        loss = loss + cfg.aux_coefficient * aux_loss
    active = codes.vals.detach() > 0
    fired = torch.zeros(cfg.d_sae, dtype=torch.bool, device=x.device)
    fired[codes.cols[active]] = True
    if cfg.arch == "batchtopk" and active.any():  # the threshold the exported JumpReLU uses
        rate = sae.cfg.topk_threshold_lr
        sae.topk_threshold = (1 - rate) * sae.topk_threshold + rate * codes.vals.detach()[active].min().double()
    return StepStats(loss, x_hat.detach(), active.sum().item() / x.shape[0], fired)


def batch_variance(x: torch.Tensor, dist: Dist = Dist()) -> torch.Tensor:
    """Mean squared distance of the rows to their mean, over the global batch (all ranks' parts)."""
    x = x.detach().double()  # sums in float64: no cancellation when the mean is large
    sums = dist.sum_(torch.cat([x.sum(0), x.pow(2).sum()[None], torch.tensor([float(len(x))], dtype=torch.float64, device=x.device)]))
    total, sq, n = sums[:-2], sums[-2], sums[-1]
    return ((sq - total.pow(2).sum() / n) / n).float()


def _saelens_step(cfg: TrainConfig, sae: TrainingSAE, x: torch.Tensor, dead: torch.Tensor, step: int, runtime: Runtime) -> StepStats:
    coefficients = {}
    for name, coeff in sae.get_coefficients().items():
        if isinstance(coeff, TrainCoefficientConfig):
            coeff = coeff.value * min(1.0, (step + 1) / max(1, coeff.warm_up_steps))
        coefficients[name] = coeff
    with runtime.autocast():
        out = sae.training_forward_pass(
            TrainStepInput(sae_in=x, coefficients=coefficients, dead_neuron_mask=dead, n_training_steps=step, is_logging_step=False)
        )
    acts = out.feature_acts.detach().float()
    return StepStats(out.loss.float(), out.sae_out.detach().float(), (acts > 0).sum(-1).float().mean().item(), (acts > 0).any(0))


@dataclass
class TrainResult:
    steps: int
    resumed_from: int | None
    last_log: dict[str, float]


def _state_tensors(sae, optimizer, since_fired) -> tuple[dict, dict]:
    tensors = {f"sae.{k}": v for k, v in sae.state_dict().items()}
    opt_tensors, opt_meta = optimizer_tensors(optimizer)
    return {**tensors, **opt_tensors, "since_fired": since_fired}, opt_meta


def _starting_state(cfg: TrainConfig, sae: TrainingSAE, batches: BatchSource, optimizer: torch.optim.Optimizer,
                    checkpointer: Checkpointer | None, dist: Dist, device: torch.device) -> tuple[int, int | None, torch.Tensor]:
    """(first step, the step resumed from or None, steps since each latent fired): from the latest
    checkpoint of `checkpointer` when there is one, else a fresh start with b_dec at the data mean.
    With several ranks, every rank must start from the same state."""
    since_fired = torch.zeros(cfg.d_sae, device=device)
    start, resumed_from = 0, None
    if checkpointer is not None and (found := checkpointer.latest()) is not None:
        tensors, meta = found
        if meta.get("config") != asdict(cfg):
            raise CheckpointError(f"--resume: the checkpoint in {checkpointer.folder} was made with a different config; use a new --out or the same options")
        _check_checkpoint(checkpointer, tensors, meta, sae, cfg)
        sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
        sae.to(device)
        load_optimizer(optimizer, {k: v.to(device) for k, v in tensors.items()}, meta)
        since_fired = tensors["since_fired"].to(device)
        start = resumed_from = meta["step"]
    else:
        with torch.no_grad():  # b_dec starts at the data mean (batch 0 is fixed by the seed)
            sae.b_dec.data = batches.batch(0).to(device).float().mean(0)
    if dist.active:  # every rank must start from the same state: the same checkpoint, or the same seeded init
        steps = dist.max_(torch.tensor([start, -start], device=device))
        if int(steps[0]) != -int(steps[1]):
            raise ConfigError(f"rank {dist.rank}: the ranks resumed from different steps: put --out on a filesystem every node shares")
        dist.broadcast_(list(sae.state_dict().values()) + [since_fired])
    return start, resumed_from, since_fired


def _optimizer_step(cfg: TrainConfig, sae: TrainingSAE, optimizer: torch.optim.Optimizer, loss: torch.Tensor, scaler, dist: Dist) -> None:
    """Backward, average over ranks, keep decoder rows unit-norm (sparse path), clip, step."""
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(optimizer)
    dist.average_gradients(sae.parameters())
    if cfg.arch in SPARSE_ARCHS:
        _remove_parallel_grad(sae)
    torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cfg.arch in SPARSE_ARCHS:
        with torch.no_grad():
            sae.W_dec.data /= sae.W_dec.norm(dim=-1, keepdim=True)


def train(
    cfg: TrainConfig,
    sae: TrainingSAE,
    batches: BatchSource,
    runtime: Runtime = Runtime(),
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    checkpointer: Checkpointer | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    dist: Dist = Dist(),
) -> TrainResult:
    """Train `sae` in place for `cfg.steps` steps (or until `stop_after`, to simulate a stop). With
    `dist` (several processes, distributed.py) each rank trains on its part of every global batch and
    the gradients are averaged; every rank resumes from the checkpointer's folder, only rank 0 writes."""
    dist.check_batch(cfg.batch_size)
    if dist.active and cfg.arch == "batchtopk":
        raise ConfigError("batchtopk chooses its latents over the whole batch, across ranks: train it in one process, or use topk")
    if batches.d_in != sae.cfg.d_in:
        raise UserError(f"activations have d_in={batches.d_in} but the SAE expects {sae.cfg.d_in}: train a new SAE for this site")
    device = torch.device(runtime.device)
    sae.to(device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999), fused=True)  # one kernel per step (CPU and CUDA)
    scaler = runtime.grad_scaler()
    start, resumed_from, since_fired = _starting_state(cfg, sae, batches, optimizer, checkpointer if resume else None, dist, device)

    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = progress_bar(range(start, end), initial=start, total=cfg.steps, desc=f"train {cfg.arch}", disable=not progress or not dist.main)
    last_log: dict[str, float] = {}
    sq_err = var = l0_sum = 0.0
    n = 0
    workspace = None
    for step in bar:
        x = (batches.batch(step, dist.part()) if dist.active else batches.batch(step)).to(device, non_blocking=True).float()
        if not torch.isfinite(x).all():
            raise NonFiniteError(f"activation batch {step} contains NaN or inf: check the activation source (last good checkpoint kept)")
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(step)
        dead = since_fired >= cfg.dead_after_steps
        if cfg.arch in SPARSE_ARCHS:
            if workspace is None or workspace.shape[0] != len(x):
                workspace = torch.empty(len(x), cfg.d_sae, device=device)  # the [B, F] pre-activations, reused every step
            stats = _sparse_step(cfg, sae, x, dead, runtime, dist, workspace)
        else:
            stats = _saelens_step(cfg, sae, x, dead, step, runtime)
        if not torch.isfinite(stats.loss):
            raise NonFiniteError(f"loss became {stats.loss.item()} at step {step}: lower --lr or check the activations (last good checkpoint kept)")
        _optimizer_step(cfg, sae, optimizer, stats.loss, scaler, dist)
        since_fired += 1
        since_fired[dist.max_(stats.fired.to(torch.uint8)).bool()] = 0

        with torch.no_grad():  # over the global batch
            parts = dist.sum_(torch.tensor([(stats.x_hat - x).pow(2).sum().item(), stats.l0 * len(x), stats.loss.item()], device=device))
            sq_err += parts[0].item()
            var += batch_variance(x, dist).item() * len(x) * dist.world
            l0_sum += parts[1].item() / (len(x) * dist.world)
            loss_now = parts[2].item() / dist.world
            n += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == end:
            last_log = {
                "step": done, "loss": loss_now, "fvu": sq_err / max(var, 1e-12), "l0": l0_sum / n,
                "dead_frac": (since_fired >= cfg.dead_after_steps).float().mean().item(), "lr": cfg.lr_at(step),
            }
            bar.set_postfix(l0=f"{last_log['l0']:.1f}", fvu=f"{last_log['fvu']:.3f}", dead=f"{last_log['dead_frac']:.2f}")
            if on_log:
                on_log(done, last_log)
            sq_err = var = l0_sum = 0.0
            n = 0
        if checkpointer is not None and dist.main and (done % cfg.checkpoint_every == 0 or done == end):
            tensors, opt_meta = _state_tensors(sae, optimizer, since_fired)
            checkpointer.save(done, tensors, {"config": asdict(cfg), **opt_meta})
    bar.close()
    return TrainResult(steps=end, resumed_from=resumed_from, last_log=last_log)


@torch.no_grad()
def _remove_parallel_grad(sae: TrainingSAE) -> None:
    """Keep decoder rows on the unit sphere: drop the gradient component along each row."""
    if sae.W_dec.grad is None:
        return
    W = sae.W_dec
    W.grad -= (W.grad * W).sum(-1, keepdim=True) * W


def _check_checkpoint(checkpointer: Checkpointer, tensors: dict[str, torch.Tensor], meta: dict, sae: TrainingSAE, cfg: TrainConfig) -> None:
    """A checkpoint must hold this SAE's tensors with their shapes, finite, and a step in range."""
    where = f"--resume: checkpoint {checkpointer.paths()[-1]}"
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 < step <= cfg.steps or not isinstance(meta.get("param_groups"), list):
        raise CheckpointError(f"{where} has no valid training state: delete it to resume from the one before")
    expected = {f"sae.{k}": tuple(v.shape) for k, v in sae.state_dict().items()} | {"since_fired": (cfg.d_sae,)}
    for name, shape in expected.items():
        if name not in tensors or tuple(tensors[name].shape) != shape:
            got = "missing" if name not in tensors else f"shape {tuple(tensors[name].shape)}"
            raise CheckpointError(f"{where}: tensor {name} is {got}, expected {shape}: delete it to resume from the one before")
        if tensors[name].is_floating_point() and not torch.isfinite(tensors[name]).all():
            raise CheckpointError(f"{where}: tensor {name} holds NaN or inf: delete it to resume from the one before")
