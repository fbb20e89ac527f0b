"""Write stage results to the run folder: JSON with provenance, and the figures."""

from __future__ import annotations

from pathlib import Path

from successor_lens.artifacts.plots import head_heatmap
from successor_lens.io import provenance, write_json
from successor_lens.models import model_provenance


def write_scan(result, model, out: Path) -> tuple[Path, Path]:
    """heads.json and heads.png (succession heatmap) for a `SuccessionScores`."""
    out = Path(out)
    data = {"provenance": provenance(**model_provenance(model)), **result.to_json()}
    json_path = write_json(out / "heads.json", data)
    title = f"{model.cfg.model_name}: succession score ({result.config.embedding})"
    png_path = head_heatmap(result.scores, out / "heads.png", title)
    head_heatmap(result.copying, out / "heads_copying.png", f"{model.cfg.model_name}: copying score (control)")
    return json_path, png_path
