"""report.md and the headline lines, from the atlas document: each figure beside its null and the
paper's figure (`paper.HEADLINES`), and said in words when it is not above its null."""

from __future__ import annotations

import html
from typing import Any

from successor_lens.artifacts.plain import plain_sentences, weights_words
from successor_lens.paper import HEADLINES, SCAN_TEXT, WILD_TEXT


def summary_lines(doc: dict) -> list[str]:
    """The headline lines: from the run's summary (figure, null, paper, verdict in words) when there
    is one; for the atlas of a lone dictionary, the scan and the mining."""
    if doc.get("summary"):
        return list(doc["summary"]["lines"])
    lines = []
    heads = doc.get("heads")
    if heads:
        top = ", ".join(f"{t['head']} {t['succession']:.3f}" for t in heads["top_heads"][:3])
        verdict = "passed" if heads["passes_bar"] else "NOT passed"
        lines.append(f"top heads (OV succession score): {top}; paper's bar > {heads['successor_bar']} {verdict} (paper: {SCAN_TEXT})")
    for s in doc["saes"]:
        m = s.get("mining")
        if m:
            cover = m.get("mean_modal_coverage")
            lines.append(f"{s['id']}: {m['n_classes_found']}/10 mod-10 classes, mean modal coverage "
                         f"{'n/a' if cover is None else f'{cover:.3f}'} (paper {HEADLINES['modal_coverage'].paper}; no null computed for a lone dictionary)")
    return lines


class Strong(str):
    """A table cell shown in bold (a verdict that is NOT above its null)."""


Block = tuple
"""("title", text) | ("h2", text) | ("p", text) | ("ul", [text]) | ("table", header, rows): report.md
and report.html are two renderings of these (`report_md`, `report_html`), every string escaped by
its renderer."""


def report_blocks(doc: dict) -> list[Block]:
    """The report's content: the headline results, each beside its null and the paper's figure."""
    prov = doc["provenance"]
    out: list[Block] = [("title", f"successor-lens report: {doc['model']['name']}"),
                        ("p", f"successor-lens {prov['version']}; weights {weights_words(prov['weight_processing'])}; source {prov['source']}."),
                        ("h2", "Summary"), ("ul", summary_lines(doc))]
    s = doc.get("summary")
    if s and "above_null" in s:
        out[2:2] = [("h2", "What this model does with ordinal tokens"), ("ul", plain_sentences(s))]
    if s:
        f = lambda v: "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
        yes = lambda k: "yes" if s["above_null"][k] else Strong("no")  # noqa: E731
        paper = {key: h.paper for key, h in HEADLINES.items()}
        rows = [
            ["best OV succession score", f"{s['best_head']} {f(s['best_score'])}", f"chance {f(s['best_score_null'])}", yes("best_score"), paper["best_score"]],
            ["runner-up", f"{s['runner_up']} {f(s['runner_up_score'])}", "", "", ""],
            ["ablating " + str(s.get("ablation_head")) + ": rise of the answer's loss, nats (accuracy clean -> ablated)",
             f"{f(s.get('ablation_loss_rise'))} ({f(s.get('ablation_clean_accuracy'))} -> {f(s.get('ablation_ablated_accuracy'))})",
             f"other heads' mean {f(s.get('ablation_loss_rise_null'))}", yes("ablation_loss_rise") if "ablation_loss_rise" in s["above_null"] else "n/a", paper["ablation"]],
            ["mod-10 classes found by the per-class test, Holm-corrected (mean over SAEs)", f(s["classes_found"]), f(s["classes_found_null"]), yes("classes_found"), paper["classes_found"]],
            ["mod-10 classes, raw count", f(s["classes_found_raw"]), f(s["classes_found_raw_null"]), yes("classes_found_raw"), ""],
            ["class latents", f(s["class_latents"]), f(s["class_latents_null"]), yes("class_latents"), ""],
            ["mean modal coverage, unsplit items (every item: numbers / other)",
             f"{f(s['modal_coverage'])} ({f(s.get('modal_coverage_all_items'))}: {f(s['modal_coverage_numbers'])} / {f(s['modal_coverage_other'])})",
             f(s["modal_coverage_null"]), yes("modal_coverage"), paper["modal_coverage"]],
            ["classes recurring across seeds", f"{s['recurring_classes']}/10 of {s['n_saes']} SAEs", "", "", "modal features recur"],
            ["probe accuracy (held-out non-number tasks pooled)", f(s["probe_accuracy"]), f"shuffled labels {f(s['probe_accuracy_null'])}", yes("probe_accuracy"), paper["probe_accuracy"]],
            ["probe (non-number items)/feature cosine", f(s["probe_feature_cosine"]), f"random 99% {f(s['probe_feature_cosine_null'])}",
             yes("probe_feature_cosine"), paper["probe_feature_cosine"]],
            ["arithmetic through " + s["analysis_head"] + ", unsplit inputs", f(s["arithmetic"]), f"random {f(s['arithmetic_random'])}, probe {f(s['arithmetic_probe'])}",
             yes("arithmetic"), paper["arithmetic"]],
            ["head's ceiling / success when it is right", f"{f(s['arithmetic_ceiling'])} / {f(s['arithmetic_when_head_right'])}",
             f"random when right {f(s['arithmetic_random_when_head_right'])}", "", ""],
            ["failures that overshoot", f(s["overshoot"]), f(s.get("overshoot_null")), yes("overshoot"), paper["overshoot"]],
        ]
        out += [("h2", "Figures beside their nulls and the paper"), ("p", f"Analysis head: {s['analysis_head']} ({s['analysis_head_reason']})."),
                ("table", ["measure", "this model", "null", "above null", "paper"], rows)]
        probes: dict[str, Any] = doc.get("probes") or {}
        p = probes.get("probe_mlp0")
        if p:
            out.append(("table", ["held-out task", "probe", "shuffled labels"],
                        [[t, f"{acc:.2f}", f"{p['shuffled_label_control'][t]:.2f}"] for t, acc in p["accuracy"].items()]))
        a = probes.get("arithmetic", {}).get("SAE features")
        if a and a["per_task"]:
            rnd = probes["arithmetic"]["random directions"]["per_task"]
            out.append(("table", ["arithmetic, task", "SAE features", "random directions"],
                        [[t, f"{v:.2f}", f(rnd.get(t))] for t, v in a["per_task"].items()]))
    wild = doc.get("wild")
    if wild:
        out += [("h2", "In the wild (direct effects on the corpus) and in context"),
                ("table", ["head", "mean d loss", "succession wins", *wild["heads"][0]["category_shares"]],
                 [[h["head"], f"{h['mean_delta_loss']:.4f}", str(h["head_wins"]), *(f"{v:.2f}" for v in h["category_shares"].values())]
                  for h in wild["heads"]]),
                ("p", f"Paper ({WILD_TEXT}). In-context DLA on the answer, top heads: "
                 + ", ".join(f"{r['head']} {r['dla']:.3f} (OV {r['ov_succession'] if r['ov_succession'] is None else round(r['ov_succession'], 3)})"
                             for r in wild["in_context"]["ranking"][:5]) + ".")]
    for edit in doc.get("edits") or []:
        out += [("h2", f"Edit {edit['name']}"),
                ("table", ["KPI", "before", "after", "delta"],
                 [[r["metric"], f"{r['before']:.3f}", f"{r['after']:.3f}", f"{r['delta']:+.3f}"] for r in edit["kpis"]])]
    return out


