"""The CPU fallback of :mod:`rodimus_kernels.sw_ska`: the same two functions in plain PyTorch.

Used when the tensors are on the CPU and ``TRITON_INTERPRET`` is not set. The package must not import
``rodimus_lab``, so this is a small independent twin of ``rodimus_lab.attention.attention`` with one
shared key head (the tests compare both): float32 (float64 for float64 inputs) scores and softmax,
autograd for the backward.
"""

import torch


def _visible_mask(q_len: int, k_len: int, window: int, device) -> torch.Tensor:
    """[q_len, k_len]: the last q_len positions each see themselves and the window − 1 keys before."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    return (k_pos <= q_pos) & (k_pos > q_pos - window)


def _statistics_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def sw_ska_torch(q, k, v, window: int, scale: float):
    """``rodimus_kernels.sw_ska`` with window and scale resolved: q [B, T, H, d], k [B, T, 1, d], v [B, T, H, d]."""
    stat = _statistics_dtype(q)
    scores = torch.einsum("bihd,bjd->bhij", q.to(stat), k[:, :, 0].to(stat)) * scale
    T = q.shape[1]
    weights = scores.masked_fill(~_visible_mask(T, T, window, q.device), float("-inf")).softmax(-1)
    return torch.einsum("bhij,bjhd->bihd", weights, v.to(stat)).to(v.dtype)


def sw_ska_decode_torch(q, k, v, scale: float):
    """One query per head [B, 1, H, d] over every given cache slot k [B, S, 1, d], v [B, S, H, d]."""
    stat = _statistics_dtype(v)
    weights = (torch.einsum("bihd,bjd->bhij", q.to(stat), k[:, :, 0].to(stat)) * scale).softmax(-1)
    return torch.einsum("bhij,bjhd->bihd", weights, v.to(stat)).to(v.dtype)
