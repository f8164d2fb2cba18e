"""What every widget shares: a readable error box, guarded callbacks, and a stepwise runner
that keeps the kernel responsive while it trains.

A Jupyter kernel is single-threaded: while a cell (or a callback) runs, no button click is
processed. So long work is written as a generator that yields after every small piece, and
:func:`run_stepwise` drives it from an asyncio task in the kernel's own event loop (not a
thread), handing control back between pieces — Stop and the sliders stay live, and every
widget update still happens on the main thread.
"""

from __future__ import annotations

import asyncio
import functools
import html
import traceback
from collections.abc import Iterator

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from ..train import TrainingDiverged

__all__ = ["ErrorBox", "TrainingDiverged", "guarded", "run_stepwise", "readable", "json_safe", "figure_widget",
           "with_entry"]


def readable(exc: BaseException) -> str:
    """One or two sentences a student can act on."""
    if isinstance(exc, torch.OutOfMemoryError):
        return ("Out of memory: the model or batch does not fit. Lower the batch size, d_model, the number "
                "of layers or the sequence length, then run again.")
    if isinstance(exc, TrainingDiverged):
        return f"{exc} Lower the learning rate or turn on gradient clipping, then run again."
    return f"{type(exc).__name__}: {exc}"


class ErrorBox(widgets.HTML):
    """Shows the last error of a widget (empty when all is well); the traceback folds away."""

    def __init__(self, **kwargs):
        super().__init__(value="", **kwargs)
        self.last_error: BaseException | None = None

    def show(self, exc: BaseException) -> None:
        self.last_error = exc
        trace = html.escape("".join(traceback.format_exception(exc)), quote=False)
        self.value = (f'<div style="color:#b00020;border-left:4px solid #b00020;padding:4px 8px">'
                      f"<b>{html.escape(readable(exc), quote=False)}</b>"
                      f"<details><summary>details</summary><pre style='font-size:11px'>{trace}</pre></details></div>")

    def clear(self) -> None:
        self.last_error = None
        self.value = ""


def guarded(method):
    """Run a widget callback; any exception goes to ``self.errors`` (an ErrorBox), never to the kernel."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 — a callback must never kill the kernel
            self.errors.show(exc)
            return None

    return wrapper


LOOP_TURNS_PER_STEP = 20


def run_stepwise(steps: Iterator) -> asyncio.Task | None:
    """Drive ``steps`` to its end, yielding to the event loop after every item.

    In a Jupyter kernel (a running asyncio loop) this schedules a task and returns it at once;
    without a running loop (plain Python, tests) it runs everything now and returns None.
    ``steps`` must handle its own errors (an error would otherwise end up in the task).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        for _ in steps:
            pass
        return None

    async def drive():
        for _ in steps:
            # Let the kernel process widget messages (Stop, sliders, plotly's replies). One incoming
            # message takes several loop iterations (shell thread → main loop → dispatch), so
            # a single sleep(0) per step lets a backlog build up on fast steps; idle turns cost µs.
            for _ in range(LOOP_TURNS_PER_STEP):
                await asyncio.sleep(0)

    return loop.create_task(drive())


def with_entry(slider: widgets.widget_description.DescriptionWidget, width: str = "400px") -> widgets.HBox:
    """``slider`` with a typed entry beside it, both showing one value: a number box (bounded like the
    slider) for an Int/Float slider, a dropdown of the same options for a SelectionSlider. A drag is
    coarse on a wide range (1…3000 in 200 px); typing 250 is exact."""
    slider.layout.width = width
    slider.readout = False   # the entry shows the value
    if isinstance(slider, widgets.SelectionSlider):
        entry = widgets.Dropdown(options=slider.options, value=slider.value)
    elif isinstance(slider, widgets.FloatLogSlider):
        entry = widgets.BoundedFloatText(value=slider.value, min=slider.base ** slider.min, max=slider.base ** slider.max)
    elif isinstance(slider, widgets.FloatSlider):
        entry = widgets.BoundedFloatText(value=slider.value, min=slider.min, max=slider.max, step=slider.step)
    else:
        entry = widgets.BoundedIntText(value=slider.value, min=slider.min, max=slider.max)
        widgets.link((slider, "min"), (entry, "min"))
        widgets.link((slider, "max"), (entry, "max"))
    entry.layout.width = "90px"
    entry.disabled = slider.disabled
    widgets.link((slider, "value"), (entry, "value"))
    widgets.link((slider, "disabled"), (entry, "disabled"))
    box = widgets.HBox([slider, entry])
    box.entry = entry
    return box


def json_safe(z, blank_zeros: bool = False) -> list:
    """A matrix as nested lists with None where it is NaN (or 0, with ``blank_zeros``).

    A FigureWidget sends 2-D data as JSON, which has no NaN (the browser would drop the message);
    plotly draws None as a gap.
    """
    a = z.detach().cpu().double().numpy() if isinstance(z, torch.Tensor) else np.asarray(z, dtype=np.float64)
    gap = np.isnan(a) | ((a == 0) if blank_zeros else False)
    return np.where(gap, None, a).tolist()


def figure_widget(fig: go.Figure) -> go.FigureWidget:
    """A live FigureWidget of a static :mod:`rodimus_lab.viz` figure, its heatmaps made JSON-safe."""
    fig = go.Figure(fig)   # a copy; made safe before the widget sends its first state
    for trace in fig.data:
        if trace.type == "heatmap" and trace.z is not None:
            trace.z = json_safe(trace.z)
    return go.FigureWidget(fig)
