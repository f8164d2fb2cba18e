"""MQAR — multi-query associative recall, with Zoology's definition (docs/equations.md §7).

An example of length L with p key-value pairs:

    k1 v1 k2 v2 … kp vp | filler … k_i … filler … k_j …
    └── context (2p) ──┘  └── queries: each key once, at an even offset ──┘

Keys come from [1, V/2), values from [V/2, V), both drawn without replacement per example.
Query offsets are drawn without replacement with probability ∝ i^(a−1) (a = 0.01: early
slots favoured). ``labels[i, t]`` is the token to predict after ``inputs[i, t]``: the value of
the key at a query position, −100 everywhere else. Filler is 0, or random tokens from the
whole vocabulary when ``random_non_queries`` (as Zoology does).

Everything is vectorised over examples (no per-example Python), so the standard 100k-example
training sets take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

__all__ = [
    "generate_mqar", "mqar_accuracy", "mqar_example_accuracy", "mqar_token_labels",
    "MQARPreset", "MQARSplit", "MQAR_PRESETS", "MQAR_GRIDS", "mqar_preset", "mqar_grid", "make_mqar_splits",
]

IGNORE = -100


def _check_args(num_examples, seq_len, num_kv_pairs, vocab_size, power_a):
    for name, value in (("num_examples", num_examples), ("seq_len", seq_len),
                        ("num_kv_pairs", num_kv_pairs), ("vocab_size", vocab_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"MQAR {name} must be an int ≥ 1, got {value!r}")
    if seq_len % 2:
        raise ValueError(f"MQAR seq_len must be even (keys and values alternate), got {seq_len}; use {seq_len + 1}")
    if seq_len < 4 * num_kv_pairs:
        raise ValueError(
            f"MQAR seq_len = {seq_len} is too short for num_kv_pairs = {num_kv_pairs}: it needs seq_len ≥ "
            f"4·num_kv_pairs = {4 * num_kv_pairs} (2p context tokens plus room for p queries at even offsets)"
        )
    if vocab_size <= seq_len:   # (this also leaves room for p distinct keys in [1, V/2), as L ≥ 4p)
        raise ValueError(f"MQAR vocab_size = {vocab_size} is too small: it must be larger than seq_len = {seq_len} "
                         "(Zoology's rule)")
    if not isinstance(power_a, (int, float)) or not 0 < power_a <= 1:
        raise ValueError(f"MQAR power_a must be in (0, 1], got {power_a!r}")


def _distinct(rng: np.random.Generator, n: int, k: int, low: int, high: int) -> np.ndarray:
    """[n, k] ints from [low, high), distinct within each row, uniformly (redraw rows with repeats)."""
    out = rng.integers(low, high, size=(n, k))
    while True:
        s = np.sort(out, axis=1)
        bad = np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=1))
        if bad.size == 0:
            return out
        out[bad] = rng.integers(low, high, size=(bad.size, k))


def generate_mqar(num_examples: int, seq_len: int, num_kv_pairs: int, vocab_size: int = 8192,
                  power_a: float = 0.01, random_non_queries: bool = True, seed: int = 0):
    """MQAR inputs and labels, both LongTensor [num_examples, seq_len] (see the module docstring).

    Deterministic in ``seed``; use different seeds for train and test (``make_mqar_splits`` does).
    """
    _check_args(num_examples, seq_len, num_kv_pairs, vocab_size, power_a)
    rng = np.random.default_rng(seed)
    N, L, p = num_examples, seq_len, num_kv_pairs
    half = vocab_size // 2
    keys = _distinct(rng, N, p, 1, half)
    values = _distinct(rng, N, p, half, vocab_size)

    # Query slots without replacement, P(slot i) ∝ (i+1)^(a−1): Gumbel top-k is exactly
    # sequential sampling without replacement (what np.random.choice(replace=False, p=…) does).
    context = 2 * p
    space = (L - context) // 2
    log_p = (power_a - 1) * np.log(np.arange(1, space + 1))
    scores = log_p + rng.gumbel(size=(N, space))
    slots = np.argsort(-scores, axis=1, kind="stable")[:, :p]   # in draw order, as Zoology's choice

    # The sequence has L + 1 tokens before the shift (Zoology builds inputs[:-1], labels[1:]).
    full = np.zeros((N, L + 1), dtype=np.int64)
    full[:, 0:context:2] = keys
    full[:, 1:context:2] = values
    query_pos = context + 2 * slots
    np.put_along_axis(full, query_pos, keys, axis=1)
    targets = np.full((N, L + 1), IGNORE, dtype=np.int64)
    np.put_along_axis(targets, query_pos + 1, values, axis=1)

    inputs = full[:, :-1]
    labels = targets[:, 1:]
    if random_non_queries:
        filler = inputs == 0
        inputs = np.where(filler, rng.integers(0, vocab_size, size=inputs.shape), inputs)
    return torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(np.ascontiguousarray(labels))


# ---------------------------------------------------------------------------- accuracy

def mqar_example_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per example: the fraction of labelled positions whose argmax (over the full vocab) is right.

    logits [N, L, V], labels [N, L] → float tensor [N]; an example without labels gets NaN.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"expected logits [N, L, V] and labels [N, L], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    mask = labels != IGNORE
    correct = (logits.argmax(-1) == labels) & mask
    return correct.sum(1).double() / mask.sum(1).double()


def mqar_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Zoology's MQAR accuracy: argmax over the full vocab, mean over labelled positions per
    example, then the mean over examples (examples without labels are skipped)."""
    per_example = mqar_example_accuracy(logits, labels)
    per_example = per_example[~per_example.isnan()]
    if per_example.numel() == 0:
        raise ValueError("mqar_accuracy: no labelled positions (every label is -100)")
    return float(per_example.mean())


