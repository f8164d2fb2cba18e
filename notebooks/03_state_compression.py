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
# # 03 — State compression: a fixed-size state instead of a growing cache
#
# **What you will learn**
# - how much a Rodimus layer must remember while it decodes (n × m numbers, whatever the context) versus a
#   Transformer's KV cache (grows with every token);
# - what the state `S_t` holds: its singular-value spectrum and effective rank over time, and its norm;
# - what the state size n buys on associative recall (MQAR): recall vs n.

# %%
import os

import torch

from rodimus_lab import ModelConfig, RodimusLM, cache_bytes, seed_everything, viz
from rodimus_lab.data.mqar import make_mqar_splits, mqar_preset
from rodimus_lab.data.mqar import mqar_token_labels
from rodimus_lab.train import Trainer, TrainConfig

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"
if FAST:
    torch.set_num_threads(1)   # tiny models gain nothing from threads; on a shared CI CPU they cost
seed_everything(0)

# %% [markdown]
# ## 1. Memory while decoding
# A Rodimus layer keeps `S ∈ R^{n×m}` plus the last 3 inputs of its short convolution; a Transformer keeps
# a key and a value for every past token. *Practise: exercise 9 (`state_bytes`).*

# %%
rodimus = ModelConfig(d_model=1024, n_layers=24, mem_size=64)
transformer = ModelConfig(d_model=1024, n_layers=24, block="transformer", n_heads=8)
viz.memory_vs_context({"Rodimus (n = 64)": rodimus, "Rodimus (n = 16)": ModelConfig(d_model=1024, n_layers=24, mem_size=16),
                       "Transformer++ (MHA)": transformer})

# %%
# check: the Rodimus cache is (n·m + 3·m)·L numbers at any length; the Transformer's is 2·d per token per layer
m = rodimus.d_inner
assert cache_bytes(rodimus, 10) == cache_bytes(rodimus, 100_000) == 2 * 24 * (64 * m + 3 * m)
assert cache_bytes(transformer, 1000) == 2 * 24 * 1000 * 2 * 1024
crossover = next(L for L in range(1, 10**6) if cache_bytes(transformer, L) > cache_bytes(rodimus, L))
print(f"the Transformer's cache passes the Rodimus state after {crossover} tokens ✓")

# %% [markdown]
# ### Measured, not just counted
# `rodimus-lab bench decode` times one generated token and measures the decoding state at growing context
# lengths for three ~125M models of the same width (d = 768: Rodimus with 24 layers, Rodimus+ with 12 and a
# 2048-key window, Transformer++ with 12). The results file in `docs/results/` was measured on an H200 (bf16,
# batch 1; the command is in `docs/benchmarks.md`, "Decoding"; `decode_h200_b16.json` beside it is batch 16 and
# `decode_cpu_125m.json` a 2-core CPU). Circles are measured bytes, lines the analytic count. On the right,
# solid lines are eager steps — at batch 1 on a GPU they are bound by the host launching ~1000 small kernels,
# whatever the context — and dashed lines a CUDA graph of the same step: the Transformer's time per token
# grows with the context, the others' does not.
#
# **Why the measured Rodimus state (9.66 MB = 9,658,368 bytes) is about twice the 4.94 MB that `cache_bytes` counts
# for the same config**: `cache_bytes` counts every number at 2 bytes (bf16, as the paper does), but the decoder keeps
# the DDTS state in **float32** (4 bytes: the state is a long running sum, and bf16's 8-bit mantissa would lose the
# small writes), and only the conv buffer in bf16. Rodimus+ also **preallocates** its ring of `window` keys and values,
# so its measured bytes are those of a full window even at contexts shorter than the window. The check below counts
# both by hand.

# %%
import json
from pathlib import Path

results_file = Path("../docs/results/decode_h200.json")
decode_results = json.loads(results_file.read_text())
viz.decode_cost(decode_results)

# %%
# check: measured state bytes equal the analytic count for the recurrent models; CUDA's caching allocator
# may round the Transformer's cache up (a few % at short contexts), never down; and only the Transformer's
# grows with the context
rows = [r for r in decode_results["rows"] if "error" not in r]
assert all(r["state_bytes_measured"] == r["state_bytes_analytic"] for r in rows if r["model"] != "transformer")
assert all(0 <= r["state_bytes_measured"] / r["state_bytes_analytic"] - 1 < 0.03 for r in rows)
by_model = {name: sorted((r["context"], r["state_bytes_measured"]) for r in rows if r["model"] == name)
            for name in {r["model"] for r in rows}}
assert by_model["rodimus"][0][1] == by_model["rodimus"][-1][1]
assert by_model["transformer"][-1][1] > 10 * by_model["transformer"][0][1]
print({name: f"{points[-1][1] / 2**20:.1f} MiB at {points[-1][0]} tokens" for name, points in by_model.items()}, "✓")

