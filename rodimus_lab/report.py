"""The demo's report: one self-contained HTML file (plotly.js inlined, no CDN, opens offline).

It holds a summary table, the loss / accuracy curves of the run and the DDTS gates of one test
example — the figures come from :mod:`rodimus_lab.viz`; this module only lays them out.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import torch

from .files import atomic_write
from .viz import gate_heatmaps, probe, training_curves

__all__ = ["gate_figure", "write_report"]


def gate_figure(model, inputs: torch.Tensor, tokens: list[str] | None = None, layer: int = -1, title: str | None = None):
    """Heatmaps of the decay gate α and write gate α̂ of ``layer`` on one sequence ``inputs`` [T]."""
    result = probe(model, inputs)
    layer = layer % len(model.layers)
    if layer not in result.gates:
        raise ValueError(f"layer {layer} has no DDTS gates (block {model.config.block!r})")
    gates = {k: v for k, v in result.gates[layer].items() if k in ("log_alpha", "alpha_hat") and v is not None}
    fig = gate_heatmaps(gates, tokens, title=title or f"DDTS gates of layer {layer} on a test example")
    # a page has room a notebook cell lacks: token labels large enough to read, and the key to them
    fig.update_xaxes(tickfont=dict(size=12))
    fig.update_layout(height=fig.layout.height + 60, margin=dict(b=140))
    if tokens is not None:
        fig.add_annotation(text="tokens: K/V = a key-value pair of the context, Qk→v = a query for key k whose "
                                "answer is v, · = filler", xref="paper", yref="paper", x=0, y=0, yshift=-125,
                           showarrow=False, xanchor="left", font=dict(size=12))
    return fig


# The logged metrics the report draws, with their panel titles.
CURVES = {"loss": "training loss", "eval_loss": "test loss", "eval_accuracy": "test accuracy",
          "check_accuracy": "validation accuracy (early-stopping check)"}


def write_report(path: str | os.PathLike, *, title: str, summary: dict, history: list[dict], figures=()) -> Path:
    """Write the HTML report: ``summary`` as a table, training curves from ``history``, then ``figures``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    curves = [m for m in CURVES if sum(m in r for r in history) >= 2]   # one final evaluation is in the table
    figs = []
    if history and curves:
        fig = training_curves(history, y=curves, title="Training")
        fig.for_each_annotation(lambda a: a.update(text=CURVES.get(a.text, a.text)))   # panel titles in words
        fig.update_layout(showlegend=False)                                              # one run
        figs.append(fig)
    figs += list(figures)
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in summary.items())
    body = [f.to_html(include_plotlyjs=(i == 0), full_html=False) for i, f in enumerate(figs)]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
            "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}</style>"
            f"</head><body><h1>{html.escape(title)}</h1><table>{rows}</table>{''.join(body)}</body></html>")
    return atomic_write(path, page)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
