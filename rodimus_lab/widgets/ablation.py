"""``AblationLab``: pick a task (an MQAR preset or a WikiText slice), a base config and ablations;
Run trains each variant live.

Variants = one per selected gate (DDTS or an ablation) with every other field from the
controls. Each run is seeded and cached by its config hash: running a finished variant again
is instant. Results accumulate in a table that exports to CSV/JSON.

    lab = AblationLab()
    lab                          # in a notebook: the controls, the live figure, the table
    lab.gates.value = ("ddts", "no_tau"); lab.run()   # the same from code (blocking)
    AblationLab(fast=True)       # starts at FAST: seconds per variant, and the variants still differ
"""

from __future__ import annotations

import csv
import html
import io
import json
import time
from pathlib import Path

import ipywidgets as widgets
import torch

from ..config import ATTN_LAYOUTS, BLOCKS, GATES, ModelConfig
from ..data.mqar import MQAR_PRESETS, mqar_token_labels
from ..data.recipe import DataConfig, build_data, data_vocab_size
from ..runs import ExampleSlice, RunCache, RunResult, run_key, train_run
from ..train import Callback, TrainConfig
from ..data.text import HUB_CONFIGS, DataUnavailableError
from .common import ErrorBox, guarded, run_stepwise, with_entry
from .dashboard import TrainingDashboard

__all__ = ["AblationLab"]

# Presets a laptop trains in seconds to minutes (the long-context ones are for a GPU).
LAB_PRESETS = tuple(name for name in MQAR_PRESETS if MQAR_PRESETS[name].seq_len <= 256)
# The task choices: MQAR presets, a small MQAR task for fast mode, a WikiText slice.
SMALL_MQAR = dict(preset="L64_p4", seq_len=24, num_kv_pairs=3, vocab_size=32)
TASKS = {**{f"MQAR {p}": p for p in LAB_PRESETS}, "MQAR L=24 p=3 (small, fast)": "small", "WikiText slice": "text"}
# Fast mode's controls (RODIMUS_FAST=1 in the notebooks): seconds per variant on a laptop CPU, yet
# enough steps that the variants part ways: measured with these controls, DDTS recalls 0.88 of the
# test queries after 200 steps, τ = 1 (no_tau) 0.32 (chance: 1/32).
FAST = dict(task="small", num_train=2048, num_test=256, d_model=64, n_layers=1, mem_size=16, steps=200,
            batch_size=32, lr=1e-2)


class _Progress(Callback):
    """Moves the lab's progress bar, at most every ``min_interval`` seconds (one message per
    step would flood the browser on fast runs)."""

    def __init__(self, bar: widgets.IntProgress, min_interval: float):
        self.bar, self.min_interval, self._last = bar, min_interval, float("-inf")

    def on_step(self, metrics, trainer):
        if time.monotonic() - self._last >= self.min_interval:
            self.bar.value, self._last = metrics["step"], time.monotonic()

    def on_end(self, metrics, trainer):
        self.bar.value = metrics["step"]


