"""Dictionaries in every common layout: round trips through `convert` are exact, the real sparsify
library reads what we write (and we read what it writes), dictionary_learning's layout follows its
source (its package pulls nnsight 0.3 and does not import beside transformers 5), and a folder saved
by a library's own code gives an atlas."""

from __future__ import annotations

import json

import pytest
import torch

from successor_lens.cli.main import main
from successor_lens.sae_train.batches import ShuffledBatches
from successor_lens.sae_train.dictionary import load_dictionary, save_dictionary
from successor_lens.sae_train.formats import detect
from successor_lens.sae_train.train_config import TrainConfig
from successor_lens.sae_train.trainer import make_sae, train

D = 256  # planted-gpt2's width, so the atlas test can use these dictionaries


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained dictionary per architecture, saved by us (sae-lens layout)."""
    root, X = tmp_path_factory.mktemp("formats"), torch.randn(4000, D)
    out = {}
    for arch in ("topk", "batchtopk", "standard", "jumprelu"):
        cfg = TrainConfig(arch=arch, d_sae=128, k=8, steps=40, batch_size=256)
        sae = make_sae(cfg, D, {"model_name": "planted-gpt2", "hook_name": "blocks.0.hook_mlp_out"})
        train(cfg, sae, ShuffledBatches(X, 256), progress=False)
        out[arch] = save_dictionary(sae, root / arch, {"note": "test"})
    return out


def dl_encode(state: dict, trainer: dict, x: torch.Tensor) -> torch.Tensor:
    """dictionary_learning's encode, as its source writes it (dictionary.py, trainers/top_k.py, batch_top_k.py)."""
    kind = trainer["dict_class"]
    if kind == "JumpReluAutoEncoder":
        pre = x @ state["W_enc"] + state["b_enc"]
        return torch.relu(pre * (pre > state["threshold"]))
    b_dec = state["bias"] if kind == "AutoEncoder" else state["b_dec"]
    post = torch.relu((x - b_dec) @ state["encoder.weight"].T + state["encoder.bias"])
    if kind == "AutoEncoderTopK":
        top = post.topk(int(state["k"]), dim=-1)
        return torch.zeros_like(post).scatter_(-1, top.indices, top.values)
    return post


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "standard", "jumprelu"])
@pytest.mark.parametrize("fmt", ["sparsify", "dictionary-learning", "sae-lens"])
def test_convert_round_trips_exactly(trained, tmp_path, capsys, arch, fmt):
    if fmt == "sparsify" and arch != "topk":  # sparsify stores TopK only: refused in one line
        assert main(["convert", str(trained[arch]), "--to", fmt, "--out", str(tmp_path / "out")]) == 2
        assert "sparsify stores TopK SAEs only" in capsys.readouterr().err
        return
    assert main(["convert", str(trained[arch]), "--to", fmt, "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    folded = fmt == "dictionary-learning" and arch in ("jumprelu", "batchtopk")  # b_dec folded into b_enc: exact up to rounding
    if not folded:
        assert "max |encode difference| 0, max |decode difference| 0" in printed, printed
    name = "layers.0.mlp" if fmt == "sparsify" else "blocks.0.hook_mlp_out"
    folder = tmp_path / "out" / name
    assert detect(folder) == fmt
    source, back = load_dictionary(trained[arch]).sae, load_dictionary(folder)
    assert back.sae.cfg.metadata.hook_name == "blocks.0.hook_mlp_out"
    x = torch.randn(300, D) * 2
    with torch.no_grad():
        assert torch.allclose(source.encode(x), back.sae.encode(x), atol=1e-5) if folded else torch.equal(source.encode(x), back.sae.encode(x))
        if fmt == "dictionary-learning":  # what their own encode computes from the files we wrote
            state = torch.load(folder / "ae.pt", weights_only=True)
            trainer = json.loads((folder / "config.json").read_text())["trainer"]
            assert torch.allclose(dl_encode(state, trainer, x), source.encode(x), atol=1e-5)
            assert back.provenance["hook_source"]["dict_class"] == {"topk": "AutoEncoderTopK", "standard": "AutoEncoder"}.get(arch, "JumpReluAutoEncoder")
        if fmt == "sparsify":  # the real library loads our folder and encodes and decodes as sae-lens does
            from sparsify import SparseCoder

            coder = SparseCoder.load_from_disk(folder)
            enc = coder.encode(x)
            dense = torch.zeros(300, 128).scatter_(-1, enc.top_indices, enc.top_acts)
            assert torch.allclose(dense, source.encode(x), atol=1e-5)
            assert torch.allclose(coder.decode(enc.top_acts, enc.top_indices), source.decode(source.encode(x)), atol=1e-4)


@pytest.mark.slow
def test_folders_saved_by_each_library_load_and_give_an_atlas(tmp_path, capsys):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    coder = SparseCoder(D, SparseCoderConfig(num_latents=64, k=4))  # sparsify's own init and save path
    coder.save_to_disk(tmp_path / "sparsify-run" / "layers.0.mlp")
    folder = tmp_path / "sparsify-run" / "layers.0.mlp"
    d = load_dictionary(folder)
    assert d.sae.cfg.metadata.hook_name == "blocks.0.hook_mlp_out" and d.provenance["hook_source"]["hookpoint"] == "layers.0.mlp"
    x = torch.randn(100, D)
    enc = coder.encode(x)
    with torch.no_grad():
        assert torch.allclose(torch.zeros(100, 64).scatter_(-1, enc.top_indices, enc.top_acts), d.sae.encode(x), atol=1e-5)

    dl = tmp_path / "dictionary-learning" / "trainer_0"  # dictionary_learning's save: torch.save(state_dict) + config.json
    dl.mkdir(parents=True)
    state = {"encoder.weight": torch.randn(64, D) / 16, "encoder.bias": torch.zeros(64), "decoder.weight": torch.randn(D, 64) / 16,
             "b_dec": torch.zeros(D), "k": torch.tensor(4, dtype=torch.int), "threshold": torch.tensor(-1.0)}
    torch.save(state, dl / "ae.pt")
    (dl / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoderTopK", "activation_dim": D, "dict_size": 64, "k": 4,
                                                            "layer": 0, "lm_name": "planted-gpt2", "submodule_name": "mlp_out_layer0"}, "buffer": {}}))
    back = load_dictionary(dl)
    with torch.no_grad():
        assert torch.allclose(back.sae.encode(x), dl_encode(state, {"dict_class": "AutoEncoderTopK"}, x), atol=1e-5)

    for source, out in ((folder, tmp_path / "atlas-sparsify"), (dl, tmp_path / "atlas-dl")):
        assert main(["atlas", "--sae", str(source), "--model", "planted-gpt2", "--latents", "2", "--contexts", "8", "--out", str(out)]) == 0
        doc = json.loads((out / "atlas" / "atlas.json").read_text())
        assert doc["saes"][0]["hook_name"] == "blocks.0.hook_mlp_out" and len(doc["saes"][0]["latents"]) == 2
