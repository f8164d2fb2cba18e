"""Benchmark tables (the Markdown tables of docs/benchmarks.md) as plots."""

from __future__ import annotations

import re
from pathlib import Path

import plotly.graph_objects as go

from .style import TEMPLATE

__all__ = ["markdown_tables", "timing_columns", "benchmark_figure"]

_NUMBER = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)([eE][-+]?\d+)?\s*(×|x|%|ms|µs|us|s|GB/s|TFLOP/s)?$")


def _cell(text: str):
    """A table cell as a float when it is a number (units like ×, %, ms stripped), else the text."""
    text = text.strip().strip("*`")
    match = _NUMBER.match(text)
    if not match:
        return text
    return float((match.group(1) + (match.group(2) or "")).replace(",", ""))


def markdown_tables(source) -> list[list[dict]]:
    """Every pipe table in a Markdown text (or file path) as a list of row dicts keyed by the header."""
    text = Path(source).read_text() if isinstance(source, Path) else str(source)
    tables, lines = [], text.splitlines()
    i = 0
    while i + 1 < len(lines):
        header, rule = lines[i].strip(), lines[i + 1].strip()
        if header.startswith("|") and re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?", rule):
            names = [h.strip() for h in header.strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [_cell(c) for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(names, cells)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def _label(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def timing_columns(rows: list[dict], x: str) -> list[str]:
    """Columns holding times (a name ending in "ms" or "µs") with numbers in them."""
    return [c for c in rows[0] if c != x and _unit(c) in ("ms", "µs", "us")
            and any(isinstance(r.get(c), float) for r in rows)]


def _unit(column: str) -> str:
    """The last word of a column name, without brackets ("" for an empty header, as in a verdict column)."""
    words = column.strip("* ").split()
    return words[-1].strip("()") if words else ""


def benchmark_figure(rows: list[dict], *, x=None, y=None, color: str | None = None, log_y: bool = False,
                     title: str = "Benchmark") -> go.Figure:
    """Grouped bars, one group per row.

    x: the column(s) that label a row (default: every column before the first timing column, so rows that
    share T but differ in window stay apart). y: one column (then ``color`` may name a column whose values
    split the bars into series), a list of columns (one series each, e.g. ours vs a baseline), or None:
    every timing column (… ms / … µs). Blank or non-numeric cells are left out of their series.
    """
    if not rows:
        raise ValueError("rows is empty: no benchmark table to draw")
    names = list(rows[0])
    first = next(iter(names))
    columns = timing_columns(rows, first) if y is None else [y] if isinstance(y, str) else list(y)
    if not columns:
        raise ValueError(f"no timing column (… ms / … µs) in the table; name y. Columns: {names}")
    keys = [x] if isinstance(x, str) else list(x) if x is not None else \
        names[:max(1, names.index(columns[0]) if columns[0] in names else 1)]
    missing = [c for c in (*keys, *columns, color) if c is not None and c not in names]
    if missing:
        raise ValueError(f"column(s) {missing} not in the table; columns: {names}")

    def label(row):
        return ", ".join(_label(row[k]) if len(keys) == 1 else f"{k} {_label(row[k])}" for k in keys)

    series: dict[str, tuple[list, list]] = {}
    for column in columns:
        for row in rows:
            if isinstance(row.get(column), float):
                name = str(row[color]) if color and len(columns) == 1 else column
                xs, ys = series.setdefault(name, ([], []))
                xs.append(label(row))
                ys.append(row[column])
    if not series:
        raise ValueError(f"column(s) {columns} hold no numbers")
    fig = go.Figure([go.Bar(name=name, x=xs, y=ys) for name, (xs, ys) in series.items()])
    fig.update_layout(template=TEMPLATE, title=title, barmode="group", xaxis_title=", ".join(keys),
                      yaxis_title=columns[0] if len(columns) == 1 else "time", yaxis_type="log" if log_y else None,
                      height=440)
    return fig
