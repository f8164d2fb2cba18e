"""Decoding memory vs context length, computed from model configs (:func:`rodimus_lab.cache_bytes`)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..config import ModelConfig
from ..memory import cache_bytes
from .style import new_figure

__all__ = ["memory_vs_context"]


def memory_vs_context(configs: dict, context_lens=None, *, bytes_per_element: int = 2,
                      title: str = "Decoding memory per sequence vs context length") -> go.Figure:
    """One line per config: bytes of KV cache / state / state + window after each context length.

    configs: {label: ModelConfig}. A Transformer grows linearly, a Rodimus layer stays flat,
    a Rodimus+ layer grows until its window is full and then stays flat. Log-log axes.
    """
    if not isinstance(configs, dict) or not configs:
        raise ValueError("configs must be a non-empty dict {label: ModelConfig}")
    for label, config in configs.items():
        if not isinstance(config, ModelConfig):
            raise TypeError(f"configs[{label!r}] must be a ModelConfig, got {type(config).__name__}")
    lens = np.unique(np.geomspace(1, 2 ** 17, 120).astype(int)) if context_lens is None else np.asarray(context_lens)
    if lens.ndim != 1 or lens.size == 0 or (lens < 1).any():
        raise ValueError(f"context_lens must be a 1-D list of lengths ≥ 1, got {context_lens!r}")
    fig = new_figure(title, height=450, xaxis=dict(title="context length (tokens)", type="log"),
                     yaxis=dict(title="bytes per sequence (bf16)", type="log", exponentformat="SI", ticksuffix="B"),
                     legend=dict(orientation="h", y=-0.22))
    for label, config in configs.items():
        y = [cache_bytes(config, int(L), bytes_per_element=bytes_per_element) for L in lens]
        fig.add_trace(go.Scatter(x=lens, y=y, name=str(label), mode="lines",
                                 line=dict(width=2.5),
                                 hovertemplate="%{x} tokens: %{y:.3s}B<extra>" + str(label) + "</extra>"))
    return fig
