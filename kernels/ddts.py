"""Fused DDTS in Triton: ``ddts`` (training, forward + backward) and ``ddts_step`` (decoding).

Reference twins, with the same signatures: ``rodimus_lab.ddts.ddts`` (gates and key norm from the
logits, then the chunkwise form) and ``rodimus_lab.ddts.ddts_gated_step``. The kernels are in
``ddts_triton.py``.

What the kernels compute (one head; row vectors; C = 64 tokens per chunk, b = chunk-local cumsum of
log α, so b ≤ 0 and decreasing; b_C its last row):

    o_i = scale·q_i ⊙ e^{b_i} · S_start  +  Σ_{j ≤ i, same chunk} A_ij v_j,   A_ij = Σ_n scale·q_in k_jn e^{b_in − b_jn}
    S_end = e^{b_C} ⊙ S_start + Σ_j (k_j ⊙ e^{b_C − b_j})ᵀ v_j                  k = α̂ ⊙ k / ‖k‖

Why this plan. The work is dominated by the value side (m = 2048 ≫ n = 64): v and o are read/written
once, everything of width n is cheap. So:

1. ``ddts_prep_fwd`` — one program per (chunk, head), fully parallel. Loads q, k, g_logits, tau_logits
   of 64 tokens, computes softplus/sigmoid/power, the key norm and b in registers, and writes
   qg = scale·q ⊙ e^{b}, kg = k_eff ⊙ e^{b_C − b}, e^{b_C} and the 64×64 score block A. Every exponent is
   ≤ 0: A is built from 16×16 sub-blocks; a block below the diagonal is one matmul whose two factors are
   both scaled against the b of the row just before the block row; a diagonal block is element-wise,
   a [16, 16, n] product with the difference b_i − b_j taken before the exp, its rows re-read from
   memory in the two 3-D layouts it needs (register tiles cannot be sliced). No exp of a growing
   cumsum anywhere, so T = 65 536 with saturated gates (log α = −30 per token) is as safe as T = 64.
2. ``ddts_fwd_walk`` — one program per (sequence, head, 64 value columns), walking its chunks in order.
   The state tile S [n × 64] stays in registers in fp32 for the whole sequence; per chunk it reads
   qg, kg, A (all small, shared by the value tiles through L2) and its v tile, writes its o tile, and
   updates S with one matmul. Each value element is read and written exactly once and the state never
   touches memory, unlike the two-kernel "store every chunk state, then compute outputs" plan, which
   moves n/C · T · m extra elements twice (as much as v itself at n = C = 64). The cost is a
   sequential loop of T/64 steps per program; B·m/64 programs (256 at B = 8, m = 2048) fill the GPU.
3. Backward: first the forward walk once more, now writing the chunk-start states h (fp32): storing
   them in the forward instead kept n·m·4/64 bytes per token alive until the backward (6 KiB at n = 64,
   m = 1536, the largest tensor a Rodimus layer saved: ``rodimus-lab bench memory``); the re-walk reads
   what the forward kept and gives the same h bit for bit. Then ``ddts_bwd_walk``, the same walk in
   reverse with dS in fp32 registers: writes dh (the gradient of every chunk's end state), dv
   (complete, since the program owns its value columns) and d(initial state).
4. Backward, ``ddts_bwd_sweep`` — one program per (chunk, head, share of the value columns; shares
   are cut until ~4 programs per SM stream at once): accumulates do·hᵀ, v·dhᵀ, do·vᵀ (64×64) and
   Σ h⊙dh over its 64-wide value tiles into an fp32 partial. Then ``ddts_bwd_chunk`` — one program per
   (chunk, head): sums the partials, adds the intra-chunk terms with the same sub-block scheme (the
   diagonal blocks of do·vᵀ and their [16, n] results pass through a small per-program scratch buffer
   in global memory, behind a barrier), turns ∂b into ∂log α (reverse cumsum + the b_C terms) and
   chains through α̂, the key norm, softplus and sigmoid, writing dq, dk, dg_logits, dtau_logits. Gates,
   norm and b are recomputed here from q, k and the logits (cheaper than storing them); qg, kg, A and
   e^{b_C} are kept from the forward.

Precision: gates, norms, cumsums, the state, every accumulation and the score block A are fp32 (A·v is
a tf32 product: rounding A to bf16 was the largest error source in a CPU emulation, 1.7e-3 vs 0.5e-3
relative); the chunk states h and dh are stored in fp32. The walks' other tensor-core operands (qg, kg,
v, do, the state for q·S) are in the input dtype (bf16/fp16). fp32 inputs get 3-pass tf32 dots throughout
(tensor cores, ≈ fp32: three tf32 products of the operands' high and low parts), not IEEE fp32 ones: those
are FMA loops, and Triton 3.6 compiled the fp32 backward for minutes on an H200 host (``ddts_bwd_chunk``
still in ``make_llir`` after 90 s, the tests' "fp32 hang": ``benchmarks/diagnose_ddts_hang.py``) into
kernels that spilled 8–20 KB per thread. The backward's ``ddts_bwd_sweep`` and ``ddts_bwd_chunk`` use
3-pass tf32 products for 16-bit inputs too: ∂log α is formed as qs⊙∂qs − ke⊙∂ke, which cancels where
the gates saturate (α̂ up to ~60), and with 1-pass tf32 there ∂tau_logits was 6.7e-3 relative error at
T = 65 536 with logits × 30 on the H200 (3.5e-4 with 3-pass; bf16 walk operands, fp32 walk operands
and fp32 h/dh each left it at 6.6–7.2e-3).

Tile sizes: C = 64, sub-block 16, BM = 64 value columns, n padded to a power of 2 (n ≥ 16 in practice);
4 warps for the walks, 8 for the per-chunk programs (a dozen live [64, n] fp32 tiles); n ≤ 256, and
at the largest tiles less shared memory (``_stages``, ``_sub_block``, and at n > 128 the forward's
intra-chunk scores as two half-width products: a 3-pass dot keeps both parts of both operands). Measured speed,
the cost of the 3-pass products and what is still slow: docs/benchmarks.md, "DDTS kernels". Any T (the
last chunk is masked: its padded rows have log α = 0, k = 0), any B·H, and ``cu_seqlens`` packing
(B = 1; empty and 1-token sequences are fine) via per-chunk tables.

Where it runs (``dispatch.py``): CUDA tensors, and CPU tensors with ``TRITON_INTERPRET=1`` set before
this package is imported, run through these very kernels (how CI tests them); other CPU tensors go to
the PyTorch twin in ``ddts_torch.py``.
"""

