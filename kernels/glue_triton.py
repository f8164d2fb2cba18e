"""The Triton programs behind :mod:`rodimus_kernels.glue` (what each computes: its twin in ``glue_torch.py``).

Every program reads its activations in their own dtype (bf16 in training), does the arithmetic in
float32 registers and writes in the activations' dtype; a 2-D activation is addressed as rows of ``M``
contiguous elements with a row stride (so a ``chunk`` of a projection's output is read in place).
Reductions over rows (weight gradients) are per-program float32 partials, summed by the caller.
"""

import triton
import triton.language as tl


@triton.jit
def _silu_grad(pre):
    """(SiLU(pre), SiLU'(pre)) = (pre·σ, σ·(1 + pre·(1 − σ)))."""
    s = tl.sigmoid(pre)
    return pre * s, s * (1.0 + pre * (1.0 - s))


# ------------------------------------------------------------- short conv + SiLU
# Four taps, written out (the caller pads shorter kernels with leading zero taps): tiles held in a
# static loop were all kept live at once and spilled ~10 KB per thread in the backward (ptxas, sm_90a).

@triton.jit
def _x_at(X, x_base, t, shift, c, cmask, T, sxt):
    """x[t + shift, c] as float32 (zero outside the sequence)."""
    ts = t + shift
    return tl.load(X + x_base + ts[:, None] * sxt + c[None, :],
                   mask=((ts >= 0) & (ts < T))[:, None] & cmask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _w_at(W, c, cmask, k):
    return tl.load(W + c * 4 + k, mask=cmask, other=0.0).to(tl.float32)[None, :]


@triton.jit
def conv_silu_fwd(X, W, Bias, Y, T, M, sxb, sxt, BT: tl.constexpr, BC: tl.constexpr):
    """One program per (time block, channel block, sequence): y_t = SiLU(b + Σ_k W[:, k] ⊙ x_{t−3+k})."""
    t = tl.program_id(0) * BT + tl.arange(0, BT)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    b = tl.program_id(2).to(tl.int64)
    cmask = c < M
    xb = b * sxb
    pre = tl.load(Bias + c, mask=cmask, other=0.0).to(tl.float32)[None, :] \
        + _w_at(W, c, cmask, 0) * _x_at(X, xb, t, -3, c, cmask, T, sxt) \
        + _w_at(W, c, cmask, 1) * _x_at(X, xb, t, -2, c, cmask, T, sxt) \
        + _w_at(W, c, cmask, 2) * _x_at(X, xb, t, -1, c, cmask, T, sxt) \
        + _w_at(W, c, cmask, 3) * _x_at(X, xb, t, 0, c, cmask, T, sxt)
    y, _ = _silu_grad(pre)
    tl.store(Y + b * T * M + t[:, None] * M + c[None, :], y.to(Y.dtype.element_ty),
             mask=(t < T)[:, None] & cmask[None, :])


@triton.jit
def conv_silu_bwd(X, W, Bias, DY, DX, DW_PART, DB_PART, T, M, sxb, sxt, BT: tl.constexpr, BC: tl.constexpr):
    """g_t = dy_t ⊙ SiLU'(pre_t), pre recomputed from x at t … t+3; dx_t = Σ_j W[:, 3−j] ⊙ g_{t+j}; this
    program's share of ∂W[:, k] = Σ_t g_t x_{t−3+k} and ∂b = Σ_t g_t into float32 partials
    [programs over (sequence, time), M, 4] and [·, M]."""
    pid_t, b = tl.program_id(0), tl.program_id(2).to(tl.int64)
    t = pid_t * BT + tl.arange(0, BT)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    cmask = c < M
    xb = b * sxb
    dyb = b * T * M
    bias = tl.load(Bias + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
    w0, w1, w2, w3 = _w_at(W, c, cmask, 0), _w_at(W, c, cmask, 1), _w_at(W, c, cmask, 2), _w_at(W, c, cmask, 3)
    xm3, xm2 = _x_at(X, xb, t, -3, c, cmask, T, sxt), _x_at(X, xb, t, -2, c, cmask, T, sxt)
    xm1, x0 = _x_at(X, xb, t, -1, c, cmask, T, sxt), _x_at(X, xb, t, 0, c, cmask, T, sxt)
    _, ds = _silu_grad(bias + w0 * xm3 + w1 * xm2 + w2 * xm1 + w3 * x0)
    g = _x_at(DY, dyb, t, 0, c, cmask, T, M) * ds
    part = (b * tl.num_programs(0) + pid_t) * M + c
    tl.store(DB_PART + part, tl.sum(g, axis=0), mask=cmask)
    tl.store(DW_PART + part * 4 + 0, tl.sum(g * xm3, axis=0), mask=cmask)
    tl.store(DW_PART + part * 4 + 1, tl.sum(g * xm2, axis=0), mask=cmask)
    tl.store(DW_PART + part * 4 + 2, tl.sum(g * xm1, axis=0), mask=cmask)
    tl.store(DW_PART + part * 4 + 3, tl.sum(g * x0, axis=0), mask=cmask)
    dx = w3 * g
    x1 = _x_at(X, xb, t, 1, c, cmask, T, sxt)
    _, ds = _silu_grad(bias + w0 * xm2 + w1 * xm1 + w2 * x0 + w3 * x1)
    dx += w2 * _x_at(DY, dyb, t, 1, c, cmask, T, M) * ds
    x2 = _x_at(X, xb, t, 2, c, cmask, T, sxt)
    _, ds = _silu_grad(bias + w0 * xm1 + w1 * x0 + w2 * x1 + w3 * x2)
    dx += w1 * _x_at(DY, dyb, t, 2, c, cmask, T, M) * ds
    x3 = _x_at(X, xb, t, 3, c, cmask, T, sxt)
    _, ds = _silu_grad(bias + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3)
    dx += w0 * _x_at(DY, dyb, t, 3, c, cmask, T, M) * ds
    tl.store(DX + dyb + t[:, None] * M + c[None, :], dx.to(DX.dtype.element_ty),
             mask=(t < T)[:, None] & cmask[None, :])


# ------------------------------------------------ gated RMSNorm with the skip term

@triton.jit
def gated_norm_fwd(O, XC, Z, D, Wn, Y, RSTD, M, so, sx, sz, eps, BM: tl.constexpr):
    """One program per row: u = (o + d ⊙ x̃) ⊙ SiLU(z); y = u · rstd ⊙ w, rstd = (mean u² + eps)^−½."""
    row = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, BM)
    mask = c < M
    o = tl.load(O + row * so + c, mask=mask, other=0.0).to(tl.float32)
    xc = tl.load(XC + row * sx + c, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(Z + row * sz + c, mask=mask, other=0.0).to(tl.float32)
    d = tl.load(D + c, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(Wn + c, mask=mask, other=0.0).to(tl.float32)
    u = (o + d * xc) * (z * tl.sigmoid(z))
    rstd = 1.0 / tl.sqrt(tl.sum(u * u, axis=0) / M + eps)
    tl.store(RSTD + row, rstd)
    tl.store(Y + row * M + c, (u * rstd * w).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def gated_norm_bwd(O, XC, Z, D, Wn, RSTD, DY, DO, DXC, DZ, DD_PART, DW_PART, N, M, so, sx, sz,
                   BM: tl.constexpr):
    """Rows pid, pid + G, …: ∂o, ∂x̃ (the skip term's share), ∂z; this program's share of ∂d and ∂w."""
    pid, G = tl.program_id(0).to(tl.int64), tl.num_programs(0)   # int64 rows: N·stride may pass 2³¹
    c = tl.arange(0, BM)
    mask = c < M
    d = tl.load(D + c, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(Wn + c, mask=mask, other=0.0).to(tl.float32)
    dd_acc = tl.zeros([BM], tl.float32)
    dw_acc = tl.zeros([BM], tl.float32)
    for row in range(pid, N, G):
        o = tl.load(O + row * so + c, mask=mask, other=0.0).to(tl.float32)
        xc = tl.load(XC + row * sx + c, mask=mask, other=0.0).to(tl.float32)
        z = tl.load(Z + row * sz + c, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * M + c, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        silu, dsilu = _silu_grad(z)
        a = o + d * xc
        y_hat = a * silu * rstd
        gw = dy * w
        dw_acc += dy * y_hat
        du = rstd * (gw - y_hat * (tl.sum(gw * y_hat, axis=0) / M))
        da = du * silu
        dd_acc += da * xc
        tl.store(DO + row * M + c, da.to(DO.dtype.element_ty), mask=mask)
        tl.store(DXC + row * M + c, (da * d).to(DXC.dtype.element_ty), mask=mask)
        tl.store(DZ + row * M + c, (du * a * dsilu).to(DZ.dtype.element_ty), mask=mask)
    tl.store(DD_PART + pid * M + c, dd_acc, mask=mask)
    tl.store(DW_PART + pid * M + c, dw_acc, mask=mask)


# --------------------------------------------------------------------- value gate

@triton.jit
def value_gate_fwd(L, X, V, M, sl, sx, BM: tl.constexpr):
    """One program per (row, column block): v = σ(l) ⊙ x."""
    row = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BM + tl.arange(0, BM)
    mask = c < M
    logit = tl.load(L + row * sl + c, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(X + row * sx + c, mask=mask, other=0.0).to(tl.float32)
    tl.store(V + row * M + c, (tl.sigmoid(logit) * x).to(V.dtype.element_ty), mask=mask)


@triton.jit
def value_gate_bwd(L, X, DV, DL, DX, M, sl, sx, BM: tl.constexpr):
    """∂l = ∂v ⊙ x ⊙ σ(1 − σ), ∂x = ∂v ⊙ σ."""
    row = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BM + tl.arange(0, BM)
    mask = c < M
    logit = tl.load(L + row * sl + c, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(X + row * sx + c, mask=mask, other=0.0).to(tl.float32)
    dv = tl.load(DV + row * M + c, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(logit)
    tl.store(DL + row * M + c, (dv * x * s * (1.0 - s)).to(DL.dtype.element_ty), mask=mask)
    tl.store(DX + row * M + c, (dv * s).to(DX.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------ RMSNorm

@triton.jit
def rms_norm_fwd(X, Wn, Y, RSTD, M, sx, eps, BM: tl.constexpr):
    """One program per row: y = x · rstd ⊙ w, rstd = (mean x² + eps)^−½, written in Y's dtype."""
    row = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, BM)
    mask = c < M
    x = tl.load(X + row * sx + c, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(Wn + c, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / M + eps)
    tl.store(RSTD + row, rstd)
    tl.store(Y + row * M + c, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def rms_norm_bwd(X, Wn, RSTD, DY, DX, DW_PART, N, M, sx, BM: tl.constexpr):
    """Rows pid, pid + G, …: ∂x = rstd (∂y ⊙ w − x̂ mean(∂y ⊙ w ⊙ x̂)); this program's share of ∂w."""
    pid, G = tl.program_id(0).to(tl.int64), tl.num_programs(0)
    c = tl.arange(0, BM)
    mask = c < M
    w = tl.load(Wn + c, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BM], tl.float32)
    for row in range(pid, N, G):
        x = tl.load(X + row * sx + c, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * M + c, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        x_hat = x * rstd
        gw = dy * w
        dw_acc += dy * x_hat
        dx = rstd * (gw - x_hat * (tl.sum(gw * x_hat, axis=0) / M))
        tl.store(DX + row * M + c, dx.to(DX.dtype.element_ty), mask=mask)
    tl.store(DW_PART + pid * M + c, dw_acc, mask=mask)


# --------------------------------------------------------------------------- RoPE

@triton.jit
def rope_rotate(X, COS, SIN, Y, N, T, H, sign, HALF: tl.constexpr, BR: tl.constexpr, BD: tl.constexpr):
    """Rows r of x [B·T·H, 2·HALF] at position t = (r // H) mod T, rotate-half pairs (i, i + HALF):
    y₁ = x₁ cos − s·x₂ sin, y₂ = x₂ cos + s·x₁ sin with s = sign (−1: the inverse rotation, the backward)."""
    r = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    i = tl.arange(0, BD)
    mask = (r < N)[:, None] & (i < HALF)[None, :]
    t = (r // H) % T
    row = r[:, None] * (2 * HALF) + i[None, :]
    x1 = tl.load(X + row, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + row + HALF, mask=mask, other=0.0).to(tl.float32)
    cos = tl.load(COS + t[:, None] * HALF + i[None, :], mask=mask, other=0.0)
    sin = sign * tl.load(SIN + t[:, None] * HALF + i[None, :], mask=mask, other=0.0)
    tl.store(Y + row, (x1 * cos - x2 * sin).to(Y.dtype.element_ty), mask=mask)
    tl.store(Y + row + HALF, (x2 * cos + x1 * sin).to(Y.dtype.element_ty), mask=mask)
