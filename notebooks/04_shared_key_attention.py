# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 — Shared-key attention (SKA) and sliding windows
#
# **What you will learn**
# - MHA, GQA, MQA and SKA as one function: they differ only in how many key and value heads the
#   query heads share — and what that does to parameters and to the decoding cache;
# - why sharing the **key** costs little: a per-head key map folds into that head's query map
#   (exactly, when the shared key is full width), while sharing the **value** (MQA/GQA) really loses heads;
# - sliding windows, drawn as a band, and the two window conventions (official Rodimus vs fla) and
#   how rodimus-lab converts both;
# - RoPE, the rotation that gives attention its positions, written out by hand.

# %%
import os

import plotly.graph_objects as go
import torch

from rodimus_lab import ModelConfig, cache_bytes, cache_elements, seed_everything, viz
from rodimus_lab.attention import attention, attention_mask, rope, window_from_fla, window_from_official
from rodimus_lab.model import Attention

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"
seed_everything(0)

# %% [markdown]
# ## 1. Four layouts, one function
# | layout | query heads | key heads | value heads |
# |---|---|---|---|
# | MHA | H | H | H |
# | GQA | H | G | G |
# | MQA | H | 1 | 1 |
# | SKA | H | 1 | H |
#
# Parameters of the projections and the cache per token, for d = 1024 and H = 8 heads of 128:

# %%
d, H = 1024, 8
layouts = {"MHA": dict(attn_layout="mha"), "GQA (G=2)": dict(attn_layout="gqa", n_kv_heads=2),
           "MQA": dict(attn_layout="mqa"), "SKA": dict(attn_layout="ska")}
configs = {name: ModelConfig(block="transformer", d_model=d, n_layers=1, n_heads=H, **kw) for name, kw in layouts.items()}
params = {name: sum(p.numel() for p in Attention(c).parameters()) for name, c in configs.items()}
cache = {name: cache_elements(c, 1) for name, c in configs.items()}     # numbers kept per token (one layer)
fig = go.Figure([go.Bar(name="parameters (millions)", x=list(params), y=[p / 1e6 for p in params.values()]),
                 go.Bar(name="cache per token (thousands of numbers)", x=list(cache), y=[c / 1e3 for c in cache.values()])])
fig.update_layout(template=viz.style.TEMPLATE, title="1 · one attention layer, d = 1024, H = 8", barmode="group")
fig

# %%
# check: SKA keeps one key head and H value heads: d_h + H·d_h numbers per token, vs 2·H·d_h for MHA
dh = d // H
assert cache["SKA"] == dh + H * dh and cache["MHA"] == 2 * H * dh and cache["MQA"] == 2 * dh
assert params["MHA"] - params["SKA"] == (H - 1) * dh * d          # only the key projection shrinks
print({name: f"{c} numbers/token" for name, c in cache.items()}, "✓")

# %% [markdown]
# ## 2. What the heads look like
# The same queries against each layout's keys and values. In MQA and SKA every head scores the *same*
# keys, yet each head still has its own query, so the maps differ. *Practise: exercise 4 (`ska_attention`).*

# %%
T, Hq, dq = (16, 4, 16) if FAST else (40, 4, 32)
window = 6
q = torch.randn(1, T, Hq, dq)
kv_heads = {"MHA": (Hq, Hq), "GQA (G=2)": (2, 2), "MQA": (1, 1), "SKA": (1, Hq)}
maps = {}
for name, (hk, hv) in kv_heads.items():
    _, maps[name] = attention(q, torch.randn(1, T, hk, dq), torch.randn(1, T, hv, dq), window=window, return_weights=True)
viz.layout_maps(maps, window=window, title=f"2 · sliding-window attention ({window} keys) per layout")

# %%
# check: each row is a distribution over exactly min(i + 1, window) keys — the last `window` positions up to i —
# and the SKA weights equal a softmax written out here with the one key head shared by every query head
for name, w in maps.items():
    assert torch.allclose(w.sum(-1), torch.ones(1, Hq, T))
    seen = torch.clamp(torch.arange(1, T + 1), max=window)
    assert torch.equal((w[0] > 0).sum(-1), seen.expand(Hq, T))
    assert (w[0].tril(-window) == 0).all()                      # nothing older than the window
q_sk, k_sk, v_sk = torch.randn(1, T, Hq, dq), torch.randn(1, T, 1, dq), torch.randn(1, T, Hq, dq)
_, w_lib = attention(q_sk, k_sk, v_sk, window=window, return_weights=True)
for h in range(Hq):
    scores = q_sk[0, :, h] @ k_sk[0, :, 0].T / dq ** 0.5
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    by_hand = scores.masked_fill((j > i) | (j <= i - window), float("-inf")).softmax(-1)
    assert torch.allclose(w_lib[0, h], by_hand, atol=1e-6)
