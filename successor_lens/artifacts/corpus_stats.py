"""A dictionary's latents over corpus windows, in one streaming pass.

The windows are read in chunks; each chunk is encoded, folded into running sums and dropped, so
memory does not grow with the number of windows (SAEDashboard's defaults, 24,576 windows x 128
tokens, fit in the same memory as 128 windows). What is kept per latent:

- exact counts, sums, sums of squares and maxima (density, correlations), the sums of latent x
  input (correlations with the input's neurons) and, up to `MAX_CORRELATED_LATENTS` latents, the
  latent x latent co-activation sums;
- the `top` activations (largest first), each with the latent's values around it, from which the
  pages show the top contexts without repeats;
- two uniform samples of its non-zero activations (reservoirs: each activation gets a seeded random
  key, the largest keys stay): a small one with the values around each activation, from which the
  quantile groups are drawn, and a larger one of values alone for the histogram. Both are exact when
  a latent fires fewer times than the reservoir holds;
- the dictionary's reconstruction error, L0 and dead latents on these same tokens (the fit the pages
  can honestly show).

BOS positions are left out, as SAEDashboard ignores BOS/EOS/pad tokens.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_CORRELATED_LATENTS = 16384
"""Above this many latents the latent x latent co-activation table (d_sae^2 floats) is not kept and
the correlated-latents fields stay empty."""
CHUNK_VALUES = 1 << 24
"""Encoded values (tokens x latents) per chunk."""


@dataclass
class Slots:
    """`k` slots per latent, best `key` first: an activation's value, its flat position (window x
    ctx + token) and the latent's values around it. Empty slots have key -inf and position -1."""

    key: Tensor
    value: Tensor
    pos: Tensor
    around: Tensor
    """[d_sae, k, before + 1 + after]."""

    @staticmethod
    def empty(n_latents: int, k: int, width: int) -> Slots:
        return Slots(torch.full((n_latents, k), float("-inf")), torch.zeros(n_latents, k), torch.full((n_latents, k), -1, dtype=torch.long),
                     torch.zeros(n_latents, k, width))

    def filled(self, latent: int) -> int:
        return int((self.pos[latent] >= 0).sum())


def merge_slots(slots: Slots, latent: Tensor, key: Tensor, value: Tensor, pos: Tensor, around_of) -> Slots:
    """`slots` with the new activations (latent, key, value, pos) merged in, in place: per latent
    the `k` with the largest keys stay, ties to the earlier. `around_of(i)` gives the values around
    the new activations `i` (called only for those that stay). Only activations that beat their
    latent's smallest kept key, and only the rows of their latents, are sorted."""
    enter = (key > slots.key.min(-1).values[latent]).nonzero().squeeze(-1)
    if not len(enter):
        return slots
    rows = torch.unique(latent[enter])
    local = torch.searchsorted(rows, latent[enter])
    R, K = len(rows), slots.key.shape[1]
    all_row = torch.cat([torch.arange(R).repeat_interleave(K), local])
    all_key = torch.cat([slots.key[rows].flatten(), key[enter]])
    order = torch.argsort(all_key, descending=True, stable=True)
    order = order[torch.argsort(all_row[order], stable=True)]
    grouped = all_row[order]
    rank = torch.arange(len(order)) - torch.searchsorted(grouped, torch.arange(R))[grouped]
    stay = rank < K
    keep, at_row, at_rank = order[stay], rows[grouped[stay]], rank[stay]
    old = keep < R * K
    old_around = slots.around[rows].reshape(R * K, -1)[keep[old]]
    values = torch.cat([slots.value[rows].flatten(), value[enter]])[keep]
    positions = torch.cat([slots.pos[rows].flatten(), pos[enter]])[keep]
    slots.key[at_row, at_rank] = all_key[keep]
    slots.value[at_row, at_rank] = values
    slots.pos[at_row, at_rank] = positions
    slots.around[at_row[old], at_rank[old]] = old_around
    if (~old).any():
        slots.around[at_row[~old], at_rank[~old]] = around_of(enter[keep[~old] - R * K])
    return slots


@dataclass
class CorpusStats:
    """Everything the export and the pages need of a dictionary on the corpus windows."""

    windows: Tensor
    """[n, ctx] token ids."""
    n_tokens: int
    """Counted positions (not BOS)."""
    count: Tensor
    total: Tensor
    total_sq: Tensor
    max: Tensor
    FX: Tensor
    """[d_sae, d_in] sums of latent x input over the counted tokens."""
    x_total: Tensor
    x_total_sq: Tensor
    FF: Tensor | None
    """[d_sae, d_sae] co-activation sums (None above `MAX_CORRELATED_LATENTS`)."""
    top: Slots
    sample: Slots
    hist_sample: Slots
    squared_error: float
    l0: float

    @property
    def fvu(self) -> float:
        """Squared reconstruction error over the inputs' total variance, on these tokens."""
        n = max(self.n_tokens, 1)
        variance = float((self.x_total_sq - self.x_total**2 / n).sum())
        return self.squared_error / variance if variance > 0 else float("nan")

    @property
    def dead_frac(self) -> float:
        return float((self.count == 0).float().mean())

    def histogram(self, latent: int, bins: int) -> tuple[Tensor, Tensor]:
        """(heights, bin centres) of the latent's non-zero activations: from its value sample, scaled
        to its exact count (exact when it fired at most as often as the sample holds)."""
        n = self.hist_sample.filled(latent)
        if not n:
            return torch.zeros(0), torch.zeros(0)
        values = self.hist_sample.value[latent, :n]
        hi = float(self.max[latent])
        lo = min(float(values.min()), hi)
        heights, edges = torch.histogram(values, bins=bins, range=(lo, hi if hi > lo else lo + 1e-6))
        return heights * (float(self.count[latent]) / n), (edges[1:] + edges[:-1]) / 2


