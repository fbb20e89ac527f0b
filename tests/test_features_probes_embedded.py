"""Integration on the embedded model: probes for index mod 10 and mining an SAE on MLP0 outputs."""

import json

import pytest

from successor_lens.cli.main import main
from successor_lens.features.mine_run import item_acts, item_table
from successor_lens.features.mining import mine
from successor_lens.probes.linear import leave_one_task_out
from successor_lens.sae_train.dictionary import load_dictionary
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sae_train.train_config import TrainConfig
from successor_lens.sae_train.train_run import train_sae

pytestmark = pytest.mark.slow  # the real embedded model


def test_mod10_probe_generalises_to_held_out_digits_and_ordinals(embedded_model):
    table = item_table(embedded_model)
    acts = item_acts(embedded_model, table, "mlp0")
    probe = leave_one_task_out(acts, table)
    # docs/method.md section 9 measured digits and ordinals near-perfect; chance is 0.1
    assert probe.accuracy["numbers"] > 0.7 and probe.accuracy["ordinals"] > 0.7
    assert probe.control["numbers"] < 0.4 and probe.control["ordinals"] < 0.4


def test_miner_finds_mod10_classes_in_an_sae_on_mlp0(embedded_model, tmp_path):
    table = item_table(embedded_model)
    acts = item_acts(embedded_model, table, "mlp0")
    run = train_sae(embedded_model, "mlp0", TrainConfig(d_sae=128, k=8, steps=800, batch_size=256), tmp_path, Runtime("cpu"), progress=False)
    mined = mine(load_dictionary(run.folder).sae, acts, table)
    summary = mined.summary()
    assert summary["n_classes_found"] >= 5  # the model has the representation (docs/method.md section 9)
    for c in mined.classes_found:
        assert 0 < mined.modal_coverage[c] <= 1
        assert abs(mined.directions[c].norm().item() - 1) < 1e-5


def test_mine_and_probe_commands_write_results(tmp_path, capsys):
    assert main(["mine", "--seeds", "2", "--steps", "400", "--null-draws", "9", "--out", str(tmp_path)]) == 0
    assert "mod-10 classes found per SAE" in capsys.readouterr().out
    mined = json.loads((tmp_path / "mine.json").read_text())
    assert len(mined["per_sae"]) == 2 and mined["recurrence"]["n_saes"] == 2
    assert main(["probe", "--out", str(tmp_path), "--head", "L23H3"]) == 0
    out = capsys.readouterr().out
    assert "shuffled control" in out and "L23H3" in out and "vs shuffled labels" in out and "its null" in out
    data = json.loads((tmp_path / "probe.json").read_text())
    assert {"SAE features", "random directions", "probe directions", "SAE features (split numbers)"} <= set(data["arithmetic"])
    assert data["probe_feature_cosine"]["paper_mean"] == 0.71
    for png in ("probe_accuracy.png", "arithmetic.png", "offset_profile.png", "mine_classes.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_probe_without_mined_features_says_what_to_run(tmp_path, capsys):
    assert main(["probe", "--out", str(tmp_path)]) == 2
    assert "run `successor-lens mine`" in capsys.readouterr().err


def test_an_untrained_sae_lens_dictionary_is_not_above_its_null(tmp_path, capsys):
    """A never-trained sae-lens StandardSAE through `mine --sae`: the digits SmolLM2 reads numbers at
    make its latents look like mod-10 features; the tokenizer-aware and rotated-dictionary nulls
    see through that (it came out "4.0 classes vs null 0.5, above" with the old nulls)."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig

    cfg = StandardSAEConfig(d_in=576, d_sae=256)
    cfg.metadata.hook_name = "blocks.0.hook_mlp_out"
    torch.manual_seed(0)
    StandardSAE(cfg).save_model(str(tmp_path / "untrained"))
    assert main(["mine", "--sae", str(tmp_path / "untrained"), "--out", str(tmp_path / "run")]) == 0
    figures = json.loads((tmp_path / "run" / "mine.json").read_text())["figures"]
    assert not any(figures[k]["above"] for k in ("classes_found", "classes_found_raw", "class_latents", "modal_coverage")), figures
    assert "rotated-dictionary null" in figures["class_latents"]["test"]
