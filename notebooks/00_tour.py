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
# # 00 — A five-minute tour of rodimus-lab
#
# **What you will learn**
# - how to build a small **Rodimus+** model from one `ModelConfig` and see its layer drawn from that config;
# - how to train it on **MQAR** (multi-query associative recall, the paper's recall benchmark) with the
#   library's `Trainer`, and read its training curves;
# - how to look inside with `viz.probe`: the DDTS gates per token (which tokens are written, which kept)
#   and the sliding-window shared-key attention maps.
#
# `RODIMUS_FAST=1` (what CI runs) trains for a few seconds; unset it for a run that actually learns the task
# (about five minutes on a laptop CPU).

# %%
import os

import torch

from rodimus_lab import ModelConfig, RodimusLM, seed_everything, viz
from rodimus_lab.data.mqar import make_mqar_splits, mqar_preset, mqar_token_labels
from rodimus_lab.train import Trainer, TrainConfig

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"
if FAST:
    torch.set_num_threads(1)   # tiny models gain nothing from threads; on a shared CI CPU they cost
seed_everything(0)

# %% [markdown]
# ## 1. A tiny Rodimus+
# Two layers; each has a Rodimus flow (DDTS state of n × m numbers) and sliding-window shared-key attention.

# %%
task = mqar_preset("demo", num_train=1_000, num_test=64, seq_len=32, num_kv_pairs=4, vocab_size=64) if FAST \
    else mqar_preset("demo")
config = ModelConfig(vocab_size=task.vocab_size, d_model=32 if FAST else 64, n_layers=2, block="rodimus_plus",
                     mem_size=8 if FAST else 16, n_heads=2, window=8)
model = RodimusLM(config)
print(f"{model.num_parameters():,} parameters; MQAR with L = {task.seq_len}, {task.num_kv_pairs} key-value pairs")
viz.block_diagram(config)

# %%
# check: the config's derived sizes are the ones the model was built with
mixer = model.layers[0].mixer
assert mixer.in_proj.out_features == 2 * config.mem_size and mixer.fc.out_features == 2 * config.d_inner
assert model.layers[0].attn.k_proj.out_features == config.head_dim      # SKA: one shared key head
print("model built from the config ✓")

# %% [markdown]
# ## 2. The task: MQAR
# Key–value pairs first, then the keys again; at each repeated key the model must produce its value.
# `K`/`V` mark the context, `Q→v` a query with the value to predict, `·` filler.

# %%
train, test = make_mqar_splits(task, seed=0)
example_ids, example_labels = test[0]
print(" ".join(mqar_token_labels(example_ids, example_labels, task.num_kv_pairs)))

# %%
# check: every query asks for a value that was paired with that key in the context
keys, values = example_ids[:2 * task.num_kv_pairs:2].tolist(), example_ids[1:2 * task.num_kv_pairs:2].tolist()
for t in (example_labels != -100).nonzero().flatten().tolist():
    assert values[keys.index(int(example_ids[t]))] == int(example_labels[t])
print("labels are the values of the queried keys ✓")

# %% [markdown]
# ## 3. Train
# The library's `Trainer` (AdamW, warmup + cosine, gradient clipping, periodic evaluation).

