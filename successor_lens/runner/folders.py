"""Run folders: the folders a command owns, and one writer per folder.

A command writes only inside a folder it owns. A folder is ours when it holds the marker
`.successor-lens.json` (written when we create or first claim the folder); an existing folder that
is not ours and not empty is refused, so `--out ~/Documents` or `--out notes.txt` cannot touch a
user's files. The marker names the folder's kind: "run" (the pipeline's stages, `heads`, `train`,
`mine`, `probe`, `wild`, `edit`), "atlas" (`atlas --sae`), "compare" (`compare`) or "convert" (`convert`), and a
command refuses a folder of another kind.

While a command works it holds an advisory lock (`fcntl.flock` on `.successor-lens.lock`, released
by the kernel when the process dies, even by SIGKILL), so a second command on the same folder stops
with one line naming the first. With the lock held, the temporary files a killed writer left behind
are removed (they are ours by name, `io.remove_leftovers`).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from successor_lens.errors import UserError
from successor_lens.filenames import HOLDER, LOCK, MARKER
from successor_lens.io import provenance, remove_leftovers, write_json

KINDS = ("run", "atlas", "compare", "convert")


class FolderError(UserError):
    """The output folder cannot be used (not ours, wrong kind, a file, unwritable, or busy)."""


_held: dict[Path, tuple[int, int]] = {}
"""Folders this process holds: resolved path -> (lock fd, nesting depth). Re-entrant, so a
command and the library function it calls can both ask for the same folder."""


def check_folder(path: str | os.PathLike, kind: str = "run") -> Path:
    """Refuse, with one line, a path that `claim` would refuse; creates nothing."""
    if kind not in KINDS:
        raise ValueError(f"unknown run folder kind {kind!r}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FolderError(f"--out {path} is a file, not a folder: pass a folder path (it is created if missing)")
    marker = path / MARKER
    if path.is_dir():
        if marker.is_file():
            found = _marker_kind(marker)
            if found != kind:
                raise FolderError(_wrong_kind(path, found, kind))
        else:
            others = sorted(p.name for p in path.iterdir())
            if others:
                shown = ", ".join(repr(n) for n in others[:3]) + (", ..." if len(others) > 3 else "")
                raise FolderError(f"--out {path} already holds files that successor-lens did not write ({shown}): "
                                  "pass a new or empty folder")
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FolderError(f"--out {path}: permission denied on {existing}: pass a folder you can write to")
    return path


def claim(path: str | os.PathLike, kind: str = "run") -> Path:
    """Make `path` a folder of ours of `kind` (creating it if needed), or refuse with one line."""
    path = check_folder(path, kind)
    marker = path / MARKER
    if marker.is_file():
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"successor_lens_folder": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **provenance()})
    except PermissionError:
        raise FolderError(f"--out {path}: permission denied: pass a folder you can write to") from None
    return path


@contextmanager
def run_folder(path: str | os.PathLike, kind: str = "run", command: str | None = None) -> Iterator[Path]:
    """Claim `path` and hold its lock for the block (re-entrant within a process)."""
    path = claim(path, kind)
    key = path.resolve()
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield path
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        raise FolderError(f"--out {path}: permission denied: pass a folder you can write to") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderError(_busy(path)) from None
    _held[key] = (fd, 1)
    try:
        write_json(path / HOLDER, {"pid": os.getpid(), "command": command or " ".join(["successor-lens"] + sys.argv[1:]),
                                   "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        remove_leftovers(path)
        yield path
    finally:
        del _held[key]
        (path / HOLDER).unlink(missing_ok=True)
        os.close(fd)  # releases the lock


def holds(path: str | os.PathLike) -> bool:
    """Whether this process holds the lock of `path`."""
    return Path(path).resolve() in _held


def _marker_kind(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("successor_lens_folder")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def _wrong_kind(path: Path, found: str | None, kind: str) -> str:
    if found not in KINDS:
        return f"--out {path}: its marker {MARKER} is unreadable: pass another --out"
    if found == "run" and kind == "atlas":
        return (f"--out {path} is a successor-lens run folder; `atlas --sae` writes a folder of its own: pass a new --out "
                "(the run's own atlas is rebuilt by `successor-lens run`)")
    return f"--out {path} is a successor-lens {found} folder, not a {kind} folder: pass another --out"


def _busy(path: Path) -> str:
    try:
        holder = json.loads((path / HOLDER).read_text())
        who = f"`{holder['command']}` (pid {holder['pid']}, since {holder['since']})"
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        who = "another successor-lens command"
    return f"--out {path} is in use by {who}: wait for it to finish, or pass another --out"
