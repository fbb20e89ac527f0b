"""The Neuronpedia / SAEDashboard export: read by sae-dashboard's own classes, every number checked
against a dense recomputation, one index entry per latent, contexts shown in Chromium."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RUN_TASKS, make_run_model

from successor_lens.artifacts.atlas import SAEEntry
from successor_lens.artifacts.atlas_config import AtlasConfig
from successor_lens.artifacts.neuronpedia import export_dictionary, export_features, read_export, vocabulary_text
from successor_lens.corpus import corpus_windows
from successor_lens.features.mine_config import MineConfig
from successor_lens.filenames import NEURONPEDIA
from successor_lens.runner.run import run_pipeline
from successor_lens.runner.run_config import RunConfig
from successor_lens.sae_train.dictionary import load_dictionary

try:  # installed with --no-deps (README): its data classes need numpy only
    from sae_dashboard.neuronpedia.neuronpedia_dashboard import NeuronpediaDashboardBatch
except ImportError as err:  # a failure, not a skip: the README's install has it
    raise ImportError("sae-dashboard is not installed: pip install --no-deps sae-dashboard==0.8.0 (README, step 1)") from err

ATLAS = AtlasConfig(latents=3, corpus="succession-lists", contexts=12, context_tokens=24, top_contexts=4, export_batch=40)
CONFIG = RunConfig(seeds=1, steps=120, tasks=RUN_TASKS, scan_tasks=RUN_TASKS, mine=MineConfig(null_draws=9), atlas=ATLAS)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model = make_run_model()
    result = run_pipeline(model, tmp_path_factory.mktemp("export-run"), CONFIG, progress=False, log=lambda _: None)
    return model, result.out


def exports(out: Path) -> dict[str, dict]:
    return {p.name: read_export(p) for p in sorted((out / "atlas" / NEURONPEDIA).iterdir())}


def test_every_batch_loads_in_sae_dashboard_classes_and_covers_every_latent(run):
    model, out = run
    found = exports(out)
    assert set(found) == {"mlp0-s0", "embed-s0"}
    for sae_id, files in found.items():
        d_sae = load_dictionary(out / "saes" / sae_id).sae.cfg.d_sae
        batches = [n for n in files if n.startswith("batch-")]
        assert len(batches) == -(-d_sae // ATLAS.export_batch) > 1
        for name in batches:
            doc = files[name]
            batch = NeuronpediaDashboardBatch(**doc)  # refuses a missing-type or unknown key
            assert batch.to_dict() == doc  # nothing dropped or renamed on the way in
            assert doc["model_id"] == model.cfg.model_name and doc["layer"] == 0
        indices = [f["feature_index"] for f, _ in export_features(files)]
        assert indices == list(range(d_sae))
        assert files["run_settings.json"]["dataset"] == "succession-lists" and files["skipped_indexes.json"]["skipped_indexes"] == []
        for f, extra in export_features(files):
            assert extra["feature_index"] == f["feature_index"]
            top, groups = f["activations"][: extra["n_top"]], f["activations"][extra["n_top"] :]
            assert len(top) <= ATLAS.top_contexts and len(extra["context_logit_effects"]) == len(f["activations"])
            for a in top:
                assert len(a["tokens"]) == len(a["values"]) and max(a["values"]) == a["bin_max"] == a["values"][a["qualifying_token_index"]]
            shown = [tuple(a["tokens"]) for a in top]
            assert len(set(shown)) == len(shown)  # no context repeats another's text
            for a in groups:  # quantile groups: the activation lies in its interval, whose share is a fraction
                value = a["values"][a["qualifying_token_index"]]
                assert a["bin_min"] < value <= a["bin_max"] + 1e-3 and 0 < a["bin_contains"] <= 1
            assert len(f["vector"]) == model.cfg.d_model
            assert sum(f["freq_hist_data_bar_heights"]) == round(f["frac_nonzero"] * 12 * 24)
            assert sum(f["logits_hist_data_bar_heights"]) == model.cfg.d_vocab


def test_export_numbers_match_a_dense_recomputation(run):
    model, out = run
    d = load_dictionary(out / "saes" / "mlp0-s0")
    sae = d.sae
    windows = corpus_windows(model, "succession-lists", 12, 24, 0, RUN_TASKS)
    cfg = ATLAS
    files = export_dictionary(model, SAEEntry("mlp0-s0", sae, d.source), windows, cfg, "L1H2", vocabulary_text(model), batch=1000)
    pairs = export_features(files)

    with torch.no_grad():
        _, cache = model.run_with_cache(windows, names_filter="blocks.0.hook_mlp_out")
        x = cache["blocks.0.hook_mlp_out"].reshape(-1, model.cfg.d_model)
        acts = sae.encode(x).numpy()  # [tokens, latents], dense
        direct = (sae.W_dec @ model.W_U).numpy()
    T, F = acts.shape
    corr = np.corrcoef(np.concatenate([acts, x.numpy()], 1).T)  # latents then neurons
    fires = acts > 0
    co = (fires.T.astype(int) @ fires.astype(int)) > 0
    checked = 0
    for f, extra in pairs:
        l = f["feature_index"]
        assert f["frac_nonzero"] == pytest.approx(fires[:, l].mean(), abs=1e-6)
        top_direct = np.argsort(-direct[l], kind="stable")[: cfg.logit_tokens]
        assert np.allclose(f["pos_values"], direct[l][top_direct], atol=2e-3)
        if not fires[:, l].any():
            assert f["activations"] == [] and f["correlated_neurons_indices"] == []
            continue
        checked += 1
        assert extra["max_activation"] == pytest.approx(acts[:, l].max(), abs=1e-3)
        best = int(acts[:, l].argmax())
        w, p = divmod(best, windows.shape[1])
        first = f["activations"][0]
        assert first["bin_max"] == pytest.approx(acts[best, l], abs=1e-3)
        assert first["tokens"][first["qualifying_token_index"]] == model.tokenizer.decode([int(windows[w, p])])
        lo = p - first["qualifying_token_index"]
        assert np.allclose(first["values"], acts[w * windows.shape[1] + lo : w * windows.shape[1] + lo + len(first["values"]), l], atol=1e-3)
        # correlations: the reported latents are the most correlated co-firing ones, with their Pearson r
        others = [j for j in range(F) if j != l and co[l, j]]
        expect = sorted(others, key=lambda j: -corr[l, j])[:3]
        assert np.allclose(f["correlated_features_pearson"], [corr[l, j] for j in expect], atol=2e-3)
        assert np.allclose([corr[l, j] for j in f["correlated_features_indices"]], f["correlated_features_pearson"], atol=2e-3)
        neurons = corr[l, F:]
        assert np.allclose(f["correlated_neurons_pearson"], np.sort(neurons)[::-1][:3], atol=2e-3)
    assert checked >= 5


def test_every_latent_has_an_index_entry(run):
    _, out = run
    atlas = out / "atlas"
    doc = json.loads((atlas / "atlas.json").read_text())
    for sae in doc["saes"]:
        seen = []
        for page in sae["export"]["pages"]:
            text = (atlas / page).read_text()
            seen += [int(m) for m in re.findall(r'<tr data-index="(\d+)"', text)]
            linked = [int(m) for m in re.findall(r'<td class="l"><a href="(\d+)\.html">', text)]
            assert linked == [r["index"] for r in sae["latents"]]  # a page for each latent up to --latents (3 here) ...
            assert all((atlas / page).parent.joinpath(f"{n}.html").is_file() for n in linked)
            assert f"{sae['d_sae'] - len(linked)} of {sae['d_sae']} latents have no page of their own" in text  # ... and the rest said
            assert "Fit on the corpus these pages show" in text and "not the corpus these pages show" in text  # trained on the items
            fit = json.loads((atlas / sae["export"]["folder"] / "run_settings.json").read_text())["fit_on_these_windows"]
            assert f"{fit['fvu']:.3f}" in text and fit["spliced"]["windows"][0] > 0
        assert seen == list(range(sae["d_sae"])), sae["id"]
        assert sae["export"]["latents"] == sae["d_sae"] and 0 < sae["export"]["live"] <= sae["d_sae"]


@pytest.mark.slow
def test_chromium_opens_a_latent_page_with_its_contexts(run, tmp_path):
    from test_atlas import browse, console_messages

    _, out = run
    doc = json.loads((out / "atlas" / "atlas.json").read_text())
    sae = doc["saes"][0]
    record = next(r for r in sae["latents"] if r["frac_nonzero"] > 0)
    done = browse(out / "atlas" / record["page"], tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_messages(done.stderr) == []
    assert "Top activations on the corpus" in done.stdout and 'class="ctx"' in done.stdout and ' q"' in done.stdout
    index = browse(out / "atlas" / sae["export"]["pages"][0], tmp_path / "profile2", "--dump-dom")
    assert index.returncode == 0 and console_messages(index.stderr) == [] and index.stdout.count('class="tok"') > 3


def test_the_streaming_harvest_matches_one_dense_pass(monkeypatch):
    """corpus_stats in chunks of one window (its memory does not grow with the windows) against the
    same numbers from one dense matrix of every token's activations."""
    from types import SimpleNamespace

    from successor_lens.artifacts import corpus_stats as cs

    gen = torch.Generator().manual_seed(0)
    F, D, n, ctx, bos = 12, 5, 9, 7, 0
    W_enc, b = torch.randn(D, F, generator=gen), torch.randn(F, generator=gen) - 0.5
    W_dec = torch.randn(F, D, generator=gen)
    sae = SimpleNamespace(cfg=SimpleNamespace(d_sae=F, d_in=D), parameters=lambda: iter([W_enc]),
                          encode=lambda x: torch.relu(x @ W_enc + b), decode=lambda f: f @ W_dec)
    windows = torch.randint(1, 50, (n, ctx), generator=gen)
    windows[:, 0] = bos
    X = torch.randn(n, ctx, D, generator=gen)
    monkeypatch.setattr(cs, "CHUNK_VALUES", F * ctx)  # one window per chunk
    stats = cs.corpus_stats(sae, windows, lambda a, z: X[a:z], bos, top_k=4, sample_k=64, hist_k=64, before=2, after=1, seed=3)

    valid = (windows != bos).reshape(-1)
    x = X.reshape(-1, D)
    f = sae.encode(x) * valid[:, None]  # [tokens, latents], dense
    assert stats.n_tokens == int(valid.sum())
    assert torch.equal(stats.count, (f > 0).sum(0))
    assert torch.allclose(stats.total.float(), f.sum(0), atol=1e-4) and torch.allclose(stats.max, f.max(0).values)
    assert torch.allclose(stats.FX.float(), f.T @ (x * valid[:, None]), atol=1e-3)
    assert torch.allclose(stats.FF, f.T @ f, atol=1e-3)
    recon = sae.decode(sae.encode(x))
    xv = x[valid]
    assert stats.fvu == pytest.approx(float(((xv - recon[valid]) ** 2).sum() / ((xv - xv.mean(0)) ** 2).sum()), rel=1e-4)
    for l in range(F):
        expect = f[:, l].sort(descending=True, stable=True)
        k = min(4, int((f[:, l] > 0).sum()))
        assert torch.allclose(stats.top.value[l, :k], expect.values[:k])
        for slot in range(k):  # the values kept around each top activation are the latent's own there
            p = int(stats.top.pos[l, slot])
            w, i = divmod(p, ctx)
            for j, off in enumerate(range(-2, 2)):
                inside = 0 <= i + off < ctx
                assert float(stats.top.around[l, slot, j]) == pytest.approx(float(f[w * ctx + i + off, l]) if inside else 0.0, abs=1e-6)
        # under the sample's size the sample is every activation, so the histogram is exact
        fired = f[:, l][f[:, l] > 0]
        assert sorted(stats.hist_sample.value[l, : stats.hist_sample.filled(l)].tolist()) == pytest.approx(sorted(fired.tolist()))
        heights, _ = stats.histogram(l, 6)
        assert float(heights.sum()) == pytest.approx(len(fired))


