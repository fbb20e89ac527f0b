"""The stage cache of `run`, importable without torch or the model code so a fully cached run is instant.

`StageCache` keeps one manifest per finished stage (`OUT/.stages/NAME.json`): its key
(`run_config.stage_keys`) and the size and mtime of every file it wrote. The CLI computes the same
keys from its options before importing the pipeline; when every stage is fresh under them it
prints the cached result at once.
"""

from __future__ import annotations

import json
from pathlib import Path

from successor_lens.filenames import STAGES as STAGES_FOLDER
from successor_lens.io import inside, write_json

STAGES = ("heads", "incontext", "activations", "saes", "mine", "probes", "atlas")


def cached_line(i: int, seconds: float) -> str:
    """The progress line of a stage that was reused."""
    return f"[{i + 1}/{len(STAGES)}] {STAGES[i]:<11} cached (took {seconds:.1f}s when computed)"


class StageCache:
    """Manifests in `out/.stages/`: the key of each finished stage and the size and mtime of every
    file it wrote. A stage is fresh when its key matches and every file is as it left it, so a
    file rewritten since (by a standalone command, or by a run killed half-way) makes it stale.
    Before a stage writes anything, its manifest and every later stage's are removed
    (`invalidate`), so a kill at any point leaves no manifest over a half-rewritten stage."""

    def __init__(self, out: Path):
        self.out = out
        self.folder = out / STAGES_FOLDER

    def manifest(self, stage: str) -> dict | None:
        path = self.folder / f"{stage}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def fresh(self, stage: str, key: str) -> bool:
        m = self.manifest(stage)
        return m is not None and m.get("key") == key and m.get("files") == self._stat(m.get("outputs", []))

    def invalidate(self, stage: str) -> None:
        """Before `stage` rewrites anything: its manifest and every later one's go."""
        for later in STAGES[STAGES.index(stage):]:
            (self.folder / f"{later}.json").unlink(missing_ok=True)

    def record(self, stage: str, key: str, outputs: list[Path], seconds: float) -> None:
        names = sorted(str(inside(self.out, str(Path(p).relative_to(self.out)), "stage output").relative_to(self.out.resolve()))
                       for p in outputs)
        write_json(self.folder / f"{stage}.json", {"stage": stage, "key": key, "outputs": names, "files": self._stat(names),
                                                   "seconds": round(seconds, 3)})

    def _stat(self, names: list[str]) -> dict[str, list[int]] | None:
        """{file: [size, mtime_ns]} of every file under the outputs; None when one is missing."""
        files = {}
        for name in names:
            path = inside(self.out, name, "stage output")
            if not path.exists():
                return None
            for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if f.is_file():
                    st = f.stat()
                    files[str(f.relative_to(self.out.resolve()))] = [st.st_size, st.st_mtime_ns]
        return files

    def all_fresh(self, keys: dict[str, str]) -> dict[str, float] | None:
        """{stage: seconds it took when computed} when every stage is fresh under `keys`; else None."""
        if set(keys) != set(STAGES) or not all(self.fresh(stage, keys[stage]) for stage in STAGES):
            return None
        return {stage: (self.manifest(stage) or {}).get("seconds", 0.0) for stage in STAGES}
