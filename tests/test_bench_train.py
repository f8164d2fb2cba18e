"""`rodimus-lab bench train` on the CPU at toy sizes: the rows, the results file and the flag checks
(the numbers themselves are benchmarks, measured on a GPU: docs/benchmarks.md, "Whole-model training")."""

import json

import pytest

from rodimus_lab.bench import train as bench_train
from rodimus_lab.cli import main as cli_main

TOY = ["--device", "cpu", "--d-model", "32", "--n-layers", "1", "--n-heads", "2", "--vocab-size", "64",
       "--tokens", "64", "--seq-lens", "16,32", "--modes", "eager", "--warmup", "1", "--steps", "1"]


def test_rows_and_results_file(tmp_path):
    out = tmp_path / "train.json"
    results = bench_train.main([*TOY, "--models", "rodimus,transformer", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == results["rows"] and len(saved["rows"]) == 4
    for row in saved["rows"]:
        assert row["batch"] * row["seq_len"] == 64 and row["tokens_per_s"] > 0 and len(row["losses"]) == 2
    assert saved["environment"]["command"].startswith("rodimus-lab bench train")
    assert "Rodimus" in bench_train.format_table(results)


def test_cli_dispatches_to_it(tmp_path, capsys):
    assert cli_main(["bench", "train", *TOY, "--models", "rodimus", "--seq-lens", "16",
                     "--out", str(tmp_path / "t.json")]) == 0
    assert "tokens/s" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value", [("--models", "gpt2"), ("--modes", "fast"), ("--compile-mode", "fastest")])
def test_bad_choices_are_named(flag, value, capsys):
    with pytest.raises(SystemExit):
        bench_train.main([*TOY, flag, value])
    assert value in capsys.readouterr().err


def test_graphed_mode_on_the_cpu_is_a_row_that_says_why(tmp_path):
    """A CUDA graph needs a GPU: the graphed rows name that, the eager rows are measured."""
    results = bench_train.main([*TOY, "--models", "rodimus", "--seq-lens", "16", "--modes", "eager,graphed",
                                "--warmup", "2", "--out", str(tmp_path / "t.json")])
    eager, graphed = results["rows"]
    assert eager["mode"] == "eager" and "tokens_per_s" in eager
    assert graphed["mode"] == "graphed" and "CUDA device" in graphed["error"]


@pytest.mark.parametrize("mode", [None, "reduce-overhead", "max-autotune-no-cudagraphs"])
def test_compile_mode_reaches_torch_compile_the_rows_and_the_table(mode, tmp_path, monkeypatch):
    """The plumbing only (torch.compile stubbed: what it was asked for is recorded; the timings are GPU work)."""
    asked = []

    def compile_(model, **options):
        asked.append(options)
        return model

    monkeypatch.setattr(bench_train.torch, "compile", compile_)
    out = tmp_path / "t.json"
    flag = [] if mode is None else ["--compile-mode", mode]
    results = bench_train.main([*TOY, "--models", "rodimus", "--seq-lens", "16", "--modes", "eager,compiled", *flag,
                                "--out", str(out)])
    mode = mode or "default"
    assert asked == [{"mode": mode}]
    saved = json.loads(out.read_text())
    eager, compiled = saved["rows"]
    assert saved["compile_mode"] == mode and compiled["compile_mode"] == mode and "compile_mode" not in eager
    assert compiled["mode"] == "compiled" and compiled["compiled"] and "tokens_per_s" in compiled
    table = bench_train.format_table(results)
    assert f"Rodimus                    compiled:{mode} " in table
    assert f"Rodimus compiled:{mode} T=16: " in table and "x its own eager tokens/s" in table


def test_results_from_before_compile_mode_still_print():
    """Rows written before --compile-mode (and before the graphed mode: no 'mode') read as the default."""
    old = {"rows": [dict(model=m, label=bench_train.LABELS[m], seq_len=2048, compiled=True, params=1e8, batch=8,
                         tokens_per_s=t, step_s=0.1, warmup_s=9.0, peak_gib=9.0) for m, t in (("rodimus", 2e5),
                                                                                                 ("llama", 4e5))]}
    table = bench_train.format_table(old)
    assert "compiled:default" in table and "Rodimus compiled:default T=2048: 0.50x Llama's tokens/s" in table


def test_profile_top_sets_the_rows_of_the_profile_table(tmp_path):
    def kernel_rows(top):
        results = bench_train.main([*TOY, "--models", "rodimus", "--seq-lens", "16", "--profile",
                                    "--profile-top", str(top), "--out", str(tmp_path / f"p{top}.json")])
        lines = results["rows"][0]["profile"].splitlines()
        rules = [i for i, line in enumerate(lines) if line.startswith("---")]   # above, below the header; below the rows
        return rules[2] - rules[1] - 1

    assert kernel_rows(3) == 3 and kernel_rows(9) == 9


def test_peak_memory_of_replayed_graphs_counts_the_warm_up():
    """Inductor's CUDA graphs (reduce-overhead) are recorded in the warm-up like the graphed step: a peak
    taken over the replays alone saw weights and optimizer state only (1.9 GiB for Rodimus+ on the H200)."""
    assert bench_train.replays_graphs("graphed", "default")
    assert bench_train.replays_graphs("compiled", "reduce-overhead")
    assert not bench_train.replays_graphs("compiled", "default")
    assert not bench_train.replays_graphs("compiled", "max-autotune-no-cudagraphs")
    assert not bench_train.replays_graphs("eager", "reduce-overhead")
