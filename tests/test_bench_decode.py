"""The decode benchmark on CPU at toy sizes: memory three ways agrees, state sizes behave, the
results file round-trips into the figure."""

import json

import pytest
import torch

from rodimus_lab.bench.decode import analytic_state_bytes, bench_configs, format_table, run, summary
from rodimus_lab.viz.decode import decode_cost

CONTEXTS = [8, 40]


@pytest.fixture(scope="module")
def results():
    return run(CONTEXTS, d_model=32, vocab_size=64, window=16, depths={"rodimus": 2, "rodimus_plus": 1, "transformer": 1},
               steps=2, warmup=1, progress=False)


def rows_of(results, model):
    return {r["context"]: r for r in results["rows"] if r["model"] == model}


def test_memory_analytic_tensors_and_measured_agree(results):
    assert len(results["rows"]) == 3 * len(CONTEXTS)
    for r in results["rows"]:
        assert r["state_bytes_analytic"] == r["state_bytes_tensors"] == r["state_bytes_measured"], r
        assert r["peak_bytes"] >= r["state_bytes_measured"]
        assert r["latency_ms"] > 0


def test_state_is_flat_for_rodimus_and_grows_for_the_transformer(results):
    rodimus, plus, transformer = (rows_of(results, m) for m in ("rodimus", "rodimus_plus", "transformer"))
    assert rodimus[8]["state_bytes_measured"] == rodimus[40]["state_bytes_measured"]
    assert plus[8]["state_bytes_measured"] == plus[40]["state_bytes_measured"]      # a ring of `window` slots
    assert transformer[40]["state_bytes_measured"] > transformer[8]["state_bytes_measured"]
    s = summary(results)
    assert s["transformer"]["vs_transformer"] == 1
    assert s["rodimus"]["measured_vs_analytic"] == 0


def test_analytic_bytes_count_the_float32_state_and_the_cache_dtype():
    c = bench_configs(d_model=64, vocab_size=64, window=16)
    n, m, L = c["rodimus"].mem_size, c["rodimus"].d_inner, c["rodimus"].n_layers
    assert analytic_state_bytes(c["rodimus"], 10**6, torch.bfloat16) == L * (4 * n * m + 2 * 3 * m)
    t = c["transformer"]
    assert analytic_state_bytes(t, 100, torch.bfloat16) == t.n_layers * 100 * 2 * t.d_model * 2


def test_table_and_figure_from_the_results_file(results, tmp_path):
    path = tmp_path / "decode.json"
    path.write_text(json.dumps(results))
    table = format_table(results)
    for model in ("rodimus", "rodimus_plus", "transformer"):
        assert model in table
    fig = decode_cost(path)
    assert len(fig.data) == 3 * 3                     # analytic line, measured markers, latency per model
    assert list(fig.data[1].y) == [r["state_bytes_measured"] for r in results["rows"][:2]]
    with pytest.raises(FileNotFoundError, match="bench decode"):
        decode_cost(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="rows"):
        decode_cost({"no": "rows"})


def test_cli_entry_writes_the_results_file(tmp_path, capsys):
    from rodimus_lab.cli import main as cli

    out = tmp_path / "r.json"
    assert cli(["bench", "decode", "--device", "cpu", "--models", "rodimus", "--contexts", "4", "--d-model", "32",
                "--vocab-size", "64", "--depth", "rodimus=1", "--steps", "1", "--warmup", "0", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert [r["context"] for r in saved["rows"]] == [4]
    assert saved["configs"]["rodimus"]["n_layers"] == 1
    assert "latency(4)/latency(4)" in capsys.readouterr().out


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        bench_configs(models=("mamba",))
    with pytest.raises(ValueError, match="contexts"):
        run([0], progress=False)


@pytest.mark.parametrize("block, window", [("rodimus", None), ("rodimus_plus", 4), ("transformer", 16)])
def test_the_step_captured_in_a_cuda_graph_computes_the_model_step(block, window):
    """What _graph_step captures (the public forward at T = 1 without the host-side id check), run eagerly
    on CPU: each call is the model's step at the state's position, and it writes the state in place (the
    tensors a graph replays on; a ring slot for the attention models)."""
    from rodimus_lab import ModelConfig, RodimusLM
    from rodimus_lab.bench.decode import _step_at, synthetic_state

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, d_model=32, n_layers=2, mem_size=8, block=block, window=window)
    model = RodimusLM(config)   # float32, as benched
    state = synthetic_state(model, 10)
    storages = [t.data_ptr() for layer in state.layers for part in layer.values() for t in part.values()]
    reference = state.clone()
    token = torch.tensor([5])
    body = _step_at(model, state, token)
    with torch.no_grad():
        for t in (5, 9, 17):
            token.fill_(t)
            reference.position = state.position   # a replay decodes at the captured position again
            torch.testing.assert_close(body(), model.step(torch.tensor([t]), reference)[0])
    assert state.position == 10
    assert storages == [t.data_ptr() for layer in state.layers for part in layer.values() for t in part.values()]
    for layer, expected in zip(state.layers, reference.layers):
        for part, tensors in layer.items():
            for name, tensor in tensors.items():
                torch.testing.assert_close(tensor, expected[part][name])
