"""Softmax attention in plain PyTorch: MHA, GQA, MQA and SKA, full or sliding window.

One function covers every head layout, because they differ only in how many key and
value heads the query heads share:

    layout   query heads   key heads   value heads
    MHA      H             H           H
    GQA      H             G           G
    MQA      H             1           1
    SKA      H             1           H        (shared-key attention, Rodimus+)

Query head j reads key head ``j mod Hk`` and value head ``j mod Hv``: the key/value heads are
tiled across the query heads (as the official Rodimus code repeats them), not each repeated
in place. The two pairings differ only for GQA (1 < Hk < H) and give different models.

RoPE comes in the variants the official checkpoints use (:func:`rope`): rotate-half or
interleaved pairs, all or only the leading dims of each head, and an optional XPos-style
scale per position.

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
    "xpos_scale",
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
    # Query head j reads key head j mod Hk: tile the Hk heads Hq/Hk times ([k0 k1 k0 k1 …]),
    # the official pairing. (repeat_interleave, [k0 k0 k1 k1 …], would pair j with j // (Hq/Hk):
    # same shapes, a different model.) A gather, the simple way; the kernel never materialises it.
    k = k.to(dtype).repeat(1, 1, Hq // Hk, 1)
    v = v.to(dtype).repeat(1, 1, Hq // Hv, 1)
    scale = d ** -0.5 if scale is None else float(scale)
    scores = torch.einsum("bihd,bjhd->bhij", q.to(dtype), k) * scale
    mask = attention_mask(Tq, Tk, window=window, causal=causal, device=q.device)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    o = torch.einsum("bhij,bjhd->bihd", weights, v).to(out_dtype)
    return (o, weights) if return_weights else o


# --------------------------------------------------------------------------- RoPE
#
# A head vector's first ``dims`` entries form dims/2 pairs; pair i at position n turns by the
# angle n · base^(−2i/dims). Rotate-half pairs entry i with i + dims/2 (GPT-NeoX, the default);
# interleaved pairs 2i with 2i + 1 (GPT-J). Entries past ``dims`` are left alone (partial RoPE).

def _spread(per_pair: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """[..., dims/2] values, one per pair → [..., dims] laid out like the pairs."""
    return per_pair.repeat_interleave(2, dim=-1) if interleaved else torch.cat([per_pair, per_pair], dim=-1)


def _partner(x: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Each entry's pair partner, signed so that a pair (a, b) becomes (−b, a)."""
    if interleaved:
        return torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def rope_cos_sin(positions: torch.Tensor, dim: int, *, base: float = 10000.0, interleaved: bool = False,
                 dtype=torch.float32):
    """cos, sin of shape [T, dim] (frequencies base^(−2i/dim)), laid out like the pairs."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even number of rotated dims, got {dim}")
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    angles = _spread(positions.to(torch.float64)[:, None] * inv_freq[None, :], interleaved)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def xpos_scale(positions: torch.Tensor, dim: int, *, scale_base: float, center: int = 0) -> torch.Tensor:
    """[T, dim/2]: pair i at position n is scaled by ζ_i^((n − center) / scale_base), ζ_i = (2i + 0.4·dim) / (1.4·dim).

    XPos (Sun et al. 2022) scales queries by ζ^n and keys by ζ^−n, so a score depends on n_q − n_k only.
    The official Rodimus code (``rotary_emb_scale_base``) applies this same table to queries AND keys,
    centred on half its table length (``max_position_embeddings`` // 2); :func:`rope` does the same,
    for parity: a score then depends on n_q + n_k as well.
    """
    zeta = (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) + 0.4 * dim) / (1.4 * dim)
    return zeta[None, :] ** ((positions.to(torch.float64)[:, None] - center) / scale_base)


def rope(x: torch.Tensor, *, offset: int = 0, base: float = 10000.0, dims: int | None = None,
         interleaved: bool = False, xpos_scale_base: float | None = None, xpos_center: int = 0) -> torch.Tensor:
    """Rotary position embedding on x [B, T, H, d].

    ``offset``: position of x's first token (for decoding). ``dims``: how many leading entries of
    each head rotate (None: all d; 0: none). ``interleaved``: pair 2i with 2i + 1 instead of i with
    i + dims/2. ``xpos_scale_base``: also scale each pair by :func:`xpos_scale` (None: off).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [B, T, H, d], got shape {tuple(x.shape)}")
    T, d = x.shape[1], x.shape[-1]
    dims = d if dims is None else dims
    if not 0 <= dims <= d:
        raise ValueError(f"dims must be in [0, head dim {d}], got {dims}")
    if dims == 0:
        return x
    positions = torch.arange(offset, offset + T, device=x.device)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos, sin = rope_cos_sin(positions, dims, base=base, interleaved=interleaved, dtype=torch.float64)
    if xpos_scale_base is not None:
        scale = _spread(xpos_scale(positions, dims, scale_base=xpos_scale_base, center=xpos_center), interleaved)
        cos, sin = cos * scale, sin * scale
    cos, sin = cos.to(dtype)[None, :, None, :], sin.to(dtype)[None, :, None, :]
    xr = x[..., :dims].to(dtype)
    rotated = xr * cos + _partner(xr, interleaved) * sin
    return torch.cat([rotated, x[..., dims:].to(dtype)], dim=-1).to(x.dtype)
