"""Exercises on the DDTS core: gates, one step, the loop, the implicit attention matrix, chunks.

Answer key: :mod:`rodimus_lab.ddts`. Each bug below is that reference with one plausible
student mistake; the checker compares a wrong answer with them to name the mistake.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ddts import ddts_chunkwise, ddts_gates, ddts_parallel, ddts_recurrent, ddts_step
from .harness import Bug, Case, Exercise, randint, randn


def _scale(scale, n):
    return n ** -0.5 if scale is None else scale


def _log_alpha(gen, *shape):
    """Realistic decays: log α = −τ·g from random gate logits (values around −0.1 … −2)."""
    return ddts_gates(randn(gen, *shape, scale=1.5), randn(gen, *shape))[0]


# ---------------------------------------------------------------------- ddts_gates

def _gates_cases(gen):
    cases = []
    for B, T, H, n in [(1, 1, 1, 4), (2, randint(gen, 3, 6), 2, randint(gen, 3, 6)), (1, 5, 3, 8)]:
        g, tau = randn(gen, B, T, H, n, scale=2.0), randn(gen, B, T, H, n, scale=2.0)
        cases.append(Case((g, tau), label=f"g_logits, tau_logits of shape {[B, T, H, n]}"))
    return cases


def _g_tau(g_logits, tau_logits):
    return F.softplus(g_logits), torch.sigmoid(tau_logits)


def _gates_no_tau(g_logits, tau_logits):
    return ddts_gates(g_logits, torch.full_like(tau_logits, float("inf")))   # sigmoid(∞) = 1: τ = 1


def _gates_no_tau_in_decay(g_logits, tau_logits):
    g, _ = _g_tau(g_logits, tau_logits)
    return -g, ddts_gates(g_logits, tau_logits)[1]


def _gates_no_tau_in_input(g_logits, tau_logits):
    g, _ = _g_tau(g_logits, tau_logits)
    return ddts_gates(g_logits, tau_logits)[0], g


def _gates_tau_times_g(g_logits, tau_logits):
    g, tau = _g_tau(g_logits, tau_logits)
    return -g * tau, g * tau


def _gates_alpha_not_log(g_logits, tau_logits):
    log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
    return log_alpha.exp(), alpha_hat


def _gates_sign(g_logits, tau_logits):
    log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
    return -log_alpha, alpha_hat


def _gates_no_softplus(g_logits, tau_logits):
    tau = torch.sigmoid(tau_logits)
    return -g_logits * tau, g_logits.pow(tau)


def _gates_no_sigmoid(g_logits, tau_logits):
    g = F.softplus(g_logits)
    return -g * tau_logits, g.pow(tau_logits)


def _gates_swapped(g_logits, tau_logits):
    log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
    return alpha_hat, log_alpha


GATES = Exercise(
    id="ddts_gates",
    title="The tempered selection gates (α, α̂) = (e^{−g}, g)^τ",
    signature="ddts_gates(g_logits, tau_logits) -> (log_alpha, alpha_hat), all of one shape",
    arg_names=("g_logits", "tau_logits"),
    outputs=("log_alpha [B, T, H, n]", "alpha_hat [B, T, H, n]"),
    reference=ddts_gates,
    make_cases=_gates_cases,
    bugs=(
        Bug("missing τ", "neither output depends on tau_logits: the temperature τ = sigmoid(tau_logits) "
            "must temper both the decay and the input gate", _gates_no_tau),
        Bug("τ missing in the decay", "your log α is −g: the decay exp(−g) must be tempered by τ too", _gates_no_tau_in_decay),
        Bug("τ missing in the input gate", "your α̂ is g: the input gate must be tempered by τ as well", _gates_no_tau_in_input),
        Bug("τ applied the wrong way", "your α̂ is τ·g: τ is an exponent of the pair (e^{−g}, g), not a factor "
            "of g (the decay's log is a product because log(e^{−g})^τ = −τg)", _gates_tau_times_g),
        Bug("α instead of log α", "your first output is α itself (in (0, 1)); the function returns its "
            "logarithm, log α ≤ 0", _gates_alpha_not_log),
        Bug("wrong sign", "your log α is positive: a decay α ≤ 1 has log α ≤ 0", _gates_sign),
        Bug("missing softplus", "g must be positive: it is softplus of g_logits, not the raw logits", _gates_no_softplus),
        Bug("missing sigmoid", "τ must lie in (0, 1): it is sigmoid of tau_logits, not the raw logits", _gates_no_sigmoid),
        Bug("outputs swapped", "return (log_alpha, alpha_hat) in that order", _gates_swapped),
    ),
    hints=("g = softplus(g_logits) and τ = sigmoid(tau_logits)?",
           "the first output is log α (≤ 0), the second α̂ (> 0)?",
           "τ tempers both gates, as an exponent of (e^{−g}, g)?"),
)


# ----------------------------------------------------------------------- ddts_step

def _write(k, v):
    return k.unsqueeze(-1) * v.unsqueeze(-2)


def _read(q, state, scale):
    return scale * torch.einsum("bhn,bhnm->bhm", q, state)


def _step_inputs(gen, B, H, n, m):
    return (randn(gen, B, H, n), randn(gen, B, H, n), randn(gen, B, H, m), _log_alpha(gen, B, H, n),
            randn(gen, B, H, n, m))


def _step_cases(gen):
    cases = []
    for B, H, n, m, scale in [(1, 1, 3, 5, None), (2, randint(gen, 1, 3), 4, 6, None), (2, 2, 5, 3, 0.3)]:
        kwargs = {} if scale is None else {"scale": scale}
        cases.append(Case(_step_inputs(gen, B, H, n, m), kwargs, label=f"B={B}, H={H}, n={n}, m={m}, scale={scale}"))
    return cases


def _step_decay_after_write(q, k, v, log_alpha, state, *, scale=None):
    state = log_alpha.exp().unsqueeze(-1) * (state + _write(k, v))
    return _read(q, state, _scale(scale, q.shape[-1])), state


def _step_read_old_state(q, k, v, log_alpha, state, *, scale=None):
    _, new = ddts_step(q, k, v, log_alpha, state, scale=scale)
    return _read(q, state, _scale(scale, q.shape[-1])), new


def _step_read_before_write(q, k, v, log_alpha, state, *, scale=None):
    _, new = ddts_step(q, k, v, log_alpha, state, scale=scale)
    return _read(q, log_alpha.exp().unsqueeze(-1) * state, _scale(scale, q.shape[-1])), new


def _step_log_as_decay(q, k, v, log_alpha, state, *, scale=None):
    state = log_alpha.unsqueeze(-1) * state + _write(k, v)
    return _read(q, state, _scale(scale, q.shape[-1])), state


def _step_no_decay(q, k, v, log_alpha, state, *, scale=None):
    return ddts_step(q, k, v, torch.zeros_like(log_alpha), state, scale=scale)


def _step_no_scale(q, k, v, log_alpha, state, *, scale=None):
    return ddts_step(q, k, v, log_alpha, state, scale=1.0)


def _step_scale_m(q, k, v, log_alpha, state, *, scale=None):
    return ddts_step(q, k, v, log_alpha, state, scale=v.shape[-1] ** -0.5 if scale is None else scale)


def _step_ignores_scale(q, k, v, log_alpha, state, *, scale=None):
    return ddts_step(q, k, v, log_alpha, state)


_STEP_HINTS = (
    "decay the old state first (α along the key dim n), then add the new token's kᵀv?",
    "o = scale · q S read from the NEW state?",
    "log_alpha is a logarithm: the decay is its exp?",
    "scale defaults to n^−1/2 (n = key dim) and the scale argument is used when given?",
)

STEP = Exercise(
    id="ddts_step",
    title="One DDTS step: decay, write, read",
    signature=("ddts_step(q, k, v, log_alpha, state, *, scale=None) -> (o, new_state); q, k, log_alpha "
               "[B, H, n]; v [B, H, m]; state [B, H, n, m]"),
    arg_names=("q", "k", "v", "log_alpha", "state"),
    outputs=("o [B, H, m]", "state [B, H, n, m]"),
    reference=ddts_step,
    make_cases=_step_cases,
    bugs=(
        Bug("decay after write", "your new state decays the token you just wrote: the decay applies to the "
            "OLD state only, before kᵀv is added", _step_decay_after_write),
        Bug("read before write", "your output reads the state from before this token was written: o_t = q_t S_t "
            "uses the new state", _step_read_old_state),
        Bug("read before write", "your output reads the decayed state before kᵀv is added: o_t = q_t S_t uses "
            "the state after the write", _step_read_before_write),
        Bug("log α used as the decay", "log_alpha is the LOG of the decay: the state is multiplied by "
            "α = exp(log_alpha)", _step_log_as_decay),
        Bug("no decay", "your state never forgets: the old state must be multiplied by α", _step_no_decay),
        Bug("missing scale", "the output must be scaled by n^−1/2 (n = key dim) unless scale is given", _step_no_scale),
        Bug("scale from the wrong dim", "the default scale is n^−1/2 with n the KEY dim (q.shape[-1]), "
            "not the value dim", _step_scale_m),
        Bug("scale argument ignored", "when scale is passed it replaces the default n^−1/2", _step_ignores_scale),
    ),
    hints=_STEP_HINTS,
)


# ------------------------------------------------------------------ ddts_recurrent

def _seq_inputs(gen, B, T, H, n, m):
    return (randn(gen, B, T, H, n), randn(gen, B, T, H, n), randn(gen, B, T, H, m), _log_alpha(gen, B, T, H, n))


def _recurrent_cases(gen):
    cases = []
    shapes = [(1, 1, 1, 3, 4, False, False, None), (2, randint(gen, 4, 7), 2, 4, 5, False, True, None),
              (2, randint(gen, 3, 6), 3, 5, 3, True, True, None), (1, 6, 2, 4, 6, True, False, 0.25)]
    for B, T, H, n, m, with_state, want_state, scale in shapes:
        kwargs = {"output_final_state": want_state}
        if with_state:
            kwargs["initial_state"] = randn(gen, B, H, n, m)
        if scale is not None:
            kwargs["scale"] = scale
        label = (f"B={B}, T={T}, H={H}, n={n}, m={m}, scale={scale}, initial_state="
                 f"{'given' if with_state else 'None'}, output_final_state={want_state}")
        cases.append(Case(_seq_inputs(gen, B, T, H, n, m), kwargs, label=label))
    return cases


def _loop_with(step):
    """ddts_recurrent written around a (possibly buggy) one-token step."""
    def recurrent(q, k, v, log_alpha, *, scale=None, initial_state=None, output_final_state=False):
        B, T, H, n = q.shape
        state = torch.zeros(B, H, n, v.shape[-1]) if initial_state is None else initial_state
        outputs = []
        for t in range(T):
            o, state = step(q[:, t], k[:, t], v[:, t], log_alpha[:, t], state, scale=scale)
            outputs.append(o)
        return torch.stack(outputs, dim=1), (state if output_final_state else None)
    return recurrent


def _recurrent_ignores_initial_state(q, k, v, log_alpha, *, scale=None, initial_state=None, output_final_state=False):
    return ddts_recurrent(q, k, v, log_alpha, scale=scale, output_final_state=output_final_state)


RECURRENT = Exercise(
    id="ddts_recurrent",
    title="The DDTS recurrence over a whole sequence",
    signature=("ddts_recurrent(q, k, v, log_alpha, *, scale=None, initial_state=None, output_final_state=False) "
               "-> (o [B, T, H, m], final state [B, H, n, m] or None); q, k, log_alpha [B, T, H, n]; v [B, T, H, m]"),
    arg_names=("q", "k", "v", "log_alpha"),
    outputs=("o [B, T, H, m]", "final_state [B, H, n, m]"),
    reference=ddts_recurrent,
    make_cases=_recurrent_cases,
    bugs=(
        Bug("decay after write", "each token's kᵀv gets decayed in the same step it is written: decay the "
            "OLD state, then add", _loop_with(_step_decay_after_write)),
        Bug("read before write", "o_t must read the state AFTER token t is written (o_t = q_t S_t)",
            _loop_with(_step_read_old_state)),
        Bug("read before write", "o_t must read the state after the write of token t, not just after its decay",
            _loop_with(_step_read_before_write)),
        Bug("log α used as the decay", "multiply the state by α = exp(log_alpha), not by log_alpha",
            _loop_with(_step_log_as_decay)),
        Bug("missing scale", "outputs must be scaled by n^−1/2 (or by scale when given)", _loop_with(_step_no_scale)),
        Bug("scale argument ignored", "when scale is passed it replaces the default n^−1/2",
            _loop_with(_step_ignores_scale)),
        Bug("initial_state ignored", "when initial_state is given the loop starts from it, not from zeros",
            _recurrent_ignores_initial_state),
    ),
    hints=_STEP_HINTS + ("start from initial_state when given, zeros [B, H, n, m] otherwise?",
                         "loop over the time dim (dim 1 of [B, T, H, ·])?"),
)


# ------------------------------------------------------------- ddts_parallel_mask

def _parallel_cases(gen):
    cases = []
    for B, T, H, n, m, scale in [(1, 2, 1, 3, 4, None), (2, randint(gen, 5, 8), 2, 4, 5, None),
                                 (1, randint(gen, 4, 7), 3, 5, 3, 0.4)]:
        kwargs = {} if scale is None else {"scale": scale}
        cases.append(Case(_seq_inputs(gen, B, T, H, n, m), kwargs, label=f"B={B}, T={T}, H={H}, n={n}, m={m}, scale={scale}"))
    return cases


def _pair_decay(cum, keep):
    """exp(Λ_i − Λ_j) where keep[i, j], else 0: [B, H, T, T, n] from Λ [B, H, T, n]."""
    diff = cum.unsqueeze(-2) - cum.unsqueeze(-3)
    return diff.masked_fill(~keep[..., None], float("-inf")).exp()


def _parallel_with(matrix):
    """ddts_parallel around a (possibly buggy) implicit-attention matrix, given [B, H, T, ·] tensors."""
    def parallel(q, k, v, log_alpha, *, scale=None):
        q, k, v, log_alpha = (x.transpose(1, 2) for x in (q, k, v, log_alpha))
        T = q.shape[-2]
        attn = _scale(scale, q.shape[-1]) * matrix(q, k, log_alpha, torch.ones(T, T, dtype=torch.bool))
        return (attn @ v).transpose(1, 2), attn
    return parallel


def _attn(q, k, decay):
    return torch.einsum("bhin,bhjn,bhijn->bhij", q, k, decay)


def _mask_transposed(q, k, la, ones):
    return _attn(q, k, _pair_decay(la.cumsum(-2), ones.triu()))


def _no_mask(q, k, la, ones):
    return _attn(q, k, _pair_decay(la.cumsum(-2), ones))


def _no_diagonal(q, k, la, ones):
    return _attn(q, k, _pair_decay(la.cumsum(-2), ones.tril(-1)))


def _decay_includes_own_token(q, k, la, ones):
    cum = la.cumsum(-2)
    diff = cum.unsqueeze(-2) - (cum - la).unsqueeze(-3)          # Λ_i − Λ_{j−1}
    return _attn(q, k, diff.masked_fill(~ones.tril()[..., None], float("-inf")).exp())


def _no_decay(q, k, la, ones):
    return (q @ k.transpose(-1, -2)) * ones.tril()


def _decay_outside_sum(q, k, la, ones):
    return (q @ k.transpose(-1, -2)) * _pair_decay(la.cumsum(-2), ones.tril()).mean(-1)


def _parallel_no_scale(q, k, v, log_alpha, *, scale=None):
    return ddts_parallel(q, k, v, log_alpha, scale=1.0)


def _parallel_transposed_matrix(q, k, v, log_alpha, *, scale=None):
    _, attn = ddts_parallel(q, k, v, log_alpha, scale=scale)
    attn = attn.transpose(-1, -2)
    return (attn @ v.transpose(1, 2)).transpose(1, 2), attn


PARALLEL_MASK = Exercise(
    id="ddts_parallel_mask",
    title="The implicit attention matrix of DDTS (the parallel form)",
    signature=("ddts_parallel(q, k, v, log_alpha, *, scale=None) -> (o [B, T, H, m], attn [B, H, T, T]); "
               "q, k, log_alpha [B, T, H, n]; v [B, T, H, m]"),
    arg_names=("q", "k", "v", "log_alpha"),
    outputs=("o [B, T, H, m]", "attn [B, H, i, j]"),
    reference=ddts_parallel,
    make_cases=_parallel_cases,
    bugs=(
        Bug("causal mask transposed", "your matrix lets token i read later tokens j > i and hides earlier "
            "ones: keep the lower triangle (j ≤ i)", _parallel_with(_mask_transposed)),
        Bug("matrix transposed", "attn[b, h, i, j] is how much query i reads key j: rows are queries", _parallel_transposed_matrix),
        Bug("missing causal mask", "future tokens leak in: entries with j > i must be 0", _parallel_with(_no_mask)),
        Bug("off by one on the diagonal", "token i must also read itself (j = i): the mask includes the diagonal",
            _parallel_with(_no_diagonal)),
        Bug("decay off by one", "between write j and read i the state decays by α_{j+1} … α_i only: token j "
            "is written after its own decay; check which cumulative sum you subtract",
            _parallel_with(_decay_includes_own_token)),
        Bug("missing decay", "your matrix is plain linear attention: each entry needs the decay exp(Λ_i − Λ_j)",
            _parallel_with(_no_decay)),
        Bug("decay outside the sum over n", "the decay is per key dim: it multiplies q_i[n] k_j[n] INSIDE the "
            "sum over n, it is not one factor per (i, j)", _parallel_with(_decay_outside_sum)),
        Bug("missing scale", "the matrix is scaled by n^−1/2 (or by scale when given)", _parallel_no_scale),
    ),
    hints=("Λ = cumulative sum of log_alpha over time (inclusive)?",
           "rows are queries i, columns keys j; only j ≤ i is non-zero; the decay is per key dim, inside the sum?",
           "o from attn and v, with the [B, T, H, ·] ↔ [B, H, T, ·] transposes right?"),
)


# ------------------------------------------------------------------ ddts_chunkwise

def chunk_state_reference(k, v, log_alpha, state):
    """The state after one chunk, read off the library's chunkwise form (q plays no part in it)."""
    _, new = ddts_chunkwise(torch.zeros_like(k), k, v, log_alpha, chunk_size=k.shape[1],
                            initial_state=state, output_final_state=True)
    return new


