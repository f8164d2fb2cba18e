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
# # 06 — MQAR recall vs state size (the shape of the paper's Fig. 1b)
#
# **What you will learn**
# - how to run a small sweep — Rodimus and Rodimus+ at several state sizes n — with the library's `Trainer`
#   on multi-query associative recall (Zoology's MQAR);
# - how to read the result beside the paper's published points (L = 1024, 256 pairs, read off its Fig. 1b);
# - why the hybrid helps: the sliding-window SKA recalls exactly what is near, the state what is far.
#
# Laptop scale: the full mode (`RODIMUS_FAST` unset) trains L = 128 with 8 pairs for a few minutes per model;
# the paper's point is the *shape* (accuracy rises with n, Rodimus+ above Rodimus), not the numbers.

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

# %% [markdown]
# ## 1. The task and the grid

# %%
task = mqar_preset("demo", num_train=500, num_test=64, seq_len=32, num_kv_pairs=4, vocab_size=64) if FAST \
    else mqar_preset("L128_p8", vocab_size=1024, num_train=20_000, num_test=500)
sizes = (2, 8) if FAST else (4, 8, 16, 32, 64)
blocks = {"Rodimus": dict(block="rodimus"), "Rodimus+": dict(block="rodimus_plus", n_heads=2, window=8)}
steps = 12 if FAST else 1500
train, test = make_mqar_splits(task, seed=0)
print(f"MQAR L = {task.seq_len}, {task.num_kv_pairs} pairs; n ∈ {sizes}; {steps} steps per model")

# %%
# check: the window of Rodimus+ is much shorter than the distance between a pair and its query,
# so recall has to go through the DDTS state (attention alone cannot see the context from the queries)
assert blocks["Rodimus+"]["window"] < task.seq_len - 2 * task.num_kv_pairs
print("the window cannot reach back to the context from most queries ✓")

# %% [markdown]
# ## 2. Train every model

# %%
results = {name: [] for name in blocks}
histories = {}
for name, fields in blocks.items():
    for n in sizes:
        seed_everything(0)
        config = ModelConfig(vocab_size=task.vocab_size, d_model=32 if FAST else 128, n_layers=2, mem_size=n, **fields)
        trainer = Trainer(RodimusLM(config), train, test,
                          TrainConfig(max_steps=steps, batch_size=16 if FAST else 64, lr=3e-3, warmup_steps=steps // 10,
                                      eval_every=steps // 2 if FAST else steps // 10, progress=not FAST))
        history = trainer.fit()
        histories[f"{name}, n = {n}"] = history
        results[name].append((n, [r for r in history if r["kind"] == "eval"][-1]["eval_accuracy"]))
results

# %%
viz.training_curves(histories, y=("eval_accuracy",), title="2 · test accuracy during training")

# %%
# check: one result per (model, n), each an accuracy in [0, 1]
assert all(len(points) == len(sizes) for points in results.values())
assert all(0 <= acc <= 1 for points in results.values() for _, acc in points)
print("sweep complete ✓")

# %% [markdown]
# ## 3. Beside the paper
# Solid: ours (this notebook's task and scale). Dashed, open markers: the paper's Fig. 1b (L = 1024, 256 pairs,
# larger models and budgets). Compare shapes, not heights.

# %%
viz.compare_with_paper(results, viz.paper.FIG1B_MQAR_VS_STATE_SIZE, x_title="state size n (log)",
                       y_title="MQAR accuracy", title="3 · MQAR accuracy vs state size")

# %%
# check: the paper's points are the published ones (docs/equations.md §6), drawn unchanged
assert viz.paper.FIG1B_MQAR_VS_STATE_SIZE["Rodimus+"][2] == (64, 0.91)
assert viz.paper.FIG1B_MQAR_VS_STATE_SIZE["Rodimus"][-1] == (256, 0.82)
print("paper reference points ✓")

# %% [markdown]
# **Summary.** Accuracy rises with the state size; with a short window Rodimus+ gets the recent past exactly
# and spends its state on the rest. For the paper-scale run use a GPU and the CLI (`rodimus-lab train --help`).
