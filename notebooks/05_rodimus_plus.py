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
# # 05 — Rodimus+: the hybrid layer and its two-hop residual
#
# **What you will learn**
# - how a Rodimus+ layer stacks a Rodimus flow (DDTS: long-range, fixed-size state) and sliding-window
#   shared-key attention (SW-SKA: exact, short range) with a SwiGLU FFN;
# - every line of the Rodimus flow, recomputed by hand from the module's own parameters, and how it is
#   initialised (why the decay α starts near 1);
# - the **two-hop residual** `Z = Y + FFN(RMSNorm(Y + SW_SKA(RMSNorm(Y))))`: the attention output
#   reaches the residual stream only *through* the FFN — and how that differs from an ordinary residual;
# - how to read each part of the layer with `viz.probe` (gates of the flow, attention maps of SW-SKA).

# %%
import os

import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from rodimus_lab import ModelConfig, RodimusLM, seed_everything, viz
from rodimus_lab.data.mqar import make_mqar_splits, mqar_preset
from rodimus_lab.train import Trainer, TrainConfig

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"
if FAST:
    torch.set_num_threads(1)   # tiny models gain nothing from threads; on a shared CI CPU they cost
seed_everything(0)
config = ModelConfig(vocab_size=128, d_model=128, n_layers=2, block="rodimus_plus", mem_size=16, n_heads=2, window=8)
one_hop = ModelConfig(**{**config.to_dict(), "two_hop": False})

# %% [markdown]
# ## 1. The layer, drawn from its config
# Every size on the drawing comes from `config`: change a field and draw again.

# %%
viz.block_diagram(config)

# %%
viz.block_diagram(one_hop, detail=False, title="for comparison: an ordinary (one-hop) residual")

# %% [markdown]
# ## 2. The Rodimus flow by hand
# The mixer of layer 0, one line per equation of the drawing, from the module's own parameters — no call into
# the library except reading weights. `x` is the normed stream; `m = d_inner`, `n = mem_size`.
#
# 1. `[x′, z] = x W_fc` — two branches of width m;
# 2. `x̃ = SiLU(conv(x′))` — a causal depthwise convolution over the last K tokens (PyTorch's Conv1d is a
#    cross-correlation: the last tap multiplies the newest token);
# 3. `q, k = x̃ W_q, x̃ W_k` (n each); `g = softplus(x̃ W_g + b_g)`, `τ = σ(x̃ W_τ + b_τ)`; `α = e^{−τg}`, `α̂ = g^τ`;
# 4. `v = β̂ ⊙ x′` with the low-rank value gate `β̂ = σ(x′ W₁ W₂ + b)` — on the **pre-conv** branch;
# 5. DDTS with the key `α̂ ⊙ k/‖k‖`; then the skip `+ d ⊙ x̃` (d = `residual_weight`);
# 6. `y = RMSNorm(o ⊙ SiLU(z)) W_out`.
#
# *Practise: exercise 7 (`short_conv_step`), then exercise 13 (`rodimus_mixer`): these six lines from scratch.*

# %%
model = RodimusLM(config).eval()
layer = model.layers[0]
mixer = layer.mixer
X = torch.randn(1, 12, config.d_model)
x = layer.mixer_norm(X).detach()
B, T, m, n, K = *x.shape[:2], config.d_inner, config.mem_size, config.conv_size
with torch.no_grad():
    x_pre, z = (x @ mixer.fc.weight.T).split(m, dim=-1)                                    # 1
    w_conv, b_conv = mixer.short_conv.conv1d.weight[:, 0], mixer.short_conv.conv1d.bias     # [m, K], [m]
    padded = torch.cat([torch.zeros(B, K - 1, m), x_pre], dim=1)                           # K − 1 zeros before token 0
    conv = sum(padded[:, i:i + T] * w_conv[:, i] for i in range(K)) + b_conv               # 2
    x_conv = conv * torch.sigmoid(conv)
    q, k = (x_conv @ mixer.in_proj.weight.T).split(n, dim=-1)                               # 3
    g_logits, tau_logits = (x_conv @ mixer.mem_gate_proj.weight.T + mixer.mem_gate_proj.bias).split(n, dim=-1)
    g, tau = torch.log1p(g_logits.exp()), torch.sigmoid(tau_logits)
    log_alpha, alpha_hat = -tau * g, g ** tau
    W1, W2 = mixer.ch_gate_proj[0].weight, mixer.ch_gate_proj[1]                            # 4
    v = torch.sigmoid(x_pre @ W1.T @ W2.weight.T + W2.bias) * x_pre
    k_in = alpha_hat * k / k.norm(dim=-1, keepdim=True)                                     # 5
    S, outputs = torch.zeros(B, n, m), []
    for t in range(T):
        S = log_alpha[:, t, :, None].exp() * S + k_in[:, t, :, None] * v[:, t, None, :]
        outputs.append(torch.einsum("bn,bnm->bm", q[:, t], S) / n ** 0.5)
    o = torch.stack(outputs, dim=1) + mixer.residual_weight * x_conv
    h = o * F.silu(z)                                                                       # 6
    y_by_hand = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + config.norm_eps) * mixer.act_norm.weight) @ mixer.out_proj.weight.T
    y_module = mixer(x)
