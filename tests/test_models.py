"""Every kind of model source, loaded as a user would: hub names through TransformerLens's own
`from_pretrained` on the tests' offline Hugging Face cache (tiny random models under official names),
local checkpoint folders, the embedded models, and the conversion cache (strict, keyed by content)."""

from __future__ import annotations

import json
import os
import shutil
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from hub_cache import COMMIT, snapshot, tiny_gemma3
from transformers import AutoModelForCausalLM

from successor_lens import models
from successor_lens.cli.common import out_dir
from successor_lens.errors import ModelLoadError
from successor_lens.models import embedded
from successor_lens.models.loading import load_model, model_shape, shape_of
from successor_lens.models.provenance import model_provenance
from successor_lens.tasks import build_token_set

HUB = ["gpt2", "EleutherAI/pythia-70m", "01-ai/Yi-6B"]


def max_logit_gap(ours, hf_model, vocab: int) -> float:
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # ids given: no BOS is added on either side
        return (ours(ids) - hf_model(ids).logits).abs().max().item()


def same_shape(shape, model) -> bool:
    return {k: v for k, v in vars(shape).items() if k != "name"} == {k: v for k, v in vars(shape_of(model)).items() if k != "name"}


@pytest.mark.parametrize("name", HUB)
def test_hub_names_load_through_transformer_lens_as_online(hub_models, name):
    ours = load_model(name)
    hf_model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32).eval()  # the same cache, as transformers reads it
    assert max_logit_gap(ours, hf_model, ours.cfg.d_vocab) < 1e-4
    prov = model_provenance(ours)
    assert prov["kind"] == "hub" and prov["hub_snapshot"] == COMMIT and prov["source"] == f"Hugging Face hub: {name}"
    assert same_shape(model_shape(name), ours)  # the shape known before the weights load is the loaded one


def test_tokenizers_are_read_as_they_are(hub_models, embedded_model):
    gpt2 = load_model("gpt2")
    facts = model_provenance(gpt2)["tokenizer"]
    assert facts["numbers"] == "single tokens" and facts["numbers_0_500_single_token"] == 446 and facts["prepends_bos"]
    token_set = build_token_set(gpt2.tokenizer)
    numbers = [(a, b) for a, b in token_set.successor_pairs() if token_set.items[a].task == "numbers"]
    assert len(numbers) == 199  # " 1".." 200" as single tokens, as in the paper
    yi = model_provenance(load_model("01-ai/Yi-6B"))["tokenizer"]
    assert yi["numbers"] == "digit strings" and yi["prepends_bos"] and yi["bos_token"] == "<s>"
    smol = model_provenance(embedded_model)["tokenizer"]
    assert smol["numbers"] == "digit strings" and not smol["prepends_bos"]


@pytest.mark.parametrize("repo, folder", [("gpt2", "gpt2-finetune"), ("EleutherAI/pythia-70m", "pythia-step1000"),
                                          ("01-ai/Yi-6B", "my-llama-checkpoint"), (None, "my-gemma-3")])
def test_local_folders_load_and_match_transformers(hub_models, tmp_path, repo, folder):
    path = tmp_path / folder  # names with "llama" or "gemma" in them: the config must come from config.json
    if repo:
        shutil.copytree(snapshot(hub_models, repo), path)
    else:
        model, tok = tiny_gemma3()
        model.save_pretrained(path)
        tok.save_pretrained(path)
    ours = load_model(str(path))
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert max_logit_gap(ours, hf_model, ours.cfg.d_vocab) < 1e-4
    prov = model_provenance(ours)
    assert prov["kind"] == "local" and prov["model"] == folder and len(prov["weights_sha256"]) == 64
    assert same_shape(model_shape(str(path)), ours)
    assert out_dir(Namespace(out=None, model=str(path), dtype="fp32")) == Path("runs") / folder  # never the checkpoint folder itself


