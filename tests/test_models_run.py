"""The whole job on models other than the default: each hub-name fixture (GPT-2, GPT-NeoX, Llama
architecture; tiny, random weights), the second embedded model (Gemma 3 270M), and the cross-model
report over their run folders.

The fixtures are not null controls (random-gpt2 is: test_controls.py). With a tokenizer that splits
numbers into digits, a number read at its last digit carries its index mod 10 in its last token, so
even random weights show mod-10 structure on numbers, and some figures come out above their nulls."""

from __future__ import annotations

import json

import pytest

from successor_lens.cli.main import main

pytestmark = pytest.mark.slow  # whole runs on hub models and Gemma

SHORT = ["--steps", "40", "--seeds", "2", "--latents", "2", "--null-draws", "9", "--contexts", "8"]
FIGURES = ("best_score", "classes_found", "modal_coverage", "probe_accuracy", "probe_feature_cosine", "arithmetic", "overshoot")


@pytest.fixture(scope="module")
def runs(hub_models, tmp_path_factory):
    out = {}
    for name in ("gpt2", "EleutherAI/pythia-70m", "01-ai/Yi-6B"):
        folder = tmp_path_factory.mktemp("runs") / name.replace("/", "_")
        assert main(["run", "--model", name, *SHORT, "--out", str(folder)]) == 0
        out[name] = folder
    return out


@pytest.mark.parametrize("name", ["gpt2", "EleutherAI/pythia-70m", "01-ai/Yi-6B"])
def test_run_completes_on_each_hub_model_with_every_figure_beside_its_null(runs, name):
    summary = json.loads((runs[name] / "summary.json").read_text())
    assert summary["provenance"]["kind"] == "hub" and summary["provenance"]["source"] == f"Hugging Face hub: {name}"
    assert set(FIGURES) <= set(summary["above_null"])
    lines = dict(zip(("best head", "analysis", "ablation", "classes", "coverage", "probe", "cosine", "arithmetic", "overshoot"), summary["lines"]))
    for key, figure in (("classes", "classes_found"), ("coverage", "modal_coverage"), ("probe", "probe_accuracy"),
                        ("cosine", "probe_feature_cosine"), ("arithmetic", "arithmetic"), ("overshoot", "overshoot"),
                        ("ablation", "ablation_loss_rise")):
        # the words say what the verdict says
        assert ("NOT above its null" in lines[key]) == (not summary["above_null"][figure]), (key, lines[key])
    assert (runs[name] / "atlas" / "index.html").is_file()


def test_run_on_gemma3_270m(gemma_model, tmp_path, capsys):
    assert main(["run", "--model", "gemma3-270m", *SHORT, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == "gemma3-270m" and summary["provenance"]["tokenizer"]["numbers"] == "digit strings"
    heads = json.loads((tmp_path / "heads.json").read_text())
    assert len(heads["heads"]) == 18 * 4 and heads["provenance"]["kind"] == "embedded"
    assert set(FIGURES) <= set(summary["above_null"])


def test_compare_puts_the_runs_side_by_side_with_links(runs, tmp_path, capsys):
    a, b = runs["gpt2"], runs["EleutherAI/pythia-70m"]
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    table = (out / "compare.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| measure"))
    assert "| gpt2 | pythia-70m | paper" in header  # TransformerLens's model names
    for folder in (a, b):
        summary = json.loads((folder / "summary.json").read_text())
        assert f"{summary['best_head']} {summary['best_score']:.3f}" in table
    page = (out / "index.html").read_text()
    assert page.count('atlas/index.html"') == 2 and "Content-Security-Policy" in page
    assert (out / "succession_scores.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "compare.json").read_text())
    assert doc["header"][1:3] == ["gpt2", "pythia-70m"] and len(doc["rows"]) >= 10

    capsys.readouterr()
    assert main(["compare", str(a), str(tmp_path), "--out", str(tmp_path / "cmp2")]) == 2  # not a run folder
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a successor-lens run folder" in err[0] and not (tmp_path / "cmp2").exists()