def report_md(doc: dict) -> str:
    """report.md: `report_blocks` as Markdown, every string escaped (`md`)."""
    out: list[str] = []
    for kind, *rest in report_blocks(doc):
        if kind == "title":
            out += [f"# {md(rest[0])}", ""]
        elif kind == "h2":
            out += [f"## {md(rest[0])}", ""]
        elif kind == "p":
            out += [md(rest[0]), ""]
        elif kind == "ul":
            out += [f"- {md(line)}" for line in rest[0]] + [""]
        else:
            header, rows = rest
            cell = lambda c: f"**{md(c)}**" if isinstance(c, Strong) else md(c)  # noqa: E731
            out += ["| " + " | ".join(md(h) for h in header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
            out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows] + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def report_html(doc: dict) -> str:
    """report.html: `report_blocks` rendered from the data as HTML (escaped by `html`'s helpers), not parsed back from Markdown."""
    from successor_lens.artifacts import html as page_html

    parts: list[str] = []
    title = ""
    for kind, *rest in report_blocks(doc):
        if kind == "title":
            title = rest[0]
        elif kind == "h2":
            parts.append(page_html.h2(rest[0]))
        elif kind == "p":
            parts.append(page_html.para(rest[0]))
        elif kind == "ul":
            parts.append(page_html.Raw("<ul>" + "".join(f"<li>{page_html.esc(line)}</li>" for line in rest[0]) + "</ul>"))
        else:
            header, rows = rest
            parts.append(page_html.table(header, [[page_html.Raw(f"<strong>{page_html.esc(c)}</strong>") if isinstance(c, Strong) else c
                                                   for c in row] for row in rows], left=len(header)))
    return page_html.page(title, parts)


def md(text) -> str:
    """A string safe in Markdown table cells and text: HTML-escaped, pipes and backslashes escaped."""
    return html.escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


