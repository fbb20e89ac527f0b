"""The Neuronpedia / SAEDashboard export: every latent of a dictionary, in the files their importers read.

One folder per dictionary, laid out as sae-dashboard's `NeuronpediaRunner` writes it:

    neuronpedia/<sae id>/batch-<k>.json        a `NeuronpediaDashboardBatch` (sae-dashboard 0.8.0):
                                                model_id, layer, sae_set, sae_id_suffix, features
    neuronpedia/<sae id>/skipped_indexes.json  latents left out (none: dead ones are exported with
                                                frac_nonzero 0 and no activations)
    neuronpedia/<sae id>/run_settings.json     how it was made: corpus, windows, provenance, metrics
    neuronpedia/<sae id>/extras-<k>.json       what the importer has no field for, by feature_index:
                                                logits through the analysed head's OV circuit, the
                                                mod-10 class; kept out of the batch files because
                                                the importer's classes refuse unknown keys

Each feature carries the fields of `NeuronpediaDashboardFeature`, computed as SAEDashboard does:
top activations as token windows from the corpus with a value per token, the decoder direction's
direct-path logits (W_dec @ W_U) with their histogram, the activation histogram and density over
the corpus tokens, neuron alignment (largest decoder entries) and the neurons and latents whose
activations correlate most with it. Numbers are rounded to 3 decimals, as its converter does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from successor_lens.corpus import WINDOW_RULE
from successor_lens.errors import UserError
from successor_lens.filenames import NEURONPEDIA, RUN_SETTINGS, SKIPPED
from successor_lens.io import inside, read_json, write_json
from successor_lens.models.provenance import model_id, model_provenance, prepended_bos
from successor_lens.probes.circuit import direction_logits
from successor_lens.probes.head_id import parse_head_name
from successor_lens.sites import hook_activations, hook_layer

CORRELATED = 3
"""Rows in the neuron-alignment and correlation tables (SAEDashboard's FeatureTablesConfig n_rows=3)."""


def _r(values) -> list[float]:
    return [round(float(v), 3) for v in (values.tolist() if isinstance(values, Tensor) else values)]


@dataclass
class CorpusActivations:
    """A dictionary's latents over corpus windows, kept sparse: the non-zero (token, latent, value)
    triples, token positions flat over the windows. BOS positions are left out, as SAEDashboard
    ignores BOS/EOS/pad tokens."""

    windows: Tensor
    """[n, ctx] token ids."""
    token: Tensor
    latent: Tensor
    value: Tensor
    valid: Tensor
    """[n * ctx] bool: the positions counted (not BOS)."""
    inputs: Tensor
    """[valid tokens, d_in] the hook's activations at the counted positions (for neuron correlations)."""

    @property
    def n_tokens(self) -> int:
        return int(self.valid.sum())


@torch.no_grad()
def window_inputs(model: HookedTransformer, windows: Tensor, hook: str, batch: int = 16) -> Tensor:
    """[n * ctx, d] the hook's activations over the windows: one forward pass per batch, shared by
    every dictionary on that hook."""
    return torch.cat([hook_activations(model, windows[s : s + batch], hook).flatten(0, 1).flatten(1).float().cpu()
                      for s in range(0, len(windows), batch)])


@torch.no_grad()
def latent_activations(model: HookedTransformer, sae, windows: Tensor, inputs: Tensor, batch: int = 4096) -> CorpusActivations:
    """The dictionary's latents on `inputs` (`window_inputs`), kept sparse, BOS positions left out."""
    device = next(sae.parameters()).device
    bos = prepended_bos(model)
    valid = (windows != bos).reshape(-1) if bos is not None else torch.ones(windows.numel(), dtype=torch.bool)
    tokens, latents, values = [], [], []
    for start in range(0, len(inputs), batch):
        keep = valid[start : start + batch]
        f = sae.encode(inputs[start : start + batch].to(device)).float().cpu() * keep[:, None]
        row, col = f.nonzero(as_tuple=True)
        tokens.append(row + start)
        latents.append(col)
        values.append(f[row, col])
    return CorpusActivations(windows, torch.cat(tokens), torch.cat(latents), torch.cat(values), valid, inputs[valid])


def _top_correlated(pairs: Tensor, score: Tensor, other: Tensor, n_rows: int, k: int, exclude_self: bool = False) -> list[tuple[Tensor, Tensor]]:
    """Per row of a sparse set of (row, col, score, other) entries: the `k` best cols by score, with their other value."""
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(pairs[0][order], stable=True)]
    rows, cols, score, other = pairs[0][order], pairs[1][order], score[order], other[order]
    if exclude_self:
        keep = rows != cols
        rows, cols, score, other = rows[keep], cols[keep], score[keep], other[keep]
    bounds = torch.searchsorted(rows, torch.arange(n_rows + 1))
    return [(cols[a : min(b, a + k)], torch.stack([score[a : min(b, a + k)], other[a : min(b, a + k)]]))
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]


