"""Effective embeddings and the OV circuit of every head at once (docs/method.md section 2).

Everything here is batched tensor algebra over [layer, head, token]: no Python loop over heads
or tokens. Shapes use suffixes: L layers, H heads, N tokens, D d_model, E d_head, M candidates.
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from successor_lens.models import prepended_bos
from successor_lens.sites import mlp0_out, per_token

Embedding = Literal["mlp0", "embed+mlp0", "residual"]
EMBEDDINGS: tuple[str, ...] = ("mlp0", "embed+mlp0", "residual")


@torch.no_grad()
def effective_embeddings(
    model: HookedTransformer,
    tokens: Int[Tensor, "n"],
    embedding: Embedding = "mlp0",
    mlp0_norm: bool = True,
) -> Float[Tensor, "layers_or_1 n d_model"]:
    """The vector each head reads for a token: one row set for all layers, or one per layer.

    - "mlp0": MLP0(W_E[t]), the paper's form.
    - "embed+mlp0": W_E[t] + MLP0(W_E[t]).
    - "residual": the token's residual stream entering layer L, read at the token after a
      one-token prefix (`residual_prefix`). A token alone at position 0 is the attention sink,
      whose residual is degenerate (the copying control fell from 0.98 to 0.14 on SmolLM2).
    """
    if embedding == "mlp0":
        return mlp0_out(model, tokens, mlp0_norm)[None]
    if embedding == "embed+mlp0":
        return (model.W_E[tokens] + mlp0_out(model, tokens, mlp0_norm))[None]
    if embedding == "residual":
        names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
        unique, inverse = tokens.unique(return_inverse=True)
        ids = torch.cat([torch.full_like(unique[:, None], residual_prefix(model)), unique[:, None]], 1)
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names, stop_at_layer=model.cfg.n_layers)
        return torch.stack([cache[name][inverse, -1, :] for name in names])
    raise ValueError(f"unknown embedding {embedding!r}: use one of {', '.join(EMBEDDINGS)}")


def residual_prefix(model: HookedTransformer) -> int:
    """The token put before each token for the "residual" embedding: the model's BOS when it
    prepends one, else a newline (a document boundary for models trained without BOS), else the
    tokenizer's BOS, else token 0."""
    bos = prepended_bos(model)
    if bos is not None:
        return bos
    tokenizer = model.tokenizer
    newline = tokenizer.encode("\n", add_special_tokens=False) if tokenizer is not None else []
    if len(newline) == 1:
        return newline[0]
    return getattr(tokenizer, "bos_token_id", None) or 0


@torch.no_grad()
def head_inputs(model: HookedTransformer, x_XND: Tensor, input_norm: bool = True) -> Float[Tensor, "layers n d_model"]:
    """Each layer's attention input for the effective embeddings (its ln1 for pre-norm models)."""
    n_layers = model.cfg.n_layers
    out = []
    for layer in range(n_layers):  # one small op per layer; heads and tokens stay batched
        x_ND = x_XND[layer if x_XND.shape[0] > 1 else 0]
        out.append(per_token(model.blocks[layer].ln1, x_ND) if input_norm else x_ND)
    return torch.stack(out)


@torch.no_grad()
def ov_logits(
    model: HookedTransformer,
    x_LND: Float[Tensor, "layers n d_model"],
    candidates: Int[Tensor, "m"],
) -> Float[Tensor, "layers heads n m"]:
    """Logits of `candidates` from every head's OV circuit: W_U[:, c] . W_O (W_V x + b_V).

    W_V is TransformerLens's per-head view, so grouped-query heads share their group's W_V.
    No final norm and no unembedding bias, as in the paper's W_U W_OV form.
    """
    W_U_DM = model.W_U[:, candidates]
    W_OU_LHEM = torch.einsum("lhed,dm->lhem", model.W_O, W_U_DM)
    v_LHNE = torch.einsum("lnd,lhde->lhne", x_LND, model.W_V) + model.b_V[:, :, None, :]
    return torch.einsum("lhne,lhem->lhnm", v_LHNE, W_OU_LHEM)


@torch.no_grad()
def ov_output(model: HookedTransformer, x_ND: Tensor, layer: int, head: int) -> Float[Tensor, "n d_model"]:
    """One head's OV output for inputs already normalised for its layer."""
    attn = model.blocks[layer].attn
    return (x_ND @ attn.W_V[head] + attn.b_V[head]) @ attn.W_O[head]


@torch.no_grad()
def direction_logits(model: HookedTransformer, layer: int, head: int, d_KD: Tensor, input_norm: bool = True) -> Float[Tensor, "k vocab"]:
    """Logit effect over the whole vocabulary of directions written where a head reads them.

    The direction goes through the layer's input norm (a scale for RMSNorm), W_V and W_O, with no
    value bias, then W_U: what adding the direction to the head's input adds to its output logits.
    """
    x_KD = d_KD.to(model.W_E.device, model.W_E.dtype)
    if input_norm:
        x_KD = per_token(model.blocks[layer].ln1, x_KD)
    attn = model.blocks[layer].attn
    return ((x_KD @ attn.W_V[head]) @ attn.W_O[head] @ model.W_U).cpu()


@torch.no_grad()
def head_token_logits(model: HookedTransformer, x_ND: Tensor, layer: int, head: int) -> Float[Tensor, "n vocab"]:
    """One head's OV logits over the whole vocabulary for effective embeddings `x_ND` (before its input norm)."""
    x_ND = per_token(model.blocks[layer].ln1, x_ND.to(model.W_E.device))
    return (ov_output(model, x_ND, layer, head) @ model.W_U).cpu()
