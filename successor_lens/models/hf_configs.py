"""HookedTransformerConfigs read from Hugging Face configs, for the architectures TransformerLens
configures only by official name (Llama-architecture GGUF models, Gemma 3 checkpoints)."""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens import HookedTransformerConfig

from successor_lens.errors import ModelLoadError


def llama_config(hf_config, model_name: str) -> HookedTransformerConfig:
    """A HookedTransformerConfig for a Hugging Face Llama-architecture config."""
    rope = getattr(hf_config, "rope_parameters", None) or {}
    rotary_base = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    return HookedTransformerConfig(
        **_sizes(hf_config, model_name, d_head, max_ctx=2048),
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_adjacent_pairs=False,
        rotary_base=rotary_base,
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,  # the model's own tokenizer adds no BOS
        tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        dtype=torch.float32,
    )


def _sizes(hf_config, model_name: str, d_head: int, max_ctx: int) -> dict[str, Any]:
    """The sizes every decoder config shares, read from a Hugging Face config (context capped at `max_ctx`)."""
    return {
        "model_name": model_name, "d_model": hf_config.hidden_size, "d_head": d_head, "n_heads": hf_config.num_attention_heads,
        "n_key_value_heads": hf_config.num_key_value_heads, "d_mlp": hf_config.intermediate_size, "n_layers": hf_config.num_hidden_layers,
        "n_ctx": min(hf_config.max_position_embeddings, max_ctx), "eps": hf_config.rms_norm_eps, "d_vocab": hf_config.vocab_size,
    }


def gemma3_config(hf_config, model_name: str) -> HookedTransformerConfig:
    """A HookedTransformerConfig for a Hugging Face Gemma 3 text config (TransformerLens 3.9 has
    Gemma 3 configs only for its official names; this is the same mapping, read from the checkpoint)."""
    rope = getattr(hf_config, "rope_parameters", None) or {}
    global_base = rope.get("full_attention", {}).get("rope_theta", getattr(hf_config, "rope_theta", 1_000_000.0))
    local_base = rope.get("sliding_attention", {}).get("rope_theta", getattr(hf_config, "rope_local_base_freq", 10_000.0))
    return HookedTransformerConfig(
        **_sizes(hf_config, model_name, hf_config.head_dim, max_ctx=8192),
        act_fn=hf_config.hidden_activation,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=hf_config.head_dim,
        rotary_base=int(global_base),
        rotary_base_local=int(local_base),
        use_attn_scale=True,
        attn_scale=hf_config.query_pre_attn_scalar ** 0.5,
        gated_mlp=True,
        final_rms=True,
        use_normalization_before_and_after=True,
        use_qk_norm=True,
        use_local_attn=True,
        window_size=hf_config.sliding_window,
        attn_types=["global" if t == "full_attention" else "local" for t in hf_config.layer_types],
        original_architecture="Gemma3ForCausalLM",
        initializer_range=hf_config.initializer_range,
        default_prepend_bos=True,
        dtype=torch.float32,
    )


SHAPE_LIMITS = {"n_layers": 4096, "d_model": 1 << 17, "n_heads": 4096, "d_head": 1 << 14, "d_mlp": 1 << 20, "d_vocab": 1 << 24,
                "n_ctx": 1 << 24}
"""The largest size of each config field read (a 1T-parameter model is well inside): a config with
10**9 layers is refused before a progress bar promises hours or an allocation is tried."""


def check_shape(cfg: HookedTransformerConfig, folder) -> None:
    """`cfg`'s sizes within `SHAPE_LIMITS` and consistent with one another, or one line."""
    for name, hi in SHAPE_LIMITS.items():
        value = getattr(cfg, name, None)
        if value is None and name == "d_mlp":
            continue
        if type(value) is not int or not 1 <= value <= hi:
            raise ModelLoadError(f"--model {folder}: its config gives {name} = {str(value)[:30]}, outside 1..{hi}: fix its config.json")
    kv = getattr(cfg, "n_key_value_heads", None)
    if kv is not None and (type(kv) is not int or kv < 1 or cfg.n_heads % kv):
        raise ModelLoadError(f"--model {folder}: {cfg.n_heads} query heads do not share {str(kv)[:30]} key-value heads evenly: fix its config.json")
