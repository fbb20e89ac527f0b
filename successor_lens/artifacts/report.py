"""Write stage results to the run folder: JSON with provenance, and the figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

from successor_lens.artifacts.plots import class_latent_heatmap, probe_figures, scan_figures, wild_figures
from successor_lens.features.pipeline import FEATURES_FILE, MineRun, save_directions
from successor_lens.io import provenance, write_json, write_text
from successor_lens.models import model_provenance
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


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def summary_lines(doc: dict) -> list[str]:
    """Five lines: top heads, classes found, probe accuracy, arithmetic success, probe/feature cosine."""
    lines = []
    heads = doc.get("heads")
    if heads:
        top = ", ".join(f"{t['head']} {t['succession']:.3f}" for t in heads["top_heads"][:3])
        verdict = "passed" if heads["passes_bar"] else "not passed: this model's successor head is weak"
        lines.append(f"top heads (OV succession score): {top}; paper's bar > {heads['successor_bar']} {verdict} (paper: Pythia-1.4B L12H0 ~0.9)")
    else:
        lines.append("heads: not scanned")
    mined = [(s["id"], s["mining"]) for s in doc["saes"] if s.get("mining")]
    if mined:
        found = ", ".join(f"{i} {m['n_classes_found']}/10" for i, m in mined)
        cover = mined[0][1].get("mean_modal_coverage")
        recur = (doc.get("mining") or {}).get("recurrence", {})
        rec = f"; classes recurring across seeds: {len(recur.get('modal_classes', []))}" if recur else ""
        lines.append(f"mod-10 classes found: {found}; mean modal coverage {cover if cover is None else round(cover, 3)} (paper 0.585){rec}")
    else:
        lines.append("mod-10 classes: no dictionary mined")
    probes = doc.get("probes")
    if probes:
        p = probes["probe_mlp0"]
        lines.append(f"probe accuracy (MLP0, leave one task out): mean {_mean(p['accuracy'].values()):.2f} over {len(p['accuracy'])} held-out tasks "
                     f"vs shuffled-label control {_mean(p['shuffled_label_control'].values()):.2f} (chance 0.10; paper 94/102 non-number items)")
        a = probes["arithmetic"]
        lines.append(f"arithmetic through {probes['head']}: {a['SAE features']['overall']:.2f} with SAE features vs random directions "
                     f"{a['random directions']['overall']:.2f}, probe directions {a['probe directions']['overall']:.2f} (paper 0.89 numbers 20-29, 0.53 months)")
        c = probes["probe_feature_cosine"]
        lines.append(f"probe/SAE-feature cosine: {c['mean']:.2f} vs random directions {c['random_baseline']:.2f} (paper 0.71)")
    else:
        lines += ["probes: not run", "arithmetic: not run", "probe/feature cosine: not run"]
    return lines


def report_md(doc: dict) -> str:
    """report.md: the headline results, each beside its control and the paper's figure."""
    prov = doc["provenance"]
    out = [f"# successor-lens report: {doc['model']['name']}", "",
           f"successor-lens {prov['version']}; weights {prov['weight_processing']}; source {prov['source']}.", "",
           "## Summary", ""] + [f"- {line}" for line in summary_lines(doc)] + [""]
    rows = []
    heads = doc.get("heads")
    if heads:
        best = heads["top_heads"][0]
        rows.append(["best succession score (OV)", f"{best['head']} {best['succession']:.3f}", f"copying score of that head {best['copying']:.3f}", "~0.9 (Pythia-1.4B L12H0), bar > 0.5"])
    for s in doc["saes"]:
        m = s.get("mining")
        if m:
            rows.append([f"mod-10 classes, {s['id']}", f"{m['n_classes_found']}/10, modal coverage {m['mean_modal_coverage'] or 0:.3f}", "chance selectivity 0.10", "10/10, coverage 0.585"])
    probes = doc.get("probes")
    if probes:
        p, c, a = probes["probe_mlp0"], probes["probe_feature_cosine"], probes["arithmetic"]
        for task, acc in p["accuracy"].items():
            rows.append([f"probe, held-out {task}", f"{acc:.2f}", f"shuffled labels {p['shuffled_label_control'][task]:.2f}", "94/102 non-number items overall"])
        rows.append(["probe/feature cosine", f"{c['mean']:.2f}", f"random {c['random_baseline']:.2f}", "0.71"])
        for task, v in a["SAE features"]["per_task"].items():
            rows.append([f"arithmetic {task} ({probes['head']})", f"{v:.2f}", f"random directions {a['random directions']['per_task'].get(task, float('nan')):.2f}",
                         {"numbers": "0.89 (20-29)", "months": "0.53"}.get(task.split(":")[0], "fails (days, letters)" if task.split(":")[0] in ("days", "letters") else "-")])
    out += ["## Measured beside control and paper", "", "| measure | this model | control | paper |", "| --- | --- | --- | --- |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    wild = doc.get("wild")
    if wild:
        out += ["", "## In the wild (direct effects on the corpus) and in context", "",
                "| head | mean d loss | succession wins | " + " | ".join(wild["heads"][0]["category_shares"]) + " |",
                "| --- | --- | --- | " + " | ".join("---" for _ in wild["heads"][0]["category_shares"]) + " |"]
        out += [f"| {h['head']} | {h['mean_delta_loss']:.4f} | {h['head_wins']} | " + " | ".join(f"{v:.2f}" for v in h["category_shares"].values()) + " |"
                for h in wild["heads"]]
        out += ["", "Paper (Pythia-1.4B L12H0): acronym 0.238, greater-than 0.189 of the winning cases; the successor head wins 64/64 "
                    "numbered-listing prompts. In-context DLA on the answer, top heads: "
                + ", ".join(f"{r['head']} {r['dla']:.3f} (OV {r['ov_succession'] if r['ov_succession'] is None else round(r['ov_succession'], 3)})"
                            for r in wild["in_context"]["ranking"][:5]) + "."]
    for edit in doc.get("edits") or []:
        out += ["", f"## Edit {edit['name']}", "", "| KPI | before | after | delta |", "| --- | --- | --- | --- |"]
        out += [f"| {r['metric']} | {r['before']:.3f} | {r['after']:.3f} | {r['delta']:+.3f} |" for r in edit["kpis"]]
    if heads and not heads["passes_bar"]:
        out += ["", "No head passes the paper's successor-head bar on this model, so the arithmetic through its best head is not "
                    "expected to reproduce the paper's figures; the numbers above are reported as measured."]
    return "\n".join(out) + "\n"


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
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "edit"
    written = [write_json(out / "edits" / f"{stem}.json", doc)]
    refresh_atlas(out)
    return written


def extras(out: Path) -> dict:
    """The optional atlas sections found in a run folder: edits (edits/*.json) and wild (wild.json)."""
    out = Path(out)
    edits = [json.loads(p.read_text()) for p in sorted((out / "edits").glob("*.json"))]
    wild = json.loads((out / "wild.json").read_text()) if (out / "wild.json").is_file() else None
    return {"edits": [{k: e[k] for k in ("name", "spec", "kpis")} for e in edits],
            "wild": {k: wild[k] for k in ("heads", "in_context")} if wild else None}


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
