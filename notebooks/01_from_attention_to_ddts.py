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
# # 01 — From softmax attention to DDTS
#
# **What you will learn**
# - how softmax attention becomes *linear attention* once the softmax is dropped, and why that gives a
#   fixed-size state `S_t` instead of a growing KV cache;
# - how a decay gate (GLA), a selective pair of gates (Mamba) and finally Rodimus' tempered selection
#   **DDTS** `(α, α̂) = (e^{−g}, g)^τ` change that state's update;
# - that every step has three equal forms — **recurrent** (a loop), **parallel** (one matrix) and
#   **chunkwise** (what trains fast) — and what the *implicit attention matrix* of each looks like;
# - the **gate family** that unifies GLA, Mamba, Mamba2, HGRN2, RetNet and DDTS in one update rule.
#
# Every equation runs through `rodimus_lab.ddts` / `rodimus_lab.attention`; each check cell compares the library
# with a few lines of from-scratch arithmetic written here (the loop `by_hand` below is the definition).
# Read beside `docs/architecture.md` and the paper's §2–3.

# %%
import os

import torch
import torch.nn.functional as F

from rodimus_lab import ModelConfig, RodimusLM, seed_everything, viz
from rodimus_lab.attention import attention
from rodimus_lab.ddts import ddts_chunkwise, ddts_gates, ddts_parallel, ddts_recurrent, effective_key

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"   # CI runs the fast mode; the full mode only draws longer sequences
seed_everything(0)
T, n, m = (16, 8, 4) if FAST else (48, 16, 8)   # tokens, key/state dim, value dim
q = torch.randn(1, T, 1, n, dtype=torch.float64)
k = torch.randn(1, T, 1, n, dtype=torch.float64)
v = torch.randn(1, T, 1, m, dtype=torch.float64)
tokens = [f"x{t}" for t in range(T)]


def by_hand(q, k, v, log_alpha):
    """The definition, written out for one sequence and one head: S_t = diag(α_t) S_{t−1} + k_tᵀ v_t,
    o_t = q_t S_t / √n. Independent of the library: the check cells compare every library form with it."""
    S = torch.zeros(q.shape[-1], v.shape[-1], dtype=v.dtype)
    outputs = []
    for t in range(q.shape[1]):
        S = log_alpha[0, t, 0].exp()[:, None] * S + torch.outer(k[0, t, 0], v[0, t, 0])
        outputs.append(q[0, t, 0] @ S / q.shape[-1] ** 0.5)
    return torch.stack(outputs)[None, :, None]


def three_forms(q, k, v, log_alpha):
    """Run the library's recurrent, parallel and chunkwise forms; return their outputs and the implicit attention."""
    o_rec, _ = ddts_recurrent(q, k, v, log_alpha)
    o_par, attn = ddts_parallel(q, k, v, log_alpha)
    o_chunk, _ = ddts_chunkwise(q, k, v, log_alpha, chunk_size=5)   # 5 does not divide T: on purpose
    return o_rec, o_par, o_chunk, attn[0, 0]


def all_match(reference, *outputs):
    return all(torch.allclose(o, reference) for o in outputs)


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
# check: recurrent = parallel = chunkwise = the loop by_hand, and the implicit matrix is just the masked QKᵀ/√n
o_loop = by_hand(q, k, v, no_decay)
assert all_match(o_loop, o_rec, o_par, o_chunk)
assert torch.allclose(implicit, scores.tril())
print(f"linear attention: three library forms = the loop (max diff {float((o_loop - o_chunk).abs().max()):.1e}) ✓")

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
# check: the forms equal the loop, and A_ij equals q_i·(k_j ⊙ Π α) computed by hand for one entry
assert all_match(by_hand(q, k, v, gla_log_alpha), o_rec, o_par, o_chunk)
i, j = T - 1, T // 2
entry = (q[0, i, 0] * k[0, j, 0] * gla_log_alpha[0, j + 1:i + 1, 0].sum(0).exp()).sum() / n ** 0.5
assert torch.allclose(implicit_gla[i, j], entry)
print("GLA: three forms agree; A_ij = q_i·(k_j ⊙ Π_{s=j+1..i} α_s)/√n ✓")

