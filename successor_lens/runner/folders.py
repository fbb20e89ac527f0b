"""Run folders: the folders a command owns, and one writer per folder.

A command writes only inside a folder it owns. A folder is ours when it holds the marker
`.successor-lens.json` (written when we create or first claim the folder); an existing folder that
is not ours and not empty is refused, so `--out ~/Documents` or `--out notes.txt` cannot touch a
user's files. The marker names the folder's kind: "run" (the pipeline's stages, `heads`, `train`,
`mine`, `probe`, `wild`, `edit`), "atlas" (`atlas --sae`), "compare" (`compare`), "convert" (`convert`) or "organism" (`organism --train`), and a
command refuses a folder of another kind.

A run folder belongs to one model: the first command that loads a model into it records the
model's name and content fingerprint in the marker (`bind`), and a command with another model is
refused, so `heads.json` of one model never sits beside `mine.json` of another. Folders of ours do
not nest: `--out` inside another folder of ours is refused (a rebuild of the outer folder would
replace or sweep the inner one).

While a command works it holds an advisory lock (`fcntl.flock` on `.successor-lens.lock`, released
by the kernel when the process dies, even by SIGKILL), so a second command on the same folder stops
with one line naming the first. With the lock held, the temporary files a killed writer left behind
are removed (they are ours by name, `io.remove_leftovers`).
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from successor_lens.errors import UserError, shorten
from successor_lens.filenames import HOLDER, LOCK, MARKER
from successor_lens.io import owning, provenance, read_json, remove_leftovers, write_json

KINDS = ("run", "atlas", "compare", "convert", "organism", "export")


class FolderError(UserError):
    """The output folder cannot be used (not ours, wrong kind, a file, unwritable, or busy)."""


_held: dict[Path, tuple[int, int]] = {}
"""Folders this process holds: resolved path -> (lock fd, nesting depth). Re-entrant, so a
command and the library function it calls can both ask for the same folder."""


def check_folder(path: str | os.PathLike, kind: str = "run", model: str | None = None, dtype: str = "fp32") -> Path:
    """Refuse, with one line, a path that `claim` (or `bind`, given `model`) would refuse; creates nothing."""
    if kind not in KINDS:
        raise ValueError(f"unknown run folder kind {kind!r}")
    path = Path(path)
    _check_path(path)
    if path.exists() and not path.is_dir():
        raise FolderError(f"--out {path} is a file, not a folder: pass a folder path (it is created if missing)")
    outer = next((p for p in path.resolve().parents if (p / MARKER).is_file()), None)
    if outer is not None:
        raise FolderError(f"--out {path} lies inside {outer}, a folder of successor-lens's own (a rebuild there would replace it): "
                          "pass a folder outside it")
    marker = path / MARKER
    identity = model_identity(model, dtype) if model is not None else None  # weights that cannot be hashed: one line before mkdir
    if path.is_dir():
        if marker.is_file():
            found = _marker(marker).get("successor_lens_folder")
            if found != kind:
                raise FolderError(_wrong_kind(path, found, kind))
            if identity is not None:
                _check_model(path, _marker(marker).get("model"), identity)
            _check_no_links(path)
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


def _check_no_links(path: Path) -> None:
    """Refuse a folder of ours that holds a link anywhere below it, before any work: every write
    there refuses one anyway (`io.refuse_links`), and this names it before the model loads."""
    for here, dirs, files in os.walk(path):  # does not follow links: a linked folder is listed, not entered
        for name in sorted(dirs + files):
            if os.path.islink(os.path.join(here, name)):
                raise FolderError(f"--out {path}: {os.path.join(here, name)} is a link inside the run folder: nothing is "
                                  "written through one; remove the link (or pass another --out)")


def _check_path(path: Path) -> None:
    """What the file system would refuse later, named now: a component longer than the file
    system allows, a dangling link, or a file where a folder is needed."""
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise FolderError(f"--out {str(path)[:60]}...: the name {part[:20]}... is {len(os.fsencode(part))} bytes, "
                              "above the 255 a file system allows: pass a shorter --out")
    if path.is_symlink() and not path.exists():
        raise FolderError(f"--out {path} is a link to {os.readlink(path)}, which does not exist: pass a real folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FolderError(f"--out {path}: {parent} is a file, so no folder can be made under it: pass another --out")
            break


def model_identity(model: str, dtype: str = "fp32") -> dict[str, str]:
    """What a run folder records of its model: the name as given (a folder's resolved path) and the
    content fingerprint of what it loads in `dtype` (`registry.loaded_fingerprint`)."""
    from successor_lens.models.registry import loaded_fingerprint, source_kind

    name = str(Path(model).expanduser().resolve()) if source_kind(model) == "local" else model
    return {"name": name, "fingerprint": loaded_fingerprint(model, dtype)}


def _check_model(path: Path, recorded, identity: dict[str, str]) -> None:
    if recorded is None:
        return
    if not (isinstance(recorded, dict) and isinstance(recorded.get("name"), str) and isinstance(recorded.get("fingerprint"), str)):
        raise FolderError(f"--out {path}: the model recorded in its marker {MARKER} is unreadable: pass another --out")
    if recorded["name"] != identity["name"]:
        raise FolderError(f"--out {path} holds the run of {recorded['name']!r}, not {identity['name']!r}: "
                          f"pass another --out (one model per run folder)")
    if recorded["fingerprint"] != identity["fingerprint"]:
        from successor_lens.models.registry import fingerprint_dtype

        held, asked = fingerprint_dtype(recorded["fingerprint"]), fingerprint_dtype(identity["fingerprint"])
        if held != asked:
            raise FolderError(f"--out {path} holds the run of {recorded['name']!r} with its weights in {held}, not {asked}: "
                              f"pass another --out (a --dtype run's default folder ends in -{asked})")
        raise FolderError(f"--out {path} holds the run of {recorded['name']!r} as it was when the folder was made "
                          f"(fingerprint {recorded['fingerprint']}; its weights or converting libraries now give "
                          f"{identity['fingerprint']}): pass another --out")


def bind(path: Path, model: str, dtype: str = "fp32") -> None:
    """Record `model` as the folder's model (checked first: `check_folder`). Call with the lock held."""
    marker = path / MARKER
    doc = _marker(marker)
    identity = model_identity(model, dtype)
    _check_model(path, doc.get("model"), identity)
    if doc.get("model") != identity:
        write_json(marker, {**doc, "model": identity})


def claim(path: str | os.PathLike, kind: str = "run", model: str | None = None, dtype: str = "fp32") -> Path:
    """Make `path` a folder of ours of `kind` (creating it if needed), or refuse with one line."""
    path = check_folder(path, kind, model, dtype)
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
def run_folder(path: str | os.PathLike, kind: str = "run", command: str | None = None, model: str | None = None,
               dtype: str = "fp32") -> Iterator[Path]:
    """Claim `path` and hold its lock for the block (re-entrant within a process); with `model` (its
    weights in `dtype`), the folder is (or becomes) that model's, or the command is refused before
    anything is written."""
    path = claim(path, kind, model, dtype)
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
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except PermissionError:
        raise FolderError(f"--out {path}: permission denied: pass a folder you can write to") from None
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise FolderError(f"--out {path}: its lock file {LOCK} is a link: remove it (or pass another --out)") from None
    import fcntl  # here, not at the top: importing the package needs no POSIX module (filelock 4 was weighed: it probes
    # the folder with files of its own and deletes its lock file on release, against "writes only what it records")

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderError(_busy(path)) from None
    _held[key] = (fd, 1)
    try:
        with owning(path):
            write_json(path / HOLDER, {"pid": os.getpid(), "command": command or " ".join(["successor-lens"] + sys.argv[1:]),
                                       "since": time.strftime("%Y-%m-%d %H:%M:%S")})
            remove_leftovers(path)
            if model is not None:
                bind(path, model, dtype)
            yield path
    finally:
        del _held[key]
        if not (path / HOLDER).is_symlink():
            (path / HOLDER).unlink(missing_ok=True)
        os.close(fd)  # releases the lock


def holds(path: str | os.PathLike) -> bool:
    """Whether this process holds the lock of `path`."""
    return Path(path).resolve() in _held


def _marker(marker: Path) -> dict:
    """The marker's fields ({} when unreadable: then it names no kind and the folder is refused)."""
    try:
        return read_json(marker, "marker", dict, FolderError, max_bytes=1 << 16)
    except FolderError:
        return {}


def _wrong_kind(path: Path, found: str | None, kind: str) -> str:
    if found not in KINDS:
        return f"--out {path}: its marker {MARKER} is unreadable: pass another --out"
    if found == "run" and kind == "atlas":
        return (f"--out {path} is a successor-lens run folder; `atlas --sae` writes a folder of its own: pass a new --out "
                "(the run's own atlas is rebuilt by `successor-lens run`)")
    return f"--out {path} is a successor-lens {found} folder, not a {kind} folder: pass another --out"


def _busy(path: Path) -> str:
    try:
        holder = read_json(path / HOLDER, "holder", dict, FolderError, max_bytes=1 << 16)
        who = f"`{shorten(str(holder['command']), 200)}` (pid {holder['pid']}, since {holder['since']})"
    except (FolderError, KeyError):
        who = "another successor-lens command"
    return f"--out {path} is in use by {who}: wait for it to finish, or pass another --out"
