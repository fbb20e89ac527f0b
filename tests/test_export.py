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
            for a in f["activations"]:
                assert len(a["tokens"]) == len(a["values"]) and max(a["values"]) == a["bin_max"] == a["values"][a["qualifying_token_index"]]
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
            seen += [int(m) for m in re.findall(r'<tr><td class="l">(?:<a href="\d+\.html">)?(\d+)', text)]
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
    assert "Top contexts in the corpus" in done.stdout and 'class="ctx"' in done.stdout and 'class="q"' in done.stdout
    index = browse(out / "atlas" / sae["export"]["pages"][0], tmp_path / "profile2", "--dump-dom")
    assert index.returncode == 0 and console_messages(index.stderr) == [] and index.stdout.count('class="ctx"') > 3
