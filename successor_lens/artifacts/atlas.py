"""The feature atlas as data: head records, SAE latent records, classes, probes, in one JSON document.

`collect` gathers everything the site shows; `atlas_site.write_atlas` only formats it, so the JSON
export and the pages never disagree. Latent records use Neuronpedia / SAEDashboard feature-JSON
field names where the fields overlap (`index`, `activations`, `frac_nonzero`, `pos_str`,
`pos_values`, `neg_str`, `neg_values`, `freq_hist_data_bar_heights`, `freq_hist_data_bar_values`);
the schema is in `atlas_schema.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from transformer_lens import HookedTransformer

from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.artifacts.records import HeadsRecord
from successor_lens.artifacts.summary import heads_above_chance
from successor_lens.features.matrix import ItemTable, class_profiles, latent_matrix, selectivity
from successor_lens.features.mine_run import item_acts, item_table
from successor_lens.io import provenance
from successor_lens.models.provenance import model_provenance
from successor_lens.paper import ARITHMETIC, FIGURES, SUCCESSOR_BAR
from successor_lens.probes.arithmetic import offset_profile
from successor_lens.probes.circuit import OVCircuit, direction_logits, effective_embeddings, head_token_logits
from successor_lens.probes.head_id import parse_head_name
from successor_lens.probes.scan import chance_null
from successor_lens.tasks import Task, TokenSet, build_token_set, same_task

SCHEMA_VERSION = "1.6"


@dataclass
class SAEEntry:
    """One dictionary to show: its weights and what mining found in it."""

    id: str
    sae: Any
    source: str
    latent_class: dict[int, int] = field(default_factory=dict)
    metrics: dict | None = None
    mined: dict | None = None
    """The dictionary's mining summary (MinedFeatures.summary()), when it was mined."""


def decode(tokenizer, token: int) -> str:
    return tokenizer.decode([int(token)])


def _heads_matrix(heads_json: Mapping[str, Any], key: str, n_layers: int, n_heads: int) -> list[list[float]]:
    return [[heads_json["heads"][f"L{l}H{h}"][key] for h in range(n_heads)] for l in range(n_layers)]


@dataclass
class ScanItems:
    """The scan's items and their effective embeddings, shared by every head page."""

    token_set: TokenSet
    x: torch.Tensor
    """[layers or 1, n, d_model] effective embeddings, as the scan computed them."""
    in_task: torch.Tensor
    """[n, n] bool: same task variant."""

    @staticmethod
    def build(model: HookedTransformer, heads_json: Mapping[str, Any], tasks: list[Task] | None) -> ScanItems:
        scan = heads_json.get("config", {})
        token_set = build_token_set(model.tokenizer, tasks)
        x = effective_embeddings(model, token_set.tokens.to(model.W_E.device), scan.get("embedding", "mlp0"), scan.get("mlp0_norm", True),
                                  scan.get("post_norms", True))
        return ScanItems(token_set, x, same_task([i.task for i in token_set.items]))


def head_record(model: HookedTransformer, heads_json: Mapping[str, Any], name: str, cfg: AtlasConfig, items: ScanItems) -> dict:
    """Per-task scores, the OV input -> output token map and the offset profile of one head."""
    layer, index = parse_head_name(name)
    token_set, tokens = items.token_set, items.token_set.tokens
    acts = items.x[layer if items.x.shape[0] > 1 else 0]
    logits = head_token_logits(model, acts, layer, index)
    task_logits = logits[:, tokens].masked_fill(~items.in_task, float("-inf"))
    succ = dict(token_set.successor_pairs())
    rows_by_task: dict[str, list[dict]] = {}
    for row, item in enumerate(token_set.items):
        shown = rows_by_task.setdefault(item.task, [])
        if len(shown) >= cfg.ov_items:
            continue
        top_row = int(task_logits[row].argmax())
        shown.append({
            "input": item.text,
            "successor": token_set.items[succ[row]].text if row in succ else None,
            "top_in_task": token_set.items[top_row].text,
            "correct": row in succ and top_row == succ[row],
            "top_vocab": [decode(model.tokenizer, t) for t in logits[row].topk(3).indices.tolist()],
        })
    circuit = OVCircuit.from_model(model, layer, index, tokens)
    profile = offset_profile(circuit, acts.cpu(), ItemTable.from_token_set(token_set))
    info = heads_json["heads"][name]
    return {
        "head": name, "layer": layer, "head_index": index, "succession": info["succession"], "copying": info["copying"],
        "per_task": info["per_task"], "ov_map": rows_by_task,
        "offset_profile": {str(k): v for k, v in profile["all"].items()},
        "page": f"heads/{name}.html", "image": f"images/offset_{name}.png",
    }


