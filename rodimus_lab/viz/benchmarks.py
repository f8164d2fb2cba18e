"""Benchmark tables (the Markdown tables of docs/benchmarks.md) as plots."""

from __future__ import annotations

import re
from pathlib import Path

import plotly.graph_objects as go

from .style import TEMPLATE

__all__ = ["markdown_tables", "benchmark_figure"]

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


def benchmark_figure(rows: list[dict], *, x: str, y: str, color: str | None = None, log_y: bool = False,
                     title: str = "Benchmark") -> go.Figure:
    """Grouped bars of column ``y`` over column ``x``, one bar group per value of column ``color``."""
    if not rows:
        raise ValueError("rows is empty: no benchmark table to draw")
    missing = [c for c in (x, y, color) if c is not None and c not in rows[0]]
    if missing:
        raise ValueError(f"column(s) {missing} not in the table; columns: {list(rows[0])}")
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if isinstance(row.get(y), float):
            groups.setdefault(str(row[color]) if color else y, []).append(row)
    if not groups:
        raise ValueError(f"column {y!r} holds no numbers")
    fig = go.Figure([go.Bar(name=name, x=[str(r[x]) for r in rs], y=[r[y] for r in rs]) for name, rs in groups.items()])
    fig.update_layout(template=TEMPLATE, title=title, barmode="group", xaxis_title=x, yaxis_title=y,
                      yaxis_type="log" if log_y else None, height=440)
    return fig
