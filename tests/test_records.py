"""Stage records are read through one typed reader: a missing, non-JSON or incomplete record is one
line naming the file and the command that rewrites it, never a KeyError deep in a later stage."""

import json

import pytest

from successor_lens.artifacts.records import HEADS_RECORD, INCONTEXT_RECORD, RecordError
from successor_lens.errors import UserError
from successor_lens.io import write_json


def test_a_whole_record_reads_back_as_written(tmp_path):
    doc = {"provenance": {}, "n_prompts": 3, "in_context": None, "choice": {"head": "L1H2", "reason": "r", "candidates": []}}
    (tmp_path / "incontext.json").write_text(json.dumps(doc))
    assert INCONTEXT_RECORD.read(tmp_path) == doc


@pytest.mark.parametrize("text, fragment", [(None, "missing"), ("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object"),
                                            ("[" * 100_000 + "]" * 100_000, "nested more than 64 deep"),
                                            (json.dumps({"provenance": {}, "config": {}}), "no best_head")])
def test_a_bad_record_is_one_line_naming_the_file_and_the_fix(tmp_path, text, fragment):
    if text is not None:
        (tmp_path / "heads.json").write_text(text)
    with pytest.raises(RecordError) as err:
        HEADS_RECORD.read(tmp_path)
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    assert "heads.json" in message and fragment in message and "successor-lens heads" in message


@pytest.mark.parametrize("head", ["L99H0", "L0H9", "not-a-head", 7])
def test_a_recorded_head_that_the_model_lacks_is_one_line_before_the_model_loads(tmp_path, head, monkeypatch, capsys):
    from successor_lens.cli.main import main
    from successor_lens.models import loading

    run = tmp_path / "run"
    assert main(["heads", "--model", "planted-gpt2", "--out", str(run)]) == 0
    doc = {"provenance": {}, "n_prompts": 3, "in_context": None, "choice": {"head": head, "reason": "r", "candidates": []}}
    (run / "incontext.json").write_text(json.dumps(doc))
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    capsys.readouterr()
    assert main(["tune", "--model", "planted-gpt2", "--goal", "improve-succession", "--out", str(run), "--corpus", "succession-lists"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "incontext.json" in err[0] and len(err[0].replace(str(run), "RUN")) < 220


@pytest.mark.parametrize("field, value, fragment", [
    ("best_head", 3, "best_head: int where a string is"),
    ("heads", [1, 2], "heads: list where a table is"),
    ("best_score", "high", "best_score: str where a number is"),
    ("passes_bar", 1, "passes_bar: int where true or false is"),
    ("top_heads", {"L0H0": 1}, "top_heads: dict where a list is"),
])
def test_a_record_field_of_the_wrong_type_is_one_line(tmp_path, field, value, fragment):
    from successor_lens.artifacts.records import HEADS_RECORD, HeadsRecord, RecordError

    doc = {key: None for key in HeadsRecord.__required_keys__}
    doc.update(provenance={}, config={}, successor_bar=0.5, best_head="L0H0", best_score=0.9, passes_bar=True, top_heads=[], heads={},
               chance={}, n_pairs={}, held_out_tasks=[], dropped_tokens=[])
    write_json(tmp_path / "heads.json", doc)
    assert HEADS_RECORD.read(tmp_path)["best_head"] == "L0H0"  # the whole record reads back
    write_json(tmp_path / "heads.json", {**doc, field: value})
    with pytest.raises(RecordError, match=fragment) as err:
        HEADS_RECORD.read(tmp_path)
    assert "\n" not in str(err.value) and "rerun `successor-lens heads" in str(err.value)


def test_a_nested_record_is_checked_and_nan_written_as_null_reads_back(tmp_path):
    from successor_lens.artifacts.records import INCONTEXT_RECORD, RecordError

    doc = {"provenance": {}, "n_prompts": 4, "in_context": None, "choice": {"head": "L0H0", "reason": "r", "candidates": []}}
    write_json(tmp_path / "incontext.json", doc)
    assert INCONTEXT_RECORD.read(tmp_path)["choice"]["head"] == "L0H0"
    write_json(tmp_path / "incontext.json", {**doc, "choice": {**doc["choice"], "head": ["L0H0"]}})
    with pytest.raises(RecordError, match="choice: head: list where a string is"):
        INCONTEXT_RECORD.read(tmp_path)
    write_json(tmp_path / "incontext.json", {**doc, "n_prompts": True})
    with pytest.raises(RecordError, match="n_prompts: bool where an integer is"):
        INCONTEXT_RECORD.read(tmp_path)
