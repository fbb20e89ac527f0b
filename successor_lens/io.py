"""Atomic writes and provenance: every artefact either appears whole or not at all."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from successor_lens import __version__
from successor_lens.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TMP_TAG, OLD_TAG = ".sl-tmp-", ".sl-old-"
"""Name parts of our temporary and moved-aside files; `remove_leftovers` deletes only these."""


OWNED: list[Path] = []
"""The run folders this process holds (`runner.folders.run_folder` registers each with `owning`):
nothing under one is written through a link (`refuse_links`)."""


@contextmanager
def owning(root: str | os.PathLike) -> Iterator[None]:
    """Register `root` (a run folder whose lock this process holds) for `refuse_links` during the block."""
    path = Path(os.path.abspath(root))
    OWNED.append(path)
    try:
        yield
    finally:
        OWNED.remove(path)


def refuse_links(path: str | os.PathLike) -> None:
    """Refuse (one line) to write `path` when a component of it below a run folder we hold is a
    symbolic link, or a component that must be a folder is something else: a subfolder unpacked
    from someone's tarball as a link would have us write, and replace, files outside the run folder.
    The run folder itself may be a link (the user chose it with --out)."""
    target = Path(os.path.abspath(path))
    for root in OWNED:
        if target != root and root not in target.parents:
            continue
        here, parts = root, target.relative_to(root).parts
        for n, part in enumerate(parts):
            here = here / part
            if here.is_symlink():
                raise UnsafePathError(f"{here} is a link inside the run folder {root}: nothing is written through one; "
                                      "remove the link (or pass another --out)")
            if n < len(parts) - 1 and here.exists() and not here.is_dir():
                raise UnsafePathError(f"{here} inside the run folder {root} is not a folder: remove it (or pass another --out)")
        return


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    refuse_links(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_TAG}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artefacts are meant to be shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds.

    The old folder is moved aside, the new one renamed in, then the old one deleted, so a reader
    sees either the whole old folder or the whole new one. Permissions follow the umask. Only call
    it on a folder this package owns (inside a claimed run folder, `rundir.py`): the target is
    replaced whole. Leftovers of a killed write are removed by `remove_leftovers`.
    """
    path = Path(path)
    refuse_links(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file; atomic_dir replaces folders only")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_TAG}", dir=path.parent))
    try:
        yield tmp
        share(tmp)
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}{OLD_TAG}", dir=path.parent))
        if path.exists():
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def share(root: Path) -> None:
    """Folder 0777 and files 0666 less the umask, as `open` would make them (mkdtemp makes 0700,
    and some writers 0600)."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for parent, dirs, files in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(parent, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(parent, f), 0o666 & ~mask)


def remove_leftovers(root: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders a killed write left under `root` (ours by name:
    hidden and tagged `.sl-tmp-` or `.sl-old-`). Call only with the folder's lock held. A folder
    below `root` with a marker of its own is another command's (with its own lock): not entered."""
    from successor_lens.filenames import MARKER

    removed = []
    for parent, dirs, files in os.walk(str(root)):
        if parent != str(root) and MARKER in files:
            dirs[:] = []
            continue
        for name in list(dirs) + files:
            if name.startswith(".") and (TMP_TAG in name or OLD_TAG in name):
                path = Path(parent) / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(path)
        dirs[:] = [d for d in dirs if not (d.startswith(".") and (TMP_TAG in d or OLD_TAG in d))]
    return removed


def inside(root: str | os.PathLike, relative: str, what: str = "path") -> Path:
    """`root / relative`, refused unless it stays inside `root` (a path read back from our own
    JSON must not point elsewhere: no absolute paths, no `..` out)."""
    root = Path(root).resolve()
    target = (root / relative).resolve()
    if Path(relative).is_absolute() or not target.is_relative_to(root):
        raise UnsafePathError(f"{what} {relative!r} points outside {root}: the file was edited by hand; rebuild it")
    return target


class UnsafePathError(UserError, ValueError):
    pass


_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,127}")


def safe_component(name: object, what: str, fix: str = "rename it") -> str:
    """`name` (read from a file: a hook name, an edit's name) as one path component: 1-128 of
    letters, digits and `_.+=@-`, not starting with `.` or `-`, so it can be neither `.`, `..`, an
    absolute path, a hidden file that could pass for ours, nor a second component."""
    if not isinstance(name, str) or not _COMPONENT.fullmatch(name):
        shown = repr(str(name)[:40]) + ("..." if len(str(name)) > 40 else "")
        raise UnsafePathError(f"{what} {shown} cannot name a file or folder (1-128 letters, digits or _.+=@-, "
                              f"not starting with '.' or '-'): {fix}")
    return name


