"""The API does the obvious thing (a token set it can build, a Dictionary or an SAE, progress=False,
one set of defaults, short reprs), and commands go on where a user would: wild and edit on
the shipped corpus without python3-doc, the embedded models' Hugging Face ids offline, sparsify's multi-hookpoint folders,
dictionary_learning submodules named or refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from successor_lens.cli.main import main
from successor_lens.errors import UserError
from successor_lens.models.registry import canonical_name
from successor_lens.sae_train.batches import ShuffledBatches
from successor_lens.sae_train.dictionary import DictionaryError, load_dictionary
from successor_lens.sae_train.formats import FormatError, dictionary_learning_hook
from successor_lens.sae_train.train_config import DEFAULTS, TrainConfig, default_train_config
from successor_lens.sae_train.trainer import make_sae, train

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


# --- the API in a fresh interpreter ----------------------------------------------------------------

def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):text.index("## Commands")]
    (code,) = re.findall(r"```python\n(.*?)\n```", section, re.S)
    return code


# after the README's example, in the same interpreter: the rest of what the API promises
API = """
import json
from_sae = sl.mine(d.sae, acts, table)  # a sae-lens SAE gives what its Dictionary gives
assert mined.latent_class == from_sae.latent_class
null = sl.mining_null(d, acts, table, draws=3)
result = sl.run(model, "runs/whole", sl.RunConfig(seeds=1, steps=60, mine=sl.MineConfig(null_draws=3)), progress=False, log=lambda _: None)
undocumented = [n for n in sl.__all__ if n != "__version__" and not (getattr(sl, n).__doc__ or "").strip()]
print("FACTS", json.dumps({"classes": sorted(mined.classes_found), "top": scan.top_heads(1)[0][0], "undocumented": undocumented}))
for value in (scan, run, d, mined, result, table, null):
    print("REPR", repr(value))
for value in (scan, mined, result):
    print("HTML", value._repr_html_())
