"""The widgets at the Python level: they build, follow programmatic value changes, train, stop,
cache, export, and show errors instead of raising them. Tiny configs: a few CPU steps each."""

import asyncio
import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from plotly.callbacks import Points

from rodimus_lab import ModelConfig, RodimusLM
from rodimus_lab.train import TrainConfig, Trainer
from rodimus_lab.widgets import AblationLab, AttentionExplorer, GateExplorer, RunCache, TrainingDashboard, run_key
from rodimus_lab import runs as runs_module
from rodimus_lab.data.recipe import DataConfig, build_data


FIXTURES = Path(__file__).resolve().parent / "fixtures"



def tiny_lab(**kwargs) -> AblationLab:
    lab = AblationLab(min_interval=0, probe_every=2, **kwargs)
    lab.num_train.value, lab.num_test.value = 64, 16
    lab.d_model.value, lab.n_layers.value, lab.mem_size.value = 16, 1, 4
    lab.steps.value, lab.batch_size.value = 5, 8
    return lab


def table_rows(lab) -> int:
    return lab.table.value.count("<tr>") - 1   # minus the header


def points(fig, metric="loss") -> int:
    return sum(len(t.x or ()) for t in fig.data if t.meta[1] == metric)


# ---------------------------------------------------------------------------- AblationLab

def test_lab_trains_one_run_per_selected_gate_and_draws_it(tmp_path):
    lab = tiny_lab(export_dir=str(tmp_path))
    lab.gates.value = ("ddts", "retnet")
    results = lab.run()
    assert lab.errors.last_error is None, lab.errors.value
    assert [r.model["gate"] for r in results] == ["ddts", "retnet"]
    assert all(r.status == "done" and r.final["step"] == 5 for r in results)
    assert table_rows(lab) == 2 and lab.progress.value == 5
    fig = lab.dashboard.figure
    assert len(fig.data) == 6 and points(fig) == 10 and points(fig, "eval_accuracy") == points(fig, "eval_loss") == 2
    # gate snapshots of the last run (steps 1, 2, 4 and the end) and a gate figure to show them
    assert [s["step"] for s in lab.dashboard.snapshots[lab.dashboard.run]] == [1, 2, 4, 5]
    assert lab.dashboard.gate_box.children and not lab.dashboard.attention_box.children


def test_rerunning_a_finished_variant_is_a_cache_hit_without_training(tmp_path, monkeypatch):
    lab = tiny_lab(cache_dir=str(tmp_path / "cache"))
    first = lab.run()[0]
    monkeypatch.setattr(runs_module, "Trainer", None)   # any training now would fail
    again = lab.run()[-1]
    assert lab.errors.last_error is None, lab.errors.value
    assert again.cached and again.final == first.final and again.history == first.history
    assert table_rows(lab) == 2 and "(cached)" in lab.table.value
    # a fresh lab finds the run on disk
    other = tiny_lab(cache_dir=str(tmp_path / "cache"))
    assert other.run()[0].cached and other.results[0].final == first.final


def test_changing_a_control_changes_the_run_key():
    lab = tiny_lab()
    task, train = lab.data_config(), lab.train_config()
    (_, config), = lab.variants()
    key = run_key(task, config, train)
    assert key == run_key(task, ModelConfig(**config.to_dict()), TrainConfig(**{**train.to_dict(), "progress": True}))
    lab.mem_size.value = 8
    (_, changed), = lab.variants()
    assert changed.mem_size == 8 and run_key(task, changed, train) != key
    lab.seed.value = 1
    assert run_key(task, config, lab.train_config()) != key and run_key(lab.data_config(), config, train) != key


def test_controls_follow_the_block_and_build_valid_configs():
    lab = tiny_lab()
    assert lab.layout.disabled and lab.window.disabled and lab.two_hop.disabled
    lab.block.value = "rodimus_plus"
    assert not lab.layout.disabled and not lab.two_hop.disabled and lab.n_kv_heads.disabled
    lab.window.value, lab.two_hop.value = 0, False
    (name, config), = lab.variants()
    assert config.window is None and not config.two_hop and config.layout == "ska" and "1-hop" in name
    lab.layout.value = "gqa"
    assert not lab.n_kv_heads.disabled
    lab.block.value = "transformer"
    assert lab.gates.disabled and lab.two_hop.disabled
    (_, config), = lab.variants()
    assert config.block == "transformer" and config.layout == "gqa" and config.n_kv_heads == 1


def test_rodimus_plus_run_shows_attention_snapshots():
    lab = tiny_lab()
    lab.block.value, lab.window.value, lab.steps.value = "rodimus_plus", 8, 2
    lab.run()
    assert lab.errors.last_error is None, lab.errors.value
    fig = lab.dashboard.attention_box.children[0]
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 2                                  # one per query head
    row = heatmaps[0].z[-1]                                    # the last query sees only the window
    assert sum(v is not None for v in row) == 8