from __future__ import annotations

import torch

from . import ddts_torch
from .dispatch import cdiv, dot_precision, sm_count, triton_module, use_triton
from .ops import KernelOp

__all__ = ["ddts", "ddts_step"]

CHUNK = 64
SUB = 16
BLOCK_M = 64
# The largest n whose tiles fit the shared memory of one block on an H100/H200 (232 448 B; the numbers
# per kernel: benchmarks/kernel_resources.py); ``ddts`` refuses larger states on its Triton path.
MAX_STATE = 256


def _block_n(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _warps(n: int, chunk_program: bool = False) -> int:
    """Per-chunk programs hold a dozen [64, n] fp32 tiles at once: more warps, fewer spills."""
    return 8 if n > 64 or chunk_program else 4


def _stages(n: int, dtype: torch.dtype) -> int:
    """Software-pipelining depth of the chunk loops (walks, sweep, chunk). Triton keeps extra copies of
    every tile a loop loads in shared memory; at BN = 256 (BN = 128 with fp32 operands) they exceed or
    all but fill the 232 448 B a block gets on an H100/H200 (``benchmarks/kernel_resources.py`` prints
    each kernel's use), so there the loops load without prefetching."""
    operand_bytes = 2 if dtype in (torch.bfloat16, torch.float16) else 4
    return 1 if _block_n(n) * operand_bytes >= 512 else 3


def _sub_block(n: int) -> int:
    """Rows of the backward chunk program's diagonal blocks: their [SB, SB, BN] fp32 products are
    reduced through shared memory, for 16 × 16 at BN = 256 up to 256 KB (n not a multiple of 16: over
    the limit), so 8 × 8 there."""
    return SUB if _block_n(n) < 256 else SUB // 2


def _operand_dtype(v: torch.Tensor) -> torch.dtype:
    return v.dtype if v.dtype in (torch.bfloat16, torch.float16) else torch.float32


def _check(q, k, v, g_logits, tau_logits, initial_state, cu_seqlens):
    for name, x in (("q", q), ("k", k), ("v", v), ("g_logits", g_logits), ("tau_logits", tau_logits)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor [B, T, H, D], got {getattr(x, 'shape', type(x))}")
    for name, x in (("k", k), ("g_logits", g_logits), ("tau_logits", tau_logits)):
        if x.shape != q.shape:
            raise ValueError(f"{name} must have the shape of q {tuple(q.shape)}, got {tuple(x.shape)}")
    if v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"v must agree with q on [B, T, H], got q {tuple(q.shape)} and v {tuple(v.shape)}")
    if v.dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise ValueError(f"v must be float32, bfloat16 or float16, got {v.dtype}")
    B, _, H, n = q.shape
    num_seqs = B
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"with cu_seqlens the sequences are packed along T, so B must be 1, got B={B}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError("cu_seqlens must be 1-D [num_seqs + 1], starting at 0 and ending at T")
        num_seqs = cu_seqlens.numel() - 1
    if initial_state is not None and tuple(initial_state.shape) != (num_seqs, H, n, v.shape[-1]):
        raise ValueError(
            f"initial_state must have shape [num_seqs, H, n, m] = {(num_seqs, H, n, v.shape[-1])}, "
            f"got {tuple(initial_state.shape)}"
        )


def ddts(q, k, v, g_logits, tau_logits, *, scale=None, initial_state=None, output_final_state=False,
         cu_seqlens=None):
    """Fused DDTS over a sequence: returns (o [B, T, H, m] in v's dtype, final state fp32 or None).

    q, k, g_logits, tau_logits: [B, T, H, n] (k raw, not normalised; logits usually fp32);
    v: [B, T, H, m]; initial_state: [num_seqs, H, n, m]; scale defaults to n^-1/2.
    ``cu_seqlens`` (int, [num_seqs + 1]) packs several sequences along T of a B = 1 batch; the state
    restarts at each boundary and the final state has one row per sequence.
    Differentiable in q, k, v, g_logits, tau_logits and initial_state.
    """
    _check(q, k, v, g_logits, tau_logits, initial_state, cu_seqlens)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not use_triton(q):
        return ddts_torch.ddts_torch(q, k, v, g_logits, tau_logits, scale, initial_state, output_final_state,
                                     cu_seqlens)
    if q.shape[-1] > MAX_STATE:
        raise ValueError(
            f"rodimus_kernels.ddts handles state sizes n <= {MAX_STATE}, got n = {q.shape[-1]}: larger tiles do not "
            f"fit a GPU block's shared memory (232448 bytes on an H100/H200). Use the PyTorch reference "
            f"(rodimus_lab.ddts.ddts; in a model, backend 'reference' or 'auto') or mem_size <= {MAX_STATE}.")
    # Contiguous before the op, not only inside it: the op saves its inputs, so its backward then reads
    # these copies instead of copying the strided views a second time (q, k and the logits are chunks of
    # one projection each): 4 copy kernels fewer per layer and step; the bytes kept are the same (a saved
    # view kept its whole projection alive).
    q, k, v, g_logits, tau_logits = (x.contiguous() for x in (q, k, v, g_logits, tau_logits))
    o, final = _DDTS(q, k, v, g_logits, tau_logits, initial_state, cu_seqlens, scale, output_final_state)[:2]
    return o, (final if output_final_state else None)


def _chunk_tables(cu_seqlens, T, device):
    """Per-chunk (sequence, index in sequence) and per-sequence first-chunk tables for packed input."""
    cu = cu_seqlens.detach().to("cpu", torch.int64)
    if cu[0] != 0 or cu[-1] != T or bool((cu[1:] < cu[:-1]).any()):
        raise ValueError(f"cu_seqlens must be non-decreasing from 0 to T={T}, got {cu.tolist()}")
    counts = (cu[1:] - cu[:-1] + CHUNK - 1) // CHUNK
    chunk_off = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    seq = torch.repeat_interleave(torch.arange(len(counts)), counts)
    local = torch.arange(len(seq)) - chunk_off[seq]
    as_int = dict(device=device, dtype=torch.int32)
    return cu.to(**as_int), seq.to(**as_int), local.to(**as_int), chunk_off.to(**as_int), len(seq)


def _plan(q, cu_seqlens):
    """(varlen, NT, chunk tables or Nones, NC chunks in all, num_seqs) of one call."""
    B, T = q.shape[:2]
    NT = cdiv(T, CHUNK)
    if cu_seqlens is None:
        return False, NT, (None, None, None, None), B * NT, B
    cu, chunk_seq, chunk_local, chunk_off, NC = _chunk_tables(cu_seqlens, T, q.device)
    return True, NT, (cu, chunk_seq, chunk_local, chunk_off), NC, cu.numel() - 1


# The training kernels as one KernelOp (ops.py): a torch.library custom op with autograd and fake (shape)
# functions under torch.compile, which calls it opaquely instead of tracing into the Triton launches; a
# plain autograd Function of the same functions when eager. The forward returns what the backward needs
# besides the inputs (qg, kg, e^{b_C}, A); an absent final state is an empty tensor (a custom op returns no
# None). The chunk-start states h are NOT kept: fp32 [chunks, H, n, m] is n·m·4/64 bytes per token (6 KiB at
# n = 64, m = 1536, more than any other tensor a Rodimus layer saves; ``rodimus-lab bench memory``), so the
# backward runs the forward walk again to rebuild them, bit for bit the same (same kernel, same inputs).
_SIX = tuple[(torch.Tensor,) * 6]


def _walk(qg, kg, gc, A, v, initial_state, plan, *, store_states: bool, output_final_state: bool):
    """``ddts_fwd_walk`` over every chunk of ``plan`` (``_plan``'s): (o, chunk-start states h fp32 or empty,
    final state or empty)."""
    B, T, H, n = qg.shape
    m = v.shape[-1]
    varlen, NT, (cu, _, _, chunk_off), NC, num_seqs = plan
    o = torch.empty_like(v)
    f32 = dict(device=v.device, dtype=torch.float32)
    h = torch.empty(NC if store_states else 0, H, n, m, **f32)
    final = torch.empty(num_seqs if output_final_state else 0, H, n, m, **f32)
    h0 = None if initial_state is None else initial_state.detach().float().contiguous()
    grid = (num_seqs, H, cdiv(m, BLOCK_M))
    triton_module("ddts_triton").ddts_fwd_walk[grid](
        qg, kg, gc, A, v, o, h, h0, final, cu, chunk_off, T, NT, H, n, m, C=CHUNK, BN=_block_n(n), BM=BLOCK_M,
        PREC=dot_precision("tf32x3", v.dtype), STORE_H=store_states, USE_H0=h0 is not None,
        STORE_HT=output_final_state, VARLEN=varlen, num_warps=_warps(n), num_stages=_stages(n, v.dtype))
    return o, h, final


def _ddts_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g_logits: torch.Tensor,
                  tau_logits: torch.Tensor, initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
                  scale: float, output_final_state: bool) -> _SIX:
    B, T, H, n = q.shape
    q, k, v, g_logits, tau_logits = (x.contiguous() for x in (q, k, v, g_logits, tau_logits))
    plan = _plan(q, cu_seqlens)
    varlen, NT, (cu, chunk_seq, chunk_local, _), NC, _ = plan
    qg = torch.empty(q.shape, device=q.device, dtype=_operand_dtype(v))
    kg = torch.empty_like(qg)
    gc = torch.empty(NC, H, n, device=q.device, dtype=torch.float32)
    A = torch.empty(B, T, H, CHUNK, device=q.device, dtype=torch.float32)  # bf16 here was the largest error
    triton_module("ddts_triton").ddts_prep_fwd[(NC, H)](q, k, g_logits, tau_logits, qg, kg, gc, A, cu, chunk_seq, chunk_local,
                             scale, T, NT, H, n, C=CHUNK, SB=SUB, BN=_block_n(n),
                             PREC=dot_precision("tf32x3", v.dtype), VARLEN=varlen,
                             num_warps=_warps(n, chunk_program=True))
    o, _, final = _walk(qg, kg, gc, A, v, initial_state, plan, store_states=False,
                        output_final_state=output_final_state)
    return o, final, qg, kg, gc, A


