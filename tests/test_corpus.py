"""The shipped natural-text corpus: the same paragraphs the system's python3-doc gives (when the
installed version is the one it was made from), there without apt, and keyed by its bytes."""

from __future__ import annotations

import glob
import re
import subprocess

import pytest
from conftest import require_system_package

from successor_lens import corpus
from successor_lens.cli.main import main


def test_the_shipped_corpus_is_the_cleaned_python3_doc_it_names():
    require_system_package(bool(glob.glob(corpus.PYTHON_DOCS_GLOB)), "Debian's python3-doc", "apt-get install python3-doc")
    shipped = (corpus.BUNDLED_DOCS.parent / "SOURCE.md").read_text()
    made_from = re.search(r"python3-doc (\S+),", shipped).group(1)
    installed = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "python3-doc"], capture_output=True, text=True).stdout
    if installed != made_from:
        pytest.skip(f"python3-doc {installed} is installed; the shipped corpus was made from {made_from}")
    system = corpus.load_corpus(corpus.PYTHON3_DOC)
    assert list(corpus.stream_texts(None)) == system == corpus.load_corpus()
    assert f"{len(system):,} paragraphs" in shipped


def test_without_python3_doc_the_default_is_natural_text(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(corpus, "PYTHON_DOCS_GLOB", str(tmp_path / "nowhere" / "*"))
    assert corpus.context_corpus(None) == corpus.PYTHON_DOCS
    texts = corpus.load_corpus(max_docs=200)
    assert len(texts) == 200 and sum("Python" in t for t in texts) > 20  # prose about Python, not the task lists
    assert not any(t.startswith("Monday, Tuesday") for t in texts)
    assert corpus.corpus_digest(corpus.PYTHON_DOCS) == corpus.file_sha256([corpus.BUNDLED_DOCS])  # keyed by the shipped bytes
    with pytest.raises(corpus.CorpusError, match="apt-get install python3-doc"):  # the system's copy asked for, and absent
        corpus.check_source(corpus.PYTHON3_DOC)
    assert main(["wild", "--model", "planted-gpt2", "--corpus", "python3-doc", "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "leave --corpus out for the shipped copy" in err[0]


def test_the_shipped_corpus_streams_what_load_corpus_returns():
    first = corpus.load_corpus(max_docs=50)
    assert [t for _, t in zip(range(50), corpus.stream_texts(corpus.PYTHON_DOCS))] == first