def mqar_token_labels(inputs: torch.Tensor, labels: torch.Tensor, num_kv_pairs: int) -> list[str]:
    """What each token of one MQAR example is, for axis labels: ``K<id>``/``V<id>`` in the context,
    ``Q<id>→<value>`` at a query, ``·`` for filler."""
    out = []
    for t, (tok, lab) in enumerate(zip(inputs.tolist(), labels.tolist())):
        if t < 2 * num_kv_pairs:
            out.append(f"{'K' if t % 2 == 0 else 'V'}{tok}")
        elif lab != IGNORE:
            out.append(f"Q{tok}→{lab}")
        else:
            out.append("·")
    return out


# ---------------------------------------------------------------------------- presets

@dataclass(frozen=True)
class MQARPreset:
    """One (L, p) task and the size of its train/test sets."""
    seq_len: int
    num_kv_pairs: int
    vocab_size: int = 8192
    num_train: int = 100_000
    num_test: int = 3_000
    power_a: float = 0.01
    random_non_queries: bool = True

    @property
    def name(self) -> str:
        return f"L{self.seq_len}_p{self.num_kv_pairs}"


# Zoology's standard grid (docs/equations.md §7): train 100k / test 3k, V = 8192.
MQAR_PRESETS: dict[str, MQARPreset] = {
    "L64_p4": MQARPreset(64, 4),
    "L128_p8": MQARPreset(128, 8),
    "L256_p16": MQARPreset(256, 16),
    "L1024_p256": MQARPreset(1024, 256, num_train=20_000, num_test=1_000),   # paper Fig 1b
    # What `rodimus-lab demo` trains: the L64_p4 task with a small vocabulary (V = 128, the smallest
    # power of two above L: each key and value token is seen often, so fewer steps reach 99%), zero
    # filler and a smaller train set, so a CPU gets to ≥ 99% within a minute. With a small V, random
    # filler would often repeat a key before its query (a real ambiguity, ~1/V per token); Zoology's
    # V = 8192 makes that rare, so the standard presets keep random filler.
    "demo": MQARPreset(64, 4, vocab_size=128, num_train=20_000, num_test=1_000, random_non_queries=False),
}
MQAR_GRIDS: dict[str, tuple[str, ...]] = {
    "zoology": ("L64_p4", "L128_p8", "L256_p16"),   # with d_model ∈ {64, 128, 256, 512}, lr ∈ logspace(-4, -2, 4)
}


def mqar_grid(name: str, **overrides) -> list[MQARPreset]:
    """The presets of a named grid (``mqar_grid("zoology")``); each is trained and reported on its own."""
    if name not in MQAR_GRIDS:
        raise ValueError(f"unknown MQAR grid {name!r}; known grids: {sorted(MQAR_GRIDS)}")
    return [mqar_preset(preset, **overrides) for preset in MQAR_GRIDS[name]]


def mqar_preset(name: str, **overrides) -> MQARPreset:
    """A named preset, optionally with fields replaced (``mqar_preset("L64_p4", num_train=1000)``)."""
    if name not in MQAR_PRESETS:
        raise ValueError(f"unknown MQAR preset {name!r}; known presets: {sorted(MQAR_PRESETS)} "
                         f"(grids: {sorted(MQAR_GRIDS)})")
    try:
        preset = replace(MQAR_PRESETS[name], **overrides)
    except TypeError as e:
        raise ValueError(f"bad MQAR preset override for {name!r}: {e}") from None
    _check_args(1, preset.seq_len, preset.num_kv_pairs, preset.vocab_size, preset.power_a)
    return preset


@dataclass
class MQARSplit:
    """Examples of one (L, p) slice."""
    inputs: torch.Tensor
    labels: torch.Tensor
    seq_len: int
    num_kv_pairs: int

    @property
    def name(self) -> str:
        return f"L{self.seq_len}_p{self.num_kv_pairs}"

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of the examples at ``index`` (the Trainer's example-set protocol)."""
        return self.inputs[index], self.labels[index]

    @staticmethod
    def metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """What ``evaluate`` reports for MQAR besides the loss, per example: the recall accuracy."""
        return {"accuracy": mqar_example_accuracy(logits, labels)}


def make_mqar_splits(preset: MQARPreset | str, seed: int = 0) -> tuple[MQARSplit, MQARSplit]:
    """(train, test) for one preset. Train uses seed 2·seed, test 2·seed + 1: the two never share
    a seed, for any pair of base seeds either."""
    if isinstance(preset, str):
        preset = mqar_preset(preset)
    splits = []
    for n, s in ((preset.num_train, 2 * seed), (preset.num_test, 2 * seed + 1)):
        x, y = generate_mqar(n, preset.seq_len, preset.num_kv_pairs, preset.vocab_size,
                             preset.power_a, preset.random_non_queries, seed=s)
        splits.append(MQARSplit(x, y, preset.seq_len, preset.num_kv_pairs))
    return splits[0], splits[1]
