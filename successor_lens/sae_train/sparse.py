"""Sparse encode/decode for the TopK family: work only on the k active latents.

A dense TopK step costs about 12*B*D*F flops (encoder, decoder and both gradients). Here the
decoder and its gradient touch only the selected latents (`embedding_bag`), the encoder's
weight gradient is a sparse x dense product and the pre-encoder bias gets its gradient as one
mat-vec, so a step costs about 2*B*D*F (the encoder's forward matmul) plus O(B*k*D).

Codes are given in COO form: `rows` (sorted), `cols` (latent index), `vals`, for a batch of B.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class SparseCodes(NamedTuple):
    rows: Tensor
    """[nnz] batch row of each active latent, sorted ascending."""
    cols: Tensor
    """[nnz] latent index."""
    vals: Tensor
    """[nnz] activation (differentiable)."""
    offsets: Tensor
    """[B] start of each row's entries in rows/cols/vals, for embedding_bag."""
    pre_BF: Tensor
    """Pre-activations, detached (for statistics and the AuxK selection)."""


def _select(pre_BF: Tensor, mode: str, k: int) -> tuple[Tensor, Tensor]:
    """Pick the active (row, col) pairs: top-k per row, or top B*k over the whole batch."""
    B, F_ = pre_BF.shape
    if mode == "topk":
        cols = pre_BF.topk(k, dim=-1, sorted=False).indices
        rows = torch.arange(B, device=pre_BF.device).repeat_interleave(k)
        return rows, cols.flatten()
    if mode == "batchtopk":
        flat = pre_BF.flatten().topk(min(B * k, B * F_), sorted=False).indices.sort().values
        return flat // F_, flat % F_
    raise ValueError(f"unknown sparse mode {mode!r}")


def _offsets(rows: Tensor, B: int) -> Tensor:
    counts = torch.bincount(rows, minlength=B)
    return torch.cumsum(counts, 0) - counts


def sparse_encode(
    x_in_BD: Tensor, W_enc_DF: Tensor, b_enc_F: Tensor, mode: str, k: int, compute_dtype: torch.dtype = torch.float32,
    b_dec_D: Tensor | None = None, out_BF: Tensor | None = None,
) -> SparseCodes:
    """Select active latents with one dense matmul (in `compute_dtype`), then keep only those.

    `x_in_BD` is x - b_dec, taken as data; the gradient reaching `b_dec_D` through the encoder is
    -W_enc @ (the gradient of b_enc), one mat-vec, instead of a [B, D] input gradient. `out_BF`, a
    buffer reused across steps, spares the allocation (and page faults) of the [B, F] matrix.
    """
    with torch.no_grad():
        x_c, W_c = x_in_BD.detach().to(compute_dtype), W_enc_DF.detach().to(compute_dtype)
        if out_BF is not None and compute_dtype == torch.float32 and out_BF.shape == (x_c.shape[0], W_c.shape[1]):
            pre_BF = torch.mm(x_c, W_c, out=out_BF).add_(b_enc_F.detach())
        else:
            pre_BF = torch.addmm(b_enc_F.detach().to(compute_dtype), x_c, W_c).float()
        rows, cols = _select(pre_BF, mode, k)
        vals_exact = pre_BF[rows, cols]
    b_dec = b_dec_D if b_dec_D is not None else torch.zeros(x_in_BD.shape[1], device=x_in_BD.device)
    vals = _SparseEncodeFn.apply(x_in_BD.detach(), W_enc_DF, b_enc_F, b_dec, rows, cols, vals_exact)
    return SparseCodes(rows, cols, vals, _offsets(rows, x_in_BD.shape[0]), pre_BF)


class _SparseEncodeFn(torch.autograd.Function):
    """vals = relu(pre[rows, cols]) where pre = (x - b_dec) @ W_enc + b_enc, with a sparse backward:
    grad W_enc = x_in^T G (sparse x dense), grad b_enc = column sums of G, grad b_dec = -W_enc grad b_enc.

    The forward reuses the selected pre-activations from the dense matmul, so no extra work.
    """

    @staticmethod
    def forward(ctx, x_in_BD, W_enc_DF, b_enc_F, b_dec_D, rows, cols, pre_sel):
        vals = pre_sel.relu()
        ctx.save_for_backward(x_in_BD, W_enc_DF, rows, cols, (pre_sel > 0).to(x_in_BD.dtype))
        return vals

    @staticmethod
    def backward(ctx, g_vals):
        x_in_BD, W_enc_DF, rows, cols, active = ctx.saved_tensors
        B = x_in_BD.shape[0]
        F_ = W_enc_DF.shape[1]
        g = (g_vals * active).to(x_in_BD.dtype)
        grad_W = grad_b = grad_b_dec = None
        if ctx.needs_input_grad[1]:
            G_FB = torch.sparse_coo_tensor(torch.stack([cols, rows]), g, (F_, B), check_invariants=False)
            grad_W = torch.sparse.mm(G_FB, x_in_BD).t()
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            grad_b = torch.zeros(F_, dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        if ctx.needs_input_grad[3]:
            grad_b_dec = -(W_enc_DF @ grad_b.to(W_enc_DF.dtype))
        return None, grad_W, grad_b if ctx.needs_input_grad[2] else None, grad_b_dec, None, None, None


def sparse_decode(cols: Tensor, vals: Tensor, offsets: Tensor, W_dec_FD: Tensor) -> Tensor:
    """sum_j vals_j * W_dec[cols_j] per row, without forming the dense [B, F] code matrix."""
    return F.embedding_bag(cols, W_dec_FD, offsets, mode="sum", per_sample_weights=vals.to(W_dec_FD.dtype))


def encode_at(x_in_BD: Tensor, W_enc_DF: Tensor, b_enc_F: Tensor, cols_BK: Tensor, pre_BF: Tensor,
              b_dec_D: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Codes at given columns per row (AuxK's dead latents), differentiable through the sparse encoder.

    Returns (cols, vals, offsets) for `sparse_decode`.
    """
    B, K = cols_BK.shape
    rows = torch.arange(B, device=x_in_BD.device).repeat_interleave(K)
    cols = cols_BK.flatten()
    b_dec = b_dec_D if b_dec_D is not None else torch.zeros(x_in_BD.shape[1], device=x_in_BD.device)
    vals = _SparseEncodeFn.apply(x_in_BD.detach(), W_enc_DF, b_enc_F, b_dec, rows, cols, pre_BF[rows, cols])
    return cols, vals, _offsets(rows, B)
