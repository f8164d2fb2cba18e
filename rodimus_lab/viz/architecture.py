"""The Rodimus* block drawn from a ModelConfig (after the paper's Fig. 2): the residual wiring of
one layer and, for blocks with a Rodimus flow, what happens inside it. Every size on the
drawing is read from the config, so the picture changes when the config does."""

from __future__ import annotations

import plotly.graph_objects as go

from ..config import ModelConfig
from .style import TEMPLATE

__all__ = ["block_diagram"]

FILL = {"stream": "#f2f2f2", "norm": "#fdf1d6", "mixer": "#d6e6f5", "attn": "#f8d9d9", "ffn": "#dcefd9",
        "add": "#ffffff", "op": "#eeeaf6"}


class _Diagram:
    """Boxes (rectangles with text) and arrows (polylines) in data coordinates."""

    def __init__(self):
        self.fig = go.Figure()
        self.boxes: dict[str, tuple[float, float, float, float]] = {}

    def box(self, name, x, y, text, kind, w=1.5, h=0.62):
        self.boxes[name] = (x, y, w, h)
        shape = "circle" if kind == "add" else "rect"
        self.fig.add_shape(type=shape, x0=x - w / 2, x1=x + w / 2, y0=y - h / 2, y1=y + h / 2,
                           line=dict(color="#555555", width=1.2), fillcolor=FILL[kind], layer="below", name=name)
        self.fig.add_annotation(x=x, y=y, text=text, showarrow=False, font=dict(size=11), name=name)

    def arrow(self, *points):
        """A polyline through points (x, y) or box names (a box's top/bottom edge is used)."""
        pts = [self._anchor(p, i, points) for i, p in enumerate(points)]
        xs, ys = zip(*pts)
        self.fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#555555", width=1.3),
                                      hoverinfo="skip", showlegend=False))
        (x0, y0), (x1, y1) = pts[-2], pts[-1]
        self.fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                                showarrow=True, arrowhead=2, arrowsize=1.1, arrowwidth=1.3, arrowcolor="#555555",
                                standoff=0)

    def _anchor(self, p, i, points):
        if not isinstance(p, str):
            return p
        x, y, w, h = self.boxes[p]
        other = points[i + 1] if i == 0 else points[i - 1]
        oy = other[1] if not isinstance(other, str) else self.boxes[other][1]
        if abs(oy - y) < 1e-9:   # horizontal neighbour: use the side
            ox = other[0] if not isinstance(other, str) else self.boxes[other][0]
            return (x + w / 2, y) if ox > x else (x - w / 2, y)
        return (x, y + h / 2) if oy > y else (x, y - h / 2)


def _layer(d: _Diagram, c: ModelConfig) -> float:
    """The residual wiring of one layer; the stream runs up the line x = 0. Returns the top y."""
    d.box("x_in", 0, 0, "X  [T, d = %d]" % c.d_model, "stream", w=1.7)
    y, last = 0.0, "x_in"

    def residual(branch, top_y, name):
        nonlocal last
        d.box(name, 0, top_y, "⊕", "add", w=0.42, h=0.42)
        d.arrow(last, name)
        d.arrow(branch, (2, top_y), name)
        last = name

    if c.has_mixer:
        d.box("mix_norm", 2, y + 1, "RMSNorm", "norm")
        d.box("mixer", 2, y + 2, f"Rodimus flow (DDTS)<br>state n×m = {c.mem_size}×{c.d_inner}", "mixer", w=1.9, h=0.7)
        d.arrow((0, y + 0.45), (2, y + 0.45), "mix_norm")
        d.arrow("mix_norm", "mixer")
        residual("mixer", y + 3, "add_mix")
        y += 3
    if c.has_attention:
        name = {"ska": "SKA", "mha": "MHA", "gqa": "GQA", "mqa": "MQA"}[c.layout]
        window = "full causal" if c.window is None else f"window {c.window} keys"
        heads = f"{c.num_heads} q / {c.num_key_heads} k / {c.num_value_heads} v heads, d_h = {c.head_dim}"
        d.box("attn_norm", 2, y + 1, "RMSNorm", "norm")
        d.box("attn", 2, y + 2, f"{'SW-' if c.window else ''}{name} + RoPE<br>{heads}<br>{window}", "attn", w=2.5, h=0.85)
        d.arrow((0, y + 0.45), (2, y + 0.45), "attn_norm")
        d.arrow("attn_norm", "attn")
        ffn_text = f"FFN (SwiGLU)<br>{c.d_model} → {c.ffn_dim} → {c.d_model}"
        if c.block == "rodimus_plus" and c.two_hop:
            # two-hop: the attention output is added to a COPY of the stream that only feeds the FFN
            d.box("hop", 2, y + 3, "⊕", "add", w=0.42, h=0.42)
            d.arrow("attn", "hop")
            d.arrow((0, y + 3), "hop")
            d.box("ffn_norm", 2, y + 4, "RMSNorm", "norm")
            d.box("ffn", 2, y + 5, ffn_text, "ffn", w=1.9, h=0.7)
            d.arrow("hop", "ffn_norm")
            d.arrow("ffn_norm", "ffn")
            d.fig.add_annotation(x=3.35, y=y + 3, text="two-hop:<br>attention reaches<br>the stream only<br>through the FFN",
                                 showarrow=False, font=dict(size=10, color="#a33"), align="left")
            residual("ffn", y + 6, "add_ffn")
            y += 6
        else:
            residual("attn", y + 3, "add_attn")
            y += 3
            d.box("ffn_norm", 2, y + 1, "RMSNorm", "norm")
            d.box("ffn", 2, y + 2, ffn_text, "ffn", w=1.9, h=0.7)
            d.arrow((0, y + 0.45), (2, y + 0.45), "ffn_norm")
            d.arrow("ffn_norm", "ffn")
            residual("ffn", y + 3, "add_ffn")
            y += 3
    d.box("x_out", 0, y + 1, "to the next layer", "stream", w=1.7)
    d.arrow(last, "x_out")
    return y + 1


