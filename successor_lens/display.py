"""Short reprs and notebook HTML for the API's results: a few numbers with their nulls, never a
tensor dump. Every string that reaches HTML is escaped."""

from __future__ import annotations

import html
from collections.abc import Sequence


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"
    return "n/a" if value is None else str(value)


def html_card(title: str, header: Sequence[str], rows: Sequence[Sequence], notes: Sequence[str] = ()) -> str:
    """A small table for Jupyter's `_repr_html_`: a title, rows of values and notes under it (a note
    that says a figure is not above its null is shown in red)."""
    esc = lambda v: html.escape(_fmt(v))  # noqa: E731
    head = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    lines = "".join(f"<li style='color:{'#a00' if 'NOT above' in n else 'inherit'}'>{html.escape(n)}</li>" for n in notes)
    return (f"<div><strong>{html.escape(title)}</strong><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            + (f"<ul>{lines}</ul>" if lines else "") + "</div>")
