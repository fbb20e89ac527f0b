"""summary.json: the headline figures of a run under stable keys, each with its null and the paper's figure.

Built from the stage outputs (heads.json, incontext.json, mine.json, probe.json); the CLI summary,
report.md and the atlas index print `lines`, which say in words when a figure is not above its
null. Keys are stable: a new key may be added, none is renamed or removed without a version bump.
"""

from __future__ import annotations

from typing import Any

from successor_lens.artifacts.records import ChoiceRecord, HeadsRecord, MineRecord, ProbeRecord
from successor_lens.nulls import Verdict, rate_vs_chance, words
from successor_lens.paper import FIGURES, HEADLINES, SUCCESSOR_BAR
from successor_lens.probes.scan import READOUT_BAR, chance_null, readout_validated

SUMMARY_VERSION = "1.0"


def head_verdict(heads: HeadsRecord, score: float | None = None) -> Verdict:
    """An OV succession score (the best head's unless given) vs the chance level of its pairs
    (binomial, Bonferroni over every head): the summary's test, and each head's on its pages."""
    n = sum(k for t, k in heads["n_pairs"].items() if t not in heads["held_out_tasks"])
    chance = chance_null(heads)  # the one null of the score, as the heatmaps mark it
    assert chance is not None
    score = heads["best_score"] if score is None else score
    return rate_vs_chance(round(score * n), n, chance, comparisons=len(heads["heads"]))


def _readout(heads: HeadsRecord) -> tuple[float, bool]:
    """(the best copying score, whether the OV readout is validated by it): one check for the scan's verdict and each head's."""
    copying_best = max((h["copying"] for h in heads["heads"].values()), default=0.0)
    return copying_best, readout_validated(copying_best, heads["best_score"])


def heads_above_chance(heads: HeadsRecord) -> list[str]:
    """The heads whose OV succession score is above chance by `head_verdict` (none when the readout
    is not validated: a scan that cannot find copying shows nothing either way)."""
    if not _readout(heads)[1]:
        return []
    return [name for name, h in heads["heads"].items() if head_verdict(heads, h["succession"]).above]


def _scan_part(heads: HeadsRecord) -> tuple[dict[str, Any], Verdict]:
    """The head scan's keys of the summary and its verdict."""
    ranked = heads["top_heads"]
    best, runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    v_head = head_verdict(heads)
    copying_best, validated = _readout(heads)
    if not validated:  # the readout finds no map at all: its succession score is no finding either way
        v_head = Verdict(v_head.value, v_head.null, False, f"readout not validated: best copying {copying_best:.2f} < {READOUT_BAR}", v_head.p)
    return {
        "best_head": best["head"], "best_score": best["succession"], "best_score_null": v_head.null,
        "runner_up": runner["head"] if runner else None, "runner_up_score": runner["succession"] if runner else None,
        "best_ratio": best["succession"] / runner["succession"] if runner and runner["succession"] > 0 else None,
        "passes_successor_bar": heads["passes_bar"],
        "copying_best": copying_best, "readout_validated": validated,
    }, v_head


def _mine_part(mine: MineRecord) -> tuple[dict[str, Any], tuple[Verdict, Verdict, Verdict, Verdict]]:
    """The mining's keys of the summary and its verdicts (classes found, raw, class latents, modal coverage)."""
    fig = mine["figures"]
    v_classes, v_raw, v_latents, v_cover = (Verdict.from_json(fig[k], "no mining null")
                                            for k in ("classes_found", "classes_found_raw", "class_latents", "modal_coverage"))
    mean_of = lambda key: _mean([s.get(key) for s in mine["per_sae"]])  # noqa: E731
    return {
        "classes_found": v_classes.value, "classes_found_null": v_classes.null,
        "classes_found_raw": v_raw.value, "classes_found_raw_null": v_raw.null,
        "class_latents": v_latents.value, "class_latents_null": v_latents.null,
        "modal_coverage": v_cover.value, "modal_coverage_null": v_cover.null,
        "modal_coverage_numbers": mean_of("mean_modal_coverage_numbers"), "modal_coverage_other": mean_of("mean_modal_coverage_other"),
        "modal_coverage_all_items": (fig.get("modal_coverage_all_items") or {}).get("value"),
        "recurring_classes": len(mine["recurrence"]["modal_classes"]), "n_saes": mine["recurrence"]["n_saes"],
    }, (v_classes, v_raw, v_latents, v_cover)


