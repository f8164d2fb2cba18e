"""The exercise checkers: accept the answer key, reject student bugs with a hint naming the bug
class, and turn misbehaving functions into clear messages.

The buggy functions below are written the way a student would write them, independently of the
bugs the checkers know (those are tested separately, over several seeds).
"""

import re

import pytest
import torch
import torch.nn.functional as F

from rodimus_lab import RodimusLM, seed_everything
from rodimus_lab.attention import attention, rope
from rodimus_lab.data.mqar import make_mqar_splits
from rodimus_lab.ddts import ddts_recurrent
from rodimus_lab.exercises import ExerciseFailed, check, check_recall_experiment, exercises, get_exercise
from rodimus_lab.exercises.block_exercises import mixer_reference
from rodimus_lab.train import Trainer

IDS = list(exercises())
REQUIRED = {"ddts_gates", "ddts_step", "ddts_recurrent", "ddts_parallel_mask", "ddts_chunkwise", "short_conv_step",
            "ska_attention", "sliding_window_mask", "rope", "two_hop_residual", "state_bytes", "mqar_accuracy",
            "sw_ska_layer", "rodimus_mixer", "recall_after_training"}


def failure(exercise_id, fn, seed=0) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check(exercise_id, fn, seed=seed)
    return str(info.value)


def test_every_required_exercise_is_listed_with_a_title():
    assert REQUIRED <= set(IDS)
    assert all(title for title in exercises().values())


@pytest.mark.parametrize("exercise_id", IDS)
def test_the_reference_passes_and_prints_one_line(exercise_id, capsys):
    assert check(exercise_id, get_exercise(exercise_id).reference) is True
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(f"✓ {exercise_id}")


@pytest.mark.parametrize("exercise_id", IDS)
def test_every_exercise_knows_at_least_three_bugs(exercise_id):
    assert len({bug.name for bug in get_exercise(exercise_id).bugs}) >= 3


KNOWN_BUGS = [(ex_id, bug) for ex_id in IDS for bug in get_exercise(ex_id).bugs]


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("exercise_id, bug", KNOWN_BUGS, ids=[f"{e}-{b.name}" for e, b in KNOWN_BUGS])
def test_each_known_bug_is_caught_and_named(exercise_id, bug, seed):
    message = failure(exercise_id, bug.fn, seed)
    assert f"Likely bug — {bug.name}:" in message
    assert message.count("Likely bug") == 1, message   # the cases tell the bug classes apart


# --------------------------------------------------------------- student-style bugs

def _scale(scale, n):
    return scale if scale is not None else 1 / n ** 0.5


# ddts_gates
def gates_exp_minus_g(g_logits, tau_logits):            # exp(−g) instead of exp(−τg)
    g, tau = F.softplus(g_logits), torch.sigmoid(tau_logits)
    return -g, g ** tau


def gates_tau_as_factor(g_logits, tau_logits):          # τ applied to the wrong term
    g, tau = F.softplus(g_logits), torch.sigmoid(tau_logits)
    return -tau * g, tau * g


def gates_no_softplus(g_logits, tau_logits):
    tau = torch.sigmoid(tau_logits)
    return -tau * g_logits, g_logits ** tau


def gates_return_alpha(g_logits, tau_logits):
    g, tau = F.softplus(g_logits), torch.sigmoid(tau_logits)
    return torch.exp(-tau * g), g ** tau


# ddts_step
def step_decay_after_write(q, k, v, log_alpha, state, *, scale=None):
    new = (state + k[..., None] @ v[..., None, :]) * log_alpha.exp()[..., None]
    return _scale(scale, q.shape[-1]) * (q[..., None, :] @ new)[..., 0, :], new


def step_read_before_write(q, k, v, log_alpha, state, *, scale=None):
    o = _scale(scale, q.shape[-1]) * (q[..., None, :] @ state)[..., 0, :]
    return o, log_alpha.exp()[..., None] * state + k[..., None] @ v[..., None, :]


def step_no_scale(q, k, v, log_alpha, state, *, scale=None):
    new = log_alpha.exp()[..., None] * state + k[..., None] @ v[..., None, :]
    return (q[..., None, :] @ new)[..., 0, :], new


