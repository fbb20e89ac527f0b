"""Progress bars: every bar in the package is a `bar`, and `shown(False)` (what `progress=False`
does in the API) silences all of them, with the loading bars of transformers and the Hugging Face
hub, for the calls made inside it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_SHOWN: ContextVar[bool] = ContextVar("successor_lens_progress", default=True)


def bar(iterable: Any = None, *, disable: bool = False, **kwargs: Any) -> Any:
    """A tqdm bar (stderr), off inside `shown(False)`."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=disable or not _SHOWN.get(), **kwargs)


def showing() -> bool:
    return _SHOWN.get()


@contextmanager
def shown(on: bool = True) -> Iterator[None]:
    """Bars on (when they are not already off) or off for the calls inside."""
    token = _SHOWN.set(_SHOWN.get() and on)
    toggled = []
    if not on:
        for module, off, back in (("transformers", "disable_progress_bar", "enable_progress_bar"),
                                  ("huggingface_hub", "disable_progress_bars", "enable_progress_bars")):
            utils = _hub_utils(module)
            if utils is not None and hasattr(utils, off):
                getattr(utils, off)()
                toggled.append(getattr(utils, back))
    try:
        yield
    finally:
        _SHOWN.reset(token)
        for back in toggled:
            back()


def _hub_utils(module: str):
    if module == "transformers":
        if "transformers" not in sys.modules:
            import transformers.utils.logging as logging  # noqa: F401  (cheap: no model code)
        return sys.modules["transformers.utils.logging"]
    import huggingface_hub.utils as utils

    return utils


def honours_progress(fn):
    """Decorate an API function with a `progress` argument: `progress=False` silences every bar in
    the call, its callees' included."""
    import functools
    import inspect

    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        on = signature.bind_partial(*args, **kwargs).arguments.get("progress", True)
        with shown(bool(on)):
            return fn(*args, **kwargs)

    return call
