"""Triton kernels of sliding-window shared-key attention (SW-SKA); the wrappers are in ``sw_ska.py``.

Layout: q, o, dO, v, dq, dv [B, T, H, D] and k, dk [B, T, 1, D], all contiguous; logsumexp and delta
[B, H, T] float32. Query i sees key j when ``i - W < j <= i``. The softmax runs in base 2:
``qk_scale = scale * log2(e)`` and the saved logsumexp is ``log2 Σ_j exp2(qk_scale · q_i·k_j)``.

Every loop over key (or query) blocks is split in three: blocks cut by the window's far edge
(masked), blocks entirely visible (no mask, no bounds checks) and blocks on the diagonal (masked).

    _fwd          one query block of one head per program; heads vary fastest in the grid, so the
                  programs that run together read the same K tiles (from L2).
    _bwd_dq       one query block of one head per program; also writes delta = rowsum(dO · O) of its
                  rows, which _bwd_dkdv (launched after it) reads.
    _bwd_dkdv     one key block per program: K is loaded once, the program loops over its heads and
                  the query blocks in the window, writes dV per head and sums dK over the heads in
                  registers (deterministic; no per-head dK in memory).
    _decode       one query per head over a cache, split along the cache (flash-decoding); the
                  wrapper merges the splits.
"""

import triton
import triton.language as tl

# Start of the running max: a row that has seen no visible key yet keeps exp2(·) = 0 instead of NaN.
FINITE_MIN = tl.constexpr(-1.0e30)


@triton.jit
def _visible(q, k, T, W):
    """Query positions q and key positions k (broadcast to one 2-D tile): causal, inside the window, q < T."""
    return (k <= q) & (k > q - W) & (q < T)


@triton.jit
def _load_rows(ptr, offs_t, offs_d, stride_t, T, MASKED: tl.constexpr):
    """Tile [len(offs_t), D] of rows offs_t (zeros past T when MASKED)."""
    ptrs = ptr + offs_t[:, None] * stride_t + offs_d[None, :]
    if MASKED:
        return tl.load(ptrs, mask=offs_t[:, None] < T, other=0.0)
    return tl.load(ptrs)


@triton.jit
def _load_cols(ptr, offs_t, offs_d, stride_t, T, MASKED: tl.constexpr):
    """Transposed tile [D, len(offs_t)]."""
    ptrs = ptr + offs_t[None, :] * stride_t + offs_d[:, None]
    if MASKED:
        return tl.load(ptrs, mask=offs_t[None, :] < T, other=0.0)
    return tl.load(ptrs)


