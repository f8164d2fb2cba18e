"""benchmarks/mqar_probe.py on the CPU at toy sizes: every evaluation of every variant is printed as a line
and saved, overrides reach the model, and a family the spec does not have is named."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOY = ["data.seq_len=16", "data.num_kv_pairs=2", "data.vocab_size=32", "data.num_train=64", "data.num_test=16",
       "train.max_steps=4", "train.eval_every=2", "train.batch_size=8", "train.eval_batch_size=16",
       "train.warmup_steps=1", "train.checkpoint_every=2", "model.d_model=32"]   # a probe keeps no checkpoint


def probe(tmp_path, *variants):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "mqar_probe.py"), "--device", "cpu", "--budget", "240",
           "--workers", "2", "--log-every", "2", "--out", str(tmp_path)]
    for v in variants:
        cmd += ["--variant", *v]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_curves_of_two_variants(tmp_path):
    done = probe(tmp_path, ["tpp", "Transformer++", *TOY], ["rp", "Rodimus+", *TOY, "model.mem_size=8", "model.window=4"])
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("rp: Rodimus+") and "n=8 window=4" in line for line in lines)
    for name in ("tpp", "rp"):
        evals = [line for line in lines if line.startswith(f"{name} step") and "eval_accuracy" in line]
        assert [line.split()[2] for line in evals] == ["2", "4"]
        assert any(line.startswith(f"{name} step 2 train_loss") for line in lines)
        saved = [json.loads(row) for row in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert [r["step"] for r in saved] == [2, 4] and all(0 <= r["eval_accuracy"] <= 1 for r in saved)


def test_an_unknown_family_is_named(tmp_path):
    done = probe(tmp_path, ["x", "Mamba", *TOY])
    assert done.returncode != 0 and "no family 'Mamba'" in done.stdout
