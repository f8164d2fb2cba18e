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

@triton.jit
def _conv_pre(X, W, bias, x_base, t, c, cmask, T, sxt, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """bias + Σ_k W[c, k] · x[t − K + 1 + k, c] for a tile of times t × channels c (float32)."""
    pre = tl.zeros([BT, BC], tl.float32) + bias[None, :]
    for k in tl.static_range(K):
        ts = t + (k - (K - 1))
        w = tl.load(W + c * K + k, mask=cmask, other=0.0).to(tl.float32)
        x = tl.load(X + x_base + ts[:, None] * sxt + c[None, :],
                    mask=((ts >= 0) & (ts < T))[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        pre += w[None, :] * x
    return pre


@triton.jit
def conv_silu_fwd(X, W, Bias, Y, T, M, sxb, sxt, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """One program per (time block, channel block, sequence): y = SiLU(causal depthwise conv of x)."""
    t = tl.program_id(0) * BT + tl.arange(0, BT)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    b = tl.program_id(2).to(tl.int64)
    cmask = c < M
    bias = tl.load(Bias + c, mask=cmask, other=0.0).to(tl.float32)
    y, _ = _silu_grad(_conv_pre(X, W, bias, b * sxb, t, c, cmask, T, sxt, K, BT, BC))
    tl.store(Y + b * T * M + t[:, None] * M + c[None, :], y.to(Y.dtype.element_ty),
             mask=(t < T)[:, None] & cmask[None, :])


@triton.jit
def conv_silu_bwd(X, W, Bias, DY, DX, DW_PART, DB_PART, T, M, sxb, sxt,
                  K: tl.constexpr, KP: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
    """dx_s = Σ_j W[:, K−1−j] ⊙ g_{s+j} with g = dy ⊙ SiLU'(pre) recomputed at s … s+K−1 (pre from x);
    this program's share of ∂W[:, k] = Σ_t g_t x_{t−K+1+k} and ∂bias = Σ_t g_t into float32 partials
    [programs over (b, time), M, KP] and [·, M]."""
    pid_t, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    t = pid_t * BT + tl.arange(0, BT)
    c = pid_c * BC + tl.arange(0, BC)
    cmask = c < M
    x_base = b * sxb
    bias = tl.load(Bias + c, mask=cmask, other=0.0).to(tl.float32)
    dx = tl.zeros([BT, BC], tl.float32)
    for j in tl.static_range(K):
        tj = t + j
        _, dsilu = _silu_grad(_conv_pre(X, W, bias, x_base, tj, c, cmask, T, sxt, K, BT, BC))
        dy = tl.load(DY + b * T * M + tj[:, None] * M + c[None, :],
                     mask=(tj < T)[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        g = dy * dsilu
        w = tl.load(W + c * K + (K - 1 - j), mask=cmask, other=0.0).to(tl.float32)
        dx += w[None, :] * g
        if j == 0:   # the weight and bias gradients need g at t itself
            part = (b * tl.num_programs(0) + pid_t) * M
            tl.store(DB_PART + part + c, tl.sum(g, axis=0), mask=cmask)
            for k in tl.static_range(K):
                ts = t + (k - (K - 1))
                x = tl.load(X + x_base + ts[:, None] * sxt + c[None, :],
                            mask=((ts >= 0) & (ts < T))[:, None] & cmask[None, :], other=0.0).to(tl.float32)
                tl.store(DW_PART + (part + c) * KP + k, tl.sum(g * x, axis=0), mask=cmask)
    tl.store(DX + b * T * M + t[:, None] * M + c[None, :], dx.to(DX.dtype.element_ty),
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
