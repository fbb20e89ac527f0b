"""Integration: SAE training on the embedded model's activations (offline, CPU)."""

import json

import pytest
from sae_lens import SAE

from successor_lens.cli.main import main
from successor_lens.corpus import load_texts
from successor_lens.sae_train.harvest import corpus_activations, succession_items
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sae_train.train_config import TrainConfig
from successor_lens.sae_train.train_run import train_sae

pytestmark = pytest.mark.slow  # the real embedded model


def test_succession_mlp0_sae_reaches_low_fvu(embedded_model, tmp_path):
    items, info = succession_items(embedded_model.tokenizer)
    assert 150 < info["n_tokens"] < 400 and info["n_dropped"] > 0
    # SmolLM2 splits numbers into digits: "10".."500" and " 0".." 500" join as in-context items
    assert info["n_multi_token_items"] >= 990 and len(items) == info["n_tokens"] + info["n_multi_token_items"]
    cfg = TrainConfig(d_sae=128, k=8, steps=800, batch_size=256)
    run = train_sae(embedded_model, "mlp0", cfg, tmp_path, Runtime("cpu"), progress=False)
    assert run.metrics.fvu < 0.1
    assert abs(run.metrics.l0 - 8) < 1e-6
    sae = SAE.load_from_disk(run.folder)
    assert sae.cfg.d_in == 576 and sae.cfg.metadata.hook_name == "blocks.0.hook_mlp_out"


def test_train_command_on_the_embedding(tmp_path, capsys):
    assert main(["train", "--site", "embed", "--steps", "200", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "L0" in out and "FVU" in out and "dead fraction" in out
    folder = tmp_path / "sae-embed-succession-topk-s0"
    assert json.loads((folder / "provenance.json").read_text())["hook"] == "hook_embed"
    assert SAE.load_from_disk(folder).cfg.d_in == 576


def test_corpus_activations_from_a_local_text_file(embedded_model, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("Chapter 1. On Monday, the 3rd of January, we counted 1, 2, 3.\n\nChapter 2. Then February.\n")
    texts = load_texts(str(text))
    assert len(texts) == 2
    chunks = list(corpus_activations(embedded_model, texts, "mlp0", seq_len=8, max_tokens=64))
    rows = sum(len(c) for c in chunks)
    assert rows > 8 and chunks[0].shape[1] == 576


def test_unreachable_corpus_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--tokens", "corpus", "no/such-dataset", "--steps", "5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no/such-dataset" in err and "local text file" in err