# %%
steps = 30 if FAST else 1200
trainer = Trainer(model, train, test, TrainConfig(max_steps=steps, batch_size=16 if FAST else 64, lr=3e-3,
                                                  warmup_steps=steps // 10, eval_every=steps // 4, progress=not FAST))
history = trainer.fit()
final = [r for r in history if r["kind"] == "eval"][-1]
print(f"after {steps} steps: test accuracy {final['eval_accuracy']:.3f}, test loss {final['eval_loss']:.3f}")
viz.training_curves(history, y=("loss", "eval_accuracy"), title="3 · MQAR training")

# %%
# check: training lowered the loss
losses = [r["loss"] for r in history if r["kind"] == "train"]
assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
print(f"loss {losses[0]:.2f} → {losses[-1]:.2f} ✓")

# %% [markdown]
# ## 4. Look inside: gates
# `viz.probe` runs the model on one example and captures every layer's gates through hooks. In the demo model
# trained for `docs/figures/mqar_gates.png` (97 % test accuracy), layer 0's α averaged over state dims is 0.999–1.000
# at most tokens, 0.985–0.995 at the values of the context and 0.86–0.89 just after some queries (single state
# dims go down to 0.09): on a 0–1 colour scale that is one colour, so the top panel draws the forget rate
# −ln α = τg on a log scale — small (dark) means the state is kept. The same model writes (large α̂) at the values
# of the context and barely at the filler. The check below measures that on 32 test examples; it is asserted only
# once the model has learned the task (test accuracy ≥ 0.5) — fast mode stops long before, and then the numbers
# only show the pipeline.

# %%
model.eval()
result = viz.probe(model, example_ids)
labels = mqar_token_labels(example_ids, example_labels, task.num_kv_pairs)
viz.gate_heatmaps(result.gates[0], tokens=labels, title="4 · DDTS gates of layer 0 on a test example")

# %%
viz.write_keep_profile(result.gates[0], tokens=labels)

# %%
# check: probe saw every layer, and the gates obey the DDTS equations
assert sorted(result.gates) == list(range(config.n_layers))
for layer, g in result.gates.items():
    assert torch.allclose(g["log_alpha"], -g["tau"] * g["g"], atol=1e-5)
    assert torch.allclose(g["alpha_hat"], g["g"] ** g["tau"], atol=1e-5)
print("α = e^{−τg}, α̂ = g^τ in every layer ✓")

# %%
# check (a trained model): mean α̂ at the context's keys and values vs at filler tokens, layer 0, 32 test examples
context_write, filler_write = [], []
for i in range(32):
    ids_i, labels_i = test[i]
    write = viz.probe(model, ids_i).gates[0]["alpha_hat"].mean(1)         # mean over state dims, per token
    is_context = torch.arange(len(ids_i)) < 2 * task.num_kv_pairs
    is_filler = ~is_context & (labels_i == -100) & (ids_i == 0)
    context_write.append(write[is_context].mean())
    filler_write.append(write[is_filler].mean())
context_write, filler_write = float(torch.stack(context_write).mean()), float(torch.stack(filler_write).mean())
alpha_0 = result.gates[0]["log_alpha"].exp()
print(f"test accuracy {final['eval_accuracy']:.2f}; mean α̂ at keys/values {context_write:.3f}, at filler "
      f"{filler_write:.3f}; α ∈ [{float(alpha_0.min()):.4f}, {float(alpha_0.max()):.5f}]")
if final["eval_accuracy"] >= 0.5:
    assert context_write > 1.2 * filler_write, "a model that recalls should write the context more than the filler"
    print("the trained model writes keys and values more strongly than filler ✓")
else:
    print("(not asserted: the model has not learned the task yet — run without RODIMUS_FAST)")

# %% [markdown]
# ## 5. Look inside: attention
# Each query head of the sliding-window SKA sees only the last `window` tokens (dashed band).

# %%
viz.head_maps(result.attention[1], tokens=labels, window=config.window, title="5 · SW-SKA of layer 1")

# %%
# check: nothing outside the window gets weight
T = len(labels)
outside = ~torch.ones(T, T, dtype=torch.bool).tril().triu(-(config.window - 1))
assert result.attention[1][:, outside].abs().max() == 0
print("attention stays inside the window ✓")

# %% [markdown]
# ## 6. What decoding costs
# The Rodimus+ cache stops growing once the window is full; a Transformer's does not.

# %%
viz.memory_vs_context({"this Rodimus+": config,
                       "Transformer++ of the same width": ModelConfig(vocab_size=task.vocab_size, d_model=config.d_model,
                                                                      n_layers=2, block="transformer", n_heads=2)},
                      context_lens=[2 ** i for i in range(13)])

# %% [markdown]
# **Where next.** `01` derives DDTS from softmax attention; `02`–`03` look at gates and states of trained
# models; `04`–`05` take SKA and the Rodimus+ layer apart; `06`–`07` put small experiments beside the paper's Fig. 1;
# `08` opens the Triton kernels; `09` trains ablations from sliders. `TEACHING.md` plans a course around them.
