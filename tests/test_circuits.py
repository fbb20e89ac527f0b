"""The circuits computed by hand equal the model's own forward pass, on every architecture loaded.

Each architecture is a tiny random Hugging Face model saved as a local folder and loaded through
the package (TransformerLens's own conversion), its norm gains made non-uniform so that a norm
left out shows. TransformerLens's hooks are the reference:
- effective embedding: the token alone, positions and layer-0 attention zeroed, `blocks.0.hook_mlp_out`;
- one head's OV output: its input patched into `hook_resid_pre`, the other heads' `hook_z` zeroed
  (the one position attends to itself), `hook_attn_out` (after any post-attention norm);
- DLA: the components' direct effects through the final norm's clean scale add up to the logits,
  and the heads' outputs (post-norm scale held fixed) add up to what each layer writes.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hub_cache import tiny_gemma3, tiny_gpt2, tiny_llama, tiny_pythia
from transformer_lens.utilities import get_act_name

from successor_lens.models.loading import load_model
from successor_lens.probes.circuit import (
    FINAL_SCALE,
    OVCircuit,
    direct_logits,
    effective_embeddings,
    head_inputs,
    head_outputs,
    ov_logits,
    post_scale_names,
    post_scales,
)
from successor_lens.sites import item_activations, mlp0_out

ARCHITECTURES = {"gpt2 (LayerNorm, learned positions, attention biases)": tiny_gpt2,
                 "gpt-neox (parallel attention, rotary)": tiny_pythia,
                 "llama (RMSNorm, grouped-query attention)": tiny_llama,
                 "gemma3 (pre and post norms, one key-value head)": tiny_gemma3}


def uneven_norms(hf_model, seed: int = 0) -> None:
    """Give every norm a non-uniform gain (and bias), as a trained model has."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            if any(k in name for k in ("norm", "ln_", "layernorm")):
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def arch_model(request, tmp_path_factory):
    hf_model, tok = ARCHITECTURES[request.param](seed=3)
    uneven_norms(hf_model)
    folder = tmp_path_factory.mktemp("arch") / "checkpoint"
    hf_model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return load_model(str(folder))


TOKENS = torch.tensor([5, 17, 101, 230, 333])


def test_the_effective_embedding_is_what_block_0_writes_for_the_token_alone(arch_model):
    model = arch_model
    zero = lambda x, hook: torch.zeros_like(x)  # noqa: E731
    hooks = [(get_act_name("attn_out", 0), zero)] + ([("hook_pos_embed", zero)] if model.cfg.positional_embedding_type == "standard" else [])
    ref = {}
    model.run_with_hooks(TOKENS[:, None], fwd_hooks=hooks + [(get_act_name("mlp_out", 0), lambda x, hook: ref.setdefault("x", x[:, 0].clone()))])
    ours = mlp0_out(model, TOKENS)
    assert torch.allclose(ours, ref["x"], atol=1e-5, rtol=1e-4)
    if model.cfg.use_normalization_before_and_after:  # the wrong convention that skipped ln2_post differs
        assert not torch.allclose(mlp0_out(model, TOKENS, post_norms=False), ref["x"], atol=1e-3)


@pytest.mark.parametrize("layer", [0, 1])
def test_one_heads_ov_output_is_what_the_layer_writes_when_only_it_attends(arch_model, layer):
    model = copy.deepcopy(arch_model)
    with torch.no_grad():
        model.blocks[layer].attn.b_O.zero_()  # the OV circuit is W_V, W_O (the paper's form); b_O is not the head's
    x_ND = effective_embeddings(model, TOKENS)[0]
    head = model.cfg.n_heads - 1
    patch = lambda act, hook: x_ND[:, None, :].to(act)  # noqa: E731

    def only_head(z, hook):
        keep = torch.zeros_like(z)
        keep[:, :, head] = z[:, :, head]
        return keep

    ref = {}
    model.run_with_hooks(TOKENS[:, None], stop_at_layer=layer + 1, fwd_hooks=[
        (get_act_name("resid_pre", layer), patch), (get_act_name("z", layer), only_head),
        (get_act_name("attn_out", layer), lambda x, hook: ref.setdefault("x", x[:, 0].clone()))])
    circuit = OVCircuit.from_model(model, layer, head)
    assert torch.allclose(circuit.outputs(x_ND), ref["x"], atol=1e-5, rtol=1e-4)
    # the batched scan path gives the same logits as the one-head circuit
    batched = ov_logits(model, head_inputs(model, x_ND[None]), TOKENS)[layer, head]
    assert torch.allclose(batched, OVCircuit.from_model(model, layer, head, TOKENS).logits(x_ND), atol=1e-4, rtol=1e-4)
    if model.cfg.use_normalization_before_and_after:
        wrong = OVCircuit.from_model(model, layer, head, post_norms=False)
        assert not torch.allclose(wrong.outputs(x_ND), ref["x"], atol=1e-3)


def test_direct_logit_attribution_adds_up_to_the_logits(arch_model):
    model = arch_model
    L = model.cfg.n_layers
    ids = torch.tensor([[3, 50, 60, 70, 80, 90, 11]])
    names = {FINAL_SCALE, "hook_embed", "hook_pos_embed", *post_scale_names(model)}
    names |= {get_act_name(k, layer) for layer in range(L) for k in ("attn_out", "mlp_out", "z")}
    logits, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
    scale = cache.cache_dict.get(FINAL_SCALE)
    parts = [cache["hook_embed"]] + ([cache["hook_pos_embed"]] if "hook_pos_embed" in cache else [])
    parts += [cache[get_act_name(k, layer)] for layer in range(L) for k in ("attn_out", "mlp_out")]
    final_bias = getattr(model.ln_final, "b", None)  # a LayerNorm's bias is a constant term of the logits
    total = sum(direct_logits(model, p, scale) for p in parts) + model.b_U + (final_bias @ model.W_U if final_bias is not None else 0)
    assert torch.allclose(total, logits, atol=1e-3, rtol=1e-4)
    # the heads' outputs, post-norm scale held fixed, add up (with b_O) to what each layer writes
    z = torch.stack([cache[get_act_name("z", layer)] for layer in range(L)], 2)  # [B, P, L, H, E]
    heads = head_outputs(model, z, post_scales(model, cache))
    for layer in range(L):
        b_O = model.blocks[layer].attn.b_O
        if model.cfg.use_normalization_before_and_after:
            w = model.blocks[layer].ln1_post.w
            b_O = b_O / cache[post_scale_names(model)[layer]] * w
        assert torch.allclose(heads[:, :, layer].sum(2) + b_O, cache[get_act_name("attn_out", layer)], atol=1e-4, rtol=1e-4)


def test_sae_data_of_one_site_is_one_kind_of_vector(arch_model):
    """Single-token items (read alone) and split items (read in context) at MLP0 are both what
    block 0 writes: the same norm convention, so their sizes are comparable."""
    model = arch_model
    single = [(int(t),) for t in TOKENS]
    split = [(int(a), int(b)) for a, b in zip(TOKENS, TOKENS.flip(0))]
    acts = item_activations(model, single + split, get_act_name("mlp_out", 0))
    ratio = acts[: len(single)].norm(dim=-1).median() / acts[len(single):].norm(dim=-1).median()
    assert 1 / 3 < float(ratio) < 3
