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


def test_model_seed_draws_another_control_with_its_own_identity(tmp_path, capsys):
    import argparse

    from successor_lens.cli.common import out_dir
    from successor_lens.errors import ConfigError
    from successor_lens.models.controls import seeded
    from successor_lens.models.provenance import model_provenance
    from successor_lens.models.registry import source_fingerprint

    assert seeded("random-gpt2", 3) == "random-gpt2-seed3" and seeded("random-gpt2-seed3", 0) == "random-gpt2"
    assert seeded("random-smollm2-135m", 2) == "random-smollm2-135m-seed2" and seeded("planted-digits", None) == "planted-digits"
    with pytest.raises(ConfigError, match="--model-seed applies to the generated controls"):
        seeded("smollm2-135m", 1)
    a, b, again = load_model("random-gpt2"), load_model("random-gpt2-seed3"), load_model("random-gpt2-seed3")
    assert not torch.equal(a.W_E, b.W_E) and torch.equal(b.W_E, again.W_E)  # the seed fixes every weight
    assert source_fingerprint("random-gpt2") != source_fingerprint("random-gpt2-seed3")
    assert "seed 3" in str(model_provenance(b)["source"])
    assert out_dir(argparse.Namespace(out=None, dtype="fp32", model="random-gpt2-seed3")).name == "random-gpt2-seed3"
    # refused in one line before any model loads or folder is made
    assert main(["heads", "--model", "smollm2-135m", "--model-seed", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--model-seed" in err and not (tmp_path / "x").exists()
