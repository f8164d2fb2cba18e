"""The Triton programs behind :func:`rodimus_kernels.ddts` (the plan is in ``ddts.py``'s docstring).

Layouts (token-major, every sequence of a batch packed one after another, ``[TOK, H, D]``):
q, k, g, tau, qg, kg: ``[TOK, H, n]``; v, o, do, dv: ``[TOK, H, m]``; A (fp32): ``[TOK, H, C]`` (row i of a
chunk holds A[i, 0:C]); gc: ``[NC, H, n]``; h, dh: ``[NC, H, n, m]`` (NC = number of chunks of all
sequences); the backward's fp32 partials: ``[splits·NC, H, 2·C·BN + C·C + BN]`` (do·hᵀ, v·dhᵀ, do·vᵀ, Σh⊙dh).
A chunk is located by ``_chunk`` (uniform batch: from the program id; varlen: from host-built tables).
"""

import triton
import triton.language as tl

NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def _gates(g, tau):
    """(s, log s, t, log α, α̂) with s = softplus(g) (torch's threshold 20), t = σ(τ).

    log1p(e) uses Goldberg's trick (exact where 1 + e rounds) and log s = g below g = −15, where
    softplus(g) = e^g to fp32 precision: no log of an underflowed 0, so α̂ and all gradients stay finite.
    """
    e = tl.exp(tl.minimum(g, 20.0))
    u = 1.0 + e
    s = tl.where(g > 20.0, g, tl.where(u == 1.0, e, tl.log(u) * (e / tl.where(u == 1.0, 1.0, u - 1.0))))
    log_s = tl.where(g < -15.0, g, tl.log(tl.where(g < -15.0, 1.0, s)))
    t = tl.sigmoid(tau)
    return s, log_s, t, -s * t, tl.exp(t * log_s)


@triton.jit
def _chunk(ic, T, NT, chunk_seq, chunk_local, cu, C: tl.constexpr, VARLEN: tl.constexpr):
    """(first token, end of its sequence) of global chunk ``ic`` as int64."""
    if VARLEN:
        seq = tl.load(chunk_seq + ic)
        local = tl.load(chunk_local + ic)
        bos = tl.load(cu + seq).to(tl.int64)
        eos = tl.load(cu + seq + 1).to(tl.int64)
    else:
        seq = ic // NT
        local = ic % NT
        bos = seq.to(tl.int64) * T
        eos = bos + T
    return bos + local * C, eos


@triton.jit
def _sequence(i_s, T, NT, cu, chunk_off, VARLEN: tl.constexpr):
    """(first token, end, index of its first chunk) of sequence ``i_s`` as int64."""
    if VARLEN:
        bos = tl.load(cu + i_s).to(tl.int64)
        eos = tl.load(cu + i_s + 1).to(tl.int64)
        c0 = tl.load(chunk_off + i_s).to(tl.int64)
    else:
        bos = i_s.to(tl.int64) * T
        eos = bos + T
        c0 = i_s.to(tl.int64) * NT
    return bos, eos, c0


@triton.jit
def _chunk_tile(tok0, eos, ih, H, N, C: tl.constexpr, BN: tl.constexpr):
    """(int64 base, int32 tile offsets, mask) of a chunk's [C, n] tile in a [TOK, H, n] tensor."""
    rows = tl.arange(0, C)
    cols = tl.arange(0, BN)
    mask = (rows < eos - tok0)[:, None] & (cols < N)[None, :]
    return tok0 * (H * N) + ih * N, rows[:, None] * (H * N) + cols[None, :], mask


@triton.jit
def _keys_and_gates(k, g, tau, base, off, mask):
    """k̂ = k/‖k‖, ‖k‖ and 1/max(‖k‖, eps) (kept as [..., 1]), the gate pieces and log α (0 on
    padded rows), all fp32, for a 2-D [rows, n] or 3-D tile of offsets ``off``.

    Cheap enough to call twice in one program (the backward does), which keeps fewer tiles live.
    """
    kr = tl.load(k + base + off, mask=mask, other=0.0).to(tl.float32)
    gl = tl.load(g + base + off, mask=mask, other=0.0).to(tl.float32)
    tl_ = tl.load(tau + base + off, mask=mask, other=0.0).to(tl.float32)
    norm = tl.sqrt(tl.sum(kr * kr, axis=len(kr.shape) - 1, keep_dims=True))
    inv = 1.0 / tl.maximum(norm, 1e-12)
    s, log_s, t, la, ah = _gates(gl, tl_)
    return kr * inv, norm, inv, gl, s, log_s, t, ah, tl.where(mask, la, 0.0)