def _choose_latents(entry: SAEEntry, acts_FN: torch.Tensor, share: torch.Tensor, k: int) -> list[int]:
    """Every latent when there are at most `k`; else the class members (most selective first), then
    the most active. In index order (the pages' previous / next)."""
    if len(acts_FN) <= k:
        return list(range(len(acts_FN)))
    members = sorted(entry.latent_class, key=lambda l: (-float(share[l]), l))[:k]
    taken = set(members)
    rest = [l for l in (acts_FN > 0).float().mean(-1).argsort(descending=True).tolist() if l not in taken]
    return sorted(members + rest[: max(0, k - len(members))])


def _neighbours(W_dec: torch.Tensor, chosen: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` decoder directions nearest (cosine) to each chosen latent's, itself left out, in blocks."""
    unit = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = min(k, len(unit) - 1)
    values, indices = [], []
    for start in range(0, len(chosen), 1024):
        rows = torch.tensor(chosen[start : start + 1024], dtype=torch.long)
        cos = unit[rows] @ unit.T
        cos[torch.arange(len(rows)), rows] = -2.0
        near = cos.topk(k, dim=1)
        values.append(near.values)
        indices.append(near.indices)
    return torch.cat(values), torch.cat(indices)


def latent_records(model: HookedTransformer, entry: SAEEntry, table: ItemTable, acts_ND: torch.Tensor, logit_head: str | None,
                   cfg: AtlasConfig) -> list[dict]:
    """Neuronpedia-shaped records for the latents of interest of one dictionary (`acts_ND`: the items at its hook)."""
    sae = entry.sae
    hook = sae.cfg.metadata.hook_name
    acts_FN = latent_matrix(sae, acts_ND)
    keep = ~table.held_out
    profiles = class_profiles(acts_FN[:, keep], table.residues[keep])
    share, best = selectivity(profiles)
    W_dec = sae.W_dec.detach().float().cpu()
    chosen = _choose_latents(entry, acts_FN, share, cfg.latents)
    near_values, near_indices = _neighbours(W_dec, chosen, cfg.neighbours)
    records = []
    for n, l in enumerate(chosen):
        if logit_head and n % 256 == 0:  # the logits through the head, a block of latents at a time
            layer, index = parse_head_name(logit_head)
            effects = direction_logits(model, layer, index, W_dec[chosen[n : n + 256]])
        values = acts_FN[l]
        top = values.topk(min(cfg.top_tokens, len(values)))
        examples = [(int(i), float(v)) for v, i in zip(top.values, top.indices) if v > 0]
        nonzero = values[values > 0]
        heights, edges = torch.histogram(nonzero, bins=cfg.hist_bins) if len(nonzero) else (torch.zeros(0), torch.zeros(1))
        record = {
            "modelId": model.cfg.model_name, "layer": entry.id, "index": l, "hook_name": hook,
            "activations": [{"tokens": [table.texts[i]], "values": [v], "maxValue": v, "maxValueTokenIndex": 0,
                             "task": table.tasks[i], "item_index": int(table.indices[i])} for i, v in examples],
            "frac_nonzero": float((values > 0).float().mean()),
            "maxActApprox": float(values.max()),
            "freq_hist_data_bar_heights": heights.tolist(),
            "freq_hist_data_bar_values": ((edges[1:] + edges[:-1]) / 2).tolist(),
            "decoder_neighbours": {"indices": near_indices[n].tolist(), "cosines": near_values[n].tolist()},
            "mod10_class": entry.latent_class.get(l),
            "best_class": int(best[l]), "selectivity": float(share[l]),
            "class_profile": profiles[l].tolist(),
            "logit_head": logit_head if logit_head and chosen else None,
            "page": f"latents/{entry.id}/{l}.html", "image": f"images/hist_{entry.id}_{l}.svg",
        }
        if record["logit_head"]:
            pos, neg = effects[n % 256].topk(cfg.logit_tokens), (-effects[n % 256]).topk(cfg.logit_tokens)
            record.update(pos_str=[decode(model.tokenizer, t) for t in pos.indices.tolist()], pos_values=pos.values.tolist(),
                          neg_str=[decode(model.tokenizer, t) for t in neg.indices.tolist()], neg_values=(-neg.values).tolist())
        else:
            record.update(pos_str=[], pos_values=[], neg_str=[], neg_values=[])
        records.append(record)
    return records


def collect(
    model: HookedTransformer, saes: list[SAEEntry], heads_json: Mapping[str, Any] | None = None, probe_json: Mapping[str, Any] | None = None,
    mine_json: Mapping[str, Any] | None = None, cfg: AtlasConfig | None = None, tasks: list[Task] | None = None,
    scan_tasks: list[Task] | None = None, logit_head: str | None = None, run_config: dict | None = None,
    acts_by_hook: dict[str, torch.Tensor] | None = None, run_folder: Path | None = None,
) -> dict:
    """Everything the atlas shows, as one JSON-able document (see atlas_schema.py)."""
    cfg = cfg or AtlasConfig()
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    heads = None
    if heads_json is not None:
        logit_head = logit_head or heads_json["best_head"]
        ranked = [t["head"] for t in heads_json["top_heads"]][: cfg.heads]
        items = ScanItems.build(model, heads_json, scan_tasks)
        names = list(dict.fromkeys(ranked + [logit_head]))
        heads = {
            "config": heads_json["config"], "successor_bar": SUCCESSOR_BAR, "best_head": heads_json["best_head"],
            "passes_bar": heads_json["passes_bar"], "top_heads": heads_json["top_heads"], "null": chance_null(heads_json),
            "chance": heads_json["chance"], "above_chance": heads_above_chance(cast(HeadsRecord, heads_json)),
            "succession": _heads_matrix(heads_json, "succession", n_layers, n_heads),
            "copying": _heads_matrix(heads_json, "copying", n_layers, n_heads),
            "pages": [head_record(model, heads_json, name, cfg, items) for name in names],
        }
    table = item_table(model, tasks)
    acts_by_hook = dict(acts_by_hook or {})  # item activations per hook: several dictionaries share one
    dictionaries = []
    for entry in saes:
        cfg_sae = entry.sae.cfg
        hook = cfg_sae.metadata.hook_name
        if hook not in acts_by_hook:
            acts_by_hook[hook] = item_acts(model, table, hook, run_folder, tasks)
        dictionaries.append({
            "id": entry.id, "source": entry.source, "hook_name": hook,
            "architecture": cfg_sae.architecture(), "d_in": cfg_sae.d_in, "d_sae": cfg_sae.d_sae,
            "metrics": entry.metrics, "mining": entry.mined,
            "classes": {str(c): sorted(l for l, k in entry.latent_class.items() if k == c) for c in range(10)},
            "latents": latent_records(model, entry, table, acts_by_hook[hook], logit_head, cfg),
            "image": f"images/classes_{entry.id}.png",
        })
    return {
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance(**model_provenance(model), run_config=run_config, atlas_config=asdict(cfg)),
        "model": {"name": model.cfg.model_name, "n_layers": n_layers, "n_heads": n_heads, "d_model": model.cfg.d_model},
        "logit_head": logit_head,
        "heads": heads,
        "saes": dictionaries,
        "mining": {k: mine_json[k] for k in ("recurrence", "downstream_features")} if mine_json else None,
        "probes": {k: v for k, v in probe_json.items() if k != "provenance"} if probe_json else None,
        "paper": {**FIGURES, "arithmetic_by_task": ARITHMETIC},
        "edits": [],
        "tunes": [],
        "wild": None,
        "summary": None,
    }
