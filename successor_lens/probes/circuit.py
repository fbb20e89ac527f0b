"""The circuits computed by hand, in one place: effective embeddings, the OV circuit of every head
at once (the scan) or of one head to any candidate set or the whole vocabulary (arithmetic, probes,
atlas, export), and a head's direct logit attribution through the final norm (in context, in the
wild). docs/method.md section 2; the tests check each against the model's own forward pass.

Shapes use suffixes: L layers, H heads, N tokens, D d_model, E d_head, M candidates, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from successor_lens.models.provenance import prepended_bos
from successor_lens.probes.probe_configs import EMBEDDINGS
from successor_lens.sites import mlp0_out, norms_after_only, per_token


@torch.no_grad()
def effective_embeddings(
    model: HookedTransformer,
    tokens: Int[Tensor, " n"],
    embedding: str = "mlp0",
    mlp0_norm: bool = True,
    post_norms: bool = True,
) -> Float[Tensor, "layers_or_1 n d_model"]:
    """The vector each head reads for a token: one row set for all layers, or one per layer.

    - "mlp0": MLP0(W_E[t]), the paper's form.
    - "embed+mlp0": W_E[t] + MLP0(W_E[t]).
    - "residual": the token's residual stream entering layer L, read at the token after a
      one-token prefix (`residual_prefix`). A token alone at position 0 is the attention sink,
      whose residual is degenerate (the copying control fell from 0.98 to 0.14 on SmolLM2).
    """
    if embedding == "mlp0":
        return mlp0_out(model, tokens, mlp0_norm, post_norms)[None]
    if embedding == "embed+mlp0":
        return (model.W_E[tokens] + mlp0_out(model, tokens, mlp0_norm, post_norms))[None]
    if embedding == "residual":
        names = [get_act_name("resid_pre", layer) for layer in range(model.cfg.n_layers)]
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


def input_norm_of(model: HookedTransformer, layer: int, input_norm: bool = True):
    """The norm a layer's attention applies to what it reads (ln1), or None: none asked for, or a
    post-norm architecture whose ln1 normalises the attention's output instead."""
    return model.blocks[layer].ln1 if input_norm and not norms_after_only(model) else None


def output_norm_of(model: HookedTransformer, layer: int, post_norms: bool = True):
    """The norm(s) a layer applies to its attention output before adding it to the residual stream
    (Gemma 2/3's `ln1_post`; a post-norm architecture's ln1), as one callable, or None."""
    block = model.blocks[layer]
    norms = []
    if post_norms and model.cfg.use_normalization_before_and_after:
        norms.append(block.ln1_post)
    if post_norms and norms_after_only(model):
        norms.append(block.ln1)
    if not norms:
        return None

    def apply(x):
        for norm in norms:
            x = norm(x)
        return x
    return apply


@torch.no_grad()
def head_inputs(model: HookedTransformer, x_XND: Tensor, input_norm: bool = True) -> Float[Tensor, "layers n d_model"]:
    """Each layer's attention input for the effective embeddings (its ln1 for pre-norm models)."""
    n_layers = model.cfg.n_layers
    out = []
    for layer in range(n_layers):  # one small op per layer; heads and tokens stay batched
        x_ND = x_XND[layer if x_XND.shape[0] > 1 else 0]
        norm = input_norm_of(model, layer, input_norm)
        out.append(per_token(norm, x_ND) if norm is not None else x_ND)
    return torch.stack(out)