@triton.jit
def _offdiag_scores(qs, ke, b, C: tl.constexpr, SB: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr):
    """A[i, j] = Σ_n qs_in ke_jn e^{b_in − b_jn} for the SB×SB blocks strictly below the diagonal.

    One matmul per block row I, both factors scaled against r = b at the row before block I
    (b_i ≤ r ≤ b_j there), so every exponent is ≤ 0: no overflow, whatever the decay.
    """
    NS: tl.constexpr = C // SB
    rows = tl.arange(0, C)
    blk = rows // SB
    A = tl.zeros([C, C], dtype=tl.float32)
    for I in range(1, NS):
        r = tl.sum(tl.where(rows[:, None] == I * SB - 1, b, 0.0), axis=0)
        qi = qs * tl.exp(tl.where((blk == I)[:, None], b - r[None, :], NEG_INF))
        kj = ke * tl.exp(tl.where((blk < I)[:, None], r[None, :] - b, NEG_INF))
        if BN > 128 and PREC == "tf32x3":   # two half-width products: a 3-pass tf32 dot of [C, 256] fp32
            # tiles staged its four operand parts (hi, lo of each) in 256 KB of shared memory, over the 227 KB
            # of an H100/H200 (1-pass tf32, for 16-bit inputs, stages two: 128 KB, one product as before)
            qa, qb = tl.split(tl.reshape(qi, [C, BN // 2, 2]))
            ka, kb = tl.split(tl.reshape(kj, [C, BN // 2, 2]))
            A = tl.dot(qa, tl.trans(ka), A, input_precision=PREC)
            A = tl.dot(qb, tl.trans(kb), A, input_precision=PREC)
        else:
            A = tl.dot(qi, tl.trans(kj), A, input_precision=PREC)
    return A


@triton.jit
def _diag_block(q, k, g, tau, base, row0, nrows, scale, H, N,
                SB: tl.constexpr, BN: tl.constexpr):
    """The SB rows of one diagonal block, re-read from memory in the two 3-D layouts a pairwise
    product needs: (qs [SB,1,BN], b [SB,1,BN]) for the rows i and (ke [1,SB,BN], b [1,SB,BN]) for the
    columns j, plus D = e^{b_i − b_j} (j ≤ i, else 0) [SB,SB,BN]. b is the cumsum of log α from the
    block's own first row: only differences inside the block are used, so the offset cancels.
    """
    r = tl.arange(0, SB)
    c3 = tl.arange(0, BN)[None, None, :]
    ri = r[:, None, None]
    rj = r[None, :, None]
    mask_i = (row0 + ri < nrows) & (c3 < N)
    mask_j = (row0 + rj < nrows) & (c3 < N)
    qs = tl.load(q + base + (row0 + ri) * (H * N) + c3, mask=mask_i, other=0.0).to(tl.float32) * scale
    _, _, _, _, _, _, _, _, la_i = _keys_and_gates(k, g, tau, base, (row0 + ri) * (H * N) + c3, mask_i)
    khat, _, _, _, _, _, _, ah, la_j = _keys_and_gates(k, g, tau, base, (row0 + rj) * (H * N) + c3, mask_j)
    b_i = tl.cumsum(la_i, axis=0)
    b_j = tl.cumsum(la_j, axis=1)
    d = tl.exp(tl.where(ri >= rj, b_i - b_j, NEG_INF))
    return qs, khat * ah, d


@triton.jit
def ddts_prep_fwd(q, k, g, tau, qg, kg, gc, A, cu, chunk_seq, chunk_local, scale, T, NT, H, N,
                  C: tl.constexpr, SB: tl.constexpr, BN: tl.constexpr, PREC: tl.constexpr,
                  VARLEN: tl.constexpr):
    """One program = one chunk of one head: gates, key norm, decayed q/k, intra-chunk scores."""
    ic = tl.program_id(0)
    ih = tl.program_id(1)
    tok0, eos = _chunk(ic, T, NT, chunk_seq, chunk_local, cu, C, VARLEN)
    base, off, mask = _chunk_tile(tok0, eos, ih, H, N, C, BN)
    qs = tl.load(q + base + off, mask=mask, other=0.0).to(tl.float32) * scale
    khat, norm, inv, gl, s, log_s, t, ah, la = _keys_and_gates(k, g, tau, base, off, mask)
    ke = khat * ah
    b = tl.cumsum(la, axis=0)      # chunk-local cumulative decay, ≤ 0; padded rows repeat the last
    bC = tl.sum(la, axis=0)
    tl.store(qg + base + off, (qs * tl.exp(b)).to(qg.dtype.element_ty), mask=mask)
    tl.store(kg + base + off, (ke * tl.exp(bC[None, :] - b)).to(kg.dtype.element_ty), mask=mask)
    cols = tl.arange(0, BN)
    tl.store(gc + (ic.to(tl.int64) * H + ih) * N + cols, tl.exp(bC), mask=cols < N)
    scores = _offdiag_scores(qs, ke, b, C, SB, BN, PREC)
    rows = tl.arange(0, C)
    cols_c = tl.arange(0, C)
    nrows = eos - tok0
    a_base = tok0 * (H * C) + ih * C
    offdiag = (rows < nrows)[:, None] & ((rows // SB)[:, None] != (cols_c // SB)[None, :])
    tl.store(A + a_base + rows[:, None] * (H * C) + cols_c[None, :], scores.to(A.dtype.element_ty), mask=offdiag)
    NS: tl.constexpr = C // SB
    ri = tl.arange(0, SB)[:, None]
    rj = tl.arange(0, SB)[None, :]
    for I in range(NS):   # diagonal blocks: element-wise, the difference before the exp
        qs3, ke3, d = _diag_block(q, k, g, tau, base, I * SB, nrows, scale, H, N, SB, BN)
        block = tl.sum(qs3 * ke3 * d, axis=2)
        tl.store(A + a_base + (I * SB + ri) * (H * C) + I * SB + rj, block.to(A.dtype.element_ty),
                 mask=(I * SB + ri < nrows))


@triton.jit
def _walk_layout(H, N, M, C: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr):
    """A walk program's index tiles (its value columns are block ``program_id(2)`` of BM): the chunk's
    rows, the n columns, their masks, the offsets/mask of its [n, BM] state tile, and the in-chunk offsets
    of a [C, n] tile, the [C, C] score block and a [C, BM] value tile (set once, outside the chunk loop)."""
    rows = tl.arange(0, C)
    cols = tl.arange(0, BN)
    mcols = tl.program_id(2) * BM + tl.arange(0, BM)
    nmask = cols < N
    mmask = mcols < M
    s_off = cols[:, None] * M + mcols[None, :]
    s_mask = nmask[:, None] & mmask[None, :]
    nk_off = rows[:, None] * (H * N) + cols[None, :]
    a_off = rows[:, None] * (H * C) + rows[None, :]
    vm_off = rows[:, None] * (H * M) + mcols[None, :]
    return rows, cols, nmask, mmask, s_off, s_mask, nk_off, a_off, vm_off


@triton.jit
def _walk_chunk(qg, kg, gc, A, tok0, eos, chunk, ih, rows, cols, nmask, mmask, nk_off, a_off, H, N, M,
                C: tl.constexpr):
    """What both walks read of one chunk: qg, kg [C, n], e^{b_C} [n], the score block A [C, C], and the
    base and mask of the chunk's [C, BM] value tile."""
    rmask = rows < eos - tok0
    nk_mask = rmask[:, None] & nmask[None, :]
    qgc = tl.load(qg + (tok0 * (H * N) + ih * N) + nk_off, mask=nk_mask, other=0.0)
    kgc = tl.load(kg + (tok0 * (H * N) + ih * N) + nk_off, mask=nk_mask, other=0.0)
    gcc = tl.load(gc + (chunk * H + ih) * N + cols, mask=nmask, other=0.0)
    Ac = tl.load(A + (tok0 * (H * C) + ih * C) + a_off, mask=rmask[:, None], other=0.0)
    return qgc, kgc, gcc, Ac, tok0 * (H * M) + ih * M, rmask[:, None] & mmask[None, :]


@triton.jit
def ddts_fwd_walk(qg, kg, gc, A, v, o, h, h0, ht, cu, chunk_off, T, NT, H, N, M,
                  C: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr,
                  STORE_H: tl.constexpr, USE_H0: tl.constexpr, STORE_HT: tl.constexpr,
                  VARLEN: tl.constexpr):
    """One program = one sequence × head × BM value columns; walks its chunks in order.

    The state tile S [n, BM] lives in registers in fp32 the whole time; per chunk:
    o = qg·S + A·v, then S ← e^{b_C} ⊙ S + kgᵀ·v. With STORE_H it leaves each chunk's start state in h.
    """
    i_s = tl.program_id(0)
    ih = tl.program_id(1)
    bos, eos, c0 = _sequence(i_s, T, NT, cu, chunk_off, VARLEN)
    rows, cols, nmask, mmask, s_off, s_mask, nk_off, a_off, vm_off = _walk_layout(H, N, M, C, BN, BM)
    S = tl.zeros([BN, BM], dtype=tl.float32)
    if USE_H0:
        S += tl.load(h0 + (i_s.to(tl.int64) * H + ih) * N * M + s_off, mask=s_mask, other=0.0)
    dt = qg.dtype.element_ty
    for c in range(tl.cdiv(eos - bos, C)):
        tok0 = bos + c * C
        qgc, kgc, gcc, Ac, vbase, vm_mask = _walk_chunk(qg, kg, gc, A, tok0, eos, c0 + c, ih, rows, cols, nmask,
                                                        mmask, nk_off, a_off, H, N, M, C)
        vc = tl.load(v + vbase + vm_off, mask=vm_mask, other=0.0).to(dt)
        if STORE_H:
            tl.store(h + ((c0 + c) * H + ih) * N * M + s_off, S.to(h.dtype.element_ty), mask=s_mask)
        oc = tl.dot(qgc, S.to(dt), input_precision=PREC)
        oc = tl.dot(Ac, vc.to(tl.float32), oc, input_precision=PREC)   # A stays fp32: tf32, not bf16
        tl.store(o + vbase + vm_off, oc.to(o.dtype.element_ty), mask=vm_mask)
        S = S * gcc[:, None]
        S = tl.dot(tl.trans(kgc), vc, S, input_precision=PREC)
    if STORE_HT:
        tl.store(ht + (i_s.to(tl.int64) * H + ih) * N * M + s_off, S, mask=s_mask)


@triton.jit
def ddts_bwd_walk(qg, kg, gc, A, do, dv, dh, dht, dh0, cu, chunk_off, T, NT, H, N, M,
                  C: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr,
                  USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, VARLEN: tl.constexpr):
    """The forward walk run backwards: dS [n, BM] (fp32, registers) from the last chunk to the first.

    Per chunk: dh ← dS (the gradient of the chunk's end state), dv = Aᵀ·do + kg·dS (complete: the
    value columns are this program's own), dS ← e^{b_C} ⊙ dS + qgᵀ·do. Leaves d(initial state).
    """
    i_s = tl.program_id(0)
    ih = tl.program_id(1)
    bos, eos, c0 = _sequence(i_s, T, NT, cu, chunk_off, VARLEN)
    rows, cols, nmask, mmask, s_off, s_mask, nk_off, a_off, vm_off = _walk_layout(H, N, M, C, BN, BM)
    dS = tl.zeros([BN, BM], dtype=tl.float32)
    if USE_DHT:
        dS += tl.load(dht + (i_s.to(tl.int64) * H + ih) * N * M + s_off, mask=s_mask, other=0.0)
    dt = qg.dtype.element_ty
    nchunks = tl.cdiv(eos - bos, C)
    for cc in range(nchunks):
        c = nchunks - 1 - cc
        tok0 = bos + c * C
        qgc, kgc, gcc, Ac, vbase, vm_mask = _walk_chunk(qg, kg, gc, A, tok0, eos, c0 + c, ih, rows, cols, nmask,
                                                        mmask, nk_off, a_off, H, N, M, C)
        doc = tl.load(do + vbase + vm_off, mask=vm_mask, other=0.0).to(dt)
        tl.store(dh + ((c0 + c) * H + ih) * N * M + s_off, dS.to(dh.dtype.element_ty), mask=s_mask)
        dvc = tl.dot(tl.trans(Ac), doc.to(tl.float32), input_precision=PREC)
        dvc = tl.dot(kgc, dS.to(dt), dvc, input_precision=PREC)
        tl.store(dv + vbase + vm_off, dvc.to(dv.dtype.element_ty), mask=vm_mask)
        dS = dS * gcc[:, None]
        dS = tl.dot(tl.trans(qgc), doc, dS, input_precision=PREC)
    if STORE_DH0:
        tl.store(dh0 + (i_s.to(tl.int64) * H + ih) * N * M + s_off, dS, mask=s_mask)


@triton.jit
def ddts_bwd_sweep(v, do, h, dh, partial, cu, chunk_seq, chunk_local, T, NT, H, N, M, TILES_PER_SPLIT,
                   C: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, PREC: tl.constexpr,
                   VARLEN: tl.constexpr):
    """One program = one chunk of one head × one share of the value columns (the sweep is split so
    that enough programs stream v, do, h, dh at once). Accumulates do·hᵀ [C, n], v·dhᵀ [C, n],
    do·vᵀ [C, C] and Σ h⊙dh [n] over its BM-wide tiles, in fp32, into its slot of ``partial``.
    """
    ic = tl.program_id(0)
    ih = tl.program_id(1)
    split = tl.program_id(2)
    tok0, eos = _chunk(ic, T, NT, chunk_seq, chunk_local, cu, C, VARLEN)
    rows = tl.arange(0, C)
    cols = tl.arange(0, BN)
    rmask = rows < eos - tok0
    nmask = cols < N
    dt = h.dtype.element_ty
    vbase = tok0 * (H * M) + ih * M
    hbase = (ic.to(tl.int64) * H + ih) * N * M
    dqg = tl.zeros([C, BN], dtype=tl.float32)
    dkg = tl.zeros([C, BN], dtype=tl.float32)
    dA = tl.zeros([C, C], dtype=tl.float32)
    dgc = tl.zeros([BN], dtype=tl.float32)
    first = split * TILES_PER_SPLIT
    for im in range(first, tl.minimum(first + TILES_PER_SPLIT, tl.cdiv(M, BM))):
        mcols = im * BM + tl.arange(0, BM)
        mmask = mcols < M
        vm_off = rows[:, None] * (H * M) + mcols[None, :]
        vm_mask = rmask[:, None] & mmask[None, :]
        vc = tl.load(v + vbase + vm_off, mask=vm_mask, other=0.0).to(dt)
        doc = tl.load(do + vbase + vm_off, mask=vm_mask, other=0.0).to(dt)
        s_off = cols[:, None] * M + mcols[None, :]
        s_mask = nmask[:, None] & mmask[None, :]
        hc = tl.load(h + hbase + s_off, mask=s_mask, other=0.0)
        dhc = tl.load(dh + hbase + s_off, mask=s_mask, other=0.0)
        dqg = tl.dot(doc, tl.trans(hc.to(dt)), dqg, input_precision=PREC)
        dkg = tl.dot(vc, tl.trans(dhc.to(dt)), dkg, input_precision=PREC)
        dA = tl.dot(doc, tl.trans(vc), dA, input_precision=PREC)
        # h and dh are fp32: Σ h⊙dh feeds ∂log α, whose terms cancel (see Precision in ddts.py)
        dgc += tl.sum(hc * dhc, axis=1)
    partial += ((split * tl.num_programs(0) + ic).to(tl.int64) * H + ih) * (2 * C * BN + C * C + BN)
    tile = rows[:, None] * BN + cols[None, :]
    tl.store(partial + tile, dqg)
    tl.store(partial + C * BN + tile, dkg)
    tl.store(partial + 2 * C * BN + rows[:, None] * C + tl.arange(0, C)[None, :], dA)
    tl.store(partial + 2 * C * BN + C * C + cols, dgc)


@triton.jit
def ddts_bwd_chunk(q, k, g, tau, partial, dq, dk, dg, dtau, scratch, cu, chunk_seq, chunk_local,
                   scale, T, NT, H, N, SPLITS,
                   C: tl.constexpr, SB: tl.constexpr, BN: tl.constexpr,
                   PREC: tl.constexpr, VARLEN: tl.constexpr):
    """One program = one chunk of one head: the gradients of q, k, g_logits and tau_logits.

    Sums the sweep's partials (do·hᵀ, v·dhᵀ, do·vᵀ, Σ h⊙dh), adds the intra-chunk terms (same
    sub-block scheme as the forward scores), turns ∂b into ∂log α by a reverse cumsum, and chains
    through α̂, the key norm, softplus and sigmoid.
    """
    NS: tl.constexpr = C // SB
    ic = tl.program_id(0)
    ih = tl.program_id(1)
    tok0, eos = _chunk(ic, T, NT, chunk_seq, chunk_local, cu, C, VARLEN)
    rows = tl.arange(0, C)
    cols = tl.arange(0, BN)
    cols_c = tl.arange(0, C)
    tile = rows[:, None] * BN + cols[None, :]
    dqg = tl.zeros([C, BN], dtype=tl.float32)
    dkg = tl.zeros([C, BN], dtype=tl.float32)
    dA = tl.zeros([C, C], dtype=tl.float32)
    dgc = tl.zeros([BN], dtype=tl.float32)
    for split in range(SPLITS):
        p = partial + ((split * tl.num_programs(0) + ic).to(tl.int64) * H + ih) * (2 * C * BN + C * C + BN)
        dqg += tl.load(p + tile)
        dkg += tl.load(p + C * BN + tile)
        dA += tl.load(p + 2 * C * BN + rows[:, None] * C + cols_c[None, :])
        dgc += tl.load(p + 2 * C * BN + C * C + cols)

    # computed after the sweep, so that only the four accumulators are live during it
    base, off, mask = _chunk_tile(tok0, eos, ih, H, N, C, BN)
    qs = tl.load(q + base + off, mask=mask, other=0.0).to(tl.float32) * scale
    khat, norm, inv, gl, s, log_s, t, ah, la = _keys_and_gates(k, g, tau, base, off, mask)
    ke = khat * ah
    b = tl.cumsum(la, axis=0)
    bC = tl.sum(la, axis=0)
    ekb = tl.exp(bC[None, :] - b)
    dbC = tl.exp(bC) * dgc + tl.sum(ke * ekb * dkg, axis=0)
    dqs = dqg * tl.exp(b)
    dke = dkg * ekb
    dA = tl.where(rows[:, None] >= cols_c[None, :], dA, 0.0)
    blk = rows // SB
    for I in range(1, NS):
        r = tl.sum(tl.where(rows[:, None] == I * SB - 1, b, 0.0), axis=0)
        eq = tl.exp(tl.where((blk == I)[:, None], b - r[None, :], NEG_INF))
        ek = tl.exp(tl.where((blk < I)[:, None], r[None, :] - b, NEG_INF))
        dqs += eq * tl.dot(dA, ke * ek, input_precision=PREC)
        dke += ek * tl.dot(tl.trans(dA), qs * eq, input_precision=PREC)
    # Diagonal blocks, element-wise in 3-D: dA's diagonal blocks go through this program's scratch
    # (registers cannot be sliced), and so do the [SB, n] results (they cannot be placed into a tile).
    scratch += (ic.to(tl.int64) * H + ih) * (C * C + 2 * C * BN)
    tl.store(scratch + rows[:, None] * C + cols_c[None, :], dA)
    tl.debug_barrier()
    nrows = eos - tok0
    r3 = tl.arange(0, SB)
    ri = r3[:, None]
    cj = cols[None, :]
    for I in range(NS):
        qs3, ke3, d = _diag_block(q, k, g, tau, base, I * SB, nrows, scale, H, N, SB, BN)
        dA3 = tl.load(scratch + (I * SB + r3[:, None, None]) * C + I * SB + r3[None, :, None])
        tl.store(scratch + C * C + (I * SB + ri) * BN + cj, tl.sum(dA3 * ke3 * d, axis=1))
        tl.store(scratch + C * C + C * BN + (I * SB + ri) * BN + cj, tl.sum(dA3 * qs3 * d, axis=0))
    tl.debug_barrier()
    dqs += tl.load(scratch + C * C + rows[:, None] * BN + cols[None, :])
    dke += tl.load(scratch + C * C + C * BN + rows[:, None] * BN + cols[None, :])

    # ∂b_i = qs⊙∂qs − ke⊙∂ke; b_C also scales the start state and every write (∂b_C above).
    dla = tl.cumsum(qs * dqs - ke * dke, axis=0, reverse=True) + dbC[None, :]
    tl.store(dq + base + off, (dqs * scale).to(dq.dtype.element_ty), mask=mask)
    khat, norm, inv, gl, s, log_s, t, ah, la = _keys_and_gates(k, g, tau, base, off, mask)  # again: fewer live tiles
    # k_eff = α̂ ⊙ k̂ with k̂ = k / max(‖k‖, eps)
    dah = dke * khat
    dkhat = dke * ah
    proj = tl.where(norm > 1e-12, tl.sum(khat * dkhat, axis=1, keep_dims=True), 0.0)
    tl.store(dk + base + off, ((dkhat - khat * proj) * inv).to(dk.dtype.element_ty), mask=mask)
    # log α = −s·t, α̂ = s^t, s = softplus(g), t = σ(τ); σ(g)/s → 1 where s underflows
    sig_g = tl.sigmoid(gl)
    ratio = tl.where(gl < -15.0, 1.0, sig_g / tl.where(gl < -15.0, 1.0, s))
    dgl = -t * sig_g * dla + dah * t * ah * ratio
    dtl = (-s * dla + dah * ah * log_s) * t * (1.0 - t)
    tl.store(dg + base + off, dgl.to(dg.dtype.element_ty), mask=mask)
    tl.store(dtau + base + off, dtl.to(dtau.dtype.element_ty), mask=mask)


@triton.jit
def ddts_step_kernel(q, k, v, g, tau, state, o, scale, N, M,
                     BN: tl.constexpr, BM: tl.constexpr):
    """One program = one (batch, head) × BM value columns of one decoding step; state updated in place."""
    ib = tl.program_id(0)
    im = tl.program_id(1)
    cols = tl.arange(0, BN)
    mcols = im * BM + tl.arange(0, BM)
    nmask = cols < N
    mmask = mcols < M
    qn = tl.load(q + ib * N + cols, mask=nmask, other=0.0).to(tl.float32) * scale
    kn = tl.load(k + ib * N + cols, mask=nmask, other=0.0).to(tl.float32)
    gl = tl.load(g + ib * N + cols, mask=nmask, other=0.0).to(tl.float32)
    tl_ = tl.load(tau + ib * N + cols, mask=nmask, other=0.0).to(tl.float32)
    s, log_s, t, la, ah = _gates(gl, tl_)
    ke = kn * ah / tl.maximum(tl.sqrt(tl.sum(kn * kn, axis=0)), 1e-12)
    vm = tl.load(v + ib * M + mcols, mask=mmask, other=0.0).to(tl.float32)
    state += ib.to(tl.int64) * N * M
    s_off = cols[:, None] * M + mcols[None, :]
    s_mask = nmask[:, None] & mmask[None, :]
    S = tl.load(state + s_off, mask=s_mask, other=0.0)
    S = tl.exp(la)[:, None] * S + ke[:, None] * vm[None, :]
    tl.store(state + s_off, S, mask=s_mask)
    tl.store(o + ib * M + mcols, tl.sum(qn[:, None] * S, axis=0).to(o.dtype.element_ty), mask=mmask)
