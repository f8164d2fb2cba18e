"""Attention matrices: DDTS's implicit one and softmax attention per head, window band drawn."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import SEQUENTIAL, TEMPLATE, as_array, token_axis

__all__ = ["attention_matrix", "head_maps", "layout_maps"]


def _heatmap(z, *, coloraxis="coloraxis", name="", hover="weight", blank_zeros=False):
    """blank_zeros: softmax weights are exactly 0 only where the mask hides a key; leave those white."""
    T_q, T_k = z.shape
    if blank_zeros:
        z = np.where(z == 0, np.nan, z)
    return go.Heatmap(z=z, x=np.arange(T_k), y=np.arange(T_q), coloraxis=coloraxis, name=name,
                      hovertemplate="query %{y} ← key %{x}<br>" + hover + " = %{z:.3g}<extra></extra>")


def _window_band(fig, T: int, window: int, row=None, col=None):
    """Dashed lines at the diagonal and at the window's far edge: the keys each query sees."""
    edge = dict(x=[-0.5, T - window], y=[window - 1, T - 0.5])      # y = x + window − ½: just past the oldest key seen
    diag = dict(x=[-0.5, T - 0.5], y=[-0.5, T - 0.5])
    for line, label in ((diag, "diagonal"), (edge, f"window edge ({window} keys)")):
        if line is edge and window >= T:
            continue
        fig.add_trace(go.Scatter(**line, mode="lines", name=label, showlegend=False, hoverinfo="name",
                                 line=dict(color="#ff7f0e", width=1.5, dash="dash")), row=row, col=col)


def attention_matrix(attn, tokens=None, *, title: str = "Implicit attention matrix", signed: bool | None = None,
                     window: int | None = None, chunk_size: int | None = None) -> go.Figure:
    """One [T, T] matrix: row i = how much query i reads from each key j.

    attn: [T, T] (or [1, T, T] / [1, 1, T, T], e.g. ``ddts_parallel``'s output for one head).
    DDTS's implicit attention can be negative (q·k has either sign): ``signed`` (default: when
    there are negative entries) draws it on a diverging scale centred at 0. ``window`` draws the
    window band; ``chunk_size`` outlines the diagonal blocks the chunkwise form computes as attention
    (everything left of them reaches the query through the carried state).
    """
    a = as_array(attn, "attn", (2, 3, 4), "[T, T]")
    while a.ndim > 2:
        if a.shape[0] != 1:
            raise ValueError(f"attn must be one [T, T] matrix (leading dims of size 1), got shape {a.shape}; "
                             "pick a batch element and head first, or use head_maps for several heads")
        a = a[0]
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"attn must be square [T, T], got shape {a.shape}")
    T = a.shape[0]
    signed = bool((a < 0).any()) if signed is None else signed
    fig = go.Figure(_heatmap(a))
    if window is not None:
        _window_band(fig, T, window)
    if chunk_size is not None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int ≥ 1, got {chunk_size!r}")
        for start in range(0, T, chunk_size):
            end = min(start + chunk_size, T)
            fig.add_shape(type="rect", x0=start - 0.5, x1=end - 0.5, y0=start - 0.5, y1=end - 0.5,
                          line=dict(color="#ff7f0e", width=2))
    bound = float(np.abs(a).max()) or 1.0
    fig.update_layout(
        template=TEMPLATE, title=title, height=560, width=620,
        coloraxis=dict(colorscale="RdBu_r" if signed else SEQUENTIAL,
                       cmin=-bound if signed else None, cmax=bound if signed else None),
        xaxis=dict(title="key j", constrain="domain", showgrid=False) | (token_axis(tokens, T) or {}),
        yaxis=dict(title="query i", autorange="reversed", scaleanchor="x", showgrid=False)
        | (token_axis(tokens, T, axis="y") or {}),
    )
    return fig


def head_maps(weights, tokens=None, *, window: int | None = None, title: str = "Attention per head",
              cols: int | None = None, head_names=None) -> go.Figure:
    """A grid of per-head attention maps on one colour scale, with the window band if given.

    weights: [H, T, T] (or [1, H, T, T] as ``attention(..., return_weights=True)`` returns).
    """
    w = as_array(weights, "weights", (3, 4), "[H, T, T]")
    if w.ndim == 4:
        if w.shape[0] != 1:
            raise ValueError(f"weights must be [H, T, T] or [1, H, T, T]; pick one batch element of shape {w.shape}")
        w = w[0]
    H, T_q, T_k = w.shape
    if T_q != T_k:
        raise ValueError(f"weights must be square per head [H, T, T], got shape {w.shape}")
    names = list(head_names) if head_names is not None else [f"head {h}" for h in range(H)]
    if len(names) != H:
        raise ValueError(f"head_names has {len(names)} names for {H} heads")
    cols = cols or min(H, 4)
    rows = math.ceil(H / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.04, vertical_spacing=0.1)
    for h in range(H):
        r, c = h // cols + 1, h % cols + 1
        fig.add_trace(_heatmap(w[h], name=names[h], blank_zeros=True), row=r, col=c)
        if window is not None:
            _window_band(fig, T_q, window, row=r, col=c)
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_xaxes(showgrid=False)
    if tokens is not None:
        fig.update_yaxes(**token_axis(tokens, T_q, axis="y"))
        fig.update_xaxes(**token_axis(tokens, T_q))
    panel = int(np.clip(6 * T_q, 250, 480))          # long sequences get room for their token labels
    fig.update_layout(template=TEMPLATE, title=title, height=120 + (panel + 10) * rows, width=120 + panel * cols,
                      coloraxis=dict(colorscale=SEQUENTIAL, cmin=0, cmax=float(w.max())))
    return fig


def layout_maps(maps: dict, *, window: int | None = None, heads: int = 4,
                title: str = "Head layouts: who shares what") -> go.Figure:
    """Rows = head layouts (e.g. MHA, GQA, MQA, SKA), columns = the first ``heads`` query heads.

    maps: {layout name: weights [H, T, T] or [1, H, T, T]}; every map has the same T.
    """
    if not isinstance(maps, dict) or not maps:
        raise ValueError("maps must be a non-empty dict {layout name: weights [H, T, T]}")
    arrays = {}
    for name, w in maps.items():
        a = as_array(w, f"maps[{name!r}]", (3, 4), "[H, T, T]")
        arrays[name] = a[0] if a.ndim == 4 else a
    Ts = {name: a.shape[-1] for name, a in arrays.items()}
    if len(set(Ts.values())) > 1:
        raise ValueError(f"every map must have the same sequence length, got {Ts}")
    T = next(iter(Ts.values()))
    cols = min(heads, min(a.shape[0] for a in arrays.values()))
    titles = [f"{name} · head {h}" for name in arrays for h in range(cols)]
    fig = make_subplots(rows=len(arrays), cols=cols, subplot_titles=titles,
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    for r, a in enumerate(arrays.values(), start=1):
        for h in range(cols):
            fig.add_trace(_heatmap(a[h], blank_zeros=True), row=r, col=h + 1)
            if window is not None:
                _window_band(fig, T, window, row=r, col=h + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, showgrid=False)
    fig.update_xaxes(showticklabels=False, showgrid=False)
    cmax = max(float(a.max()) for a in arrays.values())
    fig.update_layout(template=TEMPLATE, title=title, height=100 + 230 * len(arrays), width=140 + 230 * cols,
                      coloraxis=dict(colorscale=SEQUENTIAL, cmin=0, cmax=cmax))
    return fig
