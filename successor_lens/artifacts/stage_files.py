"""Each stage's files in the run folder: its JSON record with provenance, and its figures.
Read back through `records.py`."""

from __future__ import annotations

import sys
from pathlib import Path

from successor_lens.artifacts.decision import tune_entry, tune_points
from successor_lens.artifacts.plots import class_latent_heatmap, pareto_figure, probe_figures, roles_figure, scan_figures, wild_figures
from successor_lens.artifacts.records import ROLES_RECORD, WILD_RECORD
from successor_lens.errors import UserError
from successor_lens.features.mine_run import MineRun, save_directions
from successor_lens.filenames import CHOSEN_EDIT, EDITS, FEATURES, HEADS, MINE, MINE_PNG, PARETO_PNG, PROBE, ROLES, ROLES_PNG, TUNE, TUNE_JSON, WILD
from successor_lens.io import file_sha256, provenance, read_json, write_json
from successor_lens.models.provenance import model_provenance
from successor_lens.probes.edits import check_name
from successor_lens.probes.probe_run import ProbeRun
from successor_lens.probes.scan import chance_null
from successor_lens.probes.tune_config import GOALS


def write_scan(result, model, out: Path) -> list[Path]:
    """heads.json, heads.png (succession heatmap) and heads_copying.png for a `SuccessionScores`."""
    out = Path(out)
    data = {"provenance": provenance(**model_provenance(model)), **result.to_json()}
    return [write_json(out / HEADS, data)] + scan_figures(model.cfg.model_name, result.config.embedding, result.scores, result.copying, out,
                                                          chance_null(data))


def write_mine(result: MineRun, model, out: Path, site: str = "mlp0") -> list[Path]:
    """mine.json, features.safetensors (the downstream f_0..f_9) and mine_classes.png."""
    out = Path(out)
    first = result.mined[0]
    features = save_directions(out / FEATURES, result.directions)  # first: mine.json names its hash
    return [
        write_json(out / MINE, {"provenance": provenance(**model_provenance(model), site=site), **result.to_json(),
                                "features_sha256": file_sha256([features])}),
        features,
        class_latent_heatmap(first.profiles, first.latent_class, out / MINE_PNG,
                             f"{model.cfg.model_name}: class x latent (SAE 1)"),
    ]


def write_probe(run: ProbeRun, model, out: Path) -> list[Path]:
    """probe.json and the three probe figures."""
    out, data = Path(out), run.to_json()
    prov = provenance(**model_provenance(model), site="mlp0", head=run.head)
    return [write_json(out / PROBE, {"provenance": prov, **data})] + probe_figures(data, out)


def write_wild(results, incontext, ov_scores: dict[str, float], model, out: Path, data: dict) -> list[Path]:
    """wild.json, wild_categories.png and incontext_dla.png."""
    out = Path(out)
    doc = {"provenance": provenance(**model_provenance(model), **data),
           "heads": [r.summary() for r in results], "in_context": incontext.summary(ov_scores)}
    return [write_json(out / WILD, doc)] + wild_figures(doc, out)


def write_roles(roles: dict, model, out: Path, data: dict) -> list[Path]:
    """roles.json (`probes.roles.head_roles`) and the layer x head heatmap of the patching effect."""
    out = Path(out)
    written = [write_json(out / ROLES, {"provenance": provenance(**model_provenance(model), **data), **roles})]
    if roles.get("patching"):
        written.append(roles_figure(roles["patching"]["effect"], out / ROLES_PNG, model.cfg.model_name))
    return written


def write_edit(name: str, edits, table: list[dict], model, out: Path, data: dict) -> list[Path]:
    """edits/NAME.json with the KPI table."""
    out = Path(out)
    doc = {"name": name, "provenance": provenance(**model_provenance(model), **data),
           "spec": {"edits": [e.__dict__ for e in edits]}, "kpis": table}
    return [write_json(out / EDITS / f"{check_name(name)}.json", doc)]  # the name is the file name


def tune_folder(out: Path, goal: str) -> Path:
    """tune/GOAL/ of a run folder (goals are a fixed set)."""
    if goal not in GOALS:
        raise UserError(f"--goal {goal!r} is not a goal: use {' or '.join(GOALS)}")
    return Path(out) / TUNE / goal


def invalidate_tune(folder: Path) -> None:
    """Before a search rewrites anything: its old record and chosen edit go (both are ours), so a
    kill mid-search never leaves an old decision beside new records."""
    for name in (TUNE_JSON, CHOSEN_EDIT):
        (folder / name).unlink(missing_ok=True)


def write_tune(doc: dict, model, folder: Path, data: dict) -> list[Path]:
    """chosen_edit.json (a spec `successor-lens edit` replays), pareto.png, then tune.json last:
    tune.json present means the other two are this search's."""
    folder = Path(folder)
    written = []
    if doc.get("chosen"):
        written.append(write_json(folder / CHOSEN_EDIT, {"name": f"tune-{doc['goal']}", "edits": doc["chosen"]["edits"]}))
    written.append(pareto_figure(tune_points(doc), folder / PARETO_PNG, f"{model.cfg.model_name}: {doc['goal']} (search split)"))
    full = {"provenance": provenance(**model_provenance(model), **data), **doc}
    written.append(write_json(folder / TUNE_JSON, full))
    return written[::-1]


def extras(out: Path) -> dict:
    """The optional atlas sections found in a run folder: edits (edits/*.json), wild (wild.json) and roles (roles.json).
    A file in edits/ that is not an edit record (someone else's JSON) is left out, with a notice."""
    out = Path(out)
    edits = []
    for path in sorted((out / EDITS).glob("*.json")):
        try:
            record = read_json(path, "edit record", dict, UserError)
            if not (isinstance(record.get("name"), str) and isinstance(record.get("spec"), dict) and isinstance(record.get("kpis"), list)):
                raise UserError(f"{path}: not an edit record")
        except UserError:
            print(f"successor-lens: note: {path} is not an edit record written by `successor-lens edit`; left out of the atlas",
                  file=sys.stderr)
            continue
        edits.append({k: record[k] for k in ("name", "spec", "kpis")})
    wild = WILD_RECORD.read(out) if (out / WILD).exists() else None
    roles = ROLES_RECORD.read(out) if (out / ROLES).exists() else None
    tunes = []
    for goal in GOALS:
        path = out / TUNE / goal / TUNE_JSON
        if path.is_file():
            try:
                tunes.append(tune_entry(read_json(path, "tune record", dict, UserError)))
            except (KeyError, TypeError, IndexError):
                print(f"successor-lens: note: {path} is not a tune record this version reads; left out of the atlas (rerun `successor-lens tune`)",
                      file=sys.stderr)
    return {"edits": edits, "tunes": tunes, "wild": {"heads": wild["heads"], "in_context": wild["in_context"]} if wild else None,
            "roles": {k: roles.get(k) for k in ("heads", "patching", "carriers", "nulls")} if roles else None}
