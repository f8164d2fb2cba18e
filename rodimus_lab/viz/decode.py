"""Measured decoding cost vs context length, from a ``rodimus-lab bench decode`` results file."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import COLORS, TEMPLATE

__all__ = ["decode_cost"]

LABELS = {"rodimus": "Rodimus", "rodimus_plus": "Rodimus+", "transformer": "Transformer++"}


def decode_cost(results, title: str | None = None) -> go.Figure:
    """Two panels over context length (log axes): the decoding state's bytes — measured (markers)
    on the analytic line — and the median latency per generated token (eager; dashed: CUDA graph).

    results: the dict :func:`rodimus_lab.bench.decode.run` returns, or the path of its JSON file.
    """
    if isinstance(results, (str, Path)):
        path = Path(results)
        if not path.is_file():
            raise FileNotFoundError(f"no results file at {path}: run `rodimus-lab bench decode --out {path}` first")
        results = json.loads(path.read_text())
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
        raise ValueError("results must be the dict of rodimus_lab.bench.decode.run (with a 'rows' list) or its JSON path")
    rows = [r for r in results["rows"] if "error" not in r]
    if not rows:
        raise ValueError("results hold no measured rows; nothing to draw")
    env = results.get("environment", {})
    where = env.get("gpu") or env.get("device", "")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16,
                        subplot_titles=("decoding state per sequence", "latency per generated token"))
    for name in dict.fromkeys(r["model"] for r in rows):
        points = sorted((r for r in rows if r["model"] == name), key=lambda r: r["context"])
        x = [r["context"] for r in points]
        color, label = COLORS.get(name), LABELS.get(name, name)
        fig.add_trace(go.Scatter(x=x, y=[r["state_bytes_analytic"] for r in points], mode="lines", name=label,
                                 legendgroup=name, line=dict(color=color, width=2),
                                 hovertemplate="%{x} tokens: %{y:.3s}B analytic<extra>" + label + "</extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=x, y=[r["state_bytes_measured"] for r in points], mode="markers",
                                 name=f"{label} measured", legendgroup=name, showlegend=False,
                                 marker=dict(color=color, size=9, symbol="circle-open", line=dict(width=2)),
                                 customdata=[r["peak_bytes"] for r in points],
                                 hovertemplate="%{x} tokens: %{y:.3s}B measured, peak %{customdata:.3s}B"
                                               "<extra>" + label + "</extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=x, y=[r["latency_ms"] for r in points], mode="lines+markers",
                                 name=f"{label} eager", legendgroup=name, showlegend=False,
                                 line=dict(color=color, width=2),
                                 hovertemplate="%{x} tokens: %{y:.3f} ms<extra>" + label + "</extra>"), 1, 2)
        graph = [(r["context"], r["latency_ms_graph"]) for r in points if r.get("latency_ms_graph") is not None]
        if graph:
            fig.add_trace(go.Scatter(x=[g[0] for g in graph], y=[g[1] for g in graph], mode="lines+markers",
                                     name=f"{label} CUDA graph", legendgroup=name,
                                     line=dict(color=color, width=2, dash="dash"),
                                     hovertemplate="%{x} tokens: %{y:.3f} ms (CUDA graph)<extra>" + label + "</extra>"),
                          1, 2)
    fig.update_xaxes(type="log", title="context length (tokens)")
    fig.update_yaxes(type="log", title="bytes (line: analytic, circles: measured)", row=1, col=1)
    fig.update_yaxes(type="log", title="ms per token (median)", row=1, col=2)
    dtype, batch = results.get("dtype", ""), results.get("batch_size", "")
    fig.update_layout(template=TEMPLATE, height=520, legend=dict(orientation="h", y=-0.22, x=0),
                      title=title or f"Decoding cost vs context length ({where}, {dtype}, batch {batch})")
    return fig
