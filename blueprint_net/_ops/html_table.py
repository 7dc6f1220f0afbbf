"""HTML pieces the status page's sections share: escaping and tables.

Layer: ops (the operator surface).

In: values, many of them a peer's words (ids, addresses, topics, reasons).
Out: HTML text in which every value is escaped, quotes included, so it is
also safe inside an attribute or inline SVG.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(headers: Sequence[str], rows: list[list[str]], empty: str) -> str:
    """A table with a header row; cells are HTML already (escape first)."""
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cell(value: Any, numeric: bool = False) -> str:
    """One escaped ``<td>``; ``numeric`` right-aligns it."""
    if numeric:
        return f'<td class="n">{escape(value)}</td>'
    return f"<td>{escape(value)}</td>"
