# %% [markdown]
# # The Rodimus block, the Rodimus+ layer, and what decoding must remember
#
# Three pieces around the DDTS core: the short convolution stepped one token at a time, the
# two-hop residual that wires a Rodimus+ layer, and the size of the decoding state.

# %%
import torch
import torch.nn.functional as F

from rodimus_lab import ModelConfig
from rodimus_lab.exercises import check

# %% [markdown]
# ## Exercise 7 · `short_conv_step` — the short convolution while decoding (≈ 10 min)
#
# Before DDTS, each of the $m$ channels goes through a causal depthwise convolution of size $K$ (4)
# and SiLU: $\tilde x_t = \operatorname{SiLU}\big(\sum_{r=0}^{K-1} w_r\, x'_{t-K+1+r} + b\big)$ per channel —
# PyTorch's `Conv1d` is a cross-correlation, so the **last** tap $w_{K-1}$ multiplies the newest input.
# While decoding, the layer keeps the previous $K-1$ inputs in a buffer `[B, m, K-1]` (oldest first).
#
# Given this token's `x` `[B, m]`, the `buffer`, `weight` `[m, K]` and `bias` `[m]`, return
# `(y [B, m], new_buffer [B, m, K-1])`. The buffer plus the DDTS state is the whole Rodimus cache.

# %%
def short_conv_step(x, buffer, weight, bias):
    """One decoding step of the causal depthwise conv + SiLU."""
    # BEGIN SOLUTION
    window = torch.cat([buffer, x[..., None]], dim=-1)     # [B, m, K], oldest … newest
    y = F.silu((window * weight).sum(dim=-1) + bias)
    return y, window[..., 1:]
    # END SOLUTION


# %% tags=["check"]
check("short_conv_step", short_conv_step)

# %% [markdown]
# ## Exercise 8 · `two_hop_residual` — wiring a Rodimus+ layer (≈ 10 min)
#
# A Rodimus+ layer has a Rodimus mixer, an SW-SKA attention and a SwiGLU FFN, each behind its own
# RMSNorm. The attention output does **not** go into the residual stream; it reaches it only through
# the FFN — the *two-hop residual*:
#
# $$Y = X + \text{mixer}(\text{norm}_\text{mixer}(X)), \qquad
# Z = Y + \text{FFN}\big(\text{norm}_\text{ffn}(Y + \text{attn}(\text{norm}_\text{attn}(Y)))\big).$$
#
# Every argument after `x` is a callable `[B, T, d] -> [B, T, d]` (real rodimus-lab modules).

# %%
def two_hop_residual(x, mixer, attn, ffn, mixer_norm, attn_norm, ffn_norm):
    """One Rodimus+ layer: z [B, T, d] from x [B, T, d]."""
    # BEGIN SOLUTION
    y = x + mixer(mixer_norm(x))
    a = attn(attn_norm(y))
    return y + ffn(ffn_norm(y + a))
    # END SOLUTION


# %% tags=["check"]
check("two_hop_residual", two_hop_residual)

# %% [markdown]
# ## Exercise 9 · `state_bytes` — Rodimus' fixed state vs a growing KV cache (≈ 15 min)
#
# Count the bytes one sequence needs while decoding after `context_len` tokens, summed over
# `config.n_layers` layers, at `bytes_per_element` bytes per number (2: bf16, as the paper counts):
#
# * a layer with a Rodimus mixer (`config.has_mixer`) keeps its state, `mem_size × d_inner` numbers, plus
#   (if `include_conv` and `config.short_conv`) the conv buffer, `(conv_size − 1) × d_inner`;
# * a layer with attention (`config.has_attention`) keeps keys and values for the last
#   `kept = min(context_len, window)` tokens (all of them if `window` is None):
#   `kept × (num_key_heads + num_value_heads) × head_dim`.
#
# Use the `ModelConfig` properties (`d_inner`, `num_key_heads`, `num_value_heads`, `head_dim`, …).

# %%
def cache_bytes(config, context_len, *, bytes_per_element=2, include_conv=True):
    """Bytes of decoding state per sequence after context_len tokens."""
    # BEGIN SOLUTION
    c = config
    per_layer = 0
    if c.has_mixer:
        per_layer += c.mem_size * c.d_inner
        if include_conv and c.short_conv:
            per_layer += (c.conv_size - 1) * c.d_inner
    if c.has_attention:
        kept = context_len if c.window is None else min(context_len, c.window)
        per_layer += kept * (c.num_key_heads + c.num_value_heads) * c.head_dim
    return per_layer * c.n_layers * bytes_per_element
    # END SOLUTION


# %% tags=["check"]
check("state_bytes", cache_bytes)

# %% [markdown]
# **See it** — computed with *your* `cache_bytes` once it passes: the released sizes —
# Rodimus-1.4B, Rodimus+-1.6B (window 4096 in the official convention, 2049 keys here) and a
# Transformer of the same width and depth.

# %%
models = {
    "Rodimus-1.4B": ModelConfig(block="rodimus", d_model=2048, n_layers=48),
    "Rodimus+-1.6B": ModelConfig(block="rodimus_plus", d_model=2048, n_layers=24, n_heads=16, window=4096 // 2 + 1),
    "Transformer (MHA)": ModelConfig(block="transformer", d_model=2048, n_layers=24, n_heads=16),
}
try:
    print(f"{'context':>8} " + " ".join(f"{name:>18}" for name in models))
    for context in (1_000, 4_000, 16_000, 64_000):
        row = [f"{cache_bytes(c, context) / 2**20:15.1f} MiB" for c in models.values()]   # your function
        print(f"{context:>8} " + " ".join(row))
except NotImplementedError:
    print("Solve exercise 9 first: this table uses your cache_bytes.")