# %% [markdown]
# ## 4. Selection (Mamba): forget and write move together
# Mamba discretises a continuous system with a step `Δ_t > 0` computed from each token **per channel**
# (`Δ = softplus(x W_Δ + b)`) and a learned negative `A`: decay `α = e^{Δ A}`, input gate `Δ B` (zero-order hold,
# simplified as in the Mamba paper). With `A = −1` the pair is `(α, α̂) = (e^{−Δ}, Δ)`: a token with large Δ
# **forgets** the old state *and* **writes** itself strongly; small Δ keeps the state and barely writes.
# DDTS with temperature τ = 1 is exactly this pair, with `g` (one per token and state dim) in the role of Δ:
# `(α, α̂) = (e^{−g}, g)`.

# %%
g_logits = torch.randn(1, T, 1, n, dtype=torch.float64) - 1.0
tau_one = torch.full_like(g_logits, 40.0)                  # sigmoid(40) = 1 in float64: τ = 1
log_alpha_sel, alpha_hat_sel = ddts_gates(g_logits, tau_one)
o_rec, o_par, o_chunk, implicit_sel = three_forms(q, alpha_hat_sel * k, v, log_alpha_sel)
viz.attention_matrix(implicit_sel, tokens, title="4 · selection (τ = 1): implicit attention")

# %%
# check: with τ = 1 the pair is Mamba's (e^{ΔA}, Δ) with A = −1 and Δ = softplus(g_logits) (written out here:
# log(1 + e^x)); the forms equal the loop
delta = torch.log1p(g_logits.exp())
assert torch.allclose(log_alpha_sel, -delta) and torch.allclose(alpha_hat_sel, delta)
assert all_match(by_hand(q, alpha_hat_sel * k, v, log_alpha_sel), o_rec, o_par, o_chunk)
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
    gap = float((ah - (1 - la.exp())).abs().max().detach())       # HGRN2 would have α̂ = 1 − α exactly
    assert gap > 0.1, f"τ = {tau}: α̂ is within {gap:.3f} of 1 − α"
print("DDTS gates are always negatively correlated: ∂α/∂g < 0 < ∂α̂/∂g, and α̂ is not 1 − α ✓")

# %%
tau_logits = torch.randn(1, T, 1, n, dtype=torch.float64)
log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
k_eff = effective_key(k, alpha_hat)   # α̂ ⊙ k/‖k‖: the key Rodimus writes
o_rec, o_par, o_chunk, implicit_ddts = three_forms(q, k_eff, v, log_alpha)
viz.attention_matrix(implicit_ddts, tokens, title="5 · DDTS: implicit attention")

# %%
# check: the forms equal the loop; the gates are (e^{−g}, g)^τ with g = log(1 + e^x), τ = 1/(1 + e^{−x}) written out
assert all_match(by_hand(q, k_eff, v, log_alpha), o_rec, o_par, o_chunk)
g, tau = torch.log1p(g_logits.exp()), 1 / (1 + (-tau_logits).exp())
assert torch.allclose(log_alpha, -tau * g)
assert torch.allclose(alpha_hat, g ** tau)
print("DDTS: three forms equal the loop; gates = (e^{−g}, g)^τ ✓")

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
# check: the probed DDTS inputs, run through the loop by_hand, give what the layer's implicit attention reads
x = {key: t[None, :, None].double() for key, t in result.ddts_inputs[0].items()}
o_model = by_hand(x["q"], x["k"], x["v"], x["log_alpha"])
assert torch.allclose(result.implicit_attention(0).double() @ x["v"][0, :, 0], o_model[0, :, 0], atol=1e-5)
viz.attention_matrix(result.implicit_attention(0), result.tokens, title="6 · implicit attention of the model's layer")

