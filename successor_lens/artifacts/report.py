"""Write stage results to the run folder: JSON with provenance, and the figures."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

from successor_lens.artifacts.plots import class_latent_heatmap, probe_figures, scan_figures, wild_figures
from successor_lens.features.pipeline import FEATURES_FILE, MineRun, save_directions
from successor_lens.io import provenance, write_json, write_text
from successor_lens.models import model_provenance
from successor_lens.probes.edits import check_name
from successor_lens.probes.pipeline import ProbeRun


def write_scan(result, model, out: Path) -> list[Path]:
    """heads.json, heads.png (succession heatmap) and heads_copying.png for a `SuccessionScores`."""
    out = Path(out)
    data = {"provenance": provenance(**model_provenance(model)), **result.to_json()}
    return [write_json(out / "heads.json", data)] + scan_figures(model.cfg.model_name, result.config.embedding, result.scores, result.copying, out)


def write_mine(result: MineRun, model, out: Path, site: str = "mlp0") -> list[Path]:
    """mine.json, features.safetensors (the downstream f_0..f_9) and mine_classes.png."""
    out = Path(out)
    first = result.mined[0]
    return [
        write_json(out / "mine.json", {"provenance": provenance(**model_provenance(model), site=site), **result.to_json()}),
        save_directions(out / FEATURES_FILE, result.directions),
        class_latent_heatmap(first.profiles, first.latent_class, out / "mine_classes.png",
                             f"{model.cfg.model_name}: class x latent (SAE 1)"),
    ]


def write_probe(run: ProbeRun, model, out: Path) -> list[Path]:
    """probe.json and the three probe figures."""
    out, data = Path(out), run.to_json()
    prov = provenance(**model_provenance(model), site="mlp0", head=run.head)
    return [write_json(out / "probe.json", {"provenance": prov, **data})] + probe_figures(data, out)


# --- headline results, from the atlas document ---------------------------------------------------


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
        lines.append(f"top heads (OV succession score): {top}; paper's bar > {heads['successor_bar']} {verdict} (paper: Pythia-1.4B L12H0 ~0.9)")
    for s in doc["saes"]:
        m = s.get("mining")
        if m:
            cover = m.get("mean_modal_coverage")
            lines.append(f"{s['id']}: {m['n_classes_found']}/10 mod-10 classes, mean modal coverage "
                         f"{'n/a' if cover is None else f'{cover:.3f}'} (paper 0.585; no null computed for a lone dictionary)")
    return lines


def report_md(doc: dict) -> str:
    """report.md: the headline results, each beside its null and the paper's figure."""
    prov = doc["provenance"]
    out = [f"# successor-lens report: {md(doc['model']['name'])}", "",
           f"successor-lens {prov['version']}; weights {md(prov['weight_processing'])}; source {md(prov['source'])}.", "",
           "## Summary", ""] + [f"- {md(line)}" for line in summary_lines(doc)] + [""]
    s = doc.get("summary")
    if s:
        f = lambda v: "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
        yes = lambda k: "yes" if s["above_null"][k] else "**no**"  # noqa: E731
        rows = [
            ["best OV succession score", f"{s['best_head']} {f(s['best_score'])}", f"chance {f(s['best_score_null'])}", yes("best_score"), "~0.9 (L12H0), > 0.5"],
            ["runner-up", f"{s['runner_up']} {f(s['runner_up_score'])}", "", "", "best ~8x runner-up"],
            ["mod-10 classes found above both nulls (mean over SAEs)", f(s["classes_found"]), f(s["classes_found_null"]), yes("classes_found"), "10"],
            ["mod-10 classes, raw count", f(s["classes_found_raw"]), f(s["classes_found_raw_null"]), yes("classes_found_raw"), ""],
            ["class latents", f(s["class_latents"]), f(s["class_latents_null"]), yes("class_latents"), ""],
            ["mean modal coverage (numbers / other)", f"{f(s['modal_coverage'])} ({f(s['modal_coverage_numbers'])} / {f(s['modal_coverage_other'])})",
             f(s["modal_coverage_null"]), yes("modal_coverage"), "0.585"],
            ["classes recurring across seeds", f"{s['recurring_classes']}/10 of {s['n_saes']} SAEs", "", "", "modal features recur"],
            ["probe accuracy (held-out non-number tasks pooled)", f(s["probe_accuracy"]), f"shuffled labels {f(s['probe_accuracy_null'])}", yes("probe_accuracy"), "94/102"],
            ["probe/feature cosine", f(s["probe_feature_cosine"]), f"random 99% {f(s['probe_feature_cosine_null'])}", yes("probe_feature_cosine"), "0.71"],
            ["arithmetic through " + md(s["analysis_head"]), f(s["arithmetic"]), f"random {f(s['arithmetic_random'])}, probe {f(s['arithmetic_probe'])}",
             yes("arithmetic"), "0.89 (20-29), 0.53 months"],
            ["head's ceiling / success when it is right", f"{f(s['arithmetic_ceiling'])} / {f(s['arithmetic_when_head_right'])}",
             f"random when right {f(s['arithmetic_random_when_head_right'])}", "", ""],
            ["failures that overshoot", f(s["overshoot"]), f"chance {f(s['overshoot_chance'])}", yes("overshoot"), "greater-than bias"],
        ]
        out += ["## Figures beside their nulls and the paper", "", f"Analysis head: {md(s['analysis_head'])} ({md(s['analysis_head_reason'])}).", "",
                "| measure | this model | null | above null | paper |", "| --- | --- | --- | --- | --- |"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        probes = doc.get("probes") or {}
        p = probes.get("probe_mlp0")
        if p:
            out += ["", "| held-out task | probe | shuffled labels |", "| --- | --- | --- |"]
            out += [f"| {md(t)} | {acc:.2f} | {p['shuffled_label_control'][t]:.2f} |" for t, acc in p["accuracy"].items()]
        a = probes.get("arithmetic", {}).get("SAE features")
        if a and a["per_task"]:
            rnd = probes["arithmetic"]["random directions"]["per_task"]
            out += ["", "| arithmetic, task | SAE features | random directions |", "| --- | --- | --- |"]
            out += [f"| {md(t)} | {v:.2f} | {f(rnd.get(t))} |" for t, v in a["per_task"].items()]
    wild = doc.get("wild")
    if wild:
        out += ["", "## In the wild (direct effects on the corpus) and in context", "",
                "| head | mean d loss | succession wins | " + " | ".join(wild["heads"][0]["category_shares"]) + " |",
                "| --- | --- | --- | " + " | ".join("---" for _ in wild["heads"][0]["category_shares"]) + " |"]
        out += [f"| {md(h['head'])} | {h['mean_delta_loss']:.4f} | {h['head_wins']} | " + " | ".join(f"{v:.2f}" for v in h["category_shares"].values()) + " |"
                for h in wild["heads"]]
        out += ["", "Paper (Pythia-1.4B L12H0): acronym 0.238, greater-than 0.189 of the winning cases; the successor head wins 64/64 "
                    "numbered-listing prompts. In-context DLA on the answer, top heads: "
                + ", ".join(f"{md(r['head'])} {r['dla']:.3f} (OV {r['ov_succession'] if r['ov_succession'] is None else round(r['ov_succession'], 3)})"
                            for r in wild["in_context"]["ranking"][:5]) + "."]
    for edit in doc.get("edits") or []:
        out += ["", f"## Edit {md(edit['name'])}", "", "| KPI | before | after | delta |", "| --- | --- | --- | --- |"]
        out += [f"| {md(r['metric'])} | {r['before']:.3f} | {r['after']:.3f} | {r['delta']:+.3f} |" for r in edit["kpis"]]
    return "\n".join(out) + "\n"


def md(text) -> str:
    """A string safe in Markdown table cells and text: HTML-escaped, pipes and backslashes escaped."""
    return html.escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


# --- in the wild and edits -----------------------------------------------------------------------


def write_wild(results, incontext, ov_scores: dict[str, float], model, out: Path, data: dict) -> list[Path]:
    """wild.json, wild_categories.png and incontext_dla.png; refreshes the atlas when there is one."""
    out = Path(out)
    doc = {"provenance": provenance(**model_provenance(model), **data),
           "heads": [r.summary() for r in results], "in_context": incontext.summary(ov_scores)}
    written = [write_json(out / "wild.json", doc)] + wild_figures(doc, out)
    refresh_atlas(out)
    return written


def write_edit(name: str, edits, table: list[dict], model, out: Path, data: dict) -> list[Path]:
    """edits/NAME.json with the KPI table; refreshes the atlas when there is one."""
    out = Path(out)
    doc = {"name": name, "provenance": provenance(**model_provenance(model), **data),
           "spec": {"edits": [e.__dict__ for e in edits]}, "kpis": table}
    written = [write_json(out / "edits" / f"{check_name(name)}.json", doc)]  # the name is the file name
    refresh_atlas(out)
    return written


def extras(out: Path) -> dict:
    """The optional atlas sections found in a run folder: edits (edits/*.json) and wild (wild.json).
    A file in edits/ that is not an edit record (someone else's JSON) is left out, with a notice."""
    out = Path(out)
    edits = []
    for path in sorted((out / "edits").glob("*.json")):
        try:
            record = json.loads(path.read_text())
            if not (isinstance(record, dict) and isinstance(record.get("name"), str) and isinstance(record.get("spec"), dict)
                    and isinstance(record.get("kpis"), list)):
                raise ValueError
        except (ValueError, OSError):
            print(f"successor-lens: note: {path} is not an edit record written by `successor-lens edit`; left out of the atlas",
                  file=sys.stderr)
            continue
        edits.append({k: record[k] for k in ("name", "spec", "kpis")})
    wild = json.loads((out / "wild.json").read_text()) if (out / "wild.json").is_file() else None
    return {"edits": edits, "wild": {k: wild[k] for k in ("heads", "in_context")} if wild else None}


def refresh_atlas(out: Path) -> None:
    """Re-render an existing atlas with the run folder's edits and wild results."""
    from successor_lens.artifacts.schema import load_atlas
    from successor_lens.artifacts.site import write_atlas

    path = Path(out) / "atlas" / "atlas.json"
    if path.is_file():
        doc = load_atlas(path)
        doc.update(extras(out))
        write_atlas(doc, path.parent)
        write_text(Path(out) / "report.md", (path.parent / "report.md").read_text())
