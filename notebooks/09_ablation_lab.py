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
# # 09 — The ablation lab: what if τ were 1? what if the window were 32?
#
# **What you will learn**
# - how to answer "what if…" questions about Rodimus* from sliders: every DDTS ablation (τ = 1, α̂ = 1,
#   HGRN2-, Mamba2-, RetNet-style gates, no decay), short conv, key norm, state size n, window, head layout
#   and the two-hop residual are fields of one `ModelConfig`, so a variant is one click;
# - how to read a run live: loss and MQAR accuracy per variant, and the DDTS gates on a fixed MQAR example
#   as training goes — do the gates learn to *write* keys and values and *keep* them until the query?
# - why runs are reproducible: each is seeded and cached by the hash of its configs, so running a
#   finished variant again is instant, and the results table exports to CSV and JSON.
#
# Press **Run** to train the selected variants one after another (the kernel stays responsive: **Stop**
# ends the run after the current step). Every cell below also works from code, which is how the checks
# run headless.

# %%
import os
import tempfile

import torch

from rodimus_lab import viz
from rodimus_lab.data.mqar import mqar_token_labels
from rodimus_lab.widgets import AblationLab, AttentionExplorer, GateExplorer

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"
if FAST:
    torch.set_num_threads(1)   # tiny models gain nothing from threads; on a shared CI CPU they cost
WORK = os.path.join(tempfile.gettempdir(), "rodimus-ablation")   # run cache and exports

# %% [markdown]
# ## 1. The lab
# The controls start at a laptop size (fast mode: a small MQAR task, seconds per variant, and still
# enough steps that the variants part ways). Pick gates in
# *gates (variants)* — one run per selected gate — and press **Run**. The task is an MQAR preset or a
# slice of WikiText (*text source*: `wikitext-2` from the Hugging Face hub, or a local folder).

# %%
lab = AblationLab(cache_dir=None if FAST else os.path.join(WORK, "cache"), export_dir=WORK, probe_every=25, fast=FAST)
if not FAST:
    lab.num_train.value, lab.steps.value, lab.lr.value = 20_000, 400, 3e-3
lab.gates.value = ("ddts", "no_tau")
lab

# %% [markdown]
# ## 2. The same from code
# `lab.run()` trains what the controls select and blocks until it is done (the button does the same
# without blocking). Each result is a row of the table above and keeps its full history.

# %%
results = lab.run()
print(lab.status.value)
for row in lab.rows():
    print(f"{row['variant']:<28} accuracy {row['eval_accuracy']}  loss {row['eval_loss']}  {row['status']}")

# %%
# check: both variants trained to the end, seeded: the same configs give the same cache keys
assert lab.errors.last_error is None, lab.errors.value
assert [r.status for r in results] == ["done", "done"] and len({r.key for r in results}) == 2
print("two variants trained ✓")

# %% [markdown]
# Running a finished variant again is a cache lookup, not a second training run:

# %%
lab.run()
assert [r.cached for r in lab.results] == [False, False, True, True]
assert lab.results[2].final == lab.results[0].final
print("re-run answered from the cache ✓")

# %% [markdown]
# The curves of every run so far, as a static figure (the live one is in the lab above):

# %%
viz.training_curves({r.name + (" (cached)" if r.cached else ""): r.history for r in lab.results[:2]},
                    y=("loss", "eval_accuracy"), title="2 · τ learned vs τ = 1")

# %% [markdown]
# ## 3. Export
# The table as CSV (one row per run) and everything — configs, histories — as JSON.

# %%
print(lab.to_csv().splitlines()[0])
csv_path = lab.export("csv")
json_path = lab.export("json")
print(csv_path, json_path)

# %% [markdown]
# ## 4. Step through a trained model's gates
# The first variant's model on one MQAR test example. K/V mark the context pairs, Q the queries.
# Hover a token in the heatmap (or press Play) to see α, α̂ and τ there, the state's norm and spectrum.

# %%
train, test, _ = lab.data()
roles = mqar_token_labels(test.inputs[0], test.labels[0], test.num_kv_pairs)
explorer = GateExplorer(results[0].trained, {"MQAR test example 0": test.inputs[0]},
                        tokens={"MQAR test example 0": roles})
explorer.token.value = 2 * test.num_kv_pairs - 1     # the last value of the context
explorer

# %% [markdown]
# ## 5. Head layouts and windows
# MHA, GQA, MQA and SKA on one input; drag the window and watch both the maps and the cache bytes.

# %%
attention = AttentionExplorer(seq_len=16 if FAST else 32, window=6)
attention

# %%
# check: SKA caches one key head and H value heads; a window caps every layout's cache
rows = {r["layout"]: r["cache_bytes"] for r in attention.cache_table()}
assert rows["MQA"] < rows["SKA"] < rows["MHA"]
attention.window.value = 0
unbounded = {r["layout"]: r["cache_bytes"] for r in attention.cache_table()}
assert all(unbounded[k] > rows[k] for k in rows)
attention.window.value = 6
print("cache bytes:", rows, "✓")