def build_summary(model: str, heads: HeadsRecord, choice: ChoiceRecord, mine: MineRecord, probe: ProbeRecord,
                  ablation: dict[str, Any] | None = None) -> dict[str, Any]:
    scan, v_head = _scan_part(heads)
    mined, (v_classes, v_raw, v_latents, v_cover) = _mine_part(mine)
    fig = mine["figures"]
    pv = probe["verdicts"]
    v_probe, v_cos, v_arith, v_over = (Verdict.from_json(pv[k]) for k in ("probe_accuracy", "probe_feature_cosine", "arithmetic", "overshoot"))
    arith = probe["arithmetic"]
    feats, rand, prob = arith["SAE features"], arith["random directions"], arith["probe directions"]
    part = lambda name, key: (arith.get(name) or {}).get(key)  # noqa: E731  (absent in runs before these parts)
    cos_all = probe.get("probe_feature_cosine_all_items") or {}
    v_ablation = Verdict.from_json((ablation or {}).get("verdict"), "no in-context prompts fit the model")
    s = {
        "summary_version": SUMMARY_VERSION, "model": model, **scan,
        "analysis_head": choice["head"], "analysis_head_reason": choice["reason"], **mined,
        "probe_accuracy": v_probe.value, "probe_accuracy_null": v_probe.null,
        "probe_feature_cosine": v_cos.value, "probe_feature_cosine_null": v_cos.null,
        "probe_feature_cosine_class_mean": probe["probe_feature_cosine"]["class_mean_directions"],
        "probe_feature_cosine_all_items": cos_all.get("mean"),
        "arithmetic": feats["overall"], "arithmetic_random": rand["overall"], "arithmetic_probe": prob["overall"],
        "arithmetic_ceiling": feats["head_ceiling"], "arithmetic_when_head_right": feats["success_when_head_right"],
        "arithmetic_random_when_head_right": rand["success_when_head_right"],
        "arithmetic_numbers_20_29": feats["numbers_20_29"], "arithmetic_random_numbers_20_29": rand["numbers_20_29"],
        "arithmetic_scale_at_grid_edge": feats["scale_at_grid_edge"],
        "arithmetic_all_cases": part("SAE features (all cases)", "overall"), "arithmetic_random_all_cases": part("random directions (all cases)", "overall"),
        "arithmetic_split_numbers": part("SAE features (split numbers)", "overall"),
        "arithmetic_random_split_numbers": part("random directions (split numbers)", "overall"),
        "arithmetic_split_digit_map": part("SAE features (split numbers)", "head_ceiling"),
        "overshoot": feats["failure_overshoot_fraction"], "overshoot_chance": feats["overshoot_chance"], "overshoot_null": v_over.null,
        "ablation_head": (ablation or {}).get("head"), "ablation_loss_rise": v_ablation.value, "ablation_loss_rise_null": v_ablation.null,
        "ablation_clean_accuracy": ((ablation or {}).get("clean") or {}).get("accuracy"),
        "ablation_ablated_accuracy": ((ablation or {}).get("ablated") or {}).get("accuracy"),
        "above_null": {"best_score": v_head.above, "classes_found": v_classes.above, "classes_found_raw": v_raw.above, "class_latents": v_latents.above,
                       "modal_coverage": v_cover.above, "probe_accuracy": v_probe.above, "probe_feature_cosine": v_cos.above,
                       "arithmetic": v_arith.above, "overshoot": v_over.above, "ablation_loss_rise": v_ablation.above},
        "tests": {"best_score": v_head.test, "classes_found": v_classes.test, "modal_coverage": v_cover.test,
                  "probe_accuracy": v_probe.test, "probe_feature_cosine": v_cos.test, "arithmetic": v_arith.test, "overshoot": v_over.test,
                  "ablation_loss_rise": v_ablation.test},
        "paper": FIGURES,
    }
    s["lines"] = _lines(s, v_head, v_classes, v_raw, v_cover, v_probe, v_cos, v_arith, v_over, fig)
    s["lines"].insert(2, words(HEADLINES["ablation"].label.format(head=s["ablation_head"] or s["analysis_head"],
                                                                  clean=_f(s["ablation_clean_accuracy"]), ablated=_f(s["ablation_ablated_accuracy"])),
                               v_ablation, HEADLINES["ablation"].paper))
    return s


