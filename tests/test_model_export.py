"""`edit --export-model`: the edited checkpoint as transformers loads it gives the hooked edit's
logits, on every architecture the exporter knows; edits that are not exact weight edits, models
without a checkpoint and folders that are not ours are refused with one line, nothing written."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import types
from pathlib import Path

import pytest
import torch
from hub_cache import snapshot, tiny_gemma3
from transformers import AutoModelForCausalLM

from successor_lens.artifacts.model_export import check_exportable, export_model
from successor_lens.cli.main import main
from successor_lens.errors import ConfigError
from successor_lens.filenames import EXPORT_JSON
from successor_lens.io import file_sha256
from successor_lens.models.loading import load_model
from successor_lens.probes.edits import Edit, EditSet
from successor_lens.runner.folders import run_folder

EDITS = [Edit("scale_head", 0, 1, factor=2.5), Edit("ablate_head", 1, 0), Edit("scale_head", 1, 1, factor=-0.5)]


def logprobs(model, ids, hooks=()):
    with torch.no_grad():
        return model.run_with_hooks(ids, fwd_hooks=list(hooks)).log_softmax(-1)


@pytest.mark.parametrize("repo", ["gpt2", "EleutherAI/pythia-70m", "01-ai/Yi-6B", "gemma3-local"])
def test_exported_checkpoint_gives_the_hooked_edits_logits(hub_models, tmp_path, repo):
    if repo == "gemma3-local":  # Gemma 3: post-norms after each sublayer, the head's output still enters through o_proj
        repo = str(tmp_path / "my-gemma-3")
        model_hf, tok = tiny_gemma3()
        model_hf.save_pretrained(repo)
        tok.save_pretrained(repo)
        kind = "local"
    else:
        kind = "hub"
    hooked = load_model(repo)
    ids = torch.randint(0, hooked.cfg.d_vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    edited = logprobs(hooked, ids, EditSet(hooked, EDITS).hooks())
    with run_folder(tmp_path / "export", "export", model=repo) as dest:
        written = export_model(repo, kind, EDITS, "t", dest)
    assert (dest / EXPORT_JSON) in written and any(p.suffix == ".safetensors" for p in written)
    umask = os.umask(0)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in written)  # shared as every artefact (save_pretrained makes 0600)
    hf_model = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32).eval()
    with torch.no_grad():
        exported = hf_model(ids).logits.log_softmax(-1)
    assert (exported - edited).abs().max() < 1e-4
    assert (exported - logprobs(hooked, ids)).abs().max() > 1e-2  # the edit did change the model
    record = json.loads((dest / EXPORT_JSON).read_text())
    assert record["edits"][0]["factor"] == 2.5 and set(record["sha256"]) == set(record["files"])


@pytest.mark.parametrize("edit, message", [
    (Edit("add_feature", 0, 0, feature=3, scale=2.0), "not a weight edit"),
    (Edit("ablate_head", 0, 0, mode="mean"), "mode mean"),
])
def test_edits_that_are_not_exact_weight_edits_are_refused(edit, message):
    with pytest.raises(ConfigError, match=message):
        check_exportable([edit], "hub", "gpt2")


def test_a_generated_model_has_no_checkpoint_to_export():
    with pytest.raises(ConfigError, match="no Hugging Face checkpoint"):
        check_exportable(EDITS[:1], "control", "planted-gpt2")


def test_export_into_a_folder_that_is_not_ours_is_one_line_and_writes_nothing(hub_models, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"edits": [{"kind": "scale_head", "layer": 0, "head": 1, "factor": 2.0}]}))
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code = main(["edit", "--model", "gpt2", "--spec", str(spec), "--out", str(tmp_path / "run"), "--export-model", str(foreign)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--export-model" in err[0] and "did not write" in err[0]
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"] and not (tmp_path / "run").exists()
    feature = tmp_path / "feature.json"
    feature.write_text(json.dumps({"edits": [{"kind": "add_feature", "layer": 0, "head": 1, "feature": 2, "scale": 1.0}]}))
    assert main(["edit", "--model", "gpt2", "--spec", str(feature), "--out", str(tmp_path / "run"),
                 "--export-model", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists() and not (tmp_path / "run").exists()


def test_edit_command_exports_and_a_rerun_replaces_its_own_files(hub_models, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "up", "edits": [{"kind": "scale_head", "layer": 0, "head": 1, "factor": 2.0}]}))
    args = ["edit", "--model", "gpt2", "--spec", str(spec), "--out", str(tmp_path / "run"), "--export-model", str(tmp_path / "exp"),
            "--corpus", "succession-lists", "--contexts", "2", "--ctx", "16"]
    assert main(args) == 0
    first = json.loads((tmp_path / "exp" / EXPORT_JSON).read_text())
    (tmp_path / "exp" / "my-notes.txt").write_text("kept")  # a user's file beside ours is never removed
    spec.write_text(json.dumps({"name": "up", "edits": [{"kind": "scale_head", "layer": 0, "head": 1, "factor": 3.0}]}))
    assert main(args) == 0
    second = json.loads((tmp_path / "exp" / EXPORT_JSON).read_text())
    assert second["edits"][0]["factor"] == 3.0 and first["sha256"] != second["sha256"]
    assert (tmp_path / "exp" / "my-notes.txt").read_text() == "kept"
    # a file an older export wrote and this one does not is removed only while it holds the bytes its record hashed
    record = tmp_path / "exp" / EXPORT_JSON
    (tmp_path / "exp" / "stale.bin").write_bytes(b"an older export's file")
    doc = json.loads(record.read_text())
    doc["files"] += ["stale.bin", "my-notes.txt", ""]
    doc["sha256"].update({"stale.bin": file_sha256([tmp_path / "exp" / "stale.bin"]), "my-notes.txt": "0" * 64})
    record.write_text(json.dumps(doc))
    assert main(args) == 0
    assert not (tmp_path / "exp" / "stale.bin").exists() and (tmp_path / "exp" / "my-notes.txt").read_text() == "kept"
    # examples/exported_succession.py measures it with transformers alone, beside the hooked edit
    script = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "exported_succession.py"))
    script["main"](str(tmp_path / "exp"))
    lines = {line.rsplit(" ", 1)[0].strip(): float(line.rsplit(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()[-3:]}
    assert lines["transformers, exported folder"] == lines["TransformerLens, hooked edit"]
    shutil.rmtree(tmp_path / "exp")
    assert snapshot(hub_models, "gpt2").is_dir()  # the source checkpoint is untouched


def test_a_reexport_never_overwrites_a_file_the_user_changed_and_a_killed_one_finishes(hub_models, tmp_path, monkeypatch, capsys):
    from successor_lens.artifacts import model_export

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "up", "edits": [{"kind": "scale_head", "layer": 0, "head": 1, "factor": 2.0}]}))
    exp = tmp_path / "exp"
    args = ["edit", "--model", "gpt2", "--spec", str(spec), "--out", str(tmp_path / "run"), "--export-model", str(exp),
            "--corpus", "succession-lists", "--contexts", "2", "--ctx", "16"]
    assert main(args) == 0
    (exp / "config.json").write_text((exp / "config.json").read_text().replace("{", '{"my_note": 1, ', 1))  # the user edits our file
    edited = (exp / "config.json").read_bytes()
    record = (exp / EXPORT_JSON).read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("successor-lens")]  # less the loaders' bars
    assert len(err) == 1 and "config.json is not the file the last export wrote" in err[0]
    assert (exp / "config.json").read_bytes() == edited and (exp / EXPORT_JSON).read_bytes() == record  # nothing replaced
    (exp / "config.json").unlink()
    # killed after the first file moved in: the record names old and new bytes, and a rerun finishes
    spec.write_text(json.dumps({"name": "up", "edits": [{"kind": "scale_head", "layer": 0, "head": 1, "factor": 3.0}]}))
    moved: list = []

    def replace_then_die(a, b):  # the export's own moves only (write_json's atomic renames are another module's)
        if moved:
            raise KeyboardInterrupt  # as a kill between two files
        moved.append(b)
        return os.replace(a, b)

    monkeypatch.setattr(model_export, "os", types.SimpleNamespace(replace=replace_then_die))
    assert main(args) == 130
    monkeypatch.setattr(model_export, "os", os)
    assert len(moved) == 1 and "pending" in json.loads((exp / EXPORT_JSON).read_text())
    assert main(args) == 0
    doc = json.loads((exp / EXPORT_JSON).read_text())
    assert "pending" not in doc and doc["edits"][0]["factor"] == 3.0
    assert all(file_sha256([exp / n]) == h for n, h in doc["sha256"].items())
    # a full disk while writing: one line, the last export's record and files as they were
    before = {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()}

    def full(*a, **k):
        from safetensors import SafetensorError

        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })")

    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", full)
    capsys.readouterr()
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("successor-lens")]
    assert len(err) == 1 and "free space" in err[0]
    assert {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_an_embedded_gguf_model_exports_as_plain_safetensors(embedded_model, tmp_path):
    edits = [Edit("scale_head", 29, 1, factor=2.0), Edit("ablate_head", 23, 3)]
    ids = torch.randint(0, embedded_model.cfg.d_vocab, (1, 10), generator=torch.Generator().manual_seed(0))
    edited = logprobs(embedded_model, ids, EditSet(embedded_model, edits).hooks())
    with run_folder(tmp_path / "export", "export", model="smollm2-135m") as dest:
        export_model("smollm2-135m", "embedded", edits, "t", dest)
    config = json.loads((dest / "config.json").read_text())
    assert "quantization_config" not in config and not list(dest.glob("*.gguf"))
    hf_model = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32).eval()
    with torch.no_grad():
        exported = hf_model(ids).logits.log_softmax(-1)
    assert (exported - edited).abs().max() < 1e-3
