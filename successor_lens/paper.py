"""The paper's figures, in one place: every figure of Gould, Ong, Ogden, Conmy (ICLR 2024, arXiv
2312.09230) this package prints beside its own, and the headline rows that the summary, report.md,
`compare`, the atlas and the CLI all read. Nothing else in the package writes a paper figure."""

from __future__ import annotations

from dataclasses import dataclass

MODEL = "Pythia-1.4B"
HEAD = "L12H0"
"""The paper's successor head in Pythia-1.4B."""
SUCCESSOR_BAR = 0.5
"""The paper's working bar for calling a head a successor head (exact cutoff not confirmed)."""

FIGURES = {
    "best_score": 0.9, "best_ratio": 8.0, "successor_bar": SUCCESSOR_BAR, "classes_found": 10, "modal_coverage": 0.585,
    "probe_accuracy": "94/102 non-number items", "probe_feature_cosine": 0.71, "arithmetic": "0.89 numbers 20-29, 0.53 months",
    "overshoot": "failures follow a greater-than bias", "model": f"{MODEL} ({HEAD})",
}
"""The headline figures (summary.json, mine.json, probe.json and atlas.json record them as `paper`)."""

ARITHMETIC = {"numbers 20-29": 0.89, "months": 0.53, "days": "fails", "letters": "fails"}
"""Vector arithmetic success per task."""

WILD = {"model": f"{MODEL} {HEAD}", "acronym": 0.238, "greater-than": 0.189, "succession wins": "64/64 numbered-listing prompts"}
"""Where the successor head helps on natural text (shares of its top positions) and in context."""


@dataclass(frozen=True)
class Headline:
    """One headline figure: its label (a template; `{head}`, `{per}` filled in where used) and the
    paper's figure as printed beside ours."""

    label: str
    paper: str


HEADLINES = {
    "best_score": Headline("best head by OV succession score: {head}", f"~{FIGURES['best_score']}, ~{FIGURES['best_ratio']:.0f}x the runner-up"),
    "classes_found": Headline("mod-10 classes found by the per-class test, Holm-corrected (per SAE: {per})", str(FIGURES["classes_found"])),
    "classes_found_raw": Headline("mod-10 classes, raw count", str(FIGURES["classes_found"])),
    "modal_coverage": Headline("mean modal coverage, items whose class is not in their last token", str(FIGURES["modal_coverage"])),
    "probe_accuracy": Headline("probe accuracy, held-out non-number tasks pooled, vs shuffled labels", str(FIGURES["probe_accuracy"])),
    "probe_feature_cosine": Headline("probe (fit on non-number items)/SAE-feature cosine, vs random directions", str(FIGURES["probe_feature_cosine"])),
    "arithmetic": Headline("arithmetic through {head}, inputs whose class is not in their last token, vs random directions", str(FIGURES["arithmetic"])),
    "overshoot": Headline("failures that overshoot, vs their predictions permuted among the failures", "a greater-than bias"),
    "ablation": Headline("ablating {head}: rise of the answer's loss on in-context succession (accuracy {clean} -> {ablated}), "
                         "vs ablating other heads",
                         f"ablating {HEAD} hurts succession"),
}
"""summary.json keys -> label and paper figure, in the order they are shown."""

SCAN_TEXT = f"{MODEL} {HEAD} ~{FIGURES['best_score']}, ~{FIGURES['best_ratio']:.0f}x the runner-up"
"""The paper's scan result in words (the `heads` command, a lone dictionary's atlas)."""
WILD_TEXT = (f"{MODEL} {HEAD}: acronym {WILD['acronym']}, greater-than {WILD['greater-than']} of the winning cases; "
             f"the successor head wins {WILD['succession wins']}")
"""The paper's in-the-wild result in words."""
COMPARE = {"analysis_head": HEAD, "top_edit": f"ablating {HEAD} hurts succession", "numbers": f"single tokens ({MODEL.split('-')[0]})"}
"""The paper's side of the `compare` rows that are not headline figures."""
