"""Fused glue of the Rodimus layer: the element-wise work around the DDTS kernel, forward and backward.

    short_conv_silu(x, weight, bias)          SiLU(causal depthwise conv of x')        twin: short_conv_silu_torch
    value_gate(gate_logits, x)                v = σ(x' W₁ W₂ + b) ⊙ x'                 twin: value_gate_torch
    low_rank_value_gate(p, W₂, b, x)          the same from p = x' W₁, keeping p       (value_gate of the product)
    rms_norm(x, w, eps, out_dtype)            x / rms(x) ⊙ w (the pre-norms)           twin: rms_norm_torch
    rope(x, cos, sin)                         rotate-half RoPE from tables             twin: rope_torch
    gated_rmsnorm(o, xc, z, d, w, eps)        RMSNorm((o + d ⊙ x̃) ⊙ SiLU(z)) ⊙ w       twin: gated_rmsnorm_torch
    gate_linear(x, weight, bias)              x W_g|τᵀ + b in float32                  twin: gate_linear_torch
    swiglu(g, u)                              SiLU(g) ⊙ u, the FFN's product           (plain PyTorch itself)

The twins (``glue_torch.py``) are the same functions in plain PyTorch, written as ``rodimus_lab.model``'s
modules compute them. Why fuse: in a bf16 training step of the reference modules each of these is
several PyTorch kernels over [B·T, m] float32 copies (m = 2·d_model), and on an H200 they took more
device time than the DDTS kernel and the matrix products together (docs/benchmarks.md, "Whole-model
training"). Each fused program reads its bf16 activations once, computes in float32 registers and
writes bf16; the backward recomputes what it needs (the conv pre-activation, SiLU(z)) instead of
storing it. ``gate_linear`` is no Triton kernel: a bf16 tensor-core product with a float32 output
(``torch.mm(..., out_dtype=torch.float32)``), so the gates still see float32 logits without the float32
copy of x̃ and the FFMA product that switching autocast off costs. ``low_rank_value_gate`` and ``swiglu``
are no new kernels either but memory savers for eager training: autograd Functions that keep a smaller
tensor for the backward and recompute the bigger one (the gate logits, SiLU(g)) there with the same ops,
so values and gradients are bit for bit those of the plain composition they replace. Under torch.compile
both are that plain composition (:func:`_saves_eagerly`, the one place that decides).

Each Triton op is a :class:`~rodimus_kernels.ops.KernelOp`: a ``torch.library`` custom op
(``torch.ops.rodimus.*``, with autograd and fake functions) under ``torch.compile``, which treats it as an
opaque call and fuses around it; a plain autograd Function of the same two functions when eager.

Where the work runs: CUDA tensors and CPU tensors with ``TRITON_INTERPRET=1`` (set before import) run
the Triton kernels; other CPU tensors run the twins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import glue_torch
from .dispatch import cdiv, sm_count, triton_module, use_triton
from .ops import KernelOp

__all__ = ["short_conv_silu", "value_gate", "low_rank_value_gate", "gated_rmsnorm", "gate_linear", "rms_norm", "rope",
           "swiglu"]


def _kernels():
    return triton_module("glue_triton")


def _programs(x: Tensor) -> int:
    """Programs of a persistent row loop: ~4 per SM."""
    return 4 * sm_count(x.device)


def _rows(x: Tensor) -> tuple[Tensor, int]:
    """(x's rows, the stride between them) for a kernel that reads row r of x [..., M] at r · stride with unit
    column stride: a view where possible (chunks stay in place). A contiguous x is passed as it is (its row
    stride is M): the kernel reads only the pointer and the stride, and each reshape costs ~3 µs of host time
    per call (``rodimus-lab bench host``), on every eager call of these ops."""
    if x.is_contiguous():
        return x, x.shape[-1]
    if x.stride(-1) != 1:
        x = x.contiguous()
    rows = x.reshape(-1, x.shape[-1])
    rows = rows if rows.stride(-1) == 1 else rows.contiguous()
    return rows, rows.stride(0)


def _row_count(x: Tensor) -> int:
    """Rows of x [..., M], the grid of a row kernel (also when M = 0)."""
    return x.shape[:-1].numel()


def _block(m: int) -> int:
    return max(16, 1 << (m - 1).bit_length())


# --------------------------------------------------------------- short conv + SiLU

# (times, channels) per program: fastest of `benchmarks/tune_kernels.py --only conv` on the H200 at a Rodimus+
# layer's shapes (B 8, T 2048, m 1536, bf16; fwd + bwd 0.289 ms vs 0.377 for (32, 64); docs/benchmarks.md)
CONV_TILES = (64, 32)
CONV_TILES_CPU = (16, 32)
CONV_WARPS = 4           # warps per conv program, forward and backward (benchmarks/tune_kernels.py sweeps both)
CONV_TAPS = 4            # the kernels' taps; shorter kernels get leading zero taps, longer ones the twin


def _conv_tiles(x: Tensor):
    return CONV_TILES if x.is_cuda else CONV_TILES_CPU


def _four_taps(weight: Tensor) -> Tensor:
    """weight [m, K ≤ 4] as [m, 4] with 4 − K leading zero taps (the same causal convolution)."""
    if weight.shape[-1] == CONV_TAPS:
        return weight.contiguous()
    return F.pad(weight, (CONV_TAPS - weight.shape[-1], 0)).contiguous()


def _short_conv_silu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    B, T, M = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    y = torch.empty(B, T, M, device=x.device, dtype=x.dtype)
    BT, BC = _conv_tiles(x)
    _kernels().conv_silu_fwd[(cdiv(T, BT), cdiv(M, BC), B)](
        x, _four_taps(weight), bias.contiguous(), y, T, M, x.stride(0), x.stride(1), BT=BT, BC=BC, num_warps=CONV_WARPS)
    return y


def _short_conv_silu_fake(x, weight, bias):
    return x.new_empty(x.shape)


def _short_conv_silu_backward(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    B, T, M = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    BT, BC = _conv_tiles(x)
    parts = B * cdiv(T, BT)
    dx = torch.empty(B, T, M, device=x.device, dtype=x.dtype)
    dw_part = torch.empty(parts, M, CONV_TAPS, device=x.device, dtype=torch.float32)
    db_part = torch.empty(parts, M, device=x.device, dtype=torch.float32)
    _kernels().conv_silu_bwd[(cdiv(T, BT), cdiv(M, BC), B)](
        x, _four_taps(weight), bias.contiguous(), dy.contiguous(), dx, dw_part, db_part, T, M,
        x.stride(0), x.stride(1), BT=BT, BC=BC, num_warps=CONV_WARPS)
    dw = dw_part.sum(0)
    if weight.shape[-1] < CONV_TAPS:   # drop the leading zero taps' gradients (a slice view costs host time)
        dw = dw[:, CONV_TAPS - weight.shape[-1]:]
    return dx, dw.to(weight.dtype), db_part.sum(0).to(bias.dtype)


def _short_conv_silu_backward_fake(dy, x, weight, bias):
    return x.new_empty(x.shape), torch.empty_like(weight), torch.empty_like(bias)


def _conv_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _conv_grad(ctx, backward, dy):
    return backward(dy, *ctx.saved_tensors)


_SHORT_CONV_SILU = KernelOp("short_conv_silu", _short_conv_silu, _short_conv_silu_backward,
                            setup_context=_conv_setup, grad=_conv_grad, fake=_short_conv_silu_fake,
                            backward_fake=_short_conv_silu_backward_fake)


def short_conv_silu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """SiLU(bias + causal depthwise conv of x over time): x [B, T, m] (any row stride), weight [m, K],
    bias [m] → [B, T, m] in x's dtype. Differentiable in all three. The kernels take K ≤ 4 taps."""
    if x.dim() != 3 or weight.shape != (x.shape[-1], weight.shape[-1]) or bias.shape != (x.shape[-1],):
        raise ValueError(f"short_conv_silu takes x [B, T, m], weight [m, K], bias [m]; got x {tuple(x.shape)}, "
                         f"weight {tuple(weight.shape)}, bias {tuple(bias.shape)}")
    if not use_triton(x) or weight.shape[-1] > CONV_TAPS:
        return glue_torch.short_conv_silu_torch(x, weight, bias)
    return _SHORT_CONV_SILU(x, weight, bias)


# ---------------------------------------------------------------------- value gate

VALUE_BLOCK = 1024


def _value_gate(gate_logits: Tensor, x: Tensor) -> Tensor:
    (lg, lg_stride), (xr, x_stride) = _rows(gate_logits), _rows(x)
    N, M = _row_count(x), x.shape[-1]
    v = torch.empty(x.shape, device=x.device, dtype=x.dtype)   # contiguous: rows at stride M
    _kernels().value_gate_fwd[(N, cdiv(M, VALUE_BLOCK))](lg, xr, v, M, lg_stride, x_stride,
                                                           BM=VALUE_BLOCK, num_warps=4)
    return v


def _value_gate_fake(gate_logits, x):
    return x.new_empty(x.shape)


def _value_gate_backward(dv: Tensor, gate_logits: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    (lg, lg_stride), (xr, x_stride) = _rows(gate_logits), _rows(x)
    N, M = _row_count(x), x.shape[-1]
    dl = torch.empty(x.shape, device=x.device, dtype=gate_logits.dtype)
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    _kernels().value_gate_bwd[(N, cdiv(M, VALUE_BLOCK))](lg, xr, dv.contiguous(), dl, dx, M, lg_stride, x_stride,
                                                           BM=VALUE_BLOCK, num_warps=4)
    return dl, dx


def _value_gate_backward_fake(dv, gate_logits, x):
    return gate_logits.new_empty(gate_logits.shape), x.new_empty(x.shape)


def _value_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _value_grad(ctx, backward, dv):
    return backward(dv, *ctx.saved_tensors)


_VALUE_GATE = KernelOp("value_gate", _value_gate, _value_gate_backward, setup_context=_value_setup,
                       grad=_value_grad, fake=_value_gate_fake, backward_fake=_value_gate_backward_fake)


def value_gate(gate_logits: Tensor, x: Tensor) -> Tensor:
    """σ(gate_logits) ⊙ x for two tensors of one shape [..., m] (any row strides); x's dtype."""
    if gate_logits.shape != x.shape:
        raise ValueError(f"gate_logits and x must share one shape, got {tuple(gate_logits.shape)} and {tuple(x.shape)}")
    if not use_triton(x):
        return glue_torch.value_gate_torch(gate_logits, x)
    return _VALUE_GATE(gate_logits, x)


class _LowRankValueGate(torch.autograd.Function):
    """``value_gate(F.linear(p, weight, bias), x)`` keeping the low-rank product p [..., r] for the backward
    instead of the logits [..., m] (m/r times smaller; the second product kept p before too). The
    backward rebuilds the logits with the same ``F.linear`` under the forward's autocast state and
    differentiates it through autograd, so it runs the very ops (casts, product, their backwards) and the
    same value-gate kernels the plain composition runs: values and gradients bit for bit the same."""

    @staticmethod
    def forward(ctx, p, weight, bias, x):
        device = x.device.type
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        ctx.save_for_backward(p, weight, bias, x)
        return _VALUE_GATE.run_forward(F.linear(p, weight, bias), x)

    @staticmethod
    def backward(ctx, dv):
        p, weight, bias, x = ctx.saved_tensors
        device, dtype, enabled = ctx.autocast
        leaves = [t.detach().requires_grad_(need) for t, need in zip((p, weight, bias), ctx.needs_input_grad)]
        # cache_enabled=False: the weight's 16-bit copy is made for this product alone, as a cached one would be
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled, cache_enabled=False):
            logits = F.linear(*leaves)
        dlogits, dx = _VALUE_GATE.run_backward(dv, logits.detach(), x)
        wanted = [t for t in leaves if t.requires_grad]
        grads = iter(torch.autograd.grad(logits, wanted, dlogits) if wanted else ())
        return (*(next(grads) if t.requires_grad else None for t in leaves), dx)


def _saves_eagerly() -> bool:
    """Whether the memory savers run their autograd Functions: eagerly only. A compiled graph is better
    served by the plain composition: AOTAutograd's partitioner chooses by itself what to keep for the
    backward and what to recompute, and Dynamo cannot trace the value gate's Function, which launches the
    kernels directly rather than through their custom op."""
    return not torch.compiler.is_compiling()


def low_rank_value_gate(p: Tensor, weight: Tensor, bias: Tensor, x: Tensor) -> Tensor:
    """σ(p Wᵀ + b) ⊙ x: the value gate after its low-rank product p [..., r], with the second product's
    weight W [m, r] and bias b [m], x [..., m]; x's dtype. Equal, bit for bit, to
    ``value_gate(F.linear(p, weight, bias), x)``, which is what it runs under torch.compile (the custom op)
    and on the twins; eagerly on the kernels it keeps p instead of the logits for the backward (at the
    bench's sizes 3,072 bytes less per token and layer: docs/benchmarks.md)."""
    if weight.shape != (x.shape[-1], p.shape[-1]) or bias.shape != x.shape[-1:] or p.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"low_rank_value_gate takes p [..., r], weight [m, r], bias [m], x [..., m]; got "
                         f"p {tuple(p.shape)}, weight {tuple(weight.shape)}, bias {tuple(bias.shape)}, "
                         f"x {tuple(x.shape)}")
    if not use_triton(x) or not _saves_eagerly():
        return value_gate(F.linear(p, weight, bias), x)
    return _LowRankValueGate.apply(p, weight, bias, x)


