"""MQAR generator invariants (Zoology's definition), presets and the accuracy metric."""

import pytest
import torch

from rodimus_lab.data.mqar import (IGNORE, MQAR_PRESETS, generate_mqar, make_mqar_splits, mqar_accuracy,
                                   mqar_example_accuracy, mqar_grid, mqar_preset, mqar_token_labels)
from rodimus_lab.train import evaluate

L, P, V = 64, 4, 512


@pytest.fixture(scope="module")
def clean():
    """Filler 0, so the structure is visible."""
    return generate_mqar(300, L, P, vocab_size=V, random_non_queries=False, seed=3)


def test_shapes_and_dtypes(clean):
    x, y = clean
    assert x.shape == y.shape == (300, L)
    assert x.dtype == y.dtype == torch.long


def test_context_keys_and_values_in_disjoint_ranges(clean):
    x, _ = clean
    keys, values = x[:, 0:2 * P:2], x[:, 1:2 * P:2]
    assert ((keys >= 1) & (keys < V // 2)).all()
    assert ((values >= V // 2) & (values < V)).all()
    for row in keys:   # distinct keys per example (values too)
        assert len(set(row.tolist())) == P
    for row in values:
        assert len(set(row.tolist())) == P


def test_each_key_queried_once_and_labels_align(clean):
    x, y = clean
    for xi, yi in zip(x, y):
        pairs = dict(zip(xi[0:2 * P:2].tolist(), xi[1:2 * P:2].tolist()))
        labelled = (yi != IGNORE).nonzero().flatten()
        assert len(labelled) == P
        assert (labelled >= 2 * P).all()                      # queries come after the context
        assert ((labelled - 2 * P) % 2 == 0).all()            # at even offsets
        queried = xi[labelled].tolist()
        assert sorted(queried) == sorted(pairs)               # every key exactly once
        assert yi[labelled].tolist() == [pairs[k] for k in queried]   # label = that key's value, at the key
        rest = torch.ones(L, dtype=torch.bool)
        rest[:2 * P] = False
        rest[labelled] = False
        assert (xi[rest] == 0).all()                          # filler


def test_query_offsets_favour_early_slots():
    _, y = generate_mqar(2000, 256, 4, vocab_size=V, seed=0)
    offsets = ((y != IGNORE).nonzero()[:, 1] - 8) // 2          # slot index in [0, 124)
    assert (offsets < 62).float().mean() > 0.55                 # p ∝ i^(a-1): front-loaded


def test_random_filler_keeps_structure():
    x0, y0 = generate_mqar(50, L, P, vocab_size=V, random_non_queries=False, seed=1)
    x1, y1 = generate_mqar(50, L, P, vocab_size=V, random_non_queries=True, seed=1)
    assert torch.equal(y0, y1)
    kept = x0 != 0
    assert torch.equal(x0[kept], x1[kept])
    assert (x1[~kept] != 0).float().mean() > 0.9


def test_deterministic_and_seed_dependent():
    a = generate_mqar(20, L, P, vocab_size=V, seed=7)
    b = generate_mqar(20, L, P, vocab_size=V, seed=7)
    c = generate_mqar(20, L, P, vocab_size=V, seed=8)
    assert all(torch.equal(u, w) for u, w in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_splits_use_disjoint_seeds():
    preset = mqar_preset("L64_p4", num_train=64, num_test=32)
    train, test = make_mqar_splits(preset, seed=0)
    assert len(train) == 64 and len(test) == 32 and train.name == "L64_p4"
    again, _ = make_mqar_splits(preset, seed=0)
    assert torch.equal(train.inputs, again.inputs)
    assert not torch.equal(train.inputs[:32], test.inputs)
    other_train, _ = make_mqar_splits(preset, seed=1)   # base seeds 0 and 1 never share a split seed
    assert not torch.equal(other_train.inputs[:32], test.inputs)


def test_standard_grid_presets():
    grid = {(p.seq_len, p.num_kv_pairs) for p in mqar_grid("zoology")}
    assert grid == {(64, 4), (128, 8), (256, 16)}
    assert all(p.vocab_size == 8192 and p.random_non_queries for p in mqar_grid("zoology"))
    with pytest.raises(ValueError, match="unknown MQAR grid"):
        mqar_grid("zoo")
    assert MQAR_PRESETS["L128_p8"].num_train == 100_000 and MQAR_PRESETS["L128_p8"].num_test == 3_000


@pytest.mark.parametrize("kwargs, match", [
    (dict(seq_len=63, num_kv_pairs=4), "even"),
    (dict(seq_len=64, num_kv_pairs=17), "too short"),
    (dict(seq_len=64, num_kv_pairs=4, vocab_size=60), "vocab_size = 60 is too small"),
    (dict(seq_len=64, num_kv_pairs=0), "num_kv_pairs"),
])
def test_bad_arguments_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_mqar(4, **kwargs)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="unknown MQAR preset 'L65_p4'.*L64_p4"):
        mqar_preset("L65_p4")
    with pytest.raises(ValueError, match="num_kv_pair"):
        mqar_preset("L64_p4", num_kv_pair=3)


def _perfect_logits(y, vocab):
    logits = torch.zeros(*y.shape, vocab)
    logits.scatter_(-1, y.clamp(min=0).unsqueeze(-1), 1.0)
    return logits


def test_accuracy_is_per_example_then_mean():
    y = torch.full((2, 6), IGNORE)
    y[0, [1, 3]] = torch.tensor([5, 6])     # 2 labels
    y[1, [0, 2, 4, 5]] = 7                  # 4 labels
    logits = _perfect_logits(y, 8)
    assert mqar_accuracy(logits, y) == 1.0
    logits[0, 1] = 0                         # example 0: 1/2 right
    logits[1, 0] = 0                         # example 1: 3/4 right
    logits[1, 0, 2] = 1
    assert mqar_example_accuracy(logits, y).tolist() == [0.5, 0.75]
    assert mqar_accuracy(logits, y) == pytest.approx(0.625)   # not the token mean 4/6


def test_accuracy_uses_full_vocab_argmax():
    y = torch.full((1, 4), IGNORE)
    y[0, 2] = 3
    logits = torch.zeros(1, 4, 10)
    logits[0, 2, 3] = 1.0
    logits[0, 2, 0] = 2.0                    # a non-value token wins the argmax
    assert mqar_accuracy(logits, y) == 0.0


def test_accuracy_bad_input():
    with pytest.raises(ValueError, match="logits"):
        mqar_accuracy(torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="no labelled"):
        mqar_accuracy(torch.zeros(1, 3, 5), torch.full((1, 3), IGNORE))


class _Oracle(torch.nn.Module):
    """Predicts every MQAR label perfectly on the examples it was built for (for slicing tests)."""

    def __init__(self, splits, vocab, wrong_slice=None):
        super().__init__()
        self.table = {tuple(s.inputs[i].tolist()): s.labels[i] for s in splits for i in range(len(s))}
        self.vocab, self.wrong = vocab, wrong_slice
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        y = torch.stack([self.table[tuple(r.tolist())] for r in x])
        logits = _perfect_logits(y, self.vocab)
        if self.wrong is not None and x.shape[1] == self.wrong:
            logits = logits.roll(1, dims=-1)
        return type("Out", (), {"logits": logits})()


def test_per_slice_accuracy():
    a = make_mqar_splits(mqar_preset("L64_p4", num_train=1, num_test=20, vocab_size=V))[1]
    b = make_mqar_splits(mqar_preset("L128_p8", num_train=1, num_test=10, vocab_size=V))[1]
    metrics = evaluate(_Oracle([a, b], V, wrong_slice=128), [a, b], batch_size=7)
    assert metrics["eval_accuracy/L64_p4"] == 1.0
    assert metrics["eval_accuracy/L128_p8"] == 0.0
    assert metrics["eval_accuracy"] == pytest.approx(20 / 30)   # mean over all examples


def test_many_examples_each_have_all_queries():
    """The vectorised sampler (rows with repeated keys are redrawn) at a realistic size."""
    x, y = generate_mqar(20_000, 256, 16, seed=0)
    assert x.shape == (20_000, 256) and int((y != IGNORE).sum()) == 20_000 * 16


def test_token_labels_name_context_queries_and_filler():
    inputs, labels = generate_mqar(1, 16, 2, vocab_size=32, random_non_queries=False, seed=0)
    names = mqar_token_labels(inputs[0], labels[0], 2)
    ids = inputs[0].tolist()
    assert names[:4] == [f"K{ids[0]}", f"V{ids[1]}", f"K{ids[2]}", f"V{ids[3]}"]
    queries = [t for t in range(16) if labels[0, t] != IGNORE]
    assert len(queries) == 2 and all(names[t] == f"Q{ids[t]}→{int(labels[0, t])}" for t in queries)
    assert all(names[t] == "·" for t in range(4, 16) if t not in queries)
