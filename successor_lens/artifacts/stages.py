"""The stage cache of `run`, importable without torch or the model code so a fully cached run is instant.

`StageCache` keeps one manifest per finished stage (`OUT/.stages/NAME.json`): its key and the size
and mtime of every file it wrote. `remember` / `replay` add one more file, `OUT/.stages/request.json`:
the stage keys that a command line (its options, the model's source fingerprint, the code and the
corpus, all by content) led to last time. When the same request comes again and every stage is
still fresh under those keys, the CLI prints the cached result without importing the pipeline; the
manifests still decide freshness, so the shortcut can never show a stage the cache would rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

from successor_lens.io import digest, inside, write_json

STAGES = ("heads", "incontext", "activations", "saes", "mine", "probes", "atlas")
REQUEST_FILE = "request.json"


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
        self.folder = out / ".stages"

    def manifest(self, stage: str) -> dict | None:
        path = self.folder / f"{stage}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def fresh(self, stage: str, key: str) -> bool:
        m = self.manifest(stage)
        return bool(m) and m.get("key") == key and m.get("files") == self._stat(m.get("outputs", []))

    def invalidate(self, stage: str) -> None:
        """Before `stage` rewrites anything: its manifest, every later one's and the request record go."""
        (self.folder / REQUEST_FILE).unlink(missing_ok=True)
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

    def remember(self, request: dict, keys: dict[str, str]) -> None:
        """Record which stage keys `request` (a command line, by content) led to."""
        write_json(self.folder / REQUEST_FILE, {"request": digest(request), "keys": keys})

    def replay(self, request: dict) -> dict[str, float] | None:
        """{stage: seconds it took when computed} when `request` was the last one remembered and every
        stage is still fresh under the keys it led to; else None (the pipeline decides)."""
        try:
            memo = json.loads((self.folder / REQUEST_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if memo.get("request") != digest(request) or set(memo.get("keys", {})) != set(STAGES):
            return None
        if not all(self.fresh(stage, memo["keys"][stage]) for stage in STAGES):
            return None
        return {stage: self.manifest(stage)["seconds"] for stage in STAGES}
