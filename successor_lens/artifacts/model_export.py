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

import errno
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError

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
    """Write the edited checkpoint into `dest` (a folder `runner.folders` has claimed for it).

    A file is ours to replace or remove only while it holds bytes our record hashed: a file the
    user changed since the last export, or put there under a name the export writes, stops the
    export in one line before anything is replaced. The new files are written whole beside the
    folder first; then the record is rewritten to name both the old and the new bytes of every
    file (`pending`), the files are moved in, stale files of the old export removed, and the final
    record written last: killed at any point, the folder holds only bytes the record names, and a
    rerun finishes the job."""
    record = dest / EXPORT_JSON
    before = read_json(record, "export record", dict, UserError) if record.is_file() else {}
    ours = _recorded(before)
    hf_model, tokenizer = load_hf(model, source_kind)
    apply_weight_edits(hf_model, edits)
    with tempfile.TemporaryDirectory(prefix=f".export{TMP_TAG}", dir=dest) as tmp:  # a killed export's is removed by the next (remove_leftovers)
        try:
            hf_model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        except SafetensorError as err:  # safetensors reports a full disk as its own error type, not an OSError
            if "No space left" in str(err) or "code: 28" in str(err):
                raise OSError(errno.ENOSPC, "No space left on device", str(dest)) from None
            raise
        names = sorted(p.name for p in Path(tmp).iterdir() if p.is_file())
        new_sha = {n: file_sha256([Path(tmp) / n]) for n in names}
        for name in names:
            path = dest / name
            if path.is_symlink() or (path.exists() and (not path.is_file() or file_sha256([path]) not in ours.get(name, set()))):
                raise UserError(f"--export-model {dest}: {name} is not the file the last export wrote there (changed since, or "
                                "someone else's): move it away, or pass another folder")
        share(Path(tmp))  # permissions by the umask, as every artefact (save_pretrained writes some 0600)
        write_json(record, {**before, "pending": {n: sorted(ours.get(n, set()) | {new_sha[n]}) for n in names}})
        for name in names:
            os.replace(Path(tmp) / name, dest / name)
    for name, hashes in ours.items():
        # files of an earlier export that this one no longer writes: removed only while they hold bytes our record hashed
        path = dest / name
        if name not in names and path.is_file() and not path.is_symlink() and file_sha256([path]) in hashes:
            path.unlink()
    written = [dest / n for n in names]
    write_json(record, {"provenance": provenance(source=model, source_kind=source_kind), "spec": spec_name,
                        "edits": [e.__dict__ for e in edits], "edits_digest": digest([e.__dict__ for e in edits]), "files": names,
                        "sha256": new_sha})
    return [record, *written]


def _recorded(record: dict) -> dict[str, set[str]]:
    """Plain file name -> the sha256s an export record says we wrote under it (its files, and a
    killed export's pending ones); a name that is not one plain component is nobody's."""
    out: dict[str, set[str]] = {}
    sha, pending = record.get("sha256"), record.get("pending")
    for name, value in (sha.items() if isinstance(sha, dict) else []):
        out.setdefault(name, set()).add(value)
    for name, values in (pending.items() if isinstance(pending, dict) else []):
        if isinstance(values, list):
            out.setdefault(name, set()).update(v for v in values if isinstance(v, str))
    return {n: {h for h in v if isinstance(h, str) and len(h) == 64} for n, v in out.items()
            if isinstance(n, str) and n and "/" not in n and "\\" not in n and not n.startswith(".")}
