# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 — From softmax attention to DDTS
#
# **What you will learn**
# - how softmax attention becomes *linear attention* once the softmax is dropped, and why that gives a
#   fixed-size state `S_t` instead of a growing KV cache;
# - how a decay gate (GLA), a selective pair of gates (Mamba) and finally Rodimus' tempered selection
#   **DDTS** `(α, α̂) = (e^{−g}, g)^τ` change that state's update;
# - that every step has three equal forms — **recurrent** (a loop), **parallel** (one matrix) and
#   **chunkwise** (what trains fast) — and what the *implicit attention matrix* of each looks like.
#
# Every equation runs through `rodimus_lab.ddts` / `rodimus_lab.attention`; this notebook only checks and draws.
# Read beside `docs/architecture.md` and the paper's §2–3.

# %%
import os

import torch
import torch.nn.functional as F

from rodimus_lab import ModelConfig, RodimusLM, seed_everything, viz
from rodimus_lab.attention import attention
from rodimus_lab.ddts import ddts_chunkwise, ddts_gates, ddts_parallel, ddts_recurrent

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"   # CI runs the fast mode; the full mode only draws longer sequences
seed_everything(0)
T, n, m = (16, 8, 4) if FAST else (48, 16, 8)   # tokens, key/state dim, value dim
q = torch.randn(1, T, 1, n, dtype=torch.float64)
k = torch.randn(1, T, 1, n, dtype=torch.float64)
v = torch.randn(1, T, 1, m, dtype=torch.float64)
tokens = [f"x{t}" for t in range(T)]


def three_forms(q, k, v, log_alpha):
    """Run the recurrent, parallel and chunkwise forms; return their outputs and the implicit attention."""
    o_rec, _ = ddts_recurrent(q, k, v, log_alpha)
    o_par, attn = ddts_parallel(q, k, v, log_alpha)
    o_chunk, _ = ddts_chunkwise(q, k, v, log_alpha, chunk_size=5)   # 5 does not divide T: on purpose
    return o_rec, o_par, o_chunk, attn[0, 0]


# %% [markdown]
# ## 1. Softmax attention
# `o_i = Σ_{j ≤ i} softmax_j(q_i·k_j / √n) v_j`. Every output looks at every earlier key, so a decoder
# must keep all of them: the KV cache grows with the context.

# %%
o_soft, weights = attention(q, k, v, return_weights=True)
viz.attention_matrix(weights[0, 0], tokens, title="1 · softmax attention weights")

# %%
# check: the library's attention is the textbook formula
scores = (q[0, :, 0] @ k[0, :, 0].T) / n ** 0.5
manual = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
assert torch.allclose(weights[0, 0], manual)
assert torch.allclose(o_soft[0, :, 0], manual @ v[0, :, 0])
print("softmax attention = softmax(QKᵀ/√n + causal mask) V ✓")

# %% [markdown]
# ## 2. Linear attention: drop the softmax
# Without the softmax, `o_i = Σ_{j ≤ i} (q_i·k_j) v_j / √n = q_i (Σ_{j ≤ i} k_jᵀ v_j) / √n = q_i S_i / √n`.
# The sum is a **state** `S_t = S_{t−1} + k_tᵀ v_t` of fixed size n × m. In DDTS terms: no decay,
# `log α = 0`.

# %%
no_decay = torch.zeros(1, T, 1, n, dtype=torch.float64)
o_rec, o_par, o_chunk, implicit = three_forms(q, k, v, no_decay)
viz.attention_matrix(implicit, tokens, title="2 · linear attention: implicit attention (q·k)/√n, no decay")

# %%
# check: recurrent = parallel = chunkwise, and the implicit matrix is just the masked QKᵀ/√n
assert torch.allclose(o_rec, o_par) and torch.allclose(o_rec, o_chunk)
assert torch.allclose(implicit, (scores).tril())
print(f"linear attention: three forms agree (max diff {float((o_rec - o_chunk).abs().max()):.1e}) ✓")

# %% [markdown]
# ## 3. Gated linear attention (GLA): a data-dependent decay
# `S_t = diag(α_t) S_{t−1} + k_tᵀ v_t` with `α_t ∈ (0, 1)^n` computed from the token. Old tokens fade:
# the implicit attention becomes `A_ij = q_i · (k_j ⊙ Π_{s=j+1..i} α_s) / √n` — weights shrink away from
# the diagonal, at a rate each token chooses.

# %%
gla_log_alpha = F.logsigmoid(torch.randn(1, T, 1, n, dtype=torch.float64) + 2.0)
o_rec, o_par, o_chunk, implicit_gla = three_forms(q, k, v, gla_log_alpha)
viz.attention_matrix(implicit_gla, tokens, title="3 · GLA: implicit attention with a data-dependent decay")

# %%
# check: the forms agree, and A_ij equals q_i·(k_j ⊙ Π α) computed by hand for one entry
assert torch.allclose(o_rec, o_par) and torch.allclose(o_rec, o_chunk)
i, j = T - 1, T // 2
by_hand = (q[0, i, 0] * k[0, j, 0] * gla_log_alpha[0, j + 1:i + 1, 0].sum(0).exp()).sum() / n ** 0.5
assert torch.allclose(implicit_gla[i, j], by_hand)
print("GLA: three forms agree; A_ij = q_i·(k_j ⊙ Π_{s=j+1..i} α_s)/√n ✓")

