"""The sweep runner (rodimus_lab.sweep): specs, resume after a kill, named subsets, the figure from results."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rodimus_lab import sweep
from rodimus_lab.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "sweep"
TINY = FIXTURES / "tiny.yaml"


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def comparable(record: dict) -> dict:
    """What a rerun must reproduce (wall time, provenance and resume bookkeeping aside)."""
    return {k: record[k] for k in ("point", "family", "values", "config", "parameters", "state", "best", "final",
                                   "steps", "seed")}


def test_points_cross_the_grid_and_families_drop_axes():
    spec = sweep.load_spec(TINY)
    names = [p.name for p in spec.points()]
    assert names == ["rodimus--mem_size=4--lr=0.01", "rodimus--mem_size=4--lr=0.003",
                     "rodimus--mem_size=8--lr=0.01", "rodimus--mem_size=8--lr=0.003",
                     "transformer_plus_plus--lr=0.01", "transformer_plus_plus--lr=0.003"]
    point = spec.points({"train.max_steps": 2})[2]
    assert point.sections["model"] == {"n_layers": 1, "d_model": 16, "backend": "reference", "block": "rodimus",
                                       "mem_size": 8}
    assert point.sections["train"]["lr"] == 0.01 and point.sections["train"]["max_steps"] == 2
    assert [p.name for p in spec.select(["Transformer++"])] == names[4:]
    assert [p.name for p in spec.select(["*mem_size=8*"])] == names[2:4]
    with pytest.raises(ValueError, match="matches no point"):
        spec.select(["Mamba"])


@pytest.mark.parametrize("change, message", [
    ({"grid": {"mem_size": [4]}}, "not a field path"),
    ({"colour": "red"}, "unknown key"),
    ({"families": {}}, "'families' must map"),
    ({"figure": {"x": "n", "y": "accuracy"}}, "figure.y must be one of"),
    ({"figure": {"x": "n", "y": "eval_accuracy", "paper": "FIG9"}}, "figure.paper 'FIG9'"),
    ({"families": {"Rodimus": {"modle": {}}}}, "unknown key"),
])
def test_bad_specs_name_the_key(change, message):
    import yaml

    spec = {**yaml.safe_load(TINY.read_text()), **change}
    with pytest.raises(ValueError, match=message):
        sweep.spec_from_dict(spec)


class Kill(Exception):
    """Stands for the process being killed."""


def kill_at_step_3(monkeypatch, spec, out, only, point_ending: str):
    """Run the sweep until the point whose name ends so reaches step 3 (after its checkpoint at step 2)."""
    on_step = sweep._Deadline.on_step

    def kill(self, metrics, trainer):
        if trainer.meta["sweep"]["point"].endswith(point_ending) and trainer.step == 3:
            raise Kill
        on_step(self, metrics, trainer)

    with monkeypatch.context() as patch:
        patch.setattr(sweep._Deadline, "on_step", kill)
        with pytest.raises(Kill):
            sweep.run_sweep(spec, out, only=only, say=lambda *a: None)


def test_resume_skips_done_points_and_restarts_a_killed_one_cleanly(tmp_path, monkeypatch):
    spec = sweep.load_spec(TINY)
    only = ["rodimus--mem_size=4*"]
    clean = sweep.run_sweep(spec, tmp_path / "clean", only=only, say=lambda *a: None)

    out = tmp_path / "killed"   # killed in its second point
    kill_at_step_3(monkeypatch, spec, out, only, "lr=0.003")
    assert [r["point"] for r in lines(out)] == [only[0][:-1] + "--lr=0.01"]
    assert sweep.point_status(spec, out, only=only)[1][1] == "partial (ckpt-000002)"
    first = lines(out)[0]

    said = []
    sweep.run_sweep(spec, out, only=only, say=said.append)
    assert "1 done, 1 to run" in said[0] and any("resumed at step 2" in s for s in said)
    records = lines(out)
    assert records[0] == first   # the done point was not trained again
    assert records[1]["resumed_from_step"] == 2
    assert [comparable(r) for r in records] == [comparable(r) for r in clean]   # as if never killed


def one_point_clean_and_killed(tmp_path, monkeypatch):
    """(spec, [the point], its record when trained without a kill, the folder of a sweep killed at its step 3)."""
    spec = sweep.load_spec(TINY)
    only = ["rodimus--mem_size=4--lr=0.01"]
    clean = sweep.run_sweep(spec, tmp_path / "clean", only=only, say=lambda *a: None)[0]
    kill_at_step_3(monkeypatch, spec, tmp_path / "out", only, only[0])
    return spec, only, clean, tmp_path / "out"


def test_a_killed_point_resumes_when_only_how_it_runs_changed(tmp_path, monkeypatch):
    """Another device, worker count (progress bars) or log_every trains the same point: its checkpoint counts."""
    spec, only, clean, out = one_point_clean_and_killed(tmp_path, monkeypatch)
    records = sweep.run_sweep(spec, out, only=only, overrides={"train.log_every": 2}, say=lambda *a: None)
    assert records[0]["resumed_from_step"] == 2
    assert (records[0]["best"], records[0]["final"]) == (clean["best"], clean["final"])


def test_a_damaged_checkpoint_starts_the_point_again_as_a_fresh_one(tmp_path, monkeypatch):
    spec, only, clean, out = one_point_clean_and_killed(tmp_path, monkeypatch)
    tensors = next((out / "points" / only[0] / "checkpoints").glob("*.safetensors"))
    tensors.write_bytes(tensors.read_bytes()[:-8])   # truncated
    said = []
    records = sweep.run_sweep(spec, out, only=only, say=said.append)
    assert any("is damaged" in s and "starting it again" in s for s in said)
    assert records[0]["resumed_from_step"] is None
    assert comparable(records[0]) == comparable(clean)   # the same initial weights as a point never begun


def test_a_partial_folder_of_another_config_or_without_checkpoint_starts_again(tmp_path):
    spec = sweep.load_spec(TINY)
    only = ["rodimus--mem_size=8--lr=0.01"]
    clean = sweep.run_sweep(spec, tmp_path / "clean", only=only, say=lambda *a: None)
    out = tmp_path / "out"
    folder = out / "points" / only[0]
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{\"model\": {}}")
    (folder / "metrics.jsonl").write_text("{\"step\": 1, \"loss\": 9.0, \"kind\": \"train\"}\n")
    (out / "results.jsonl").write_text("{\"point\": \"cut off by a ki")   # a line the kill cut short
    records = sweep.run_sweep(spec, out, only=only, say=lambda *a: None)
    assert records[0]["resumed_from_step"] is None
    assert [comparable(r) for r in lines(out)] == [comparable(r) for r in clean]
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 4 + 2   # 4 steps, 2 evaluations


def test_a_changed_config_of_a_done_point_is_an_error(tmp_path):
    spec = sweep.load_spec(TINY)
    out = tmp_path / "out"
    sweep.run_sweep(spec, out, only=["transformer_plus_plus--lr=0.01"], say=lambda *a: None)
    with pytest.raises(ValueError, match=r"train.max_steps: 4 → 6.*another --out"):
        sweep.run_sweep(spec, out, only=["Transformer++"], overrides={"train.max_steps": 6}, say=lambda *a: None)
    assert len(lines(out)) == 1


def test_budget_stops_between_points_and_keeps_the_checkpoint(tmp_path):
    spec = sweep.load_spec(TINY)
    said = []
    written = sweep.run_sweep(spec, tmp_path, only=["Transformer++"], budget_s=0.0, say=said.append)
    assert written == [] and not (tmp_path / "results.jsonl").exists()
    assert "budget spent" in said[-1]


def test_workers_share_the_points_and_match_a_serial_sweep(tmp_path, capsys):
    only = ["Transformer++", "rodimus--mem_size=4--lr=0.01"]
    sweep.run_sweep(sweep.load_spec(TINY), tmp_path / "serial", only=only, say=lambda *a: None)
    args = ["sweep", str(TINY), "--out", str(tmp_path / "parallel"), "--workers", "2", "--only", *only]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "3 points over 2 worker processes" in said and "[worker 0]" in said and "[worker 1]" in said
    assert said.count("html: ") == 1   # the figure is drawn once, after the workers, not by each of them
    serial, parallel = lines(tmp_path / "serial"), lines(tmp_path / "parallel")
    assert sorted(r["point"] for r in parallel) == sorted(r["point"] for r in serial)   # each point once
    by_point = {r["point"]: comparable(r) for r in serial}
    assert all(comparable(r) == by_point[r["point"]] for r in parallel)   # the same training, in another process
    assert main(args) == 0 and "every selected point is done" in capsys.readouterr().out


def test_terminating_a_sweep_stops_its_workers(tmp_path):
    """A `timeout` or `kill` signals the sweep's own process: its workers must not train on unseen."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rodimus_lab.cli", "sweep", str(TINY), "--out", str(out), "--workers", "2",
           "--only", "Transformer++", "--set", "train.max_steps=100000", "train.checkpoint_every=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = set()
    for line in proc.stdout:   # both workers are training
        if "[1/1]" in line:
            started.add(line.split("]")[0])
        if len(started) == 2:
            break
    proc.terminate()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM

    def workers_alive():
        alive = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if str(out).encode() in cmdline.read_bytes():
                    alive.append(cmdline.parent.name)
            except OSError:   # the process ended while we looked
                pass
        return alive

    deadline = time.monotonic() + 30
    while workers_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers_alive() == []


