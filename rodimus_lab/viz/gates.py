"""The DDTS gates: heatmaps over tokens × state dims, per-token write/keep profiles, the
selection curves (α, α̂) = (e^{−g}, g)^τ, and the gate family on one (α, α̂) plane."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..ddts import ddts_gates
from .style import COLORS, SEQUENTIAL, TEMPLATE, as_array, token_axis

__all__ = ["gate_heatmaps", "write_keep_profile", "selection_curves", "gate_family", "GATE_PANELS"]

# panel key → (title, colour range); α and α̂ come from the model's log_alpha / alpha_hat. α is drawn as
# −ln α = τg on a log colour scale: trained gates sit at α ≈ 0.99…0.9999, one colour on a 0–1 scale.
FORGET_FLOOR = 1e-6   # −ln α below this (α = 1 to float precision: no decay) is drawn at the floor
GATE_PANELS = {
    "alpha": ("−ln α = τg  (forget; log colour scale — small means the state is kept)", None),
    "alpha_hat": ("α̂ = g^τ  (write)", None),
    "tau": ("τ  (temperature)", (0.0, 1.0)),
    "g": ("g  (selection)", None),
}


def _panels(gates: dict) -> dict[str, np.ndarray]:
    """The gate arrays to draw, [T, n] each, from a dict with log_alpha/alpha and alpha_hat, tau, g."""
    if not isinstance(gates, dict):
        raise TypeError(f"gates must be a dict like probe(...).gates(layer), got {type(gates).__name__}")
    found = {}
    if gates.get("alpha") is not None:
        found["alpha"] = as_array(gates["alpha"], "gates['alpha']", 2, "[T, n]")
    elif gates.get("log_alpha") is not None:
        found["alpha"] = np.exp(as_array(gates["log_alpha"], "gates['log_alpha']", 2, "[T, n]"))
    for key in ("alpha_hat", "tau", "g"):
        if gates.get(key) is not None:
            found[key] = as_array(gates[key], f"gates[{key!r}]", 2, "[T, n]")
    if not found:
        raise ValueError(f"gates has none of alpha/log_alpha, alpha_hat, tau, g (keys: {sorted(gates)})")
    shapes = {k: v.shape for k, v in found.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"every gate must have the same shape [T, n], got {shapes}")
    return {k: found[k] for k in GATE_PANELS if k in found}


def gate_heatmaps(gates: dict, tokens=None, *, title: str = "DDTS gates") -> go.Figure:
    """One heatmap per gate (α, α̂, τ, g): tokens along x, state dims along y.

    gates: dict of [T, n] tensors (``log_alpha`` or ``alpha``, ``alpha_hat``, ``tau``, ``g``;
    missing or None ones are skipped, as in the ablations). tokens: T labels or None.
    """
    panels = _panels(gates)
    T, n = next(iter(panels.values())).shape
    rows = len(panels)
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[GATE_PANELS[k][0] for k in panels])
    for row, (key, z) in enumerate(panels.items(), start=1):
        zrange = GATE_PANELS[key][1] or (None, None)
        top, bottom = fig.get_subplot(row, 1).yaxis.domain[::-1]
        colorbar = dict(len=(top - bottom) * 0.95, y=(top + bottom) / 2, thickness=12)
        hover = "token %{x}<br>state dim %{y}<br>" + key + " = %{z:.3g}<extra></extra>"
        if key == "alpha":   # log10(−ln α) with ticks labelled by −ln α; the hover shows α itself
            forget = np.maximum(-np.log(z), FORGET_FLOOR)
            z, custom = np.log10(forget), z.T
            powers = np.arange(np.floor(z.min()), np.ceil(z.max()) + 1)
            colorbar.update(tickvals=powers, ticktext=[f"1e{int(p)}" for p in powers])
            hover = "token %{x}<br>state dim %{y}<br>α = %{customdata:.6f}<extra></extra>"
        else:
            custom = None
        fig.add_trace(go.Heatmap(
            z=z.T, x=np.arange(T), y=np.arange(n), zmin=zrange[0], zmax=zrange[1], name=key, customdata=custom,
            colorscale=SEQUENTIAL, colorbar=colorbar, hovertemplate=hover,
        ), row=row, col=1)
        fig.update_yaxes(title_text="state dim", row=row, col=1)
    ticks = token_axis(tokens, T)
    if ticks:
        fig.update_xaxes(**ticks, row=rows, col=1)
    fig.update_xaxes(title_text="token", row=rows, col=1)
    fig.update_layout(template=TEMPLATE, title=title, height=180 + 190 * rows)
    return fig


def write_keep_profile(gates: dict, tokens=None, *, title: str = "What each token writes and keeps") -> go.Figure:
    """Per token, the mean over state dims of α̂ (how strongly it is written) and of α
    (how much of the old state survives it). Selection: one rises where the other falls."""
    panels = _panels(gates)
    missing = [k for k in ("alpha", "alpha_hat") if k not in panels]
    if missing:
        raise ValueError(f"write_keep_profile needs {missing} (log_alpha/alpha and alpha_hat) in gates")
    T = panels["alpha"].shape[0]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=np.arange(T), y=panels["alpha_hat"].mean(1), name="mean α̂ (write)",
                             mode="lines+markers", line=dict(color=COLORS["rodimus_plus"])), secondary_y=False)
    fig.add_trace(go.Scatter(x=np.arange(T), y=panels["alpha"].mean(1), name="mean α (keep)",
                             mode="lines+markers", line=dict(color=COLORS["rodimus"])), secondary_y=True)
    ticks = token_axis(tokens, T)
    if ticks:
        fig.update_xaxes(**ticks)
    fig.update_xaxes(title_text="token")
    fig.update_yaxes(title_text="mean α̂", secondary_y=False)
    fig.update_yaxes(title_text="mean α", secondary_y=True)
    fig.update_layout(template=TEMPLATE, title=title, height=420, legend=dict(orientation="h", y=1.1))
    return fig


def selection_curves(taus=(1.0, 0.75, 0.5, 0.25), *, g_range=(1e-3, 10.0), points: int = 200, observed: dict | None = None,
                     max_observed: int = 4000, title: str = "Tempered selection (α, α̂) = (e<sup>−g</sup>, g)<sup>τ</sup>") -> go.Figure:
    """α and α̂ as functions of the selection gate g, one curve per temperature τ.

    Computed with :func:`rodimus_lab.ddts.ddts_gates` (through the logits), so the picture is
    the library's own equation. ``observed``: gates of a model (a dict with g, tau, log_alpha,
    alpha_hat [T, n], e.g. ``probe(...).gates[0]``) drawn as points coloured by their τ.
    """
    taus = [float(t) for t in np.atleast_1d(np.asarray(taus, dtype=np.float64))]
    if not taus or any(not 0.0 < t <= 1.0 for t in taus):
        raise ValueError(f"taus must be temperatures in (0, 1], got {taus}")
    lo, hi = g_range
    if not 0 < lo < hi:
        raise ValueError(f"g_range must be (low, high) with 0 < low < high, got {g_range}")
    g = torch.logspace(np.log10(lo), np.log10(hi), points, dtype=torch.float64)
    g_logits = g + torch.log(-torch.expm1(-g))                      # softplus⁻¹(g)
    fig = make_subplots(rows=1, cols=2, subplot_titles=["α = e<sup>−τg</sup>  (decay, keep)", "α̂ = g^τ  (input, write)"])
    for i, tau in enumerate(taus):
        tau_t = torch.tensor(tau, dtype=torch.float64)
        tau_logits = torch.full_like(g, float(torch.logit(tau_t)) if tau < 1 else 40.0)   # sigmoid(40) = 1
        log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
        color = TEMPLATE.layout.colorway[i % len(TEMPLATE.layout.colorway)]
        for col, y in ((1, log_alpha.exp()), (2, alpha_hat)):
            fig.add_trace(go.Scatter(x=g.numpy(), y=y.numpy(), name=f"τ = {tau:g}", legendgroup=f"tau{i}",
                                     showlegend=col == 1, line=dict(color=color)), row=1, col=col)
    if observed is not None:
        _add_observed(fig, observed, max_observed)
    fig.update_xaxes(type="log", title_text="g")
    fig.update_yaxes(title_text="α", row=1, col=1)
    fig.update_yaxes(title_text="α̂", type="log", row=1, col=2)
    # legend below the panels, so that the τ colour bar of observed gates has the right margin to itself
    fig.update_layout(template=TEMPLATE, title=title, height=500, margin=dict(b=110),
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, xanchor="left"))
    return fig


def gate_family(gates: dict, *, max_points: int = 2000,
                title: str = "The gate family on one plane: forget (−ln α) vs write (α̂)") -> go.Figure:
    """Each model's gates as points (−ln α, α̂), one colour per model, both axes logarithmic.

    gates: name → dict with ``log_alpha`` and ``alpha_hat`` [T, n] (e.g. ``probe(...).gates[0]`` of
    models built with different ``ModelConfig.gate``). Where α = 1 exactly (no decay) the point sits
    at −ln α = 1e−6. The curves of the coupled gates are drawn for reference: α̂ = 1 − α (HGRN2) and
    α̂ = −ln α (τ = 1: Mamba's (e^{−Δ}, Δ)).
    """
    if not isinstance(gates, dict) or not gates:
        raise TypeError("gates must be a non-empty dict name → gates dict (log_alpha, alpha_hat)")
    fig = go.Figure()
    for i, (name, g) in enumerate(gates.items()):
        panels = _panels(g)
        if "alpha_hat" not in panels or "alpha" not in panels:
            raise ValueError(f"gates[{name!r}] needs log_alpha (or alpha) and alpha_hat")
        forget = np.maximum(-np.log(panels["alpha"].reshape(-1)), FORGET_FLOOR)
        write = panels["alpha_hat"].reshape(-1)
        keep = np.linspace(0, forget.size - 1, min(max_points, forget.size)).astype(int)
        fig.add_trace(go.Scatter(x=forget[keep], y=write[keep], mode="markers", name=name,
                                 marker=dict(size=5, opacity=0.6,
                                             color=TEMPLATE.layout.colorway[i % len(TEMPLATE.layout.colorway)])))
    x = np.logspace(-6, 1, 200)
    for label, y, dash in (("α̂ = 1 − α  (HGRN2)", -np.expm1(-x), "dot"), ("α̂ = −ln α  (τ = 1, Mamba)", x, "dash")):
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=label, line=dict(color="#888888", dash=dash, width=1)))
    fig.update_xaxes(type="log", title_text="−ln α  (forget: 0 keeps everything)")
    fig.update_yaxes(type="log", title_text="α̂  (write)")
    fig.update_layout(template=TEMPLATE, title=title, height=480)
    return fig


def _add_observed(fig, gates: dict, max_points: int) -> None:
    """A model's (g, α) and (g, α̂) per token and state dim, coloured by τ."""
    panels = _panels(gates)
    missing = [k for k in ("alpha", "alpha_hat", "tau", "g") if k not in panels]
    if missing:
        raise ValueError(f"observed gates need {missing} (this gate ablation has no tempered pair to draw)")
    flat = {k: v.reshape(-1) for k, v in panels.items()}
    keep = np.linspace(0, flat["g"].size - 1, min(max_points, flat["g"].size)).astype(int)
    marker = dict(size=4, opacity=0.5, color=flat["tau"][keep], cmin=0, cmax=1, colorscale=SEQUENTIAL,
                  colorbar=dict(title="τ", thickness=12, x=1.02, xanchor="left"))
    for col, key in ((1, "alpha"), (2, "alpha_hat")):
        fig.add_trace(go.Scatter(x=flat["g"][keep], y=flat[key][keep], mode="markers", name="model's gates",
                                 showlegend=col == 1, marker=marker), row=1, col=col)
