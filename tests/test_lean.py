"""The lean head scan (`models.lean`, `scan.lean_top_in_task`): a checkpoint read one layer at a
time, only the tensors the OV scan uses, gives the full TransformerLens path's scores on every
architecture the project loads; bf16 keeps the ranking; the rest of each layer is never read."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hub_cache import snapshot, tiny_gemma3

from successor_lens.cli.main import main
from successor_lens.errors import ModelLoadError, UserError
from successor_lens.models.lean import LeanCheckpoint
from successor_lens.models.loading import load_model
from successor_lens.models.local import _local_config
from successor_lens.probes.probe_configs import ScanConfig
from successor_lens.probes.scan import lean_top_in_task, scan_heads
from successor_lens.tasks import build_token_set

ARCHITECTURES = ["gpt2", "EleutherAI/pythia-70m", "01-ai/Yi-6B", "gemma3"]
"""GPT-2, GPT-NeoX, Llama with grouped-query attention, Gemma 3 (post-norms, scaled embeddings)."""


@pytest.fixture
def folder(hub_models, tmp_path, request):
    if request.param == "gemma3":
        path = tmp_path / "my-gemma-3"
        model, tok = tiny_gemma3()
        model.save_pretrained(path)
        tok.save_pretrained(path)
        return path
    path = tmp_path / request.param.replace("/", "_")
    shutil.copytree(snapshot(hub_models, request.param), path)
    return path


def lean_scan(path, dtype="fp32", config=None):
    lean = LeanCheckpoint.open(path, _local_config(path), dtype)
    token_set = build_token_set(lean.tokenizer)
    return scan_heads(None, token_set, config, top_LHN=lean_top_in_task(lean, token_set, config)), lean


@pytest.mark.parametrize("folder", ARCHITECTURES, indirect=True)
@pytest.mark.parametrize("embedding", ["mlp0", "embed+mlp0"])
def test_lean_scan_equals_the_full_transformer_lens_scan(folder, embedding):
    config = ScanConfig(embedding=embedding)
    lean, checkpoint = lean_scan(folder, config=config)
    full = scan_heads(load_model(str(folder)), config=config)
    assert torch.equal(lean.scores, full.scores) and torch.equal(lean.copying, full.copying)
    assert lean.per_task.keys() == full.per_task.keys() and all(torch.equal(lean.per_task[t], full.per_task[t]) for t in full.per_task)
    assert 0 < checkpoint.read_params < checkpoint.total_params  # queries, keys and later MLPs were never read


@pytest.mark.parametrize("folder", ["01-ai/Yi-6B"], indirect=True)
def test_later_layers_hold_only_what_the_ov_circuit_reads(folder):
    lean = LeanCheckpoint.open(folder, _local_config(folder))
    block = lean.layer(1).blocks[0]
    assert block.attn.W_Q.is_meta and block.mlp.W_in.is_meta  # unread: a circuit touching them fails loudly
    assert not block.attn.W_V.is_meta and not block.attn.W_O.is_meta and not block.ln1.w.is_meta
    assert not lean.layer(0).blocks[0].mlp.W_in.is_meta  # layer 0's MLP makes the effective embedding


@pytest.mark.parametrize("folder", ARCHITECTURES, indirect=True)
def test_bf16_keeps_the_ranking_of_fp32(folder):
    fp32, _ = lean_scan(folder)
    bf16, _ = lean_scan(folder, "bf16")
    assert [h for h, _, _ in bf16.top_heads(3)] == [h for h, _, _ in fp32.top_heads(3)]
    assert (bf16.scores - fp32.scores).abs().max() <= 0.02


@pytest.mark.parametrize("folder", ["gpt2"], indirect=True)
def test_a_sharded_checkpoint_reads_the_same_and_its_index_cannot_point_outside(folder, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(folder).save_pretrained(sharded, max_shard_size="200KB")
    AutoTokenizer.from_pretrained(folder).save_pretrained(sharded)
    assert len(list(sharded.glob("*.safetensors"))) > 1
    assert torch.equal(lean_scan(sharded)[0].scores, lean_scan(folder)[0].scores)
    index = sharded / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    doc["weight_map"][next(iter(doc["weight_map"]))] = "../elsewhere.safetensors"
    index.write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="not a file in the checkpoint folder"):
        LeanCheckpoint.open(sharded, _local_config(sharded))


@pytest.mark.parametrize("folder", ["gpt2"], indirect=True)
def test_the_residual_embedding_needs_the_whole_model(folder):
    with pytest.raises(UserError, match="whole model"):
        lean_scan(folder, config=ScanConfig(embedding="residual"))


def test_heads_lean_command_writes_the_full_paths_scores(hub_models, tmp_path, capsys):
    assert main(["heads", "--model", "gpt2", "--lean", "--dtype", "bf16", "--out", str(tmp_path / "lean")]) == 0
    assert "lean scan: read" in capsys.readouterr().out
    assert main(["heads", "--model", "gpt2", "--out", str(tmp_path / "full")]) == 0
    lean = json.loads((tmp_path / "lean" / "heads.json").read_text())
    full = json.loads((tmp_path / "full" / "heads.json").read_text())
    assert lean["top_heads"][0]["head"] == full["top_heads"][0]["head"] and lean["provenance"]["n_layers"] == full["provenance"]["n_layers"]
    assert lean["provenance"]["lean"]["dtype"] == "bf16"
    assert lean["provenance"]["dtype"] == "bf16" and full["provenance"]["dtype"] == "fp32"
    assert main(["heads", "--model", "planted-gpt2", "--lean", "--out", str(tmp_path / "x")]) == 2  # no safetensors checkpoint
    assert not (tmp_path / "x").exists()


def test_dtype_rounds_the_full_paths_weights_as_the_lean_path_reads_them(hub_models, tmp_path, capsys):
    """--dtype means one thing on both paths: the weights rounded to it, the arithmetic in fp32. On
    GPT-2 (a conversion that only moves numbers) the two bf16 scans agree exactly."""
    assert main(["heads", "--model", "gpt2", "--lean", "--dtype", "bf16", "--out", str(tmp_path / "lean")]) == 0
    assert main(["heads", "--model", "gpt2", "--dtype", "bf16", "--out", str(tmp_path / "full")]) == 0
    lean = json.loads((tmp_path / "lean" / "heads.json").read_text())
    full = json.loads((tmp_path / "full" / "heads.json").read_text())
    assert full["provenance"]["dtype"] == "bf16" and "lean" not in full["provenance"]
    assert lean["heads"] == full["heads"] and lean["top_heads"] == full["top_heads"]
    capsys.readouterr()
    # one model per run folder: the fp32 weights are another model than the bf16 ones
    assert main(["heads", "--model", "gpt2", "--out", str(tmp_path / "full")]) == 2
    assert "with its weights in bf16, not fp32" in capsys.readouterr().err
    assert json.loads((tmp_path / "full" / "heads.json").read_text()) == full