@triton.jit
def _key_ranges(m0, T, W, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key blocks seen by queries [m0, m0 + BLOCK_M): lo ≤ full_lo ≤ full_hi ≤ hi, [full_lo, full_hi) unmasked."""
    lo = tl.maximum(m0 - W + 1, 0) // BLOCK_N * BLOCK_N
    hi = tl.minimum(m0 + BLOCK_M, T)
    first_full = (tl.maximum(m0 + BLOCK_M - W, 0) + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    full_lo = tl.minimum(tl.maximum(lo, first_full), m0)
    return lo, full_lo, m0, hi


@triton.jit
def _query_ranges(n0, T, W, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    """Query blocks that see keys [n0, n0 + BLOCK_N): lo ≤ full_lo ≤ full_hi ≤ hi, [full_lo, full_hi) unmasked."""
    hi = tl.minimum(n0 + BLOCK_N - 1 + W, T)
    full_lo = n0 + BLOCK_N
    full_hi = tl.maximum(tl.minimum((n0 + W) // BLOCK_M * BLOCK_M, T // BLOCK_M * BLOCK_M), full_lo)
    return n0, full_lo, full_hi, hi


# ----------------------------------------------------------------------------------------- forward

@triton.jit
def _query_block(K, V, T, H, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """Where a program of query rows m0… of head program_id(0), batch program_id(2) reads and writes:
    (m0, row stride, base offset of its q/o/v rows, the batch's shared key head, its v head, the row and
    head-dim offsets, its rows' index into the [B, H, T] statistics logsumexp and delta)."""
    h = tl.program_id(0)
    m0 = tl.program_id(1) * BLOCK_M
    b = tl.program_id(2).to(tl.int64)
    stride_t = H * HEAD_DIM
    q_base = b * T * stride_t + h * HEAD_DIM
    offs_m = m0 + tl.arange(0, BLOCK_M)
    return (m0, stride_t, q_base, K + b * T * HEAD_DIM, V + q_base, offs_m, tl.arange(0, HEAD_DIM),
            (b * H + h) * T + offs_m)


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, offs_d, start, end, T, W, stride_vt, qk_scale,
               HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        kT = _load_cols(k_ptr, offs_n, offs_d, HEAD_DIM, T, MASKED)
        v = _load_rows(v_ptr, offs_n, offs_d, stride_vt, T, MASKED)
        s = tl.dot(q, kT, input_precision=PRECISION) * qk_scale
        if MASKED:
            s = tl.where(_visible(offs_m[:, None], offs_n[None, :], T, W), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["T", "H", "W"])
def _fwd(Q, K, V, O, LSE, T, H, W, qk_scale,
         HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    m0, stride_t, q_base, k_ptr, v_ptr, offs_m, offs_d, stat = _query_block(K, V, T, H, HEAD_DIM, BLOCK_M)
    q = _load_rows(Q + q_base, offs_m, offs_d, stride_t, T, True)

    m_i = tl.full([BLOCK_M], FINITE_MIN, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    lo, full_lo, full_hi, hi = _key_ranges(m0, T, W, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, offs_d, lo, full_lo, T, W, stride_t,
                               qk_scale, HEAD_DIM, BLOCK_N, True, PRECISION)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, offs_d, full_lo, full_hi, T, W, stride_t,
                               qk_scale, HEAD_DIM, BLOCK_N, False, PRECISION)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, offs_m, offs_d, full_hi, hi, T, W, stride_t,
                               qk_scale, HEAD_DIM, BLOCK_N, True, PRECISION)

    in_seq = offs_m < T
    l_safe = tl.where(in_seq, l_i, 1.0)
    o_ptrs = O + q_base + offs_m[:, None] * stride_t + offs_d[None, :]
    tl.store(o_ptrs, (acc / l_safe[:, None]).to(O.dtype.element_ty), mask=in_seq[:, None])
    tl.store(LSE + stat, m_i + tl.math.log2(l_safe), mask=in_seq)


# ---------------------------------------------------------------------------------------- backward

@triton.jit
def _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, offs_m, offs_d, start, end, T, W, stride_vt, qk_scale,
              HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        kT = _load_cols(k_ptr, offs_n, offs_d, HEAD_DIM, T, MASKED)
        vT = _load_cols(v_ptr, offs_n, offs_d, stride_vt, T, MASKED)
        p = tl.math.exp2(tl.dot(q, kT, input_precision=PRECISION) * qk_scale - lse[:, None])
        if MASKED:
            p = tl.where(_visible(offs_m[:, None], offs_n[None, :], T, W), p, 0.0)
        dp = tl.dot(do, vT, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq, input_precision=PRECISION)
    return dq


@triton.jit(do_not_specialize=["T", "H", "W"])
def _bwd_dq(Q, K, V, O, DO, LSE, DELTA, DQ, T, H, W, qk_scale, scale,
            HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    m0, stride_t, q_base, k_ptr, v_ptr, offs_m, offs_d, stat = _query_block(K, V, T, H, HEAD_DIM, BLOCK_M)
    in_seq = offs_m < T
    q = _load_rows(Q + q_base, offs_m, offs_d, stride_t, T, True)
    do = _load_rows(DO + q_base, offs_m, offs_d, stride_t, T, True)
    lse = tl.load(LSE + stat, mask=in_seq, other=0.0)
    o = _load_rows(O + q_base, offs_m, offs_d, stride_t, T, True)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + stat, delta, mask=in_seq)  # for _bwd_dkdv, launched next

    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    lo, full_lo, full_hi, hi = _key_ranges(m0, T, W, BLOCK_M, BLOCK_N)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, offs_m, offs_d, lo, full_lo, T, W, stride_t, qk_scale,
                   HEAD_DIM, BLOCK_N, True, PRECISION)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, offs_m, offs_d, full_lo, full_hi, T, W, stride_t, qk_scale,
                   HEAD_DIM, BLOCK_N, False, PRECISION)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, offs_m, offs_d, full_hi, hi, T, W, stride_t, qk_scale,
                   HEAD_DIM, BLOCK_N, True, PRECISION)
    dq_ptrs = DQ + q_base + offs_m[:, None] * stride_t + offs_d[None, :]
    tl.store(dq_ptrs, (dq * scale).to(DQ.dtype.element_ty), mask=in_seq[:, None])


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, offs_n, offs_d, start, end, T, W, stride_qt,
                qk_scale, BLOCK_M: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    """Transposed flash backward: rows are keys, columns queries."""
    for m0 in range(start, end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        qT = _load_cols(q_ptr, offs_m, offs_d, stride_qt, T, MASKED)
        do = _load_rows(do_ptr, offs_m, offs_d, stride_qt, T, MASKED)
        if MASKED:
            lse = tl.load(lse_ptr + offs_m, mask=offs_m < T, other=0.0)
            delta = tl.load(delta_ptr + offs_m, mask=offs_m < T, other=0.0)
        else:
            lse = tl.load(lse_ptr + offs_m)
            delta = tl.load(delta_ptr + offs_m)
        pT = tl.math.exp2(tl.dot(k, qT, input_precision=PRECISION) * qk_scale - lse[None, :])
        if MASKED:
            pT = tl.where(_visible(offs_m[None, :], offs_n[:, None], T, W), pT, 0.0)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=PRECISION)
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision=PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=["T", "H", "W", "heads_per_group"])
def _bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV, T, H, W, heads_per_group, qk_scale, scale,
              HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, PRECISION: tl.constexpr):
    """Program (key block, batch, head group). DK is [groups, B, T, D]: one slice per head group."""
    n0 = tl.program_id(0) * BLOCK_N
    b = tl.program_id(1).to(tl.int64)
    group = tl.program_id(2)
    stride_t = H * HEAD_DIM
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    in_seq = offs_n < T
    k = _load_rows(K + b * T * HEAD_DIM, offs_n, offs_d, HEAD_DIM, T, True)
    m_lo, full_lo, full_hi, m_hi = _query_ranges(n0, T, W, BLOCK_N, BLOCK_M)

    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    for h in range(group * heads_per_group, tl.minimum((group + 1) * heads_per_group, H)):
        base = b * T * stride_t + h * HEAD_DIM
        v = _load_rows(V + base, offs_n, offs_d, stride_t, T, True)
        lse_ptr = LSE + (b * H + h) * T
        delta_ptr = DELTA + (b * H + h) * T
        dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q + base, DO + base, lse_ptr, delta_ptr, offs_n, offs_d, m_lo, full_lo,
                             T, W, stride_t, qk_scale, BLOCK_M, True, PRECISION)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q + base, DO + base, lse_ptr, delta_ptr, offs_n, offs_d, full_lo, full_hi,
                             T, W, stride_t, qk_scale, BLOCK_M, False, PRECISION)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q + base, DO + base, lse_ptr, delta_ptr, offs_n, offs_d, full_hi, m_hi,
                             T, W, stride_t, qk_scale, BLOCK_M, True, PRECISION)
        dv_ptrs = DV + base + offs_n[:, None] * stride_t + offs_d[None, :]
        tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=in_seq[:, None])
    dk_ptrs = DK + (group * tl.num_programs(1) + b) * T * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(dk_ptrs, (dk * scale).to(DK.dtype.element_ty), mask=in_seq[:, None])


