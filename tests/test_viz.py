"""rodimus_lab.viz: every figure function (shapes in → expected traces/axes out; bad shapes →
an error naming the argument) and probe (captures what the model computes, leaves no hooks)."""

import json
import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from rodimus_lab import ModelConfig, RodimusLM, cache_bytes, viz
from rodimus_lab.attention import attention
from rodimus_lab.ddts import ddts_chunkwise, ddts_gates, ddts_parallel
from rodimus_lab.paper import FIG1A_PPL_VS_STATE_MB, FIG1B_MQAR_VS_STATE_SIZE


def heatmaps(fig):
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


@pytest.fixture(scope="module")
def plus_model():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, d_model=32, n_layers=2, block="rodimus_plus", mem_size=8,
                         n_heads=2, window=4)
    return RodimusLM(config).eval()


def random_gates(T=6, n=5):
    log_alpha, alpha_hat = ddts_gates(torch.randn(T, n), torch.randn(T, n))
    return dict(log_alpha=log_alpha, alpha_hat=alpha_hat, tau=torch.rand(T, n), g=torch.rand(T, n))


# ----------------------------------------------------------------------------- gates

def test_gate_heatmaps_one_panel_per_gate_with_token_labels():
    gates = random_gates(T=6, n=5)
    fig = viz.gate_heatmaps(gates, tokens=list("abcdea"))
    assert [t.name for t in heatmaps(fig)] == ["alpha", "alpha_hat", "tau", "g"]
    assert heatmaps(fig)[0].z.shape == (5, 6)                         # state dims × tokens
    # α is drawn as log10(−ln α) (trained gates sit at α ≈ 0.99…0.9999), the hover reads α itself
    np.testing.assert_allclose(heatmaps(fig)[0].z, np.log10(np.maximum(-gates["log_alpha"].numpy().T, 1e-6)), rtol=1e-6)
    np.testing.assert_allclose(heatmaps(fig)[0].customdata, gates["log_alpha"].exp().numpy().T)
    assert list(fig.layout.xaxis4.ticktext) == list("abcdea")          # repeated tokens keep their place


def test_gate_heatmaps_skips_missing_gates_and_rejects_bad_shapes():
    gates = random_gates()
    gates["g"] = gates["tau"] = None                                   # as the "no_decay"/"retnet" ablations
    assert len(heatmaps(viz.gate_heatmaps(gates))) == 2
    with pytest.raises(ValueError, match="alpha_hat"):
        viz.gate_heatmaps(dict(log_alpha=torch.zeros(4, 3), alpha_hat=torch.zeros(4, 3, 2)))
    with pytest.raises(ValueError, match="same shape"):
        viz.gate_heatmaps(dict(log_alpha=torch.zeros(4, 3), alpha_hat=torch.zeros(5, 3)))
    with pytest.raises(ValueError, match="tokens has 2 labels"):
        viz.gate_heatmaps(random_gates(T=6), tokens=["a", "b"])
    with pytest.raises(TypeError, match="gates must be a dict"):
        viz.gate_heatmaps(torch.zeros(4, 3))


