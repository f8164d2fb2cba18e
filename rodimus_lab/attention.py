"""Softmax attention in plain PyTorch: MHA, GQA, MQA and SKA, full or sliding window.

One function covers every head layout, because they differ only in how many key and
value heads the query heads share:

    layout   query heads   key heads   value heads
    MHA      H             H           H
    GQA      H             G           G
    MQA      H             1           1
    SKA      H             1           H        (shared-key attention, Rodimus+)

Query head h reads key head ``h // (H / Hk)`` and value head ``h // (H / Hv)``.

``window`` is the number of keys a query sees, itself included (None: all earlier keys).
The official Rodimus code and fla count windows differently; :func:`window_from_official`
and :func:`window_from_fla` convert. This file is the reference twin of the
``rodimus_kernels.sw_ska`` kernel.
"""

from __future__ import annotations

import torch

__all__ = [
    "attention",
    "attention_mask",
    "rope",
    "rope_cos_sin",
    "window_from_official",
    "window_from_fla",
]


def window_from_official(window_size: int) -> int:
    """Official Rodimus ``window_size=W`` → keys seen: W // 2 earlier tokens plus itself."""
    if window_size < 1:
        raise ValueError(f"window_size must be ≥ 1, got {window_size}")
    return window_size // 2 + 1


def window_from_fla(window_size: int) -> int:
    """fla ``window_size=W`` → keys seen: exactly W (W − 1 earlier tokens plus itself)."""
    if window_size < 1:
        raise ValueError(f"window_size must be ≥ 1, got {window_size}")
    return window_size


def attention_mask(q_len: int, k_len: int, *, window: int | None = None, causal: bool = True,
                   device=None) -> torch.Tensor:
    """Which keys each query may see: bool [q_len, k_len].

    Queries are the LAST q_len positions of the k_len keys (q_len = k_len in training,
    q_len = 1 when decoding), so query i sits at position k_len − q_len + i.
    """
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ValueError(f"window must be None or an int ≥ 1 (keys a query sees, itself included), got {window!r}")
    if window is not None and not causal:
        raise ValueError("window needs causal=True (a sliding window looks back only)")
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    if causal:
        mask &= k_pos <= q_pos
    if window is not None:
        mask &= k_pos > q_pos - window
    return mask


def attention(q, k, v, *, window=None, causal=True, scale=None, return_weights=False):
    """Softmax attention for every head layout.

    q [B, Tq, Hq, d], k [B, Tk, Hk, d], v [B, Tk, Hv, dv]; Hk and Hv divide Hq.
    Returns o [B, Tq, Hq, dv] and, with ``return_weights``, weights [B, Hq, Tq, Tk].
    Softmax statistics are float32 (float64 for float64 inputs).
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must be 4-D [B, T, H, d], got shape {tuple(x.shape)}")
    B, Tq, Hq, d = q.shape
    _, Tk, Hk, dk = k.shape
    Hv = v.shape[2]
    if k.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"batch sizes differ: q {B}, k {k.shape[0]}, v {v.shape[0]}")
    if dk != d:
        raise ValueError(f"k head dim must equal q head dim {d}, got {dk}")
    if v.shape[1] != Tk:
        raise ValueError(f"v must have as many positions as k ({Tk}), got {v.shape[1]}")
    if Tq > Tk:
        raise ValueError(f"q has {Tq} positions but k only {Tk}: queries are the last positions of the keys")
    for name, h in (("k", Hk), ("v", Hv)):
        if h < 1 or Hq % h:
            raise ValueError(f"{name} heads ({h}) must divide the query heads ({Hq})")

    out_dtype = v.dtype
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    # Index each query head's key/value head (a gather, the simple way; the kernel
    # never materialises this repeat).
    k = k.to(dtype).repeat_interleave(Hq // Hk, dim=2)
    v = v.to(dtype).repeat_interleave(Hq // Hv, dim=2)
    scale = d ** -0.5 if scale is None else float(scale)
    scores = torch.einsum("bihd,bjhd->bhij", q.to(dtype), k) * scale
    mask = attention_mask(Tq, Tk, window=window, causal=causal, device=q.device)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    o = torch.einsum("bhij,bjhd->bihd", weights, v).to(out_dtype)
    return (o, weights) if return_weights else o


# --------------------------------------------------------------------------- RoPE

def rope_cos_sin(positions: torch.Tensor, dim: int, *, base: float = 10000.0, dtype=torch.float32):
    """cos, sin of shape [T, dim] for rotate-half RoPE (frequencies base^(−2i/dim))."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even head dim, got {dim}")
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rope(x: torch.Tensor, *, offset: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding, non-interleaved "rotate-half", on x [B, T, H, d].

    Pairs dimension i with i + d/2 and rotates the pair by angle pos · base^(−2i/d).
    ``offset`` is the position of x's first token (for decoding).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [B, T, H, d], got shape {tuple(x.shape)}")
    T, d = x.shape[1], x.shape[-1]
    positions = torch.arange(offset, offset + T, device=x.device)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions, d, base=base, dtype=dtype)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    xf = x.to(dtype)
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)
