"""The demo's early stop: a held-out MQAR validation set (DataConfig.num_valid) checked cheaply every few
steps (train.AccuracyCheck), the full test set evaluated only once the check reaches the target."""

import pytest
import torch

from rodimus_lab import ModelConfig, RodimusLM, seed_everything
from rodimus_lab.data.recipe import DataConfig, build_data, validation_split
from rodimus_lab.train import AccuracyCheck, TrainConfig, Trainer

RECIPE = dict(task="mqar", preset="demo", seq_len=16, num_kv_pairs=2, vocab_size=32, num_train=200, num_test=40)


def test_validation_examples_are_held_out_of_training():
    full, test, _ = build_data(DataConfig(**RECIPE))
    train, _, _ = build_data(DataConfig(**RECIPE, num_valid=50))
    valid = validation_split(DataConfig(**RECIPE, num_valid=50))
    assert len(train) == 150 and len(valid) == 50
    assert torch.equal(torch.cat([train.inputs, valid.inputs]), full.inputs)   # the same examples, split
    assert valid.seq_len == 16 and valid.num_kv_pairs == 2
    with pytest.raises(ValueError, match="num_valid = 200 leaves no training examples"):
        build_data(DataConfig(**RECIPE, num_valid=200))
    with pytest.raises(ValueError, match="num_valid"):
        validation_split(DataConfig(**RECIPE))


def fit(target, every=3, max_steps=12):
    cfg = DataConfig(**RECIPE, num_valid=50)
    train, test, _ = build_data(cfg)
    seed_everything(0)
    model = RodimusLM(ModelConfig(vocab_size=32, d_model=16, n_layers=1, mem_size=4, backend="reference"))
    trainer = Trainer(model, train, test, TrainConfig(max_steps=max_steps, batch_size=8, lr=1e-2, warmup_steps=1,
                                                      eval_every=0, stop_at_accuracy=target, progress=False),
                      callbacks=[AccuracyCheck(validation_split(cfg), target if target else 1.0, every)])
    trainer.fit()
    return trainer, [(r["kind"], r["step"]) for r in trainer.history if r["kind"] != "train"]


def test_checks_every_k_steps_and_evaluates_the_test_set_once_at_the_end():
    trainer, rows = fit(target=1.0)   # unreachable for this tiny model
    assert rows == [("check", 3), ("check", 6), ("check", 9), ("check", 12), ("eval", 12)]
    assert trainer.step == 12


def test_stops_once_the_check_and_then_the_test_set_reach_the_target():
    trainer, _ = fit(target=1.0)
    checks = [r["check_accuracy"] for r in trainer.history if r["kind"] == "check"]
    target = sorted(checks)[1]   # reached at some check, not necessarily the first
    stopped, rows = fit(target=target)
    first = next(3 * (i + 1) for i, a in enumerate(checks) if a >= target)
    assert rows[:first // 3] == [("check", s) for s in range(3, first + 1, 3)]
    evals = [r for r in stopped.history if r["kind"] == "eval"]
    assert evals[0]["step"] == first   # the test set is evaluated when the check passes ...
    assert stopped.step == evals[-1]["step"] and stopped.step <= 12   # ... and training ends at its verdict
    assert stopped.step == 12 or evals[-1]["eval_accuracy"] >= target
    assert fit(target=target)[1] == rows   # deterministic
