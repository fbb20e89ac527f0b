"""In-the-wild analysis, in-context attribution and edits on tiny models with planted structure."""

import pytest
import torch
from conftest import DIGITS, RUN_TASKS, list_windows, make_run_model, make_wild_model

from successor_lens.probes.edits import EditSet, EditSpecError, kpi_table, measure, parse_spec
from successor_lens.probes.incontext import in_context_dla, succession_prompts
from successor_lens.probes.probe_configs import WildConfig
from successor_lens.probes.wild import Ordinals, classify, wild_analysis
from successor_lens.tasks import Task

NUMBERS = [Task("numbers", tuple(DIGITS), tuple(range(10)))]


@pytest.fixture(scope="module")
def wild():
    model, windows = make_wild_model(), list_windows(16)
    results = wild_analysis(model, windows, [(1, 0), (1, 1)], WildConfig(top_positions=30, rank_positions=100), NUMBERS, progress=False)
    return model, windows, results


def test_planted_copy_and_increment_head_ranks_first_and_its_cases_are_succession(wild):
    _, _, (planted, other) = wild
    assert planted.head_ranking[0][0] == "L1H0"
    assert planted.mean_delta_loss > 10 * abs(other.mean_delta_loss)
    assert len(planted.top) == 30 and planted.shares["succession"] == 1.0
    assert all(r["attended"][0] == r["token"] and int(r["target"]) == int(r["token"]) + 1 for r in planted.top)
    assert other.shares["succession"] < 0.5


def test_the_planted_head_wins_most_succession_cases(wild):
    _, _, (planted, _) = wild
    assert planted.n_cases > 20
    assert max(planted.wins, key=planted.wins.get) == "L1H0" and planted.wins["L1H0"] / planted.n_cases > 0.75


def test_category_rules():
    ordinals = Ordinals([Task("numbers", tuple(str(i) for i in range(20)), tuple(range(20))),
                         Task("days", ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"), tuple(range(1, 8)), cyclic=True)])
    assert classify(" 4", [" 3", " the"], ordinals) == "succession"
    assert classify(" Monday", ["Sunday"], ordinals) == "succession"  # days wrap
    assert classify("I", [" Investigation", " of"], ordinals) == "acronym"
    assert classify(" of", [" of", " the"], ordinals) == "copying"
    assert classify(" 9", [" 3"], ordinals) == "greater-than"
    assert classify(" 2", [" 3"], ordinals) == "other"


def test_in_context_attribution_finds_the_incrementing_head():
    model = make_wild_model()
    prompts = succession_prompts(model.tokenizer, NUMBERS, sep="", space="", chapters=0)
    assert len(prompts) == 7 and prompts[0].ids == [0, 1, 2] and prompts[0].answer == 3
    result = in_context_dla(model, prompts)
    assert result.ranking(1)[0][0] == "L1H0"
    assert result.accuracy["numbers"] > 0.5


# --- edits ---------------------------------------------------------------------------------------


def spec(*edits):
    return {"edits": list(edits)}


def test_ablation_changes_exactly_the_hooked_activation():
    model = make_run_model()
    ids = torch.tensor([[0, 1, 2, 3, 4, 5]])
    edits = EditSet(model, parse_spec(spec({"kind": "ablate_head", "layer": 1, "head": 2}), model))
    _, clean = model.run_with_cache(ids)
    with model.hooks(fwd_hooks=edits.hooks()):
        _, edited = model.run_with_cache(ids)
    z, z0 = edited["blocks.1.attn.hook_z"], clean["blocks.1.attn.hook_z"]
    assert (z[:, :, 2] == 0).all() and not (z0[:, :, 2] == 0).all()
    assert torch.equal(torch.cat([z[:, :, :2], z[:, :, 3:]], 2), torch.cat([z0[:, :, :2], z0[:, :, 3:]], 2))
    for name in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.attn.hook_pattern"):
        assert torch.equal(edited[name], clean[name]), name
    assert not torch.equal(edited["blocks.1.hook_resid_post"], clean["blocks.1.hook_resid_post"])


def test_identity_edits_leave_loss_and_predictions_unchanged():
    model = make_run_model()
    windows = torch.randint(0, 40, (4, 12), generator=torch.Generator().manual_seed(0))
    prompts = succession_prompts(model.tokenizer, RUN_TASKS[:1], chapters=0, sep="", space="")
    directions = {3: torch.nn.functional.normalize(torch.randn(64), dim=0)}
    edits = EditSet(model, parse_spec(spec({"kind": "scale_head", "layer": 1, "head": 2, "factor": 1.0},
                                           {"kind": "add_feature", "layer": 1, "head": 2, "feature": 3, "scale": 0.0}), model), directions)
    before, after = measure(model, prompts, windows), measure(model, prompts, windows, edits)
    table = kpi_table(before, after)
    assert [set(r) for r in table] == [{"metric", "before", "after", "delta"}] * len(table)
    assert all(abs(r["delta"]) < 1e-5 for r in table), table
    assert table[4]["metric"] == "corpus positions whose top-1 changes" and table[4]["after"] == 0.0


def test_feature_edit_equals_adding_the_direction_to_that_heads_value_input():
    model = make_run_model()
    ids = torch.tensor([[0, 1, 2, 3, 4, 5, 6]])
    f = torch.nn.functional.normalize(torch.randn(64, generator=torch.Generator().manual_seed(1)), dim=0)
    edits = EditSet(model, parse_spec(spec({"kind": "add_feature", "layer": 1, "head": 2, "feature": 4, "scale": 3.0}), model), {4: f})
    with model.hooks(fwd_hooks=edits.hooks()):
        ours = model(ids)

    def shift_value_input(v_input, hook):
        v_input = v_input.clone()
        v_input[:, :, 2] += 3.0 * f
        return v_input

    model.set_use_split_qkv_input(True)
    try:
        reference = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_v_input", shift_value_input)])
    finally:
        model.set_use_split_qkv_input(False)
    assert torch.allclose(ours, reference, atol=1e-4)
    assert not torch.allclose(ours, model(ids), atol=1e-3)


@pytest.mark.parametrize("bad, message", [
    ({"edits": []}, "at least one edit"),
    (spec({"kind": "melt_head", "layer": 0, "head": 0}), "kind must be one of"),
    (spec({"kind": "ablate_head", "layer": 5, "head": 0}), r"layer is 5, outside \[0, 1\]"),
    (spec({"kind": "ablate_head", "layer": 0, "head": 0, "colour": 1}), "field 'colour' does not apply"),
    (spec({"kind": "add_feature", "layer": 0, "head": 0}), "needs a feature class"),
])
def test_bad_specs_fail_with_one_line(bad, message):
    with pytest.raises(EditSpecError, match=message) as err:
        parse_spec(bad, make_run_model())
    assert "\n" not in str(err.value)