def _chunk_cases(gen):
    cases = []
    for B, C, H, n, m in [(1, 1, 1, 3, 4), (2, randint(gen, 4, 8), 2, 4, 5), (1, randint(gen, 3, 6), 3, 5, 3)]:
        _, k, v, la = _seq_inputs(gen, B, C, H, n, m)
        cases.append(Case((k, v, la, randn(gen, B, H, n, m)), label=f"B={B}, C={C}, H={H}, n={n}, m={m}"))
    return cases


def _chunk_with(write_log_decay, state_log_decay):
    """The chunk update with (possibly buggy) log-decays for the writes and for the old state."""
    def update(k, v, log_alpha, state):
        b = log_alpha.cumsum(1)                                   # [B, C, H, n]
        writes = torch.einsum("bchn,bchm->bhnm", k * write_log_decay(b, log_alpha).exp(), v)
        return state_log_decay(b, log_alpha).exp().unsqueeze(-1) * state + writes
    return update


def _to_end(b, la):
    return b[:, -1:] - b


def _whole_chunk(b, la):
    return b[:, -1]


CHUNKWISE = Exercise(
    id="ddts_chunkwise",
    title="One chunk-to-chunk state update of the chunkwise form",
    signature=("chunk_state_update(k, v, log_alpha, state) -> new_state [B, H, n, m]; k, log_alpha [B, C, H, n] "
               "and v [B, C, H, m] are ONE chunk of C tokens; state [B, H, n, m] the state before it"),
    arg_names=("k", "v", "log_alpha", "state"),
    outputs=("state [B, H, n, m]",),
    reference=chunk_state_reference,
    make_cases=_chunk_cases,
    bugs=(
        Bug("old state not decayed", "the state from before the chunk must decay by the whole chunk's "
            "α product, exp(b_C)", _chunk_with(_to_end, lambda b, la: torch.zeros_like(b[:, -1]))),
        Bug("writes not decayed", "token j's kᵀv is decayed by every later token of the chunk",
            _chunk_with(lambda b, la: torch.zeros_like(b), _whole_chunk)),
        Bug("decay off by one", "token j is written AFTER its own decay: its write decays only by the "
            "tokens after it (α_{j+1} … α_C); check which cumulative sum you subtract", _chunk_with(lambda b, la: b[:, -1:] - b + la, _whole_chunk)),
        Bug("decay direction reversed", "you decayed each write by the tokens BEFORE it (exp(b_j)); it must "
            "decay by the tokens after it, to the chunk's end", _chunk_with(lambda b, la: b, _whole_chunk)),
        Bug("decay not taken to the chunk's end", "exp(−b_j) alone grows; the write decays from its own "
            "position to the chunk's END: exponents are b_C − b_j ≤ 0", _chunk_with(lambda b, la: -b, _whole_chunk)),
        Bug("old state decayed by one token only", "the old state decays by EVERY token of the chunk",
            _chunk_with(_to_end, lambda b, la: la[:, 0])),
    ),
    hints=("the old state decays by every token of the chunk?",
           "each token's write decays by the tokens AFTER it, up to the chunk's end (exponents ≤ 0)?",
           "the decay acts along the key dim n (the state's dim 2), summing writes over the chunk's tokens?"),
)

EXERCISES = (GATES, STEP, RECURRENT, PARALLEL_MASK, CHUNKWISE)
