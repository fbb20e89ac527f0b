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

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from successor_lens.artifacts.corpus_stats import CorpusStats, corpus_stats, hook_inputs
from successor_lens.corpus import WINDOW_RULE
from successor_lens.errors import UserError
from successor_lens.filenames import INDEX, NEURONPEDIA, RUN_SETTINGS, SKIPPED
from successor_lens.io import inside, read_json, write_json
from successor_lens.models.provenance import model_id, model_provenance, prepended_bos
from successor_lens.probes.circuit import direction_logits
from successor_lens.probes.head_id import parse_head_name
from successor_lens.progress import honours_progress
from successor_lens.sae_train.spliced import SplicedLoss, spliced_loss, spliced_losses
from successor_lens.sae_train.train_config import SPLICE_WINDOWS
from successor_lens.sites import hook_activations, hook_layer

CORRELATED = 3
"""Rows in the neuron-alignment and correlation tables (SAEDashboard's FeatureTablesConfig n_rows=3)."""


def _r(values) -> list[float]:
    return [round(float(v), 3) for v in (values.tolist() if isinstance(values, Tensor) else values)]


@torch.no_grad()
def window_inputs(model: HookedTransformer, windows: Tensor, hook: str, batch: int = 16) -> Tensor:
    """[n, ctx, d] the hook's activations over `windows`, one forward pass per batch of windows."""
    return torch.cat([hook_activations(model, windows[s : s + batch], hook).float().cpu() for s in range(0, len(windows), batch)])


