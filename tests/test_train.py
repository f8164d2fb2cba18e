"""Trainer: learning, exact resume, checkpoints (atomic, verified, config-checked), schedule, groups."""

import json

import pytest
import torch

from rodimus_lab import ModelConfig, RodimusLM, seed_everything
from rodimus_lab.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from rodimus_lab.data.mqar import make_mqar_splits, mqar_preset
from rodimus_lab.train import Callback, TrainConfig, Trainer, evaluate, param_groups


TINY = dict(vocab_size=64, d_model=32, n_layers=1, mem_size=8, backend="reference")


@pytest.fixture(scope="module")
def task():
    return make_mqar_splits(mqar_preset("L64_p4", seq_len=16, num_kv_pairs=2, vocab_size=64,
                                        num_train=256, num_test=64))


def _trainer(task, seed=0, callbacks=(), **overrides):
    seed_everything(seed)
    settings = dict(max_steps=10, batch_size=8, lr=3e-3, warmup_steps=3, eval_every=5, progress=False)
    settings.update(overrides)
    return Trainer(RodimusLM(ModelConfig(**TINY)), task[0], task[1], TrainConfig(**settings), callbacks)


def _losses(history):
    return [(r["step"], r["loss"]) for r in history if r["kind"] == "train"]


def test_training_reduces_loss(task):
    trainer = _trainer(task, max_steps=60, lr=1e-2, eval_every=0)
    history = trainer.fit()
    losses = [loss for _, loss in _losses(history)]
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    final = history[-1]
    assert final["kind"] == "eval" and final["step"] == 60 and 0 <= final["eval_accuracy"] <= 1


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step(self, metrics, trainer):
        if metrics["step"] == self.step:
            trainer.should_stop = True


def test_resume_equals_uninterrupted_run(task, tmp_path):
    common = dict(grad_accum=2, checkpoint_every=0)
    full = _trainer(task, out_dir=str(tmp_path / "full"), **common)
    full.fit()

    first = _trainer(task, callbacks=[StopAt(4)], out_dir=str(tmp_path / "cut"), **common)
    first.fit()                                    # stops after step 4, checkpoints on the way out
    assert first.step == 4
    second = _trainer(task, seed=123, out_dir=str(tmp_path / "cut"), **common)   # other init, then loaded
    second.resume()
    assert second.step == 4
    second.fit()

    assert _losses(second.history) == _losses(full.history)          # bitwise, step by step
    for a, b in zip(full.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    logged = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert _losses(logged) == _losses(full.history)                  # the log reads like one run


def test_resume_after_a_kill_tore_the_last_metrics_line(task, tmp_path):
    first = _trainer(task, callbacks=[StopAt(4)], out_dir=str(tmp_path), checkpoint_every=0)
    first.fit()
    log = tmp_path / "metrics.jsonl"
    complete = log.read_text()
    with open(log, "a") as f:   # the kill came while the step-5 row was being appended
        f.write('{"step": 5, "kind": "train", "lo')
    second = _trainer(task, out_dir=str(tmp_path), checkpoint_every=0)
    second.resume()
    assert second.step == 4 and second.history == [json.loads(line) for line in complete.splitlines()]
    assert log.read_text() == complete                                # the torn line is gone from the file
    second.fit()
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s for s, _ in _losses(logged)] == list(range(1, 11))


def test_callbacks_see_every_step_and_eval(task):
    seen = {"step": 0, "eval": 0, "end": []}

    class Count(Callback):
        def on_step(self, metrics, trainer):
            seen["step"] += 1
            assert trainer.step == metrics["step"]

        def on_eval(self, metrics, trainer):
            seen["eval"] += 1
            assert "eval_loss" in metrics and "eval_ppl" in metrics

        def on_end(self, metrics, trainer):
            seen["end"].append(metrics)

    _trainer(task, callbacks=[Count()]).fit()
    assert seen["step"] == 10 and seen["eval"] == 2 and len(seen["end"]) == 1
    assert seen["end"][0]["step"] == 10 and "eval_accuracy" in seen["end"][0]


def test_stop_at_accuracy(task):
    trainer = _trainer(task, stop_at_accuracy=1e-9, eval_every=2)
    trainer.fit()
    assert trainer.step == 2