print("every head attends to exactly its last", window, "keys (fewer at the start); SKA = the softmax by hand ✓")

# %% [markdown]
# ## 3. Folding per-head key maps into the queries
# Head h scores `(x W_Q^h)(x W_K^h)ᵀ = x (W_Q^h W_K^hᵀ) xᵀ`. Put `W̃_Q^h = W_Q^h W_K^hᵀ` and share the key
# `k = x` (full width): the scores are identical, so one shared key loses nothing. With a *narrow* shared
# key (width d_h < d) the fold is only approximate — that is the price SKA pays. (RoPE rotates q and k
# between the two maps, which is why the fold is a statement about expressiveness, not a conversion.)

# %%
d_small, Hf, dh_f, Tf = 32, 4, 8, 10
x = torch.randn(1, Tf, d_small, dtype=torch.float64)
W_Q = torch.randn(Hf, d_small, dh_f, dtype=torch.float64)
W_K = torch.randn(Hf, d_small, dh_f, dtype=torch.float64)
W_V = torch.randn(Hf, d_small, dh_f, dtype=torch.float64)
q_mha = torch.einsum("btd,hde->bthe", x, W_Q)
k_mha = torch.einsum("btd,hde->bthe", x, W_K)
v_all = torch.einsum("btd,hde->bthe", x, W_V)
scale = dh_f ** -0.5
o_mha = attention(q_mha, k_mha, v_all, scale=scale)

# SKA with a full-width shared key k = x and folded queries x (W_Q^h W_K^hᵀ)
q_folded = torch.einsum("btd,hde,hfe->bthf", x, W_Q, W_K)
o_ska = attention(q_folded, x[:, :, None, :], v_all, scale=scale)
err_full = float((o_mha - o_ska).abs().max())
err_full

# %%
# check: exact with a full-width shared key
assert err_full < 1e-10
print(f"MHA = SKA with folded queries and a full-width shared key (max diff {err_full:.1e}) ✓")

# %% [markdown]
# With a shared key of width d_h the best fold projects the key onto d_h directions. Take the top
# singular directions of the stacked `W_Q^h W_K^hᵀ` as the shared key map and measure the error:

# %%
stacked = torch.einsum("hde,hfe->hdf", W_Q, W_K)                  # [H, d, d] per-head bilinear forms
_, _, Vh = torch.linalg.svd(stacked.reshape(-1, d_small), full_matrices=False)
errors = {}
for width in (dh_f, 2 * dh_f, d_small):
    P = Vh[:width].T                                                 # shared key map d → width
    q_w = torch.einsum("btd,hdf,fw->bthw", x, stacked, P)
    o_w = attention(q_w, (x @ P)[:, :, None, :], v_all, scale=scale)
    errors[width] = float((o_mha - o_w).abs().max())
fig = go.Figure(go.Bar(x=[f"key width {w}" for w in errors], y=list(errors.values())))
fig.update_layout(template=viz.style.TEMPLATE, title="3 · fold error vs shared-key width", yaxis_type="log",
                  yaxis_title="max |o_MHA − o_SKA|")
fig

# %%
# check: the error vanishes at full width and is largest for the narrowest key
assert errors[d_small] < 1e-10 < errors[dh_f]
print(errors, "✓")

# %% [markdown]
# ## 4. Sliding windows and the two conventions
# rodimus-lab's `window` = **number of keys a query sees, itself included**. The official Rodimus code
# calls `window_size = W` a window of W//2 earlier tokens plus itself; fla's `window_size = W` is exactly W
# keys. Same number, different masks. *Practise: exercise 5 (`sliding_window_mask`).*

# %%
W, Tm = 8, 16
masks = torch.stack([attention_mask(Tm, Tm, window=window_from_official(W)),
                     attention_mask(Tm, Tm, window=window_from_fla(W))]).float()
viz.head_maps(masks, head_names=[f"official window_size={W} → {window_from_official(W)} keys",
                                 f"fla window_size={W} → {window_from_fla(W)} keys"],
              title="4 · the same W, two conventions")

# %%
# check: row i of a window-w mask sees min(i + 1, w) keys
for w in (window_from_official(W), window_from_fla(W)):
    rows = attention_mask(Tm, Tm, window=w).sum(-1)
    assert torch.equal(rows, torch.clamp(torch.arange(1, Tm + 1), max=w))
