"""``TrainingDashboard``: a Trainer callback that draws training live in a FigureWidget.

Loss and evaluation accuracy (or loss) per run, redrawn at most every ``min_interval`` seconds
inside ``batch_update`` (one message per redraw). Every ``probe_every`` steps it probes a fixed
input and keeps the DDTS gates (and the attention maps of Rodimus+/Transformer layers); a slider
over those snapshots shows them live and afterwards, so you watch selection emerge.

    dash = TrainingDashboard(probe_input=test.inputs[0], tokens=roles)
    display(dash)
    Trainer(model, train, test, config, callbacks=[dash]).fit()
"""

from __future__ import annotations

import math
import time

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .. import viz
from ..train import Callback
from ..viz.style import TEMPLATE
from .common import ErrorBox, figure_widget, guarded, json_safe, with_entry

__all__ = ["TrainingDashboard"]

PANELS = {"loss": "training loss", "eval_loss": "eval loss", "eval_accuracy": "eval accuracy (MQAR)"}


class TrainingDashboard(Callback):
    def __init__(self, probe_input: torch.Tensor | None = None, *, tokens=None, probe_every: int = 25,
                 layer: int = 0, min_interval: float = 0.5, title: str = "Training"):
        if probe_every < 1:
            raise ValueError(f"probe_every must be an int ≥ 1, got {probe_every!r}")
        self.probe_input, self.tokens = probe_input, tokens
        self.probe_every, self.layer, self.min_interval = probe_every, layer, min_interval
        self.errors = ErrorBox()
        self.figure = go.FigureWidget(make_subplots(rows=1, cols=len(PANELS), subplot_titles=list(PANELS.values())))
        self.figure.update_layout(template=TEMPLATE, title=title, height=380, legend=dict(orientation="h", y=-0.2))
        self.figure.update_xaxes(title_text="step")
        self.curves: dict[str, dict[str, tuple[list, list]]] = {}   # run → metric → (steps, values)
        self.snapshots: dict[str, list[dict]] = {}                   # run → [{step, gates, attention}]
        self.run: str | None = None
        self._snapshot_pending = False
        self._last_draw = float("-inf")   # the first step is drawn at once
        # continuous_update=False: the browser then sends only what a person picks, never an echo
        # of a value it clamped while the kernel was moving the slider to the newest snapshot
        self.snapshot_slider = widgets.IntSlider(value=0, min=0, max=0, description="snapshot", disabled=True,
                                                 continuous_update=False)
        self.snapshot_label = widgets.Label("gates: no snapshot yet")
        self.gate_box = widgets.Box()        # holds the gate FigureWidget once the first snapshot exists
        self.attention_box = widgets.Box()
        self.snapshot_slider.observe(self._on_snapshot, names="value")
        self.widget = widgets.VBox([self.errors, self.figure,
                                    widgets.HBox([with_entry(self.snapshot_slider), self.snapshot_label]),
                                    self.gate_box, self.attention_box])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------------ runs and curves
    def start_run(self, name: str) -> None:
        """Start drawing a new run (its own colour); later callbacks go to it."""
        if name in self.curves:
            raise ValueError(f"a run named {name!r} is already on the dashboard; pick another name")
        self.run = name
        self.curves[name] = {metric: ([], []) for metric in PANELS}
        self.snapshots[name] = []
        color = TEMPLATE.layout.colorway[(len(self.curves) - 1) % len(TEMPLATE.layout.colorway)]
        with self.figure.batch_update():
            for col, metric in enumerate(PANELS, start=1):
                self.figure.add_trace(go.Scatter(x=[], y=[], name=name, legendgroup=name, showlegend=col == 1,
                                                 mode="lines+markers" if metric != "loss" else "lines",
                                                 line=dict(color=color), meta=[name, metric]), row=1, col=col)

    def add_history(self, name: str, history: list[dict]) -> None:
        """Draw a finished run at once (e.g. one taken from the cache)."""
        self.start_run(name)
        for row in history:
            self._append(row)
        self.redraw()

    def _append(self, metrics: dict) -> None:
        for metric, (xs, ys) in self.curves[self.run].items():
            if metrics.get(metric) is not None:
                xs.append(metrics["step"])
                ys.append(metrics[metric])

    def redraw(self) -> None:
        """Push the curves that grew to the figure in one message, and show the newest snapshot.

        Few, small messages keep the browser responsive while training, so a click on Stop
        reaches the kernel at once.
        """
        with self.figure.batch_update():
            for trace in self.figure.data:
                run, metric = trace.meta
                xs, ys = self.curves[run][metric]
                if len(trace.x or ()) != len(xs):
                    trace.x, trace.y = xs, ys
        if self._snapshot_pending:
            self._snapshot_pending = False
            newest = len(self.snapshots[self.run]) - 1
            shown = self.snapshot_slider.value
            # one message: a browser that got a smaller max alone would clamp the value and send it back
            with self.snapshot_slider.hold_sync():
                self.snapshot_slider.disabled = False
                self.snapshot_slider.max = newest
                self.snapshot_slider.value = newest   # follow the newest snapshot while training
            if shown == newest:                       # no change, so the observer did not draw it
                self._show_snapshot(newest)
        self._last_draw = time.monotonic()

    # ------------------------------------------------------------------ Trainer callbacks
    @guarded
    def on_step(self, metrics: dict, trainer) -> None:
        if self.run is None:
            self.start_run("run")
        self._append(metrics)
        if not math.isfinite(metrics["loss"]):
            trainer.should_stop = True
            raise ValueError(f"the loss became {metrics['loss']} at step {metrics['step']}; training stopped. "
                             "Lower the learning rate and run again.")
        if self.probe_input is not None and (metrics["step"] % self.probe_every == 0 or metrics["step"] == 1):
            self.take_snapshot(trainer.model, metrics["step"])
        if time.monotonic() - self._last_draw >= self.min_interval:
            self.redraw()

    @guarded
    def on_eval(self, metrics: dict, trainer) -> None:
        if self.run is None:
            self.start_run("run")
        self._append(metrics)
        self.redraw()

    @guarded
    def on_end(self, metrics: dict, trainer) -> None:
        snaps = self.snapshots[self.run]
        if self.probe_input is not None and snaps and snaps[-1]["step"] != trainer.step:
            self.take_snapshot(trainer.model, trainer.step)
        self.redraw()

    # ------------------------------------------------------------------ gate snapshots
    def take_snapshot(self, model, step: int) -> None:
        """Probe the fixed input and keep layer ``layer``'s gates and attention weights."""
        result = viz.probe(model, self.probe_input)
        gates = result.gates.get(self.layer)
        snap = {"step": step,
                "gates": None if gates is None else {"log_alpha": gates["log_alpha"], "alpha_hat": gates["alpha_hat"]},
                "attention": result.attention.get(self.layer)}
        self.snapshots[self.run].append(snap)
        if len(self.snapshots[self.run]) == 1:   # a new run: new figures (its sizes may differ)
            self._build_snapshot_figures(snap)
        self._snapshot_pending = True            # shown at the next (throttled) redraw

    def _build_snapshot_figures(self, snap: dict) -> None:
        title = f"{self.run}: layer {self.layer}"
        self.gate_box.children = [] if snap["gates"] is None else [
            figure_widget(viz.gate_heatmaps(snap["gates"], self.tokens, title=f"{title} DDTS gates"))]
        self.attention_box.children = [] if snap["attention"] is None else [
            figure_widget(viz.head_maps(snap["attention"], self.tokens, title=f"{title} attention per head"))]

    @guarded
    def _on_snapshot(self, change) -> None:
        self._show_snapshot(change["new"])

    def _show_snapshot(self, index: int) -> None:
        snaps = self.snapshots.get(self.run) or []
        if not 0 <= index < len(snaps):
            return
        snap = snaps[index]
        self.snapshot_label.value = f"{self.run}: step {snap['step']}"
        if self.gate_box.children:
            fig = self.gate_box.children[0]
            # the panels as viz draws them (α as −ln α on a log scale, with its colour-bar ticks)
            drawn = viz.gate_heatmaps(snap["gates"], self.tokens)
            with fig.batch_update():
                for trace, new in zip(fig.data, drawn.data):
                    trace.update(z=json_safe(new.z), customdata=new.customdata, colorbar=new.colorbar)
        if self.attention_box.children:
            fig = self.attention_box.children[0]
            heatmaps = [t for t in fig.data if t.type == "heatmap"]
            with fig.batch_update():
                for trace, w in zip(heatmaps, snap["attention"]):
                    trace.z = json_safe(w, blank_zeros=True)