def test_figure_from_the_results_fixture(tmp_path):
    spec = sweep.load_spec(TINY)
    shutil.copy(FIXTURES / "results.jsonl", tmp_path / "results.jsonl")
    records = sweep.read_results(tmp_path)
    series, references, rows = sweep.figure_series(records, spec.figure)
    # each (family, n) keeps its best learning rate
    for family, points in series.items():
        for n, y in points:
            same = [r["best"]["eval_accuracy"] for r in records
                    if r["family"] == family and r["config"]["model"]["mem_size"] == n]
            assert len(same) == 2 and y == max(same)
    assert set(series) == {"Rodimus"} and [n for n, _ in series["Rodimus"]] == [4, 8]
    assert references == {"Transformer++": max(r["best"]["eval_accuracy"] for r in records
                                               if r["family"] == "Transformer++")}
    assert len(rows) == 3

    assert main(["sweep", str(TINY), "--render", "--out", str(tmp_path)]) == 0
    html = (tmp_path / "tiny.html").read_text()
    assert "Rodimus (ours)" in html and "Rodimus+ (paper)" in html and "Transformer++ (ours, no fixed state)" in html
    table = (tmp_path / "tiny.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "`rodimus--mem_size=4--lr=0.01`" in table


def test_results_with_a_torn_last_line_read_and_damage_is_named(tmp_path, capsys):
    whole = (FIXTURES / "results.jsonl").read_text()
    (tmp_path / "results.jsonl").write_text(whole + '{"sweep": "tiny", "point": "rodim')   # a kill mid-append
    assert sweep.read_results(tmp_path) == [json.loads(line) for line in whole.splitlines()]
    first, rest = whole.split("\n", 1)
    (tmp_path / "results.jsonl").write_text(first + "\n" + first[:40] + "\n" + rest)   # a torn line, then more
    with pytest.raises(ValueError, match="results.jsonl, line 2, is not JSON"):
        sweep.read_results(tmp_path)
    assert main(["sweep", str(TINY), "--list", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "results.jsonl, line 2, is not JSON" in err and "delete or repair that line" in err


def test_learning_curve_rows_at_evaluations_and_every_n_steps():
    rows = [{"kind": "train", "step": s, "loss": float(s)} for s in range(1, 7)]
    rows.insert(3, {"kind": "eval", "step": 3, "eval_loss": 0.5, "eval_accuracy": 0.25})
    rows.append({"kind": "eval", "step": 6, "eval_loss": 0.4, "eval_accuracy": 0.75})
    assert sweep.learning_curve(rows) == [{"step": 3, "train_loss": 2.0, "eval_loss": 0.5, "eval_accuracy": 0.25},
                                          {"step": 6, "train_loss": 5.0, "eval_loss": 0.4, "eval_accuracy": 0.75}]
    assert sweep.learning_curve(rows, every=2) == [
        {"step": 2, "train_loss": 1.5}, {"step": 3, "train_loss": 3.0, "eval_loss": 0.5, "eval_accuracy": 0.25},
        {"step": 4, "train_loss": 4.0}, {"step": 6, "train_loss": 5.5, "eval_loss": 0.4, "eval_accuracy": 0.75}]


def test_curves_of_a_probe_come_from_the_run_folders(tmp_path, capsys):
    """A probe: a sweep with --set and --only into a scratch --out, then --curves prints each point's curve."""
    probe = ["sweep", str(TINY), "--out", str(tmp_path), "--only", "Transformer++",
             "--set", "train.max_steps=6", "train.eval_every=3"]
    assert main(probe + ["--curves"]) == 2
    assert "no learning curve" in capsys.readouterr().err   # nothing trained yet
    assert main(probe + ["--no-figure"]) == 0
    capsys.readouterr()
    assert main(probe[:5] + ["Transformer++", "rodimus--mem_size=4--lr=0.01", "--curves", "--curve-every", "2"]) == 0
    said = capsys.readouterr().out
    assert "rodimus--mem_size=4--lr=0.01 (todo): no learning curve" in said
    for record in lines(tmp_path):
        metrics = [json.loads(line) for line in
                   (tmp_path / "points" / record["point"] / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in metrics if r["kind"] == "train"]
        block = said.split(f"{record['point']} (done):\n")[1].splitlines()
        header, rows = block[0].split(), [line.split() for line in block[1:5]]
        assert header == ["step", "train_loss", "eval_loss", "eval_ppl", "eval_accuracy"]
        assert [row[0] for row in rows] == ["2", "3", "4", "6"]   # every 2 steps and at each evaluation (--set)
        assert float(rows[1][1]) == pytest.approx(losses[2], abs=1e-4)        # step 3: the mean since step 2
        assert float(rows[3][1]) == pytest.approx(sum(losses[4:6]) / 2, abs=1e-4)
        assert rows[0][2:] == ["-", "-", "-"]
        final = record["final"]
        assert [float(v) for v in rows[3][2:]] == pytest.approx(
            [final["eval_loss"], final["eval_ppl"], final["eval_accuracy"]], abs=1e-4)


def test_cli_list_and_missing_results(tmp_path, capsys):
    assert main(["sweep", str(TINY), "--list", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("todo") == 6
    assert main(["sweep", str(TINY), "--render", "--out", str(tmp_path)]) == 2
    assert "no results to render" in capsys.readouterr().err
    assert main(["sweep", str(TINY), "--list", "--set", "lr=0.1"]) == 2
    assert "not a field path" in capsys.readouterr().err
    with pytest.raises(SystemExit):   # one way to read a sweep at a time, not the first one silently
        main(["sweep", str(TINY), "--list", "--render"])
    assert "not allowed with argument --list" in capsys.readouterr().err


@pytest.mark.parametrize("spec", sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml")))
def test_shipped_specs_resolve(spec):
    """Every point of the shipped sweeps builds a valid config (without training anything)."""
    loaded = sweep.load_spec(spec)
    for point in loaded.points():
        model_fields, train_cfg, data_cfg = sweep._resolved(point)
        sweep.ModelConfig.from_dict({**model_fields, "vocab_size": 8192})


def test_listing_a_sweep_needs_no_plotly(tmp_path):
    """A bare GPU machine (no plotly) loads and lists a sweep; only --render draws. ``sys.modules['plotly'] =
    None`` makes every ``import plotly`` fail, as on such a machine; the last line catches an import of the
    drawing code that an ``except ImportError`` would hide."""
    spec = Path(__file__).parent.parent / "experiments" / "mqar_state_size.yaml"
    code = ("import sys; sys.modules['plotly'] = None\n"
            "from rodimus_lab.cli import main\n"
            f"assert main(['sweep', {str(spec)!r}, '--list', '--out', {str(tmp_path)!r}]) == 0\n"
            "assert 'rodimus_lab.viz' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "todo" in done.stdout


def test_git_state_records_the_commit_it_is_told(monkeypatch):
    """A tree copied into an ignored folder of an older clone must not record that clone's HEAD."""
    monkeypatch.setenv("RODIMUS_LAB_COMMIT", "707453a")
    assert sweep.git_state() == {"commit": "707453a", "dirty": None}
    monkeypatch.delenv("RODIMUS_LAB_COMMIT")
    commit = sweep.git_state()["commit"]
    assert commit is None or (len(commit) == 40 and all(c in "0123456789abcdef" for c in commit))


def test_set_given_twice_applies_both_lists():
    """A script adds its own --set after the caller's (benchmarks/run_paper_sweeps.sh's SET): neither may be lost."""
    import argparse

    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    args = parser.parse_args(["spec.yaml", "--set", "train.max_steps=5", "data.seq_len=64", "--set", "train.lr=0.1"])
    assert args.set == ["train.max_steps=5", "data.seq_len=64", "train.lr=0.1"]


def test_a_worker_gets_every_flag_of_what_it_trains():
    """--workers N starts N copies of the command: each must get the parent's spec overrides, folders, device,
    budget and source (a flag forgotten there would train the workers' points with another config)."""
    import argparse

    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    flags = {a.dest for a in parser._actions} - {"help"}
    assert flags == set(sweep.WORKER_FLAGS) | set(sweep.PARENT_FLAGS), "a new flag: add it to WORKER_FLAGS or PARENT_FLAGS"
    parent = parser.parse_args(["spec.yaml", "--workers", "3", "--runs", "/r", "--device", "cuda:1", "--budget", "90",
                                "--source", "/text", "--set", "train.lr=0.1", "model.n_layers=3"])
    cmd = sweep._worker_command(parent, Path("/out"), ["a", "b"])
    worker = parser.parse_args(cmd[cmd.index("sweep") + 1:])
    assert {f: getattr(worker, f) for f in sweep.WORKER_FLAGS} == {f: getattr(parent, f) for f in sweep.WORKER_FLAGS}
    assert (worker.workers, worker.only, worker.out, worker.figure) == (1, ["a", "b"], "/out", False)
