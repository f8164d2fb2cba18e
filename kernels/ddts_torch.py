"""The CPU fallback of :mod:`rodimus_kernels.ddts`: the same function in a few lines of PyTorch.

Used when the tensors are on the CPU and ``TRITON_INTERPRET`` is not set. The package must not import
``rodimus_lab``, so this is a small independent twin of ``rodimus_lab.ddts`` (which the tests compare
both against): fused gates + key norm, then the chunkwise form with sub-chunks of 16 tokens, every
exponent a difference ≤ 0. Autograd gives the backward.
"""

import torch
import torch.nn.functional as F

CHUNK = 16


def gates(g_logits, tau_logits):
    """(log α, α̂) = (−softplus(g)·σ(τ), softplus(g)^σ(τ))."""
    g, tau = F.softplus(g_logits), torch.sigmoid(tau_logits)
    return -g * tau, g.pow(tau)


def ddts_torch(q, k, v, g_logits, tau_logits, scale, initial_state=None, output_final_state=False,
               cu_seqlens=None):
    """``rodimus_kernels.ddts`` with the scale resolved: (o in v's dtype, final state fp32/fp64 or None).

    Packed sequences (``cu_seqlens``) run one at a time, each from its own row of ``initial_state``.
    """
    if cu_seqlens is None:
        o, final = _one_batch(q, k, v, g_logits, tau_logits, scale, initial_state)
        return o, (final if output_final_state else None)
    outputs, finals = [], []
    bounds = cu_seqlens.tolist()
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        h0 = None if initial_state is None else initial_state[i:i + 1]
        o, final = _one_batch(*(x[:, start:end] for x in (q, k, v, g_logits, tau_logits)), scale, h0)
        outputs.append(o)
        finals.append(final)
    return torch.cat(outputs, dim=1), (torch.cat(finals) if output_final_state else None)


def _one_batch(q, k, v, g_logits, tau_logits, scale, initial_state=None):
    """One batch of whole sequences [B, T, H, ·] → (o in v's dtype, final state fp32/fp64)."""
    B, T, H, n = q.shape
    dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
    log_alpha, alpha_hat = gates(g_logits.to(dtype), tau_logits.to(dtype))
    k = alpha_hat * F.normalize(k.to(dtype), dim=-1, eps=1e-12)
    q, v = q.to(dtype) * scale, v.to(dtype)
    state = q.new_zeros(B, H, n, v.shape[-1]) if initial_state is None else initial_state.to(dtype)
    outputs = []
    for t0 in range(0, T, CHUNK):
        qc, kc, vc, lc = (x[:, t0:t0 + CHUNK].transpose(1, 2) for x in (q, k, v, log_alpha))  # [B, H, c, ·]
        b = lc.cumsum(dim=-2)
        diff = b.unsqueeze(-2) - b.unsqueeze(-3)                       # [B, H, i, j, n]
        causal = torch.ones(b.shape[-2], b.shape[-2], dtype=torch.bool, device=b.device).tril()
        decay = diff.masked_fill(~causal[..., None], float("-inf")).exp()
        attn = torch.einsum("bhin,bhjn,bhijn->bhij", qc, kc, decay)
        outputs.append((attn @ vc + (qc * b.exp()) @ state).transpose(1, 2))
        b_last = b[..., -1:, :]
        state = b_last.transpose(-1, -2).exp() * state + (kc * (b_last - b).exp()).transpose(-1, -2) @ vc
    o = torch.cat(outputs, dim=1) if outputs else v.new_zeros(v.shape, dtype=dtype)
    return o.to(v.dtype), state


def ddts_step_torch(q, k, v, g_logits, tau_logits, state, scale):
    """One token [B, H, ·]; ``state`` (fp32) is updated in place."""
    log_alpha, alpha_hat = gates(g_logits.float(), tau_logits.float())
    k = alpha_hat * F.normalize(k.float(), dim=-1, eps=1e-12)
    state.mul_(log_alpha.exp().unsqueeze(-1)).add_(k.unsqueeze(-1) * v.float().unsqueeze(-2))
    o = scale * torch.einsum("bhn,bhnm->bhm", q.float(), state)
    return o.to(v.dtype), state
