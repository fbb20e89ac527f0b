"""Data-parallel SAE training on torch.distributed (launched by `torchrun`, or `train --nproc N`).

Every rank holds the whole SAE and the same optimizer state. Each global batch of B activations
is cut into `world` equal parts; rank r reads only part r (`ShuffledBatches.batch(step, part)`),
computes its local mean loss, and the gradients are averaged with one explicit all-reduce before
the gradient projection, clipping and the optimizer step, so every rank takes the same step and
the result equals one process with the same global batch up to reduction order.

Why an explicit all-reduce and not DDP: the sparse TopK path has its own autograd and edits the
gradient after backward (the decoder-norm projection, then clipping by the global norm), and
several statistics besides gradients must be global for the result to match one process: which
latents fired (dead-latent tracking and AuxK), the AuxK normaliser (the variance of the batch's
residual), and the logged FVU and L0. One flat all-reduce per step for the gradients plus one
small one for the statistics does all of it; DDP's bucketed hooks would add nothing here.

Backends: gloo on CPU, nccl on CUDA (one GPU per process, `cuda:LOCAL_RANK`). Rank 0 harvests
activations, writes checkpoints and the dictionary; the others wait at a barrier for the cache.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

from successor_lens.errors import ConfigError, UserError


class RankLostError(UserError, RuntimeError):
    """A collective failed: another process of the job died or hung."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; the defaults are one process (every method a no-op)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env(device: str) -> Dist:
        """The job torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*);
        one process when WORLD_SIZE is unset or 1. Initialises the process group once."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Dist()
        dist = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if not torch.distributed.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(dist.local_rank)
            torch.distributed.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
        return dist

    def device(self, device: str) -> str:
        """One GPU per process: `cuda` becomes `cuda:LOCAL_RANK`."""
        return f"cuda:{self.local_rank}" if self.active and device == "cuda" else device

    def check_batch(self, batch_size: int) -> None:
        if self.active and batch_size % self.world:
            raise ConfigError(f"--batch-size {batch_size} does not split into {self.world} equal parts: use a multiple of {self.world}")

    def part(self) -> tuple[int, int] | None:
        """(rank, world) for `ShuffledBatches.batch`; None for one process."""
        return (self.rank, self.world) if self.active else None

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, torch.distributed.DistBackendError) as err:
            raise RankLostError(f"rank {self.rank}: {what} failed ({str(err).splitlines()[0][:120]}): another process of the job "
                                "died; rerun the same command with --resume to continue from the last checkpoint") from None

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            self._call("all-reduce", torch.distributed.all_reduce, t, op=torch.distributed.ReduceOp.SUM)
        return t

    def max_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            self._call("all-reduce", torch.distributed.all_reduce, t, op=torch.distributed.ReduceOp.MAX)
        return t

    def average_gradients(self, params) -> None:
        """Every parameter's gradient replaced by its mean over the ranks, in one flat all-reduce."""
        if not self.active:
            return
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        self.sum_(flat).div_(self.world)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def broadcast_(self, tensors) -> None:
        """Rank 0's values everywhere (the SAE and optimizer state after init or resume)."""
        if self.active:
            for t in tensors:
                self._call("broadcast", torch.distributed.broadcast, t, 0)

    def barrier(self) -> None:
        if self.active:
            self._call("barrier", torch.distributed.barrier)
