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


@pytest.mark.parametrize("flag, value", [("--models", "gpt2"), ("--modes", "fast")])
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