def test_the_reservoir_keeps_a_uniform_sample_beyond_its_size():
    """Past its size a reservoir keeps the activations with the largest random keys: a uniform
    sample (each of 400 activations kept about 50/400 of the time over seeds)."""
    from successor_lens.artifacts.corpus_stats import Slots, merge_slots

    kept = torch.zeros(400)
    for seed in range(200):
        gen = torch.Generator().manual_seed(seed)
        slots = Slots.empty(1, 50, 0)
        for start in range(0, 400, 37):  # in uneven chunks
            idx = torch.arange(start, min(start + 37, 400))
            merge_slots(slots, torch.zeros(len(idx), dtype=torch.long), torch.rand(len(idx), generator=gen), idx.float(), idx,
                        lambda i: torch.zeros(len(i), 0))
        kept[slots.pos[0]] += 1
    rate = kept / 200
    assert float(rate.mean()) == pytest.approx(50 / 400, abs=1e-6)
    assert float(rate[:200].mean()) == pytest.approx(float(rate[200:].mean()), abs=0.02)  # early and late chunks alike


@pytest.mark.parametrize("positions, expected", [("rotary", "hook_resid_pre"), ("standard", None)])
def test_hook_embed_maps_to_a_neuronpedia_hook_point_only_where_it_is_that_point(positions, expected):
    """Neuronpedia's converter has no embedding hook: blocks.0.hook_resid_pre is the embedding exactly
    when nothing is added to it before block 0 (rotary models), not with learned positions (GPT-2)."""
    from dataclasses import replace

    from conftest import tiny_config
    from transformer_lens import HookedTransformer

    from successor_lens.artifacts.neuronpedia import neuronpedia_hook

    model = HookedTransformer(replace(tiny_config(), positional_embedding_type=positions)).eval()
    found = neuronpedia_hook(model, "hook_embed")
    assert found["hook_point"] == expected and found["layer"] == 0
    assert (expected is None) == ("no embedding hook point" in (found["note"] or ""))
    assert neuronpedia_hook(model, "blocks.1.hook_mlp_out") == {"layer": 1, "hook_point": "hook_mlp_out", "note": None}