# ------------------------------------------------------------------------------------------ decode

@triton.jit(do_not_specialize=["length", "split_len", "H"])
def _decode(Q, K, V, M_OUT, L_OUT, ACC_OUT, length, split_len, H, qk_scale,
            stride_qb, stride_qh, stride_kb, stride_kt, stride_vb, stride_vt, stride_vh,
            HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    """Program (head, batch, split): softmax statistics and unnormalised output of one cache slice."""
    h = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_d).to(tl.float32)
    start = split * split_len
    end = tl.minimum(start + split_len, length)

    m_i = tl.full([], FINITE_MIN, tl.float32)
    l_i = tl.full([], 0.0, tl.float32)
    acc = tl.zeros([HEAD_DIM], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        valid = offs_n < end
        k = tl.load(K + b * stride_kb + offs_n[:, None] * stride_kt + offs_d[None, :],
                    mask=valid[:, None], other=0.0).to(tl.float32)
        v = tl.load(V + b * stride_vb + offs_n[:, None] * stride_vt + h * stride_vh + offs_d[None, :],
                    mask=valid[:, None], other=0.0).to(tl.float32)
        s = tl.where(valid, tl.sum(k * q[None, :], 1) * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new)
        l_i = l_i * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * v, 0)
        m_i = m_new
    row = (b * H + h) * tl.num_programs(2) + split
    tl.store(M_OUT + row, m_i)
    tl.store(L_OUT + row, l_i)
    tl.store(ACC_OUT + row * HEAD_DIM + offs_d, acc)