class AblationLab:
    def __init__(self, *, cache_dir: str | None = None, export_dir: str = ".", data_dir: str | None = None,
                 probe_every: int = 10, min_interval: float = 1.0, fast: bool = False):
        """cache_dir: finished runs as JSON (None: memory only); data_dir: WikiText tokenizer and
        token cache (None: $RODIMUS_LAB_DATA or ./data); fast: the controls start at ``FAST``."""
        self.cache = RunCache(cache_dir)
        self.data_dir = data_dir
        self.export_dir = Path(export_dir)
        self.results: list[RunResult] = []
        self.errors = ErrorBox()
        self.probe_every, self.min_interval = probe_every, min_interval
        self._stop_requested = False
        self.task_handle = None     # the asyncio task of a Run started from the button
        self.running = False
        self._data = {}

        style = {"description_width": "110px"}
        dd = lambda options, value, desc: widgets.Dropdown(options=options, value=value, description=desc, style=style)  # noqa: E731
        self.task = dd(list(TASKS.items()), "demo", "task")
        self.text_source = widgets.Text(value="wikitext-2", description="text source", style=style,
                                        placeholder="wikitext-2, wikitext-103 or a local folder")
        self.block_size = widgets.SelectionSlider(options=[32, 64, 128, 256], value=64, description="text block",
                                                  style=style)
        self.num_train = widgets.IntText(value=2048, description="train examples", style=style)
        self.num_test = widgets.IntText(value=256, description="test examples", style=style)
        self.block = dd(BLOCKS, "rodimus", "block")
        self.gates = widgets.SelectMultiple(options=[(f"{g} — {doc}", g) for g, doc in GATES.items()],
                                            value=("ddts",), description="gates (variants)", rows=len(GATES),
                                            style=style, layout=widgets.Layout(width="560px"))
        self.d_model = widgets.SelectionSlider(options=[16, 32, 64, 128, 256], value=64, description="d_model", style=style)
        self.n_layers = widgets.IntSlider(value=2, min=1, max=6, description="layers", style=style)
        self.mem_size = widgets.SelectionSlider(options=[2, 4, 8, 16, 32, 64, 128], value=16,
                                                description="state size n", style=style)
        self.short_conv = widgets.Checkbox(value=True, description="short conv")
        self.key_norm = widgets.Checkbox(value=True, description="key norm")
        self.layout = dd(ATTN_LAYOUTS, "ska", "heads layout")
        self.n_heads = widgets.SelectionSlider(options=[1, 2, 4, 8], value=2, description="query heads", style=style)
        self.n_kv_heads = widgets.SelectionSlider(options=[1, 2, 4, 8], value=1, description="kv heads (gqa)", style=style)
        self.window = widgets.IntSlider(value=16, min=0, max=256, description="window (0: all)", style=style)
        self.two_hop = widgets.Checkbox(value=True, description="two-hop residual")
        self.steps = widgets.IntSlider(value=200, min=1, max=3000, description="steps", style=style)
        self.batch_size = widgets.SelectionSlider(options=[4, 8, 16, 32, 64, 128], value=32, description="batch", style=style)
        self.lr = widgets.FloatLogSlider(value=3e-3, base=10, min=-5, max=-1, description="learning rate", style=style)
        self.seed = widgets.IntText(value=0, description="seed", style=style)

        self.run_button = widgets.Button(description="Run", button_style="success", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.csv_button = widgets.Button(description="Export CSV", icon="download")
        self.json_button = widgets.Button(description="Export JSON", icon="download")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="", layout=widgets.Layout(width="40%"))
        self.status = widgets.Label("ready")
        self.export_status = widgets.HTML(layout=widgets.Layout(flex="1 1 auto"))   # beside its buttons
        # the table is as wide as its columns; the widget is as wide as the cell and scrolls sideways
        self.table = widgets.HTML(self._table_html(), layout=widgets.Layout(width="100%", overflow="auto"))
        self.dashboard = TrainingDashboard(probe_every=probe_every, min_interval=min_interval, title="Ablation runs")

        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.csv_button.on_click(lambda _: self.export("csv"))
        self.json_button.on_click(lambda _: self.export("json"))
        self.block.observe(self._on_controls, names="value")
        self.layout.observe(self._on_controls, names="value")
        self.task.observe(self._on_controls, names="value")
        if fast:
            for name, value in FAST.items():
                getattr(self, name).value = value
        self._on_controls()

        entry = lambda slider: with_entry(slider, "330px")  # noqa: E731 — every slider gets a typed entry
        attention = widgets.VBox([self.layout, entry(self.n_heads), entry(self.n_kv_heads), entry(self.window),
                                  self.two_hop])
        controls = widgets.HBox([
            widgets.VBox([self.task, self.text_source, entry(self.block_size), self.num_train, self.num_test,
                          self.block, entry(self.d_model), entry(self.n_layers), entry(self.mem_size),
                          widgets.HBox([self.short_conv, self.key_norm])]),
            widgets.VBox([attention, entry(self.steps), entry(self.batch_size), entry(self.lr), self.seed]),
        ], layout=widgets.Layout(flex_flow="row wrap", grid_gap="0 24px"))
        buttons = widgets.HBox([self.run_button, self.stop_button, self.progress, self.status])
        exports = widgets.HBox([self.csv_button, self.json_button, self.export_status], layout=widgets.Layout(width="100%"))
        self.widget = widgets.VBox([controls, self.gates, buttons, self.errors, self.dashboard.widget, exports, self.table],
                                   layout=widgets.Layout(width="100%"))

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------------ controls → configs
    @guarded
    def _on_controls(self, _change=None) -> None:
        """Grey out what the chosen block (and task) does not have."""
        block = self.block.value
        self.text_source.disabled = self.block_size.disabled = self.task.value != "text"
        for w in (self.layout, self.n_heads, self.window):
            w.disabled = block == "rodimus"
        self.two_hop.disabled = block != "rodimus_plus"
        self.n_kv_heads.disabled = block == "rodimus" or self.layout.value != "gqa"
        for w in (self.gates, self.mem_size, self.short_conv, self.key_norm):
            w.disabled = block == "transformer"

    def data_config(self) -> DataConfig:
        """The data recipe of the controls (MQAR: examples; text: blocks of ``text block`` tokens)."""
        sizes = dict(num_train=self.num_train.value, num_test=self.num_test.value, data_seed=self.seed.value)
        if self.task.value == "text":
            return DataConfig(task="text", source=self.text_source.value.strip(), block_size=self.block_size.value,
                              data_dir=self.data_dir, **sizes)
        if self.task.value == "small":
            return DataConfig(task="mqar", **SMALL_MQAR, **sizes)
        return DataConfig(task="mqar", preset=self.task.value, **sizes)

    def data(self, config: DataConfig | None = None):
        """(train, eval, tokenizer) of ``config`` (default: the controls'), built once per recipe."""
        config = config if config is not None else self.data_config()
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in self._data:
            try:
                train, test, tokenizer = build_data(config)
            except DataUnavailableError as e:   # point to this widget's own field, not to a command line
                raise DataUnavailableError(self._unreadable_text(config.source, e)) from None
            if config.task == "text":
                train, test = ExampleSlice(train, config.num_train), ExampleSlice(test, config.num_test)
            self._data[key] = (train, test, tokenizer)
        return self._data[key]

    @staticmethod
    def _unreadable_text(source: str, error: Exception) -> str:
        if source in HUB_CONFIGS:
            why = f"{source} comes from the Hugging Face hub, which is not reachable here, and it is not in the local cache"
        elif not Path(source).exists():
            why = f"{source!r} is neither {' nor '.join(sorted(HUB_CONFIGS))} nor an existing folder"
        else:
            why = str(error).split(";")[0]
        return (f"The WikiText slice cannot be read: {why}. Type a local WikiText folder (wiki.train.tokens and "
                "wiki.valid.tokens, or train/validation .txt or .parquet files) into the 'text source' field above, "
                "or pick an MQAR task.")

    def train_config(self) -> TrainConfig:
        steps = self.steps.value
        return TrainConfig(max_steps=steps, batch_size=self.batch_size.value, lr=self.lr.value,
                           warmup_steps=min(50, steps // 10), eval_every=max(10, steps // 10), eval_batch_size=128,
                           seed=self.seed.value, progress=False)

    def variants(self) -> list[tuple[str, ModelConfig]]:
        """(name, config) of every variant the controls select; a bad combination raises ValueError."""
        block, data = self.block.value, self.data_config()
        vocab_size = data_vocab_size(data, self.data(data)[2] if data.task == "text" else None)
        base = dict(vocab_size=vocab_size, d_model=self.d_model.value, n_layers=self.n_layers.value, block=block)
        if block != "transformer":
            base.update(mem_size=self.mem_size.value, short_conv=self.short_conv.value, key_norm=self.key_norm.value)
        if block != "rodimus":
            base.update(attn_layout=self.layout.value, n_heads=self.n_heads.value, window=self.window.value or None,
                        n_kv_heads=self.n_kv_heads.value if self.layout.value == "gqa" else None)
        if block == "rodimus_plus":
            base.update(two_hop=self.two_hop.value)
        if block == "transformer":
            return [(self._name(base), ModelConfig(**base))]
        if not self.gates.value:
            raise ValueError("select at least one gate in 'gates (variants)'")
        return [(self._name({**base, "gate": g}), ModelConfig(**base, gate=g)) for g in self.gates.value]

    @staticmethod
    def _name(fields: dict) -> str:
        parts = [fields["block"]]
        if "gate" in fields:
            parts.append(fields["gate"] + f" n={fields['mem_size']}")
            parts += [label for key, label in (("short_conv", "no conv"), ("key_norm", "no knorm")) if not fields[key]]
        if fields["block"] != "rodimus":
            parts.append(f"{fields['attn_layout']} w={fields['window'] or 'all'}")
        if fields["block"] == "rodimus_plus" and not fields["two_hop"]:
            parts.append("1-hop")
        return " · ".join(parts)

    # ------------------------------------------------------------------ running
    def start(self):
        """What the Run button does: train the selected variants without blocking the kernel
        (an asyncio task in a notebook; runs to the end at once in plain Python)."""
        if self.running:
            self.status.value = "already running: press Stop first"
            return None
        self.task_handle = run_stepwise(self._run_steps())
        return self.task_handle

    def run(self) -> list[RunResult]:
        """Train the selected variants now, blocking (for scripts, tests and headless notebooks)."""
        for _ in self._run_steps():
            pass
        return self.results

    def stop(self) -> None:
        """Stop after the current step (the Stop button)."""
        if self.running:
            self._stop_requested = True
            self.status.value = "stopping after this step…"

    def _run_steps(self):
        """Mark the lab busy now (a second click is refused at once) and return the Run's steps."""
        self.running, self._stop_requested = True, False
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.errors.clear()
        return self._steps()

    def _steps(self):
        """The whole Run as a generator: yields after every training step. Errors end the run and
        are shown in the widget; they never propagate to the kernel."""
        try:
            data, train_config = self.data_config(), self.train_config()
            variants = self.variants()
            for i, (name, config) in enumerate(variants):
                if self._stop_requested:
                    break
                self.status.value = f"variant {i + 1}/{len(variants)}: {name}"
                yield from self._run_one(name, data, config, train_config)
            self.status.value = "stopped" if self._stop_requested else f"done: {len(variants)} variant(s)"
        except Exception as exc:  # noqa: BLE001 — shown, never raised into the kernel
            self.errors.show(exc)
            self.status.value = "failed: see the message above"
        finally:
            self.running = False
            self.run_button.disabled, self.stop_button.disabled = False, True
            self.dashboard.redraw()

    def _run_one(self, name: str, data: DataConfig, config: ModelConfig, train_config: TrainConfig):
        key = run_key(data, config, train_config)
        label = f"{name} #{len(self.results) + 1}"
        cached = self.cache.get(key)
        if cached is not None:
            self.dashboard.add_history(label, cached.history)
            self.progress.max, self.progress.value = train_config.max_steps, train_config.max_steps
            self._add_result(RunResult(**{**cached.__dict__, "name": name, "cached": True}))
            return
        train, test, tokenizer = self.data(data)
        x, y = test[torch.arange(1)]
        self.dashboard.probe_input = x[0]
        self.dashboard.tokens = (mqar_token_labels(x[0], y[0], test.num_kv_pairs) if data.task == "mqar"
                                 else [tokenizer.decode([i]) for i in x[0].tolist()])
        self.dashboard.start_run(label)
        self.progress.max, self.progress.value = train_config.max_steps, 0
        callbacks = [self.dashboard, _Progress(self.progress, self.min_interval)]
        result = yield from train_run(name, data, config, train_config, callbacks, data=(train, test),
                                      should_stop=lambda: self._stop_requested)
        self.cache.put(result)
        self._add_result(result)

    def _add_result(self, result: RunResult) -> None:
        self.results.append(result)
        self.table.value = self._table_html()

    # ------------------------------------------------------------------ results
    def rows(self) -> list[dict]:
        return [r.row() for r in self.results]

    def _table_html(self) -> str:
        rows = self.rows()
        if not rows:
            return "<i>results appear here after a run</i>"
        head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
        return (f'<table class="rodimus-results" style="border-collapse:collapse;font-size:12px;white-space:nowrap" '
                f'border="1"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')

    def to_csv(self) -> str:
        rows = self.rows()
        out = io.StringIO()
        if rows:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return out.getvalue()

    def to_json(self) -> str:
        """Every result with its configs and full history (the cache file format)."""
        return json.dumps([r.to_json() for r in self.results], indent=1)

    @guarded
    def export(self, kind: str) -> Path:
        """Write ``ablation_results.csv`` (the table) or ``.json`` (configs and histories) to export_dir."""
        if kind not in ("csv", "json"):
            raise ValueError(f"export kind must be 'csv' or 'json', got {kind!r}")
        self.export_dir.mkdir(parents=True, exist_ok=True)
        path = self.export_dir / f"ablation_results.{kind}"
        path.write_text(self.to_csv() if kind == "csv" else self.to_json())
        self.export_status.value = (f'<span style="color:#1b5e20">✓ wrote <code style="word-break:break-all">'
                                    f"{html.escape(str(path.resolve()))}</code> ({len(self.results)} runs)</span>")
        return path