def _flow(d: _Diagram, c: ModelConfig, x0: float) -> None:
    """Inside the Rodimus flow (docs/equations.md §2), drawn in the column starting at x0."""
    m, n = c.d_inner, c.mem_size
    X = lambda dx: x0 + dx  # noqa: E731 (a column offset)
    d.box("f_in", X(2), 0, "normed x  [T, %d]" % c.d_model, "stream", w=1.9)
    d.box("fc", X(2), 1, f"W_fc: {c.d_model} → 2×{m}<br>[x′, z]", "op", w=1.9, h=0.7)
    conv = f"causal conv{c.conv_size} + SiLU → x̃" if c.short_conv else "SiLU → x̃ (no conv)"
    d.box("conv", X(2), 2.2, conv, "op", w=1.75)
    d.box("value", X(0), 3.4, f"v = β̂ ⊙ x′<br>β̂ low rank ℓ = {c.low_rank}", "op", w=1.7, h=0.75)
    d.box("qk", X(2), 3.4, f"q, k: {m} → {n}<br>k̂ = k/‖k‖" if c.key_norm else f"q, k: {m} → {n}", "op", w=1.5, h=0.75)
    gate = {"ddts": "g = softplus(·), τ = σ(·)<br>α = e<sup>−τg</sup>, α̂ = g<sup>τ</sup>"}.get(c.gate, f"gate: {c.gate}")
    d.box("gates", X(4), 3.4, gate, "op", w=1.8, h=0.75)
    d.box("ddts", X(2), 4.8, f"DDTS  S_t = diag(α_t) S_{{t−1}} + (α̂_t⊙k̂_t)ᵀ v_t<br>o_t = q_t S_t / √{n}    state {n}×{m}",
          "mixer", w=4.6, h=0.8)
    d.box("resid", X(2), 6.0, "+ d ⊙ x̃", "op", w=1.2)
    d.box("gate_z", X(2), 7.0, "⊙ SiLU(z) → RMSNorm", "op", w=2.0)
    d.box("out", X(2), 8.0, f"W_out: {m} → {c.d_model}", "op", w=1.7)
    d.arrow("f_in", "fc")
    d.arrow("fc", "conv")
    d.arrow((X(1.4), 1.35), (X(0), 1.35), "value")
    d.arrow("conv", "qk")
    d.arrow((X(2.6), 2.51), (X(2.6), 2.75), (X(4), 2.75), "gates")
    d.arrow("qk", "ddts")
    d.arrow("value", (X(0), 4.4))
    d.arrow("gates", (X(4), 4.4))
    d.arrow("ddts", "resid")
    d.arrow("conv", (X(5.05), 2.2), (X(5.05), 6.0), "resid")      # around the DDTS box
    d.arrow("fc", (X(5.35), 1.0), (X(5.35), 7.0), "gate_z")
    d.arrow("resid", "gate_z")
    d.arrow("gate_z", "out")
    d.fig.add_annotation(x=X(5.35), y=4.0, text="z", showarrow=False, xshift=8, font=dict(size=11))


def block_diagram(config: ModelConfig, *, detail: bool = True, title: str | None = None) -> go.Figure:
    """One layer of the model ``config`` describes, with every size taken from the config.

    detail: also draw the inside of the Rodimus flow (blocks "rodimus" and "rodimus_plus").
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a rodimus_lab.ModelConfig, got {type(config).__name__}")
    d = _Diagram()
    top = _layer(d, config)
    right = 4.2
    if detail and config.has_mixer:
        _flow(d, config, x0=5.6)
        d.fig.add_annotation(x=7.6, y=8.75, text="<b>inside the Rodimus flow</b>", showarrow=False)
        d.fig.add_shape(type="line", x0=4.6, x1=4.6, y0=-0.5, y1=max(top, 8.5) + 0.3,
                        line=dict(color="#bbbbbb", dash="dot"))
        right, top = 11.3, max(top, 8.6)
    names = {"rodimus": "Rodimus", "rodimus_plus": "Rodimus+" + ("" if config.two_hop else " (one-hop)"),
             "transformer": "Transformer++"}
    title = title or (f"{names[config.block]} layer ×{config.n_layers}: d = {config.d_model}, "
                      f"vocab {config.vocab_size}")
    # A fixed size (boxes hold text), narrow enough for a notebook's output area (~1000 px): wider figures
    # were clipped at the right edge.
    d.fig.update_layout(template=TEMPLATE, title=title, showlegend=False, plot_bgcolor="white",
                        width=int(78 * (right + 1.6)), height=int(70 * (top + 2)), margin=dict(l=10, r=10, t=60, b=10),
                        xaxis=dict(range=[-1.1, right + 0.5], visible=False),
                        yaxis=dict(range=[-0.6, top + 0.6], visible=False))
    return d.fig
