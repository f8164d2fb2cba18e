"""Reference twins of the fused glue kernels in :mod:`rodimus_kernels.glue`: the same functions, same
signatures, in plain PyTorch (autograd gives the backward).

They compute what ``rodimus_lab.model``'s modules compute (tests/kernels/test_glue_kernel.py checks
both): ``short_conv_silu`` is ``ShortConv.forward``, ``gated_rmsnorm`` the mixer's output
``act_norm((o + d ⊙ x̃) ⊙ SiLU(z))``, ``value_gate`` the value ``σ(x' W₁ W₂ + b) ⊙ x'`` after its low-rank
product, ``gate_linear`` the float32 gate logits. The package must not import ``rodimus_lab``, so the
equations are written here once more, in the modules' words. Used directly on CPU without
``TRITON_INTERPRET``.
"""

import torch
import torch.nn.functional as F


def _up(x):
    return x.to(torch.promote_types(x.dtype, torch.float32))


def short_conv_silu_torch(x, weight, bias):
    """SiLU of the causal depthwise convolution over time: x [B, T, m], weight [m, K], bias [m] →
    y [B, T, m] in x's dtype, y_t = SiLU(bias + Σ_k weight[:, k] ⊙ x_{t−K+1+k}) (x_{<0} = 0)."""
    T, K = x.shape[1], weight.shape[-1]
    y = F.conv1d(_up(x).transpose(1, 2), _up(weight)[:, None], _up(bias), padding=K - 1, groups=x.shape[-1])
    return F.silu(y[..., :T].transpose(1, 2)).to(x.dtype)


def gated_rmsnorm_torch(o, xc, z, residual_weight, norm_weight, eps):
    """RMSNorm((o + d ⊙ x̃) ⊙ SiLU(z)) ⊙ w over the last dim, float32 inside, in z's dtype.

    o, xc, z [..., m]; residual_weight d and norm_weight w [m]."""
    u = (_up(o) + _up(residual_weight) * _up(xc)) * F.silu(_up(z))
    return (u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + eps) * _up(norm_weight)).to(z.dtype)


def value_gate_torch(gate_logits, x):
    """v = σ(gate_logits) ⊙ x, float32 inside, in x's dtype."""
    return (torch.sigmoid(_up(gate_logits)) * _up(x)).to(x.dtype)


def gate_linear_torch(x, weight, bias):
    """x Wᵀ + b in float32 (at least): the DDTS gate logits."""
    return F.linear(_up(x), _up(weight), _up(bias))


def rms_norm_torch(x, weight, eps, out_dtype=None):
    """x · (mean x² + eps)^−½ ⊙ w over the last dim, float32 inside, in ``out_dtype`` (default x's)."""
    xf = _up(x)
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * _up(weight)
    return y.to(x.dtype if out_dtype is None else out_dtype)


def rope_torch(x, cos, sin):
    """Rotate-half RoPE of x [B, T, H, d] with per-position tables cos, sin [T, d/2] (float32 inside, x's
    dtype out): pairs (i, i + d/2) rotated by the angle whose cos and sin the tables hold."""
    x1, x2 = _up(x).chunk(2, dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
