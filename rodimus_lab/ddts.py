"""DDTS — data-dependent tempered selection — in plain PyTorch.

This file is the reference: read it beside the paper (arXiv 2410.06577, §3) and
``docs/equations.md`` (§2–§3). Every fast path in rodimus-lab (the Triton kernels in
``rodimus_kernels``) is tested against these functions.

Notation (row vectors, one head): q_t, k_t ∈ R^n, v_t ∈ R^m, state S_t ∈ R^{n×m}.

    S_t = diag(α_t) S_{t-1} + k_tᵀ v_t          o_t = scale · q_t S_t

with α_t = exp(log_alpha_t) ∈ (0, 1]^n. In Rodimus the key that enters the state is
``alpha_hat * k / ||k||`` (:func:`effective_key`), with (α, α̂) from the gate logits
(:func:`ddts_gates`, or :func:`gates` for the ablations). The four forms below take
that key and log α as given, so they run every ablation (GLA, Mamba2-like,
RetNet-like, plain linear attention) unchanged:

* :func:`ddts_recurrent` — the loop above, one token at a time (the definition).
* :func:`ddts_step`      — one iteration of that loop (decoding).
* :func:`ddts_parallel`  — everything at once through the implicit attention matrix
  A[i, j] = scale · Σ_n q_i[n] k_j[n] exp(Λ_i[n] − Λ_j[n]), j ≤ i, with Λ = cumsum(log α).
* :func:`ddts_chunkwise` — chunks of C tokens: attention-like inside a chunk, the
  recurrence between chunks. This is the training path on CPU.

They must agree to rounding. :func:`ddts` and :func:`ddts_gated_step` put the pieces
together exactly as the fused kernels ``rodimus_kernels.ddts`` / ``ddts_step`` do, with
the kernels' signatures: raw keys and gate logits in, gates and key norm inside.
:func:`ddts_states` lists every state of a sequence (for pictures).

Tensor layout: ``[B, T, H, D]`` for sequences, ``[B, H, n, m]`` for the state.
Arithmetic runs in float32 (float64 when the inputs are float64); outputs come back
in the dtype of ``v``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "GATE_KINDS",
    "Gates",
    "ddts_gates",
    "gates",
    "gate_logits_width",
    "retnet_log_alpha",
    "effective_key",
    "ddts_recurrent",
    "ddts_chunkwise",
    "ddts_parallel",
    "ddts_step",
    "ddts",
    "ddts_gated_step",
    "ddts_states",
]


# --------------------------------------------------------------------------- gates

def ddts_gates(g_logits: torch.Tensor, tau_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tempered selection pair (α, α̂) = (e^{−g}, g)^τ, with α returned as its log.

    g = softplus(g_logits) > 0 is the selection gate, τ = sigmoid(tau_logits) ∈ (0, 1)
    the temperature. ``log_alpha = −τ·g`` (decay, ≤ 0) and ``alpha_hat = g^τ`` (how
    strongly the key is written). Larger g forgets more AND writes more: selection.
    """
    if g_logits.shape != tau_logits.shape:
        raise ValueError(
            f"g_logits and tau_logits must have the same shape, got {tuple(g_logits.shape)} "
            f"and {tuple(tau_logits.shape)}"
        )
    g = F.softplus(g_logits)
    tau = torch.sigmoid(tau_logits)
    return -g * tau, g.pow(tau)


# DDTS and the ablations the paper compares it with (``ModelConfig.gate``), by how many gate
# logits each reads per token for a state of n key dims.
GATE_KINDS = {
    "ddts": lambda n: 2 * n,          # (α, α̂) = (e^{−g}, g)^τ per key dim
    "no_tau": lambda n: n,            # τ = 1: (α, α̂) = (e^{−g}, g)
    "no_alpha_hat": lambda n: 2 * n,  # α̂ = 1: a decay gate only (GLA-like)
    "hgrn2": lambda n: 2 * n,         # α̂ = 1 − α (HGRN2-like coupled input gate)
    "mamba2": lambda n: 2,            # one g and one τ per head, shared by all key dims
    "retnet": lambda n: 0,            # a fixed decay per key dim, α̂ = 1 (RetNet-like)
    "no_decay": lambda n: 0,          # α = α̂ = 1: plain linear attention
}