# %% [markdown]
# ## 7. The gate family
# Every model above — and every ablation `ModelConfig.gate` offers — updates the same n × m state. With
# row-side gates α_t, α̂_t ∈ R^n (one per key/state dim) and column-side gates β_t, β̂_t ∈ R^m (one per value dim):
#
# $$S_t = (\alpha_t^\top \beta_t) \odot S_{t-1} + (\hat\alpha_t^\top \hat\beta_t) \odot (k_t^\top v_t)$$
#
# | model | `ModelConfig.gate` | α_t (keep) | α̂_t (write) | β_t | β̂_t |
# |---|---|---|---|---|---|
# | linear attention | `no_decay` | 1 | 1 | 1 | 1 |
# | RetNet | `retnet` | γ, fixed per dim (not data-dependent) | 1 | 1 | 1 |
# | GLA | `no_alpha_hat` | data-dependent, per dim | 1 | 1 | 1 |
# | Mamba (A = −1) | `no_tau` | e^{−Δ}, Δ per token and dim | Δ | 1 | 1 |
# | Mamba2 | `mamba2` | e^{−τg}, **one scalar per head** | g^τ | 1 | 1 |
# | HGRN2 | `hgrn2` | data-dependent, per dim | **1 − α** | 1 | 1 |
# | DDTS (Rodimus) | `ddts` | e^{−τg} | g^τ | 1 | β̂ = σ(x′W₁W₂ + b) |
#
# In this library every variant keeps Rodimus' low-rank value gate β̂ (the value is v = β̂ ⊙ x′, see `05`),
# so a `gate=` ablation changes the α column pair only; β = 1 everywhere. Below, one untrained layer per
# variant on the same tokens, with the gate weights redrawn at std 1 (not the small initial ones) so that the
# points spread over the plane; the checks say in arithmetic what the table says in words.

# %%
family = {"linear attention": "no_decay", "RetNet": "retnet", "GLA": "no_alpha_hat", "Mamba (τ = 1)": "no_tau",
          "Mamba2": "mamba2", "HGRN2": "hgrn2", "DDTS": "ddts"}
family_gates = {}
for name, gate in family.items():
    seed_everything(1)
    layer_model = RodimusLM(ModelConfig(vocab_size=64, d_model=64, n_layers=1, mem_size=n, gate=gate)).eval()
    gate_proj = getattr(layer_model.layers[0].mixer, "mem_gate_proj", None)
    if gate_proj is not None:
        with torch.no_grad():
            gate_proj.weight.normal_(0.0, 1.0)
    family_gates[name] = viz.probe(layer_model, ids).gates[0]
viz.gate_family({name: g for name, g in family_gates.items() if name != "linear attention"})

# %%
# check: each row of the table, in arithmetic on the probed gates
alpha = {name: g["log_alpha"].exp() for name, g in family_gates.items()}
write = {name: g["alpha_hat"] for name, g in family_gates.items()}
assert (alpha["linear attention"] == 1).all() and (write["linear attention"] == 1).all()
for name in ("RetNet", "GLA"):
    assert (write[name] == 1).all(), f"{name} writes with α̂ = 1"
assert torch.equal(alpha["RetNet"], alpha["RetNet"][:1].expand_as(alpha["RetNet"]))      # the same α at every token
assert alpha["GLA"].std(0).min() > 0                                                      # data-dependent decay
assert torch.allclose(write["Mamba (τ = 1)"], -family_gates["Mamba (τ = 1)"]["log_alpha"])   # α̂ = Δ, α = e^{−Δ}
mamba2 = alpha["Mamba2"]
assert torch.equal(mamba2, mamba2[:, :1].expand_as(mamba2)) and mamba2.std(0).max() > 0   # one decay per token
assert torch.allclose(write["HGRN2"], 1 - alpha["HGRN2"], atol=1e-6)                      # α̂ = 1 − α
assert (write["DDTS"] - (1 - alpha["DDTS"])).abs().max() > 0.1                            # DDTS is not HGRN2...
forget = -family_gates["DDTS"]["log_alpha"]                                              # −ln α = τg
assert (write["DDTS"] - forget).abs().max() > 0.1                                       # ...nor τ = 1
tau = family_gates["DDTS"]["tau"]
assert torch.allclose(write["DDTS"], (forget / tau) ** tau, rtol=1e-4)                   # but α̂ = (−ln α / τ)^τ
print("the gate family: every row of the table holds; DDTS sits on none of the coupled curves ✓")

# %% [markdown]
# **Summary.** Softmax attention → linear attention (a state instead of a cache) → a decay (GLA) →
# selection (Mamba) → tempered selection (DDTS). Each step kept the three forms equal to the loop written
# here; the implicit attention matrix shows what each state remembers, and one update rule holds the whole
# gate family. Practise it: exercises 1–3 (`exercises/01_ddts_recurrence`: gates, one step, the loop) and 10–11
# (`exercises/04_ddts_parallel_chunkwise`: the implicit matrix, the chunk hand-over). Next: `02_ddts_gate_selection` trains a model and
# looks at which tokens it writes and keeps.