def _ddts_forward_fake(q, k, v, g_logits, tau_logits, initial_state, cu_seqlens, scale, output_final_state):
    B, T, H, n = q.shape
    m = v.shape[-1]
    if cu_seqlens is None:
        NC, num_seqs = B * cdiv(T, CHUNK), B
    else:   # the chunk count depends on the lengths' values
        NC, num_seqs = torch.library.get_ctx().new_dynamic_size(), cu_seqlens.shape[0] - 1
    f32 = dict(device=q.device, dtype=torch.float32)
    qg = q.new_empty(q.shape, dtype=_operand_dtype(v))
    return (v.new_empty(v.shape), torch.empty(num_seqs if output_final_state else 0, H, n, m, **f32),
            qg, torch.empty_like(qg), torch.empty(NC, H, n, **f32), torch.empty(B, T, H, CHUNK, **f32))


def _ddts_backward(do: torch.Tensor, dfinal: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor,
                   v: torch.Tensor, g_logits: torch.Tensor, tau_logits: torch.Tensor, qg: torch.Tensor,
                   kg: torch.Tensor, gc: torch.Tensor, A: torch.Tensor, initial_state: torch.Tensor | None,
                   cu_seqlens: torch.Tensor | None, scale: float) -> _SIX:
    """(dq, dk, dv, dg_logits, dtau_logits, d initial state fp32 — empty without one)."""
    K = triton_module("ddts_triton")
    B, T, H, n = q.shape
    m = v.shape[-1]
    q, k, v, g_logits, tau_logits = (x.contiguous() for x in (q, k, v, g_logits, tau_logits))
    plan = _plan(q, cu_seqlens)
    varlen, NT, (cu, chunk_seq, chunk_local, chunk_off), NC, num_seqs = plan
    BN, prec, warps, stages = _block_n(n), dot_precision("tf32x3", v.dtype), _warps(n), _stages(n, v.dtype)
    # ∂log α cancels (see Precision): the products it is summed from get 3-pass tf32 (≈ fp32)
    sum_prec = dot_precision("cancelling", v.dtype)
    has_h0 = initial_state is not None
    h = _walk(qg, kg, gc, A, v, initial_state, plan, store_states=True, output_final_state=False)[1]
    do = do.contiguous()
    dfinal = None if dfinal is None else dfinal.float().contiguous()
    dv = torch.empty_like(v)
    dh = torch.empty_like(h)
    dh0 = torch.empty(num_seqs if has_h0 else 0, H, n, m, device=q.device, dtype=torch.float32)
    grid = (num_seqs, H, cdiv(m, BLOCK_M))
    K.ddts_bwd_walk[grid](qg, kg, gc, A, do, dv, dh, dfinal, dh0 if has_h0 else None, cu, chunk_off,
                          T, NT, H, n, m, C=CHUNK, BN=BN, BM=BLOCK_M, PREC=prec, USE_DHT=dfinal is not None,
                          STORE_DH0=has_h0, VARLEN=varlen, num_warps=warps, num_stages=stages)
    # Split each chunk's sweep over the value columns until ~4 programs per SM stream at once.
    tiles = cdiv(m, BLOCK_M)
    splits = min(tiles, cdiv(4 * sm_count(q.device), NC * H))
    per_split = cdiv(tiles, splits)
    splits = cdiv(tiles, per_split)
    partial = torch.empty(splits * NC * H, 2 * CHUNK * BN + CHUNK * CHUNK + BN, device=q.device,
                          dtype=torch.float32)
    K.ddts_bwd_sweep[(NC, H, splits)](v, do, h, dh, partial, cu, chunk_seq, chunk_local, T, NT, H, n, m,
                                      per_split, C=CHUNK, BN=BN, BM=BLOCK_M, PREC=sum_prec, VARLEN=varlen,
                                      num_warps=warps, num_stages=stages)
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    dg, dtau = torch.empty_like(g_logits), torch.empty_like(tau_logits)
    scratch = torch.empty(NC * H, CHUNK * CHUNK + 2 * CHUNK * BN, device=q.device, dtype=torch.float32)
    K.ddts_bwd_chunk[(NC, H)](q, k, g_logits, tau_logits, partial, dq, dk, dg, dtau, scratch,
                              cu, chunk_seq, chunk_local, scale, T, NT, H, n, splits,
                              C=CHUNK, SB=_sub_block(n), BN=BN, PREC=sum_prec, VARLEN=varlen,
                              num_warps=_warps(n, chunk_program=True), num_stages=stages)
    return dq, dk, dv, dg, dtau, dh0


