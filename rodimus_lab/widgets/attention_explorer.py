"""``AttentionExplorer``: MHA, GQA, MQA and SKA side by side on one input, a window slider,
and what each layout must cache while decoding (:func:`rodimus_lab.cache_bytes`).

Every layout's attention layer is built from the same seed and sees the same input, so the
maps differ only by what the heads share. Keys outside the window get weight exactly 0 and
are drawn blank.
"""

from __future__ import annotations

import dataclasses
import html

import ipywidgets as widgets
import torch

from .. import seed_everything, viz
from ..config import ModelConfig
from ..memory import cache_bytes
from ..model import Attention
from .common import ErrorBox, figure_widget, guarded, json_safe, with_entry

__all__ = ["AttentionExplorer"]


class AttentionExplorer:
    def __init__(self, *, d_model: int = 64, n_heads: int = 4, n_kv_heads: int = 2, seq_len: int = 24,
                 window: int = 8, seed: int = 0):
        self.errors = ErrorBox()
        self.layouts = {"MHA": dict(attn_layout="mha"), f"GQA (G={n_kv_heads})": dict(attn_layout="gqa", n_kv_heads=n_kv_heads),
                        "MQA": dict(attn_layout="mqa"), "SKA": dict(attn_layout="ska")}
        self.configs = {name: ModelConfig(block="transformer", d_model=d_model, n_layers=1, n_heads=n_heads, **kw)
                        for name, kw in self.layouts.items()}
        self.modules = {}
        for name, config in self.configs.items():
            seed_everything(seed)                 # the same query projection for every layout
            self.modules[name] = Attention(config).eval()
        seed_everything(seed)
        self.x = torch.randn(1, seq_len, d_model)
        self.window = widgets.IntSlider(value=window, min=0, max=seq_len, description="window (0: all)",
                                        style={"description_width": "110px"})
        self.context = widgets.SelectionSlider(options=[2 ** k for k in range(6, 18)], value=4096,
                                               description="context", style={"description_width": "110px"})
        self.readout = widgets.HTML()
        self.figure = figure_widget(viz.layout_maps(self.maps(), heads=n_heads))
        self.window.observe(self._on_change, names="value")
        self.context.observe(self._on_change, names="value")
        self.widget = widgets.VBox([widgets.HBox([with_entry(self.window, "330px"), with_entry(self.context, "330px")]),
                                    self.errors, self.figure, self.readout])
        self._update()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _window(self) -> int | None:
        return self.window.value or None

    def maps(self) -> dict[str, torch.Tensor]:
        """{layout: attention weights [H, T, T]} at the current window."""
        out = {}
        for name, module in self.modules.items():
            module.config = dataclasses.replace(self.configs[name], window=self._window())
            captured = {}
            handle = module.weights_tap.register_forward_hook(lambda _m, inputs, _o: captured.update(w=inputs[0]))
            try:
                with torch.no_grad():
                    module(self.x)
            finally:
                handle.remove()
            out[name] = captured["w"][0]
        return out

    def cache_table(self) -> list[dict]:
        """Per layout: attention parameters and decoding cache bytes at the chosen context."""
        rows = []
        for name, module in self.modules.items():
            config = dataclasses.replace(self.configs[name], window=self._window())
            rows.append({"layout": name, "params": sum(p.numel() for p in module.parameters()),
                         "cache_bytes": cache_bytes(config, self.context.value)})
        return rows

    def _update(self) -> None:
        maps = self.maps()
        heatmaps = [t for t in self.figure.data if t.type == "heatmap"]
        per_layout = len(heatmaps) // len(maps)
        with self.figure.batch_update():
            for i, w in enumerate(maps.values()):
                for h in range(per_layout):
                    heatmaps[i * per_layout + h].z = json_safe(w[h], blank_zeros=True)
            self.figure.layout.title.text = f"Head layouts, window = {self._window() or 'all'}"
        rows = self.cache_table()
        body = "".join(f"<tr><td>{html.escape(r['layout'])}</td><td>{r['params']:,}</td>"
                       f"<td>{r['cache_bytes']:,}</td></tr>" for r in rows)
        self.readout.value = (f"<table border='1' style='border-collapse:collapse'><tr><th>layout</th><th>parameters</th>"
                              f"<th>cache bytes after {self.context.value:,} tokens (bf16, one layer)</th></tr>{body}</table>")

    @guarded
    def _on_change(self, _change) -> None:
        self._update()
