"""The decision page never recommends what it cannot measure, charts the measure that chose, and
prints a replay command that the CLI reads back as the same model, folder, spec and dtype."""

from __future__ import annotations

import shlex
from pathlib import Path

from successor_lens.artifacts.decision import decision_page, nothing_to_measure, plain_lines, replay_command, tune_points, verdict
from successor_lens.cli.main import build_parser


def kpi(before, after, p=0.0004, ci=(0.1, 0.3)):
    return {"metric": "m", "before": before, "after": after, "delta": None if before is None else after - before, "p": p,
            "ci95": list(ci), "excludes_zero": ci[0] > 0}


def entry(before=0.4, after=0.7, replay=None):
    k = {m: kpi(0.0, 0.0) for m in ("accuracy_in_task", "error_rate", "answer_logprob", "top1_changed", "side_accuracy")}
    k.update(accuracy=kpi(before, after), gain=kpi(0.0, after - before), kl=kpi(0.0, 0.01), corpus_loss=kpi(3.0, 3.01))
    return {"goal": "improve-succession", "config": {"max_kl": 0.1, "max_loss_increase": 0.05}, "splits": {"held_out": {"prompts": 40, "windows": 8}},
            "evidence": {}, "null_evidence": {"heads": ["L0H1"]}, "chosen": {"description": "scale L1H0 by 2", "edits": []},
            "held_out": {"chosen": k, "null": {"description": "scale L0H1 by 1.1", "gain": kpi(0.0, 0.0)},
                         "vs_null": kpi(0.0, 0.3), "better_than_null": True},
            "points": {"measure": "gain"}, "page": "decision-improve-succession.html", "image": "images/p.png", "replay": replay}


def test_a_zero_baseline_the_edit_leaves_at_zero_is_no_recommendation_and_says_why():
    flat = entry(before=0.0, after=0.0)
    assert nothing_to_measure(flat) and not verdict(flat)[0]
    lines = plain_lines(flat)
    assert lines[1].startswith("Recommended change: none: the unedited model continues 0% of the held-out lists correctly")
    assert lines[-1] == "Decision: nothing to roll out."
    page = decision_page(flat, "m")
    assert "Replay it" not in page and "roll it out (every check" not in page
    assert nothing_to_measure(entry()) is None and verdict(entry())[0]  # a real gain is still recommended


def test_the_replay_command_reads_back_as_the_same_edit(tmp_path):
    run = tmp_path / "my run"  # a space: quoted
    command = replay_command(entry(replay={"model": "/abs/ckpt dir", "dtype": "bf16"}), run, "gpt2")
    words = shlex.split(command)
    assert words[:2] == ["successor-lens", "edit"]
    args = build_parser().parse_args(words[1:])
    assert (args.model, args.out, args.dtype) == ("/abs/ckpt dir", str(run), "bf16")
    assert Path(args.spec) == run / "tune" / "improve-succession" / "chosen_edit.json"
    plain = shlex.split(replay_command(entry(replay={"model": "smollm2-135m", "dtype": "fp32"}), run, "SmolLM2"))
    assert "--dtype" not in plain and plain[plain.index("--model") + 1] == "smollm2-135m"
    page = decision_page(entry(replay={"model": "smollm2-135m", "dtype": "fp32"}), "m", run)
    assert "successor-lens edit --model smollm2-135m --out" in page and "p &lt; 0.001" in page


def test_the_chart_shows_the_measure_that_chose():
    def record(gain, logprob):
        return {"gain": gain, "kpis": {"kl": {"after": 0.01}, "answer_logprob": {"delta": logprob}}}
    doc = {"goal": "improve-succession", "config": {"max_kl": 0.1}, "pareto": [0], "candidates": [record(0.0, 0.4), record(0.0, 0.1)],
           "null_candidates": [record(0.0, 0.05)], "chosen": record(0.0, 0.4)}
    points = tune_points(doc)
    assert points["measure"] == "answer_logprob" and points["chosen"] == [0.01, 0.4] and points["candidates"][1] == [0.01, 0.1]
    doc["chosen"] = doc["candidates"][0] = record(0.2, 0.4)
    assert tune_points(doc)["measure"] == "gain" and tune_points(doc)["chosen"] == [0.01, 0.2]