@torch.no_grad()
def ov_logits(
    model: HookedTransformer,
    x_LND: Float[Tensor, "layers n d_model"],
    candidates: Int[Tensor, " m"],
    post_norms: bool = True,
) -> Float[Tensor, "layers heads n m"]:
    """Logits of `candidates` from every head's OV circuit: W_U[:, c] . norm_post((x W_V + b_V) W_O).

    W_V is TransformerLens's per-head view, so grouped-query heads share their group's W_V.
    `norm_post` is the layer's post-attention norm where the model has one (Gemma 2/3), applied to
    the head's output alone (what the layer writes when only this head attends). No final norm
    and no unembedding bias, as in the paper's W_U W_OV form.
    """
    W_U_DM = model.W_U[:, candidates]
    v_LHNE = torch.einsum("lnd,lhde->lhne", x_LND, model.W_V) + model.b_V[:, :, None, :]
    if all(output_norm_of(model, layer, post_norms) is None for layer in range(model.cfg.n_layers)):
        W_OU_LHEM = torch.einsum("lhed,dm->lhem", model.W_O, W_U_DM)
        return torch.einsum("lhne,lhem->lhnm", v_LHNE, W_OU_LHEM)
    out = []
    for layer in range(model.cfg.n_layers):  # the norm is per layer and not linear: apply it to each head's output
        o_HND = torch.einsum("hne,hed->hnd", v_LHNE[layer], model.W_O[layer])
        norm = output_norm_of(model, layer, post_norms)
        out.append((norm(o_HND) if norm is not None else o_HND) @ W_U_DM)
    return torch.stack(out)


@dataclass
class OVCircuit:
    """One head's OV path to the unembedding: (norm(x) W_V + b_V) W_O W_U, for a candidate set or
    the whole vocabulary. No final norm and no unembedding bias, as in the paper's W_U W_OV form.

    `bias=False` leaves out b_V: the effect of a direction added where the head reads, rather than
    the output for an input. `norm=None` skips the layer's input norm; `post_norm` is the layer's
    post-attention norm (Gemma 2/3), applied to the head's output alone, or None.
    """

    W_V: Tensor
    b_V: Tensor | None
    W_O: Tensor
    W_U: Tensor
    """[d_model, candidates or vocabulary]"""
    norm: object | None
    name: str
    post_norm: object | None = None

    def outputs(self, x_ND: Tensor) -> Float[Tensor, "n d_model"]:
        """What the head writes to the residual stream for inputs `x_ND` (before its input norm)
        when it attends to them alone: through the input norm, W_V (+ b_V), W_O and the post norm."""
        x_ND = x_ND.to(self.W_V.device, self.W_V.dtype)
        if self.norm is not None:
            x_ND = per_token(self.norm, x_ND)
        v_NE = x_ND @ self.W_V
        if self.b_V is not None:
            v_NE = v_NE + self.b_V
        out_ND = v_NE @ self.W_O
        return per_token(self.post_norm, out_ND) if self.post_norm is not None else out_ND

    def logits(self, x_ND: Tensor) -> Float[Tensor, "n m"]:
        return (self.outputs(x_ND) @ self.W_U).cpu()

    @staticmethod
    @torch.no_grad()
    def from_model(model: HookedTransformer, layer: int, head: int, candidates: Tensor | None = None, bias: bool = True,
                   input_norm: bool = True, post_norms: bool = True) -> OVCircuit:
        """`candidates` (token ids) or None for the whole vocabulary."""
        W_U = model.W_U if candidates is None else model.W_U[:, candidates.to(model.W_U.device)]
        return OVCircuit(model.W_V[layer, head].detach(), model.b_V[layer, head].detach() if bias else None,
                         model.W_O[layer, head].detach(), W_U.detach(), input_norm_of(model, layer, input_norm), f"L{layer}H{head}",
                         output_norm_of(model, layer, post_norms))


@torch.no_grad()
def direction_logits(model: HookedTransformer, layer: int, head: int, d_KD: Tensor, input_norm: bool = True) -> Float[Tensor, "k vocab"]:
    """Logit effect over the whole vocabulary of directions written where a head reads them: through
    the layer's input norm (a scale for RMSNorm), W_V and W_O, with no value bias, then W_U."""
    return OVCircuit.from_model(model, layer, head, bias=False, input_norm=input_norm).logits(d_KD)


@torch.no_grad()
def head_token_logits(model: HookedTransformer, x_ND: Tensor, layer: int, head: int) -> Float[Tensor, "n vocab"]:
    """One head's OV logits over the whole vocabulary for effective embeddings `x_ND` (before its input norm)."""
    return OVCircuit.from_model(model, layer, head).logits(x_ND)


