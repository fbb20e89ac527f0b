"""`successor-lens run` and `successor-lens atlas` on the real embedded model (small settings)."""

import json

import jsonschema
import pytest

from successor_lens.artifacts.atlas_schema import SCHEMA
from successor_lens.cli.main import main

pytestmark = pytest.mark.slow  # a whole run on the real embedded model


def test_run_on_the_embedded_model_writes_the_atlas_then_reuses_every_stage(embedded_model, tmp_path, capsys):
    tmp_path, beside = tmp_path / "run", tmp_path  # the lone dictionary's atlas goes beside the run (folders of ours do not nest)
    args = ["run", "--seeds", "1", "--steps", "200", "--latents", "3", "--null-draws", "9", "--contexts", "8", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cached nothing" in out and f"atlas: {tmp_path / 'atlas' / 'index.html'}" in out
    summary = out.split("report.md)\n", 1)[1].strip().splitlines()
    assert len(summary) == 9 and summary[0].lstrip().startswith("best head by OV succession score: ")
    doc = json.loads((tmp_path / "atlas" / "atlas.json").read_text())
    jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert doc["model"]["n_layers"] == 30 and doc["provenance"]["weight_processing"]["fold_ln"] is False
    chosen = json.loads((tmp_path / "summary.json").read_text())["analysis_head"]
    assert doc["logit_head"] == doc["probes"]["head"] == chosen and not doc["heads"]["passes_bar"]
    assert "does NOT pass the paper's bar" in summary[0]

    assert main(args) == 0
    assert "ran nothing; cached heads, activations, saes, mine, incontext, probes, atlas" in capsys.readouterr().out

    assert main(["atlas", "--sae", str(tmp_path / "saes" / "embed-s0"), "--latents", "2", "--out", str(beside / "one")]) == 0
    one = json.loads((beside / "one" / "atlas" / "atlas.json").read_text())
    assert one["saes"][0]["hook_name"] == "hook_embed" and len(one["saes"][0]["latents"]) == 2


def test_run_rejects_a_bad_head_name_in_one_line(tmp_path, capsys):
    assert main(["run", "--head", "layer3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layer3" in err[0]