def test_a_local_folders_fingerprint_covers_its_tokenizer(hub_models, tmp_path):
    """The same weights with another tokenizer are another model: their stages must not be
    "cached" from each other's run folder (they were, when only weights and config were hashed)."""
    path = tmp_path / "ckpt"
    shutil.copytree(snapshot(hub_models, "gpt2"), path)
    before = models.source_fingerprint(str(path))
    tokenizer_files = [f for f in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json") if (path / f).is_file()]
    assert tokenizer_files
    for name in tokenizer_files:  # every tokenizer file counts, one at a time
        original = (path / name).read_bytes()
        (path / name).write_bytes(original + b"\n ")
        assert models.source_fingerprint(str(path)) != before, name
        (path / name).write_bytes(original)
        assert models.source_fingerprint(str(path)) == before
    (path / "generation_config.json").write_text('{"bos_token_id": 7}')
    assert models.source_fingerprint(str(path)) != before  # an added generation file too


def test_local_folder_problems_are_one_line(hub_models, tmp_path):
    good = snapshot(hub_models, "gpt2")
    cases = {"no-config": ("config.json", "no config.json"), "pickled": ("model.safetensors", r"no \*.safetensors weights"),
             "no-tokenizer": ("tokenizer", "no tokenizer files")}
    for name, (drop, message) in cases.items():
        folder = tmp_path / name
        shutil.copytree(good, folder)
        for f in folder.glob(drop + "*"):
            f.unlink()
        if name == "pickled":
            (folder / "pytorch_model.bin").write_bytes(b"not loaded")
        with pytest.raises(ModelLoadError, match=message) as err:
            model_shape(str(folder))
        assert "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(str(tmp_path / "missing"))
    mismatched = tmp_path / "mismatched"  # weights that do not match the config: one line, not a size-mismatch traceback
    shutil.copytree(good, mismatched)
    config = json.loads((mismatched / "config.json").read_text())
    config["n_embd"] *= 2
    (mismatched / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="its weights do not load as its config.json describes") as err:
        load_model(str(mismatched))
    assert "\n" not in str(err.value)


def test_gemma3_config_from_the_checkpoint_is_transformer_lens_own(gemma_model):
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config
    from transformers import AutoConfig

    ours = models.gemma3_config(AutoConfig.from_pretrained(models.cache_root() / "gemma3-270m" / "hf_config"), "gemma3-270m")
    theirs = get_pretrained_model_config("google/gemma-3-270m")
    skip = {"model_name", "tokenizer_name", "n_params", "device", "dtype", "init_weights", "eps"}  # init_weights: how TL builds, not what
    a, b = ours.to_dict(), theirs.to_dict()
    assert {k: str(v) for k, v in a.items() if k not in skip} == {k: str(v) for k, v in b.items() if k not in skip}
    assert a["eps"] == pytest.approx(b["eps"], rel=1e-6)  # the GGUF stores 1e-6 as float32


def test_gemma_logits_match_transformers(gemma_model):
    hf_model, tokenizer = models.load_embedded_hf("gemma3-270m")
    ids = torch.tensor([tokenizer.encode("Monday, Tuesday, Wednesday, 1, 2, 3,")])  # with its BOS
    with torch.no_grad():
        assert (gemma_model(ids) - hf_model(ids).logits).abs().max().item() < 1e-3
    prov = model_provenance(gemma_model)
    assert prov["kind"] == "embedded" and prov["gguf_sha256"] == embedded._published_sha256("gemma3-270m", "gemma-3-270m-q4_k_m.gguf")
    assert prov["tokenizer"]["numbers"] == "digit strings" and prov["tokenizer"]["prepends_bos"]
    assert same_shape(model_shape("gemma3-270m"), gemma_model)


def test_the_conversion_cache_is_strict_and_keyed_by_content(embedded_model, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    cache = tmp_path / "smollm2-135m"
    shutil.copytree(models.cache_root() / "smollm2-135m", cache)
    converted = []
    monkeypatch.setattr(embedded, "_convert_embedded", lambda name, folder, key: converted.append(key) or pytest.fail("converted"))
    assert torch.equal(load_model("smollm2-135m", cache_dir=cache).W_E, embedded_model.W_E)  # the key matches: no conversion

    original = (cache / "weights.safetensors").read_bytes()
    state = load_file(cache / "weights.safetensors")
    changed = dict(state)
    changed["blocks.0.attn.W_O"] = state["blocks.0.attn.W_O"].flip(0)  # one tensor changed, same shape (it changed the best head)
    save_file(changed, cache / "weights.safetensors")
    with pytest.raises(ModelLoadError, match="weights.safetensors is not what the conversion wrote .*: delete .* to convert the model again"):
        load_model("smollm2-135m", cache_dir=cache)
    dropped = sorted(state)[3]
    save_file({k: v for k, v in state.items() if k != dropped}, cache / "weights.safetensors")
    with pytest.raises(ModelLoadError, match="bytes the conversion wrote \\(truncated or replaced\\): delete"):
        load_model("smollm2-135m", cache_dir=cache)
    (cache / "weights.safetensors").write_bytes(original)
    assert torch.equal(load_model("smollm2-135m", cache_dir=cache).W_E, embedded_model.W_E)  # the same bytes again: it loads

    def converts(**change):
        meta = json.loads((cache / "meta.json").read_text())
        meta["key"].update(change)
        (cache / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(pytest.fail.Exception, match="converted"):
            load_model("smollm2-135m", cache_dir=cache)
        return converted.pop()

    assert converts(transformers="0.0.1")["transformers"] != "0.0.1"  # another library version: converted again
    assert converts(transformer_lens="0.0.1")["transformer_lens"] != "0.0.1"
    assert converts(gguf_sha256="0" * 64)["gguf_sha256"] == embedded.cache_key("smollm2-135m")["gguf_sha256"]  # another GGUF


@pytest.mark.slow
def test_a_hub_name_with_an_empty_cache_offline_is_one_line_before_any_work(tmp_path):
    """`successor-lens run --model gpt2` on a machine that never downloaded it: one line naming the
    problem and the fix, exit 2, no folder claimed (it once ended in a NameError from a moved function)."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HOME": str(tmp_path / "empty-hf-home"), "HF_HUB_OFFLINE": "1", "SUCCESSOR_LENS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "successor_lens", "run", "--model", "gpt2", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpt2" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0] and "--model smollm2-135m" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_the_random_like_control_has_the_embedded_models_architecture_and_tokenizer(embedded_model):
    random_model = load_model("random-smollm2-135m")
    assert random_model.cfg.n_layers == embedded_model.cfg.n_layers and random_model.cfg.d_model == embedded_model.cfg.d_model
    assert random_model.cfg.n_key_value_heads == embedded_model.cfg.n_key_value_heads
    assert random_model.tokenizer.encode("Monday 123") == embedded_model.tokenizer.encode("Monday 123")
    assert torch.equal(random_model.W_U, random_model.W_E.T)  # tied, as SmolLM2's
    assert not torch.allclose(random_model.W_E, embedded_model.W_E)
    assert model_provenance(random_model)["kind"] == "control"


def test_gemma_circuits_equal_its_own_forward(gemma_model):
    """The real Gemma 3: the MLP0 effective embedding is what block 0 writes (ln2_post included)."""
    from transformer_lens.utilities import get_act_name

    from successor_lens.sites import mlp0_out

    tokens = torch.tensor([236743, 236770, 36384, 1018])
    zero = lambda x, hook: torch.zeros_like(x)  # noqa: E731
    ref = {}
    gemma_model.run_with_hooks(tokens[:, None], stop_at_layer=1, fwd_hooks=[
        (get_act_name("attn_out", 0), zero), (get_act_name("mlp_out", 0), lambda x, hook: ref.setdefault("x", x[:, 0].clone()))])
    ours = mlp0_out(gemma_model, tokens)
    assert torch.nn.functional.cosine_similarity(ours, ref["x"]).min() > 0.9999
    skipped = mlp0_out(gemma_model, tokens, post_norms=False)  # the old reading
    assert torch.nn.functional.cosine_similarity(skipped, ref["x"]).max() < 0.9


def test_dtype_rounds_every_weight_and_is_recorded_and_keyed():
    from successor_lens.models.registry import loaded_fingerprint
    from successor_lens.probes.scan import scan_heads

    fp32, bf16 = load_model("planted-gpt2"), load_model("planted-gpt2", dtype="bf16")
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # held as bf16 rounds them, summed in fp32
    assert all(torch.equal(p, p.bfloat16().float()) for p in bf16.parameters())
    assert not all(torch.equal(p, p.bfloat16().float()) for p in fp32.parameters())  # the rounding is real on this model
    assert all(torch.equal(b, a.bfloat16().float()) for a, b in zip(fp32.parameters(), bf16.parameters(), strict=True))
    assert model_provenance(fp32)["dtype"] == "fp32" and model_provenance(bf16)["dtype"] == "bf16"
    # every cache keyed by the model tells the two apart; fp32 keeps the fingerprint it had before --dtype
    assert bf16.successor_lens_fingerprint == loaded_fingerprint("planted-gpt2", "bf16") != fp32.successor_lens_fingerprint
    assert fp32.successor_lens_fingerprint == models.source_fingerprint("planted-gpt2")
    # the scan's ranking survives bf16 (the lean path's bf16 is checked in test_lean.py)
    a, b = scan_heads(fp32), scan_heads(bf16)
    assert [h for h, _, _ in a.top_heads(3)] == [h for h, _, _ in b.top_heads(3)]
    with pytest.raises(ModelLoadError, match="--dtype 'int8'"):
        load_model("planted-gpt2", dtype="int8")


def test_every_command_that_loads_a_model_takes_dtype_and_its_default_folder_is_its_own():
    from successor_lens.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    loaders = [name for name, p in sub.choices.items() if any("--model" in a.option_strings for a in p._actions)]
    assert {"run", "heads", "train", "mine", "probe", "wild", "roles", "edit", "tune", "atlas"} <= set(loaders)
    for name in loaders:
        flags = {s: a for a in sub.choices[name]._actions for s in a.option_strings}
        assert flags["--dtype"].choices == ["fp32", "bf16", "fp16"] and flags["--dtype"].default == "fp32", name
    assert out_dir(Namespace(out=None, model="gpt2", dtype="bf16")) == Path("runs/gpt2-bf16")
    assert out_dir(Namespace(out=None, model="gpt2", dtype="fp32")) == Path("runs/gpt2")
