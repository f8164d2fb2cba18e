# %% [markdown]
# # Whole layers from their parts
#
# The earlier exercises built one equation at a time. Here you put them together, the way a layer of
# the model runs them: sliding-window shared-key attention with RoPE in one function, then the whole
# Rodimus mixer from nothing but its parameters. Nothing new is introduced — but every piece must be
# in the right place, in the right order. Read beside notebook `05_rodimus_plus` ("the Rodimus flow
# by hand") and `04_shared_key_attention` (RoPE, windows).

# %%
import torch
import torch.nn.functional as F

from rodimus_lab.exercises import check

# %% [markdown]
# ## Exercise 12 · `sw_ska_layer` — SW-SKA with RoPE, all at once (≈ 25 min)
#
# A Rodimus+ layer's attention: `H` query heads, **one** shared key head, `H` value heads, a causal
# sliding window of `window` keys (itself included), and RoPE on the queries and the key.
#
# Given `q [B, T, H, d]`, the **un-rotated** shared key `k [B, T, 1, d]`, `v [B, T, H, d]`, `window`
# and `offset` (token t sits at position `offset + t`), return `o [B, T, H, d]`:
#
# 1. RoPE (rotate-half): dims i and i + d/2 form a pair rotated by the angle `p · 10000^(−2i/d)` at
#    position p — on q and on k;
# 2. scores `⟨q_i^h, k_j⟩ · d^(−1/2)`, the one key head shared by every query head;
# 3. query i sees key j iff `i − window < j ≤ i` (−inf elsewhere), softmax over j;
# 4. head h mixes value head h.
#
# You may reuse your `rope` and `sliding_window_mask` from notebook 02 — or write everything here.
# **Predict before you test:** does `o` change when `offset` changes (same q, k, v)? Check your answer
# with your function once it passes — and explain it with what notebook `04` showed about RoPE scores.

# %%
def sw_ska_layer(q, k, v, window, offset=0):
    """Sliding-window shared-key attention with RoPE."""
    # BEGIN SOLUTION
    T, d = q.shape[1], q.shape[-1]
    half = d // 2
    positions = torch.arange(offset, offset + T, dtype=torch.float64)
    angles = positions[:, None] * 10000.0 ** (-2 * torch.arange(half, dtype=torch.float64) / d)
    cos = torch.cat([angles.cos(), angles.cos()], -1).to(q.dtype)[None, :, None]
    sin = torch.cat([angles.sin(), angles.sin()], -1).to(q.dtype)[None, :, None]

    def rotate(x):
        x1, x2 = x[..., :half], x[..., half:]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    scores = torch.einsum("bihd,bjd->bhij", rotate(q), rotate(k)[:, :, 0]) * d ** -0.5
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    visible = (j <= i) & (j > i - window)
    weights = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
    return torch.einsum("bhij,bjhd->bihd", weights, v)
    # END SOLUTION


# %% tags=["check"]
check("sw_ska_layer", sw_ska_layer)

# %% [markdown]
# ## Exercise 13 · `rodimus_mixer` — the whole Rodimus mixer from its parameters (≈ 40 min)
#
# `mixer` is a `rodimus_lab.model.RodimusMixer` (DDTS gates, short conv, key norm). The checker
# switches its own methods off — `mixer(x)` raises — so you compute the forward pass from its
# parameters. `x [B, T, d]` is the (already normed) stream; `m = mixer.config.d_inner`,
# `n = mixer.config.mem_size`, `K = mixer.config.conv_size`. Return `y [B, T, d]`:
#
# 1. `[x′, z] = x W_fcᵀ` — `mixer.fc.weight`, the first m outputs are x′;
# 2. `x̃ = SiLU(conv(x′))` — causal depthwise, `mixer.short_conv.conv1d.weight [m, 1, K]` and `.bias`;
#    the **last** tap multiplies the newest token (exercise 7);
# 3. `[q, k] = x̃ W_inᵀ` (`mixer.in_proj`, n each); `[g logits, τ logits] = x̃ W_gateᵀ + b`
#    (`mixer.mem_gate_proj`); `g = softplus`, `τ = sigmoid`; `log α = −τg`, `α̂ = g^τ` (exercise 1);
# 4. the value `v = σ(x′ W₁ᵀ W₂ᵀ + b₂) ⊙ x′` — `mixer.ch_gate_proj` is `[Linear(m → ℓ), Linear(ℓ → m)]`,
#    on the **pre-conv** branch;
# 5. DDTS (exercise 3) on `q`, the key `α̂ ⊙ k/‖k‖`, `v`, `log α` — one head, scale n^(−1/2) — then
#    the skip `o + d ⊙ x̃` with `d = mixer.residual_weight`;
# 6. `y = RMSNorm(o ⊙ SiLU(z)) W_outᵀ` — RMSNorm with `mixer.act_norm.weight` and `mixer.config.norm_eps`.

# %%
def rodimus_mixer(mixer, x):
    """The Rodimus mixer's forward pass, from its parameters."""
    # BEGIN SOLUTION
    c = mixer.config
    m, n, K = c.d_inner, c.mem_size, c.conv_size
    B, T, _ = x.shape
    x_pre, z = (x @ mixer.fc.weight.T).split(m, dim=-1)
    weight, bias = mixer.short_conv.conv1d.weight[:, 0], mixer.short_conv.conv1d.bias
    padded = torch.cat([x.new_zeros(B, K - 1, m), x_pre], dim=1)
    x_conv = F.silu(sum(padded[:, i:i + T] * weight[:, i] for i in range(K)) + bias)
    q, k = (x_conv @ mixer.in_proj.weight.T).split(n, dim=-1)
    g_logits, tau_logits = (x_conv @ mixer.mem_gate_proj.weight.T + mixer.mem_gate_proj.bias).split(n, dim=-1)
    g, tau = F.softplus(g_logits), torch.sigmoid(tau_logits)
    k = g ** tau * k / k.norm(dim=-1, keepdim=True)
    low, up = mixer.ch_gate_proj
    v = torch.sigmoid(x_pre @ low.weight.T @ up.weight.T + up.bias) * x_pre
    S, outputs = x.new_zeros(B, n, m), []
    for t in range(T):
        S = torch.exp(-tau[:, t] * g[:, t])[..., None] * S + k[:, t, :, None] * v[:, t, None, :]
        outputs.append(torch.einsum("bn,bnm->bm", q[:, t], S) * n ** -0.5)
    o = torch.stack(outputs, dim=1) + mixer.residual_weight * x_conv
    h = o * F.silu(z)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + c.norm_eps) * mixer.act_norm.weight
    return h @ mixer.out_proj.weight.T
    # END SOLUTION


# %% tags=["check"]
check("rodimus_mixer", rodimus_mixer)

# %% [markdown]
# **Now you have all of it.** Exercise 13 plus exercises 7–8 (short conv, two-hop wiring) and 12 are a
# whole Rodimus+ layer; the library's `RodimusLM` only adds embeddings, norms and the LM head.
