"""Natural text for in-context work: the shipped default corpus, local files, or a hub dataset.

The default (`python-docs`) is the Python documentation as plain text, shipped with the package
(`data/python_docs/`, 0.6 MB xz): the tutorial, HOWTOs, FAQ and What's New (the prose-heavy parts)
of Debian's python3-doc, cleaned of reST markup by `clean_rest` (`scripts/bundle_python_docs.py`
makes it). It is English prose written for people, with what succession and its neighbours
need: numbered lists and steps, version numbers and dates ("What's New in Python 3.11", release
dates, months), ordinals, acronyms (PEP, API, GIL, UTF), and code, under the PSF licence (beside
it), the same text on every machine with no download and no apt. `python3-doc` reads the
system's own copy (`apt-get install python3-doc`: Sphinx ships each page's reST source as
`html/_sources/**/*.rst.txt`) and cleans it the same way.
"""

from __future__ import annotations

import codecs
import glob
import itertools
import json
import lzma
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from successor_lens.errors import UserError, foreign_errors
from successor_lens.io import file_sha256

if TYPE_CHECKING:  # torch and the model code are imported where windows are made: checking a corpus stays instant
    from torch import Tensor
    from transformer_lens import HookedTransformer

    from successor_lens.tasks import Task
else:  # at run time these are Any, so runtime type checkers accept them and the module stays free of torch
    Tensor = HookedTransformer = Task = Any

PYTHON_DOCS = "python-docs"
"""The shipped corpus: the Python docs' prose paragraphs, cleaned (the default)."""
PYTHON3_DOC = "python3-doc"
"""The system's python3-doc (Debian), read and cleaned at run time."""
BUNDLED_DOCS = Path(__file__).parent / "data" / "python_docs" / "paragraphs.jsonl.xz"
SUCCESSION_LISTS = "succession-lists"
"""The built-in corpus of the task lists ("Monday, Tuesday, ...", "0, 1, 2, ...")."""
PYTHON_DOCS_GLOB = os.environ.get("SUCCESSOR_LENS_PYTHON_DOCS", "/usr/share/doc/python3*/html/_sources")
"""Where Debian's python3-doc puts the docs' sources (SUCCESSOR_LENS_PYTHON_DOCS: another glob)."""
PYTHON_DOCS_PARTS = ("tutorial", "howto", "faq", "whatsnew")

_DIRECTIVE = re.compile(r"^\s*\.\. |^\s+:[a-z-]+:(\s|$)")  # directives and their option lines
_UNDERLINE = re.compile(r"^\s*([=\-~^*#\"'`+])\1{3,}\s*$")
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


class CorpusError(UserError):
    """The corpus cannot be read as text."""


def python3_doc_folder() -> Path:
    found = sorted(glob.glob(PYTHON_DOCS_GLOB))
    if not found:
        raise CorpusError(
            f"--corpus {PYTHON3_DOC}: Debian's python3-doc ({PYTHON_DOCS_GLOB}) is not installed: "
            f"run `apt-get install python3-doc`, or leave --corpus out for the shipped copy ({PYTHON_DOCS})"
        )
    return Path(found[-1])


def python3_doc_files() -> list[Path]:
    """The system python3-doc's files: the prose-heavy parts of the Python docs' reST sources."""
    root = python3_doc_folder()
    return [p for part in PYTHON_DOCS_PARTS for p in sorted((root / part).rglob("*.rst.txt"))]