# %% [markdown]
# ## 4. Selection (Mamba): forget and write move together
# Mamba discretises with one step size `Δ > 0` per token: decay `α = e^{−Δ}` and input gate `α̂ = Δ`.
# A token with large Δ **forgets** the old state *and* **writes** itself strongly; small Δ keeps the state
# and barely writes. In DDTS this is the temperature τ = 1: `(α, α̂) = (e^{−g}, g)`.

# %%
g_logits = torch.randn(1, T, 1, n, dtype=torch.float64) - 1.0
tau_one = torch.full_like(g_logits, 40.0)                  # sigmoid(40) = 1 in float64: τ = 1
log_alpha_sel, alpha_hat_sel = ddts_gates(g_logits, tau_one)
o_rec, o_par, o_chunk, implicit_sel = three_forms(q, alpha_hat_sel * k, v, log_alpha_sel)
viz.attention_matrix(implicit_sel, tokens, title="4 · selection (τ = 1): implicit attention")

# %%
# check: with τ = 1 the pair is Mamba's (e^{−Δ}, Δ) with Δ = softplus(g_logits); the forms agree
delta = F.softplus(g_logits)
assert torch.allclose(log_alpha_sel, -delta) and torch.allclose(alpha_hat_sel, delta)
assert torch.allclose(o_rec, o_par) and torch.allclose(o_rec, o_chunk)
print("selection: (α, α̂) = (e^{−Δ}, Δ) and three forms agree ✓")

# %% [markdown]
# ## 5. DDTS: tempered selection
# Rodimus adds a temperature `τ = sigmoid(·) ∈ (0, 1)` per token and state dim:
# `(α, α̂) = (e^{−g}, g)^τ`, i.e. `α = e^{−τg}`, `α̂ = g^τ`. The key that enters the state is
# `α̂ ⊙ k / ‖k‖`. Lower τ flattens both curves: the token forgets less *and* writes more evenly.

# %%
viz.selection_curves()

# %%
# check: for every g > 0 and τ, ∂α/∂g < 0 < ∂α̂/∂g (selection), α ∈ (0, 1], and α̂ ≠ 1 − α
g_check = torch.logspace(-3, 1, 50, dtype=torch.float64).requires_grad_()
for tau in (0.1, 0.5, 0.9):
    g_logit = g_check + torch.log(-torch.expm1(-g_check))           # softplus⁻¹
    la, ah = ddts_gates(g_logit, torch.full_like(g_check, torch.logit(torch.tensor(tau)).item()))
    d_alpha, = torch.autograd.grad(la.exp().sum(), g_check, retain_graph=True)
    d_alpha_hat, = torch.autograd.grad(ah.sum(), g_check)
    assert (d_alpha < 0).all() and (d_alpha_hat > 0).all()
    assert ((la.exp() > 0) & (la.exp() <= 1)).all()
print("DDTS gates are always negatively correlated: ∂α/∂g < 0 < ∂α̂/∂g ✓")

# %%
tau_logits = torch.randn(1, T, 1, n, dtype=torch.float64)
log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
k_eff = alpha_hat * F.normalize(k, dim=-1)
o_rec, o_par, o_chunk, implicit_ddts = three_forms(q, k_eff, v, log_alpha)
viz.attention_matrix(implicit_ddts, tokens, title="5 · DDTS: implicit attention")

# %%
# check: the forms agree; the gates are the ones of the notes' equations
assert torch.allclose(o_rec, o_par) and torch.allclose(o_rec, o_chunk)
tau = torch.sigmoid(tau_logits)
assert torch.allclose(log_alpha, -tau * F.softplus(g_logits))
assert torch.allclose(alpha_hat, F.softplus(g_logits) ** tau)
print("DDTS: three forms agree ✓")

# %% [markdown]
# ## 6. The same thing inside a model
# A Rodimus layer computes exactly these DDTS inputs from its tokens. `viz.probe` reads them through
# the model's taps (forward hooks; nothing in the model changes) and draws the gates per token.

# %%
model = RodimusLM(ModelConfig(vocab_size=64, d_model=64, n_layers=1, mem_size=n)).eval()
ids = torch.randint(0, 64, (T,))
result = viz.probe(model, ids)
viz.gate_heatmaps(result.gates[0], tokens=result.tokens, title="6 · the gates of an (untrained) Rodimus layer")

# %%
# check: the probed inputs, run through the parallel form, give the same DDTS output as the chunkwise
# form the model uses; its implicit attention is what the model reads
x = {key: t[None, :, None].double() for key, t in result.ddts_inputs[0].items()}
o_model, _ = ddts_chunkwise(x["q"], x["k"], x["v"], x["log_alpha"])
assert torch.allclose(result.implicit_attention(0).double() @ x["v"][0, :, 0], o_model[0, :, 0], atol=1e-5)
viz.attention_matrix(result.implicit_attention(0), result.tokens, title="6 · implicit attention of the model's layer")

# %% [markdown]
# **Summary.** Softmax attention → linear attention (a state instead of a cache) → a decay (GLA) →
# selection (Mamba) → tempered selection (DDTS). Each step kept the three forms equal; the implicit
# attention matrix shows what each state remembers. Next: `02_ddts_gate_selection` trains a model and
# looks at which tokens it writes and keeps.