# ddts_recurrent
def _loop(step, q, k, v, log_alpha, scale, state, output_final_state):
    outs = []
    for t in range(q.shape[1]):
        o, state = step(q[:, t], k[:, t], v[:, t], log_alpha[:, t], state, scale=scale)
        outs.append(o)
    return torch.stack(outs, 1), state if output_final_state else None


def _zeros(q, v):
    return torch.zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[3])


def rec_decay_after_write(q, k, v, log_alpha, *, scale=None, initial_state=None, output_final_state=False):
    state = initial_state if initial_state is not None else _zeros(q, v)
    return _loop(step_decay_after_write, q, k, v, log_alpha, scale, state, output_final_state)


def rec_ignores_initial_state(q, k, v, log_alpha, *, scale=None, initial_state=None, output_final_state=False):
    good = get_exercise("ddts_step").reference
    return _loop(good, q, k, v, log_alpha, scale, _zeros(q, v), output_final_state)


def rec_read_before_write(q, k, v, log_alpha, *, scale=None, initial_state=None, output_final_state=False):
    state = initial_state if initial_state is not None else _zeros(q, v)
    return _loop(step_read_before_write, q, k, v, log_alpha, scale, state, output_final_state)


# ddts_parallel_mask
def _parallel(q, k, v, log_alpha, scale, *, keep, exclusive=False):
    q, k, v, log_alpha = (x.permute(0, 2, 1, 3) for x in (q, k, v, log_alpha))
    T = q.shape[2]
    cum = torch.cumsum(log_alpha, 2)
    start = cum - log_alpha if exclusive else cum
    A = torch.zeros(q.shape[0], q.shape[1], T, T)
    for i in range(T):
        for j in range(T):
            if keep(i, j):
                A[:, :, i, j] = (q[:, :, i] * k[:, :, j] * torch.exp(cum[:, :, i] - start[:, :, j])).sum(-1)
    A = A * _scale(scale, q.shape[-1])
    return (A @ v).permute(0, 2, 1, 3), A


def par_mask_transposed(q, k, v, log_alpha, *, scale=None):
    return _parallel(q, k, v, log_alpha, scale, keep=lambda i, j: j >= i)


def par_decay_off_by_one(q, k, v, log_alpha, *, scale=None):
    return _parallel(q, k, v, log_alpha, scale, keep=lambda i, j: j <= i, exclusive=True)


def par_no_diagonal(q, k, v, log_alpha, *, scale=None):
    return _parallel(q, k, v, log_alpha, scale, keep=lambda i, j: j < i)


def par_no_scale(q, k, v, log_alpha, *, scale=None):
    return _parallel(q, k, v, log_alpha, 1.0, keep=lambda i, j: j <= i)


# ddts_chunkwise
def _chunk(k, v, log_alpha, state, *, write_exponent, state_decays=True):
    b = torch.cumsum(log_alpha, 1)
    total = b[:, -1]
    new = state * total.exp().unsqueeze(-1) if state_decays else state.clone()
    for j in range(k.shape[1]):
        kj = k[:, j] * torch.exp(write_exponent(b, total, log_alpha, j))
        new = new + kj.unsqueeze(-1) * v[:, j].unsqueeze(-2)
    return new


def chunk_writes_not_decayed(k, v, log_alpha, state):
    return _chunk(k, v, log_alpha, state, write_exponent=lambda b, total, la, j: torch.zeros_like(total))


def chunk_state_not_decayed(k, v, log_alpha, state):
    return _chunk(k, v, log_alpha, state, write_exponent=lambda b, total, la, j: total - b[:, j], state_decays=False)


def chunk_exclusive_cumsum(k, v, log_alpha, state):
    return _chunk(k, v, log_alpha, state, write_exponent=lambda b, total, la, j: total - b[:, j] + la[:, j])