def _histograms(values_KV: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Row-wise histograms with `bins` equal bins between each row's min and max: (heights, bin centres)."""
    lo, hi = values_KV.min(-1, keepdim=True).values, values_KV.max(-1, keepdim=True).values
    width = (hi - lo).clamp_min(1e-12) / bins
    index = ((values_KV - lo) / width).long().clamp(0, bins - 1)
    heights = torch.zeros(len(values_KV), bins).scatter_add_(1, index, torch.ones_like(values_KV))
    centres = lo + width * (torch.arange(bins) + 0.5)
    return heights, centres


def feature_records(model: HookedTransformer, sae, acts: CorpusActivations, cfg, logit_head: str | None,
                    token_text: list[str], latent_class: dict[int, int]) -> tuple[list[dict], list[dict]]:
    """(features, extras) for every latent: the `NeuronpediaDashboardFeature` dicts and our extra fields."""
    F = sae.cfg.d_sae
    n_win, ctx = acts.windows.shape
    W_dec = sae.W_dec.detach().float().cpu()
    T = acts.n_tokens

    # density, histograms and top contexts from the non-zeros, grouped by latent (largest first)
    order = torch.argsort(acts.value, descending=True, stable=True)
    order = order[torch.argsort(acts.latent[order], stable=True)]
    tok, lat, val = acts.token[order], acts.latent[order], acts.value[order]
    bounds = torch.searchsorted(lat, torch.arange(F + 1)).tolist()

    # correlations over the counted tokens: sparse latents x (dense neurons, sparse latents)
    where = torch.cumsum(acts.valid.long(), 0) - 1  # flat position -> row of acts.inputs
    S = torch.sparse_coo_tensor(torch.stack([lat, where[tok]]), val, (F, T), check_invariants=True).coalesce()
    f_mean = torch.zeros(F).index_add_(0, lat, val) / T
    f_sq = torch.zeros(F).index_add_(0, lat, val * val)
    f_std = (f_sq / T - f_mean**2).clamp_min(0).sqrt()
    X = acts.inputs
    x_mean, x_std, x_norm = X.mean(0), X.std(0, unbiased=False), X.norm(dim=0)
    FX = torch.sparse.mm(S, X)  # [F, d] sum of f * x
    neuron_pearson = (FX / T - f_mean[:, None] * x_mean) / (f_std[:, None] * x_std).clamp_min(1e-12)
    neuron_cos = FX / (f_sq.sqrt()[:, None] * x_norm).clamp_min(1e-12)
    neuron_top = neuron_pearson.topk(min(CORRELATED, X.shape[1]), dim=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        FF = torch.sparse.mm(S, S.t()).coalesce()  # co-activation sums, only for latents that fire together
    (r, c), g = FF.indices(), FF.values()
    pearson = (g / T - f_mean[r] * f_mean[c]) / (f_std[r] * f_std[c]).clamp_min(1e-12)
    cosine = g / (f_sq[r].sqrt() * f_sq[c].sqrt()).clamp_min(1e-12)
    feature_top = _top_correlated(torch.stack([r, c]), pearson, cosine, F, CORRELATED, exclude_self=True)

    unit_l1 = W_dec.abs().sum(-1).clamp_min(1e-12)
    align = W_dec.abs().topk(min(CORRELATED, W_dec.shape[1]), dim=1).indices

    features, extras = [], []
    head = parse_head_name(logit_head) if logit_head else None
    for start in range(0, F, 256):
        block = W_dec[start : start + 256]
        direct = (block.to(model.W_U.device, model.W_U.dtype) @ model.W_U).float().cpu()
        pos, neg = direct.topk(cfg.logit_tokens, dim=1), (-direct).topk(cfg.logit_tokens, dim=1)
        hist_h, hist_c = _histograms(direct, cfg.hist_bins)
        through = direction_logits(model, head[0], head[1], block).float() if head else None
        for n in range(len(block)):
            l = start + n
            a, b = bounds[l], bounds[l + 1]
            values = val[a:b]
            windows = _top_windows(tok[a:b], ctx, cfg.top_contexts)
            by_pos = dict(zip(tok[a:b].tolist(), values.tolist()))
            act_heights, act_centres = (torch.histogram(values, bins=cfg.hist_bins) if len(values) else (torch.zeros(0), torch.zeros(1)))
            act_centres = (act_centres[1:] + act_centres[:-1]) / 2 if len(values) else torch.zeros(0)
            ncols, nvals = neuron_top.indices[l], neuron_top.values[l]
            fcols, fvals = feature_top[l]
            features.append({
                "feature_index": l,
                "neuron_alignment_indices": align[l].tolist(),
                "neuron_alignment_values": _r(W_dec[l, align[l]]),
                "neuron_alignment_l1": _r(W_dec[l, align[l]] / unit_l1[l]),
                "correlated_neurons_indices": ncols.tolist() if len(values) else [],
                "correlated_neurons_l1": _r(neuron_cos[l, ncols]) if len(values) else [],
                "correlated_neurons_pearson": _r(nvals) if len(values) else [],
                "correlated_features_indices": fcols.tolist(),
                "correlated_features_l1": _r(fvals[1]),
                "correlated_features_pearson": _r(fvals[0]),
                "neg_str": [token_text[t] for t in neg.indices[n].tolist()], "neg_values": _r(-neg.values[n]),
                "pos_str": [token_text[t] for t in pos.indices[n].tolist()], "pos_values": _r(pos.values[n]),
                "frac_nonzero": round(len(values) / max(T, 1), 6),
                "freq_hist_data_bar_values": _r(act_centres), "freq_hist_data_bar_heights": _r(act_heights),
                "logits_hist_data_bar_heights": _r(hist_h[n]), "logits_hist_data_bar_values": _r(hist_c[n]),
                "n_prompts_total": n_win, "n_tokens_in_prompt": ctx, "dataset": cfg.corpus or "",
                "activations": [_context(acts.windows, p, by_pos, token_text, cfg) for p in windows],
                "decoder_weights_dist": [],
                "vector": [],
            })
            extra: dict[str, Any] = {"feature_index": l, "mod10_class": latent_class.get(l), "max_activation": round(float(values[0]), 3) if len(values) else 0.0}
            if through is not None:
                tp, tn = through[n].topk(cfg.logit_tokens), (-through[n]).topk(cfg.logit_tokens)
                extra["head_ov"] = {"head": logit_head, "pos_str": [token_text[t] for t in tp.indices.tolist()], "pos_values": _r(tp.values),
                                    "neg_str": [token_text[t] for t in tn.indices.tolist()], "neg_values": _r(-tn.values)}
            extras.append(extra)
    return features, extras


def _top_windows(positions: Tensor, ctx: int, k: int) -> list[int]:
    """The flat positions of the `k` largest activations (positions come largest first), one per window."""
    seen, chosen = set(), []
    for p in positions.tolist():
        if p // ctx not in seen:
            seen.add(p // ctx)
            chosen.append(p)
            if len(chosen) == k:
                break
    return chosen


def _context(windows: Tensor, flat: int, by_pos: dict[int, float], token_text: list[str], cfg) -> dict:
    """One top activation as Neuronpedia shows it: the tokens around the qualifying one with the latent's value at each."""
    ctx = windows.shape[1]
    w, p = divmod(flat, ctx)
    lo, hi = max(0, p - cfg.context_before), min(ctx, p + cfg.context_after + 1)
    values = [by_pos.get(w * ctx + i, 0.0) for i in range(lo, hi)]
    return {"bin_min": -1, "bin_max": round(by_pos[flat], 3), "bin_contains": -1,
            "tokens": [token_text[t] for t in windows[w, lo:hi].tolist()], "values": _r(values), "qualifying_token_index": p - lo}


def vocabulary_text(model: HookedTransformer) -> list[str]:
    """Each token id decoded alone (the strings the export and the pages show)."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise UserError(f"{model.cfg.model_name} has no tokenizer: the export shows tokens as text")
    return [str(tokenizer.decode([i])) for i in range(model.cfg.d_vocab)]


def export_dictionary(model: HookedTransformer, entry, windows: Tensor, cfg, logit_head: str | None, token_text: list[str],
                      batch: int = 128, inputs: Tensor | None = None) -> dict:
    """The export of one dictionary as {file name: JSON document} (written by `write_export`);
    `inputs`: the hook's `window_inputs`, when another dictionary on the hook already ran them."""
    sae = entry.sae
    hook = sae.cfg.metadata.hook_name
    acts = latent_activations(model, sae, windows, window_inputs(model, windows, hook) if inputs is None else inputs)
    features, extras = feature_records(model, sae, acts, cfg, logit_head, token_text, entry.latent_class)
    mid, known = model_id(model)
    files = {}
    for k, start in enumerate(range(0, len(features), batch)):
        files[f"batch-{k}.json"] = {"model_id": mid, "layer": hook_layer(hook) or 0, "sae_set": f"successor-lens-{entry.id}",
                                    "sae_id_suffix": None, "features": features[start : start + batch]}
        files[f"extras-{k}.json"] = {"features": extras[start : start + batch]}
    files[SKIPPED] = {"model_id": mid, "layer": str(hook_layer(hook) or 0), "sae_set": f"successor-lens-{entry.id}",
                                     "log_sparsity": None, "skipped_indexes": []}
    files[RUN_SETTINGS] = {
        "model_id": mid, "model_id_known_to_transformer_lens": known, "hook_name": hook, "layer": hook_layer(hook) or 0,
        "sae_set": f"successor-lens-{entry.id}", "dictionary": entry.source, "architecture": sae.cfg.architecture(),
        "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae, "dataset": cfg.corpus, "n_prompts_total": len(windows),
        "n_tokens_in_prompt": windows.shape[1], "window_rule": WINDOW_RULE, "tokens_counted": acts.n_tokens, "ignored": "BOS positions",
        "n_features_at_a_time": batch, "batches": len(range(0, len(features), batch)), "logit_head": logit_head,
        "metrics": entry.metrics, "provenance": model_provenance(model),
    }
    return files


def write_export(files: dict[str, dict], folder: Path) -> list[Path]:
    return [write_json(inside(folder, name, "export file"), doc) for name, doc in files.items()]


def read_export(folder: Path) -> dict[str, dict]:
    """An export folder read back: {file name: document}."""
    fix = "rebuild the atlas (`successor-lens run --force atlas`)"
    return {p.name: read_json(p, "Neuronpedia export file", dict, UserError, fix) for p in sorted(folder.glob("*.json"))}


def export_features(files: dict[str, dict]) -> list[tuple[dict, dict]]:
    """(feature, extras) pairs of every latent, by feature_index, from an export read back."""
    batches = sorted((int(n[6:-5]), n) for n in files if n.startswith("batch-"))
    pairs = []
    for k, name in batches:
        extras = files[f"extras-{k}.json"]["features"]
        pairs += list(zip(files[name]["features"], extras))
    return pairs


def build_exports(model: HookedTransformer, entries: list, cfg, logit_head: str | None, tasks=None, seed: int = 0,
                  progress: bool = True) -> dict[str, dict[str, dict]]:
    """The export of every dictionary, {sae id: files}, all measured on the same corpus windows."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from successor_lens.corpus import context_corpus, corpus_windows

    cfg = replace(cfg, corpus=context_corpus(cfg.corpus))
    windows = corpus_windows(model, cfg.corpus, cfg.contexts, min(cfg.context_tokens, model.cfg.n_ctx), seed, tasks)
    text = vocabulary_text(model)
    inputs: dict[str, Tensor] = {}  # one forward pass over the windows per hook, not per dictionary
    files = {}
    for e in tqdm(entries, desc="export", unit="dictionary", leave=False, disable=not progress):
        hook = e.sae.cfg.metadata.hook_name
        if hook not in inputs:
            inputs[hook] = window_inputs(model, windows, hook)
        files[e.id] = export_dictionary(model, e, windows, cfg, logit_head, text, cfg.export_batch, inputs[hook])
    return files


def export_summary(sae_id: str, files: dict[str, dict], per_page: int) -> dict:
    """What atlas.json records of a dictionary's export: where it is and what it holds."""
    settings = files[RUN_SETTINGS]
    pairs = export_features(files)
    pages = -(-len(pairs) // per_page)
    return {"folder": f"{NEURONPEDIA}/{sae_id}", "files": sorted(files), "model_id": settings["model_id"],
            "model_id_known_to_transformer_lens": settings["model_id_known_to_transformer_lens"], "dataset": settings["dataset"],
            "n_prompts_total": settings["n_prompts_total"], "n_tokens_in_prompt": settings["n_tokens_in_prompt"],
            "latents": len(pairs), "live": sum(1 for f, _ in pairs if f["frac_nonzero"] > 0),
            "pages": [f"latents/{sae_id}/all-{k}.html" for k in range(pages)]}
