"""Data parallelism through torchrun (gloo on the CPU): 2 processes = 1 process with the same global
batch, a 2-process checkpoint resumes with 1 process, and bad launches fail with clear errors."""

import json
import shutil

import pytest
import torch

from rodimus_lab import ModelConfig, RodimusLM
from rodimus_lab import distributed
from rodimus_lab.cli import main
from rodimus_lab.data.mqar import make_mqar_splits, mqar_preset
from rodimus_lab.train import TrainConfig, Trainer

# grad_accum 2 with 2 processes: each rank runs 2 micro-batches of 2 (DDP's no_sync path included)
TINY = ["--task", "mqar", "--preset", "L64_p4", "--seq-len", "16", "--num-kv-pairs", "2", "--vocab-size", "64",
        "--num-train", "128", "--num-test", "32", "--d-model", "32", "--n-layers", "1", "--mem-size", "8",
        "--max-steps", "6", "--batch-size", "8", "--grad-accum", "2", "--lr", "0.01", "--warmup-steps", "2",
        "--eval-every", "3", "--checkpoint-every", "3", "--keep-last", "5", "--progress", "false",
        "--device", "cpu"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):   # these tests start outside torchrun
        monkeypatch.delenv(name, raising=False)


def _rows(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def _close(a, b):
    assert len(a) == len(b)
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)



@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: an uninterrupted single-process run (no process group at all)."""
    out = tmp_path_factory.mktemp("one")
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_two_processes_match_one_then_resume_with_one(one_process, tmp_path, capsys):
    two = tmp_path / "two"
    assert main(["train", "--nproc", "2", *TINY, "--out", str(two)]) == 0   # torchrun, gloo, 2 ranks
    assert "torch.distributed.run" in capsys.readouterr().out

    reference = _rows(one_process, "train")
    train = _rows(two, "train")                   # written by rank 0 alone: one row per step
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert train[0]["loss"] != pytest.approx(train[-1]["loss"], abs=1e-2)   # it learned something to compare
    _close([r["loss"] for r in train], [r["loss"] for r in reference])
    _close([r["grad_norm"] for r in train], [r["grad_norm"] for r in reference])
    _close([r["eval_loss"] for r in _rows(two, "eval")], [r["eval_loss"] for r in _rows(one_process, "eval")])
    saved = sorted(p.name for p in (two / "checkpoints").iterdir())
    assert saved == ["ckpt-000003.json", "ckpt-000003.safetensors", "ckpt-000006.json", "ckpt-000006.safetensors"]

    # the 2-process checkpoint at step 3, continued by one process
    cut = tmp_path / "cut"
    shutil.copytree(two, cut)
    for late in (cut / "checkpoints").glob("ckpt-000006.*"):
        late.unlink()
    code = main(["train", *TINY, "--out", str(cut), "--resume"])
    assert code == 0 and "at step 3" in capsys.readouterr().out
    _close([r["loss"] for r in _rows(cut, "train")], [r["loss"] for r in reference])
    assert [r["step"] for r in _rows(cut, "train")] == [1, 2, 3, 4, 5, 6]


@pytest.fixture(scope="module")
def task():
    return make_mqar_splits(mqar_preset("L64_p4", seq_len=16, num_kv_pairs=2, vocab_size=64, num_train=40, num_test=8))


def test_ranks_split_the_global_batch(task):
    """Rank r takes every world_size-th example of the global batch: together the same examples
    as one process, whatever the number of processes (so checkpoints move between them)."""
    def trainer(rank, world):
        model = RodimusLM(ModelConfig(vocab_size=64, d_model=16, n_layers=1, mem_size=4, backend="reference"))
        return Trainer(model, task[0], None, TrainConfig(batch_size=12, progress=False), rank=rank, world_size=world)

    single = trainer(0, 1)
    for world in (2, 3, 4):
        ranks = [trainer(r, world) for r in range(world)]
        for step in (0, 3, 7):   # step 3 crosses an epoch boundary (40 examples, 12 per step)
            shards = [t.batch_indices(step) for t in ranks]
            assert all(len(s) == 12 // world for s in shards)
            assert sorted(torch.cat(shards).tolist()) == sorted(single.batch_indices(step).tolist())


def test_global_batch_that_does_not_divide(task, tmp_path, capsys):
    model = RodimusLM(ModelConfig(vocab_size=64, d_model=16, n_layers=1, mem_size=4, backend="reference"))
    with pytest.raises(ValueError, match=r"batch_size = 10 .*world_size × grad_accum = 2 × 2 = 4.*--batch-size 8 or 12"):
        Trainer(model, task[0], None, TrainConfig(batch_size=10, grad_accum=2, progress=False), rank=0, world_size=2)
    code = main(["train", "--nproc", "3", *TINY, "--out", str(tmp_path / "run")])   # 8 over 3 × 2
    err = capsys.readouterr().err
    assert code == 2 and "world_size × grad_accum = 3 × 2 = 6" in err
    assert not (tmp_path / "run").exists()        # refused before anything started


@pytest.mark.parametrize("env, match", [
    ({"WORLD_SIZE": "0", "RANK": "0", "LOCAL_RANK": "0"}, r"WORLD_SIZE=0 is invalid"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, r"RANK=2 is invalid for WORLD_SIZE=2"),
    ({"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"}, r"WORLD_SIZE='two' is not an integer"),
])
def test_bad_torchrun_environment(monkeypatch, env, match):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        distributed.setup("cpu")


def test_more_processes_than_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"2 processes on this host but only 1 CUDA device.*--nproc_per_node ≤ 1"):
        distributed.setup("auto")


def test_bad_nproc(tmp_path, capsys, monkeypatch):
    code = main(["train", "--nproc", "0", *TINY, "--out", str(tmp_path / "run")])
    assert code == 2 and "--nproc 0 is invalid" in capsys.readouterr().err
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    code = main(["train", "--nproc", "2", *TINY, "--out", str(tmp_path / "run")])
    assert code == 2 and "already runs under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