class Gates(NamedTuple):
    """What a gate produces per token and key dim: the decay log α (≤ 0), the write strength α̂,
    and the selection gate g and temperature τ behind them (None where the kind has none)."""
    log_alpha: torch.Tensor
    alpha_hat: torch.Tensor
    g: torch.Tensor | None
    tau: torch.Tensor | None


def gate_logits_width(kind: str, mem_size: int) -> int:
    """How many gate logits ``kind`` reads per token (the width of the gate projection; 0: none)."""
    if kind not in GATE_KINDS:
        raise ValueError(f"unknown gate {kind!r}; choose one of {sorted(GATE_KINDS)}")
    return GATE_KINDS[kind](mem_size)


def retnet_log_alpha(mem_size: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """RetNet's fixed multi-scale decays, one per key dim: log γ_i with γ_i = 1 − 2^{−5 − 4i/(n−1)}."""
    exponents = -5.0 - 4.0 * torch.arange(mem_size, device=device, dtype=torch.float64) / max(mem_size - 1, 1)
    return torch.log1p(-torch.exp2(exponents)).to(dtype)


def gates(kind: str, logits: torch.Tensor, mem_size: int) -> Gates:
    """The gates of ``kind`` (a key of GATE_KINDS) from ``logits`` [..., gate_logits_width(kind, n)].

    Every returned tensor has the shape [..., n] (n = ``mem_size``) and the dtype of ``logits``;
    the fixed kinds ("retnet", "no_decay") read no logits, only their leading shape.
    """
    width = gate_logits_width(kind, mem_size)
    if logits.shape[-1] != width:
        raise ValueError(f"gate {kind!r} reads {width} logits per token for mem_size {mem_size}, "
                         f"got logits of shape {tuple(logits.shape)}")
    shape = (*logits.shape[:-1], mem_size)
    if kind in ("retnet", "no_decay"):
        if kind == "retnet":
            log_alpha = retnet_log_alpha(mem_size, device=logits.device, dtype=logits.dtype)
        else:
            log_alpha = logits.new_zeros(mem_size)
        return Gates(log_alpha.expand(shape), logits.new_ones(shape), None, None)
    if kind == "no_tau":
        g = F.softplus(logits)
        return Gates(-g, g, g, torch.ones_like(g))
    g_logits, tau_logits = logits.chunk(2, dim=-1)
    log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
    g, tau = F.softplus(g_logits), torch.sigmoid(tau_logits)
    if kind == "mamba2":   # one scalar per head and token, the same for every key dim
        log_alpha, alpha_hat, g, tau = (x.expand(shape) for x in (log_alpha, alpha_hat, g, tau))
    elif kind == "no_alpha_hat":
        alpha_hat = torch.ones_like(alpha_hat)
    elif kind == "hgrn2":
        alpha_hat = -torch.expm1(log_alpha)     # 1 − α, exact for α near 1
    return Gates(log_alpha, alpha_hat, g, tau)


def effective_key(k: torch.Tensor, alpha_hat: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """The key that enters the state: α̂ ⊙ k / ‖k‖ (over the key dim), in at least float32.

    ``normalize=False`` leaves out the norm (the key-norm ablation): α̂ ⊙ k.
    """
    k = k.to(torch.promote_types(k.dtype, torch.float32))
    if normalize:
        k = F.normalize(k, dim=-1, eps=1e-12)
    return alpha_hat * k


# ---------------------------------------------------------------------- validation

def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_inputs(q, k, v, log_alpha, *, seq_dims: int, check_values: bool = True) -> None:
    """Shapes as in the conventions; with ``check_values``, NaN or a growing decay in log_alpha is
    refused (that check reads log_alpha on the host: a device sync)."""
    for name, x in (("q", q), ("k", k), ("v", v), ("log_alpha", log_alpha)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != seq_dims:
            layout = "[B, T, H, D]" if seq_dims == 4 else "[B, H, D]"
            raise ValueError(f"{name} must be {seq_dims}-D {layout}, got shape {tuple(x.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if log_alpha.shape != q.shape:
        raise ValueError(
            f"log_alpha must have the shape of q {tuple(q.shape)} (one decay per key dim), "
            f"got {tuple(log_alpha.shape)}"
        )
    if v.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            f"v must agree with q on all but the last dim: q {tuple(q.shape)}, v {tuple(v.shape)}"
        )
    if check_values and not bool((log_alpha <= 0).all()):
        raise ValueError(
            "log_alpha must be ≤ 0 everywhere and not NaN (a decay α = exp(log_alpha) in (0, 1]); "
            f"found max {log_alpha.max().item()!r}"
        )


def _check_state(state, q, v, name: str) -> None:
    expected = (q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1])
    if tuple(state.shape) != expected:
        raise ValueError(f"{name} must have shape [B, H, n, m] = {expected}, got {tuple(state.shape)}")


def _initial_state(initial_state, q, v, dtype) -> torch.Tensor:
    """S_0: the given state (checked, in the compute dtype) or zeros."""
    if initial_state is None:
        return q.new_zeros(q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1], dtype=dtype)
    _check_state(initial_state, q, v, "initial_state")
    return initial_state.to(dtype)


def _scale(scale, n: int) -> float:
    return n ** -0.5 if scale is None else float(scale)


# ---------------------------------------------------------------------- recurrent

def ddts_recurrent(q, k, v, log_alpha, *, scale=None, initial_state=None, output_final_state=False):
    """The definition: walk the sequence one token at a time.

    q, k, log_alpha: [B, T, H, n]; v: [B, T, H, m]; initial_state: [B, H, n, m] or None.
    Returns (o [B, T, H, m], final state [B, H, n, m] or None).
    """
    _check_inputs(q, k, v, log_alpha, seq_dims=4)
    T, n = q.shape[1], q.shape[-1]
    state = _initial_state(initial_state, q, v, _compute_dtype(v))
    outputs = []
    for t in range(T):
        o_t, state = _step(q[:, t], k[:, t], v[:, t], log_alpha[:, t], state, _scale(scale, n))
        outputs.append(o_t)
    o = torch.stack(outputs, dim=1).to(v.dtype)
    return o, (state if output_final_state else None)


def ddts_step(q, k, v, log_alpha, state, *, scale=None, check_inputs=True):
    """One token: decay the state, write k_tᵀ v_t, read with q_t.

    q, k, log_alpha: [B, H, n]; v: [B, H, m]; state: [B, H, n, m] (not modified).
    Returns (o [B, H, m] in v's dtype, new state [B, H, n, m] in float32/float64).
    ``check_inputs=False`` skips the check that log_alpha ≤ 0, which syncs with the device (a CUDA
    graph cannot capture it); the shapes are still checked.
    """
    _check_inputs(q, k, v, log_alpha, seq_dims=3, check_values=check_inputs)
    _check_state(state, q, v, "state")
    o, state = _step(q, k, v, log_alpha, state.to(_compute_dtype(v)), _scale(scale, q.shape[-1]))
    return o.to(v.dtype), state


def _step(q, k, v, log_alpha, state, scale: float):
    dtype = state.dtype
    q, k, v, log_alpha = (x.to(dtype) for x in (q, k, v, log_alpha))
    state = log_alpha.exp().unsqueeze(-1) * state + k.unsqueeze(-1) * v.unsqueeze(-2)
    return scale * torch.einsum("bhn,bhnm->bhm", q, state), state


# ----------------------------------------------------------------------- parallel

def _decay_matrix(log_alpha_cumsum: torch.Tensor) -> torch.Tensor:
    """exp(Λ_i − Λ_j) for j ≤ i, else 0: [..., T, T, n] from Λ [..., T, n].

    The difference is taken BEFORE the exponential, so every exponent is ≤ 0 and
    nothing overflows, however strong the decay (e^{−Λ} alone would overflow).
    """
    T = log_alpha_cumsum.shape[-2]
    diff = log_alpha_cumsum.unsqueeze(-2) - log_alpha_cumsum.unsqueeze(-3)  # [..., i, j, n]
    causal = torch.ones(T, T, dtype=torch.bool, device=diff.device).tril()
    return diff.masked_fill(~causal[..., None], float("-inf")).exp()


def _decayed_scores(q: torch.Tensor, k: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """Σ_n q_i[n] k_j[n] decay[i, j, n]: [..., T, T] from q, k [..., T, n] and decay [..., T, T, n].

    A broadcast product and a sum over n: the same einsum runs as batched 1×n by n×1 matrix products,
    and with it the chunkwise form's forward and backward took a third longer on the CPU (n = 16,
    chunks of 16, the CPU demo's shape)."""
    return (q.unsqueeze(-2) * k.unsqueeze(-3) * decay).sum(-1)


def ddts_parallel(q, k, v, log_alpha, *, scale=None):
    """All tokens at once: O = A V with the implicit attention matrix A.

    A[b, h, i, j] = scale · Σ_n q_i[n] k_j[n] exp(Λ_i[n] − Λ_j[n]) for j ≤ i (Λ the
    cumulative sum of log α): how much of token j's value token i reads through the
    state. Memory is O(T²·n): a teaching tool, not a training path.
    Returns (o [B, T, H, m], attn [B, H, T, T]).
    """
    _check_inputs(q, k, v, log_alpha, seq_dims=4)
    out_dtype, dtype = v.dtype, _compute_dtype(v)
    q, k, v, log_alpha = (x.to(dtype).transpose(1, 2) for x in (q, k, v, log_alpha))  # [B, H, T, ·]
    decay = _decay_matrix(log_alpha.cumsum(dim=-2))
    attn = _scale(scale, q.shape[-1]) * _decayed_scores(q, k, decay)
    o = attn @ v
    return o.transpose(1, 2).to(out_dtype), attn


# ---------------------------------------------------------------------- chunkwise

def ddts_chunkwise(q, k, v, log_alpha, *, chunk_size=64, scale=None, initial_state=None, output_final_state=False,
                   check_inputs=True):
    """Chunks of C tokens: exact, numerically safe at any length, and fast on CPU.

    Inside chunk c (local cumulative decay b_i = Σ_{s ≤ i} log α_s, so b ≤ 0):

        o_i   = scale · [ (q_i ⊙ e^{b_i}) S_{c−1}  +  Σ_{j ≤ i} (q_i · (k_j ⊙ e^{b_i − b_j})) v_j ]
        S_c   = e^{b_C} ⊙ S_{c−1}  +  Σ_j (k_j ⊙ e^{b_C − b_j})ᵀ v_j

    Every exponent is ≤ 0, so nothing overflows (the parallel form's e^{−Λ} would).
    All chunks are processed together; only the state hand-over is a loop over chunks.
    Shapes as :func:`ddts_recurrent`. T need not be a multiple of ``chunk_size``.
    ``check_inputs=False`` skips the host-side check of log_alpha (see :func:`ddts_step`).
    """
    _check_inputs(q, k, v, log_alpha, seq_dims=4, check_values=check_inputs)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    B, T, H, n = q.shape
    m = v.shape[-1]
    out_dtype, dtype = v.dtype, _compute_dtype(v)
    scale = _scale(scale, n)
    state = _initial_state(initial_state, q, v, dtype)

    # Pad T to a multiple of C. Padding has log α = 0 and k = 0: it neither decays
    # nor writes the state, so the final state is exact; its outputs are cut off.
    C = min(chunk_size, T)
    N = math.ceil(T / C)
    pad = N * C - T

    def chunks(x):  # [B, T, H, D] -> [B, H, N, C, D]
        x = F.pad(x.to(dtype), (0, 0, 0, 0, 0, pad))
        return x.reshape(B, N, C, H, -1).permute(0, 3, 1, 2, 4)

    q, k, v, log_alpha = chunks(q), chunks(k), chunks(v), chunks(log_alpha)
    b = log_alpha.cumsum(dim=-2)                       # [B, H, N, C, n], ≤ 0
    b_last = b[..., -1:, :]                            # decay across the whole chunk

    # Within each chunk: the implicit attention restricted to the chunk.
    attn = _decayed_scores(q, k, _decay_matrix(b))
    o = attn @ v                                       # [B, H, N, C, m]

    # What each chunk adds to the state, decayed to the chunk's end.
    chunk_writes = (k * (b_last - b).exp()).transpose(-1, -2) @ v   # [B, H, N, n, m]
    chunk_decay = b_last.squeeze(-2).exp().unsqueeze(-1)            # [B, H, N, n, 1]

    # Hand the state from chunk to chunk; remember the state each chunk starts from.
    starts = []
    for c in range(N):
        starts.append(state)
        state = chunk_decay[:, :, c] * state + chunk_writes[:, :, c]
    starts = torch.stack(starts, dim=2)                             # [B, H, N, n, m]

    o = scale * (o + (q * b.exp()) @ starts)
    o = o.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, m)[:, :T]
    return o.to(out_dtype), (state if output_final_state else None)


# -------------------------------------------------------- the fused operator, as the kernels see it

def ddts(q, k, v, g_logits, tau_logits, *, scale=None, initial_state=None, output_final_state=False):
    """Rodimus' DDTS from raw keys and gate logits: the reference twin of ``rodimus_kernels.ddts``.

    q, k, g_logits, tau_logits: [B, T, H, n] (k not normalised); v: [B, T, H, m];
    initial_state: [B, H, n, m] or None. Returns (o [B, T, H, m] in v's dtype, final state or None):

        (log α, α̂) = ddts_gates(g_logits, tau_logits);  o = DDTS(q, α̂ ⊙ k/‖k‖, v, log α)
    """
    log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
    return ddts_chunkwise(q, effective_key(k, alpha_hat), v, log_alpha, scale=scale,
                          initial_state=initial_state, output_final_state=output_final_state,
                          check_inputs=False)   # log α = −softplus·sigmoid ≤ 0 by construction


def ddts_gated_step(q, k, v, g_logits, tau_logits, state, *, scale=None):
    """One decoding token from raw keys and gate logits: the reference twin of ``rodimus_kernels.ddts_step``.

    q, k, g_logits, tau_logits: [B, H, n]; v: [B, H, m]; state: [B, H, n, m], updated IN PLACE
    (as the kernel does). Returns (o [B, H, m] in v's dtype, state).
    """
    log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
    o, new_state = ddts_step(q, effective_key(k, alpha_hat), v, log_alpha, state, scale=scale, check_inputs=False)
    return o, state.copy_(new_state)


def ddts_states(q, k, v, log_alpha) -> torch.Tensor:
    """Every state S_1 … S_T of the recurrence: [B, T, H, n] ×3 and [B, T, H, m] → [B, T, H, n, m].

    Walks :func:`ddts_step` token by token (memory O(T·n·m): a teaching size).
    """
    _check_inputs(q, k, v, log_alpha, seq_dims=4)
    B, T, H, n = q.shape
    state = q.new_zeros(B, H, n, v.shape[-1], dtype=_compute_dtype(v))
    states = []
    for t in range(T):
        _, state = ddts_step(q[:, t], k[:, t], v[:, t], log_alpha[:, t], state)
        states.append(state)
    return torch.stack(states, dim=1) if states else state.new_zeros(B, 0, H, n, v.shape[-1])
