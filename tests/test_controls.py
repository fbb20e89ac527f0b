"""Known-answer and null controls end to end: `planted-gpt2` must recover its plant, `random-gpt2`
must come out as nulls, and a shuffled-index control on planted data finds no class."""

import json

import pytest
import torch

from successor_lens.cli.main import main
from successor_lens.features.mine_run import class_tests, item_acts, item_table
from successor_lens.models.loading import load_model
from successor_lens.models.planted import PLANTED_HEAD
from successor_lens.nulls import holm
from successor_lens.sae_train.dictionary import load_dictionary


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    # the defaults of every figure; only the atlas's size is cut (its latents and contexts are pages, not figures)
    assert main(["run", "--model", "planted-gpt2", "--latents", "4", "--contexts", "8", "--out", str(out)]) == 0
    return out


def test_planted_gpt2_uses_the_real_gpt2_vocabulary():
    model = load_model("planted-gpt2")
    tok = model.tokenizer
    assert model.cfg.d_vocab == 50257 and tok.encode(" 23 24") == [2242, 1987]
    assert all(len(tok.encode(f" {n}")) == 1 for n in range(0, 200))


@pytest.mark.slow
def test_run_on_planted_gpt2_recovers_the_plant(planted_run):
    s = json.loads((planted_run / "summary.json").read_text())
    layer, head = PLANTED_HEAD
    assert s["best_head"] == f"L{layer}H{head}" == s["analysis_head"]
    assert s["best_score"] > 0.9 and s["best_score"] >= 5 * s["runner_up_score"]
    # the per-class test, Holm over the 30 (SAE, class) pairs: every planted class in every SAE
    assert s["classes_found"] == 10 and s["classes_found_raw"] == 10 and s["above_null"]["classes_found"]
    assert s["modal_coverage"] >= 0.8 and s["above_null"]["modal_coverage"]
    assert s["recurring_classes"] == 10
    assert s["probe_feature_cosine"] >= 0.8 and s["above_null"]["probe_feature_cosine"]
    assert s["arithmetic_numbers_20_29"] >= 0.85 and s["arithmetic_random_numbers_20_29"] <= 0.2
    assert s["above_null"]["arithmetic"] and s["above_null"]["probe_accuracy"] and s["above_null"]["best_score"]
    assert not s["above_null"]["overshoot"]  # nothing planted: no greater-than bias


@pytest.mark.slow
def test_shuffled_indices_on_planted_data_find_no_class_above_the_null(planted_run):
    model = load_model("planted-gpt2")
    table = item_table(model)
    acts = item_acts(model, table, "mlp0")
    sae = load_dictionary(planted_run / "saes" / "mlp0-s0").sae
    true = class_tests([sae], [True], acts, table)[0]
    shuffled = class_tests([sae], [True], acts, table.permuted(torch.Generator().manual_seed(0)))[0]
    assert sum(holm(true.p)) == 10  # every planted class, above both per-class nulls
    assert sum(holm(shuffled.p)) == 0  # the same dictionary, labels that carry nothing


@pytest.mark.slow
def test_run_on_a_random_gpt2_reports_every_figure_as_not_above_its_null(tmp_path, capsys):
    # the defaults of every figure; only the atlas's size is cut (its latents and contexts are pages, not figures)
    assert main(["run", "--model", "random-gpt2", "--latents", "4", "--contexts", "8", "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert not any(s["above_null"].values()), s["above_null"]
    out = capsys.readouterr().out
    lines = out.split("report.md)\n", 1)[1].strip().splitlines()
    assert sum("NOT above its null" in line or "readout not validated" in line for line in lines) >= 7
    report = (tmp_path / "report.md").read_text()
    assert "**no**" in report and "| yes |" not in report
