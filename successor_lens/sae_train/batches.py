"""Batch sources for the trainer: deterministic, addressable by step, so a resumed run sees
exactly the batches an uninterrupted run would have seen."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from successor_lens.errors import UserError


@runtime_checkable
class BatchSource(Protocol):
    d_in: int

    def batch(self, step: int, part: tuple[int, int] | None = None) -> Tensor:
        """The [batch, d_in] activations for training step `step`; with `part` = (rank, world), only
        that rank's contiguous share of it (data-parallel training reads nothing else)."""
        ...


class ShuffledBatches:
    """Batches drawn from rows (a tensor, or any object with `__len__` and `rows(index)`).

    Each epoch is a fresh permutation seeded by (seed, epoch); batch `step` is positions
    [step*B, (step+1)*B) of the concatenated epochs. When there are fewer rows than B, a batch
    spans several epochs, so every row still appears equally often.
    """

    def __init__(self, data, batch_size: int, seed: int = 0):
        if len(data) == 0:
            raise UserError("no activations to train on: the token set or corpus is empty")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        first = data[:1] if isinstance(data, Tensor) else data.rows(torch.tensor([0]))
        self.d_in = first.shape[-1]
        self._perm_cache: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perm_cache:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm_cache = {epoch: torch.randperm(len(self.data), generator=gen)}
        return self._perm_cache[epoch]

    def indices(self, step: int) -> Tensor:
        n = len(self.data)
        start = step * self.batch_size
        positions = torch.arange(start, start + self.batch_size)
        epochs, offsets = positions // n, positions % n
        out = torch.empty(self.batch_size, dtype=torch.long)
        for epoch in epochs.unique().tolist():
            mask = epochs == epoch
            out[mask] = self._perm(epoch)[offsets[mask]]
        return out

    def batch(self, step: int, part: tuple[int, int] | None = None) -> Tensor:
        idx = self.indices(step)
        if part is not None:
            rank, world = part
            idx = idx.view(world, -1)[rank]
        if isinstance(self.data, Tensor):
            return self.data[idx]
        return self.data.rows(idx)