def _histograms(values_KV: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Row-wise histograms with `bins` equal bins between each row's min and max: (heights, bin centres)."""
    lo, hi = values_KV.min(-1, keepdim=True).values, values_KV.max(-1, keepdim=True).values
    width = (hi - lo).clamp_min(1e-12) / bins
    index = ((values_KV - lo) / width).long().clamp(0, bins - 1)
    heights = torch.zeros(len(values_KV), bins).scatter_add_(1, index, torch.ones_like(values_KV))
    centres = lo + width * (torch.arange(bins) + 0.5)
    return heights, centres


def _correlations(stats: CorpusStats) -> tuple:
    """Per latent: its CORRELATED best input neurons (pearson, cosine) and latents (pearson, cosine), as SAEDashboard's tables."""
    T = max(stats.n_tokens, 1)
    f_mean = (stats.total / T).float()
    f_sq = stats.total_sq.float()
    f_std = (f_sq / T - f_mean**2).clamp_min(0).sqrt()
    x_mean = (stats.x_total / T).float()
    x_std = (stats.x_total_sq.float() / T - x_mean**2).clamp_min(0).sqrt()
    x_norm = stats.x_total_sq.float().sqrt()
    FX = stats.FX.float()
    neuron_pearson = (FX / T - f_mean[:, None] * x_mean) / (f_std[:, None] * x_std).clamp_min(1e-12)
    neuron_cos = FX / (f_sq.sqrt()[:, None] * x_norm).clamp_min(1e-12)
    neuron_top = neuron_pearson.topk(min(CORRELATED, FX.shape[1]), dim=1)
    if stats.FF is None:
        return neuron_top, neuron_cos, None
    FF = stats.FF.clone()
    pearson = (FF / T - f_mean[:, None] * f_mean) / (f_std[:, None] * f_std).clamp_min(1e-12)
    cosine = FF / (f_sq.sqrt()[:, None] * f_sq.sqrt()).clamp_min(1e-12)
    pearson.masked_fill_((FF == 0) | torch.eye(len(FF), dtype=torch.bool), float("-inf"))  # only latents that fire together, never itself
    best = pearson.topk(min(CORRELATED, len(FF) - 1), dim=1) if len(FF) > 1 else None
    return neuron_top, neuron_cos, (best, cosine)


def _unique_top(stats: CorpusStats, latent: int, k: int, before: int, token_text: list[str]) -> list[int]:
    """Slots of the latent's `k` largest activations, one per window and none whose shown text
    repeats an earlier one's (a repeated paragraph shows once)."""
    ctx = stats.windows.shape[1]
    seen_windows, seen_text, chosen = set(), set(), []
    for slot in range(stats.top.filled(latent)):
        p = int(stats.top.pos[latent, slot])
        w, i = divmod(p, ctx)
        ids = stats.windows[w, max(0, i - before) : i + stats.top.around.shape[-1] - before].tolist()
        text = tuple(token_text[t] for t in ids)
        fresh = w not in seen_windows and text not in seen_text
        seen_windows.add(w)  # a window's best activation speaks for it, shown or not
        seen_text.add(text)
        if not fresh:
            continue
        chosen.append(slot)
        if len(chosen) == k:
            break
    return chosen


@torch.no_grad()
def feature_records(model: HookedTransformer, sae, stats: CorpusStats, cfg, logit_head: str | None,
                    token_text: list[str], latent_class: dict[int, int]) -> tuple[list[dict], list[dict]]:
    """(features, extras) for every latent: the `NeuronpediaDashboardFeature` dicts and our extra fields."""
    F = sae.cfg.d_sae
    W_dec = sae.W_dec.detach().float().cpu()
    neuron_top, neuron_cos, latent_corr = _correlations(stats)
    unit_l1 = W_dec.abs().sum(-1).clamp_min(1e-12)
    align = W_dec.abs().topk(min(CORRELATED, W_dec.shape[1]), dim=1).indices
    head = parse_head_name(logit_head) if logit_head else None
    features, extras = [], []
    for start in range(0, F, 256):
        block = W_dec[start : start + 256]
        direct = (block.to(model.W_U.device, model.W_U.dtype) @ model.W_U).float().cpu()
        pos, neg = direct.topk(cfg.logit_tokens, dim=1), (-direct).topk(cfg.logit_tokens, dim=1)
        hist_h, hist_c = _histograms(direct, cfg.hist_bins)
        through = direction_logits(model, head[0], head[1], block).float() if head else None
        for n in range(len(block)):
            l = start + n
            fires = int(stats.count[l])
            act_heights, act_centres = stats.histogram(l, cfg.hist_bins)
            top = [_context(stats, stats.top, l, slot, direct[n], token_text, cfg, (-1, -1)) for slot in _unique_top(stats, l, cfg.top_contexts, cfg.context_before, token_text)]
            groups = _quantile_groups(stats, l, direct[n], token_text, cfg)
            ncols, nvals = neuron_top.indices[l], neuron_top.values[l]
            corr = latent_corr[0] if latent_corr else None
            fkeep = (corr.values[l] > float("-inf")) if corr is not None else torch.zeros(0, dtype=torch.bool)
            fcols = corr.indices[l][fkeep] if corr is not None else torch.zeros(0, dtype=torch.long)
            features.append({
                "feature_index": l,
                "neuron_alignment_indices": align[l].tolist(),
                "neuron_alignment_values": _r(W_dec[l, align[l]]),
                "neuron_alignment_l1": _r(W_dec[l, align[l]] / unit_l1[l]),
                "correlated_neurons_indices": ncols.tolist() if fires else [],
                "correlated_neurons_l1": _r(neuron_cos[l, ncols]) if fires else [],
                "correlated_neurons_pearson": _r(nvals) if fires else [],
                "correlated_features_indices": fcols.tolist(),
                "correlated_features_l1": _r(latent_corr[1][l, fcols]) if latent_corr else [],
                "correlated_features_pearson": _r(corr.values[l][fkeep]) if corr is not None else [],
                "neg_str": [token_text[t] for t in neg.indices[n].tolist()], "neg_values": _r(-neg.values[n]),
                "pos_str": [token_text[t] for t in pos.indices[n].tolist()], "pos_values": _r(pos.values[n]),
                "frac_nonzero": round(fires / max(stats.n_tokens, 1), 6),
                "freq_hist_data_bar_values": _r(act_centres), "freq_hist_data_bar_heights": _r(act_heights),
                "logits_hist_data_bar_heights": _r(hist_h[n]), "logits_hist_data_bar_values": _r(hist_c[n]),
                "n_prompts_total": len(stats.windows), "n_tokens_in_prompt": stats.windows.shape[1], "dataset": cfg.corpus or "",
                "activations": [c for c, _ in top] + [c for c, _ in groups],
                "decoder_weights_dist": [],
                "vector": _r(W_dec[l]),
            })
            extra: dict[str, Any] = {"feature_index": l, "mod10_class": latent_class.get(l), "max_activation": round(float(stats.max[l]), 3) if fires else 0.0,
                                     "n_top": len(top), "context_logit_effects": [e for _, e in top] + [e for _, e in groups]}
            if through is not None:
                tp, tn = through[n].topk(cfg.logit_tokens), (-through[n]).topk(cfg.logit_tokens)
                extra["head_ov"] = {"head": logit_head, "pos_str": [token_text[t] for t in tp.indices.tolist()], "pos_values": _r(tp.values),
                                    "neg_str": [token_text[t] for t in tn.indices.tolist()], "neg_values": _r(-tn.values)}
            extras.append(extra)
    return features, extras


def _quantile_groups(stats: CorpusStats, latent: int, direct: Tensor, token_text: list[str], cfg) -> list[tuple[dict, list]]:
    """SAEDashboard's quantile groups: the range (0, max] cut into `n_quantiles` equal intervals, up to
    `quantile_group_size` activations in each from the latent's uniform sample; `bin_contains` is the
    interval's share of the sample."""
    n = stats.sample.filled(latent)
    top = float(stats.max[latent])
    if not n or top <= 0:
        return []
    values = stats.sample.value[latent, :n]
    out = []
    for q in range(cfg.n_quantiles):
        lo, hi = top * q / cfg.n_quantiles, top * (q + 1) / cfg.n_quantiles
        inside = ((values > lo) & (values <= hi)).nonzero().squeeze(-1)
        for slot in inside[: cfg.quantile_group_size].tolist():
            out.append(_context(stats, stats.sample, latent, slot, direct, token_text, cfg, (round(lo, 3), round(len(inside) / n, 4)), hi))
    return out


def _context(stats: CorpusStats, slots, latent: int, slot: int, direct: Tensor, token_text: list[str], cfg, bin_: tuple,
             bin_max: float | None = None) -> tuple[dict, list]:
    """One activation as Neuronpedia shows it: the tokens around the qualifying one with the latent's
    value at each; and the direct effect of the latent at each token on the next token's logit
    (value x (W_dec @ W_U)[next token]; None at a window's last token)."""
    ctx = stats.windows.shape[1]
    w, p = divmod(int(slots.pos[latent, slot]), ctx)
    lo, hi = max(0, p - cfg.context_before), min(ctx, p + cfg.context_after + 1)
    values = slots.around[latent, slot, lo - (p - cfg.context_before) : hi - (p - cfg.context_before)]
    ids = stats.windows[w].tolist()
    effects = [round(float(v) * float(direct[ids[i + 1]]), 3) if i + 1 < ctx else None for v, i in zip(values.tolist(), range(lo, hi))]
    value = float(slots.value[latent, slot])
    record = {"bin_min": bin_[0], "bin_max": round(value if bin_max is None else bin_max, 3), "bin_contains": bin_[1],
              "tokens": [token_text[t] for t in ids[lo:hi]], "values": _r(values), "qualifying_token_index": p - lo}
    return record, effects


def vocabulary_text(model: HookedTransformer) -> list[str]:
    """Each token id decoded alone (the strings the export and the pages show)."""
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise UserError(f"{model.cfg.model_name} has no tokenizer: the export shows tokens as text")
    return [str(tokenizer.decode([i])) for i in range(model.cfg.d_vocab)]


def export_dictionary(model: HookedTransformer, entry, windows: Tensor, cfg, logit_head: str | None, token_text: list[str],
                      batch: int = 128, inputs_of=None, seed: int = 0, spliced: SplicedLoss | None = None) -> dict:
    """The export of one dictionary as {file name: JSON document} (written by `write_export`);
    `inputs_of`: the hook's `hook_inputs`, shared by the dictionaries on one hook."""
    sae = entry.sae
    hook = sae.cfg.metadata.hook_name
    if inputs_of is None:
        inputs_of = hook_inputs(model, windows, hook, lambda w: window_inputs(model, w, hook))
    stats = corpus_stats(sae, windows, inputs_of, prepended_bos(model), 4 * cfg.top_contexts, max(64, cfg.n_quantiles * cfg.quantile_group_size * 4),
                         HIST_SAMPLE, cfg.context_before, cfg.context_after, seed)
    features, extras = feature_records(model, sae, stats, cfg, logit_head, token_text, entry.latent_class)
    if spliced is None:  # the loss on (the first of) the windows the pages show
        spliced = spliced_loss(model, sae, windows[:SPLICE_WINDOWS], hook)
    mid, known = model_id(model)
    np_hook = neuronpedia_hook(model, hook)
    files = {}
    for k, start in enumerate(range(0, len(features), batch)):
        files[f"batch-{k}.json"] = {"model_id": mid, "layer": np_hook["layer"], "sae_set": f"successor-lens-{entry.id}",
                                    "sae_id_suffix": None, "features": features[start : start + batch]}
        files[f"extras-{k}.json"] = {"features": extras[start : start + batch]}
    files[SKIPPED] = {"model_id": mid, "layer": str(np_hook["layer"]), "sae_set": f"successor-lens-{entry.id}",
                                     "log_sparsity": None, "skipped_indexes": []}
    files[RUN_SETTINGS] = {
        "model_id": mid, "model_id_known_to_transformer_lens": known, "hook_name": hook, "layer": np_hook["layer"],
        "neuronpedia_hook_point": np_hook["hook_point"], "neuronpedia_hook_note": np_hook["note"],
        "sae_set": f"successor-lens-{entry.id}", "dictionary": entry.source, "architecture": sae.cfg.architecture(),
        "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae, "dataset": cfg.corpus, "n_prompts_total": len(windows),
        "n_tokens_in_prompt": windows.shape[1], "window_rule": WINDOW_RULE, "tokens_counted": stats.n_tokens, "ignored": "BOS positions",
        "n_features_at_a_time": batch, "batches": len(range(0, len(features), batch)), "logit_head": logit_head,
        "top_acts_group_size": cfg.top_contexts, "n_quantiles": cfg.n_quantiles, "quantile_group_size": cfg.quantile_group_size,
        "histogram_sample": HIST_SAMPLE, "streamed": True,
        "fit_on_these_windows": {"fvu": stats.fvu, "l0": stats.l0, "dead_frac": stats.dead_frac, "tokens": stats.n_tokens,
                                 "spliced": {**asdict(spliced), "windows": list(windows[:SPLICE_WINDOWS].shape)}},
        "trained_on": (entry.metrics or {}).get("trained_on"),
        "metrics": entry.metrics, "provenance": model_provenance(model),
    }
    return files


HIST_SAMPLE = 1024
"""Activations per latent in the histogram's uniform sample (the histogram is exact below it)."""


def neuronpedia_hook(model: HookedTransformer, hook: str) -> dict:
    """The (layer, hook point) Neuronpedia's converter takes for `hook` (its choices are
    blocks.N.hook_{resid_pre,resid_mid,resid_post,mlp_in,mlp_out,attn_in,attn_out,z}). `hook_embed`
    has no choice of its own: it is `blocks.0.hook_resid_pre` exactly when the model adds nothing to
    the token embedding before block 0 (no learned positions), checked here on a forward pass; else
    the export says why it has no steering hook."""
    layer = hook_layer(hook)
    point = hook.rsplit(".", 1)[-1]
    if hook != "hook_embed":
        known = point in {"hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_in", "hook_mlp_out", "hook_attn_in", "hook_attn_out", "hook_z"}
        return {"layer": layer or 0, "hook_point": point if known else None,
                "note": None if known else f"{hook} is none of the hook points Neuronpedia's converter takes"}
    probe = torch.arange(1, 9)[None] % model.cfg.d_vocab
    _, cache = model.run_with_cache(probe.to(model.W_E.device), names_filter=lambda n: n in ("hook_embed", "blocks.0.hook_resid_pre"), stop_at_layer=1)
    same = torch.allclose(cache["hook_embed"], cache["blocks.0.hook_resid_pre"])
    return {"layer": 0, "hook_point": "hook_resid_pre" if same else None,
            "note": "hook_embed is blocks.0.hook_resid_pre in this model (checked on a forward pass)" if same else
            "hook_embed is not blocks.0.hook_resid_pre in this model (it adds positional embeddings), and Neuronpedia's converter has "
            "no embedding hook point: upload the dictionary without a steering hook"}


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


@honours_progress
def build_exports(model: HookedTransformer, entries: list, cfg, logit_head: str | None, tasks=None, seed: int = 0,
                  progress: bool = True) -> dict[str, dict[str, dict]]:
    """The export of every dictionary, {sae id: files}, all measured on the same corpus windows."""
    from dataclasses import replace

    from successor_lens.corpus import context_corpus, corpus_windows
    from successor_lens.progress import bar as progress_bar

    cfg = replace(cfg, corpus=context_corpus(cfg.corpus))
    windows = corpus_windows(model, cfg.corpus, cfg.contexts, min(cfg.context_tokens, model.cfg.n_ctx), seed, tasks)
    text = vocabulary_text(model)
    inputs: dict[str, Any] = {}  # one forward pass over the windows per hook when it fits, not per dictionary
    hooks = [e.sae.cfg.metadata.hook_name for e in entries]  # the clean loss once, the zero-ablated once per hook
    spliced: dict[str, SplicedLoss] = dict(zip((e.id for e in entries), spliced_losses(model, [e.sae for e in entries], windows[:SPLICE_WINDOWS], hooks)))
    files = {}
    for e in progress_bar(entries, desc="export", unit="dictionary", leave=False, disable=not progress):
        hook = e.sae.cfg.metadata.hook_name
        if hook not in inputs:
            inputs[hook] = hook_inputs(model, windows, hook, lambda w, hook=hook: window_inputs(model, w, hook))
        files[e.id] = export_dictionary(model, e, windows, cfg, logit_head, text, cfg.export_batch, inputs[hook], seed, spliced[e.id])
    return files


def export_summary(sae_id: str, files: dict[str, dict]) -> dict:
    """What atlas.json records of a dictionary's export: where it is, what it holds and its index page
    (`latent_pages.dictionary_page`)."""
    settings = files[RUN_SETTINGS]
    pairs = export_features(files)
    return {"folder": f"{NEURONPEDIA}/{sae_id}", "files": sorted(files), "model_id": settings["model_id"],
            "model_id_known_to_transformer_lens": settings["model_id_known_to_transformer_lens"], "dataset": settings["dataset"],
            "n_prompts_total": settings["n_prompts_total"], "n_tokens_in_prompt": settings["n_tokens_in_prompt"],
            "latents": len(pairs), "live": sum(1 for f, _ in pairs if f["frac_nonzero"] > 0),
            "pages": [f"latents/{sae_id}/{INDEX}"]}
