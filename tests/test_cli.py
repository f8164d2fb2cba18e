"""`rodimus-lab` end to end on tiny runs: demo, train → eval/generate, configs, info, errors."""

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
    assert "DDTS gates" in page and "eval_accuracy" in page
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
    ('{"data": {"preset": "L65_p4"}}', "unknown MQAR preset 'L65_p4'"),
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
