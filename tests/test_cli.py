"""`rodimus-lab` end to end on tiny runs: demo, train → eval/generate, configs, info, errors."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from rodimus_lab.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "wikitext-tiny"
TINY_MQAR = ["--task", "mqar", "--preset", "L64_p4", "--seq-len", "16", "--num-kv-pairs", "2", "--vocab-size", "64",
             "--num-train", "128", "--num-test", "32", "--d-model", "32", "--n-layers", "1", "--mem-size", "8",
             "--max-steps", "4", "--batch-size", "8", "--eval-every", "2", "--progress", "false"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")



def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_fast_writes_report(tmp_path, capsys):
    code, out, _ = _run(capsys, "demo", "--fast", "--out", tmp_path, "--batch-size", 16)
    assert code == 0
    assert "MQAR accuracy" in out and "report:" in out
    page = (tmp_path / "report.html").read_text()
    assert "plotly" in page and not re.search(r"<script[^>]*src=", page)   # plotly.js inlined, no CDN
    assert "DDTS gates" in page and "training loss" in page and "test accuracy" in page   # panel titles in words
    assert "a query for key k whose answer is v" in page                                          # the key to the tokens
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["data"]["preset"] == "demo" and saved["train"]["batch_size"] == 16


@pytest.fixture(scope="module")
def mqar_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mqar")
    assert main(["train", *TINY_MQAR, "--out", str(out)]) == 0
    return out


def test_eval_reproduces_training_metric(mqar_run, capsys):
    rows = [json.loads(line) for line in (mqar_run / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if r["kind"] == "eval"][-1]
    code, out, _ = _run(capsys, "eval", "--checkpoint", mqar_run)
    assert code == 0
    result = json.loads(out)
    assert result["step"] == final["step"] == 4
    assert result["eval_loss"] == final["eval_loss"]
    assert result["eval_accuracy"] == final["eval_accuracy"]


def test_resume_continues_a_run(mqar_run, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_MQAR, "--out", str(run)]) == 0
    code, out, _ = _run(capsys, "train", *TINY_MQAR, "--max-steps", 6, "--out", run, "--resume")
    assert code == 0 and "resumed from" in out and "at step 4" in out
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 6


def test_generate_from_mqar_checkpoint(mqar_run, capsys):
    args = ("generate", "--checkpoint", mqar_run, "--prompt-ids", "3 40 5 50 3", "--max-new-tokens", 4, "--temperature", 0)
    code, out, _ = _run(capsys, *args)
    assert code == 0
    ids = out.split()
    assert ids[:5] == ["3", "40", "5", "50", "3"] and len(ids) == 9
    assert _run(capsys, *args)[1] == out                     # greedy is deterministic
    code, _, err = _run(capsys, "generate", "--checkpoint", mqar_run, "--prompt", "hello")
    assert code == 2 and "--prompt-ids" in err


def test_text_run_and_generate_with_sampling(tmp_path, capsys):
    out = tmp_path / "text"
    code, _, _ = _run(capsys, "train", "--task", "text", "--source", FIXTURE, "--vocab-size", 300, "--block-size", 32,
                      "--data-dir", tmp_path / "data", "--d-model", 32, "--n-layers", 1, "--mem-size", 8,
                      "--max-steps", 2, "--batch-size", 4, "--progress", "false", "--out", out)
    assert code == 0
    for flags in (["--top-k", 5], ["--top-p", 0.9], ["--temperature", 0]):
        code, text, err = _run(capsys, "generate", "--checkpoint", out, "--prompt", "The lobster", "--seed", 0,
                               "--max-new-tokens", 5, *flags)
        assert code == 0, err
        assert text.startswith("The lobster")


def test_config_file_then_flags(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  d_model: 48\n  n_layers: 1\n  mem_size: 8\ntrain:\n  max_steps: 2\n  batch_size: 4\n"
                      "  progress: false\ndata:\n  task: mqar\n  seq_len: 16\n  num_kv_pairs: 2\n  vocab_size: 64\n"
                      "  num_train: 32\n  num_test: 8\n")
    code, _, err = _run(capsys, "train", "--config", config, "--d-model", 32, "--out", tmp_path / "run")
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["d_model"] == 32 and saved["model"]["n_layers"] == 1 and saved["model"]["vocab_size"] == 64
    assert saved["train"]["max_steps"] == 2 and saved["data"]["seq_len"] == 16


@pytest.mark.parametrize("content, match", [
    ('{"model": {"d_modle": 32}}', r"unknown ModelConfig field\(s\) \['d_modle'\]"),
    ('{"train": {"lr": -1}}', "TrainConfig.lr"),
    ('{"optimizer": {}}', r"unknown section\(s\) \['optimizer'\]"),
    ('{"data": {"preset": "L65_p4"}}', "DataConfig.preset = 'L65_p4' is invalid: expected one of 'L64_p4'"),
    ('{"data": {"task": "vision"}}', "DataConfig.task"),
    ('{"model": {"vocab_size": 100}, "data": {"vocab_size": 64, "seq_len": 16, "num_kv_pairs": 2}}',
     "model.vocab_size = 100 differs"),
    ('{"data": {"seq_len": 63}}', "even"),
    ("{not json", "not valid JSON"),
])
def test_bad_configs_name_what_is_wrong(tmp_path, capsys, content, match):
    config = tmp_path / "bad.json"
    config.write_text(content)
    code, _, err = _run(capsys, "train", "--config", config, "--out", tmp_path / "run")
    assert code == 2
    assert re.search(match, err), err
    assert not (tmp_path / "run").exists()                   # nothing written


def test_missing_data_files_and_checkpoints(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "--task", "text", "--source", tmp_path, "--out", tmp_path / "run")
    assert code == 2 and "no 'train' split" in err
    code, _, err = _run(capsys, "eval", "--checkpoint", tmp_path / "none")
    assert code == 2 and "does not exist" in err


def test_damaged_checkpoint_eval_fails_cleanly(mqar_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(mqar_run, run)
    (tensors,) = (run / "checkpoints").glob("*.safetensors")
    tensors.write_bytes(tensors.read_bytes()[:-10])
    code, _, err = _run(capsys, "eval", "--checkpoint", run)
    assert code == 2 and "damaged" in err


def test_info(capsys):
    code, out, _ = _run(capsys, "info", "--d-model", 64, "--n-layers", 2, "--mem-size", 16, "--context", 16, 1024)
    assert code == 0
    assert "parameters:" in out and "bytes per token" in out and "each further token adds 0 bytes" in out
    code, out, _ = _run(capsys, "info", "--block", "transformer", "--d-model", 64, "--n-heads", 2, "--context", 16)
    assert code == 0 and "each further token adds 512 bytes" in out    # 2 layers · (K + V) · 64 · 2 bytes


# ------------------------------------------------------------------------------ run folders

def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "train"]


def test_demo_twice_into_one_folder_refuses_the_second(tmp_path, capsys):
    run = tmp_path / "demo"
    assert _run(capsys, "demo", "--fast", "--out", run)[0] == 0
    before = _snapshot(run)
    code, out, err = _run(capsys, "demo", "--fast", "--out", run, "--steps", 30)
    assert code == 2 and "MQAR accuracy" not in out
    assert re.search(r"--out .*demo already holds a run \(config\.json, metrics\.jsonl, checkpoints, report\.html\): "
                     r"replace it with --overwrite, or choose another --out", err), err
    assert _snapshot(run) == before                         # not one byte changed


def test_demo_overwrite_leaves_one_consistent_run(tmp_path, capsys):
    run = tmp_path / "demo"
    assert _run(capsys, "demo", "--fast", "--out", run, "--steps", 30)[0] == 0
    code, _, err = _run(capsys, "demo", "--fast", "--out", run, "--overwrite")
    assert code == 0 and "deleted the earlier run" in err
    assert _steps(run) == list(range(1, 21))                # one run: steps 1..20 once
    assert [p.name for p in sorted((run / "checkpoints").glob("*.json"))] == ["ckpt-000020.json"]
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 20
    code, out, _ = _run(capsys, "eval", "--checkpoint", run)
    assert code == 0 and json.loads(out)["step"] == 20


def test_demo_default_folder_takes_the_next_free_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _run(capsys, "demo", "--fast")[0] == 0
    first = _snapshot(tmp_path / "runs" / "demo")
    code, out, _ = _run(capsys, "demo", "--fast")
    assert code == 0 and "runs/demo holds an earlier demo run; this one writes to runs/demo-2" in out
    assert _snapshot(tmp_path / "runs" / "demo") == first
    assert (tmp_path / "runs" / "demo-2" / "report.html").is_file()


def test_train_into_a_run_folder_names_resume_and_overwrite(mqar_run, capsys):
    before = _snapshot(mqar_run)
    code, _, err = _run(capsys, "train", *TINY_MQAR, "--out", mqar_run)
    assert code == 2 and "continue it with --resume, replace it with --overwrite, or choose another --out" in err
    assert _snapshot(mqar_run) == before


def test_resume_takes_the_saved_config(mqar_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(mqar_run, run)
    code, out, err = _run(capsys, "train", "--out", run, "--resume", "--max-steps", 6, "--eval-every", 3,
                          "--cuda-graphs", "false", "--log-every", 2)   # how it runs may change (train.HOW_IT_RUNS)
    assert code == 0, err
    assert "at step 4" in out and "d_model 32" in out      # the run's own model, no flags repeated
    assert _steps(run) == [1, 2, 3, 4, 5, 6]
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["d_model"] == 32 and saved["train"]["max_steps"] == 6 and saved["data"]["seq_len"] == 16
    assert saved["train"]["cuda_graphs"] is False and saved["train"]["log_every"] == 2
    code, out, _ = _run(capsys, "eval", "--checkpoint", run)   # the folder's latest checkpoint: step 6
    assert code == 0 and json.loads(out)["step"] == 6


def test_resume_refuses_a_conflicting_model_flag(mqar_run, capsys):
    before = _snapshot(mqar_run)
    code, _, err = _run(capsys, "train", "--out", mqar_run, "--resume", "--d-model", 64)
    assert code == 2
    assert "--d-model 64 conflicts with the run in" in err and "saved with d_model = 32" in err
    assert "drop --d-model" in err
    assert _snapshot(mqar_run) == before


def test_ctrl_c_names_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    from rodimus_lab.train import Trainer

    step = Trainer._queue_step   # what the training loop runs for each step

    def interrupted_at_3(self):
        if self.step == 2 and self.config.max_steps == 4:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(Trainer, "_queue_step", interrupted_at_3)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", *TINY_MQAR, "--checkpoint-every", 2, "--out", run)
    assert code == 130 and "Traceback" not in err
    last = run / "checkpoints" / "ckpt-000002.json"
    assert (f"stopped by Ctrl-C during step 3; the last good checkpoint is {last}; "
            f"continue with: rodimus-lab train --out {run} --resume") in err
    code, out, err = _run(capsys, "train", "--out", run, "--resume", "--max-steps", 5)
    assert code == 0 and "at step 2" in out, err
    assert _steps(run) == [1, 2, 3, 4, 5]


def test_help_lists_every_enumerated_field(capsys):
    from rodimus_lab.cli import SECTIONS

    for command, sections in (("train", ("model", "train", "data")), ("info", ("model",)), ("eval", ("data",))):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())   # argparse wraps lines
        assert "examples:" in text and f"rodimus-lab {command} " in text
        for section in sections:
            for f in dataclasses.fields(SECTIONS[section]):
                allowed = f.metadata["allowed"]
                if f.name == "vocab_size" and section == "model":
                    continue
                assert f.metadata["help"].split(";")[0][:30] in text.replace("%%", "%"), f.name
                assert allowed.words in text, f.name
                for choice in allowed.choices:
                    assert (choice if isinstance(choice, str) else json.dumps(choice)) in text   # true/false


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="ModelConfig.d_model = 0"):
        main(["train", *TINY_MQAR, "--d-model", "0", "--out", str(tmp_path / "run"), "--debug"])


def test_bench_decode_writes_under_runs_and_keeps_the_profiler_quiet(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["bench", "decode", "--device", "cpu", "--d-model", "32", "--vocab-size", "64", "--contexts", "8",
                 "--steps", "1", "--warmup", "1", "--models", "rodimus"])
    out, err = capfd.readouterr()                           # file descriptors: the profiler's C++ logging too
    assert code == 0 and "results written to runs/bench/decode.json" in out
    assert json.loads((tmp_path / "runs" / "bench" / "decode.json").read_text())["rows"][0]["context"] == 8
    assert "USDT" not in out + err and not (tmp_path / "docs").exists()
