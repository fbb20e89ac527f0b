"""`tune`: the automated edit search on a planted model whose one head's scale controls succession,
the held-out split it never reads, the null search, resumable records and the A/B statistics."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from conftest import FILLER, list_windows, make_wild_model

from successor_lens.nulls import paired_ab
from successor_lens.probes.incontext import Prompt
from successor_lens.probes.tune import Evidence, Search, TuneConfig, golden, pareto, search, tune
from successor_lens.probes.tune_data import make_splits

HEAD = (1, 0)
"""make_wild_model's copy-and-increment head."""


def weak_model() -> torch.nn.Module:
    """The planted copy-and-increment head at a strength where it wins some prompts, not all: its
    scale factor then controls in-context succession (up raises it, 0 removes it)."""
    return make_wild_model(k=0.6)


def prompts(n: int = 80, seed: int = 0) -> list[Prompt]:
    """Filler words, then a run of 2-4 consecutive digits: the answer is the next digit."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        end = rng.randint(3, 8)
        run = list(range(end - rng.randint(2, 4) + 1, end + 1))
        ids = [10 + rng.randrange(len(FILLER)) for _ in range(rng.randint(0, 3))] + [max(0, d) for d in run]
        out.append(Prompt("numbers", "", ids, end + 1, list(range(10))))
    return out


def setup(goal: str, **kw):
    model = weak_model()
    search_data, held = make_splits(prompts(), list_windows(16, 24), [], seed=0)
    cfg = TuneConfig(goal, budget=6, max_kl=kw.pop("max_kl", 5.0), max_loss_increase=5.0, **kw)
    return model, search_data, held, cfg


def test_tune_finds_the_planted_head_scale_and_it_holds_out_where_random_heads_do_not(tmp_path):
    model, search_data, held, cfg = setup("improve-succession")
    before = Search(model, held, Evidence([HEAD], HEAD), cfg, None, None, {"m": "x"}, log=lambda s: None)
    assert 0.1 < np.mean(before.base_units["hit"]) < 0.9  # the plant leaves room to improve
    doc = tune(model, search_data, held, Evidence([HEAD, (1, 1)], HEAD), cfg, None, tmp_path / "records", {"m": "x"}, log=lambda s: None)
    chosen = doc["chosen"]["edits"]
    assert [(e["kind"], e["layer"], e["head"]) for e in chosen][0] == ("scale_head", *HEAD)
    assert chosen[0]["factor"] > 1.5
    check = doc["held_out"]
    assert check["chosen"]["kpis"]["gain"]["excludes_zero"] and check["chosen"]["gain"] > 0
    assert doc["null_evidence"]["heads"] and "L1H0" not in doc["null_evidence"]["heads"]
    null_gain = check["null"]["gain"] if check["null"] else 0.0
    assert null_gain < check["chosen"]["gain"] and check["better_than_null"]
    # every candidate carries its KPIs with intervals; the Pareto front is among them
    assert all({"accuracy", "corpus_loss", "kl", "top1_changed", "side_accuracy"} <= set(c["kpis"]) for c in doc["candidates"])
    assert doc["pareto"] and max(doc["pareto"]) < len(doc["candidates"])


def test_remove_succession_ablates_the_planted_head():
    model, search_data, held, cfg = setup("remove-succession")
    doc = tune(model, search_data, held, Evidence([HEAD, (1, 1)], HEAD), cfg, None, None, {"m": "x"}, log=lambda s: None)
    first = doc["chosen"]["edits"][0]
    assert (first["layer"], first["head"]) == HEAD
    assert first["kind"] == "ablate_head" or first["factor"] < 0.5  # removed or reversed
    assert doc["held_out"]["chosen"]["kpis"]["accuracy"]["delta"] < 0


def test_the_held_out_split_is_never_read_during_the_search():
    model, search_data, held, cfg = setup("improve-succession")
    evidence = Evidence([HEAD, (1, 1)], HEAD)
    first = tune(model, search_data, held, evidence, cfg, None, None, {"m": "x"}, log=lambda s: None)
    poisoned = make_splits(prompts(40, seed=9), list_windows(8, 24, seed=5), [], seed=3)[1]
    for p in poisoned.prompts:
        p.answer = 0  # every held-out answer wrong: a search that peeked would choose otherwise
    second = tune(model, search_data, poisoned, evidence, cfg, None, None, {"m": "x"}, log=lambda s: None)
    assert second["chosen"]["edits"] == first["chosen"]["edits"]
    assert [c["edits"] for c in second["candidates"]] == [c["edits"] for c in first["candidates"]]


def test_a_killed_search_resumes_from_its_records(tmp_path):
    model, search_data, _, cfg = setup("improve-succession")
    evidence = Evidence([HEAD], HEAD)
    first = Search(model, search_data, evidence, cfg, tmp_path, None, {"m": "x"}, log=lambda s: None)
    chosen = search(first)
    assert first.fresh == len(first.evaluated) > 0
    again = Search(model, search_data, evidence, cfg, tmp_path, None, {"m": "x"}, log=lambda s: None)
    assert search(again) == chosen and again.fresh == 0
    records = sorted(tmp_path.glob("*.json"))  # every one of them read by the search
    other = Search(model, search_data, evidence, cfg, tmp_path, None, {"m": "another model"}, log=lambda s: None)
    other.score(chosen["edits"])
    assert other.fresh == 1  # records are keyed by the model's fingerprint, not shared across models
    # a record of the wrong shape (edited by hand, or a list where units are) is measured again, not trusted or a KeyError
    wrong = [{"units": {"kl": [1.0]}}, {"units": []}, {"edits": []}, {"units": {k: [float("nan")] * len(v) for k, v in again.base_units.items()}}]
    for doc, path in zip(wrong, records):
        path.write_text(json.dumps(doc))
    notes: list[str] = []
    third = Search(model, search_data, evidence, cfg, tmp_path, None, {"m": "x"}, log=notes.append)
    assert search(third) == chosen and third.fresh == min(len(wrong), len(records))
    assert sum("is not a whole tune record" in n for n in notes) == third.fresh


@pytest.mark.parametrize("kwargs, message", [
    ({"goal": "faster"}, "--goal 'faster' is not a goal"),
    ({"goal": "improve-succession", "budget": 1}, "--budget"),
    ({"goal": "improve-succession", "max_kl": float("nan")}, "--max-kl"),
    ({"goal": "improve-succession", "max_loss_increase": -1.0}, "--max-loss-increase"),
])
def test_bad_config_is_one_line(kwargs, message):
    from successor_lens.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        TuneConfig(**kwargs)


def test_golden_section_finds_the_maximum_of_a_unimodal_function():
    calls = []

    def f(x):
        calls.append(x)
        return -(x - 1.7) ** 2
    best = golden(f, -1.0, 3.0, 12)
    assert abs(best - 1.7) < 0.05 and len(calls) == 12


def test_pareto_front_keeps_exactly_the_undominated_points():
    recs = [{"gain": g, "kpis": {"kl": {"after": k}}} for g, k in [(0.1, 0.01), (0.3, 0.2), (0.2, 0.3), (0.3, 0.05), (0.0, 0.0)]]
    assert pareto(recs) == [0, 3, 4]


def test_paired_ab_interval_and_permutation_test():
    rng = np.random.default_rng(0)
    before = rng.normal(size=200)
    shifted = paired_ab((before + 0.5 + rng.normal(scale=0.1, size=200)).tolist(), before.tolist(), seed=1)
    assert shifted["excludes_zero"] and shifted["ci95"][0] < 0.5 < shifted["ci95"][1] and shifted["p"] < 0.01
    same = paired_ab((before + rng.normal(scale=0.1, size=200)).tolist(), before.tolist(), seed=1)
    assert not same["excludes_zero"] and same["p"] > 0.01
    assert paired_ab([], [])["delta"] is None


def test_an_evaluation_from_the_cached_residual_equals_the_full_hooked_forward():
    from successor_lens.probes.edits import Edit, EditSet
    from successor_lens.probes.tune_data import Baseline, evaluate

    model, search_data, _, _ = setup("improve-succession")
    base = Baseline()
    evaluate(model, search_data, None, base)
    edits = EditSet(model, [Edit("scale_head", 1, 0, factor=2.5), Edit("ablate_head", 1, 2, mode="mean")])
    edits.mean_z = base.mean_z
    units = evaluate(model, search_data, edits, base)  # runs layer 1 only, from the cached residual
    ids = search_data.windows[:4]
    edits.mean_z = {}
    edits.prepare(search_data.windows[:8])
    full = model.run_with_hooks(ids, fwd_hooks=edits.hooks())[:, :-1].log_softmax(-1)
    loss = (-full.gather(-1, ids[:, 1:, None])[..., 0]).mean(1)
    assert torch.allclose(torch.tensor(units["loss"][:4]), loss, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--goal", "faster"], "--goal 'faster' is not a goal"),
    (["--goal", "improve-succession", "--budget", "99"], "--budget"),
    (["--goal", "remove-succession", "--max-kl", "nan"], "--max-kl"),
    (["--goal", "improve-succession"], "has no heads.json"),
])
def test_tune_command_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    from successor_lens.cli.main import main

    out = tmp_path / "run"
    try:
        code = main(["tune", "--model", "planted-gpt2", "--out", str(out), *args])
    except SystemExit as exit_:  # argparse's own refusals (a number that is not finite)
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("start", [0, 1])
def test_logits_from_the_cached_residual_equal_the_models_own_forward(start):
    from conftest import make_planted
    from transformer_lens.utilities import get_act_name

    from successor_lens.probes.incontext import logits_from

    model = make_planted(2)  # RMS norms, rotary, grouped-query attention
    model.cfg.output_logits_soft_cap = 30.0  # Gemma 2's final soft-cap, applied as TransformerLens applies it
    ids = torch.randint(0, model.cfg.d_vocab, (3, 9), generator=torch.Generator().manual_seed(0))
    full, cache = model.run_with_cache(ids)
    resid = cache[get_act_name("resid_pre", start)]
    assert torch.allclose(logits_from(model, resid, start, last=False), full, atol=1e-5)
    assert torch.allclose(logits_from(model, resid, start, last=True)[:, 0], full[:, -1], atol=1e-5)
