"""Write the atlas folder: atlas.json + schema, report.md, every figure, every page, all at once.

The site is built in a temporary folder and swapped in whole (`atomic_dir`), so an interrupted
build never leaves a half-written atlas. Pages and figures are made from the JSON document as it
reads back from disk, so the export and the pages show the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from successor_lens.artifacts import html, latent_pages, plots
from successor_lens.artifacts.atlas_schema import SCHEMA, load_atlas
from successor_lens.artifacts.decision import decision_page
from successor_lens.artifacts.neuronpedia import export_features, export_summary, read_export, write_export
from successor_lens.artifacts.report import report_html, report_md, summary_lines
from successor_lens.artifacts.stage_files import extras
from successor_lens.errors import UserError
from successor_lens.filenames import ATLAS, ATLAS_JSON, ATLAS_SCHEMA, IMAGES, INDEX, NEURONPEDIA, REPORT, REPORT_HTML, ROLES_PNG, RUN_SETTINGS
from successor_lens.io import atomic_dir, inside, write_json, write_text
from successor_lens.progress import bar as progress_bar
from successor_lens.progress import honours_progress


@honours_progress
def write_atlas(atlas: dict, folder: str | Path, progress: bool = True, exports: dict[str, dict] | None = None) -> Path:
    """The static site `folder/index.html` with its pages, figures, JSON and report. `folder` is
    replaced whole: it must be a folder this package owns (`atlas` inside a claimed run folder).
    Every page and image path in the document must stay inside the site. `exports` ({sae id:
    files}, `export.build_exports`) is the Neuronpedia export written into `neuronpedia/` with an
    every-latent index; without it, the export already in `folder` is kept (a re-render). A progress
    bar counts the pages and figures (stderr)."""
    folder = Path(folder)
    run = folder.resolve().parent if folder.name == ATLAS else None  # a run folder's atlas: replay commands name the run
    doc = json.loads(json.dumps(atlas, default=_plain))  # exactly what atlas.json will hold
    if exports is None:
        exports = {sae["id"]: _read_existing(folder, sae) for sae in doc["saes"] if sae.get("export")}
    for sae in doc["saes"]:
        if sae["id"] in exports:
            sae["export"] = export_summary(sae["id"], exports[sae["id"]])
    features = {sae_id: export_features(files) for sae_id, files in exports.items()}
    head_pages = (doc["heads"] or {}).get("pages", [])
    n_latents = sum(len(sae["latents"]) for sae in doc["saes"])
    tunes = doc.get("tunes") or []
    with atomic_dir(folder) as tmp, progress_bar(total=2 * (len(head_pages) + n_latents + len(tunes)) + 2 * len(doc["saes"]) + 2 + len(exports), desc="atlas",
                                                 unit="file", leave=False, disable=not progress) as bar:
        write_json(tmp / ATLAS_JSON, doc)
        write_json(tmp / ATLAS_SCHEMA, SCHEMA)
        report = report_md(doc)
        write_text(tmp / REPORT, report)
        write_text(tmp / REPORT_HTML, report_html(doc))
        bar.update()
        for sae_id, files in exports.items():
            write_export(files, inside(tmp, f"{NEURONPEDIA}/{sae_id}", "export folder"))
            bar.update()
        _figures(doc, tmp / IMAGES, bar.update)
        write_text(tmp / INDEX, html.index_page(doc, summary_lines(doc)))
        bar.update()
        for record in head_pages:
            write_text(inside(tmp, record["page"], "atlas page"), html.head_page(record, doc["heads"], doc.get("summary")))
            bar.update()
        for entry in tunes:
            write_text(inside(tmp, entry["page"], "atlas page"), decision_page(entry, doc["model"]["name"], run))
            bar.update()
        for sae in doc["saes"]:
            pairs = features.get(sae["id"], [])
            by_index = {f["feature_index"]: (f, e) for f, e in pairs}
            pages = {r["index"] for r in sae["latents"]}
            order = [r["index"] for r in sae["latents"]]
            for n, record in enumerate(sae["latents"]):
                prev, nxt = order[n - 1] if n else None, order[n + 1] if n + 1 < len(order) else None
                write_text(inside(tmp, record["page"], "atlas page"), latent_pages.latent_page(sae, record, by_index.get(record["index"]), pages, prev, nxt))
                bar.update()
            if sae.get("export"):
                settings = exports[sae["id"]][RUN_SETTINGS]
                write_text(inside(tmp, sae["export"]["pages"][0], "atlas page"), latent_pages.dictionary_page(sae, pairs, settings, pages))
            bar.update()
    return folder / INDEX


def _read_existing(folder: Path, sae: dict) -> dict:
    path = inside(folder, sae["export"]["folder"], "export folder")
    files = read_export(path) if path.is_dir() else {}
    if RUN_SETTINGS not in files:
        raise UserError(f"{path}: the atlas's Neuronpedia export is missing: rebuild the atlas (`successor-lens run --force atlas`)")
    return files


EMPTY_SVG = ('<?xml version="1.0" encoding="utf-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="320" height="40">'
             '<text x="8" y="24" font-size="13">never fires on these items</text></svg>\n')


def _plain(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _figures(doc: dict, images: Path, step=lambda: None) -> None:
    name = doc["model"]["name"]
    heads = doc["heads"]
    if heads:
        plots.scan_figures(name, heads["config"]["embedding"], heads["succession"], heads["copying"], images, heads.get("null"))
        for record in heads["pages"]:
            profile = {"all": {int(k): v for k, v in record["offset_profile"].items()}}
            plots.offset_plot(profile, inside(images.parent, record["image"], "atlas image"), f"{record['head']}: OV logit by index offset")
            step()
    for sae in doc["saes"]:
        d_sae = sae["d_sae"]
        profiles = torch.zeros(d_sae, 10)
        latent_class = {}
        for record in sae["latents"]:
            profiles[record["index"]] = torch.tensor(record["class_profile"])
            if record["mod10_class"] is not None:
                latent_class[record["index"]] = record["mod10_class"]
        plots.class_latent_heatmap(profiles, latent_class, inside(images.parent, sae["image"], "atlas image"), f"{name} {sae['id']}: class x latent")
        step()
        for record in sae["latents"]:  # SVG, not matplotlib: a dictionary may have 16k of them
            svg = latent_pages.svg_bars(record["freq_hist_data_bar_heights"], record["freq_hist_data_bar_values"], "activation on the task items", "items")
            write_text(inside(images.parent, record["image"], "atlas image"), f'<?xml version="1.0" encoding="utf-8"?>\n{svg}\n'
                       .replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1) if svg.startswith("<svg") else EMPTY_SVG)
            step()
    if doc.get("wild"):
        plots.wild_figures(doc["wild"], images)
    if (doc.get("roles") or {}).get("patching"):
        plots.roles_figure(doc["roles"]["patching"]["effect"], images / ROLES_PNG, name)
    if doc.get("probes"):
        plots.probe_figures(doc["probes"], images)
    for entry in doc.get("tunes") or []:
        plots.pareto_figure(entry["points"], inside(images.parent, entry["image"], "atlas image"), f"{name}: {entry['goal']} (search split)")
        step()


def refresh_atlas(out: Path) -> None:
    """Re-render a run folder's existing atlas with its edits and wild results (after `edit`, `wild`)."""
    path = Path(out) / ATLAS / ATLAS_JSON
    if path.is_file():
        doc = load_atlas(path)
        doc.update(extras(out))
        write_atlas(doc, path.parent)
        write_text(Path(out) / REPORT, (path.parent / REPORT).read_text())


def add_tune_pages(out: Path) -> list[Path]:
    """After `tune`: the decision pages and their charts, atlas.json and the index, each written in
    place and atomically; the rest of the atlas (a page a head and a latent, hundreds of files) is
    left as it is, since a tune changes nothing on them. No atlas yet: nothing (the next `run` or
    `atlas` renders the tunes with the rest)."""
    folder = Path(out) / ATLAS
    path = folder / ATLAS_JSON
    if not path.is_file():
        return []
    doc = load_atlas(path)
    doc["tunes"] = extras(Path(out))["tunes"]
    doc = json.loads(json.dumps(doc, default=_plain))
    run, name = folder.resolve().parent, doc["model"]["name"]
    written = [write_json(path, doc)]
    for entry in doc["tunes"]:
        written.append(plots.pareto_figure(entry["points"], inside(folder, entry["image"], "atlas image"), f"{name}: {entry['goal']} (search split)"))
        written.append(write_text(inside(folder, entry["page"], "atlas page"), decision_page(entry, name, run)))
    written.append(write_text(folder / INDEX, html.index_page(doc, summary_lines(doc))))
    return written