@pytest.mark.parametrize("bad, message", [
    (dict(block="rodimus_plus", layout="gqa", n_heads=2, n_kv_heads=4), "n_kv_heads"),
    (dict(gates=()), "select at least one gate"),
    (dict(num_train=-3), "DataConfig.num_train = -3 is invalid"),
])
def test_a_bad_value_is_shown_in_the_widget_not_raised(bad, message):
    lab = tiny_lab()
    for name, value in bad.items():
        getattr(lab, name).value = value
    lab.run()                                                   # must not raise
    assert lab.errors.last_error is not None and message in lab.errors.value
    assert lab.status.value.startswith("failed") and not lab.running and not lab.run_button.disabled
    assert lab.results == []


def test_nan_loss_and_out_of_memory_are_readable_messages(monkeypatch):
    lab = tiny_lab()
    step = Trainer._queue_step   # what the training loop runs for each step (its loss is read after it)
    monkeypatch.setattr(Trainer, "_queue_step", lambda self: {**step(self), "loss": torch.tensor([float("nan")])})
    lab.run()
    assert "loss became nan at step 1" in lab.errors.value and "Lower the learning rate" in lab.errors.value
    assert lab.results == [] and "loss became nan" in lab.dashboard.errors.value

    def out_of_memory(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "_queue_step", out_of_memory)
    lab.mem_size.value = 8          # a new config, so not a cache hit
    lab.run()
    assert "Out of memory" in lab.errors.value and "Lower the batch size" in lab.errors.value


def test_run_button_trains_in_the_background_and_stop_ends_after_the_current_step():
    lab = tiny_lab()
    lab.steps.value = 200
    lab.gates.value = ("ddts", "no_tau")

    async def session():
        ticks = 0
        lab.run_button.click()                      # schedules a task: the click returns at once
        task = lab.task_handle
        assert isinstance(task, asyncio.Task) and lab.running
        while lab.progress.value < 3:               # the loop runs other work between steps
            await asyncio.sleep(0)
            ticks += 1
        lab.stop_button.click()
        await task
        return ticks

    ticks = asyncio.run(session())
    assert ticks >= 3
    assert lab.errors.last_error is None, lab.errors.value
    assert len(lab.results) == 1, "Stop must also skip the remaining variants"
    stopped = lab.results[0]
    assert stopped.status == "stopped" and 3 <= stopped.final["step"] < 200
    assert stopped.key not in lab.cache                           # a stopped run answers nothing
    assert lab.status.value == "stopped" and not lab.run_button.disabled and lab.stop_button.disabled


def test_results_export_to_csv_and_json(tmp_path):
    lab = tiny_lab(export_dir=str(tmp_path))
    lab.steps.value = 2
    lab.gates.value = ("no_decay", "hgrn2")
    lab.run()
    lab.csv_button.click()
    lab.json_button.click()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "ablation_results.csv").read_text())))
    assert [r["gate"] for r in rows] == ["no_decay", "hgrn2"] and all(r["status"] == "done" for r in rows)
    runs = json.loads((tmp_path / "ablation_results.json").read_text())
    assert [len([h for h in r["history"] if h["kind"] == "train"]) for r in runs] == [2, 2]
    assert ModelConfig.from_dict(runs[1]["model"]).gate == "hgrn2"
    assert "ablation_results.json" in lab.export_status.value and "(2 runs)" in lab.export_status.value
    exports = next(box for box in lab.widget.children if lab.csv_button in getattr(box, "children", ()))
    assert lab.export_status in exports.children              # the confirmation sits beside its buttons
    lab.export("xlsx")
    assert "'csv' or 'json'" in lab.errors.value


def _sliders(widget):
    """Every slider inside a widget tree, with the box that holds it."""
    import ipywidgets as widgets

    for child in getattr(widget, "children", ()):
        if isinstance(child, (widgets.IntSlider, widgets.FloatLogSlider, widgets.SelectionSlider)):
            yield child, widget
        yield from _sliders(child)


@pytest.mark.parametrize("make", [
    lambda: AblationLab(), lambda: AttentionExplorer(d_model=32, n_heads=2, n_kv_heads=2, seq_len=8),
    lambda: TrainingDashboard(),
    lambda: GateExplorer(RodimusLM(ModelConfig(vocab_size=32, d_model=16, n_layers=1, mem_size=4)),
                         {"x": torch.arange(6)}),
])
def test_every_slider_has_a_typed_entry_beside_it(make):
    widget = make()
    found = list(_sliders(widget.widget))
    assert found
    for slider, box in found:
        entry = box.entry
        assert box.children == (slider, entry)
        value = slider.options[-1] if hasattr(slider, "options") and slider.options else (
            slider.base ** slider.max if hasattr(slider, "base") else slider.max)
        entry.value = value                                     # typing moves the slider
        assert slider.value == pytest.approx(value)
        assert entry.disabled == slider.disabled


