"""The cross-model report: the headline figures of several run folders side by side.

Read from each run's `summary.json` (figures, nulls, verdicts), `heads.json` (every head's OV
succession score, for the distribution plot), `edits/*.json` (the top edit) and the tokenizer facts
in its provenance. Written as `compare.md`, `compare.json`, `index.html` (linking each run's
atlas) and `succession_scores.png`, each file atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

from successor_lens.artifacts import html
from successor_lens.artifacts.plots import succession_distribution
from successor_lens.artifacts.records import HEADS_RECORD, SUMMARY_RECORD
from successor_lens.artifacts.report import md
from successor_lens.artifacts.stage_files import extras
from successor_lens.errors import UserError
from successor_lens.filenames import ATLAS, COMPARE_JSON, COMPARE_MD, COMPARE_PNG, INDEX, MARKER
from successor_lens.io import provenance, write_json, write_text
from successor_lens.paper import COMPARE, FIGURES, HEADLINES, MODEL, SUCCESSOR_BAR


def load_run(folder: str | os.PathLike) -> dict:
    """What the report needs from one finished run folder; one line naming the fix otherwise."""
    folder = Path(folder)
    if not (folder / MARKER).is_file():
        raise UserError(f"{folder} is not a successor-lens run folder: pass folders written by `successor-lens run --out DIR`")
    summary, heads = SUMMARY_RECORD.read(folder), HEADS_RECORD.read(folder)
    edits = [{"name": e["name"], "kpis": {k["metric"]: k["delta"] for k in e["kpis"]}} for e in extras(folder)["edits"]]
    return {"folder": folder, "summary": summary, "succession": [h["succession"] for h in heads["heads"].values()],
            "tokenizer": summary["provenance"].get("tokenizer"), "source": summary["provenance"].get("source"), "edits": edits}


IN_TASK = "succession accuracy (task prompts, top-1 among the task's items)"
CORPUS_LOSS = "corpus next-token loss (nats)"


def top_edit(edits: list[dict]) -> dict | None:
    """The edit that moves succession accuracy (top-1 among the task's items) the most."""
    scored = [e for e in edits if e["kpis"].get(IN_TASK) is not None]
    return max(scored, key=lambda e: abs(e["kpis"][IN_TASK])) if scored else None


def _f(v, fmt: str = "{:.3f}") -> str:
    return "n/a" if v is None else fmt.format(v) if isinstance(v, (int, float)) else str(v)


def _vs(s: dict, key: str, fmt: str = "{:.2f}", null_word: str = "null") -> str:
    above = s["above_null"].get(key)
    mark = "" if above is None else (" above" if above else " NOT above")
    return f"{_f(s.get(key), fmt)} ({null_word} {_f(s.get(key + '_null'), fmt)};{mark})"


ROWS = [
    ("best head, OV succession score", lambda r, s: f"{s['best_head']} {_vs(s, 'best_score', '{:.3f}', 'chance')}", FIGURES["best_score"]),
    ("ratio to the runner-up", lambda r, s: f"{_f(s.get('best_ratio'), '{:.1f}')}x ({s.get('runner_up')})", f"~{FIGURES['best_ratio']:.0f}x"),
    (f"passes the paper's bar (> {SUCCESSOR_BAR})", lambda r, s: "yes" if s["passes_successor_bar"] else "no", "yes"),
    ("in-context (analysis) head", lambda r, s: s["analysis_head"], COMPARE["analysis_head"]),
    ("ablating it: rise of the answer's loss (accuracy)", lambda r, s: f"{_vs(s, 'ablation_loss_rise', null_word='other heads')}"
     f" ({_f(s.get('ablation_clean_accuracy'), '{:.2f}')} -> {_f(s.get('ablation_ablated_accuracy'), '{:.2f}')})", HEADLINES["ablation"].paper),
    ("mod-10 classes found", lambda r, s: _vs(s, "classes_found", "{:.1f}"), HEADLINES["classes_found"].paper),
    ("mean modal coverage", lambda r, s: _vs(s, "modal_coverage"), HEADLINES["modal_coverage"].paper),
    ("probe accuracy (held-out tasks)", lambda r, s: _vs(s, "probe_accuracy", null_word="shuffled"), HEADLINES["probe_accuracy"].paper),
    ("probe/feature cosine", lambda r, s: _vs(s, "probe_feature_cosine", null_word="random"), HEADLINES["probe_feature_cosine"].paper),
    ("arithmetic through the head", lambda r, s: f"{_f(s['arithmetic'], '{:.2f}')} (random {_f(s['arithmetic_random'], '{:.2f}')}; "
     f"{'above' if s['above_null']['arithmetic'] else 'NOT above'})", HEADLINES["arithmetic"].paper),
    ("the head's ceiling / when it is right", lambda r, s: f"{_f(s['arithmetic_ceiling'], '{:.2f}')} / {_f(s['arithmetic_when_head_right'], '{:.2f}')}", ""),
    ("top edit (d succession acc. in task; d corpus loss)", lambda r, s: _edit_cell(top_edit(r["edits"])), COMPARE["top_edit"]),
    ("numbers 0..500 tokenize as", lambda r, s: (r["tokenizer"] or {}).get("numbers", "n/a"), COMPARE["numbers"]),
    ("BOS prepended", lambda r, s: "n/a" if not r["tokenizer"] else ("yes" if r["tokenizer"]["prepends_bos"] else "no"), ""),
]


def _edit_cell(edit: dict | None) -> str:
    if edit is None:
        return "no edit run"
    k = edit["kpis"]
    return f"{edit['name']}: {_f(k.get(IN_TASK), '{:+.2f}')}; {_f(k.get(CORPUS_LOSS), '{:+.3f}')}"


def run_labels(runs: list[dict]) -> list[str]:
    """One label per run: the model's name, with the folder's when two runs share a model, and a
    number when they share that too; every run is kept (summaries are keyed by label)."""
    models = [str(r["summary"]["model"]) for r in runs]
    labels = [m if models.count(m) == 1 else f"{m} ({Path(r['folder']).name})" for m, r in zip(models, runs)]
    return [label if labels.count(label) == 1 else f"{label} #{labels[:i + 1].count(label)}" for i, label in enumerate(labels)]


def compare_runs(folders: list[str | os.PathLike], out: str | os.PathLike) -> tuple[list[Path], list[list[str]]]:
    """Write the report into `out` (a folder of ours); returns the files and the table rows."""
    runs = [load_run(f) for f in folders]
    out = Path(out)
    names = run_labels(runs)
    header = ["measure"] + names + [f"paper ({MODEL})"]
    rows = [[label] + [cell(r, r["summary"]) for r in runs] + [str(paper)] for label, cell, paper in ROWS]
    links = [os.path.relpath(r["folder"] / ATLAS / INDEX, out) for r in runs]
    image = succession_distribution(names, [r["succession"] for r in runs], out / COMPARE_PNG)
    text = ["# successor-lens: models compared", "", "Headline figures of each run beside its null (computed in the same run) "
            "and the paper's figure. A figure marked NOT above is not above its null.", "",
            "| " + " | ".join(md(h) for h in header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    text += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    text += ["", "Atlases: " + ", ".join(f"[{md(n)}]({md(link)})" for n, link in zip(names, links)), "",
             f"![succession score of every head, per model]({image.name})", ""]
    body = [html.para("Headline figures of each run beside its null (computed in the same run) and the paper's figure. "
                      "A figure marked NOT above is not above its null."),
            html.table(header, rows),
            html.Raw("<p>Atlases: " + " ".join(html.link(link, n) for n, link in zip(names, links)) + "</p>"),
            html.h2("Succession score of every head"), html.img(image.name, "succession score of every head, per model")]
    written = [
        write_text(out / COMPARE_MD, "\n".join(text)),
        write_json(out / COMPARE_JSON, {"provenance": provenance(runs=[str(r["folder"]) for r in runs]), "header": header, "rows": rows,
                                          "summaries": {n: r["summary"] for n, r in zip(names, runs)}}),
        write_text(out / INDEX, html.page("successor-lens: models compared", body, nav=False)),
        image,
    ]
    return written, [header] + rows