@pytest.fixture
def saved_run(task, tmp_path):
    trainer = _trainer(task, max_steps=6, checkpoint_every=2, keep_last=2, out_dir=str(tmp_path / "run"))
    trainer.fit()
    return trainer, tmp_path / "run" / "checkpoints"


def test_keep_last_and_config_json(saved_run):
    trainer, folder = saved_run
    assert [p.name for p in list_checkpoints(folder)] == ["ckpt-000004.json", "ckpt-000006.json"]
    saved = json.loads((folder.parent / "config.json").read_text())
    assert saved["model"]["d_model"] == 32 and saved["train"]["max_steps"] == 6


@pytest.mark.parametrize("damage", ["flip", "truncate", "json"])
def test_damaged_checkpoint_is_refused_and_previous_still_loads(saved_run, damage):
    trainer, folder = saved_run
    latest = folder / "ckpt-000006.safetensors"
    if damage == "flip":
        blob = bytearray(latest.read_bytes())
        blob[-3] ^= 0xFF
        latest.write_bytes(bytes(blob))
    elif damage == "truncate":
        latest.write_bytes(latest.read_bytes()[:100])
    else:
        (folder / "ckpt-000006.json").write_text('{"format": "rodimus-lab-checkpoint/1", "ste')
    model = RodimusLM(ModelConfig(**TINY))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(folder / "ckpt-000006.json", model)
    meta = load_checkpoint(folder / "ckpt-000004.json", model)
    assert meta["step"] == 4


def test_checkpoint_from_another_config_is_refused(saved_run):
    _, folder = saved_run
    other = RodimusLM(ModelConfig(**{**TINY, "d_model": 48}))
    with pytest.raises(CheckpointError, match="another model config.*d_model: checkpoint 32 vs model 48"):
        load_checkpoint(folder, other)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)


def test_checkpoint_reproduces_training_metric(saved_run, task):
    trainer, folder = saved_run
    final = [r for r in trainer.history if r["kind"] == "eval"][-1]
    meta = load_checkpoint(folder)
    model = RodimusLM(ModelConfig.from_dict(meta["model_config"]))
    load_checkpoint(folder, model)
    again = evaluate(model, task[1], batch_size=trainer.config.eval_batch_size)
    assert again["eval_loss"] == final["eval_loss"]
    assert again["eval_accuracy"] == final["eval_accuracy"]


def test_tied_embeddings_round_trip(task, tmp_path):
    seed_everything(0)
    model = RodimusLM(ModelConfig(**TINY, tie_embeddings=True))
    trainer = Trainer(model, task[0], None, TrainConfig(max_steps=2, batch_size=4, progress=False,
                                                        out_dir=str(tmp_path)))
    trainer.fit()
    fresh = RodimusLM(ModelConfig(**TINY, tie_embeddings=True))
    load_checkpoint(tmp_path, fresh)
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)
    assert fresh.lm_head.weight is fresh.embeddings.weight


def test_no_weight_decay_groups():
    model = RodimusLM(ModelConfig(**TINY))
    decay, keep = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    kept = {names[id(p)] for p in keep["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "embeddings.weight" in kept and "layers.0.mixer.residual_weight" in kept
    assert "layers.0.mixer_norm.weight" in kept and "layers.0.mixer.mem_gate_proj.bias" in kept
    assert "layers.0.mixer.fc.weight" in decayed and "lm_head.weight" in decayed
    assert keep["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1
    assert len(kept) + len(decayed) == len(names)


def test_warmup_then_cosine():
    c = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert c.lr_at(0) == pytest.approx(0.1) and c.lr_at(9) == pytest.approx(1.0)
    assert c.lr_at(10) == pytest.approx(1.0)
    assert c.lr_at(60) == pytest.approx(0.55)
    assert c.lr_at(110) == pytest.approx(0.1)


@pytest.mark.parametrize("field, value, match", [
    ("batch_size", 0, "batch_size"),
    ("lr", -1.0, "TrainConfig.lr"),
    ("precision", "fp8", "precision"),
    ("grad_accum", 3, "batch_size"),          # 32 is not a multiple of 3
    ("device", "tpu", "device"),
])
def test_bad_train_config_names_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_unknown_train_config_key():
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