"""


@pytest.mark.slow
def test_the_readme_example_and_the_api_lines_run_as_written_in_a_fresh_interpreter_quietly_and_print_short(tmp_path):
    code = readme_example() + "\n" + API
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "%|" not in done.stderr and "it/s" not in done.stderr, done.stderr[-2000:]  # progress=False: no bar at all
    lines = done.stdout.splitlines()
    facts = json.loads(next(line for line in lines if line.startswith("FACTS "))[6:])
    assert facts == {"classes": list(range(10)), "top": "L2H1", "undocumented": []}  # the planted model's head and ten classes
    assert (tmp_path / "runs" / "api" / "sae-mlp0-succession-topk-s0" / "cfg.json").is_file()
    reprs = [line[5:] for line in lines if line.startswith("REPR ")]
    assert len(reprs) == 7
    for text in reprs:  # short, and no tensor dumped
        assert len(text) < 400 and "tensor(" not in text, text
    assert "passes the paper's bar" in reprs[0] and "chance" in reprs[0]
    htmls = [line[5:] for line in lines if line.startswith("HTML ")]
    assert len(htmls) == 3 and all(h.startswith("<div>") and "<table>" in h for h in htmls)
    assert any(" vs null " in line for line in lines[:lines.index(next(line for line in lines if line.startswith("FACTS ")))])  # the README's compare


def test_one_set_of_training_defaults_for_the_api_and_the_cli():
    from successor_lens.cli.main import build_parser
    from successor_lens.cli.train_cmd import config_from_args

    args = build_parser().parse_args(["train", "--site", "mlp0", "--out", "x"])
    assert config_from_args(args, 576) == TrainConfig()  # `successor-lens train` with no options is TrainConfig()
    assert default_train_config("succession", 576) == TrainConfig()
    assert {k: getattr(TrainConfig(), k) for k in DEFAULTS["succession"]} == DEFAULTS["succession"]


def test_a_stage_function_takes_a_dictionary_or_an_sae_and_refuses_anything_else():
    from successor_lens.features.matrix import latent_matrix
    from successor_lens.sae_train.dictionary import Dictionary, as_sae

    cfg = TrainConfig(d_sae=16, k=2, steps=2, batch_size=32)
    sae = make_sae(cfg, 8, {"model_name": "m", "hook_name": "blocks.0.hook_mlp_out"})
    x = torch.randn(10, 8)
    assert torch.equal(latent_matrix(Dictionary(sae, {}, "here"), x), latent_matrix(sae, x))
    assert as_sae(Dictionary(sae, {}, "here")) is sae
    with pytest.raises(UserError, match="expected an sae-lens SAE or a Dictionary"):
        as_sae({"W_dec": 1})
    assert len(repr(Dictionary(sae, {}, "here"))) < 200


def test_scan_heads_builds_the_default_token_set_itself():
    from successor_lens.models.loading import load_model
    from successor_lens.probes.scan import scan_heads
    from successor_lens.tasks import build_token_set

    model = load_model("planted-gpt2")
    own, given = scan_heads(model), scan_heads(model, build_token_set(model.tokenizer))
    assert torch.equal(own.scores, given.scores) and own.top_heads(1)[0][0] == "L2H1"


# --- commands --------------------------------------------------------------------------------------


def test_the_embedded_models_hugging_face_ids_resolve_to_them_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf" / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf" / "hub"))
    assert canonical_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m"
    assert canonical_name("huggingfacetb/smollm2-135m-instruct") == "smollm2-135m"
    assert canonical_name("google/gemma-3-270m") == "gemma3-270m"
    assert canonical_name("gpt2") == "gpt2" and canonical_name("./HuggingFaceTB/SmolLM2-135M-Instruct") != "smollm2-135m"
    from hub_cache import snapshot

    snapshot(tmp_path / "empty-hf", "HuggingFaceTB/SmolLM2-135M-Instruct").joinpath("config.json").write_text("{}")
    assert canonical_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the real checkpoint wins


@pytest.mark.slow
def test_a_dictionary_naming_the_hub_id_gets_its_atlas_on_the_embedded_model_offline(tmp_path, capsys):
    """dictionary_learning's lm_name (what our own export writes) is the Hugging Face id: no --model needed."""
    from successor_lens.sae_train.formats import write_dictionary_learning

    cfg = TrainConfig(d_sae=32, k=4, steps=2, batch_size=32)
    sae = make_sae(cfg, 576, {"model_name": "HuggingFaceTB/SmolLM2-135M-Instruct", "hook_name": "blocks.0.hook_mlp_out"})
    folder = tmp_path / "dl" / "trainer_0"
    folder.mkdir(parents=True)
    write_dictionary_learning(sae, folder)
    assert json.loads((folder / "config.json").read_text())["trainer"]["lm_name"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    code = main(["atlas", "--sae", str(folder), "--latents", "2", "--contexts", "4", "--corpus", "succession-lists", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "out" / "atlas" / "atlas.json").read_text())
    assert doc["model"]["name"] == "smollm2-135m"


def _topk_sae(seed: int = 0):
    cfg = TrainConfig(d_sae=32, k=4, steps=20, batch_size=64, seed=seed)
    sae = make_sae(cfg, 16, {"model_name": "planted-gpt2", "hook_name": "blocks.0.hook_mlp_out"})
    train(cfg, sae, ShuffledBatches(torch.randn(500, 16), 64), progress=False)
    return sae


def test_a_sparsify_multi_hookpoint_folder_loads_the_hookpoint_asked_for(tmp_path):
    from sparsify import Sae

    from successor_lens.sae_train.formats import write_sparsify

    run = tmp_path / "sparsify-run"
    saes = {"layers.0.mlp": _topk_sae(0), "layers.1": _topk_sae(1)}
    for name, sae in saes.items():
        (run / name).mkdir(parents=True)
        write_sparsify(sae, run / name)
    (run / "config.json").write_text(json.dumps({"model": "planted-gpt2", "hookpoints": list(saes)}))
    theirs = Sae.load_many(str(run), local=True)  # what sparsify itself reads from this folder
    assert sorted(theirs) == sorted(saes)
    with pytest.raises(DictionaryError, match=r"2 hookpoints \(layers.0.mlp, layers.1\): pick one with --hookpoint NAME"):
        load_dictionary(run)
    for name, sae in saes.items():
        d = load_dictionary(run, hookpoint=name)
        x = torch.randn(20, 16)
        enc = theirs[name].encode(x)
        with torch.no_grad():
            assert torch.allclose(d.sae.encode(x), torch.zeros(20, 32).scatter_(-1, enc.top_indices, enc.top_acts), atol=1e-5)
            assert torch.allclose(d.sae.W_dec, sae.W_dec)
    assert load_dictionary(run, hookpoint="layers.1").sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    with pytest.raises(DictionaryError, match="no hookpoint 'layers.7'"):
        load_dictionary(run, hookpoint="layers.7")
    with pytest.raises(UserError):
        load_dictionary(run, hookpoint="../escape")
    with pytest.raises(DictionaryError, match="drop --hookpoint"):
        load_dictionary(run / "layers.1", hookpoint="layers.1")


@pytest.mark.parametrize("name, hook", [("embed", "hook_embed"), ("mlp_out_layer0", "blocks.0.hook_mlp_out"),
                                        ("resid_post_layer_3", "blocks.3.hook_resid_post"), (None, "blocks.2.hook_resid_post")])
def test_dictionary_learning_submodules_map_to_their_hooks(name, hook):
    assert dictionary_learning_hook({"submodule_name": name, "layer": 2}) == hook


@pytest.mark.parametrize("name", ["attention_layer0", "mlp_in", "resid_post_layerX", "blocks.0.mlp"])
def test_an_unknown_dictionary_learning_submodule_is_an_error_naming_the_known_ones(name):
    with pytest.raises(FormatError, match=r"is not one this reads \(embed, mlp_out_layerN, resid_post_layerN.*give the hook it reads with --hook"):
        dictionary_learning_hook({"submodule_name": name, "layer": 0})


def test_a_free_form_dictionary_learning_submodule_is_given_its_hook(tmp_path, capsys):
    """Users write `mlp_0` or `resid_3`: the hook is given by name (API and --hook), never guessed."""
    from successor_lens.sae_train.formats import write_dictionary_learning

    sae = _topk_sae(0)
    folder = tmp_path / "dl" / "trainer_0"
    folder.mkdir(parents=True)
    write_dictionary_learning(sae, folder)
    doc = json.loads((folder / "config.json").read_text())
    doc["trainer"]["submodule_name"] = "mlp_0"
    (folder / "config.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="'mlp_0' is not one this reads"):
        load_dictionary(folder)
    d = load_dictionary(folder, hook="blocks.0.hook_mlp_out")
    assert d.sae.cfg.metadata.hook_name == "blocks.0.hook_mlp_out" and torch.allclose(d.sae.W_dec, sae.W_dec)
    with pytest.raises(DictionaryError, match="is not a TransformerLens hook name"):
        load_dictionary(folder, hook="../mlp")
    out = tmp_path / "converted"
    assert main(["convert", str(folder), "--hook", "blocks.0.hook_mlp_out", "--to", "sae-lens", "--out", str(out)]) == 0
    assert load_dictionary(out / "blocks.0.hook_mlp_out").sae.cfg.metadata.hook_name == "blocks.0.hook_mlp_out"
    capsys.readouterr()
    assert main(["convert", str(folder), "--to", "sae-lens", "--out", str(tmp_path / "c2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--hook" in err[0]


def test_results_are_iterable_indexable_and_rank_their_best():
    from successor_lens.features.mine_run import item_acts, item_table
    from successor_lens.features.mining import mine
    from successor_lens.models.loading import load_model
    from successor_lens.probes.scan import scan_heads
    from successor_lens.sae_train.dictionary import Dictionary

    model = load_model("planted-gpt2")
    scan = scan_heads(model)
    assert scan.best_head == "L2H1" and scan.top(3) == scan.top_heads(3) and scan[0] == scan.top_heads(1)[0]
    assert len(scan) == 16 and len(list(scan)) == 16 and scan["L2H1"] == scan[0]
    with pytest.raises(KeyError, match="4 layers x 4 heads"):
        scan["L9H0"]
    cfg = TrainConfig(d_sae=64, k=4, steps=2, batch_size=32)
    sae = make_sae(cfg, model.cfg.d_model, {"model_name": "planted-gpt2", "hook_name": "blocks.0.hook_mlp_out"})
    table = item_table(model)
    mined = mine(Dictionary(sae, {}, "here"), item_acts(model, table, "mlp0"), table)
    assert "NO null computed" in repr(mined)  # an untrained dictionary's count is not printed as a finding
    rows = list(mined)
    assert [c for c, _, _ in rows] == mined.classes_found and all(mined[c] == latents for c, latents, _ in rows)
    assert mined.top(2) == sorted(rows, key=lambda r: -(r[2] or 0.0))[:2]
    missing = next((c for c in range(10) if c not in mined.classes_found), None)
    if missing is not None:
        with pytest.raises(KeyError, match="no latent was assigned"):
            mined[missing]


def test_a_dictionary_encodes_decodes_and_shows_itself():
    from successor_lens.sae_train.dictionary import Dictionary

    cfg = TrainConfig(d_sae=16, k=2, steps=2, batch_size=32)
    sae = make_sae(cfg, 8, {"model_name": "m", "hook_name": "blocks.0.hook_mlp_out"})
    d, x = Dictionary(sae, {}, "<here>"), torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(d.encode(x), sae.encode(x)) and torch.equal(d.decode(d.encode(x)), sae.decode(sae.encode(x)))
    page = d._repr_html_()
    assert "blocks.0.hook_mlp_out" in page and "&lt;here&gt;" in page and "<here>" not in page


def test_a_head_the_model_lacks_is_one_line_before_the_probes_work(monkeypatch):
    import successor_lens as sl
    from successor_lens.probes import probe_run

    model = sl.load_model("planted-gpt2")
    monkeypatch.setattr(probe_run, "item_table", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(UserError, match="head L9H9 does not exist: planted-gpt2 has 4 layers x 4 heads"):
        sl.run_probes(model, {}, head="L9H9")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["edit", "wild"])
def test_wild_and_edit_read_the_shipped_docs_without_python3_doc(tmp_path, command):
    """Natural text with nothing from apt: the shipped Python docs, no fallback note."""
    out = tmp_path / "run"
    env = {**ENV, "SUCCESSOR_LENS_PYTHON_DOCS": str(tmp_path / "no-python3-doc" / "*")}
    spec = tmp_path / "ablate.json"
    spec.write_text(json.dumps({"name": "ablate", "edits": [{"kind": "ablate_head", "layer": 2, "head": 1}]}))
    args = (["edit", "--spec", str(spec), "--contexts", "4", "--ctx", "32"] if command == "edit"
            else ["wild", "--contexts", "4", "--ctx", "32", "--top", "5", "--cases", "2"])
    done = subprocess.run([sys.executable, "-m", "successor_lens", *args, "--model", "planted-gpt2", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "python3-doc" not in done.stdout
    record = out / ("edits/ablate.json" if command == "edit" else "wild.json")
    assert json.loads(record.read_text())["provenance"]["corpus"] == "python-docs"


def test_threads_follow_the_cores_this_process_may_use_or_threads(monkeypatch):
    from successor_lens import threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0}, raising=False)  # pinned to one core
        assert threads.usable_cores() == 1 and threads.set_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice wins over the affinity
        assert threads.set_threads() == 2 and torch.get_num_threads() == 2
        assert threads.set_threads(1) == 1 and torch.get_num_threads() == 1  # --threads wins over both
        assert main(["heads", "--model", "no-such-model", "--threads", "2"]) == 2 and torch.get_num_threads() == 2  # set before the command
    finally:
        torch.set_num_threads(before)
