"""The atlas JSON schema (JSON Schema 2020-12), versioned with `SCHEMA_VERSION`.

Version rule: a new optional field bumps the minor number; a removed or retyped field bumps the
major number, and `load_atlas` refuses a major version it does not know. Latent records reuse the
Neuronpedia / SAEDashboard feature-JSON names where the meaning is the same; the fields specific to
this package (`mod10_class`, `class_profile`, `decoder_neighbours`, `logit_head`, ...) are
documented in their `description`.
"""

from __future__ import annotations

import os
from pathlib import Path

from successor_lens.artifacts.atlas import SCHEMA_VERSION
from successor_lens.errors import UserError
from successor_lens.io import read_json

_num = {"type": "number"}
_nums = {"type": "array", "items": _num}
_strs = {"type": "array", "items": {"type": "string"}}
_nullable_num = {"type": ["number", "null"]}

LATENT = {
    "type": "object",
    "required": ["modelId", "layer", "index", "hook_name", "activations", "frac_nonzero", "maxActApprox",
                 "freq_hist_data_bar_heights", "freq_hist_data_bar_values", "pos_str", "pos_values", "neg_str", "neg_values",
                 "decoder_neighbours", "mod10_class", "best_class", "selectivity", "class_profile", "logit_head", "page", "image"],
    "properties": {
        "modelId": {"type": "string", "description": "model name (Neuronpedia modelId)"},
        "layer": {"type": "string", "description": "dictionary id within the atlas (Neuronpedia's SAE id slot)"},
        "index": {"type": "integer", "minimum": 0},
        "hook_name": {"type": "string"},
        "activations": {"type": "array", "description": "top activating items, each a one-token context (vocabulary-level activations)",
                        "items": {"type": "object", "required": ["tokens", "values", "maxValue", "maxValueTokenIndex", "task", "item_index"],
                                  "properties": {"tokens": _strs, "values": _nums, "maxValue": _num, "maxValueTokenIndex": {"type": "integer"},
                                                 "task": {"type": "string"}, "item_index": {"type": "integer"}}}},
        "frac_nonzero": {"type": "number", "minimum": 0, "maximum": 1, "description": "share of the succession items it fires on"},
        "maxActApprox": _num,
        "freq_hist_data_bar_heights": _nums, "freq_hist_data_bar_values": _nums,
        "pos_str": _strs, "pos_values": _nums, "neg_str": _strs, "neg_values": _nums,
        "decoder_neighbours": {"type": "object", "required": ["indices", "cosines"],
                               "properties": {"indices": {"type": "array", "items": {"type": "integer"}}, "cosines": _nums}},
        "mod10_class": {"type": ["integer", "null"], "minimum": 0, "maximum": 9, "description": "class assigned by mining, null if none"},
        "best_class": {"type": "integer"}, "selectivity": _num,
        "class_profile": {"type": "array", "items": _num, "minItems": 10, "maxItems": 10},
        "logit_head": {"type": ["string", "null"], "description": "head the pos/neg logit effects go through (L{layer}H{head})"},
        "page": {"type": "string"}, "image": {"type": "string"},
    },
}

