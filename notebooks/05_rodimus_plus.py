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
# # 05 — Rodimus+: the hybrid layer and its two-hop residual
#
# **What you will learn**
# - how a Rodimus+ layer stacks a Rodimus flow (DDTS: long-range, fixed-size state) and sliding-window
#   shared-key attention (SW-SKA: exact, short range) with a SwiGLU FFN;
# - the **two-hop residual** `Z = Y + FFN(RMSNorm(Y + SW_SKA(RMSNorm(Y))))`: the attention output
#   reaches the residual stream only *through* the FFN — and how that differs from an ordinary residual;
# - how to read each part of the layer with `viz.probe` (gates of the flow, attention maps of SW-SKA).

# %%
import os

import torch

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
# ## 2. The wiring as code
# `Layer.forward` in `rodimus_lab/model.py` spells the residuals out. Recompute them by hand from the
# layer's own sub-modules and compare.

# %%
model = RodimusLM(config).eval()
layer = model.layers[0]
X = torch.randn(1, 12, config.d_model)
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
# ## 3. What "two hops" means
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
# ## 4. Looking inside with `probe`
# The flow's gates and the SW-SKA maps of every layer, from one forward pass (hooks only). The model is
# untrained here; `00_tour` and `06_mqar_recall` look at trained ones.

# %%
ids = torch.randint(0, config.vocab_size, (24,))
result = viz.probe(model, ids)
viz.head_maps(result.attention[1], window=config.window, title="4 · SW-SKA weights, layer 1 (window band dashed)")

# %%
# check: every query sees at most `window` keys, and the probe did not change the model's output
assert ((result.attention[1] > 0).sum(-1) <= config.window).all()
assert torch.allclose(result.logits, model(ids[None]).logits[0])
print("SW-SKA maps respect the window ✓")

# %%
viz.write_keep_profile(result.gates[0], title="4 · layer 0 flow: mean write (α̂) and keep (α) per token")

# %% [markdown]
# ## 5. The cost: state + window vs a Transformer's cache
# Rodimus+ pays for its attention with a window of one shared key and H values per token; past the window
# its memory is flat.

# %%
viz.memory_vs_context({"Rodimus+ (this config)": config, "Rodimus (same d, n)": ModelConfig(
    **{k: v for k, v in config.to_dict().items() if k not in ("n_heads", "window")} | {"block": "rodimus"}),
    "Transformer++ (same d, heads)": ModelConfig(vocab_size=128, d_model=128, n_layers=2, block="transformer", n_heads=2)},
    context_lens=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096])

# %% [markdown]
# ## 6. Does the wiring matter? Two-hop vs one-hop on MQAR
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
viz.training_curves(histories, y=("loss", "eval_accuracy"), title="6 · Rodimus+ on MQAR: two-hop vs one-hop residual")

# %%
# check: both variants trained under the same seed and budget and were evaluated at the end
final = {label: [r for r in h if r["kind"] == "eval"][-1] for label, h in histories.items()}
assert all(f["step"] == steps for f in final.values())
print({label: round(f["eval_accuracy"], 3) for label, f in final.items()})

# %% [markdown]
# ## 7. Explore it yourself
# The Rodimus+ model of section 2 (untrained): for each token, the DDTS gates of the flow and each head's
# SW-SKA attention row — only the last `window` keys get weight. `09_ablation_lab` trains variants live.

# %%
from rodimus_lab.widgets import GateExplorer

GateExplorer(model, {"random tokens": torch.randint(0, config.vocab_size, (16,))})

# %% [markdown]
# **Summary.** Rodimus+ = DDTS for the long range + SW-SKA for the exact recent past, joined so that
# attention only feeds the FFN. `06_mqar_recall` measures what that buys on associative recall.
