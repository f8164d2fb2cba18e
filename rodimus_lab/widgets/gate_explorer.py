"""``GateExplorer``: step through a sequence token by token and see what DDTS does there.

For the selected token: α (keep), α̂ (write) and τ per state dim, the state's norm over time and
its singular values, and (Rodimus+) each head's SKA attention row. Hovering a token in the gate
heatmap selects it; Play steps through the tokens.

    GateExplorer(model, {"example": ids}, tokens={"example": labels})
    GateExplorer(model, {"greeting": "hello world"}, tokenizer=tok)     # plus a free-text box
"""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .. import viz
from ..viz.style import COLORS, TEMPLATE
from .common import ErrorBox, figure_widget, guarded, with_entry

__all__ = ["GateExplorer"]

TYPE_YOUR_OWN = "(type your own)"


class GateExplorer:
    def __init__(self, model, inputs: dict, *, tokenizer=None, tokens: dict | None = None, layer: int = 0):
        if not isinstance(inputs, dict) or not inputs:
            raise ValueError("inputs must be a non-empty dict {name: token ids [T] or text (with tokenizer)}")
        mixers = [i for i, layer_ in enumerate(model.layers) if hasattr(layer_, "mixer")]
        if not mixers:
            raise ValueError("GateExplorer needs a model with DDTS layers (block 'rodimus' or 'rodimus_plus')")
        self.model, self.inputs, self.tokenizer, self.labels = model, inputs, tokenizer, tokens or {}
        self.errors = ErrorBox()
        names = list(inputs) + ([TYPE_YOUR_OWN] if tokenizer is not None else [])
        self.source = widgets.Dropdown(options=names, value=names[0], description="input")
        self.text = widgets.Text(placeholder="type a text and press Enter", layout=widgets.Layout(width="50%"),
                                 disabled=True, continuous_update=False)
        self.layer = widgets.Dropdown(options=mixers, value=layer if layer in mixers else mixers[0], description="layer")
        self.token = widgets.IntSlider(value=0, min=0, max=0, description="token", continuous_update=True)
        self.play = widgets.Play(interval=400, min=0, max=0, step=1, description="play")
        widgets.jslink((self.play, "value"), (self.token, "value"))
        widgets.jslink((self.token, "max"), (self.play, "max"))
        self.readout = widgets.HTML()
        self.figures = widgets.VBox()
        self.source.observe(self._on_source, names="value")
        self.text.observe(self._on_text, names="value")
        self.layer.observe(self._on_layer, names="value")
        self.token.observe(self._on_token, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.source, self.text, self.layer]),
                                    widgets.HBox([self.play, with_entry(self.token, "300px"), self.readout]), self.errors,
                                    self.figures])
        self._load(inputs[names[0]], self.labels.get(names[0]))

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------------ probing
    def _load(self, source, labels=None) -> None:
        if isinstance(source, str):
            if self.tokenizer is None:
                raise ValueError("a text input needs GateExplorer(..., tokenizer=...)")
            self.result = viz.probe(self.model, text=source, tokenizer=self.tokenizer)
        else:
            self.result = viz.probe(self.model, torch.as_tensor(source))
        self.tokens = list(labels) if labels is not None else self.result.tokens
        T = len(self.result.token_ids)
        with self.token.hold_sync():   # one message, so the browser never clamps and echoes back
            self.token.value = min(self.token.value, T - 1)
            self.token.max = T - 1
        self._build()

    def _build(self) -> None:
        """New figures for this input and layer (their sizes follow T and n)."""
        layer, T = self.layer.value, len(self.tokens)
        gates = self.result.gates[layer]
        self.states = self.result.states(layer)
        self.norms = torch.linalg.matrix_norm(self.states)
        self.singular = viz.singular_values(self.states)
        self.heat = figure_widget(viz.gate_heatmaps(gates, self.tokens, title=f"layer {layer}: DDTS gates"))
        self.heat.add_vline(x=self.token.value, line=dict(color="#ff7f0e", width=2))
        for trace in self.heat.data:
            trace.on_hover(self._on_hover)
        self.per_dim = go.FigureWidget(make_subplots(rows=1, cols=3, subplot_titles=["α (keep)", "α̂ (write)", "τ"]))
        for col in (1, 2, 3):
            self.per_dim.add_trace(go.Bar(x=[], y=[], marker_color=COLORS["rodimus"], showlegend=False), row=1, col=col)
        self.per_dim.update_xaxes(title_text="state dim")
        self.per_dim.update_layout(template=TEMPLATE, height=280, title="the selected token, per state dim")
        self.state_fig = go.FigureWidget(make_subplots(rows=1, cols=2, subplot_titles=["‖S_t‖ over tokens",
                                                                                       "singular values of S_t"]))
        self.state_fig.add_trace(go.Scatter(x=list(range(T)), y=self.norms.tolist(), mode="lines", showlegend=False,
                                            line=dict(color=COLORS["rodimus"])), row=1, col=1)
        self.state_fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", showlegend=False,
                                            marker=dict(size=11, color="#ff7f0e")), row=1, col=1)
        self.state_fig.add_trace(go.Bar(x=[], y=[], showlegend=False, marker_color=COLORS["rodimus_plus"]), row=1, col=2)
        self.state_fig.update_yaxes(type="log", row=1, col=2)
        self.state_fig.update_layout(template=TEMPLATE, height=300)
        children = [self.heat, self.per_dim, self.state_fig]
        self.attn_fig = None
        if layer in self.result.attention:
            H = self.result.attention[layer].shape[0]
            self.attn_fig = go.FigureWidget()
            for h in range(H):
                self.attn_fig.add_trace(go.Scatter(x=list(range(T)), y=[], name=f"head {h}", mode="lines+markers"))
            self.attn_fig.update_layout(template=TEMPLATE, height=300, title="SKA attention row of the selected token",
                                        xaxis=dict(title="key", **(viz.style.token_axis(self.tokens, T) or {})),
                                        yaxis=dict(title="weight", range=[0, 1]))
            children.append(self.attn_fig)
        self.figures.children = children
        self._show(self.token.value)

    # ------------------------------------------------------------------ selecting a token
    def _show(self, t: int) -> None:
        gates = self.result.gates[self.layer.value]
        per_dim = [gates["log_alpha"][t].exp(), gates["alpha_hat"][t], gates["tau"][t] if gates["tau"] is not None else None]
        n = per_dim[0].shape[0]
        with self.heat.batch_update():
            self.heat.layout.shapes[0].update(x0=t, x1=t)
        with self.per_dim.batch_update():
            for trace, values in zip(self.per_dim.data, per_dim):
                trace.x, trace.y = (list(range(n)), values.tolist()) if values is not None else ([], [])
        with self.state_fig.batch_update():
            self.state_fig.data[1].x, self.state_fig.data[1].y = [t], [float(self.norms[t])]
            s = self.singular[t]
            self.state_fig.data[2].x, self.state_fig.data[2].y = list(range(1, len(s) + 1)), s.clamp_min(1e-12).tolist()
        if self.attn_fig is not None:
            rows = self.result.attention[self.layer.value][:, t]
            with self.attn_fig.batch_update():
                for trace, row in zip(self.attn_fig.data, rows):
                    trace.y = row.tolist()
        mean = lambda x: "—" if x is None else f"{float(x.mean()):.3f}"  # noqa: E731
        self.readout.value = (f"<b>{self.tokens[t]!s}</b> (position {t}): mean α = {mean(per_dim[0])}, "
                              f"mean α̂ = {mean(per_dim[1])}, mean τ = {mean(per_dim[2])}, ‖S‖ = {float(self.norms[t]):.3f}")

    @guarded
    def _on_token(self, change) -> None:
        self._show(change["new"])

    @guarded
    def _on_hover(self, _trace, points, _state) -> None:
        if points.xs:
            self.token.value = int(points.xs[0])

    @guarded
    def _on_layer(self, _change) -> None:
        self._build()

    @guarded
    def _on_source(self, change) -> None:
        typed = change["new"] == TYPE_YOUR_OWN
        self.text.disabled = not typed
        if not typed:
            self._load(self.inputs[change["new"]], self.labels.get(change["new"]))

    @guarded
    def _on_text(self, _change) -> None:
        if not self.text.value.strip():
            raise ValueError("the text is empty: type something first")
        self._load(self.text.value)
