"""Plain-text tables for the command line."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: Control characters (terminal escapes among them) and line breaks: shown escaped, never sent raw to a terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        text = "-" if value is None else str(value)
        return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
