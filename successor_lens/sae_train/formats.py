"""Dictionaries in the layouts of the neighbouring tools, in and out, as sae-lens disk loaders.

- sae-lens: `cfg.json` + `sae_weights.safetensors` (our own layout; `dictionary.py`).
- EleutherAI sparsify (`eai-sparsify`): one folder per hookpoint with `cfg.json` (SparseCoderConfig
  fields plus `d_in`) and `sae.safetensors` (`encoder.weight` [F, D], `encoder.bias`, `W_dec` [F, D],
  `b_dec`). Encode: top-k of ReLU(encoder(x - b_dec)); decode: acts @ W_dec + b_dec. TopK only.
- dictionary_learning (`dictionary-learning`): `ae.pt` (a state dict) + `config.json` (`trainer`:
  `dict_class`, `activation_dim`, `dict_size`, `k`, `layer`, `lm_name`, `submodule_name`).
  AutoEncoderTopK (top-k of ReLU), BatchTopKSAE (at inference a threshold on ReLU: JumpReLU with
  one threshold), AutoEncoder (ReLU, bias `bias`) and JumpReluAutoEncoder (no b_dec subtraction).

Each loader has sae-lens's `PretrainedSaeDiskLoader` signature, so `SAE.load_from_disk(path,
converter=...)` takes it. sae-lens 6.54 ships a `sparsify_disk_loader`, but it maps every hookpoint
to `hook_resid_post` (an MLP hookpoint included) and skips the b_dec subtraction whenever
`normalize_decoder` is set, which sparsify never does: its encode always subtracts b_dec. Hence
ours, checked numerically against the real `sparsify` library in the tests. `ae.pt` is read with
`torch.load(weights_only=True)`.

Hook names are mapped to TransformerLens's and the mapping is recorded (`hook_source`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from successor_lens.errors import UserError
from successor_lens.io import read_json

FORMATS = ("sae-lens", "sparsify", "dictionary-learning")


class FormatError(UserError, ValueError):
    """A dictionary that this layout cannot hold, or a folder this loader cannot read."""


def detect(path: str | Path) -> str | None:
    """The layout of a dictionary folder, or None."""
    path = Path(path)
    if (path / "sae_weights.safetensors").is_file() and (path / "cfg.json").is_file():
        return "sae-lens"
    if (path / "sae.safetensors").is_file() and (path / "cfg.json").is_file():
        return "sparsify"
    if (path / "ae.pt").is_file() and (path / "config.json").is_file():
        return "dictionary-learning"
    return None


# --- hook names ----------------------------------------------------------------------------------

_SPARSIFY_HOOKS = [
    (re.compile(r"^(?:.*\.)?(?:embed_tokens|wte|embed_in)$"), lambda m: "hook_embed"),
    (re.compile(r"^(?:.*\.)?(?:layers|h)\.(\d+)\.mlp$"), lambda m: f"blocks.{m[1]}.hook_mlp_out"),
    (re.compile(r"^(?:.*\.)?(?:layers|h)\.(\d+)\.(?:self_attn|attn|attention)$"), lambda m: f"blocks.{m[1]}.hook_attn_out"),
    (re.compile(r"^(?:.*\.)?(?:layers|h)\.(\d+)$"), lambda m: f"blocks.{m[1]}.hook_resid_post"),
]
_DL_HOOKS = {"mlp_out": "hook_mlp_out", "resid_post": "hook_resid_post", "attn_out": "hook_attn_out", "resid_pre": "hook_resid_pre"}


def sparsify_hook(hookpoint: str) -> str:
    """A sparsify hookpoint (a Hugging Face module name) as a TransformerLens hook name."""
    for pattern, name in _SPARSIFY_HOOKS:
        if m := pattern.match(hookpoint):
            return name(m)
    raise FormatError(f"sparsify hookpoint {hookpoint!r} has no TransformerLens equivalent here: use layers.N, layers.N.mlp or embed_tokens")


def tl_to_sparsify_hook(hook: str) -> str:
    if hook == "hook_embed":
        return "embed_tokens"
    if m := re.fullmatch(r"blocks\.(\d+)\.hook_(mlp_out|resid_post|attn_out)", hook):
        return {"mlp_out": f"layers.{m[1]}.mlp", "resid_post": f"layers.{m[1]}", "attn_out": f"layers.{m[1]}.self_attn"}[m[2]]
    raise FormatError(f"hook {hook!r} has no sparsify hookpoint: sparsify hooks modules (layers.N, layers.N.mlp, embed_tokens)")


def dictionary_learning_hook(trainer: dict) -> str:
    """The TransformerLens hook of a dictionary_learning `submodule_name` ("embed", "mlp_out_layer0",
    "resid_post_layer3", ...; none given: the residual stream after `layer`, the library's default).
    An unknown name is an error naming the known ones, never a guess."""
    name, layer = trainer.get("submodule_name"), trainer.get("layer")
    if not name:
        if not isinstance(layer, int) or layer < 0:
            raise FormatError("dictionary_learning config: no submodule_name and no layer: add submodule_name (e.g. resid_post_layer0)")
        return f"blocks.{layer}.hook_resid_post"  # the library's default (sae-lens's reading too)
    if name == "embed":
        return "hook_embed"
    for key, hook in _DL_HOOKS.items():
        if m := re.fullmatch(rf"{key}(?:_layer_?(\d+))?", str(name)):
            at = m[1] if m[1] is not None else layer
            if isinstance(at, str) or (isinstance(at, int) and at >= 0):
                return f"blocks.{at}.{hook}"
    known = ", ".join(["embed"] + [f"{k}_layerN" for k in _DL_HOOKS])
    raise FormatError(f"dictionary_learning submodule_name {name!r} is not one this reads ({known}): give the hook it reads with "
                      "--hook (load_dictionary(hook=...)), e.g. --hook blocks.0.hook_mlp_out")


def tl_to_dictionary_learning_hook(hook: str) -> tuple[str, int]:
    if hook == "hook_embed":
        return "embed", 0
    if m := re.fullmatch(r"blocks\.(\d+)\.hook_(\w+)", hook):
        return f"{m[2]}_layer{m[1]}", int(m[1])
    raise FormatError(f"hook {hook!r} has no dictionary_learning submodule name")


# --- loaders (sae-lens PretrainedSaeDiskLoader signature) -----------------------------------------


def _cfg(architecture: str, d_in: int, d_sae: int, hook: str, model: str | None, source: dict, device: str,
         k: int | None = None, apply_b_dec_to_input: bool = True, overrides: dict | None = None) -> dict[str, Any]:
    cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": device,
           "apply_b_dec_to_input": apply_b_dec_to_input, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"model_name": model, "hook_name": hook, "hook_head_index": None, "prepend_bos": True, "hook_source": source,
                        "sae_lens_version": importlib.metadata.version("sae-lens")}}  # a 6.x config, read as written
    if k is not None:
        cfg["k"] = k
    return {**cfg, **(overrides or {})}


def _named_errors(fmt: str):
    """A loader's reading errors (missing keys or files, bad JSON, truncated tensors) as one `FormatError`."""
    def wrap(loader):
        @functools.wraps(loader)
        def load(path, *args, **kwargs):
            try:
                return loader(path, *args, **kwargs)
            except FormatError as err:  # our own one line, with its own fix
                raise FormatError(f"{path}: {err}") from None
            except (KeyError, OSError, ValueError, SafetensorError, pickle.UnpicklingError) as err:
                raise FormatError(f"{path}: not a readable {fmt} dictionary ({type(err).__name__}: {err}): re-save it") from err
        return load
    return wrap


@_named_errors("sparsify")
def sparsify_loader(path: str | Path, device: str = "cpu", cfg_overrides: dict | None = None, hook: str | None = None) -> tuple[dict, dict]:
    path = Path(path)
    raw = read_json(path / "cfg.json", "sparsify config", dict, FormatError, "re-save the dictionary", max_bytes=1 << 20)
    if raw.get("transcode") or raw.get("skip_connection") or raw.get("activation", "topk") != "topk":
        raise FormatError(f"{path}: a sparsify transcoder, skip connection or {raw.get('activation')} activation is not an SAE this loads")
    tensors = load_file(path / "sae.safetensors", device=device)
    W_enc = tensors["encoder.weight"].T.float().contiguous()
    state = {"W_enc": W_enc, "b_enc": tensors["encoder.bias"].float(), "W_dec": tensors["W_dec"].float(), "b_dec": tensors["b_dec"].float()}
    run_cfg = path.parent / "config.json"
    model = read_json(run_cfg, "sparsify run config", dict, FormatError, "re-save the dictionary", max_bytes=1 << 20).get("model") if run_cfg.is_file() else None
    hook = hook or sparsify_hook(path.name)
    source = {"format": "sparsify", "hookpoint": path.name, "hook_name": hook}
    return _cfg("topk", raw["d_in"], W_enc.shape[1], hook, model, source, device, k=raw["k"], overrides=cfg_overrides), state


@_named_errors("dictionary_learning")
def dictionary_learning_loader(path: str | Path, device: str = "cpu", cfg_overrides: dict | None = None,
                               hook: str | None = None) -> tuple[dict, dict]:
    path = Path(path)
    trainer = read_json(path / "config.json", "dictionary_learning config", dict, FormatError, "re-save the dictionary", max_bytes=1 << 20)["trainer"]
    sd = torch.load(path / "ae.pt", map_location=device, weights_only=True)
    kind = trainer["dict_class"]
    hook = hook or dictionary_learning_hook(trainer)  # a hook given by name stands in for a submodule_name this does not read
    source = {"format": "dictionary-learning", "dict_class": kind, "submodule_name": trainer.get("submodule_name"), "hook_name": hook}
    model = trainer.get("lm_name")
    if kind in ("AutoEncoderTopK", "BatchTopKSAE"):
        state = {"W_enc": sd["encoder.weight"].T.contiguous(), "b_enc": sd["encoder.bias"], "W_dec": sd["decoder.weight"].T.contiguous(),
                 "b_dec": sd["b_dec"]}
        d_sae = state["W_enc"].shape[1]
        if kind == "AutoEncoderTopK":
            cfg = _cfg("topk", trainer["activation_dim"], d_sae, hook, model, source, device, k=int(sd["k"]), overrides=cfg_overrides)
        else:  # inference: ReLU then the learned threshold, for every latent
            state["threshold"] = torch.full((d_sae,), float(sd["threshold"]))
            cfg = _cfg("jumprelu", trainer["activation_dim"], d_sae, hook, model, source, device, overrides=cfg_overrides)
    elif kind == "AutoEncoder":
        state = {"W_enc": sd["encoder.weight"].T.contiguous(), "b_enc": sd["encoder.bias"], "W_dec": sd["decoder.weight"].T.contiguous(),
                 "b_dec": sd["bias"]}
        cfg = _cfg("standard", trainer["activation_dim"], state["W_enc"].shape[1], hook, model, source, device, overrides=cfg_overrides)
    elif kind == "JumpReluAutoEncoder":
        state = {k: sd[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
        cfg = _cfg("jumprelu", trainer["activation_dim"], state["W_enc"].shape[1], hook, model, source, device,
                   apply_b_dec_to_input=False, overrides=cfg_overrides)
    else:
        raise FormatError(f"{path}: dictionary_learning {kind} is not loaded here: AutoEncoderTopK, BatchTopKSAE, AutoEncoder or JumpReluAutoEncoder")
    return cfg, {k: v.float().to(device) for k, v in state.items()}


LOADERS = {"sparsify": sparsify_loader, "dictionary-learning": dictionary_learning_loader}


# --- writers -------------------------------------------------------------------------------------


def write_sparsify(sae, folder: Path) -> None:
    """A sparsify hookpoint folder (cfg.json, sae.safetensors) for a TopK dictionary."""
    if sae.cfg.architecture() != "topk":
        raise FormatError(f"sparsify stores TopK SAEs only; this dictionary is {sae.cfg.architecture()}: convert to sae-lens or dictionary-learning")
    if not sae.cfg.apply_b_dec_to_input:
        raise FormatError("sparsify always subtracts b_dec before encoding; this dictionary does not")
    save_file({"encoder.weight": sae.W_enc.detach().T.contiguous().float(), "encoder.bias": sae.b_enc.detach().float().contiguous(),
               "W_dec": sae.W_dec.detach().float().contiguous(), "b_dec": sae.b_dec.detach().float().contiguous()}, folder / "sae.safetensors")
    (folder / "cfg.json").write_text(json.dumps({
        "activation": "topk", "expansion_factor": max(1, sae.cfg.d_sae // sae.cfg.d_in), "normalize_decoder": False, "num_latents": sae.cfg.d_sae,
        "k": sae.cfg.k, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": sae.cfg.d_in}))


def write_dictionary_learning(sae, folder: Path) -> None:
    """`ae.pt` + `config.json` as dictionary_learning's trainers save them."""
    arch = sae.cfg.architecture()
    W_enc, b_enc, W_dec, b_dec = (t.detach().float().contiguous() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    if arch == "topk":
        kind, state = "AutoEncoderTopK", {"encoder.weight": W_enc.T.contiguous(), "encoder.bias": b_enc, "decoder.weight": W_dec.T.contiguous(),
                                          "b_dec": b_dec, "k": torch.tensor(sae.cfg.k, dtype=torch.int), "threshold": torch.tensor(-1.0)}
    elif arch == "standard":
        kind, state = "AutoEncoder", {"encoder.weight": W_enc.T.contiguous(), "encoder.bias": b_enc, "decoder.weight": W_dec.T.contiguous(), "bias": b_dec}
    elif arch == "jumprelu":  # their JumpReluAutoEncoder does not subtract b_dec: fold it into b_enc (exact up to rounding)
        folded = b_enc - b_dec @ W_enc if sae.cfg.apply_b_dec_to_input else b_enc
        kind, state = "JumpReluAutoEncoder", {"W_enc": W_enc, "b_enc": folded, "W_dec": W_dec, "b_dec": b_dec, "threshold": sae.threshold.detach().float()}
    else:
        raise FormatError(f"{arch} dictionaries have no dictionary_learning class here")
    if arch != "jumprelu" and not sae.cfg.apply_b_dec_to_input:
        raise FormatError("dictionary_learning's AutoEncoder and AutoEncoderTopK subtract b_dec before encoding; this dictionary does not")
    meta = sae.cfg.metadata
    submodule, layer = tl_to_dictionary_learning_hook(meta.hook_name or "blocks.0.hook_resid_post")
    torch.save(state, folder / "ae.pt")
    trainer = {"dict_class": kind, "activation_dim": sae.cfg.d_in, "dict_size": sae.cfg.d_sae, "layer": layer,
               "lm_name": meta.model_name, "submodule_name": submodule}
    if arch == "topk":
        trainer["k"] = sae.cfg.k
    (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {}}, indent=2))


def write_sae_lens(sae, folder: Path) -> None:
    sae.save_model(folder)


WRITERS = {"sae-lens": write_sae_lens, "sparsify": write_sparsify, "dictionary-learning": write_dictionary_learning}