HEAD_PAGE = {
    "type": "object",
    "required": ["head", "layer", "head_index", "succession", "copying", "per_task", "ov_map", "offset_profile", "page", "image"],
    "properties": {
        "head": {"type": "string", "pattern": "^L[0-9]+H[0-9]+$"},
        "layer": {"type": "integer"}, "head_index": {"type": "integer"}, "succession": _num, "copying": _num,
        "per_task": {"type": "object", "additionalProperties": _num},
        "ov_map": {"type": "object", "additionalProperties": {"type": "array", "items": {
            "type": "object", "required": ["input", "successor", "top_in_task", "correct", "top_vocab"],
            "properties": {"input": {"type": "string"}, "successor": {"type": ["string", "null"]}, "top_in_task": {"type": "string"},
                           "correct": {"type": "boolean"}, "top_vocab": _strs}}}},
        "offset_profile": {"type": "object", "additionalProperties": _num},
        "page": {"type": "string"}, "image": {"type": "string"},
    },
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"successor-lens/atlas/{SCHEMA_VERSION}",
    "title": "successor-lens feature atlas",
    "type": "object",
    "required": ["schema_version", "provenance", "model", "logit_head", "heads", "saes", "mining", "probes", "paper"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "provenance": {"type": "object", "required": ["package", "version", "model", "weight_processing"]},
        "model": {"type": "object", "required": ["name", "n_layers", "n_heads", "d_model"]},
        "logit_head": {"type": ["string", "null"]},
        "heads": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["config", "successor_bar", "best_head", "passes_bar", "top_heads", "succession", "copying", "pages"],
            "properties": {"succession": {"type": "array", "items": _nums}, "copying": {"type": "array", "items": _nums},
                           "null": {"type": ["number", "null"], "description": "since 1.4: the scores' chance level (each task's, "
                                    "weighted by its pairs), marked on the heatmaps"},
                           "chance": {"type": "object", "additionalProperties": _num,
                                      "description": "since 1.6: each task's chance level, beside its score on the head pages"},
                           "above_chance": {"type": "array", "items": {"type": "string"}, "description": "since 1.6: the heads whose "
                                            "succession score is above chance (the summary's binomial test, Bonferroni over every head)"},
                           "pages": {"type": "array", "items": HEAD_PAGE}, "passes_bar": {"type": "boolean"}}}]},
        "saes": {"type": "array", "items": {
            "type": "object", "required": ["id", "source", "hook_name", "architecture", "d_in", "d_sae", "metrics", "mining", "classes", "latents", "image"],
            "properties": {"id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}, "d_sae": {"type": "integer"},
                           "metrics": {"type": ["object", "null"], "description": "training-time fit; since 1.4 `trained_on` "
                                       "({data, corpus}): what the dictionary was trained on"}, "mining": {"type": ["object", "null"]},
                           "classes": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}},
                           "latents": {"type": "array", "items": LATENT},
                           "export": {"description": "since 1.3: the Neuronpedia / SAEDashboard export of every latent (`export.py`) and "
                                      "its every-latent index pages", "type": "object",
                                      "required": ["folder", "files", "model_id", "model_id_known_to_transformer_lens", "dataset",
                                                   "n_prompts_total", "n_tokens_in_prompt", "latents", "live", "pages"],
                                      "properties": {"folder": {"type": "string"}, "files": _strs, "model_id": {"type": "string"},
                                                     "model_id_known_to_transformer_lens": {"type": "boolean"}, "dataset": {"type": "string"},
                                                     "latents": {"type": "integer"}, "live": {"type": "integer"}, "pages": _strs}}}}},
        "mining": {"type": ["object", "null"]},
        "probes": {"type": ["object", "null"]},
        "paper": {"type": "object"},
        "edits": {"type": "array", "description": "since 1.1: KPI tables of `successor-lens edit` runs in this folder", "items": {
            "type": "object", "required": ["name", "spec", "kpis"],
            "properties": {"name": {"type": "string"}, "spec": {"type": "object"}, "kpis": {"type": "array", "items": {
                "type": "object", "required": ["metric", "before", "after", "delta"],
                "properties": {"metric": {"type": "string"}, "before": _num, "after": _num, "delta": _num}}}}}},
        "tunes": {"type": "array", "description": "since 1.5: `successor-lens tune` decisions in this folder (tune/GOAL/tune.json): the "
                  "recommended edit, its held-out KPIs with intervals, the null search's and the chart's points", "items": {
                      "type": "object", "required": ["goal", "chosen", "held_out", "points", "page", "image"],
                      "properties": {"goal": {"type": "string"}, "page": {"type": "string"}, "image": {"type": "string"}}}},
        "wild": {"type": ["object", "null"], "description": "since 1.1: `successor-lens wild` results (heads, in_context)"},
        "roles": {"type": ["object", "null"], "description": "since 1.3: `successor-lens roles` results: every head's roles with their "
                  "nulls, the activation patching on the succession prompts and the heads that carry it"},
        "summary": {"type": ["object", "null"], "description": "since 1.2: summary.json of the run: headline figures with their nulls, "
                    "the paper's figures, `above_null` per figure and the summary `lines`", "properties": {
                        "lines": _strs, "above_null": {"type": "object", "additionalProperties": {"type": "boolean"}}}},
    },
}


class AtlasFormatError(UserError, ValueError):
    pass


def load_atlas(path: str | os.PathLike) -> dict:
    """Read an atlas.json back; refuses a schema major version this package does not know."""
    path = Path(path)
    fix = "rebuild it (`successor-lens run --force atlas`, or `successor-lens atlas`)"
    data = read_json(path, "atlas JSON", dict, AtlasFormatError, fix)
    version = str(data.get("schema_version", ""))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise AtlasFormatError(f"{path}: atlas schema version {version!r}, this package reads {SCHEMA_VERSION}: rebuild it or upgrade")
    saes = data.get("saes")
    if not isinstance(saes, list) or not isinstance(data.get("model"), dict) or not isinstance(data.get("summary", {}), (dict, type(None))):
        raise AtlasFormatError(f"{path}: not an atlas (no saes list or model): {fix}")
    for sae in saes:  # sizes that drive allocations when the atlas is re-rendered
        d_sae = sae.get("d_sae") if isinstance(sae, dict) else None
        latents = sae.get("latents") if isinstance(sae, dict) else None
        if not (isinstance(d_sae, int) and 1 <= d_sae <= MAX_D_SAE and isinstance(latents, list)
                and all(isinstance(r, dict) and isinstance(r.get("index"), int) and 0 <= r["index"] < d_sae for r in latents)):
            raise AtlasFormatError(f"{path}: a dictionary's d_sae or latent indexes are out of range (d_sae at most {MAX_D_SAE}): {fix}")
    return data


MAX_D_SAE = 1 << 20
"""The widest dictionary an atlas describes (a re-render allocates d_sae x 10)."""