def _ddts_backward_fake(do, dfinal, q, k, v, g_logits, tau_logits, qg, kg, gc, A, initial_state, cu_seqlens, scale):
    B, _, H, n = q.shape
    num_seqs = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    dh0 = torch.empty(num_seqs if initial_state is not None else 0, H, n, v.shape[-1], device=q.device,
                      dtype=torch.float32)
    return (*(x.new_empty(x.shape) for x in (q, k, v, g_logits, tau_logits)), dh0)


def _setup_context(ctx, inputs, output):
    q, k, v, g_logits, tau_logits, initial_state, cu_seqlens, ctx.scale, _ = inputs
    _, _, qg, kg, gc, A = output
    # the backward re-walks from the initial state: a copy, since callers overwrite theirs in place (prefill);
    # only when a backward can follow (KernelOp calls this then only), so a no-grad prefill copies nothing
    h0 = None if initial_state is None else initial_state.detach().clone()
    ctx.save_for_backward(q, k, v, g_logits, tau_logits, qg, kg, gc, A, h0, cu_seqlens)
    ctx.h0_dtype = None if initial_state is None else initial_state.dtype


def _ddts_grad(ctx, backward, do, dfinal, *_):
    q, k, v, g_logits, tau_logits, qg, kg, gc, A, initial_state, cu_seqlens = ctx.saved_tensors
    do = torch.zeros_like(v) if do is None else do
    dfinal = dfinal if dfinal is not None and dfinal.numel() else None
    grads = backward(do, dfinal, q, k, v, g_logits, tau_logits, qg, kg, gc, A, initial_state, cu_seqlens, ctx.scale)
    dh0 = None if ctx.h0_dtype is None else grads[5].to(ctx.h0_dtype)
    return (*grads[:5], dh0, None, None, None)


