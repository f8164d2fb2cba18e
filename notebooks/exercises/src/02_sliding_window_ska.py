# %% [markdown]
# # Rodimus+: sliding-window shared-key attention (SW-SKA)
#
# Rodimus+ adds a small softmax attention to each layer: **shared-key attention** (one key head
# for all $H$ query heads, but $H$ value heads) over a **sliding window** of recent tokens, with
# **RoPE** on queries and keys. Layout `[B, T, H, d]`.

# %%
import torch

from rodimus_lab.exercises import check

# %% [markdown]
# ## Exercise 4 · `ska_attention` — shared key, per-head values (≈ 15 min)
#
# `q` is `[B, T, H, d]`, `k` is `[B, T, 1, d]` (ONE key head), `v` is `[B, T, H, d]`. For query head $h$:
#
# $$o_i^h = \sum_{j \le i} \operatorname{softmax}_j\!\Big(\text{scale}\,\langle q_i^h, k_j\rangle\Big)\, v_j^h,
# \qquad \text{scale} = d^{-1/2} \text{ unless given.}$$
#
# Causal: query $i$ sees keys $j \le i$. Sharing the key costs little (a per-head key map can be
# folded into the query map); sharing the values too (MQA) would cost expressiveness. Cache per
# token: $d + H d$ numbers instead of $2 H d$ for multi-head attention.

# %%
def ska_attention(q, k, v, *, scale=None):
    """Causal shared-key attention: o [B, T, H, d]."""
    # BEGIN SOLUTION
    T, d = q.shape[1], q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    scores = torch.einsum("bihd,bjd->bhij", q, k[:, :, 0]) * scale     # the one key head, for every query head
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    return torch.einsum("bhij,bjhd->bihd", weights, v)
    # END SOLUTION


# %% tags=["check"]
check("ska_attention", ska_attention)

# %% [markdown]
# ## Exercise 5 · `sliding_window_mask` — which keys may a query see? (≈ 15 min)
#
# Return a bool mask `[q_len, k_len]` (True = may attend). The queries are the **last** `q_len` of the
# `k_len` positions (`q_len = k_len` in training, `q_len = 1` when decoding), so query $i$ sits at
# position $p = k_\text{len} - q_\text{len} + i$. With `causal`, it sees keys at positions $\le p$;
# with a `window` it sees exactly `window` keys, **itself included**: positions $p - \text{window} + 1 \dots p$.
# `window=None` means no window; `causal=False` (only without a window) means every key.
#
# Careful, conventions differ: the official Rodimus code's `window_size=W` means $W/2$ earlier tokens
# plus itself (rodimus-lab window $= W // 2 + 1$), fla's `window_size=W` means exactly $W$ keys.

# %%
def attention_mask(q_len, k_len, *, window=None, causal=True, device=None):
    """bool [q_len, k_len]: which keys each query may see."""
    # BEGIN SOLUTION
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    if causal:
        mask &= k_pos <= q_pos
    if window is not None:
        mask &= k_pos > q_pos - window
    return mask
    # END SOLUTION


# %% tags=["check"]
check("sliding_window_mask", attention_mask)

# %% [markdown]
# ## Exercise 6 · `rope` — rotary position embedding, rotate-half (≈ 15 min)
#
# RoPE rotates pairs of dimensions by an angle proportional to the position, so that
# $\langle \text{rope}(q)_i, \text{rope}(k)_j \rangle$ depends only on $i - j$. In the non-interleaved
# "rotate-half" layout, dim $r$ is paired with dim $r + d/2$ and frequency $r$ is
# $\omega_r = \text{base}^{-2r/d}$ for $r = 0 \dots d/2 - 1$. With $x = [x_1, x_2]$ (the two halves)
# and $\theta_{p,r} = p\,\omega_r$ for the token at position $p$ (`offset`, `offset + 1`, …):
#
# $$\text{rope}(x) = x \odot \cos\Theta + [-x_2,\ x_1] \odot \sin\Theta, \qquad \Theta = [\theta, \theta].$$

# %%
def rope(x, *, offset=0, base=10000.0):
    """Rotate-half RoPE on x [B, T, H, d]; the first token sits at position offset."""
    # BEGIN SOLUTION
    T, d = x.shape[1], x.shape[-1]
    positions = torch.arange(offset, offset + T, dtype=torch.float64)
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)                      # dims r and r + d/2 share a frequency
    cos = angles.cos().to(x.dtype)[None, :, None, :]
    sin = angles.sin().to(x.dtype)[None, :, None, :]
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin
    # END SOLUTION


# %% tags=["check"]
check("rope", rope)