assert window_from_official(4096) == 2049                            # the released Rodimus+-1.6B
print("window_from_official(W) = W//2 + 1, window_from_fla(W) = W ✓")

# %% [markdown]
# ## 5. RoPE: positions as rotations
# Attention itself does not know where a key is. RoPE rotates q and k before the dot product: dim i and
# dim i + d/2 form a pair, rotated by the angle `p · base^(−2i/d)` at position p ("rotate-half", the layout of
# the official Rodimus and Llama code). A rotation by angle a of the query and b of the key changes their dot
# product only through a − b, so scores depend on the **distance** between tokens, not on where they sit.
# *Practise: exercise 6 (`rope`); then exercise 12 (`sw_ska_layer`) puts RoPE, the shared key and the window together.*

# %%
d_r, T_r, base = 8, 6, 10000.0
x_r = torch.randn(1, T_r, 2, d_r, dtype=torch.float64)
by_hand = torch.empty_like(x_r)
half = d_r // 2
for p in range(T_r):
    for i in range(half):
        angle = torch.tensor(p * base ** (-2 * i / d_r), dtype=torch.float64)
        first, second = x_r[:, p, :, i], x_r[:, p, :, i + half]
        by_hand[:, p, :, i] = first * angle.cos() - second * angle.sin()
        by_hand[:, p, :, i + half] = second * angle.cos() + first * angle.sin()
float((rope(x_r) - by_hand).abs().max())

# %%
# check: the library's rope is the rotation written out above; positions continue with `offset` (decoding);
# and a query–key score depends only on their distance
assert torch.allclose(rope(x_r), by_hand)
assert torch.allclose(rope(x_r[:, 3:], offset=3), by_hand[:, 3:])
q_r, k_r = torch.randn(1, 1, 1, d_r, dtype=torch.float64), torch.randn(1, 1, 1, d_r, dtype=torch.float64)
score = lambda pq, pk: float((rope(q_r, offset=pq) * rope(k_r, offset=pk)).sum())  # noqa: E731
assert abs(score(7, 4) - score(107, 104)) < 1e-9 and abs(score(7, 4) - score(7, 2)) > 1e-6
print(f"rope = rotate-half by p·base^(−2i/d); score(7, 4) = score(107, 104) = {score(7, 4):.4f} ✓")

# %% [markdown]
# ## 6. What the window buys in memory
# A Rodimus+ layer keeps its DDTS state plus one shared key and H values for the last `window` tokens, so
# its cache stops growing; a Transformer's grows forever. *Practise: exercise 9 (`state_bytes`).*

# %%
viz.memory_vs_context({
    "Transformer++ (MHA, 24 layers)": ModelConfig(block="transformer", d_model=2048, n_layers=24, n_heads=16),
    "Transformer++ (GQA G=4)": ModelConfig(block="transformer", d_model=2048, n_layers=24, n_heads=16,
                                           attn_layout="gqa", n_kv_heads=4),
    "Rodimus+ (SKA, window 2049)": ModelConfig(block="rodimus_plus", d_model=2048, n_layers=24, n_heads=16, window=2049),
    "Rodimus (48 layers)": ModelConfig(d_model=2048, n_layers=48),
})

# %%
# check: the Rodimus+ cache, counted by hand from its config — DDTS state n·m, conv buffer (K − 1)·m, and the
# window of one shared key and H values of d_h — in bf16 (2 bytes), 24 layers
plus = ModelConfig(block="rodimus_plus", d_model=2048, n_layers=24, n_heads=16, window=2049)
for context in (100, 2049, 10**6):
    per_layer = plus.mem_size * plus.d_inner + (plus.conv_size - 1) * plus.d_inner + min(context, 2049) * (1 + 16) * 128
    assert cache_bytes(plus, context) == 2 * 24 * per_layer, context
print(f"Rodimus+ cache: {cache_bytes(plus, 10**6) / 2**20:.1f} MiB at any context ≥ 2049 tokens ✓")

# %% [markdown]
# ## 7. Explore it yourself
# The four layouts side by side on one input: drag the window and the context length and watch the maps
# and the cache bytes.

# %%
from rodimus_lab.widgets import AttentionExplorer

AttentionExplorer(d_model=64, n_heads=4, n_kv_heads=2, seq_len=16 if FAST else 32, window=6)

# %% [markdown]
# **Summary.** Sharing keys is (nearly) free; sharing values is not; a window caps the cache. Rodimus+
# combines a DDTS state for the long range with sliding-window SKA for the exact short range —
# see `05_rodimus_plus`.