_DDTS = KernelOp("ddts", _ddts_forward, _ddts_backward, setup_context=_setup_context, grad=_ddts_grad,
                 fake=_ddts_forward_fake, backward_fake=_ddts_backward_fake)


def ddts_step(q, k, v, g_logits, tau_logits, state, *, scale=None):
    """One decoding token: q, k, g_logits, tau_logits [B, H, n]; v [B, H, m]; state [B, H, n, m] fp32.

    Updates ``state`` IN PLACE (S ← α ⊙ S + k_effᵀ v) and returns (o [B, H, m] in v's dtype, state).
    One program per (batch·head, 64 value columns) reads its state tile once and writes it once.
    """
    if q.dim() != 3 or any(x.shape != q.shape for x in (k, g_logits, tau_logits)):
        raise ValueError(f"q, k, g_logits, tau_logits must share one [B, H, n] shape, got q {tuple(q.shape)}")
    B, H, n = q.shape
    m = v.shape[-1]
    if v.shape != (B, H, m):
        raise ValueError(f"v must be [B, H, m] = [{B}, {H}, m], got {tuple(v.shape)}")
    if tuple(state.shape) != (B, H, n, m) or state.dtype != torch.float32 or not state.is_contiguous():
        raise ValueError(f"state must be a contiguous float32 tensor [B, H, n, m] = {(B, H, n, m)}, "
                         f"got {tuple(state.shape)} {state.dtype}")
    scale = n ** -0.5 if scale is None else float(scale)
    if not use_triton(q):
        return ddts_torch.ddts_step_torch(q, k, v, g_logits, tau_logits, state, scale)
    q, k, v, g_logits, tau_logits = (x.contiguous() for x in (q, k, v, g_logits, tau_logits))
    o = torch.empty_like(v)
    grid = (B * H, cdiv(m, BLOCK_M))
    triton_module("ddts_triton").ddts_step_kernel[grid](q, k, v, g_logits, tau_logits, state, o, scale, n, m,
                                      BN=_block_n(n), BM=BLOCK_M)
    return o, state