def test_lab_steps_typed_exactly_and_window_slider_wide():
    lab = AblationLab()
    (box,) = [b for s, b in _sliders(lab.widget) if s is lab.steps]
    box.entry.value = 250
    assert lab.steps.value == 250 and lab.train_config().max_steps == 250
    assert lab.window.layout.width == lab.steps.layout.width == "330px"


def test_offline_wikitext_points_to_the_text_source_field(tmp_path):
    lab = tiny_lab(data_dir=str(tmp_path))
    lab.task.value = "text"
    lab.text_source.value = "wikitext-2"                        # the hub: offline in the tests
    lab.run()
    message = lab.errors.value
    assert "into the 'text source' field above" in message and "rodimus-lab train" not in message
    lab.text_source.value = str(tmp_path / "nowhere")
    lab.run()
    assert "is neither" in lab.errors.value and "'text source' field" in lab.errors.value


def test_results_table_scrolls_inside_the_cell(tmp_path):
    lab = tiny_lab()
    lab.steps.value = 2
    lab.run()
    assert "rodimus-results" in lab.table.value
    assert lab.table.layout.width == "100%" and lab.table.layout.overflow == "auto"


def test_fast_mode_trains_a_small_task_where_the_variants_differ():
    lab = AblationLab(fast=True, min_interval=0)
    assert lab.data_config().seq_len == 24 and lab.steps.value == 200
    lab.gates.value = ("ddts", "no_tau")                        # the notebook's pair
    ddts, no_tau = (r.final["eval_accuracy"] for r in lab.run())
    assert lab.errors.last_error is None, lab.errors.value
    assert ddts > no_tau + 0.2, (ddts, no_tau)                  # measured: 0.88 vs 0.32 (chance: 1/32)
    assert {row["task"] for row in lab.rows()} == {"MQAR L=24 p=3"}


def test_dashboard_snapshots_draw_alpha_as_viz_does(tmp_path):
    from rodimus_lab import viz

    lab = tiny_lab()
    lab.run()
    dash = lab.dashboard
    snap = dash.snapshots[dash.run][0]
    dash.snapshot_slider.value = 0
    expected = viz.gate_heatmaps(snap["gates"], dash.tokens).data[0].z
    drawn = dash.gate_box.children[0].data[0].z
    assert torch.allclose(torch.tensor(drawn, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64))


def test_run_cache_keeps_only_finished_runs(tmp_path):
    cache = RunCache(tmp_path)
    result = runs_module.RunResult(name="x", key="abc", data={}, model={}, train={}, status="stopped")
    cache.put(result)
    assert "abc" not in cache and not list(tmp_path.iterdir())
    result.status = "done"
    cache.put(result)
    assert RunCache(tmp_path).get("abc").status == "done"


# ---------------------------------------------------------------------------- TrainingDashboard

def _mqar_trainer(config, dashboard, steps=4):
    train, test, _ = build_data(DataConfig(preset="demo", num_train=32, num_test=8))
    model = RodimusLM(config)
    return Trainer(model, train, test, TrainConfig(max_steps=steps, batch_size=8, eval_every=2, progress=False),
                   callbacks=[dashboard]), test


def test_dashboard_draws_a_trainer_run_and_its_gate_snapshots():
    config = ModelConfig(vocab_size=256, d_model=16, n_layers=1, mem_size=4)
    dash = TrainingDashboard(probe_every=2, min_interval=0)
    trainer, test = _mqar_trainer(config, dash)
    dash.probe_input = test.inputs[0]
    trainer.fit()
    assert dash.errors.last_error is None, dash.errors.value
    assert points(dash.figure) == 4 and points(dash.figure, "eval_accuracy") == points(dash.figure, "eval_loss") == 2
    assert [s["step"] for s in dash.snapshots["run"]] == [1, 2, 4]
    gate_fig = dash.gate_box.children[0]
    newest = [list(map(list, t.z)) for t in gate_fig.data]
    dash.snapshot_slider.value = 0                    # look back at step 1
    assert dash.snapshot_label.value == "run: step 1"
    assert [list(map(list, t.z)) for t in gate_fig.data] != newest


