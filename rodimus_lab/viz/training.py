"""Training curves from metric logs, and our sweep results drawn beside the paper's points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..files import read_jsonl
from .style import COLORS, TEMPLATE

__all__ = ["read_metrics", "training_curves", "compare_with_paper", "grouped_bars"]


def read_metrics(source) -> list[dict]:
    """Metric rows from a JSONL file (one JSON object per line; the last line of a run still writing, or
    killed mid-write, is left out while unfinished) or an iterable of dicts."""
    if isinstance(source, (str, Path)):
        return read_jsonl(source)
    rows = list(source)
    if not all(isinstance(r, dict) for r in rows):
        raise TypeError("metrics must be a JSONL path or an iterable of dicts (one per logged step)")
    return rows


def training_curves(logs, *, x: str = "step", y=("loss",), log_y: bool = False,
                    title: str = "Training curves") -> go.Figure:
    """One panel per metric in ``y``, one line per run; rows lacking a metric are skipped
    (training and evaluation rows can share one log).

    logs: a JSONL path / list of dicts, or {run name: path or list of dicts}.
    """
    runs = logs if isinstance(logs, dict) else {"run": logs}
    if not runs:
        raise ValueError("logs is empty: pass a JSONL path, a list of metric dicts, or {name: ...}")
    metrics = [y] if isinstance(y, str) else list(y)
    if not metrics:
        raise ValueError("y must name at least one metric")
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    drawn = 0
    colorway = TEMPLATE.layout.colorway
    for i, (name, source) in enumerate(runs.items()):
        rows = read_metrics(source)
        for col, metric in enumerate(metrics, start=1):
            points = [(r[x], r[metric]) for r in rows if r.get(x) is not None and r.get(metric) is not None]
            if not points:
                continue
            xs, ys = zip(*points)
            drawn += 1
            fig.add_trace(go.Scatter(x=xs, y=ys, name=str(name), legendgroup=str(name), showlegend=col == 1,
                                     mode="lines+markers" if len(xs) < 30 else "lines",
                                     line=dict(color=colorway[i % len(colorway)])), row=1, col=col)
        fig.update_xaxes(title_text=x)
    if not drawn:
        raise ValueError(f"no row has both {x!r} and any of {metrics}; check the metric names in the log")
    if log_y:
        fig.update_yaxes(type="log")
    fig.update_layout(template=TEMPLATE, title=title, height=420, width=max(520, 460 * len(metrics)))
    return fig


def _color(name: str, fallback: str) -> str:
    """The model's colour. "Mamba2-style gate in the Rodimus block" takes Mamba2's, so that our variant and
    the paper's model it stands for share a colour (solid vs dashed)."""
    key = name.split("-style")[0].lower().replace("++", "").replace("+", "_plus").replace(" ", "_")
    return COLORS.get(key, fallback)


def _xy(series, where: str):
    points = np.asarray(series, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"{where} must be a non-empty list of (x, y) pairs, got shape {points.shape}")
    return points[np.argsort(points[:, 0])].T


def compare_with_paper(ours: dict, paper: dict | None = None, *, x_title: str, y_title: str,
                       log_x: bool = True, title: str = "Ours beside the paper", side_by_side: bool = False) -> go.Figure:
    """Our points (solid, filled markers) beside the paper's (dashed, open markers), one colour per model.

    ours, paper: {model name: [(x, y), ...]}; see :mod:`rodimus_lab.paper` for the paper's.
    side_by_side: ours and the paper's in two panels, each with its own y range — for results at another
    scale (a perplexity of 170 beside the paper's 20 would flatten both sets of curves on one axis).
    """
    if not isinstance(ours, dict) or (paper is not None and not isinstance(paper, dict)):
        raise TypeError("ours and paper must be dicts {model name: [(x, y), ...]}")
    if not ours and not paper:
        raise ValueError("nothing to draw: ours and paper are both empty")
    panels = side_by_side and bool(paper)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ours", "the paper")) if panels else go.Figure()
    at = lambda col: dict(row=1, col=col) if panels else {}
    colorway = TEMPLATE.layout.colorway
    names = list(dict.fromkeys([*ours, *(paper or {})]))
    for i, name in enumerate(names):
        color = _color(name, colorway[i % len(colorway)])
        if name in ours:
            xs, ys = _xy(ours[name], f"ours[{name!r}]")
            fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{name} (ours)", mode="lines+markers",
                                     line=dict(color=color, width=2.5), marker=dict(size=9)), **at(1))
        if paper and name in paper:
            xs, ys = _xy(paper[name], f"paper[{name!r}]")
            fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{name} (paper)", mode="lines+markers",
                                     line=dict(color=color, dash="dash", width=1.5),
                                     marker=dict(size=8, symbol="circle-open")), **at(2))
    fig.update_layout(template=TEMPLATE, title=title, height=460)
    if panels:   # the legend below the panels leaves each the width its axis title needs
        fig.update_layout(height=640, width=1000, legend=dict(orientation="h", yanchor="top", y=-0.18))
    fig.update_xaxes(title=x_title, type="log" if log_x else "linear")
    fig.update_yaxes(title=y_title, **at(1))
    return fig


def grouped_bars(groups: dict, *, y_title: str, title: str = "Results") -> go.Figure:
    """One bar per (series, category), grouped by category: e.g. accuracy per gate (categories) and
    learning rate (series). groups: {series name: {category: value}}, every series over the same categories."""
    if not isinstance(groups, dict) or not groups or not all(isinstance(v, dict) and v for v in groups.values()):
        raise TypeError("groups must be a non-empty dict {series name: {category: value}}")
    categories = list(next(iter(groups.values())))
    for name, values in groups.items():
        if list(values) != categories:
            raise ValueError(f"series {name!r} has categories {list(values)}, expected {categories}")
    fig = go.Figure([go.Bar(name=str(name), x=categories, y=[float(values[c]) for c in categories])
                     for name, values in groups.items()])
    fig.update_layout(template=TEMPLATE, barmode="group", yaxis_title=y_title, title=title)
    return fig
