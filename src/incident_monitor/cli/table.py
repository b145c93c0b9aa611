"""The one table printer every list command uses: a header, aligned columns, a hint when empty."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Any

MAX_CELL = 60


def cell(value: Any, *, limit: int | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(cell(v) for v in value) or "-"
    text = " ".join(str(value).split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; long cells are cut, except in the last column (nothing follows it)."""
    last = len(headers) - 1
    cells = [[cell(v, limit=None if i == last else MAX_CELL) for i, v in enumerate(row)] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *cells]
    ]
    return "\n".join(lines)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str, more: int | None = None, indent: str = ""
) -> None:
    """``empty`` is printed instead of a bare header; ``more`` is the next page's offset, if any."""
    if not rows:
        print(indent + empty)
        return
    print("\n".join(indent + line for line in format_table(headers, rows).splitlines()))
    if more is not None:
        print(f"(more: pass --offset {more})")


def print_fields(pairs: Sequence[tuple[str, Any]], *, indent: str = "") -> None:
    """``label: value`` lines for one record (show commands); empty values are left out."""
    shown = [(label, value) for label, value in pairs if value not in (None, "", [])]
    width = max((len(label) for label, _ in shown), default=0)
    for label, value in shown:
        text = (
            value.isoformat() if isinstance(value, datetime) else cell(value) if not isinstance(value, str) else value
        )
        print(f"{indent}{label + ':':{width + 1}} {text}")
