"""The plain-words sentences never claim what a verdict denies, and say what each verdict found:
every combination of verdicts, and the sentences of runs with different findings differ."""

from __future__ import annotations

import itertools

import pytest

from successor_lens.artifacts.plain import GLOSSARY, head_sentence, plain_sentences, which_head_rows

KEYS = ("best_score", "ablation_loss_rise", "classes_found", "modal_coverage", "probe_accuracy", "arithmetic")

CLAIMS = {  # the words that state a finding, and the verdict that must be above for them to appear
    "is a successor head by its OV circuit": "best_score",
    "promotes the next ordinal token through its OV circuit more often than chance (": "best_score",
    "carries succession": "ablation_loss_rise",
    "have latents for": "classes_found",
    "cover each class's tokens better than chance": "modal_coverage",
    "a linear probe reads the class on tasks it never saw": "probe_accuracy",
    "reads those features": "arithmetic",
}


def summary(above: dict[str, bool], validated: bool = True, passes: bool = True) -> dict:
    return {"model": "m", "best_head": "L1H2", "best_score": 0.9, "best_score_null": 0.1, "readout_validated": validated, "copying_best": 0.9,
            "passes_successor_bar": passes, "analysis_head": "L1H2", "ablation_head": "L1H2", "ablation_loss_rise": 0.5,
            "classes_found": 7.0, "classes_found_null": 0.0, "modal_coverage": 0.6, "modal_coverage_null": 0.2,
            "probe_accuracy": 0.9, "probe_accuracy_null": 0.1, "arithmetic": 0.8, "arithmetic_random": 0.05,
            "above_null": {**{k: False for k in ("classes_found_raw", "class_latents", "probe_feature_cosine", "overshoot")}, **above}}


@pytest.mark.parametrize("bits", list(itertools.product([False, True], repeat=len(KEYS))))
def test_a_finding_is_stated_exactly_when_its_verdict_is_above(bits):
    above = dict(zip(KEYS, bits))
    text = " ".join(plain_sentences(summary(above)))
    for claim, key in CLAIMS.items():
        if claim.startswith("promotes"):  # the weaker OV claim: only when above but under the paper's bar
            continue
        assert (claim in text) == above[key], (claim, above)
    assert 3 <= len(plain_sentences(summary(above))) <= 6


def test_the_ov_sentence_follows_the_bar_and_the_readout():
    above = dict.fromkeys(KEYS, True)
    under_bar = " ".join(plain_sentences(summary(above, passes=False)))
    assert "promotes the next ordinal token through its OV circuit more often than chance (" in under_bar
    assert "is a successor head" not in under_bar and "less often than the paper's bar" in under_bar
    blind = " ".join(plain_sentences(summary(above, validated=False)))  # a readout that cannot even find copying says nothing either way
    assert "cannot tell" in blind and "successor head by" not in blind and "more often than chance (" not in blind


def test_runs_with_different_verdicts_read_differently():
    planted = plain_sentences(summary(dict.fromkeys(KEYS, True)))
    random = plain_sentences(summary(dict.fromkeys(KEYS, False), validated=False))
    smollm2 = plain_sentences(summary({**dict.fromkeys(KEYS, True), "best_score": False}))
    assert len({tuple(planted), tuple(random), tuple(smollm2)}) == 3
    assert all(a != b for a, b in zip(planted[:4], random[:4]))  # every finding's sentence changes with its verdict


def test_a_head_page_sentence_says_promotes_only_when_its_test_is_above():
    page = {"head": "L3H1", "succession": 0.8, "copying": 0.1}
    assert "promotes the next ordinal token (80% of pairs, chance 10%: above chance over all heads)" in head_sentence(page, 0.1, True)
    near = head_sentence({**page, "succession": 0.12}, 0.1, False)  # above chance as a number, not by the test
    assert "promotes" not in near and "no map of ordinal tokens above chance" in near
    assert "copies its input token" in head_sentence({**page, "succession": 0.05, "copying": 0.9}, 0.1, False)
    tested = {"ablation_head": "L3H1", "analysis_head": "L3H1", "ablation_loss_rise": 0.4, "above_null": {"ablation_loss_rise": False}}
    assert "removing it hurts no more than removing other heads" in head_sentence(page, 0.1, True, tested)
    assert "carries succession" not in head_sentence(page, 0.1, True, tested)
    assert "carries succession in context" in head_sentence(page, 0.1, True, {**tested, "above_null": {"ablation_loss_rise": True}})
    assert "in context" not in head_sentence({**page, "head": "L0H0"}, 0.1, True, tested)


