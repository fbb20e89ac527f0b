"""`edit --export-model DIR`: the edited model as a folder Hugging Face `transformers` loads
(safetensors weights, config, tokenizer), for the edits that are exactly weight edits.

A head's output is z_h W_O[h] and z_h reaches nothing else, so scaling a head (`scale_head`) is
scaling its slice of the output projection, and zero ablation (`ablate_head`, mode zero) is zeroing
that slice: the checkpoint's own layout per architecture is `OUTPUT_PROJECTIONS` (query heads in
order, as TransformerLens numbers them, grouped-query models too). Refused with the reason: mean
ablation (it needs a bias the output projections of Llama- and Gemma-style models do not have, and
is not exact through a bias where they do once the model's own value bias is counted), and feature
edits (they enter one head's values through its norm, which no weight or bias reproduces).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from successor_lens.errors import ConfigError, UserError
from successor_lens.filenames import EXPORT_JSON
from successor_lens.io import TMP_TAG, digest, file_sha256, provenance, read_json, share, write_json
from successor_lens.probes.edits import Edit

OUTPUT_PROJECTIONS = {
    "gpt2": ("transformer.h.{layer}.attn.c_proj", "rows"),  # Conv1D: weight [in, out]
    "gpt_neox": ("gpt_neox.layers.{layer}.attention.dense", "columns"),
    "llama": ("model.layers.{layer}.self_attn.o_proj", "columns"),
    "mistral": ("model.layers.{layer}.self_attn.o_proj", "columns"),
    "qwen2": ("model.layers.{layer}.self_attn.o_proj", "columns"),
    "gemma": ("model.layers.{layer}.self_attn.o_proj", "columns"),
    "gemma2": ("model.layers.{layer}.self_attn.o_proj", "columns"),
    "gemma3_text": ("model.layers.{layer}.self_attn.o_proj", "columns"),
}
"""Per `config.model_type`: the output projection of layer L, and which of its weight's axes holds
the heads' inputs (nn.Linear: columns; GPT-2's Conv1D: rows)."""
EXPORTABLE_SOURCES = ("embedded", "hub", "local")


def check_exportable(edits: list[Edit], source_kind: str, model: str) -> None:
    """Refuse, before any work, an export that would not be exact or whose model has no checkpoint."""
    if source_kind not in EXPORTABLE_SOURCES:
        raise ConfigError(f"--export-model: {model} is a generated {source_kind} model with no Hugging Face checkpoint to edit: "
                          "export an embedded, hub or local-folder model")
    for n, e in enumerate(edits):
        if e.kind.endswith("feature"):
            raise ConfigError(f"--export-model: edit {n} ({e.kind}) is not a weight edit: it adds a direction to one head's value input "
                              "before that head's norm, which no weight or bias reproduces exactly; leave --export-model out for it")
        if e.kind == "ablate_head" and e.mode == "mean":
            raise ConfigError(f"--export-model: edit {n} (ablate_head, mode mean) is not exact as a weight edit (a mean output needs a "
                              "bias the output projection does not have in every architecture): use mode zero or a scale_head factor")


def load_hf(model: str, source_kind: str):
    """The checkpoint as transformers loads it (fp32), with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source_kind == "embedded":
        from successor_lens.models.embedded import load_embedded_hf

        hf_model, tokenizer = load_embedded_hf(model)
        hf_model.hf_quantizer = None  # transformers dequantised the GGUF to fp32 on load: the folder holds plain fp32 weights
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        return hf_model, tokenizer
    if source_kind == "local":
        from successor_lens.models.local import local_folder

        model = str(local_folder(model))
    return AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(model)


@torch.no_grad()
def apply_weight_edits(hf_model, edits: list[Edit]) -> None:
    cfg = hf_model.config
    layout = OUTPUT_PROJECTIONS.get(cfg.model_type)
    if layout is None:
        raise UserError(f"--export-model: architecture {cfg.model_type!r} is not one this exporter knows "
                        f"({', '.join(OUTPUT_PROJECTIONS)}): leave --export-model out")
    path, axis = layout
    n_heads = cfg.num_attention_heads if hasattr(cfg, "num_attention_heads") else cfg.n_head
    for e in edits:
        weight = hf_model.get_submodule(path.format(layer=e.layer)).weight
        d_in = weight.shape[0] if axis == "rows" else weight.shape[1]
        d_head = getattr(cfg, "head_dim", None) or d_in // n_heads
        part = slice(e.head * d_head, (e.head + 1) * d_head)
        factor = e.factor if e.kind == "scale_head" else 0.0
        if axis == "rows":
            weight[part, :] *= factor
        else:
            weight[:, part] *= factor


def export_model(model: str, source_kind: str, edits: list[Edit], spec_name: str, dest: Path) -> list[Path]:
    """Write the edited checkpoint into `dest` (a folder `runner.folders` has claimed for it): the
    old export's record goes first, every file is moved in whole, the record (files and their
    sha256, the edits, the source) last."""
    hf_model, tokenizer = load_hf(model, source_kind)
    apply_weight_edits(hf_model, edits)
    record = dest / EXPORT_JSON
    before = read_json(record, "export record", dict, UserError) if record.is_file() else {}
    old, old_sha = before.get("files", []), before.get("sha256", {})
    record.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".export{TMP_TAG}", dir=dest) as tmp:  # a killed export's is removed by the next (remove_leftovers)
        hf_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        names = sorted(p.name for p in Path(tmp).iterdir() if p.is_file())
        share(Path(tmp))  # permissions by the umask, as every artefact (save_pretrained writes some 0600)
        for name in names:
            os.replace(Path(tmp) / name, dest / name)
    for name in old if isinstance(old, list) and isinstance(old_sha, dict) else []:
        # files of the previous export that this one no longer writes: only a plain name in the folder, still holding
        # the bytes our record hashed (so a file someone put or changed there since is never ours to remove)
        path = dest / name if isinstance(name, str) and name and "/" not in name and not name.startswith(".") else None
        if name not in names and path is not None and path.is_file() and old_sha.get(name) == file_sha256([path]):
            path.unlink()
    written = [dest / n for n in names]
    write_json(record, {"provenance": provenance(source=model, source_kind=source_kind), "spec": spec_name,
                        "edits": [e.__dict__ for e in edits], "edits_digest": digest([e.__dict__ for e in edits]), "files": names,
                        "sha256": {n: file_sha256([dest / n]) for n in names}})
    return [record, *written]