def overlapping(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether one of two paths lies inside the other (or they are the same), links resolved."""
    ra, rb = Path(a).resolve(), Path(b).resolve()
    return ra.is_relative_to(rb) or rb.is_relative_to(ra)


MAX_JSON_BYTES = 256 << 20
"""The largest JSON file read (an atlas of 16k latents is well under it)."""
MAX_JSON_DEPTH = 64
"""The deepest nesting read (ours is at most 6 deep); deeper is refused before parsing (Python's parser recurses)."""
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of brackets in JSON text, strings left out; no recursion."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for c in brackets:
        depth += 1 if c in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def regular_file(path: str | os.PathLike, what: str, max_bytes: int, error: type[UserError] = UserError, fix: str = "") -> Path:
    """`path` if it is a regular file of at most `max_bytes` (a FIFO or a device would hang or never
    end, a folder is not a file); `error` naming the problem and `fix` otherwise."""
    path = Path(path)
    tail = f": {fix}" if fix else ""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file{tail}") from None
    except OSError as err:
        raise error(f"{what} {path}: {err.strerror}{tail}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path} is a folder, not a file{tail}")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is not a regular file (a pipe, socket or device is not read){tail}")
    if st.st_size > max_bytes:
        raise error(f"{what} {path} is {st.st_size / 2**20:.1f} MiB, above the {max_bytes / 2**20:.0f} MiB read{tail}")
    return path


def read_json(path: str | os.PathLike, what: str = "file", expect: type | tuple[type, ...] = dict,
              error: type[UserError] = UserError, fix: str = "", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON document in `path`, of type `expect`, read within bounds: a regular file of at most
    `max_bytes`, UTF-8, nested at most `MAX_JSON_DEPTH` deep. Anything else is `error` with one
    line naming the file, the problem and `fix` (a missing file included; callers that expect
    absence test for it first)."""
    path = regular_file(path, what, max_bytes, error, fix)
    tail = f": {fix}" if fix else ""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise error(f"{what} {path}: {err.strerror}{tail}") from None
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise error(f"{what} {path}: nested more than {MAX_JSON_DEPTH} deep{tail}")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{what} {path}: not UTF-8 text{tail}") from None
    except json.JSONDecodeError as err:
        raise error(f"{what} {path}: not valid JSON ({err.msg} at line {err.lineno}){tail}") from None
    if not isinstance(doc, expect):
        names = " or ".join(_JSON_TYPES.get(t, t.__name__) for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise error(f"{what} {path}: a JSON {_JSON_TYPES.get(type(doc), type(doc).__name__)}, not a JSON {names}{tail}")
    return doc


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class BadFileError(UserError, ValueError):
    """A safetensors file that cannot be read whole."""


SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                      "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
"""Bytes per element of each dtype a safetensors file may hold."""


def check_safetensors(path: str | os.PathLike) -> dict:
    """The header of a safetensors file, after checking that it is a regular file, that its header
    is well formed and that every tensor's bytes lie inside the file, in order, without overlap,
    exactly as many as its dtype and shape need (catches truncation, lying lengths and shapes
    that overflow); `BadFileError` naming the problem otherwise."""
    path = regular_file(path, "weights", 1 << 50, BadFileError)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadFileError(f"{path}: truncated ({size} bytes)")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, 100 << 20):
            raise BadFileError(f"{path}: truncated or corrupt header (header of {n} bytes in a {size}-byte file)")
        raw = f.read(n)
        if json_depth(raw) > MAX_JSON_DEPTH:
            raise BadFileError(f"{path}: corrupt safetensors header (nested more than {MAX_JSON_DEPTH} deep)")
        try:
            header = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadFileError(f"{path}: corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise BadFileError(f"{path}: corrupt safetensors header (a {type(header).__name__}, not a table of tensors)")
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        entry = entry if isinstance(entry, dict) else {}
        offsets, shape, dtype = entry.get("data_offsets"), entry.get("shape"), entry.get("dtype")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets) and 0 <= offsets[0] <= offsets[1]
                and isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
            raise BadFileError(f"{path}: corrupt safetensors header (tensor {str(name)[:60]!r} has no valid shape and data_offsets)")
        if dtype not in SAFETENSORS_DTYPES:
            raise BadFileError(f"{path}: tensor {str(name)[:60]!r} has dtype {str(dtype)[:20]!r}, not one safetensors defines")
        if math.prod(shape) * SAFETENSORS_DTYPES[dtype] != offsets[1] - offsets[0]:
            raise BadFileError(f"{path}: tensor {str(name)[:60]!r}: shape {shape[:8]} of {dtype} needs another byte count than "
                               f"its data_offsets give ({offsets[1] - offsets[0]})")
        spans.append((offsets[0], offsets[1], str(name)[:60]))
    spans.sort()
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise BadFileError(f"{path}: tensors {a!r} and {b!r} overlap in the file: it is corrupt")
    end = max((e for _, e, _ in spans), default=0)
    if 8 + n + end > size:
        raise BadFileError(f"{path}: truncated ({size} of {8 + n + end} bytes)")
    return header


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically. NaN and inf become null (as pandas writes them):
    bare `NaN` is not JSON and other parsers reject the file."""
    plain = json.loads(json.dumps(obj, default=_json_default), parse_constant=lambda _: None)  # NaN, Infinity, -Infinity
    text = json.dumps(plain, indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def file_sha256(paths: list[Path]) -> str:
    """sha256 of the files' contents, concatenated in order, read in 4 MiB blocks."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def provenance(**fields: Any) -> dict[str, Any]:
    """The record every artefact carries: package version plus whatever the stage knows."""
    return {"package": "successor-lens", "version": __version__, **fields}


def digest(obj: Any) -> str:
    """A short content hash of any JSON-able object (tensors and paths included)."""
    text = json.dumps(obj, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_digest() -> str:
    """Hash of this package's source: a cached stage is stale once the code that made it changed."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