# ska_attention
def _ska(q, k, v, scale, *, causal=True, after_softmax=False, shared_values=False):
    T, d = q.shape[1], q.shape[3]
    scores = torch.einsum("bthd,bsd->bhts", q, k[:, :, 0]) * (scale if scale is not None else d ** -0.5)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    if after_softmax:
        weights = torch.softmax(scores, -1).masked_fill(future, 0.0)
    else:
        weights = torch.softmax(scores.masked_fill(future & causal, -1e9), -1)
    values = v[:, :, :1].expand_as(v) if shared_values else v
    return torch.einsum("bhts,bshd->bthd", weights, values)


def ska_not_causal(q, k, v, *, scale=None):
    return _ska(q, k, v, scale, causal=False)


def ska_mask_after_softmax(q, k, v, *, scale=None):
    return _ska(q, k, v, scale, after_softmax=True)


def ska_shared_values(q, k, v, *, scale=None):
    return _ska(q, k, v, scale, shared_values=True)


def ska_no_scale(q, k, v, *, scale=None):
    return _ska(q, k, v, 1.0)


# sliding_window_mask
def _mask(q_len, k_len, window, causal, *, extra=0, from_start=False, transpose=False):
    mask = torch.zeros(q_len, k_len, dtype=torch.bool)
    for i in range(q_len):
        p = i if from_start else k_len - q_len + i
        for j in range(k_len):
            ok = j <= p or not causal
            if window is not None:
                ok = ok and p - j < window + extra
            mask[i, j] = ok
    return mask.T if transpose and q_len == k_len else mask


def mask_one_too_many(q_len, k_len, *, window=None, causal=True, device=None):
    return _mask(q_len, k_len, window, causal, extra=1)


def mask_queries_first(q_len, k_len, *, window=None, causal=True, device=None):
    return _mask(q_len, k_len, window, causal, from_start=True)


def mask_transposed(q_len, k_len, *, window=None, causal=True, device=None):
    return _mask(q_len, k_len, window, causal, transpose=True)


