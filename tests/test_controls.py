"""Known-answer and null controls end to end: `planted-gpt2` must recover its plant, `random-gpt2`
must come out as nulls, and a shuffled-index control on planted data finds no class."""

import json

import pytest
import torch

from successor_lens.cli.main import main
from successor_lens.features.mine_run import beats_null, item_acts, item_table
from successor_lens.features.mining import mine
from successor_lens.models.loading import load_model
from successor_lens.models.planted import PLANTED_HEAD
from successor_lens.sae_train.dictionary import load_dictionary, untrained_like


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
    # each class of each SAE must beat the 99% quantile of ~300 pooled null draws (p <= 0.01 per class);
    # all 30 class-SAE pairs pass at seed 0, one may sit below a lucky draw at another seed
    assert s["classes_found"] >= 9.5 and s["classes_found_raw"] == 10 and s["classes_found"] > s["classes_found_null"] + 5
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
    gens = [torch.Generator().manual_seed(s) for s in range(11)]
    shuffled = mine(sae, acts, table.permuted(gens[0]))
    nulls = [mine(sae, acts, table.permuted(g)) for g in gens[1:]]
    nulls += [mine(untrained_like(sae, 1000 + r, acts.mean(0)), acts, table) for r in range(5)]
    assert beats_null(shuffled, nulls) == []
    assert len(beats_null(mine(sae, acts, table), nulls)) == 10  # the same SAE on the true indices


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