float((y_by_hand - y_module).abs().max())

# %%
# check: the module computes exactly these six lines
assert torch.allclose(y_by_hand, y_module, atol=1e-5, rtol=1e-4)
print("RodimusMixer = the six lines above, from its own parameters ✓")

# %% [markdown]
# ### The initialisation: why α starts near 1
# The gate projection starts with small weights (Xavier, gain 2^−2.5), so at first the gates are set by its
# **biases**: `b_g = softplus⁻¹(g₀)` with g₀ log-uniform in [10⁻³, 0.1], and `b_τ = logit(τ₀)` with τ₀ uniform in
# [1/16, 0.9]. So a fresh layer has `α ≈ e^{−τ₀g₀} ≥ e^{−0.09} ≈ 0.91` (up to what the small weights add) — it
# keeps almost everything, and a write survives from a few tokens to thousands (half-life ln 2 / (τg)). A decay far below 1 at the start would erase
# the state within a few tokens, and with it the gradient signal that could teach the model to keep it. The same
# idea as Mamba's initial step Δ ∈ [10⁻³, 0.1].

# %%
fresh = [RodimusLM(ModelConfig(**{**config.to_dict(), "n_layers": 1})).eval() for _ in range(8)]
init_gates = [viz.probe(f, torch.randint(0, config.vocab_size, (64,))).gates[0] for f in fresh]
alpha0 = torch.cat([gt["log_alpha"].exp().flatten() for gt in init_gates])
alpha_hat0 = torch.cat([gt["alpha_hat"].flatten() for gt in init_gates])
half_life = torch.log(torch.tensor(2.0)) / -torch.cat([gt["log_alpha"].flatten() for gt in init_gates])
fig = go.Figure([go.Histogram(x=alpha0.numpy(), name="α (keep)", nbinsx=60),
                 go.Histogram(x=alpha_hat0.numpy(), name="α̂ (write)", nbinsx=60)])
fig.update_layout(template=viz.style.TEMPLATE, barmode="overlay", title="2 · gates of 8 freshly initialised layers "
                  "on 64 random tokens", xaxis_title="gate value", yaxis_title="count")
fig.update_traces(opacity=0.6)
fig

# %%
# check: the biases are in the documented ranges, and the gates they set keep α ≥ e^{−0.09·(1 + slack)}
bias = fresh[0].layers[0].mixer.mem_gate_proj.bias.detach()
g0, tau0 = F.softplus(bias[:n]), torch.sigmoid(bias[n:])
assert (g0 >= 1e-3 - 1e-6).all() and (g0 <= 0.1 + 1e-6).all() and (tau0 >= 1 / 16 - 1e-6).all() and (tau0 <= 0.9 + 1e-6).all()
assert alpha0.min() > 0.85 and alpha0.max() < 1
print(f"initial α in [{float(alpha0.min()):.4f}, {float(alpha0.max()):.6f}]; median half-life "
      f"{float(half_life.median()):.0f} tokens; initial α̂ in [{float(alpha_hat0.min()):.3f}, {float(alpha_hat0.max()):.3f}] ✓")

# %% [markdown]
# ## 3. The wiring as code
# `Layer.forward` in `rodimus_lab/model.py` spells the residuals out. Recompute them by hand from the
# layer's own sub-modules and compare. *Practise: exercise 8 (`two_hop_residual`).*

# %%
with torch.no_grad():
    Y = X + layer.mixer(layer.mixer_norm(X))
    A = layer.attn(layer.attn_norm(Y))
    Z_two_hop = Y + layer.ffn(layer.ffn_norm(Y + A))          # attention only inside the FFN's input
    Z_ordinary = (Y + A) + layer.ffn(layer.ffn_norm(Y + A))   # attention also added to the stream
    Z_layer = layer(X)
float((Z_layer - Z_two_hop).abs().max()), float((Z_two_hop - Z_ordinary).abs().max())

# %%
# check: the layer computes the two-hop form, and it differs from the ordinary residual by exactly A
assert torch.allclose(Z_layer, Z_two_hop, atol=1e-6)
assert torch.allclose(Z_ordinary - Z_two_hop, A, atol=1e-6)
print("Rodimus+ layer = Y + FFN(RMSNorm(Y + SW-SKA(RMSNorm(Y)))) ✓")