# %%
# check: the measured bytes, counted by hand — float32 DDTS state (4 bytes) + bf16 conv buffer (2 bytes) per layer,
# and for Rodimus+ a full ring of `window` shared keys and H values in bf16 — versus cache_bytes' all-bf16 count
measured = {r["model"]: r["state_bytes_measured"] for r in rows if r["context"] == 1024}
configs = {name: ModelConfig(**fields) for name, fields in decode_results["configs"].items()}
for name in ("rodimus", "rodimus_plus"):
    c = configs[name]
    per_layer = 4 * c.mem_size * c.d_inner + 2 * (c.conv_size - 1) * c.d_inner
    if c.has_attention:
        per_layer += 2 * c.window * (1 + c.num_heads) * c.head_dim          # the whole ring, even at 1024 tokens
    assert measured[name] == c.n_layers * per_layer, name
r125 = configs["rodimus"]
print(f"Rodimus 125M: measured {measured['rodimus'] / 1e6:.2f} MB (fp32 state) vs cache_bytes "
      f"{cache_bytes(r125, 1024) / 1e6:.2f} MB (all bf16) ✓")

# %% [markdown]
# ## 2. Train a Rodimus on MQAR, then look at its state
# The recall task makes the state's job concrete: store key → value pairs, answer queries later.

# %%
task = mqar_preset("demo", num_train=1_000, num_test=64, seq_len=32, num_kv_pairs=4, vocab_size=64) if FAST \
    else mqar_preset("demo")
train, test = make_mqar_splits(task, seed=0)
steps = 20 if FAST else 600


def train_rodimus(mem_size: int):
    """A 2-layer Rodimus with state size n = mem_size, trained on the task; returns (model, history)."""
    seed_everything(0)
    model = RodimusLM(ModelConfig(vocab_size=task.vocab_size, d_model=32 if FAST else 64, n_layers=2, mem_size=mem_size))
    history = Trainer(model, train, test, TrainConfig(max_steps=steps, batch_size=16 if FAST else 64, lr=3e-3,
                                                      warmup_steps=steps // 10, eval_every=0, progress=not FAST)).fit()
    return model.eval(), history


model, history = train_rodimus(8 if FAST else 16)
ids, labels = test[0]
tokens = mqar_token_labels(ids, labels, task.num_kv_pairs)
result = viz.probe(model, ids)
states = result.states(0)                     # S_1 … S_T of layer 0: [T, n, m]
viz.state_spectrum(states, tokens=tokens, title="2 · spectrum of S_t, layer 0")

# %%
# check: S_t is a decayed sum of t rank-one writes, so its rank — and its effective rank — is ≤ min(t, n, m)
erank = viz.effective_rank(states)
n, m_small = states.shape[1:]
bound = torch.minimum(torch.arange(1, len(erank) + 1), torch.tensor(min(n, m_small)))
assert (erank <= bound + 1e-6).all()
print(f"effective rank ends at {float(erank[-1]):.1f} of at most {min(n, m_small)} ✓")

# %%
viz.state_norms({f"layer {i}": result.states(i) for i in result.ddts_inputs}, tokens=tokens,
                title="2 · ‖S_t‖: writes at the context, decay in between")

# %% [markdown]
# ## 3. Recall vs state size
# The same model with different n, trained the same way. What to look for in full mode: does a bigger state
# hold more pairs? (Fast mode trains a few steps: its accuracies show only the pipeline.)
# *Practise: exercise 14 (`mqar_accuracy`) is the metric recomputed below.*

# %%
sizes = (2, 8) if FAST else (4, 8, 16, 32, 64)
accuracy = {}
for n_size in sizes:
    trained, hist = train_rodimus(n_size)
    accuracy[n_size] = [r for r in hist if r["kind"] == "eval"][-1]["eval_accuracy"]
viz.compare_with_paper({"Rodimus": list(accuracy.items())}, x_title="state size n", y_title="MQAR accuracy",
                       title=f"3 · recall vs n (L = {task.seq_len}, {task.num_kv_pairs} pairs, {steps} steps)")

# %%
# check: the reported accuracy is the accuracy on the whole test set, recomputed here for the last model: argmax over
# the vocabulary at every query, mean per example, then over all len(test) examples (Zoology's definition)
with torch.no_grad():
    predictions = trained.eval()(test.inputs).logits.argmax(-1)
per_example = []
for prediction, label in zip(predictions, test.labels):
    queries = label != -100
    per_example.append(float((prediction[queries] == label[queries]).float().mean()))
assert len(per_example) == len(test)
assert abs(sum(per_example) / len(per_example) - accuracy[sizes[-1]]) < 1e-6
print({n_size: round(a, 3) for n_size, a in accuracy.items()}, f"(on all {len(test)} test examples) ✓")

# %% [markdown]
# ## 4. Explore it yourself
# The model of section 2 on the same example: step through the tokens and watch the state's norm and its
# singular values grow at the K/V pairs and decay in between.

# %%
from rodimus_lab.widgets import GateExplorer

GateExplorer(model, {"MQAR test example 0": ids}, tokens={"MQAR test example 0": tokens})

# %% [markdown]
# **Summary.** The state has a fixed size (measured: the decoder keeps it in float32, twice the bf16 count), its
# effective rank says how much of it is in use, and section 3 measures recall at each n. `06_mqar_recall` does the
# sweep with Rodimus+ beside Rodimus, gate families and near/far queries.
