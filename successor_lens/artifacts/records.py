"""Each stage's JSON record, typed: written by `stage_files.py`, read back through `Record.read`,
which checks the file is a JSON object with every field the record needs (one line naming the
file and the fix otherwise), so a stage never indexes into a document it has not checked."""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypedDict, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from successor_lens.errors import UserError
from successor_lens.filenames import HEADS, INCONTEXT, MINE, MINE_EMBED, PROBE, ROLES, SUMMARY, WILD
from successor_lens.io import read_json


class RecordError(UserError, ValueError):
    """A stage's record that is missing, not JSON, or lacks a field."""


class HeadsRecord(TypedDict):
    provenance: dict[str, Any]
    config: dict[str, Any]
    successor_bar: float
    best_head: str
    best_score: float
    passes_bar: bool
    top_heads: list[dict[str, Any]]
    heads: dict[str, dict[str, Any]]
    """Head name -> succession, copying, per_task."""
    chance: dict[str, float]
    n_pairs: dict[str, int]
    held_out_tasks: list[str]
    dropped_tokens: list[dict[str, Any]]


class ChoiceRecord(TypedDict):
    head: str
    reason: str
    candidates: list[dict[str, Any]]


class _IncontextOptional(TypedDict, total=False):
    ablation: dict[str, Any] | None
    """The analysis head zero-ablated against other heads (`edits.ablation_effect`); absent in runs made before it was measured."""


class IncontextRecord(_IncontextOptional):
    provenance: dict[str, Any]
    n_prompts: int
    in_context: dict[str, Any] | None
    choice: ChoiceRecord


class MineRecord(TypedDict):
    provenance: dict[str, Any]
    saes: list[str]
    per_sae: list[dict[str, Any]]
    recurrence: dict[str, Any]
    downstream_features: list[int]
    figures: dict[str, dict[str, Any]]
    paper: dict[str, Any]


class _ProbeOptional(TypedDict, total=False):
    probe_feature_cosine_all_items: dict[str, Any] | None
    """Absent in probe.json written before the non-number probe."""


class ProbeRecord(_ProbeOptional):
    provenance: dict[str, Any]
    head: str
    probe_mlp0: dict[str, Any]
    probe_embed: dict[str, Any]
    probe_feature_cosine: dict[str, Any]
    arithmetic: dict[str, dict[str, Any]]
    arithmetic_examples: list[Any]
    offset_profile: dict[str, dict[str, float]]
    verdicts: dict[str, dict[str, Any]]
    paper: dict[str, Any]


class WildRecord(TypedDict):
    provenance: dict[str, Any]
    heads: list[dict[str, Any]]
    in_context: dict[str, Any]


class RolesRecord(TypedDict):
    provenance: dict[str, Any]
    heads: Any
    patching: dict[str, Any] | None
    carriers: Any
    nulls: Any


class SummaryRecord(TypedDict):
    provenance: dict[str, Any]
    summary_version: str
    model: str
    best_head: str
    analysis_head: str
    above_null: dict[str, bool]
    lines: list[str]
    paper: dict[str, Any]


def recorded_heads(path: Path, names: list[Any], shape, rerun: str) -> list[str]:
    """Head names read from a record (`path`), each checked as a head of a model of `shape` (a
    `ModelShape` or a model): a hand-edited or foreign record names a head that does not exist in
    one line, before any work, rather than an IndexError after it."""
    from successor_lens.probes.head_id import check_head

    try:
        return [check_head(n if isinstance(n, str) else repr(n)[:40], shape) for n in names]
    except UserError as err:
        raise RecordError(f"{path}: {err}: rerun {rerun}") from None


def field_error(value: Any, kind: Any) -> str | None:
    """Why `value` (read from JSON) is not of the annotated `kind`, or None: the record's own
    field types checked where it is read, so a hand-edited record (a list where a table is, a
    string where a number is, NaN) is one line, not a TypeError deep in a stage."""
    if kind is Any:
        return None
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        errors = [field_error(value, k) for k in get_args(kind)]
        return None if None in errors else errors[0]
    if kind is type(None):
        return None if value is None else f"{type(value).__name__} where null is"
    if isinstance(kind, type) and issubclass(kind, dict) and hasattr(kind, "__required_keys__"):  # a nested record
        if not isinstance(value, dict):
            return f"{type(value).__name__} where a table is"
        missing = sorted(kind.__required_keys__ - set(value))
        if missing:
            return f"no {missing[0]}"
        return next((f"{key}: {e}" for key, sub in get_type_hints(kind).items() if key in value
                     for e in [field_error(value[key], sub)] if e), None)
    base = origin or kind
    if base is float and value is None:  # `io.write_json` writes NaN as null
        return None
    names = {dict: "a table", list: "a list", str: "a string", bool: "true or false", int: "an integer", float: "a number"}
    if base in (int, float) and isinstance(value, bool) or not isinstance(value, int if base is int else (int, float) if base is float else base):
        return f"{type(value).__name__} where {names.get(base, base.__name__)} is"
    if base is float and not math.isfinite(value):
        return f"{value} where a finite number is"
    return None


R = TypeVar("R")


@dataclass(frozen=True)
class Record(Generic[R]):
    """A stage's JSON file in a run folder and the shape it must have."""

    name: str
    shape: type[R]
    stage: str
    """The command that writes it (for the fix in an error)."""

    def read(self, folder: str | Path) -> R:
        path = Path(folder) / self.name
        rerun = f"`successor-lens {self.stage} --out {folder}`" + ("" if self.stage == "run" else " (or `run`)")
        if not path.exists() and not path.is_symlink():
            raise RecordError(f"{path}: missing: finish the run first with {rerun}")
        doc = read_json(path, "record", (dict, list, str, int, float, bool, type(None)), RecordError, f"rerun {rerun}")
        required: frozenset[str] = getattr(self.shape, "__required_keys__", frozenset())
        if not isinstance(doc, dict) or not required <= set(doc):
            lacking = sorted(required - set(doc)) if isinstance(doc, dict) else ["(not a JSON object)"]
            raise RecordError(f"{path}: not a record of `successor-lens {self.stage}` (no {lacking[0]}): rerun {rerun}")
        wrong = next((f"{key}: {e}" for key, kind in get_type_hints(self.shape).items() if key in doc
                      for e in [field_error(doc[key], kind)] if e), None)
        if wrong is not None:
            raise RecordError(f"{path}: not a record of `successor-lens {self.stage}` ({wrong[:80]}): rerun {rerun}")
        return cast(R, doc)  # its keys and their types checked against the TypedDict's above


HEADS_RECORD = Record(HEADS, HeadsRecord, "heads")
INCONTEXT_RECORD = Record(INCONTEXT, IncontextRecord, "run")
MINE_RECORD = Record(MINE, MineRecord, "mine")
MINE_EMBED_RECORD = Record(MINE_EMBED, MineRecord, "run")
PROBE_RECORD = Record(PROBE, ProbeRecord, "probe")
SUMMARY_RECORD = Record(SUMMARY, SummaryRecord, "run")
WILD_RECORD = Record(WILD, WildRecord, "wild")
ROLES_RECORD = Record(ROLES, RolesRecord, "roles")
