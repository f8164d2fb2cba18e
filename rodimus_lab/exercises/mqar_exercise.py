"""Exercises on measuring recall: the MQAR metric (Zoology's definition), and one training run
measured the way the paper reports it (the best evaluation), with a sanity check of a student's
predict-then-measure experiment.

Answer key: :func:`rodimus_lab.data.mqar.mqar_accuracy`; the library's ``Trainer``.
"""

from __future__ import annotations

import math

import torch

from .. import seed_everything
from ..config import ModelConfig
from ..data.mqar import MQARPreset, make_mqar_splits, mqar_accuracy
from ..model import RodimusLM
from ..train import TrainConfig, Trainer
from .harness import Bug, Case, Exercise, randint, randn

IGNORE = -100


def _mqar_cases(gen):
    """Examples with different numbers of labelled positions and accuracies; example 0 is all right,
    example 1 has a miss, and example 2 answers a key token where the value also scores high."""
    cases = []
    for N, L, V in [(3, 8, 16), (randint(gen, 4, 6), randint(gen, 10, 16), 32), (4, 12, 24)]:
        logits = randn(gen, N, L, V)
        labels = torch.full((N, L), IGNORE)
        for i in range(N):
            count = 1 + i % (L // 2)
            positions = torch.randperm(L - 1, generator=gen)[:count] + 1
            labels[i, positions] = torch.randint(V // 2, V, (count,), generator=gen)
            right = torch.rand(count, generator=gen) < 0.6
            right[0] = i != 1
            if i == 0:
                right[:] = True
            logits[i, positions[right], labels[i, positions[right]]] += 10.0   # correct predictions
            if i == 2:
                logits[i, positions[0], 1] += 20.0                               # ...beaten by a key token
        cases.append(Case((logits, labels), label=f"N={N} examples, L={L}, V={V}"))
    return cases


def _hits(logits, labels):
    return logits.argmax(-1) == labels, labels != IGNORE


def _pooled(logits, labels):
    hit, mask = _hits(logits, labels)
    return float((hit & mask).sum() / mask.sum())


def _ignored_counted(logits, labels):
    hit, mask = _hits(logits, labels)
    return float((hit & mask).double().mean())


def _shifted(logits, labels):
    return mqar_accuracy(logits[:, :-1], labels[:, 1:])


def _value_half_only(logits, labels):
    V = logits.shape[-1]
    hit = (logits[..., V // 2:].argmax(-1) + V // 2) == labels
    mask = labels != IGNORE
    return float(((hit & mask).sum(1) / mask.sum(1)).mean())


def _percent(logits, labels):
    return 100 * mqar_accuracy(logits, labels)


MQAR_ACCURACY = Exercise(
    id="mqar_accuracy",
    title="MQAR accuracy as Zoology measures it",
    signature=("mqar_accuracy(logits, labels) -> float in [0, 1]; logits [N, L, V]; labels [N, L] "
               "(a value token where a key is queried, −100 elsewhere)"),
    arg_names=("logits", "labels"),
    outputs=("accuracy",),
    reference=mqar_accuracy,
    make_cases=_mqar_cases,
    bugs=(
        Bug("pooled over all positions", "Zoology averages per example first (over its labelled positions), "
            "then over examples; pooling every labelled position weights examples with more queries more",
            _pooled),
        Bug("ignored positions counted", "positions labelled −100 are not queries: leave them out of the mean",
            _ignored_counted),
        Bug("labels shifted by one", "labels are already aligned: labels[i, t] is the answer predicted AT "
            "position t (do not shift as for a language-model loss)", _shifted),
        Bug("argmax over part of the vocab", "the prediction is the argmax over the FULL vocab: a model that "
            "answers with a key token is wrong", _value_half_only),
        Bug("percent instead of fraction", "return a fraction in [0, 1]", _percent),
    ),
    hints=("prediction = argmax over the vocab (last dim) at every position?",
           "only positions with labels ≠ −100 count; mean per example, then over examples?",
           "return a plain float (e.g. with float(...))?"),
    rtol=1e-6,
)



# ------------------------------------------------------------------ recall_after_training

def recall_after_training(config, task, train_config) -> float:
    """Seed, build a fresh model of ``config``, train it on the MQAR ``task`` (splits drawn with seed 0)
    with the library's Trainer, and return the best test accuracy over the run's evaluations."""
    seed_everything(train_config.seed)
    train, test = make_mqar_splits(task, seed=0)
    history = Trainer(RodimusLM(config), train, test, train_config).fit()
    return max(r["eval_accuracy"] for r in history if r["kind"] == "eval")


def _training_cases(gen):
    cases = []
    for gate, seed in [("ddts", randint(gen, 0, 99)), ("no_tau", randint(gen, 0, 99))]:
        task = MQARPreset(8, 2, vocab_size=16, num_train=64, num_test=32, random_non_queries=False)
        config = ModelConfig(vocab_size=16, d_model=16, n_layers=1, mem_size=4, gate=gate, backend="reference")
        train_config = TrainConfig(max_steps=6, batch_size=16, lr=3e-2, warmup_steps=0, eval_every=1, seed=seed,
                                   device="cpu", progress=False)
        cases.append(Case((config, task, train_config), label=f"gate={gate}, 6 steps, one evaluation per step, seed={seed}"))
    return cases


def _evaluations(config, task, train_config, *, on="test"):
    seed_everything(train_config.seed)
    train, test = make_mqar_splits(task, seed=0)
    history = Trainer(RodimusLM(config), train, test if on == "test" else train, train_config).fit()
    return [r for r in history if r["kind"] == "eval"]


RECALL_AFTER_TRAINING = Exercise(
    id="recall_after_training",
    title="One MQAR training run, measured as the paper reports it",
    signature=("recall_after_training(config, task, train_config) -> float in [0, 1]; config a ModelConfig, task "
               "an MQARPreset (splits with make_mqar_splits(task, seed=0)), train_config a TrainConfig"),
    arg_names=("config", "task", "train_config"),
    outputs=("accuracy",),
    reference=recall_after_training,
    make_cases=_training_cases,
    bugs=(
        Bug("last evaluation instead of the best", "report the BEST test accuracy over the run's evaluations (the "
            "paper's convention); the last one depends on where the schedule happened to stop",
            lambda *a: _evaluations(*a)[-1]["eval_accuracy"]),
        Bug("evaluated on the training split", "the Trainer's second dataset is the one it evaluates on: pass the "
            "TEST split", lambda *a: max(r["eval_accuracy"] for r in _evaluations(*a, on="train"))),
        Bug("mean over the evaluations", "take the best evaluation, not the mean of all of them",
            lambda *a: sum(r["eval_accuracy"] for r in _evaluations(*a)) / len(_evaluations(*a))),
        Bug("percent instead of fraction", "return a fraction in [0, 1]",
            lambda *a: 100 * max(r["eval_accuracy"] for r in _evaluations(*a))),
        Bug("loss instead of accuracy", "return eval_accuracy (the fraction of queries answered), not eval_loss",
            lambda *a: min(r["eval_loss"] for r in _evaluations(*a))),
    ),
    hints=("seed_everything(train_config.seed) BEFORE building the model, so the weights are reproducible?",
           "Trainer(model, train, test, train_config).fit() returns the history: records with kind 'eval'?",
           "the best eval_accuracy, as a plain float?"),
    rtol=1e-9,
    trains=True,
)


def check_recall_experiment(results: dict, prediction: str | None = None) -> dict:
    """Sanity-check a predict-then-measure experiment and say what it shows.

    results: variant name → list of accuracies, one per seed (at least two variants, two seeds each, the
    same number of seeds everywhere). prediction: the name of the variant you expected to win, or "tie".
    Raises ValueError naming what is wrong; returns {variant: (mean, spread)} and prints the verdict: a
    difference counts only if it is larger than the spread between seeds of the same variant.
    """
    if not isinstance(results, dict) or len(results) < 2:
        raise ValueError("results must be a dict with at least two variants: {name: [accuracy per seed, ...]}")
    counts = {name: len(values) for name, values in results.items()}
    if min(counts.values()) < 2 or len(set(counts.values())) > 1:
        raise ValueError(f"every variant needs the same number (≥ 2) of seeds to compare against the seed noise, got {counts}")
    for name, values in results.items():
        bad = [a for a in values if not isinstance(a, (int, float)) or math.isnan(a) or not 0 <= a <= 1]
        if bad:
            raise ValueError(f"{name}: accuracies must be fractions in [0, 1], got {bad} (percent? a loss?)")
    if any(len(set(values)) == 1 for values in results.values()) and len({v for vs in results.values() for v in vs}) > 1:
        print("note: one variant gave the same accuracy for every seed — did the seed reach the Trainer?")
    summary = {name: (sum(v) / len(v), max(v) - min(v)) for name, v in results.items()}
    ranked = sorted(summary, key=lambda name: -summary[name][0])
    best, runner_up = ranked[0], ranked[1]
    gap = summary[best][0] - summary[runner_up][0]
    noise = max(spread for _, spread in summary.values())
    verdict = best if gap > noise else "tie"
    for name in ranked:
        mean, spread = summary[name]
        print(f"{name:>12}: mean best accuracy {mean:.3f} (seeds spread {spread:.3f})")
    print(f"measured: {'a tie — the gap ' + format(gap, '.3f') + ' is within the seed spread' if verdict == 'tie' else verdict + ' wins by ' + format(gap, '.3f') + ', more than the seed spread ' + format(noise, '.3f')}")
    if prediction is not None:
        print("your prediction holds ✓" if prediction == verdict else f"your prediction ({prediction}) did not hold: "
              "what did you assume that the measurement contradicts?")
    return summary


EXERCISES = (MQAR_ACCURACY, RECALL_AFTER_TRAINING)
