"""Write the atlas folder: atlas.json + schema, report.md, every figure, every page, all at once.

The site is built in a temporary folder and swapped in whole (`atomic_dir`), so an interrupted
build never leaves a half-written atlas. Pages and figures are made from the JSON document as it
reads back from disk, so the export and the pages show the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from successor_lens.artifacts import html, plots
from successor_lens.artifacts.report import report_md, summary_lines
from successor_lens.artifacts.schema import SCHEMA
from successor_lens.io import atomic_dir, inside, write_json, write_text


def write_atlas(atlas: dict, folder: str | Path, progress: bool = True) -> Path:
    """The static site `folder/index.html` with its pages, figures, JSON and report. `folder` is
    replaced whole: it must be a folder this package owns (`atlas` inside a claimed run folder).
    Every page and image path in the document must stay inside the site. A progress bar counts
    the pages and figures (stderr)."""
    folder = Path(folder)
    doc = json.loads(json.dumps(atlas, default=_plain))  # exactly what atlas.json will hold
    head_pages = (doc["heads"] or {}).get("pages", [])
    n_latents = sum(len(sae["latents"]) for sae in doc["saes"])
    with atomic_dir(folder) as tmp, tqdm(total=2 * (len(head_pages) + n_latents) + len(doc["saes"]) + 1, desc="atlas",
                                         unit="file", leave=False, disable=not progress) as bar:
        write_json(tmp / "atlas.json", doc)
        write_json(tmp / "atlas.schema.json", SCHEMA)
        write_text(tmp / "report.md", report_md(doc))
        _figures(doc, tmp / "images", bar.update)
        write_text(tmp / "index.html", html.index_page(doc, summary_lines(doc)))
        bar.update()
        for record in head_pages:
            write_text(inside(tmp, record["page"], "atlas page"), html.head_page(record))
            bar.update()
        for sae in doc["saes"]:
            for record in sae["latents"]:
                write_text(inside(tmp, record["page"], "atlas page"), html.latent_page(sae, record))
                bar.update()
    return folder / "index.html"


def _plain(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _figures(doc: dict, images: Path, step=lambda: None) -> None:
    name = doc["model"]["name"]
    heads = doc["heads"]
    if heads:
        plots.scan_figures(name, heads["config"]["embedding"], heads["succession"], heads["copying"], images)
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
        for record in sae["latents"]:
            plots.histogram(record["freq_hist_data_bar_heights"], record["freq_hist_data_bar_values"], inside(images.parent, record["image"], "atlas image"),
                            f"{sae['id']} latent {record['index']}")
            step()
    if doc.get("wild"):
        plots.wild_figures(doc["wild"], images)
    if doc.get("probes"):
        plots.probe_figures(doc["probes"], images)
