"""Activation sites: the embedding and the layer-0 MLP output, as SAEs and probes read them.

A *site* names where a vector comes from. Vocabulary-level activations take a token alone,
with no context: the embedding W_E[t] (`hook_embed`) or the layer-0 MLP applied to it,
MLP0(ln2(W_E[t])) (`blocks.0.hook_mlp_out`, the paper's form, no attention term). An item that
splits into several tokens (a number for a digit-splitting tokenizer) is read at its last token
in context instead (`item_activations`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

from successor_lens.errors import ConfigError, UserError
from successor_lens.models.provenance import prepended_bos

Site = Literal["embed", "mlp0"]
HOOKS: dict[str, str] = {"embed": get_act_name("embed"), "mlp0": get_act_name("mlp_out", 0)}


_HOOK = re.compile(r"^(blocks\.(\d+)\.)?([a-z0-9_]+\.)?hook_[a-z0-9_]+$")


def hook_name(site: str) -> str:
    """A site's TransformerLens hook: `mlp0` and `embed` by name, or any hook name written out
    (`blocks.3.hook_resid_post`, `blocks.0.attn.hook_z`, `hook_embed`)."""
    if site in HOOKS:
        return HOOKS[site]
    if not _HOOK.match(site):
        raise ConfigError(f"unknown site {site!r}: use {', '.join(HOOKS)} or a TransformerLens hook name such as blocks.3.hook_resid_post")
    return site


def hook_layer(hook: str) -> int | None:
    """N for a hook in block N (`blocks.N.*`), None for one outside the blocks."""
    match = _HOOK.match(hook)
    return int(match.group(2)) if match and match.group(2) is not None else None


def check_site(site: str, n_layers: int) -> str:
    """`hook_name(site)`, its layer checked against the model's (before the model loads)."""
    hook = hook_name(site)
    layer = hook_layer(hook)
    if layer is not None and layer >= n_layers:
        raise ConfigError(f"site {site}: layer {layer} but the model has layers 0..{n_layers - 1}: pick one of those")
    return hook


def hook_depth(hook: str, n_layers: int) -> int | None:
    """`stop_at_layer` that still computes `hook` (None: the whole model)."""
    layer = hook_layer(hook)
    if layer is not None:
        return layer + 1 if layer + 1 < n_layers else None
    return 1 if hook in (get_act_name("embed"), get_act_name("pos_embed")) else None


def per_token(module, x_ND: Tensor) -> Tensor:
    """Apply a TransformerLens block component (which expects [batch, pos, d]) to [N, D]."""
    return module(x_ND[:, None, :])[:, 0, :]


def norms_after_only(model: HookedTransformer) -> bool:
    """True for the post-norm architectures (OLMo 2/3): their ln1/ln2 normalise a sublayer's
    output, not its input."""
    return model.cfg.original_architecture in POST_NORM_ARCHITECTURES


@torch.no_grad()
def mlp0_out(model: HookedTransformer, tokens: Int[Tensor, " n"], mlp0_norm: bool = True, post_norms: bool = True) -> Float[Tensor, "n d_model"]:
    """The layer-0 MLP applied to each token's embedding alone: what block 0 writes to the residual
    stream (`blocks.0.hook_mlp_out`) for the token with attention 0 and positions left out.

    The MLP goes through the block's own `apply_mlp`, so a norm the model applies after it
    (Gemma 2/3's `ln2_post`) is included. `post_norms=False` leaves that norm out (the reading
    before it was fixed; kept as the wrong convention the planted controls must fail).
    `mlp0_norm=False` skips the MLP's input norm, as one public re-implementation does (Tigges et
    al.); whether the paper normalises is not confirmed, so it is an option.
    """
    block = model.blocks[0]
    x_ND = model.W_E[tokens]
    if mlp0_norm and not norms_after_only(model):
        x_ND = per_token(block.ln2, x_ND)
    if post_norms:
        return per_token(block.apply_mlp, x_ND)
    return per_token(block.mlp, x_ND)


@torch.no_grad()
def token_activations(
    model: HookedTransformer, tokens: Int[Tensor, " n"], site: str, mlp0_norm: bool = True
) -> Float[Tensor, "n d_model"]:
    """Vocabulary-level activations of `tokens` at `site`, each token taken alone."""
    hook_name(site)
    tokens = tokens.to(model.W_E.device)
    if site == "embed":
        return model.W_E[tokens].clone()
    return mlp0_out(model, tokens, mlp0_norm)


@torch.no_grad()
def item_activations(model: HookedTransformer, items: Sequence[Sequence[int]], hook: str, batch: int = 512) -> Float[Tensor, "n d"]:
    """Activations at `hook` of items given as token-id sequences, read at each item's last token.

    One-token items at a vocabulary-level hook are taken alone (`token_activations`, the paper's
    form); any other item runs as its own prompt (after BOS when the model prepends one), so a
    number that splits into digits is read at its last digit with attention 0 included.
    """
    out = torch.empty(len(items), model.cfg.d_model)
    site = next((s for s, name in HOOKS.items() if name == hook), None)
    single = [n for n, ids in enumerate(items) if len(ids) == 1] if site else []
    if single and site is not None:
        tokens = torch.tensor([items[n][0] for n in single])
        out[single] = token_activations(model, tokens, site).cpu().float()
    by_length: dict[int, list[int]] = {}
    for n, ids in enumerate(items):
        if not (site and len(ids) == 1):
            by_length.setdefault(len(ids), []).append(n)
    for rows in by_length.values():
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            out[chunk] = _read_at_last(model, torch.tensor([list(items[n]) for n in chunk]), hook)
    return out


def _read_at_last(model: HookedTransformer, ids_NP: Tensor, hook: str) -> Tensor:
    bos = prepended_bos(model)
    ids_NP = ids_NP.to(model.W_E.device)
    if bos is not None:
        ids_NP = torch.cat([torch.full_like(ids_NP[:, :1], bos), ids_NP], 1)
    return hook_activations(model, ids_NP, hook)[:, -1].reshape(len(ids_NP), -1).cpu().float()


@torch.no_grad()
def hook_activations(model: HookedTransformer, ids_NP: Tensor, hook: str) -> Float[Tensor, "n pos d"]:
    """The activations at `hook` of token windows (BOS already in them when wanted), running the
    model only as deep as the hook."""
    _, cache = model.run_with_cache(ids_NP.to(model.W_E.device), names_filter=lambda n: n == hook, stop_at_layer=hook_depth(hook, model.cfg.n_layers))
    if hook not in cache:
        raise UserError(f"hook {hook!r} is not a hook of {model.cfg.model_name}: check the dictionary's hook_name")
    return cache[hook]
