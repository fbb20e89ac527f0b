"""The stage cache of `run`, importable without torch or the model code so a fully cached run is instant.

`StageCache` keeps one manifest per finished stage (`OUT/.stages/NAME.json`): its key
(`run_config.stage_keys`) and the size, mtime, sha256, inode and ctime of every file it wrote. The CLI computes the same
keys from its options before importing the pipeline; when every stage is fresh under them it
prints the cached result at once.
"""

from __future__ import annotations

from pathlib import Path

from successor_lens.errors import UserError
from successor_lens.filenames import STAGES as STAGES_FOLDER
from successor_lens.io import file_sha256, inside, read_json, write_json

STAGES = ("heads", "activations", "saes", "mine", "incontext", "probes", "atlas")
"""In the order they run: each reads only stages before it, and the ones a model read lean can make come first."""
NEEDS: dict[str, tuple[str, ...]] = {
    "heads": (), "activations": (), "saes": ("activations",), "mine": ("activations", "saes"), "incontext": ("heads",),
    "probes": ("activations", "mine", "incontext"), "atlas": ("heads", "activations", "saes", "mine", "incontext", "probes"),
}
"""The stages whose files each stage reads. A stage's key covers theirs (`run_config.stage_keys`), and
a stage that runs makes every stage that reads it, directly or not, run too (`dependents`): a new
mining reruns the probes and the atlas, not the in-context DLA."""
WHOLE_MODEL = ("incontext", "probes", "atlas")
"""The stages that run the model in context (prompts, the corpus), so need it whole: `run --lean`
leaves them to a run without it, which reuses the stages made lean."""


def upstream(stage: str) -> list[str]:
    """The stages `stage` reads, directly or not, in stage order."""
    seen: set[str] = set()
    todo = list(NEEDS[stage])
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(NEEDS[s])
    return [s for s in STAGES if s in seen]


def dependents(stage: str) -> list[str]:
    """`stage` and every stage that reads it, directly or not, in stage order."""
    return [s for s in STAGES if s == stage or stage in upstream(s)]


def cached_line(i: int, seconds: float) -> str:
    """The progress line of a stage that was reused."""
    return f"[{i + 1}/{len(STAGES)}] {STAGES[i]:<11} cached (took {seconds:.1f}s when computed)"


class StageCache:
    """Manifests in `out/.stages/`: the key of each finished stage and, for every file it wrote,
    its size, mtime, sha256, inode and ctime. A stage is fresh when its key matches and every file
    is as it left it: same size and mtime, and same inode and ctime, or else (a copied folder, or a
    file swapped back with its size and mtime restored) the same sha256. So a file rewritten since
    (by a standalone command, or by a run killed half-way) makes it stale.
    Before a stage writes anything, its manifest and those of the stages that read it are removed
    (`invalidate`), so a kill at any point leaves no manifest over a half-rewritten stage or one
    made from it."""

    def __init__(self, out: Path):
        self.out = out
        self.folder = out / STAGES_FOLDER

    def manifest(self, stage: str) -> dict | None:
        path = self.folder / f"{stage}.json"
        try:  # any manifest that is not one of ours makes its stage stale, never an error
            doc = read_json(path, "stage manifest", dict, UserError, max_bytes=16 << 20) if path.is_file() else None
        except UserError:
            return None
        ok = (doc is not None and isinstance(doc.get("outputs"), list) and all(isinstance(o, str) for o in doc["outputs"])
              and isinstance(doc.get("files"), dict) and all(isinstance(v, list) and len(v) == 5 for v in doc["files"].values()))
        return doc if ok else None

    def fresh(self, stage: str, key: str) -> bool:
        m = self.manifest(stage)
        if m is None or m.get("key") != key:
            return False
        now = self._files(m["outputs"])
        if now is None or set(now) != set(m["files"]):
            return False
        for name, (size, mtime, ino, ctime, path) in now.items():
            was = m["files"][name]
            if [size, mtime] != was[:2]:
                return False
            if [ino, ctime] != was[3:] and file_sha256([path]) != was[2]:
                return False
        return True

    def invalidate(self, stage: str) -> None:
        """Before `stage` rewrites anything: its manifest and those of every stage that reads it go."""
        for later in dependents(stage):
            (self.folder / f"{later}.json").unlink(missing_ok=True)

    def record(self, stage: str, key: str, outputs: list[Path], seconds: float) -> None:
        names = sorted(str(inside(self.out, str(Path(p).relative_to(self.out)), "stage output").relative_to(self.out.resolve()))
                       for p in outputs)
        files = {name: [size, mtime, file_sha256([path]), ino, ctime] for name, (size, mtime, ino, ctime, path) in (self._files(names) or {}).items()}
        write_json(self.folder / f"{stage}.json", {"stage": stage, "key": key, "outputs": names, "files": files,
                                                   "seconds": round(seconds, 3)})

    def _files(self, names: list[str]) -> dict[str, tuple[int, int, int, int, Path]] | None:
        """{file: (size, mtime_ns, inode, ctime_ns, path)} of every file under the outputs; None when one is missing."""
        files = {}
        for name in names:
            path = inside(self.out, name, "stage output")
            if not path.exists():
                return None
            for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if f.is_file():
                    st = f.stat()
                    files[str(f.relative_to(self.out.resolve()))] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, f)
        return files

    def all_fresh(self, keys: dict[str, str]) -> dict[str, float] | None:
        """{stage: seconds it took when computed} when every stage is fresh under `keys`; else None."""
        if set(keys) != set(STAGES) or not all(self.fresh(stage, keys[stage]) for stage in STAGES):
            return None
        return {stage: (self.manifest(stage) or {}).get("seconds", 0.0) for stage in STAGES}