def bundled_paragraphs() -> Iterator[str]:
    """The shipped corpus's paragraphs, in order, streamed from the xz file (one JSON string a line)."""
    with lzma.open(BUNDLED_DOCS, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def clean_rest(text: str) -> str:
    """reST source to readable text: no directive, option or underline lines; roles and literals unwrapped."""
    lines = [l for l in text.splitlines() if not _DIRECTIVE.match(l) and not _UNDERLINE.match(l)]
    text = "\n".join(lines)
    text = _ROLE.sub(lambda m: m.group(1), text)
    return text.replace("``", "").replace("**", "")


def load_texts(source: str | list[Path], max_docs: int | None = None) -> list[str]:
    """Paragraphs from local files (a list, a file or a folder: `local_paragraphs`), or a hub dataset name."""
    files = [str(p) for p in source] if isinstance(source, list) else check_source(source)
    texts = []
    for text in _rows(str(source), files):
        if text.strip():
            texts.append(text)
        if max_docs and len(texts) >= max_docs:
            break
    if not texts:
        raise CorpusError(f"{source if not isinstance(source, list) else 'the corpus'}: no text in it: give files with some prose")
    return texts


def _rows(source: str, files: list[str] | None) -> Iterable[str]:
    """The texts of local files (`local_paragraphs`), or of a hub dataset as a `datasets` stream."""
    if files is not None:
        return local_paragraphs(files)
    from datasets import load_dataset

    with foreign_errors(CorpusError, lambda err: f"{source!r} is not a local file and the hub dataset could not be opened as a stream "
                        f"({type(err).__name__}): give a local text file, or go online"):
        ds = load_dataset(source, split="train", streaming=True)
    return (row.get("text", "") for row in ds)


MAX_CORPUS_FILE = 2 << 30
"""The largest corpus file read (2 GiB; split a larger corpus into files, or pass a folder)."""
MAX_PARAGRAPH = 1 << 16
"""A paragraph longer than this many characters (a one-line file, a minified dump) is cut into pieces
of this size: the tokenizer never sees more at once."""


def local_paragraphs(files: Iterable[str | Path]) -> Iterator[str]:
    """The paragraphs of local text files (split at blank lines, as `datasets`' text loader with
    sample_by="paragraph" splits them), streamed 1 MiB at a time, each at most `MAX_PARAGRAPH`
    characters; read in place, never copied into a cache."""
    for file in files:
        with open(file, encoding="utf-8") as f:
            rest = ""
            for block in iter(lambda: f.read(1 << 20), ""):
                parts = (rest + block).split("\n\n")
                rest = parts.pop()
                for part in parts:
                    yield from _pieces(part)
                if len(rest) > MAX_PARAGRAPH:
                    cut = len(rest) - len(rest) % MAX_PARAGRAPH
                    yield from _pieces(rest[:cut])
                    rest = rest[cut:]
            yield from _pieces(rest)


def _pieces(text: str) -> Iterator[str]:
    for start in range(0, len(text), MAX_PARAGRAPH):
        yield text[start : start + MAX_PARAGRAPH]


def check_source(source: str | None) -> list[str] | None:
    """Check a corpus argument before any work: python3-doc must be installed to be named; a local file
    or folder must hold UTF-8 text files. Returns the local files (None for the shipped corpus, the
    system's python3-doc or a hub dataset name)."""
    if source in (None, PYTHON_DOCS):
        return None
    if source == PYTHON3_DOC:
        python3_doc_folder()
        return None
    path = Path(source)
    if not path.exists():
        if source.startswith((".", "/", "~")) or path.suffix in (".txt", ".md", ".rst", ".text"):
            raise CorpusError(f"{source}: no such file or folder: give a text file or a folder of them")
        if os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0", "false", "False"):
            raise CorpusError(f"{source!r} is not a local file and HF_DATASETS_OFFLINE=1 is set, so it cannot be a hub dataset: "
                              "give a local text file or folder")
        return None  # a hub dataset name
    files = sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [str(path)]
    if not files:
        raise CorpusError(f"{source}: folder has no text files: give a .txt file or a folder of them")
    if not any([_check_text_file(Path(f)) for f in files]):
        raise CorpusError(f"{source}: no text in it (empty or blank files): give files with some prose")
    return files


_checked: dict[tuple, bool] = {}
"""Files already read whole in this process: (path, inode, size, mtime) -> whether they hold text."""


def _check_text_file(path: Path) -> bool:
    """A corpus file must be a regular file of at most `MAX_CORPUS_FILE` bytes holding UTF-8 text
    (no NUL bytes), read whole now, before any model work, so it cannot fail half-way through a
    run. Returns whether it holds any non-blank text."""
    from successor_lens.io import regular_file

    regular_file(path, "corpus file", MAX_CORPUS_FILE, CorpusError, "give text files only")
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _checked:
        return _checked[key]
    decoder = codecs.getincrementaldecoder("utf-8")()
    text = False
    offset = 0
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                nul = block.find(b"\0")
                if nul >= 0:
                    raise CorpusError(f"{path}: a binary file (a NUL byte at byte {offset + nul}): give text files only")
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as err:
                    raise CorpusError(f"{path}: not UTF-8 text (byte {offset + err.start}): give text files only") from None
                text = text or bool(block.strip())
                offset += len(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise CorpusError(f"{path}: not UTF-8 text (it ends inside a character): give text files only") from None
    except OSError as err:
        raise CorpusError(f"{path}: cannot read it ({err.strerror}): check the --corpus path") from None
    _checked[key] = text
    return text


def stream_texts(source: str | None = None) -> Iterator[str]:
    """The corpus's paragraphs one at a time, never all in memory: the same paragraphs, in the same
    order, as `load_corpus` (Python docs, local files, a hub dataset through a `datasets` stream)."""
    if source in (None, PYTHON_DOCS):
        yield from bundled_paragraphs()
        return
    docs = source == PYTHON3_DOC
    files = [str(p) for p in python3_doc_files()] if docs else check_source(source)
    for row in _rows(str(source), files):
        text = clean_rest(row) if docs else row
        if text.strip():
            yield text


def load_corpus(source: str | None = None, max_docs: int | None = None) -> list[str]:
    """Paragraphs of the corpus: `python-docs` (default), `python3-doc`, a local file or folder, or a hub dataset name."""
    if source in (None, PYTHON_DOCS):
        return list(itertools.islice(bundled_paragraphs(), max_docs or None))
    if source == PYTHON3_DOC:
        files = python3_doc_files()
        texts = [clean_rest(t) for t in load_texts(files)]
        return [t for t in texts if t.strip()][: max_docs or None]
    return load_texts(source, max_docs)


WINDOW_RULE = {"bos": "first in every window when the model prepends one (the rest is text)",
               "paragraphs": "each encoded with a blank line after it, as in the source, and joined"}
"""How every corpus window is made (harvest, spliced-in loss, export, wild, edits); recorded in
their provenance as `windows`."""


def paragraph_ids(tokenizer, texts: Iterable[str]) -> Iterator[list[int]]:
    """Each paragraph's tokens, with the blank line that ends it."""
    for text in texts:
        yield tokenizer.encode(text + "\n\n", add_special_tokens=False)


def cut_windows(chunks: Iterable[Sequence[int]], length: int, bos: int | None, max_tokens: int | None = None) -> Iterator[Tensor]:
    """The one corpus-window function: windows of `length` tokens cut in order from a stream of
    token chunks (`paragraph_ids`, or the succession lists), BOS first in each when `bos` is given.
    Made as the chunks arrive, so memory holds one window, never the corpus; at most `max_tokens`
    tokens of text are used. `CorpusError` when the stream ends before one window is whole."""
    import torch

    body = length - (bos is not None)
    buffer: list[int] = []
    used = seen = 0
    for chunk in chunks:
        buffer.extend(chunk)
        seen += len(chunk)
        while len(buffer) >= body and (max_tokens is None or used + body <= max_tokens):
            yield torch.tensor(([bos] if bos is not None else []) + buffer[:body])
            del buffer[:body]
            used += body
        if max_tokens is not None and used + body > max_tokens:
            break
    if not used:
        raise CorpusError(f"the corpus has {seen} tokens, fewer than one window of {body}: give more text")


def windows_of(model: HookedTransformer, chunks: Iterable[Sequence[int]], length: int, max_tokens: int | None = None) -> Iterator[Tensor]:
    """`cut_windows` with the model's own rule: BOS first when it prepends one."""
    from successor_lens.models.provenance import prepended_bos

    return cut_windows(chunks, length, prepended_bos(model), max_tokens)


def token_windows(model: HookedTransformer, texts: list[str], n: int, length: int = 128, seed: int = 0) -> Tensor:
    """`n` windows of `length` tokens (fewer when the corpus is short) from the paragraphs in a seeded random order."""
    import torch

    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return torch.stack(list(itertools.islice(windows_of(model, paragraph_ids(model.tokenizer, (texts[i] for i in order)), length), n)))


def context_corpus(source: str | None) -> str:
    """The corpus the atlas's contexts come from: `source` when given (checked now), else the shipped Python docs."""
    if source is None:
        return PYTHON_DOCS
    if source != SUCCESSION_LISTS:
        check_source(source)
    return source


def corpus_digest(source: str) -> str:
    """Content hash of a corpus for cache keys: its files' bytes (python-docs, local files); a hub
    dataset is known only by its name offline; the succession lists are the tasks (keyed elsewhere)."""
    if source == SUCCESSION_LISTS:
        return SUCCESSION_LISTS
    if source == PYTHON_DOCS:
        return file_sha256([BUNDLED_DOCS])
    if source == PYTHON3_DOC:
        return file_sha256(python3_doc_files())
    files = check_source(source)
    return file_sha256([Path(f) for f in files]) if files is not None else f"hub dataset {source}"


def list_ids(tokenizer, tasks: list[Task] | None = None, sep: str = ",", space: str = " ") -> list[list[int]]:
    """The succession lists as token ids, one list per task ("Monday, Tuesday, ..."), each item
    encoded on its own as the prompts are (`probes/incontext.py`)."""
    from successor_lens.tasks import sae_tasks

    rows = []
    for task in tasks or sae_tasks():
        pieces = [p for n, item in enumerate(task.items) for p in ((space if n else "") + item, sep)]
        rows.append([t for piece in pieces for t in tokenizer.encode(piece, add_special_tokens=False)])
    return rows


def corpus_windows(model: HookedTransformer, source: str, n: int, length: int, seed: int = 0,
                   tasks: list[Task] | None = None) -> Tensor:
    """`n` windows of `length` tokens from a corpus (`context_corpus`); the succession lists are
    repeated in a seeded order until there are enough tokens."""
    import torch

    if source != SUCCESSION_LISTS:
        return token_windows(model, load_corpus(source), n, length, seed)
    rows = [r for r in list_ids(model.tokenizer, tasks) if r]
    if not rows:
        raise CorpusError("the tasks have no items to make succession lists of: give tasks with items, or a corpus")
    rng = random.Random(seed)

    def lists() -> Iterator[list[int]]:
        while True:
            yield from (rows[i] for i in rng.sample(range(len(rows)), len(rows)))

    return torch.stack(list(itertools.islice(windows_of(model, lists(), length), n)))
