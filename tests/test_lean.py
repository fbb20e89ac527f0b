"""The lean path (`models.lean`): a checkpoint read one layer at a time, only the tensors a stage
uses, gives the full TransformerLens path's head scores and vocabulary-level activations on every
architecture the project loads; bf16 keeps the ranking; the rest of each layer is never read; and
`run --lean` makes the stages a run loading the whole model makes, which reuses them."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hub_cache import snapshot, tiny_gemma3

from successor_lens.cli.main import main
from successor_lens.errors import ModelLoadError, UserError
from successor_lens.features.mine_config import MineConfig
from successor_lens.models.hub import HubSource
from successor_lens.models.lean import LeanCheckpoint
from successor_lens.models.loading import LazyModel, load_model
from successor_lens.models.local import _local_config
from successor_lens.probes.probe_configs import ScanConfig
from successor_lens.probes.scan import lean_top_in_task, scan_heads
from successor_lens.runner.run_config import RunConfig
from successor_lens.runner.stages import StageBodies
from successor_lens.sae_train.harvest import succession_items
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sites import hook_name, item_activations
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


@pytest.mark.parametrize("folder", ARCHITECTURES, indirect=True)
def test_the_fronts_vocabulary_activations_are_the_whole_models(folder):
    """The embed and mlp0 sites of every succession item, multi-token items read in context
    included, from the embeddings and layer 0 alone, equal the whole model's; past block 0 it fails."""
    lean = LeanCheckpoint.open(folder, _local_config(folder))
    front = lean.front({"kind": "local", "source": "test"})
    full = load_model(str(folder))
    items, source = succession_items(full.tokenizer)
    for site in ("embed", "mlp0"):
        assert torch.equal(item_activations(front, items, hook_name(site)), item_activations(full, items, hook_name(site)))
    assert source["n_multi_token_items"] > 0  # every tiny tokenizer here splits some numbers
    assert lean.read_params < lean.total_params and front.blocks[-1].attn.W_V.is_meta
    with pytest.raises((RuntimeError, NotImplementedError)):  # a stage that needed the whole model could not go on silently
        front(torch.tensor([items[0]]))


RUN = ["--steps", "40", "--seeds", "2", "--null-draws", "2", "--latents", "2", "--contexts", "4"]


def test_run_lean_makes_the_whole_models_stages_without_it_and_a_whole_run_reuses_them(hub_models, tmp_path, capsys, monkeypatch):
    lean, full = tmp_path / "lean", tmp_path / "full"

    def never(*args, **kwargs):
        raise AssertionError("the whole model was loaded")

    with monkeypatch.context() as m:
        m.setattr(HubSource, "load", never)
        assert main(["run", "--model", "gpt2", "--lean", *RUN, "--out", str(lean)]) == 0
    out = capsys.readouterr().out
    assert "ran heads, activations, saes, mine; cached nothing; not run incontext, probes, atlas" in out
    assert "NOT above its null" in out or "above its null" in out  # the scan's and the mining's figures beside their nulls
    assert not (lean / "atlas").exists()
    printed = [line.strip() for line in out.split("no atlas yet", 1)[1].splitlines()[1:4]]  # the scan's and the mining's lines
    whole = StageBodies(LazyModel("gpt2", log=lambda _: None), full, RunConfig(seeds=2, steps=40, mine=MineConfig(null_draws=2)),
                        Runtime("cpu"), progress=False)
    for stage in ("heads", "activations", "saes", "mine"):  # what `run` without --lean writes for them (no atlas: it is not compared)
        getattr(whole, stage)()
    for site in ("mlp0", "embed"):  # the same rows, so the same dictionaries and the same mining
        meta = [json.loads((f / "activations" / f"{site}-succession" / "meta.json").read_text()) for f in (lean, full)]
        assert meta[0]["data_sha256"] == meta[1]["data_sha256"] and meta[0]["lean"]["dtype"] == "fp32" and "lean" not in meta[1]
    for name in ("mlp0-s0", "mlp0-s1", "embed-s0"):
        assert (lean / "saes" / name / "sae_weights.safetensors").read_bytes() == (full / "saes" / name / "sae_weights.safetensors").read_bytes()
    heads, mine = ([json.loads((f / record).read_text()) for f in (lean, full)] for record in ("heads.json", "mine.json"))
    assert heads[0]["heads"] == heads[1]["heads"] and mine[0]["per_sae"] == mine[1]["per_sae"] and mine[0]["figures"] == mine[1]["figures"]
    capsys.readouterr()
    assert main(["run", "--model", "gpt2", *RUN, "--out", str(lean)]) == 0
    assert "ran incontext, probes, atlas; cached heads, activations, saes, mine" in capsys.readouterr().out
    assert (lean / "atlas" / "index.html").is_file()
    assert all(line in json.loads((lean / "summary.json").read_text())["lines"] for line in printed)  # word for word the whole run's


@pytest.mark.parametrize("bad, says", [(["--model", "planted-gpt2"], "safetensors checkpoint"),
                                       (["--model", "gpt2", "--embedding", "residual"], "whole model")])
def test_run_lean_refuses_what_it_cannot_read_in_one_line_before_any_work(hub_models, tmp_path, capsys, bad, says):
    assert main(["run", *bad, "--lean", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