# %% [markdown]
# ## 4. What "two hops" means
# Silence the FFN (zero its output projection). In the two-hop layer the attention then has **no**
# effect on the stream — its only way in is through the FFN. In an ordinary layer it still does.

# %%
def stream_change_from_attention(cfg):
    """|layer(X) − layer without attention(X)| with the FFN silenced: what attention adds directly."""
    m = RodimusLM(cfg).eval()
    lay = m.layers[0]
    with torch.no_grad():
        lay.ffn.out_proj.weight.zero_()
        with_attn = lay(X)
        lay.attn.out_proj.weight.zero_()
        without_attn = lay(X)
    return float((with_attn - without_attn).abs().max())

direct = {"two-hop": stream_change_from_attention(config), "one-hop": stream_change_from_attention(one_hop)}
direct

# %%
# check: the direct path exists only in the one-hop layer
assert direct["two-hop"] == 0.0 and direct["one-hop"] > 0
print("two-hop: attention reaches the stream only via the FFN ✓")

# %% [markdown]
# ## 5. Looking inside with `probe`
# The flow's gates and the SW-SKA maps of every layer, from one forward pass (hooks only). The model is
# untrained here; `00_tour` and `06_mqar_recall` look at trained ones.

# %%
ids = torch.randint(0, config.vocab_size, (24,))
result = viz.probe(model, ids)
viz.head_maps(result.attention[1], window=config.window, title="5 · SW-SKA weights, layer 1 (window band dashed)")

# %%
# check: every query sees at most `window` keys, and the probe did not change the model's output
assert ((result.attention[1] > 0).sum(-1) <= config.window).all()
assert torch.allclose(result.logits, model(ids[None]).logits[0])
print("SW-SKA maps respect the window ✓")

# %%
viz.write_keep_profile(result.gates[0], title="5 · layer 0 flow: mean write (α̂) and keep (α) per token")

# %% [markdown]
# ## 6. The cost: state + window vs a Transformer's cache
# Rodimus+ pays for its attention with a window of one shared key and H values per token; past the window
# its memory is flat.

# %%
viz.memory_vs_context({"Rodimus+ (this config)": config, "Rodimus (same d, n)": ModelConfig(
    **{k: v for k, v in config.to_dict().items() if k not in ("n_heads", "window")} | {"block": "rodimus"}),
    "Transformer++ (same d, heads)": ModelConfig(vocab_size=128, d_model=128, n_layers=2, block="transformer", n_heads=2)},
    context_lens=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096])

# %% [markdown]
# ## 7. Does the wiring matter? Two-hop vs one-hop on MQAR
# Train both variants the same way on associative recall and compare. (Fast mode trains a few steps only;
# run the full mode to see a difference worth reading.)

# %%
task = mqar_preset("demo", num_train=500, num_test=64, seq_len=32, num_kv_pairs=4, vocab_size=64) if FAST \
    else mqar_preset("demo", num_train=10_000, num_test=500)
train, test = make_mqar_splits(task, seed=0)
steps = 12 if FAST else 800
histories = {}
for label, cfg in (("two-hop", config), ("one-hop", one_hop)):
    seed_everything(0)
    cfg = ModelConfig(**{**cfg.to_dict(), "vocab_size": task.vocab_size, "d_model": 32 if FAST else 128})
    histories[label] = Trainer(RodimusLM(cfg), train, test, TrainConfig(
        max_steps=steps, batch_size=16 if FAST else 64, lr=3e-3, warmup_steps=steps // 10,
        eval_every=steps // 2 if FAST else steps // 10, progress=not FAST)).fit()
viz.training_curves(histories, y=("loss", "eval_accuracy"), title="7 · Rodimus+ on MQAR: two-hop vs one-hop residual")

# %%
# check: both variants trained under the same seed and budget and were evaluated at the end
final = {label: [r for r in h if r["kind"] == "eval"][-1] for label, h in histories.items()}
assert all(f["step"] == steps for f in final.values())
print({label: round(f["eval_accuracy"], 3) for label, f in final.items()})

# %% [markdown]
# ## 8. Explore it yourself
# The Rodimus+ model of sections 2–3 (untrained): for each token, the DDTS gates of the flow and each head's
# SW-SKA attention row — only the last `window` keys get weight. `09_ablation_lab` trains variants live.

# %%
from rodimus_lab.widgets import GateExplorer

GateExplorer(model, {"random tokens": torch.randint(0, config.vocab_size, (16,))})

# %% [markdown]
# **Summary.** Rodimus+ = DDTS for the long range + SW-SKA for the exact recent past, joined so that
# attention only feeds the FFN. `06_mqar_recall` measures what that buys on associative recall.
