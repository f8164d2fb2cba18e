"""What the fixed-size state S_t holds over time: its singular values, effective rank and norm."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .style import COLORS, SEQUENTIAL, TEMPLATE, as_array, new_figure, token_axis

__all__ = ["singular_values", "effective_rank", "state_spectrum", "state_norms"]


def _states(states, name="states") -> torch.Tensor:
    return torch.from_numpy(as_array(states, name, 3, "[T, n, m] (one state per token)"))


def singular_values(states) -> torch.Tensor:
    """Singular values of every S_t: [T, n, m] → [T, min(n, m)], largest first."""
    return torch.linalg.svdvals(_states(states))


def effective_rank(states) -> torch.Tensor:
    """exp(entropy) of the normalised singular values of every S_t: [T, n, m] → [T].

    1 for a rank-one state, min(n, m) for a flat spectrum, 0 for the zero state: how many
    directions the state really uses to store what it has seen (Roy & Vetterli, 2007).
    """
    s = singular_values(states)
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp_min(1e-300)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy))


def state_spectrum(states, tokens=None, *, title: str = "Spectrum of the state S_t") -> go.Figure:
    """Top: log10 of S_t's singular values (normalised by the largest) per token.
    Bottom: the effective rank per token against the ceiling min(n, m)."""
    s = singular_values(states).numpy()
    T, r = s.shape
    rel = np.log10(np.clip(s / np.maximum(s[:, :1], 1e-300), 1e-12, None))
    erank = effective_rank(states).numpy()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38], vertical_spacing=0.08,
                        subplot_titles=["log₁₀ σᵢ(S_t) / σ₁(S_t)", "effective rank of S_t"])
    fig.add_trace(go.Heatmap(z=rel.T, x=np.arange(T), y=np.arange(1, r + 1), colorscale=SEQUENTIAL, zmin=-6, zmax=0,
                             colorbar=dict(len=0.6, y=0.72, thickness=12, title="log₁₀"),
                             hovertemplate="token %{x}<br>σ_%{y}: %{z:.2f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=np.arange(T), y=erank, name="effective rank", mode="lines",
                             line=dict(color=COLORS["rodimus"])), row=2, col=1)
    fig.add_trace(go.Scatter(x=[0, T - 1], y=[r, r], name=f"min(n, m) = {r}", mode="lines",
                             line=dict(color=COLORS["paper"], dash="dot")), row=2, col=1)
    fig.add_trace(go.Scatter(x=np.arange(T), y=np.minimum(np.arange(1, T + 1), r), name="tokens seen",
                             mode="lines", line=dict(color=COLORS["accent"], dash="dash")), row=2, col=1)
    fig.update_yaxes(title_text="index i", row=1, col=1)
    fig.update_yaxes(title_text="rank", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="token", row=2, col=1)
    ticks = token_axis(tokens, T)
    if ticks:
        fig.update_xaxes(**ticks, row=2, col=1)
    fig.update_layout(template=TEMPLATE, title=title, height=640, legend=dict(orientation="h", y=-0.18))
    return fig


def state_norms(states, tokens=None, *, title: str = "‖S_t‖ over time") -> go.Figure:
    """Frobenius norm of S_t per token. states: [T, n, m], or {name: [T, n, m]} to compare layers/models."""
    series = states if isinstance(states, dict) else {"‖S_t‖": states}
    if not series:
        raise ValueError("states must be [T, n, m] or a non-empty dict of them")
    fig = new_figure(title, height=400, xaxis_title="token", yaxis_title="‖S_t‖_F")
    lengths = set()
    for name, s in series.items():
        norms = torch.linalg.matrix_norm(_states(s, f"states[{name!r}]" if isinstance(states, dict) else "states"))
        lengths.add(len(norms))
        fig.add_trace(go.Scatter(x=np.arange(len(norms)), y=norms.numpy(), name=str(name), mode="lines"))
    if tokens is not None:
        if len(lengths) > 1:
            raise ValueError(f"token labels need series of one length, got lengths {sorted(lengths)}")
        fig.update_xaxes(**token_axis(tokens, lengths.pop()))
    return fig
