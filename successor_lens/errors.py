"""User errors: bad input, printed by the CLI as one line naming the problem and the fix (exit 2).

Every check that can blame the user raises a subclass of `UserError`; anything else is a bug and
keeps its traceback (exit 1). Checks run before the model loads wherever the input allows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class UserError(Exception):
    """Bad input from the user: one line, no traceback."""


class ConfigError(UserError, ValueError):
    """An argument or config field out of its range or of the wrong type."""


class ModelLoadError(UserError, RuntimeError):
    """A model could not be loaded; the message is one line saying what is missing and the fix."""


@contextmanager
def foreign_errors(error: type[UserError], message: str | Callable[[Exception], str]) -> Iterator[None]:
    """The one boundary where another library's exceptions become a user error.

    The Hugging Face hub, `datasets` and sae-lens's loaders raise many unrelated types for one user
    mistake (a name that does not exist, files that are not there, a folder of another layout).
    Wrap only the call into such a library, never our own code: any exception it raises becomes
    `error(message)` (one line for the CLI, exit 2), with the library's exception kept as its
    cause for API users. `message` may be a function of that exception. Our own `UserError`s
    pass through unchanged.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # the one place: see the docstring
        raise error(message(err) if callable(message) else message) from err


def first_line(err: BaseException, width: int = 120) -> str:
    """`Type: first line of the message`, at most `width` characters of it, cut at a word boundary
    (`shorten`): how a library error is named in one line."""
    text = shorten((str(err).splitlines() or [""])[0], width)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def shorten(text: str, width: int) -> str:
    """`text` cut to at most `width` characters at a word boundary, "..." marking the cut (a word
    longer than the width, a path say, is cut inside it)."""
    if len(text) <= width:
        return text
    cut = text[: max(0, width - 3)]
    space = cut.rfind(" ")
    return (cut[:space] if space > width // 2 else cut).rstrip(" ,;:") + "..."


def check_int(name: str, value: Any, lo: int | None = 1, hi: int | None = None, fix: str = "") -> int:
    """`value` as an int in [lo, hi] (bools refused: JSON `true` is not a layer)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, not {value!r}{_fix(fix)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name} is {value}, outside {_range(lo, hi)}{_fix(fix)}")
    return value


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None, fix: str = "",
                open_lo: bool = False) -> float:
    """`value` as a finite float in [lo, hi] (or (lo, hi] with `open_lo`); NaN and inf refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, not {value!r}{_fix(fix)}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} is {value}, not a finite number{_fix(fix)}")
    if (lo is not None and (value < lo or (open_lo and value == lo))) or (hi is not None and value > hi):
        raise ConfigError(f"{name} is {value:g}, outside {_range(lo, hi, open_lo)}{_fix(fix)}")
    return value


def _range(lo, hi, open_lo: bool = False) -> str:
    left = "(" if open_lo else "["
    if lo is not None and hi is not None:
        return f"{left}{lo:g}, {hi:g}]"
    return f"> {lo:g}" if open_lo else (f">= {lo:g}" if lo is not None else f"<= {hi:g}")


def _fix(fix: str) -> str:
    return f": {fix}" if fix else ""
