"""`wild` and `edit` on the embedded model with the offline corpus (a small slice)."""

import json
import re

import pytest

from successor_lens.cli.main import main
from successor_lens.corpus import clean_rest, load_corpus

pytestmark = pytest.mark.slow  # the real embedded model


@pytest.fixture(scope="module")
def docs():
    """The default corpus: shipped with the package, so always there (tests/test_corpus.py)."""
    return load_corpus


def test_clean_rest_keeps_the_prose():
    text = "Title\n=====\n\n.. toctree::\n   :maxdepth: 2\n\nSee :func:`len` and ``x = 1`` in **PEP 8**.\n"
    assert clean_rest(text) == "Title\n\n\nSee len and x = 1 in PEP 8."


def test_local_text_files_are_a_corpus(tmp_path):
    (tmp_path / "a.txt").write_text("First, second, third.\n\nMonday, Tuesday, Wednesday.\n")
    assert [t.strip() for t in load_corpus(str(tmp_path))] == ["First, second, third.", "Monday, Tuesday, Wednesday."]


def test_default_corpus_is_the_python_docs(docs):
    texts = load_corpus()
    joined = "\n".join(texts)
    assert len(texts) > 5000 and len(load_corpus(max_docs=100)) == 100
    assert "PEP" in joined and "December" in joined  # acronyms, months
    assert re.search(r"^\s*3\. ", joined, re.M)  # numbered lists
    assert not re.search(r"^\.\. |^\s+:maxdepth:", joined, re.M) and ":func:`" not in joined


def test_wild_and_edit_on_the_embedded_model(docs, embedded_model, tmp_path, capsys):
    assert main(["wild", "--head", "L23H3", "--contexts", "2", "--ctx", "48", "--top", "10", "--rank-positions", "8",
                 "--cases", "4", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "category shares" in out and "in-context succession prompts" in out
    wild = json.loads((tmp_path / "wild.json").read_text())
    head = wild["heads"][0]
    assert head["head"] == "L23H3" and abs(sum(head["category_shares"].values()) - 1) < 1e-6
    assert wild["in_context"]["accuracy"]["numbers"] >= 0.8  # "1, 2, 3, " -> "4": the prompt suits a digit-splitting tokenizer

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"edits": [{"kind": "ablate_head", "layer": 23, "head": 3}]}))
    assert main(["edit", "--spec", str(spec), "--contexts", "2", "--ctx", "48", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    kpis = json.loads((tmp_path / "edits" / "spec.json").read_text())["kpis"]
    assert [r["metric"] for r in kpis][0].startswith("succession accuracy") and "corpus next-token loss" in out
    assert kpis[0]["after"] < kpis[0]["before"]  # ablating L23H3 costs succession accuracy

    spec.write_text('{"edits": [{"kind": "ablate_head", "layer": 99, "head": 0}]}')
    assert main(["edit", "--spec", str(spec), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layer is 99, outside [0, 29]" in err[0]