def lean_lines(heads: HeadsRecord, mine: MineRecord) -> list[str]:
    """The headline lines of a run made without the whole model (`run --lean`): the head scan's and
    the mining's lines of the whole run's summary, word for word; the in-context, probe and edit
    figures wait for a run that loads it."""
    scan, v_head = _scan_part(heads)
    mined, (v_classes, v_raw, _, v_cover) = _mine_part(mine)
    return [_head_line({**scan, **mined}, v_head), *_mining_lines({**scan, **mined}, v_classes, v_raw, v_cover, mine["figures"])]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _f(v, fmt="{:.2f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _head_line(s, v_head) -> str:
    ratio = f", {s['best_ratio']:.1f}x the runner-up {s['runner_up']} {s['runner_up_score']:.3f}" if s["best_ratio"] else ""
    bar = "passes" if s["passes_successor_bar"] else "does NOT pass"
    h = HEADLINES
    if not s["readout_validated"]:  # the readout finds no map at all: its p says nothing either way
        v_head = Verdict(v_head.value, v_head.null, False, v_head.test, None,
                         f"readout not validated: the best copying score is {s['copying_best']:.2f} < {READOUT_BAR}: this OV readout "
                         "cannot find copying in the model, so its succession score shows nothing")
    head_line = words(h["best_score"].label.format(head=s["best_head"]), v_head, h["best_score"].paper, "{:.3f}")
    return head_line + f"{ratio}; {bar} the paper's bar > {SUCCESSOR_BAR}"


def _mining_lines(s, v_classes, v_raw, v_cover, fig) -> list[str]:
    classes = fig["classes_found"].get("classes") or [[]] * len(fig["classes_found"].get("per_sae", []))
    per = ", ".join(f"{n}" + (f" [{' '.join(str(c) for c in cs)}]" if cs else "") for n, cs in zip(fig["classes_found"].get("per_sae", []), classes))
    h = HEADLINES
    return [
        words(h["classes_found"].label.format(per=per), v_classes, h["classes_found"].paper, "{:.1f}")
        + f"; raw count {_f(v_raw.value, '{:.1f}')} vs null {_f(v_raw.null, '{:.1f}')} ({'above' if v_raw.above else 'NOT above'});"
        + f" {s['recurring_classes']}/10 recur across seeds",
        words(h["modal_coverage"].label, v_cover, h["modal_coverage"].paper)
        + f" (every item {_f(s['modal_coverage_all_items'])}: numbers {_f(s['modal_coverage_numbers'])}, other tasks {_f(s['modal_coverage_other'])};"
        + " split numbers share their last digit, so their part is not evidence)",
    ]


def _lines(s, v_head, v_classes, v_raw, v_cover, v_probe, v_cos, v_arith, v_over, fig) -> list[str]:
    h = HEADLINES
    lines = [
        _head_line(s, v_head),
        f"analysis head: {s['analysis_head']} ({s['analysis_head_reason']})",
        *_mining_lines(s, v_classes, v_raw, v_cover, fig),
        words(h["probe_accuracy"].label, v_probe, h["probe_accuracy"].paper),
        words(h["probe_feature_cosine"].label, v_cos, h["probe_feature_cosine"].paper)
        + f" (class-mean directions {_f(s['probe_feature_cosine_class_mean'])}; a probe fit on every item, numbers included,"
        + f" {_f(s['probe_feature_cosine_all_items'])}: not evidence where numbers split, their class is in their last token)",
        words(h["arithmetic"].label.format(head=s["analysis_head"]), v_arith, h["arithmetic"].paper)
        + f"; the head's own ceiling {_f(s['arithmetic_ceiling'])}, success when the head is right {_f(s['arithmetic_when_head_right'])}"
        + f" (random {_f(s['arithmetic_random_when_head_right'])}); numbers 20-29 {_f(s['arithmetic_numbers_20_29'])}"
        + ("; the chosen scale is at the edge of its grid" if s["arithmetic_scale_at_grid_edge"] else "")
        + f"; every case {_f(s['arithmetic_all_cases'])} (random {_f(s['arithmetic_random_all_cases'])})"
        + (f"; split numbers {_f(s['arithmetic_split_numbers'])} vs the head's own digit map {_f(s['arithmetic_split_digit_map'])}"
           f" (random {_f(s['arithmetic_random_split_numbers'])}): the last digit is in the token, so not evidence"
           if s["arithmetic_split_numbers"] is not None else ""),
        words(h["overshoot"].label, v_over, h["overshoot"].paper),
    ]
    return lines