def test_write_keep_profile_means_over_state_dims():
    gates = random_gates(T=7, n=4)
    fig = viz.write_keep_profile(gates)
    assert len(fig.data) == 2
    np.testing.assert_allclose(fig.data[0].y, gates["alpha_hat"].mean(1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(fig.data[1].y, gates["log_alpha"].exp().mean(1).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="alpha_hat"):
        viz.write_keep_profile(dict(log_alpha=torch.zeros(3, 2)))


def test_selection_curves_follow_the_tempered_pair():
    fig = viz.selection_curves(taus=(1.0, 0.5), points=50)
    assert len(fig.data) == 4                                          # (α, α̂) per τ
    g = np.asarray(fig.data[2].x)
    np.testing.assert_allclose(fig.data[2].y, np.exp(-0.5 * g), rtol=1e-9)   # α at τ = 0.5
    np.testing.assert_allclose(fig.data[3].y, g ** 0.5, rtol=1e-9)           # α̂ at τ = 0.5
    np.testing.assert_allclose(fig.data[1].y, g, rtol=1e-9)                  # τ = 1: α̂ = g
    assert fig.layout.xaxis.type == "log"
    with pytest.raises(ValueError, match="taus"):
        viz.selection_curves(taus=(1.5,))
    with pytest.raises(ValueError, match="g_range"):
        viz.selection_curves(g_range=(1.0, 0.1))


# ------------------------------------------------------------------------ attention

def test_attention_matrix_of_ddts_is_signed_and_square():
    T, n = 9, 4
    q, k, v = torch.randn(1, T, 1, n), torch.randn(1, T, 1, n), torch.randn(1, T, 1, 3)
    log_alpha = -torch.rand(1, T, 1, n)
    _, attn = ddts_parallel(q, k, v, log_alpha)
    fig = viz.attention_matrix(attn, tokens=[f"t{i}" for i in range(T)])    # [1, 1, T, T] accepted
    (hm,) = heatmaps(fig)
    np.testing.assert_allclose(hm.z, attn[0, 0].numpy(), rtol=1e-6)
    assert fig.layout.coloraxis.colorscale[0][1].startswith("rgb")           # diverging scale
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax
    assert fig.layout.yaxis.autorange == "reversed"
    with pytest.raises(ValueError, match="square"):
        viz.attention_matrix(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="one \\[T, T\\] matrix"):
        viz.attention_matrix(torch.zeros(2, 3, 3))


def test_head_maps_draw_every_head_and_the_window_band():
    T, H, window = 10, 3, 4
    q, k, v = torch.randn(1, T, H, 8), torch.randn(1, T, 1, 8), torch.randn(1, T, H, 8)
    _, w = attention(q, k, v, window=window, return_weights=True)
    fig = viz.head_maps(w, window=window)
    assert len(heatmaps(fig)) == H
    bands = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(bands) == 2 * H                                          # diagonal + window edge per head
    z = heatmaps(fig)[0].z
    assert np.isnan(z[T - 1, 0]) and not np.isnan(z[T - 1, T - window])   # masked keys blank, window kept
    assert len(heatmaps(viz.head_maps(w[0]))) == H                       # [H, T, T] accepted too
    labelled = viz.head_maps(w, tokens=[f"t{i}" for i in range(T)])
    assert list(labelled.layout.yaxis.ticktext) == [f"t{i}" for i in range(T)]
    assert labelled.layout.yaxis.tickangle == 0 and labelled.layout.xaxis.tickangle == -90
    with pytest.raises(ValueError, match="weights must be"):
        viz.head_maps(torch.zeros(T, T))
    with pytest.raises(ValueError, match="head_names"):
        viz.head_maps(w, head_names=["a"])


def test_layout_maps_rows_are_layouts():
    T = 6
    maps = {"MHA": torch.rand(4, T, T), "SKA": torch.rand(1, 4, T, T), "MQA": torch.rand(4, T, T)}
    fig = viz.layout_maps(maps, heads=2)
    assert len(heatmaps(fig)) == 3 * 2
    assert fig.layout.annotations[0].text == "MHA · head 0"
    with pytest.raises(ValueError, match="same sequence length"):
        viz.layout_maps({"a": torch.rand(2, 4, 4), "b": torch.rand(2, 5, 5)})
    with pytest.raises(ValueError, match="non-empty dict"):
        viz.layout_maps({})


# ---------------------------------------------------------------------------- state

def test_effective_rank_of_known_matrices():
    eye = torch.eye(4).expand(3, 4, 4)
    rank_one = torch.outer(torch.randn(4), torch.randn(5))[None]
    torch.testing.assert_close(viz.effective_rank(eye), torch.full((3,), 4.0, dtype=torch.float64))
    assert abs(viz.effective_rank(rank_one).item() - 1.0) < 1e-6
    assert viz.effective_rank(torch.zeros(1, 3, 3)).item() == 0.0
    assert viz.singular_values(torch.randn(7, 4, 6)).shape == (7, 4)


def test_state_spectrum_and_norms_figures():
    states = torch.randn(5, 4, 6)
    fig = viz.state_spectrum(states, tokens=list("abcde"))
    assert heatmaps(fig)[0].z.shape == (4, 5)
    erank = [t for t in fig.data if t.name == "effective rank"][0]
    np.testing.assert_allclose(erank.y, viz.effective_rank(states).numpy())
    fig = viz.state_norms({"layer 0": states, "layer 1": 2 * states})
    np.testing.assert_allclose(fig.data[1].y, 2 * torch.linalg.matrix_norm(states).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="\\[T, n, m\\]"):
        viz.state_spectrum(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="one length"):
        viz.state_norms({"a": torch.zeros(3, 2, 2), "b": torch.zeros(4, 2, 2)}, tokens=list("abc"))


# --------------------------------------------------------------------- memory, training

def test_memory_vs_context_uses_cache_bytes():
    configs = {"tf": ModelConfig(block="transformer"), "rodimus": ModelConfig(),
               "plus": ModelConfig(block="rodimus_plus", window=8)}
    lens = [1, 4, 16, 64]
    fig = viz.memory_vs_context(configs, lens)
    assert [t.name for t in fig.data] == list(configs)
    for trace, config in zip(fig.data, configs.values()):
        assert list(trace.y) == [cache_bytes(config, L) for L in lens]
    assert fig.data[1].y[0] == fig.data[1].y[-1]                        # Rodimus: flat
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == "log"
    with pytest.raises(TypeError, match="configs\\['x'\\]"):
        viz.memory_vs_context({"x": {"d_model": 8}})
    with pytest.raises(ValueError, match="context_lens"):
        viz.memory_vs_context(configs, [0, 4])


def test_training_curves_from_jsonl_and_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(5)] + [{"step": 4, "eval_loss": 0.3}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    fig = viz.training_curves({"a": path, "b": rows[:3]}, y=("loss", "eval_loss"))
    assert [(t.name, len(t.x)) for t in fig.data] == [("a", 5), ("a", 1), ("b", 3)]
    with pytest.raises(ValueError, match="no row has"):
        viz.training_curves(rows, y="accuracy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        viz.training_curves(tmp_path / "missing.jsonl")


def test_training_curves_of_a_run_still_writing_its_log(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "lo')   # the row being written
    fig = viz.training_curves(path)
    assert [list(t.x) for t in fig.data] == [[0, 1, 2]]
    with open(path, "a") as f:   # rows written after the torn one: now it is damage, not a write under way
        f.write("\n" + json.dumps({"step": 4, "loss": 0.2}) + "\n")
    with pytest.raises(ValueError, match="metrics.jsonl, line 4, is not JSON"):
        viz.read_metrics(path)


def test_compare_with_paper_pairs_ours_and_paper():
    ours = {"Rodimus": [(32, 0.4), (16, 0.2)]}
    fig = viz.compare_with_paper(ours, FIG1B_MQAR_VS_STATE_SIZE, x_title="n", y_title="accuracy")
    names = [t.name for t in fig.data]
    assert names[:2] == ["Rodimus (ours)", "Rodimus (paper)"] and "Mamba2 (paper)" in names
    assert list(fig.data[0].x) == [16, 32]                              # sorted by x
    assert fig.data[0].line.color == fig.data[1].line.color
    with pytest.raises(ValueError, match="ours\\['Rodimus'\\]"):
        viz.compare_with_paper({"Rodimus": [1, 2, 3]}, x_title="n", y_title="acc")


def test_compare_with_paper_side_by_side_gives_each_its_own_axes():
    ours = {"Rodimus": [(0.03, 171.1), (0.52, 170.4)], "Mamba2-style gate in the Rodimus block": [(0.03, 176.7)]}
    fig = viz.compare_with_paper(ours, FIG1A_PPL_VS_STATE_MB, x_title="MB", y_title="ppl", side_by_side=True)
    axes = {t.name: (t.xaxis, t.yaxis) for t in fig.data}
    assert axes["Rodimus (ours)"] == ("x", "y") and axes["Rodimus (paper)"] == ("x2", "y2")
    assert all(a == ("x2", "y2") for name, a in axes.items() if name.endswith("(paper)"))
    colour = {t.name: t.line.color for t in fig.data}
    assert colour["Mamba2-style gate in the Rodimus block (ours)"] == colour["Mamba2 (paper)"]   # the model it stands for
    assert fig.layout.xaxis.type == fig.layout.xaxis2.type == "log"
    alone = viz.compare_with_paper(ours, x_title="MB", y_title="ppl", side_by_side=True)   # nothing to put beside
    assert {t.xaxis for t in alone.data} == {None}


# --------------------------------------------------------------------- architecture

@pytest.mark.parametrize("block", ["rodimus", "rodimus_plus", "transformer"])
def test_block_diagram_reads_sizes_from_the_config(block):
    extra = {"window": 16} if block == "rodimus_plus" else {}
    config = ModelConfig(block=block, d_model=256, mem_size=32, n_heads=2, **extra) if block != "rodimus" \
        else ModelConfig(d_model=256, mem_size=32)
    fig = viz.block_diagram(config)
    text = " ".join(a.text for a in fig.layout.annotations)
    if config.has_mixer:
        assert f"{config.mem_size}×{config.d_inner}" in text and "inside the Rodimus flow" in text
    if config.has_attention:
        assert f"{config.d_model} → {config.ffn_dim} → {config.d_model}" in text
        assert f"{config.num_heads} q / {config.num_key_heads} k / {config.num_value_heads} v heads" in text
    assert ("two-hop" in text) == (block == "rodimus_plus")
    assert ("window 16 keys" in text) == (block == "rodimus_plus")


def test_block_diagram_rejects_non_configs():
    with pytest.raises(TypeError, match="ModelConfig"):
        viz.block_diagram({"d_model": 8})


# ---------------------------------------------------------------------------- probe

def test_probe_captures_every_layer_and_removes_its_hooks(plus_model):
    ids = torch.randint(0, 50, (12,))
    result = viz.probe(plus_model, ids)
    config = plus_model.config
    assert sorted(result.gates) == sorted(result.attention) == [0, 1]
    assert result.gates[0]["alpha_hat"].shape == (12, config.mem_size)
    assert result.ddts_inputs[1]["v"].shape == (12, config.d_inner)
    assert result.attention[0].shape == (config.num_heads, 12, 12)
    torch.testing.assert_close(result.attention[0].sum(-1), torch.ones(config.num_heads, 12))
    torch.testing.assert_close(result.logits, plus_model(ids[None]).logits[0])
    assert all(not layer.mixer.gate_tap.active and not layer.attn.weights_tap.active for layer in plus_model.layers)
    assert result.tokens == [str(i) for i in ids.tolist()]


def test_probe_states_and_implicit_attention_agree_with_the_reference(plus_model):
    result = viz.probe(plus_model, torch.randint(0, 50, (1, 10)))
    x = {k: t[None, :, None] for k, t in result.ddts_inputs[0].items()}
    o, final = ddts_chunkwise(x["q"], x["k"], x["v"], x["log_alpha"], output_final_state=True)
    states = result.states(0)
    assert states.shape == (10, plus_model.config.mem_size, plus_model.config.d_inner)
    torch.testing.assert_close(states[-1], final[0, 0])
    attn = result.implicit_attention(0)
    torch.testing.assert_close(attn @ x["v"][0, :, 0], o[0, :, 0], rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="no DDTS"):
        result.states(5)


def test_probe_with_text_and_tokenizer(plus_model):
    class CharTokenizer:                                 # encode/decode like tiktoken
        def encode(self, text):
            return [ord(c) % 50 for c in text]

        def decode(self, ids):
            return "".join(chr(i + 60) for i in ids)

    result = viz.probe(plus_model, text="hello", tokenizer=CharTokenizer())
    assert len(result.tokens) == 5 and result.token_ids == [ord(c) % 50 for c in "hello"]


def test_probe_rejects_batches_and_ambiguous_inputs(plus_model):
    with pytest.raises(ValueError, match="one sequence"):
        viz.probe(plus_model, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one"):
        viz.probe(plus_model)
    with pytest.raises(ValueError, match="tokenizer"):
        viz.probe(plus_model, text="hi")


def test_probe_on_an_ablation_without_g_and_tau():
    model = RodimusLM(ModelConfig(vocab_size=20, d_model=16, n_layers=1, mem_size=4, gate="no_decay"))
    result = viz.probe(model, torch.arange(6))
    assert result.gates[0]["g"] is None and result.attention == {}
    assert len(heatmaps(viz.gate_heatmaps(result.gates[0]))) == 2


# ------------------------------------------------------------------------ benchmarks

BENCH_MD = """# Benchmarks
Some text.

| kernel | T | time (ms) | speed-up |
|---|---:|---:|---:|
| ddts | 1024 | 1.50 | 3.2× |
| ddts | 4096 | 5.00 | 4.1× |
| reference | 1024 | 4.80 | 1.0× |

| not | a number |
|-----|----------|
| x | n/a |
"""


def test_markdown_tables_parse_numbers_and_units():
    tables = viz.markdown_tables(BENCH_MD)
    assert len(tables) == 2
    assert tables[0][0] == {"kernel": "ddts", "T": 1024.0, "time (ms)": 1.5, "speed-up": 3.2}
    assert tables[1] == [{"not": "x", "a number": "n/a"}]
    assert viz.markdown_tables("no tables here") == []


def test_benchmark_figure_groups_bars():
    rows = viz.markdown_tables(BENCH_MD)[0]
    fig = viz.benchmark_figure(rows, x="T", y="time (ms)", color="kernel")
    assert [(t.name, list(t.y)) for t in fig.data] == [("ddts", [1.5, 5.0]), ("reference", [4.8])]
    assert viz.timing_columns(rows, "kernel") == ["time (ms)"]
    with pytest.raises(ValueError, match="not in the table"):
        viz.benchmark_figure(rows, x="T", y="throughput")
    with pytest.raises(ValueError, match="no numbers"):
        viz.benchmark_figure(viz.markdown_tables(BENCH_MD)[1], x="not", y="a number")
    with pytest.raises(ValueError, match="no timing column"):
        viz.benchmark_figure(viz.markdown_tables(BENCH_MD)[1])


def test_benchmark_figure_defaults_to_the_timing_columns():
    rows = viz.markdown_tables("""
| T | ours ms | flex ms | ratio |
|---|---|---|---|
| 1024 | 0.5 | 1.0 | 0.5 |
| 4096 | 2.0 |  | |
""")[0]
    fig = viz.benchmark_figure(rows)
    assert fig.layout.xaxis.title.text == "T"
    two_keys = viz.benchmark_figure(viz.markdown_tables("| T | W | ours ms |\n|---|---|---|\n| 8 | 2 | 1 |\n| 8 | 4 | 2 |")[0])
    assert list(two_keys.data[0].x) == ["T 8, W 2", "T 8, W 4"]         # rows sharing T stay apart
    assert [(t.name, list(t.x), list(t.y)) for t in fig.data] == [("ours ms", ["1024", "4096"], [0.5, 2.0]),
                                                                  ("flex ms", ["1024"], [1.0])]


def test_attention_matrix_outlines_chunks():
    fig = viz.attention_matrix(torch.rand(10, 10).tril(), chunk_size=4)
    assert len(fig.layout.shapes) == 3                                  # chunks [0,4) [4,8) [8,10)
    assert fig.layout.shapes[-1].x1 == 9.5
    with pytest.raises(ValueError, match="chunk_size"):
        viz.attention_matrix(torch.rand(4, 4), chunk_size=0)


def test_selection_curves_overlay_a_models_gates():
    gates = random_gates(T=5, n=3)
    gates["g"] = torch.nn.functional.softplus(torch.randn(5, 3))
    fig = viz.selection_curves(taus=(1.0,), observed=gates)
    points = [t for t in fig.data if t.mode == "markers"]
    assert len(points) == 2 and len(points[0].x) == 15
    np.testing.assert_allclose(points[1].y, gates["alpha_hat"].reshape(-1).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="tau"):
        viz.selection_curves(observed=dict(log_alpha=torch.zeros(2, 2), alpha_hat=torch.ones(2, 2)))


def test_use_notebook_renderer_needs_no_cdn():
    import plotly.io as pio

    before = pio.renderers.default
    try:
        viz.use_notebook_renderer()
        assert pio.renderers.default == "plotly_mimetype"
    finally:
        pio.renderers.default = before


def test_read_metrics_rejects_non_dicts():
    assert viz.read_metrics([{"step": 1}]) == [{"step": 1}]
    with pytest.raises(TypeError, match="JSONL path or an iterable of dicts"):
        viz.read_metrics([1, 2])


def test_gate_family_draws_each_model_and_the_coupled_curves():
    gates = {"DDTS": random_gates(T=5, n=3), "HGRN2": dict(log_alpha=torch.full((5, 3), -0.1),
                                                           alpha_hat=torch.full((5, 3), 1 - math.exp(-0.1)))}
    fig = viz.gate_family(gates)
    assert [t.name for t in fig.data][:2] == ["DDTS", "HGRN2"] and len(fig.data) == 4   # + two reference curves
    np.testing.assert_allclose(fig.data[1].x, 0.1) and np.testing.assert_allclose(fig.data[1].y, 1 - math.exp(-0.1))
    with pytest.raises(TypeError, match="non-empty dict"):
        viz.gate_family({})


def test_the_documentation_figures_still_build():
    """docs/build_figures.py drew the committed PNGs: its figures() must keep running (a few training steps)."""
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "docs" / "build_figures.py"
    spec = importlib.util.spec_from_file_location("build_figures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figs = module.figures(mqar_steps=2)
    assert {"mqar_gates", "mqar_sw_ska", "rodimus_plus_block", "selection_curves"} <= set(figs)
    assert all(fig.data for fig in figs.values())
    missing = set(figs) - {p.stem for p in (path.parent / "figures").glob("*.png")}
    assert not missing, f"{sorted(missing)} not rendered: python docs/build_figures.py"


def test_grouped_bars_one_trace_per_series_over_the_same_categories():
    fig = viz.grouped_bars({"lr 0.001": {"ddts": 0.5, "hgrn2": 0.4}, "lr 0.01": {"ddts": 0.6, "hgrn2": 0.3}},
                           y_title="accuracy")
    assert [t.name for t in fig.data] == ["lr 0.001", "lr 0.01"] and list(fig.data[1].y) == [0.6, 0.3]
    with pytest.raises(ValueError, match="categories"):
        viz.grouped_bars({"a": {"x": 1}, "b": {"y": 2}}, y_title="?")


def test_timing_columns_skip_a_column_without_a_name():
    """A verdict column with an empty header (| target | measured | |) is no timing column, and no crash."""
    rows = viz.markdown_tables("| target | time (ms) | |\n|---|---|---|\n| a | 1.5 | met |\n")[0]
    assert viz.timing_columns(rows, "target") == ["time (ms)"]