# ------------------------------------------------- gated RMSNorm with the skip term

def _gated_rmsnorm(o: Tensor, xc: Tensor, z: Tensor, residual_weight: Tensor, norm_weight: Tensor,
                   eps: float) -> tuple[Tensor, Tensor]:
    (orow, o_stride), (xrow, x_stride), (zrow, z_stride) = _rows(o), _rows(xc), _rows(z)
    N, M = _row_count(z), z.shape[-1]
    y = torch.empty(z.shape, device=z.device, dtype=z.dtype)
    rstd = torch.empty(N, device=z.device, dtype=torch.float32)
    if N:
        _kernels().gated_norm_fwd[(N,)](orow, xrow, zrow, residual_weight.contiguous(), norm_weight.contiguous(),
                                        y, rstd, M, o_stride, x_stride, z_stride, eps,
                                        BM=_block(M), num_warps=8 if M > 1024 else 4)
    return y, rstd


def _gated_rmsnorm_fake(o, xc, z, residual_weight, norm_weight, eps):
    return z.new_empty(z.shape), z.new_empty(z.shape[:-1].numel(), dtype=torch.float32)


def _gated_rmsnorm_backward(dy: Tensor, o: Tensor, xc: Tensor, z: Tensor, residual_weight: Tensor,
                            norm_weight: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    (orow, o_stride), (xrow, x_stride), (zrow, z_stride) = _rows(o), _rows(xc), _rows(z)
    N, M = _row_count(z), z.shape[-1]
    G = min(N, _programs(z))   # 0 rows: empty partials, zero sums
    do = torch.empty(z.shape, device=z.device, dtype=o.dtype)
    dxc = torch.empty(z.shape, device=z.device, dtype=xc.dtype)
    dz = torch.empty(z.shape, device=z.device, dtype=z.dtype)
    dd_part = torch.empty(G, M, device=z.device, dtype=torch.float32)   # each program writes its row
    dw_part = torch.empty(G, M, device=z.device, dtype=torch.float32)
    if N:
        _kernels().gated_norm_bwd[(G,)](orow, xrow, zrow, residual_weight.contiguous(), norm_weight.contiguous(),
                                        rstd, dy.contiguous(), do, dxc, dz, dd_part, dw_part, N, M,
                                        o_stride, x_stride, z_stride,
                                        BM=_block(M), num_warps=8 if M > 1024 else 4)
    return (do, dxc, dz,
            dd_part.sum(0).to(residual_weight.dtype), dw_part.sum(0).to(norm_weight.dtype))


def _gated_rmsnorm_backward_fake(dy, o, xc, z, residual_weight, norm_weight, rstd):
    return (o.new_empty(o.shape), xc.new_empty(xc.shape), z.new_empty(z.shape),
            torch.empty_like(residual_weight), torch.empty_like(norm_weight))


def _norm_setup(ctx, inputs, output):
    o, xc, z, residual_weight, norm_weight, _ = inputs
    ctx.save_for_backward(o, xc, z, residual_weight, norm_weight, output[1])


def _norm_grad(ctx, backward, dy, _drstd):
    return (*backward(dy, *ctx.saved_tensors), None)


_GATED_RMSNORM = KernelOp("gated_rmsnorm", _gated_rmsnorm, _gated_rmsnorm_backward, setup_context=_norm_setup,
                          grad=_norm_grad, fake=_gated_rmsnorm_fake, backward_fake=_gated_rmsnorm_backward_fake)


def gated_rmsnorm(o: Tensor, xc: Tensor, z: Tensor, residual_weight: Tensor, norm_weight: Tensor,
                  eps: float) -> Tensor:
    """RMSNorm((o + d ⊙ x̃) ⊙ SiLU(z)) ⊙ w: o, xc, z [..., m] (any row strides), d and w [m] → z's dtype."""
    m = z.shape[-1]
    if o.shape != z.shape or xc.shape != z.shape or residual_weight.shape != (m,) or norm_weight.shape != (m,):
        raise ValueError(f"gated_rmsnorm takes o, xc, z of one shape [..., m] and weights [m]; got o {tuple(o.shape)}, "
                         f"xc {tuple(xc.shape)}, z {tuple(z.shape)}, weights {tuple(residual_weight.shape)}, "
                         f"{tuple(norm_weight.shape)}")
    if not use_triton(z):
        return glue_torch.gated_rmsnorm_torch(o, xc, z, residual_weight, norm_weight, eps)
    return _GATED_RMSNORM(o, xc, z, residual_weight, norm_weight, float(eps))[0]


# ------------------------------------------------------------ gate projection

class _GateLinear(torch.autograd.Function):
    """bf16/fp16 x and weight on tensor cores, float32 out; the backward's products are 16-bit too,
    as autocast's would be (∂logits rounded to x's dtype for ∂x and ∂W, ∂b in float32)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        w = weight.to(x.dtype)
        out = torch.mm(x.reshape(-1, x.shape[-1]), w.t(), out_dtype=torch.float32)
        return (out + bias.float()).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dout):
        x, weight = ctx.saved_tensors
        g = dout.reshape(-1, dout.shape[-1])
        g16 = g.to(x.dtype)
        dx = (g16 @ weight.to(x.dtype)).view(x.shape)
        dw = torch.mm(g16.t(), x.reshape(-1, x.shape[-1]), out_dtype=torch.float32).to(weight.dtype)
        return dx, dw, g.sum(0).to(weight.dtype)


def gate_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x Wᵀ + b with a float32 result: 16-bit x on tensor cores (weight rounded to x's dtype, as autocast
    would), any other x in float32 (at least). Autocast is off inside: the output stays float32."""
    with torch.autocast(x.device.type, enabled=False):
        if x.dtype in (torch.bfloat16, torch.float16) and x.is_cuda:
            return _GateLinear.apply(x, weight, bias)
        return glue_torch.gate_linear_torch(x, weight, bias)


# ------------------------------------------------------------------------ RMSNorm

def _rms_norm(x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    rows, stride = _rows(x)
    N, M = _row_count(x), x.shape[-1]
    y = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    rstd = torch.empty(N, device=x.device, dtype=torch.float32)
    if N:
        _kernels().rms_norm_fwd[(N,)](rows, weight.contiguous(), y, rstd, M, stride, eps,
                                      BM=_block(M), num_warps=8 if M > 1024 else 4)
    return y, rstd


def _rms_norm_fake(x, weight, eps, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype), x.new_empty(x.shape[:-1].numel(), dtype=torch.float32)


def _rms_norm_backward(dy: Tensor, x: Tensor, weight: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    rows, stride = _rows(x)
    N, M = _row_count(x), x.shape[-1]
    G = min(N, _programs(x))   # 0 rows: empty partials, zero sums
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    dw_part = torch.empty(G, M, device=x.device, dtype=torch.float32)   # each program writes its row
    if N:
        _kernels().rms_norm_bwd[(G,)](rows, weight.contiguous(), rstd, dy.contiguous(), dx, dw_part, N, M, stride,
                                      BM=_block(M), num_warps=8 if M > 1024 else 4)
    return dx, dw_part.sum(0).to(weight.dtype)


def _rms_norm_backward_fake(dy, x, weight, rstd):
    return x.new_empty(x.shape), torch.empty_like(weight)


def _rms_setup(ctx, inputs, output):
    x, weight, _, _ = inputs
    ctx.save_for_backward(x, weight, output[1])


def _rms_grad(ctx, backward, dy, _drstd):
    return (*backward(dy, *ctx.saved_tensors), None, None)


_RMS_NORM = KernelOp("rms_norm", _rms_norm, _rms_norm_backward, setup_context=_rms_setup, grad=_rms_grad,
                     fake=_rms_norm_fake, backward_fake=_rms_norm_backward_fake)


def rms_norm(x: Tensor, weight: Tensor, eps: float, out_dtype: torch.dtype | None = None) -> Tensor:
    """x · (mean x² + eps)^−½ ⊙ w over the last dim (any row stride), written in ``out_dtype`` (default x's):
    a float32 residual stream can be normed straight into the bf16 that the next product reads."""
    if weight.shape != x.shape[-1:]:
        raise ValueError(f"rms_norm takes x [..., m] and weight [m]; got x {tuple(x.shape)}, weight {tuple(weight.shape)}")
    out_dtype = x.dtype if out_dtype is None else out_dtype
    if not use_triton(x):
        return glue_torch.rms_norm_torch(x, weight, eps, out_dtype)
    return _RMS_NORM(x, weight, float(eps), out_dtype)[0]


# --------------------------------------------------------------------------- RoPE

ROPE_ROWS = 32


def _rope(x: Tensor, cos: Tensor, sin: Tensor, sign: float) -> Tensor:
    x = x.contiguous()
    B, T, H, d = x.shape
    y = torch.empty_like(x)
    N = B * T * H
    if N:
        _kernels().rope_rotate[(cdiv(N, ROPE_ROWS),)](x, cos.contiguous(), sin.contiguous(), y, N, T, H, sign,
                                                      HALF=d // 2, BR=ROPE_ROWS, BD=_block(d // 2), num_warps=4)
    return y


def _rope_fake(x, cos, sin, sign):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _rope_setup(ctx, inputs, output):
    _, cos, sin, ctx.sign = inputs
    ctx.save_for_backward(cos, sin)


def _rope_backward(dy: Tensor, cos: Tensor, sin: Tensor, sign: float) -> Tensor:
    return _rope(dy, cos, sin, -sign)   # the inverse rotation


def _rope_grad(ctx, backward, dy):
    return backward(dy, *ctx.saved_tensors, ctx.sign), None, None, None


_ROPE = KernelOp("rope", _rope, _rope_backward, setup_context=_rope_setup, grad=_rope_grad, fake=_rope_fake,
                 backward_fake=_rope_fake)


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE of x [B, T, H, d] with float32 tables cos, sin [T, d/2] (x's dtype out)."""
    B, T, H, d = x.shape
    if d % 2 or cos.shape != (T, d // 2) or sin.shape != (T, d // 2):
        raise ValueError(f"rope takes x [B, T, H, d] (d even) and cos, sin [T, d/2]; got x {tuple(x.shape)}, "
                         f"cos {tuple(cos.shape)}, sin {tuple(sin.shape)}")
    if not use_triton(x):
        return glue_torch.rope_torch(x, cos, sin)
    return _ROPE(x, cos.float(), sin.float(), 1.0)


# --------------------------------------------------------------------- SwiGLU product

class _SwiGLU(torch.autograd.Function):
    """SiLU(g) ⊙ u keeping g and u for the backward (chunks of the FFN's first product, kept by it anyway) but
    not SiLU(g): the backward recomputes SiLU(g) with the same op and runs the ops autograd runs for
    ``F.silu(g) * u`` (the product's ∂ · u and ∂ · SiLU(g), then ``aten.silu_backward``), so values and
    gradients are bit for bit the plain expression's."""

    @staticmethod
    def forward(ctx, g, u):
        ctx.save_for_backward(g, u)
        return F.silu(g) * u

    @staticmethod
    def backward(ctx, dy):
        g, u = ctx.saved_tensors
        return torch.ops.aten.silu_backward(dy * u, g), dy * F.silu(g)


def swiglu(g: Tensor, u: Tensor) -> Tensor:
    """SiLU(g) ⊙ u (the SwiGLU FFN's product), equal bit for bit to ``F.silu(g) * u`` but saving one tensor
    of g's size less for the backward (at the bench's sizes 2,048 bytes per token and layer:
    docs/benchmarks.md). Plain PyTorch, any device; under torch.compile that expression itself."""
    if g.shape != u.shape:
        raise ValueError(f"swiglu takes g and u of one shape, got {tuple(g.shape)} and {tuple(u.shape)}")
    if not _saves_eagerly():
        return F.silu(g) * u
    return _SwiGLU.apply(g, u)