# rope
def _rope(x, offset, base, *, swap=False, interleaved=False, use_offset=True, exponent=2.0):
    T, d = x.shape[1], x.shape[3]
    pos = torch.arange(T, dtype=torch.float32) + (offset if use_offset else 0)
    freqs = base ** (-exponent * torch.arange(d // 2, dtype=torch.float32) / d)
    theta = pos[:, None] * freqs
    if interleaved:
        cos, sin = theta.cos().repeat_interleave(2, -1), theta.sin().repeat_interleave(2, -1)
        rot = torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
    else:
        cos, sin = torch.cat([theta.cos()] * 2, -1), torch.cat([theta.sin()] * 2, -1)
        half = d // 2
        rot = torch.cat([x[..., half:], -x[..., :half]], -1) if swap else torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos[None, :, None] + rot * sin[None, :, None]


def rope_halves_swapped(x, *, offset=0, base=10000.0):
    return _rope(x, offset, base, swap=True)


def rope_interleaved(x, *, offset=0, base=10000.0):
    return _rope(x, offset, base, interleaved=True)


def rope_no_offset(x, *, offset=0, base=10000.0):
    return _rope(x, offset, base, use_offset=False)


def rope_frequencies(x, *, offset=0, base=10000.0):
    return _rope(x, offset, base, exponent=1.0)


# short_conv_step
def conv_flipped(x, buffer, weight, bias):
    window = torch.cat([buffer, x[:, :, None]], 2)
    return F.silu((window * weight.flip(1)).sum(2) + bias), window[:, :, 1:]


def conv_no_silu(x, buffer, weight, bias):
    window = torch.cat([buffer, x[:, :, None]], 2)
    return (window * weight).sum(2) + bias, window[:, :, 1:]


def conv_keeps_old_buffer(x, buffer, weight, bias):
    window = torch.cat([buffer, x[:, :, None]], 2)
    return F.silu((window * weight).sum(2) + bias), window[:, :, :-1]


# two_hop_residual
def hop_standard_residual(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    h = x + mixer(mixer_norm(x))
    h = h + attn(attn_norm(h))
    return h + ffn(ffn_norm(h))


def hop_ffn_not_normed(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    h = x + mixer(mixer_norm(x))
    return h + ffn(h + attn(attn_norm(h)))


def hop_attention_on_input(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    a = attn(attn_norm(x))
    h = x + mixer(mixer_norm(x))
    return h + ffn(ffn_norm(h + a))


# state_bytes
def _bytes(config, context_len, bytes_per_element, include_conv, *, ska_keys_per_head=False, window=True,
           conv=True, layers=True):
    c = config
    total = 0
    if c.block != "transformer":
        total += c.mem_size * c.d_inner + (c.conv_size - 1) * c.d_inner * (include_conv and conv and c.short_conv)
    if c.block != "rodimus":
        tokens = min(context_len, c.window) if (window and c.window) else context_len
        keys = c.num_heads if ska_keys_per_head else c.num_key_heads
        total += tokens * (keys + c.num_value_heads) * c.head_dim
    return total * (c.n_layers if layers else 1) * bytes_per_element


def bytes_ska_like_mha(config, context_len, *, bytes_per_element=2, include_conv=True):
    return _bytes(config, context_len, bytes_per_element, include_conv, ska_keys_per_head=True)


def bytes_window_ignored(config, context_len, *, bytes_per_element=2, include_conv=True):
    return _bytes(config, context_len, bytes_per_element, include_conv, window=False)


def bytes_conv_forgotten(config, context_len, *, bytes_per_element=2, include_conv=True):
    return _bytes(config, context_len, bytes_per_element, include_conv, conv=False)


def bytes_one_layer(config, context_len, *, bytes_per_element=2, include_conv=True):
    return _bytes(config, context_len, bytes_per_element, include_conv, layers=False)


# mqar_accuracy
def mqar_pooled(logits, labels):
    keep = labels != -100
    return ((logits.argmax(-1) == labels) & keep).sum().item() / keep.sum().item()


def mqar_counts_ignored(logits, labels):
    return (logits.argmax(-1) == labels).float().mean().item()


def mqar_shifted(logits, labels):
    preds, targets = logits[:, :-1].argmax(-1), labels[:, 1:]
    keep = targets != -100
    return (((preds == targets) & keep).sum(1) / keep.sum(1)).mean().item()


# sw_ska_layer (a student reusing the library's pieces, with one slip each)
def sw_mask_after_softmax(q, k, v, window, offset=0):
    q, k = rope(q, offset=offset), rope(k, offset=offset)
    scores = torch.einsum("bihd,bjd->bhij", q, k[:, :, 0]) / q.shape[-1] ** 0.5
    T = q.shape[1]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    return torch.einsum("bhij,bjhd->bihd", scores.softmax(-1) * ((j <= i) & (j > i - window)), v)


def sw_key_not_rotated(q, k, v, window, offset=0):
    return attention(rope(q, offset=offset), k, v, window=window)


def sw_window_plus_one(q, k, v, window, offset=0):
    return attention(rope(q, offset=offset), rope(k, offset=offset), v, window=window + 1)


# rodimus_mixer (written with the mixer's own Linear layers and F.conv1d)
def _student_mixer(mixer, x, *, value="x_pre", skip=True, gate_then_norm=True):
    c = mixer.config
    x_pre, z = mixer.fc(x).chunk(2, dim=-1)
    conv = mixer.short_conv.conv1d
    xc = F.silu(F.conv1d(x_pre.transpose(1, 2), conv.weight, conv.bias, padding=c.conv_size - 1,
                         groups=c.d_inner)[..., :x.shape[1]].transpose(1, 2))
    q, k = mixer.in_proj(xc).chunk(2, dim=-1)
    g_logits, tau_logits = mixer.mem_gate_proj(xc).chunk(2, dim=-1)
    g, tau = F.softplus(g_logits), torch.sigmoid(tau_logits)
    k = F.normalize(k, dim=-1) * g ** tau
    v = torch.sigmoid(mixer.ch_gate_proj(x_pre)) * (x_pre if value == "x_pre" else xc)
    o, _ = ddts_recurrent(q[:, :, None], k[:, :, None], v[:, :, None], (-tau * g)[:, :, None])
    o = o[:, :, 0] + (mixer.residual_weight * xc if skip else 0)
    h = mixer.act_norm(o * F.silu(z)) if gate_then_norm else mixer.act_norm(o) * F.silu(z)
    return mixer.out_proj(h)


def mixer_value_after_conv(mixer, x):
    return _student_mixer(mixer, x, value="x_conv")


def mixer_no_skip(mixer, x):
    return _student_mixer(mixer, x, skip=False)


def mixer_norm_then_gate(mixer, x):
    return _student_mixer(mixer, x, gate_then_norm=False)


# recall_after_training
def _student_run(config, task, train_config, *, split="test"):
    seed_everything(train_config.seed)
    train, test = make_mqar_splits(task, seed=0)
    return Trainer(RodimusLM(config), train, test if split == "test" else train, train_config).fit()


def recall_last(config, task, train_config):
    return [r for r in _student_run(config, task, train_config) if r["kind"] == "eval"][-1]["eval_accuracy"]


def recall_on_train(config, task, train_config):
    return max(r["eval_accuracy"] for r in _student_run(config, task, train_config, split="train") if r["kind"] == "eval")


def recall_percent(config, task, train_config):
    return 100 * max(r["eval_accuracy"] for r in _student_run(config, task, train_config) if r["kind"] == "eval")


STUDENT_BUGS = [
    ("ddts_gates", gates_exp_minus_g, "τ missing in the decay"),
    ("ddts_gates", gates_tau_as_factor, "τ applied the wrong way"),
    ("ddts_gates", gates_no_softplus, "missing softplus"),
    ("ddts_gates", gates_return_alpha, "α instead of log α"),
    ("ddts_step", step_decay_after_write, "decay after write"),
    ("ddts_step", step_read_before_write, "read before write"),
    ("ddts_step", step_no_scale, "missing scale"),
    ("ddts_recurrent", rec_decay_after_write, "decay after write"),
    ("ddts_recurrent", rec_ignores_initial_state, "initial_state ignored"),
    ("ddts_recurrent", rec_read_before_write, "read before write"),
    ("ddts_parallel_mask", par_mask_transposed, "causal mask transposed"),
    ("ddts_parallel_mask", par_decay_off_by_one, "decay off by one"),
    ("ddts_parallel_mask", par_no_diagonal, "off by one on the diagonal"),
    ("ddts_parallel_mask", par_no_scale, "missing scale"),
    ("ddts_chunkwise", chunk_writes_not_decayed, "writes not decayed"),
    ("ddts_chunkwise", chunk_state_not_decayed, "old state not decayed"),
    ("ddts_chunkwise", chunk_exclusive_cumsum, "decay off by one"),
    ("ska_attention", ska_not_causal, "missing causal mask"),
    ("ska_attention", ska_mask_after_softmax, "missing normalisation"),
    ("ska_attention", ska_shared_values, "values shared across heads"),
    ("ska_attention", ska_no_scale, "missing scale"),
    ("sliding_window_mask", mask_one_too_many, "window off by one"),
    ("sliding_window_mask", mask_queries_first, "queries at the wrong positions"),
    ("sliding_window_mask", mask_transposed, "causal mask transposed"),
    ("rope", rope_halves_swapped, "RoPE halves swapped"),
    ("rope", rope_interleaved, "interleaved pairs"),
    ("rope", rope_no_offset, "offset ignored"),
    ("rope", rope_frequencies, "wrong frequencies"),
    ("short_conv_step", conv_flipped, "kernel reversed"),
    ("short_conv_step", conv_no_silu, "missing SiLU"),
    ("short_conv_step", conv_keeps_old_buffer, "buffer not updated"),
    ("two_hop_residual", hop_standard_residual, "one-hop residual"),
    ("two_hop_residual", hop_ffn_not_normed, "missing normalisation before the FFN"),
    ("two_hop_residual", hop_attention_on_input, "attention reads the wrong stream"),
    ("state_bytes", bytes_ska_like_mha, "one key head per query head in SKA"),
    ("state_bytes", bytes_window_ignored, "window ignored"),
    ("state_bytes", bytes_conv_forgotten, "conv buffer forgotten"),
    ("state_bytes", bytes_one_layer, "layers forgotten"),
    ("mqar_accuracy", mqar_pooled, "pooled over all positions"),
    ("mqar_accuracy", mqar_counts_ignored, "ignored positions counted"),
    ("mqar_accuracy", mqar_shifted, "labels shifted by one"),
    ("sw_ska_layer", sw_mask_after_softmax, "mask applied after the softmax"),
    ("sw_ska_layer", sw_key_not_rotated, "RoPE missing on the key"),
    ("sw_ska_layer", sw_window_plus_one, "window off by one (one key too many)"),
    ("rodimus_mixer", mixer_value_after_conv, "value from the convolved branch"),
    ("rodimus_mixer", mixer_no_skip, "skip d ⊙ x̃ missing"),
    ("rodimus_mixer", mixer_norm_then_gate, "norm before the output gate"),
    ("recall_after_training", recall_last, "last evaluation instead of the best"),
    ("recall_after_training", recall_on_train, "evaluated on the training split"),
    ("recall_after_training", recall_percent, "percent instead of fraction"),
]


@pytest.mark.parametrize("exercise_id, fn, bug_class", STUDENT_BUGS, ids=[f.__name__ for _, f, _ in STUDENT_BUGS])
def test_student_bug_is_rejected_with_its_bug_class(exercise_id, fn, bug_class):
    message = failure(exercise_id, fn, seed=3)
    assert f"Likely bug — {bug_class}" in message, message
    assert "check(" in message and "seed=3" in message          # says how to replay it


def test_three_student_bugs_per_exercise():
    per_exercise = {}
    for exercise_id, _, bug_class in STUDENT_BUGS:
        per_exercise.setdefault(exercise_id, set()).add(bug_class)
    assert set(per_exercise) == set(IDS)
    assert all(len(classes) >= 3 for classes in per_exercise.values())


def test_an_unknown_mistake_gets_the_general_checklist():
    def gates_off(g_logits, tau_logits):
        log_alpha, alpha_hat = get_exercise("ddts_gates").reference(g_logits, tau_logits)
        return log_alpha * 1.5, alpha_hat
    message = failure("ddts_gates", gates_off)
    assert "No known mistake matches; things to check:" in message
    assert "`log_alpha` differs from the reference: relative error" in message


# ------------------------------------------------------------ misbehaving functions

def test_a_function_that_raises_gets_its_own_error_and_line():
    def step(q, k, v, log_alpha, state, *, scale=None):
        state = state @ v      # a shape mistake, raised inside torch
        return q, state
    message = failure("ddts_step", step)
    assert "your function raised RuntimeError" in message
    assert "state = state @ v" in message            # points at the student's line
    assert "It is called as ddts_step(q, k, v, log_alpha, state" in message
    assert "harness.py" not in message


def test_the_unfilled_stub_is_reported_kindly():
    def stub(g_logits, tau_logits):
        raise NotImplementedError
    assert "not implemented yet" in failure("ddts_gates", stub)


def test_wrong_shape_is_named_with_the_expected_layout():
    def step(q, k, v, log_alpha, state, *, scale=None):
        return q, state                # o must be [B, H, m]
    message = failure("ddts_step", step)
    assert "`o` has shape" in message and "[B, H, m]" in message
    assert "Hint (shape)" in message


def test_wrong_dtype_is_named():
    def gates(g_logits, tau_logits):
        g, tau = F.softplus(g_logits), torch.sigmoid(tau_logits)
        return (-tau * g).double(), g ** tau
    message = failure("ddts_gates", gates)
    assert "`log_alpha` has dtype torch.float64, expected torch.float32" in message
    assert "Hint (dtype)" in message


def test_nan_is_named():
    def rope(x, *, offset=0, base=10000.0):
        return x * float("nan")
    assert "contains NaN" in failure("rope", rope)


def test_mutating_an_input_is_named():
    def step(q, k, v, log_alpha, state, *, scale=None):
        state.mul_(log_alpha.exp()[..., None]).add_(k[..., None] * v[..., None, :])
        return _scale(scale, q.shape[-1]) * torch.einsum("bhn,bhnm->bhm", q, state), state
    message = failure("ddts_step", step)
    assert "modified its input `state` in place" in message


def test_missing_return_and_wrong_count_are_named():
    def nothing(q, k, v, log_alpha, state, *, scale=None):
        q @ state
    assert "returned None — did you forget a `return`?" in failure("ddts_step", nothing)

    def one(q, k, v, log_alpha, state, *, scale=None):
        return (q,)
    assert "it must return 2 values: (o, state)" in failure("ddts_step", one)


def test_a_wrong_type_is_named():
    def accuracy(logits, labels):
        return (logits.argmax(-1) == labels).float()
    assert "must be one number, got a tensor of shape" in failure("mqar_accuracy", accuracy)

    def count(config, context_len, *, bytes_per_element=2, include_conv=True):
        return 1.5
    assert "must be an int" in failure("state_bytes", count)


def test_check_refuses_an_unknown_id_or_a_non_function():
    with pytest.raises(ValueError, match="unknown exercise id 'nope'; known ids: ddts_gates"):
        check("nope", lambda: None)
    with pytest.raises(TypeError, match="student_fn must be your function"):
        check("ddts_gates", None)
    with pytest.raises(TypeError, match="seed must be a non-negative int"):
        check("ddts_gates", gates_exp_minus_g, seed="3")


# ------------------------------------------------------------------ reproducibility

def test_a_seed_replays_the_same_cases_and_fresh_calls_draw_new_ones():
    message = failure("ddts_gates", gates_exp_minus_g, seed=123)
    assert failure("ddts_gates", gates_exp_minus_g, seed=123) == message
    seeds = set()
    for _ in range(5):
        with pytest.raises(ExerciseFailed) as info:
            check("ddts_gates", gates_exp_minus_g)
        seeds.add(re.search(r"seed=(\d+)", str(info.value)).group(1))
    assert len(seeds) > 1


def test_checking_leaves_the_thread_count_and_global_rng_alone():
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check("two_hop_residual", get_exercise("two_hop_residual").reference, seed=1)
    check("short_conv_step", get_exercise("short_conv_step").reference, seed=1)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_not_implemented_deeper_down_is_not_mistaken_for_the_stub():
    def helper():
        raise NotImplementedError("this op is not supported")

    def gates(g_logits, tau_logits):
        return helper()
    message = failure("ddts_gates", gates)
    assert "your function raised NotImplementedError: this op is not supported" in message
    assert "not implemented yet" not in message


# ------------------------------------------------------------------- the new exercises' contracts

def test_the_mixer_handed_to_the_student_refuses_its_own_forward():
    from rodimus_lab.exercises.block_exercises import _mixer_cases, _mixer_with
    case = _mixer_cases(torch.Generator().manual_seed(0))[1]
    mixer, x = case.args
    with pytest.raises(RuntimeError, match="switched off in this exercise"):
        mixer(x)
    with torch.no_grad():   # the written-out mixer the bugs start from is the library's forward
        torch.testing.assert_close(_mixer_with()(mixer, x), mixer_reference(mixer, x), rtol=1e-4, atol=1e-5)
    message = failure("rodimus_mixer", lambda mixer, x: mixer(x))
    assert "switched off in this exercise" in message and "mixer.fc" in message


def test_recall_experiment_checker_refuses_insane_numbers_and_calls_the_winner(capsys):
    with pytest.raises(ValueError, match="percent"):
        check_recall_experiment({"ddts": [40.0, 50.0], "no_tau": [0.3, 0.4]})
    with pytest.raises(ValueError, match="same number"):
        check_recall_experiment({"ddts": [0.4, 0.5], "no_tau": [0.3]})
    summary = check_recall_experiment({"ddts": [0.80, 0.82], "no_tau": [0.50, 0.55]}, prediction="ddts")
    assert summary["ddts"] == pytest.approx((0.81, 0.02))
    assert "ddts wins" in capsys.readouterr().out
    check_recall_experiment({"ddts": [0.5, 0.7], "no_tau": [0.55, 0.6]}, prediction="ddts")
    out = capsys.readouterr().out
    assert "a tie" in out and "did not hold" in out