def test_dashboard_throttles_redraws_and_draws_everything_at_the_end():
    dash = TrainingDashboard(min_interval=1e9)
    trainer = SimpleNamespace(should_stop=False, step=3, model=None)
    for step in (1, 2, 3):
        dash.on_step({"step": step, "loss": 5.0 - step}, trainer)
    assert points(dash.figure) == 1                   # only the first step was drawn
    dash.on_end({"step": 3}, trainer)
    assert list(dash.figure.data[0].y) == [4.0, 3.0, 2.0]


def test_dashboard_nan_loss_stops_training_and_is_shown():
    dash = TrainingDashboard(min_interval=0)
    trainer = SimpleNamespace(should_stop=False, step=1, model=None)
    dash.on_step({"step": 1, "loss": float("nan")}, trainer)      # must not raise
    assert trainer.should_stop and "loss became nan" in dash.errors.value
    with pytest.raises(ValueError, match="already on the dashboard"):
        dash.start_run("run")


# ---------------------------------------------------------------------------- explorers

class ByteTokenizer:
    def encode(self, text):
        return [ord(c) % 64 for c in text]

    def decode(self, ids):
        return "".join(chr(i + 32) for i in ids)


def test_gate_explorer_follows_the_token_slider_hover_layer_and_text():
    torch.manual_seed(0)
    model = RodimusLM(ModelConfig(vocab_size=64, d_model=32, n_layers=2, block="rodimus_plus", mem_size=8,
                                  n_heads=2, window=4))
    ids = torch.randint(0, 64, (10,))
    explorer = GateExplorer(model, {"a": ids, "b": ids[:6]}, tokenizer=ByteTokenizer())
    assert explorer.token.max == 9 and len(explorer.figures.children) == 4
    before = list(explorer.per_dim.data[0].y)
    explorer.token.value = 7
    assert list(explorer.per_dim.data[0].y) != before and "position 7" in explorer.readout.value
    assert explorer.heat.layout.shapes[0].x0 == 7
    row = explorer.attn_fig.data[0].y
    assert sum(w > 0 for w in row) == 4 and abs(sum(row) - 1) < 1e-5     # window of 4 keys
    explorer.heat.data[0]._dispatch_on_hover(Points(point_inds=[[0, 3]], xs=[3], ys=[0], trace_index=0), None)
    assert explorer.token.value == 3
    explorer.layer.value = 1
    assert explorer.heat.layout.title.text == "layer 1: DDTS gates"
    explorer.source.value = "b"
    assert explorer.token.max == 5
    explorer.source.value = "(type your own)"
    explorer.text.value = "hello"
    assert explorer.token.max == 4 and explorer.tokens == list(ByteTokenizer().decode([ord(c) % 64]) for c in "hello")
    explorer.text.value = "  "
    assert "text is empty" in explorer.errors.value and explorer.token.max == 4


def test_gate_explorer_needs_ddts_layers():
    with pytest.raises(ValueError, match="DDTS layers"):
        GateExplorer(RodimusLM(ModelConfig(vocab_size=32, d_model=16, n_layers=1, block="transformer")),
                     {"x": torch.arange(4)})


def test_attention_explorer_window_slider_updates_maps_and_cache_readout():
    explorer = AttentionExplorer(d_model=32, n_heads=2, n_kv_heads=2, seq_len=12, window=4)
    blanks = lambda: sum(v is None for row in explorer.figure.data[0].z for v in row)  # noqa: E731
    assert blanks() == 66 + 36                          # causal mask + keys beyond a window of 4
    readout = explorer.readout.value
    explorer.window.value = 0
    assert explorer.errors.last_error is None and blanks() == 66
    assert explorer.readout.value != readout
    bytes_ = {r["layout"]: r["cache_bytes"] for r in explorer.cache_table()}
    assert bytes_["MQA"] < bytes_["SKA"] < bytes_["MHA"]
    explorer.context.value = 1024
    assert "1,024 tokens" in explorer.readout.value


def test_lab_trains_on_a_wikitext_slice(tmp_path):
    lab = tiny_lab(data_dir=str(tmp_path / "data"))
    lab.task.value = "text"
    assert not lab.text_source.disabled
    lab.text_source.value = str(FIXTURES / "wikitext-tiny")
    lab.block_size.value, lab.num_train.value, lab.num_test.value, lab.steps.value = 32, 16, 4, 2
    (_, config), = lab.variants()
    assert config.vocab_size == lab.data()[2].vocab_size          # the BPE trained on the slice
    result = lab.run()[0]
    assert lab.errors.last_error is None, lab.errors.value
    assert result.status == "done" and "eval_accuracy" not in result.final and result.final["eval_loss"] > 0
    assert lab.rows()[0]["task"].startswith("text ") and len(lab.dashboard.tokens) == 32