FINAL_SCALE = "ln_final.hook_scale"
"""The final norm's scale hook (TransformerLens has no get_act_name short form for it)."""


def final_norm_delta(model: HookedTransformer, dx: Tensor, scale: Tensor | None) -> Tensor:
    """A residual change as the unembedding sees it, with the final norm's scale held fixed."""
    if model.cfg.normalization_type is None or scale is None:
        return dx
    return through_fixed_norm(model, model.ln_final, dx, scale)


def through_fixed_norm(model: HookedTransformer, norm, dx: Tensor, scale: Tensor) -> Tensor:
    """A change `dx` through a LayerNorm/RMSNorm whose scale is held at `scale`: centred (LN),
    divided by the scale, times the gain. Linear in `dx`, so contributions add up."""
    if model.cfg.normalization_type in ("LN", "LNPre"):
        dx = dx - dx.mean(-1, keepdim=True)
    dx = dx / scale
    w = getattr(norm, "w", None)
    return dx * w if w is not None else dx


def post_scale_names(model: HookedTransformer) -> list[str]:
    """The hooks of the post-attention norms' scales (Gemma 2/3's `ln1_post`), one per layer; none
    for models without them."""
    if not model.cfg.use_normalization_before_and_after:
        return []
    return [f"blocks.{layer}.ln1_post.hook_scale" for layer in range(model.cfg.n_layers)]


def post_scales(model: HookedTransformer, cache) -> Tensor | None:
    """[..., pos, layers, 1] the post-attention norms' scales of a forward pass (`post_scale_names`
    cached), or None for models without them."""
    names = post_scale_names(model)
    return torch.stack([cache[name] for name in names], -2) if names else None


def written(model: HookedTransformer, layer: int, dx: Tensor, post_scale: Tensor | None) -> Tensor:
    """A change `dx` of layer `layer`'s attention output (before its post-norm) as the residual
    stream receives it, the post-norm's clean scale held fixed (as DLA holds the final norm's):
    w * dx / scale. Identity for models without a post-attention norm."""
    if not model.cfg.use_normalization_before_and_after:
        return dx
    if post_scale is None:
        raise ValueError(f"{model.cfg.model_name} normalises its attention output: pass the ln1_post scales (post_scales)")
    return through_fixed_norm(model, model.blocks[layer].ln1_post, dx, post_scale)


def head_outputs(model: HookedTransformer, z_LHE: Tensor, post_scale: Tensor | None = None, raw: bool = False) -> Float[Tensor, "... layers heads d_model"]:
    """What each head writes to the residual stream from its `hook_z` values (any leading dims):
    z W_O, through the post-attention norm with its clean scale `post_scale` ([..., layers, 1],
    `post_scales`) held fixed where the model has one (`raw=True`: before that norm). The heads'
    outputs then add up, with b_O, to what each layer writes."""
    out = torch.einsum("...lhe,lhed->...lhd", z_LHE, model.W_O)
    return out if raw else as_written(model, out, post_scale)


def as_written(model: HookedTransformer, out_LHD: Tensor, post_scale: Tensor | None) -> Tensor:
    """Heads' raw outputs ([..., layers, heads, d_model]) through each layer's post-attention norm
    at its clean scale (`written`); unchanged for models without one."""
    if not model.cfg.use_normalization_before_and_after:
        return out_LHD
    return torch.stack([written(model, layer, out_LHD[..., layer, :, :], None if post_scale is None else post_scale[..., layer, None, :])
                        for layer in range(model.cfg.n_layers)], -3)


def direct_logits(model: HookedTransformer, dx: Tensor, scale: Tensor | None, unembed: Tensor | None = None) -> Tensor:
    """Direct logit attribution: a residual change `dx` (a head's output, or its change under an
    ablation) through the final norm with the clean `scale` held fixed, then W_U (or `unembed`:
    answer-minus-others directions)."""
    return final_norm_delta(model, dx, scale) @ (model.W_U if unembed is None else unembed)