def test_the_which_head_table_says_promotes_only_for_heads_above_chance():
    succession = [[0.9, 0.12], [0.05, 0.3]]
    atlas = {"heads": {"null": 0.1, "succession": succession, "copying": [[0.1, 0.0], [0.95, 0.0]], "above_chance": ["L0H0"],
                       "top_heads": [{"head": "L0H0"}, {"head": "L1H1"}, {"head": "L0H1"}, {"head": "L1H0"}]},
             "summary": None}
    rows = {r[0]: r[1] for r in which_head_rows(atlas)}
    assert rows["L0H0"].startswith("promotes the next ordinal token")
    assert all("promotes" not in rows[h] for h in ("L1H1", "L0H1", "L1H0"))
    assert rows["L1H0"].startswith("copies its input token")


def test_every_glossary_term_is_defined_in_a_sentence():
    assert all(len(text) > 20 and text.endswith(".") for text in GLOSSARY.values())


def test_fit_figures_out_of_range_are_flagged_and_weights_read_in_words():
    from successor_lens.artifacts.plain import fit_warnings, flagged, weights_words

    assert flagged(1.139, 0.0, 1.0) == "1.139 (out of range)" and flagged(0.4, 0.0, 1.0) == 0.4 and flagged(None, 0, 1) is None
    words = " ".join(fit_warnings(1.139, 1.493))
    assert "FVU 1.139 is above 1" in words and "loss recovered 1.493 is above 1 (out of range)" in words
    assert "below 0" in fit_warnings(0.2, -0.3)[0] and fit_warnings(0.2, 0.9) == []
    assert weights_words({"fold_ln": False, "center_unembed": False}) == "unprocessed (no LayerNorm folding, no centring)"
    assert weights_words({"fold_ln": True, "center_unembed": False}) == "LayerNorm folded" and "{" not in weights_words({"x": True})


def test_the_report_is_rendered_from_data_both_ways_and_escaped():
    from successor_lens.artifacts.report import Strong, report_html, report_md

    doc = {"provenance": {"version": "0", "weight_processing": {"fold_ln": False}, "source": "<script>x</script>"},
           "model": {"name": "m|<b>"}, "saes": [], "heads": None, "summary": None,
           "edits": [{"name": "e<i>", "kpis": [{"metric": "acc|x", "before": 0.5, "after": 0.25, "delta": -0.25}]}]}
    text, page = report_md(doc), report_html(doc)
    assert "| acc\\|x | 0.500 | 0.250 | -0.250 |" in text and "&lt;script&gt;" in text and "<script>" not in text
    assert "<script>" not in page and "&lt;script&gt;" in page and "<td>acc|x</td>" in page.replace(' class="l"', "")
    assert "{" not in text  # weight processing in words, never a Python dict
    assert isinstance(Strong("no"), str)


def test_an_underpowered_or_missing_test_says_it_cannot_tell():
    above = dict.fromkeys(KEYS, False)
    s = summary(above)
    s["lines"] = ["ablating L1H2: ... NOT above its null (p 0.12) (p = 1/16: cannot reach 0.01 with 15 draws)"]
    s["arithmetic"] = None
    text = " ".join(plain_sentences(s))
    assert "cannot tell whether L1H2 matters" in text and "does not hurt" not in text
    assert "was not tested: there were no mod-10 features to move" in text and "n/a" not in text
    words = head_sentence({"head": "L1H2", "succession": 0.05, "copying": 0.02}, 0.03, False, s)
    assert "too few other heads to tell" in words and "hurts no more" not in words
