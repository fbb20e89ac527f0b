"""Activation sites: the embedding and the layer-0 MLP output, as SAEs and probes read them.

A *site* names where a vector comes from. Vocabulary-level activations take a token alone,
with no context: the embedding W_E[t] (`hook_embed`) or the layer-0 MLP applied to it,
MLP0(ln2(W_E[t])) (`blocks.0.hook_mlp_out`, the paper's form, no attention term).
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from successor_lens.models import prepended_bos

Site = Literal["embed", "mlp0"]
HOOKS: dict[str, str] = {"embed": "hook_embed", "mlp0": "blocks.0.hook_mlp_out"}


def hook_name(site: str) -> str:
    if site not in HOOKS:
        raise ValueError(f"unknown site {site!r}: use one of {', '.join(HOOKS)}")
    return HOOKS[site]


def per_token(module, x_ND: Tensor) -> Tensor:
    """Apply a TransformerLens block component (which expects [batch, pos, d]) to [N, D]."""
    return module(x_ND[:, None, :])[:, 0, :]


@torch.no_grad()
def mlp0_out(model: HookedTransformer, tokens: Int[Tensor, "n"], mlp0_norm: bool = True) -> Float[Tensor, "n d_model"]:
    """The layer-0 MLP applied to each token's embedding alone: MLP0(ln2(W_E[t])).

    `mlp0_norm=False` skips the layer-0 MLP input norm, as one public re-implementation does
    (Tigges et al.); whether the paper normalises is not confirmed, so it is an option.
    """
    block = model.blocks[0]
    x_ND = model.W_E[tokens]
    if mlp0_norm:
        x_ND = per_token(block.ln2, x_ND)
    return per_token(block.mlp, x_ND)


@torch.no_grad()
def token_activations(
    model: HookedTransformer, tokens: Int[Tensor, "n"], site: str, mlp0_norm: bool = True
) -> Float[Tensor, "n d_model"]:
    """Vocabulary-level activations of `tokens` at `site`, each token taken alone."""
    hook_name(site)
    tokens = tokens.to(model.W_E.device)
    if site == "embed":
        return model.W_E[tokens].clone()
    return mlp0_out(model, tokens, mlp0_norm)


@torch.no_grad()
def hook_activations(model: HookedTransformer, tokens: Int[Tensor, "n"], hook: str, batch: int = 512) -> Float[Tensor, "n d"]:
    """Activations of `tokens` at any hook, each token taken alone.

    The two vocabulary-level sites use `token_activations`; any other hook (a pretrained
    dictionary on, say, `blocks.8.hook_resid_pre`) runs each token as its own one-token prompt
    (after BOS when the model prepends one) and reads the hook at that token.
    """
    for site, name in HOOKS.items():
        if hook == name:
            return token_activations(model, tokens, site)
    device, bos = model.W_E.device, prepended_bos(model)
    out = []
    for start in range(0, len(tokens), batch):
        ids = tokens[start : start + batch, None].to(device)
        if bos is not None:
            ids = torch.cat([torch.full_like(ids, bos), ids], 1)
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n == hook)
        if hook not in cache:
            raise ValueError(f"hook {hook!r} is not a hook of {model.cfg.model_name}: check the dictionary's hook_name")
        out.append(cache[hook][:, -1].reshape(len(ids), -1).cpu())
    return torch.cat(out)
