"""One look for every rodimus-lab figure, and the argument checks the figure functions share.

Figures are static ``plotly.graph_objects.Figure`` objects: they render in JupyterLab through
plotly's own mimetype (no CDN) and export to PNG with kaleido (``docs/build_figures.py``).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch

__all__ = ["TEMPLATE", "COLORS", "SEQUENTIAL", "DIVERGING", "as_array", "new_figure", "token_axis", "use_notebook_renderer"]

COLORS = {
    "rodimus": "#1f77b4",
    "rodimus_plus": "#d62728",
    "transformer": "#7f7f7f",
    "mamba2": "#2ca02c",
    "mamba": "#9467bd",
    "hgrn2": "#8c564b",
    "gla": "#e377c2",
    "paper": "#444444",
    "accent": "#ff7f0e",
}
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"

TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.update(
    font=dict(family="Inter, Helvetica, Arial, sans-serif", size=13),
    title=dict(x=0.02, xanchor="left", font=dict(size=16)),
    margin=dict(l=60, r=30, t=70, b=55),
    colorway=list(COLORS.values()),
    hoverlabel=dict(namelength=-1),
)
pio.templates["rodimus"] = TEMPLATE


def new_figure(title: str, **layout) -> go.Figure:
    """An empty figure in the rodimus style."""
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=title, **layout)
    return fig


def as_array(x, name: str, ndim: int | tuple[int, ...], layout: str) -> np.ndarray:
    """A tensor or array as float64 numpy with a checked number of dims.

    ``layout`` names the expected dims in the error, e.g. "[T, n]".
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    elif not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a tensor or array {layout}, got {type(x).__name__}") from None
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if x.ndim not in ndims:
        raise ValueError(f"{name} must be {layout} ({' or '.join(map(str, ndims))}-D), got shape {tuple(x.shape)}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); nothing to draw")
    return x.astype(np.float64)


def token_axis(tokens, length: int, name: str = "tokens", axis: str = "x") -> dict | None:
    """Tick settings that label positions 0..length−1 with tokens (None: plain positions).

    Positions stay numeric, so repeated tokens do not collapse onto one category. x labels stand
    upright (-90°) so that neighbours never overlap; y labels read horizontally.
    """
    if tokens is None:
        return None
    tokens = [str(t) for t in tokens]
    if len(tokens) != length:
        raise ValueError(f"{name} has {len(tokens)} labels but the data has {length} positions")
    step = max(1, length // 48)   # keep labels legible on long sequences
    return dict(tickmode="array", tickvals=list(range(0, length, step)), ticktext=[_printable(t) for t in tokens[::step]],
                tickangle=-90 if axis == "x" else 0, tickfont=dict(size=10 if length <= 32 else 8), showgrid=False)


def _printable(token: str) -> str:
    return token.replace("\n", "⏎").replace(" ", "␣")


def use_notebook_renderer() -> None:
    """Show figures through plotly's mimetype: JupyterLab and VS Code draw it, no CDN needed."""
    pio.renderers.default = "plotly_mimetype"
