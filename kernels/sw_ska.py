"""Sliding-window shared-key attention (SW-SKA): fused Triton forward and backward, and one-token decode.

Reference twin: ``rodimus_lab.attention.attention(q, k, v, window=window)`` with one key head.
K keeps its single head in memory and in the kernels; it is never repeated to H heads.

Where the work runs (``dispatch.py``): CUDA tensors and, with TRITON_INTERPRET=1, CPU tensors go to the
Triton kernels (``sw_ska_triton.py``); other CPU tensors to the plain PyTorch twin ``sw_ska_torch.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .dispatch import cdiv, dot_precision, sm_count, triton_module, use_triton
from .ops import KernelOp
from .sw_ska_torch import sw_ska_decode_torch, sw_ska_torch

__all__ = ["sw_ska", "sw_ska_decode"]

LOG2E = math.log2(math.e)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)


@dataclass(frozen=True)
class Tiles:
    """Launch shape of one kernel: rows × columns of its tiles, warps, pipeline stages."""
    rows: int
    cols: int
    num_warps: int = 4
    num_stages: int = 2


# Benchmarks may put Tiles here (keys "fwd", "dq", "dkdv") and an int under "dkdv_groups" to try
# other launch shapes; empty means the defaults of _tiles().
TUNING: dict = {}


# Fastest of a sweep on an H200 (bf16, d=128, T=4096, windows 128 and 512; docs/benchmarks.md).
GPU_TILES = {"fwd": Tiles(64, 32, 4, 3), "dq": Tiles(64, 64, 4, 2), "dkdv": Tiles(64, 32, 4, 3)}
# float32 tiles take twice the shared memory; (64, 32) keeps every kernel under Hopper's 227 KiB at d=128.
GPU_TILES_FP32 = Tiles(64, 32, 4, 2)


def _tiles(kernel: str, dtype: torch.dtype, device: torch.device) -> Tiles:
    """Tile shapes: small under the interpreter (fewer numpy ops), swept ones on GPU.

    fwd and dq tile (queries, keys); dkdv tiles (keys, queries). cols must divide rows.
    """
    if kernel in TUNING:
        return TUNING[kernel]
    if device.type != "cuda":
        return Tiles(32, 16)
    return GPU_TILES_FP32 if dtype == torch.float32 else GPU_TILES[kernel]


def _dkdv_groups(batch: int, key_blocks: int, heads: int, device: torch.device) -> int:
    """Head groups of the dK/dV kernel: 1 (dK summed entirely in registers) unless the grid would
    leave most of the GPU idle; then a few groups, each writing a float32 partial dK [B, T, D]."""
    if "dkdv_groups" in TUNING:
        return min(TUNING["dkdv_groups"], heads)
    if device.type != "cuda":
        return 1
    programs_wanted = sm_count(device)
    return max(1, min(heads, programs_wanted // max(batch * key_blocks, 1)))


def _check(q, k, v, window):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"{name} must be a 4-D tensor [B, T, H, d], got {getattr(x, 'shape', type(x))}")
    B, T, H, d = q.shape
    if tuple(k.shape) != (B, T, 1, d):
        raise ValueError(f"k must be [B, T, 1, d] = {(B, T, 1, d)} (one shared key head), got {tuple(k.shape)}")
    if tuple(v.shape) != (B, T, H, d):
        raise ValueError(f"v must be [B, T, H, d] = {(B, T, H, d)} (one value head per query head), "
                         f"got {tuple(v.shape)}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"window must be an int ≥ 1 (keys a query sees, itself included) or None, got {window!r}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def _check_triton(q):
    if q.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"sw_ska kernels take float16, bfloat16 or float32, got {q.dtype}; "
                         "use rodimus_lab.attention.attention for other dtypes")
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"sw_ska kernels take head dims {SUPPORTED_HEAD_DIMS}, got {q.shape[-1]}; "
                         "use rodimus_lab.attention.attention for other head dims")


def sw_ska(q, k, v, *, window, scale=None):
    """Causal sliding-window attention with ONE shared key head.

    q [B, T, H, d], k [B, T, 1, d], v [B, T, H, d] → o [B, T, H, d]. Query t sees keys
    t − window + 1 … t (``window`` keys, itself included; None or window ≥ T: full causal).
    ``scale`` defaults to d^-1/2. Differentiable in q, k, v.
    """
    _check(q, k, v, window)
    T = q.shape[1]
    window = T if window is None else min(window, T)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if T == 0:
        return torch.empty_like(v)
    if use_triton(q):
        _check_triton(q)
        return _SW_SKA(q, k, v, window, scale)[0]
    return sw_ska_torch(q, k, v, window, scale)


def sw_ska_decode(q, k_cache, v_cache, *, length=None, scale=None):
    """One new query per head over a cache of shared keys and per-head values.

    q [B, 1, H, d]; k_cache [B, S, 1, d]; v_cache [B, S, H, d]; the first ``length`` slots are
    valid (default S; slot order does not matter). Returns o [B, 1, H, d] in v_cache's dtype, the
    same as ``attention(q, k_cache[:, :length], v_cache[:, :length], causal=False)``.
    """
    B, one, H, d = q.shape
    S = k_cache.shape[1]
    if one != 1:
        raise ValueError(f"q must be [B, 1, H, d] (one new token), got {tuple(q.shape)}")
    if tuple(k_cache.shape) != (B, S, 1, d) or tuple(v_cache.shape) != (B, S, H, d):
        raise ValueError(f"caches must be k [B, S, 1, d] and v [B, S, H, d] with B={B}, H={H}, d={d}; "
                         f"got k {tuple(k_cache.shape)}, v {tuple(v_cache.shape)}")
    length = S if length is None else int(length)
    if not 1 <= length <= S:
        raise ValueError(f"length must be in 1..{S} (valid cache slots), got {length}")
    scale = d ** -0.5 if scale is None else float(scale)
    if not use_triton(q):
        return sw_ska_decode_torch(q, k_cache[:, :length], v_cache[:, :length], scale)
    _check_triton(v_cache)
    return _decode_triton(q, k_cache, v_cache, length, scale)


# ------------------------------------------------------------------------------------ Triton

def _launch(kernel, grid, tiles: Tiles, *args, **constexprs):
    kernel[grid](*args, **constexprs, num_warps=tiles.num_warps, num_stages=tiles.num_stages)


def _forward(q, k, v, window, scale):
    B, T, H, d = q.shape
    tiles = _tiles("fwd", q.dtype, q.device)
    o = torch.empty_like(q)
    lse = torch.empty(B, H, T, device=q.device, dtype=torch.float32)
    grid = (H, cdiv(T, tiles.rows), B)
    _launch(triton_module("sw_ska_triton")._fwd, grid, tiles, q, k, v, o, lse, T, H, window, scale * LOG2E,
            HEAD_DIM=d, BLOCK_M=tiles.rows, BLOCK_N=tiles.cols, PRECISION=dot_precision("tf32x3", q.dtype))
    return o, lse


def _backward(do, q, k, v, o, lse, window, scale):
    B, T, H, d = q.shape
    kern = triton_module("sw_ska_triton")
    precision = dot_precision("tf32x3", q.dtype)
    delta = torch.empty_like(lse)  # written by _bwd_dq, read by _bwd_dkdv
    dq = torch.empty_like(q)
    tiles = _tiles("dq", q.dtype, q.device)
    _launch(kern._bwd_dq, (H, cdiv(T, tiles.rows), B), tiles, q, k, v, o, do, lse, delta, dq,
            T, H, window, scale * LOG2E, scale,
            HEAD_DIM=d, BLOCK_M=tiles.rows, BLOCK_N=tiles.cols, PRECISION=precision)

    tiles = _tiles("dkdv", q.dtype, q.device)
    key_blocks = cdiv(T, tiles.rows)
    groups = _dkdv_groups(B, key_blocks, H, q.device)
    heads_per_group = cdiv(H, groups)
    groups = cdiv(H, heads_per_group)
    dv = torch.empty_like(v)
    # one group (always off CUDA) writes dK itself: [B, T, 1, d] is the layout of [1, B, T, 1, d] without the
    # view that selecting slice 0 costs on every call (host time: ``rodimus-lab bench host``)
    dk = (torch.empty(B, T, 1, d, device=q.device, dtype=k.dtype) if groups == 1 else
          torch.empty(groups, B, T, 1, d, device=q.device, dtype=torch.float32))
    _launch(kern._bwd_dkdv, (key_blocks, B, groups), tiles, q, k, v, do, lse, delta, dk, dv,
            T, H, window, heads_per_group, scale * LOG2E, scale,
            HEAD_DIM=d, BLOCK_N=tiles.rows, BLOCK_M=tiles.cols, PRECISION=precision)
    return dq, (dk if groups == 1 else dk.sum(0).to(k.dtype)), dv


# The training kernels as one KernelOp (ops.py): a torch.library custom op with autograd and fake (shape)
# functions under torch.compile, which calls it opaquely instead of tracing into the Triton launches; a
# plain autograd Function of the same functions when eager.

def _sw_ska_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                    scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward(q.contiguous(), k.contiguous(), v.contiguous(), window, scale)


def _sw_ska_forward_fake(q, k, v, window, scale):
    B, T, H, _ = q.shape
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(B, H, T, dtype=torch.float32)


def _sw_ska_backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                     lse: torch.Tensor, window: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return _backward(do.contiguous(), q, k, v, o, lse, window, scale)


def _sw_ska_backward_fake(do, q, k, v, o, lse, window, scale):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))


def _setup_context(ctx, inputs, output):
    q, k, v, ctx.window, ctx.scale = inputs
    ctx.save_for_backward(q, k, v, *output)


def _sw_ska_grad(ctx, backward, do, _dlse):
    return (*backward(do, *ctx.saved_tensors, ctx.window, ctx.scale), None, None)


_SW_SKA = KernelOp("sw_ska", _sw_ska_forward, _sw_ska_backward, setup_context=_setup_context, grad=_sw_ska_grad,
                   fake=_sw_ska_forward_fake, backward_fake=_sw_ska_backward_fake)


def _decode_triton(q, k_cache, v_cache, length, scale):
    B, _, H, d = q.shape
    q, k_cache, v_cache = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k_cache, v_cache))
    block = 32 if q.device.type == "cuda" else 16
    # Split the cache so that B·H·splits programs fill the GPU; each split ≥ one block.
    splits = max(1, min(cdiv(length, block), cdiv(256, B * H)))
    split_len = cdiv(cdiv(length, splits), block) * block
    splits = cdiv(length, split_len)
    m = torch.empty(B, H, splits, device=q.device, dtype=torch.float32)
    l = torch.empty_like(m)
    acc = torch.empty(B, H, splits, d, device=q.device, dtype=torch.float32)
    triton_module("sw_ska_triton")._decode[(H, B, splits)](
        q, k_cache, v_cache, m, l, acc, length, split_len, H, scale * LOG2E,
        q.stride(0), q.stride(2), k_cache.stride(0), k_cache.stride(1),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        HEAD_DIM=d, BLOCK_N=block, num_warps=4)
    weight = torch.exp2(m - m.amax(-1, keepdim=True))
    o = (weight[..., None] * acc).sum(2) / (weight * l).sum(2)[..., None]
    return o[:, None].to(v_cache.dtype)
