"""Exercise on the MQAR metric (Zoology's definition).

Answer key: :func:`rodimus_lab.data.mqar.mqar_accuracy`.
"""

from __future__ import annotations

import torch

from ..data.mqar import mqar_accuracy
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

EXERCISES = (MQAR_ACCURACY,)