@torch.no_grad()
def corpus_stats(sae, windows: Tensor, inputs_of, bos: int | None, top_k: int, sample_k: int, hist_k: int, before: int, after: int,
                 seed: int = 0) -> CorpusStats:
    """One pass over `windows` ([n, ctx]); `inputs_of(start, stop)` gives the hook's activations of
    windows start..stop ([stop - start, ctx, d_in]: `hook_inputs`)."""
    device = next(sae.parameters()).device
    F, D = sae.cfg.d_sae, sae.cfg.d_in
    n_win, ctx = windows.shape
    width = before + 1 + after
    gen = torch.Generator().manual_seed(seed)
    count, total, total_sq = torch.zeros(F, dtype=torch.long), torch.zeros(F, dtype=torch.float64), torch.zeros(F, dtype=torch.float64)
    peak = torch.zeros(F)
    FX = torch.zeros(F, D, dtype=torch.float64)
    x_total, x_total_sq = torch.zeros(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
    FF = torch.zeros(F, F) if F <= MAX_CORRELATED_LATENTS else None
    top, sample, hist_sample = Slots.empty(F, top_k, width), Slots.empty(F, sample_k, width), Slots.empty(F, hist_k, 0)
    squared_error, active, n_tokens = 0.0, 0, 0
    per_chunk = max(1, CHUNK_VALUES // max(1, F * ctx))
    for start in range(0, n_win, per_chunk):
        chunk = windows[start : start + per_chunk]
        X = inputs_of(start, start + len(chunk)).reshape(-1, D).float().cpu()
        valid = (chunk != bos).reshape(-1) if bos is not None else torch.ones(chunk.numel(), dtype=torch.bool)
        f = sae.encode(X.to(device)).float()
        recon = sae.decode(f).float().cpu()
        f = f.cpu() * valid[:, None]
        squared_error += float(((X - recon) ** 2)[valid].double().sum())
        Xv = X[valid].double()
        x_total += Xv.sum(0)
        x_total_sq += (Xv**2).sum(0)
        n_tokens += int(valid.sum())
        t, l = f.nonzero(as_tuple=True)
        v = f[t, l]
        active += len(v)
        count.index_add_(0, l, torch.ones_like(l))
        total.index_add_(0, l, v.double())
        total_sq.index_add_(0, l, v.double() ** 2)
        peak.scatter_reduce_(0, l, v, reduce="amax")
        S = torch.sparse_coo_tensor(torch.stack([l, t]), v, (F, len(X)), check_invariants=True).coalesce()
        FX += torch.sparse.mm(S, X * valid[:, None]).double()
        if FF is not None and len(v):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                co = torch.sparse.mm(S, S.t()).coalesce()
            FF.index_put_(tuple(co.indices()), co.values(), accumulate=True)
        flat = t + start * ctx

        def around_of(i: Tensor, t=t, l=l, f=f) -> Tensor:
            offsets = torch.arange(-before, after + 1)
            where = t[i, None] + offsets
            same = (where // ctx == t[i, None] // ctx) & (where >= 0) & (where < len(f))
            return f[where.clamp(0, len(f) - 1), l[i, None]] * same

        top = merge_slots(top, l, v, v, flat, around_of)
        sample = merge_slots(sample, l, torch.rand(len(v), generator=gen), v, flat, around_of)
        hist_sample = merge_slots(hist_sample, l, torch.rand(len(v), generator=gen), v, flat, lambda i: torch.zeros(len(i), 0))
    return CorpusStats(windows, n_tokens, count, total, total_sq, peak, FX, x_total, x_total_sq, FF, top, sample, hist_sample,
                       squared_error, active / max(n_tokens, 1))


SHARED_INPUT_BYTES = 1 << 30
"""Hook activations of all windows up to this size are computed once and shared by the dictionaries
on that hook; above it each dictionary's pass recomputes them chunk by chunk (memory stays flat)."""


def hook_inputs(model, windows: Tensor, hook: str, forward) -> object:
    """`inputs_of(start, stop)` for `corpus_stats`: from one shared forward pass when it fits in
    `SHARED_INPUT_BYTES`, else computed per chunk. `forward(windows)` runs the model to the hook."""
    if windows.numel() * model.cfg.d_model * 4 <= SHARED_INPUT_BYTES:
        shared = forward(windows)
        return lambda start, stop: shared[start:stop]
    return lambda start, stop: forward(windows[start:stop])
