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
# # 02 — DDTS gate selection on real text
#
# **What you will learn**
# - how to train a small Rodimus language model on WikiText with the library's `Trainer`;
# - how to read its DDTS gates token by token: which tokens are **written** into the state (large α̂)
#   and where the state is **kept** (α ≈ 1);
# - the role of the temperature τ: where a trained model's gates sit on the selection curves
#   `(α, α̂) = (e^{−g}, g)^τ`.
#
# Data: `RODIMUS_TEXT` (a folder with `wiki.{train,valid,test}.tokens`, or `wikitext-103` through `datasets`
# when online). Fast mode (`RODIMUS_FAST=1`) uses the few-KB fixture in `tests/fixtures` — the gates then show
# little structure; run the full mode to see a trained model.

# %%
import os
from pathlib import Path

import torch

from rodimus_lab import ModelConfig, RodimusLM, seed_everything, viz
from rodimus_lab.data.text import load_text_data
from rodimus_lab.train import Trainer, TrainConfig

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"
if FAST:
    torch.set_num_threads(1)   # tiny models gain nothing from threads; on a shared CI CPU they cost
seed_everything(0)
TEXT = os.environ.get("RODIMUS_TEXT", "../tests/fixtures/wikitext-tiny" if FAST else "wikitext-103")
has_train = not Path(TEXT).is_dir() or (Path(TEXT) / "wiki.train.tokens").exists()

# %% [markdown]
# ## 1. Text and tokenizer
# A byte-level BPE is trained on the training split (and cached under `data/`).

# %%
data = load_text_data(TEXT, tokenizer="bpe", vocab_size=512 if FAST else 8192, block_size=32 if FAST else 256,
                      train_split="train" if has_train else "valid", eval_split="valid" if has_train else "test",
                      data_dir="../data")
tok = data.tokenizer
sentence = "The city was founded in the 12th century and became the capital of the kingdom ."
print(f"vocab {data.vocab_size}; {len(data.train)} training blocks of {data.train.block_size} tokens")
print([tok.decode([i]) for i in tok.encode(sentence)])

# %%
# check: the tokenizer round-trips text, and a block's labels are its inputs shifted by one
assert tok.decode(tok.encode(sentence)).strip() == sentence
x, y = data.train[torch.tensor([0])]
assert torch.equal(x[0, 1:], y[0, :-1])
print("tokenizer round-trips; labels = next tokens ✓")

# %% [markdown]
# ## 2. Train a small Rodimus LM

# %%
config = ModelConfig(vocab_size=data.vocab_size, d_model=32 if FAST else 256, n_layers=2 if FAST else 4,
                     mem_size=16 if FAST else 64)
model = RodimusLM(config)
gate_proj = model.layers[-1].mixer.mem_gate_proj          # g and τ come from this projection
initial_gate_bias = gate_proj.bias.detach().clone()
steps = 30 if FAST else 2000
trainer = Trainer(model, data.train, data.eval, TrainConfig(max_steps=steps, batch_size=8 if FAST else 32, lr=3e-3,
                                                            warmup_steps=steps // 10, eval_every=steps // 3,
                                                            eval_batch_size=16, progress=not FAST))
history = trainer.fit()
viz.training_curves(history, y=("loss", "eval_loss"), title="2 · language-model loss")

# %%
# check: the loss went down from the uniform guess ln(V)
losses = [r["loss"] for r in history if r["kind"] == "train"]
assert losses[-1] < losses[0] <= torch.log(torch.tensor(float(data.vocab_size))) + 0.5
print(f"loss {losses[0]:.2f} → {losses[-1]:.2f} (ln V = {torch.log(torch.tensor(float(data.vocab_size))):.2f}) ✓")

# %% [markdown]
# ## 3. The gates, token by token
# `viz.probe` reads the gates of every layer on one sentence (hooks, no model change). Rows are state
# dimensions, columns tokens.
#
# The α panel shows −ln α = τg on a log colour scale: a trained model's α sits between about 0.9 and 0.9999, which
# a 0–1 scale would paint in one colour. Small −ln α (dark) = the state is kept; large = it is overwritten.

# %%
model.eval()
last = config.n_layers - 1
captured = {}
hook = model.layers[last].mixer.short_conv.register_forward_hook(lambda mod, inp, out: captured.update(x_conv=out))
result = viz.probe(model, text=sentence, tokenizer=tok)
hook.remove()
viz.gate_heatmaps(result.gates[last], tokens=result.tokens, title=f"3 · DDTS gates of layer {last}")

# %%
viz.write_keep_profile(result.gates[last], tokens=result.tokens, title="3 · which tokens are written, where the state is kept")

# %%
# check: the gates the probe shows are the layer's own: recomputed here from the conv output x̃ (read by a hook)
# and the gate projection's weights — g = log(1 + e^{x̃W_g + b_g}), τ = 1/(1 + e^{−(x̃W_τ + b_τ)}), α = e^{−τg}, α̂ = g^τ
g = result.gates[last]
alpha = g["log_alpha"].exp()
with torch.no_grad():
    g_logits, tau_logits = (captured["x_conv"][0] @ gate_proj.weight.T + gate_proj.bias).split(config.mem_size, dim=-1)
g_hand, tau_hand = torch.log1p(g_logits.exp()), 1 / (1 + (-tau_logits).exp())
assert torch.allclose(g["g"], g_hand, rtol=1e-4) and torch.allclose(g["tau"], tau_hand, rtol=1e-4)
assert torch.allclose(g["log_alpha"], -tau_hand * g_hand, rtol=1e-4)
assert torch.allclose(g["alpha_hat"], g_hand ** tau_hand, rtol=1e-4)
print(f"the probed gates are (e^{{−g}}, g)^τ of the layer's own projection; α ∈ [{float(alpha.min()):.4f}, "
      f"{float(alpha.max()):.6f}] ✓")

# %% [markdown]
# ## 4. Which tokens does the model write?
# Rank the sentence's tokens by their mean write strength α̂ (over state dims) in the last layer.

# %%
write = g["alpha_hat"].mean(1)
order = write.argsort(descending=True)
ranked = [(result.tokens[i], round(float(write[i]), 3), round(float(alpha[i].mean()), 3)) for i in order]
print("most written:", ranked[:5])
print("least written:", ranked[-5:])

# %%
# check: the ranking is a permutation of the sentence's tokens
assert sorted(order.tolist()) == list(range(len(result.tokens)))

# %% [markdown]
# ## 5. The temperature τ
# Each dot is one (token, state dim) of the trained model, placed on the selection curves and coloured by
# its τ. τ < 1 pulls α towards 1 (keep more) and α̂ towards 1 (write more evenly): the model picks, per
# token and dim, how sharply to select.

# %%
viz.selection_curves(observed=g, title="5 · the model's gates on the tempered selection curves")

# %%
# check: training moved the gates. (τ ∈ (0, 1) holds by construction — τ is a sigmoid — so it is no finding.)
# The gate biases must have changed, and the spread of τ over tokens shows it depends on the token.
moved = float((gate_proj.bias.detach() - initial_gate_bias).abs().max())
assert moved > 1e-4, f"the gate biases barely moved ({moved:.2e}): do the gates get a gradient?"
assert float(g["tau"].std(0).max()) > 0
print(f"gate biases moved by up to {moved:.3f} in {steps} steps; τ over this sentence spans "
      f"[{float(g['tau'].min()):.2f}, {float(g['tau'].max()):.2f}] ✓")

# %% [markdown]
# ## 6. Explore it yourself
# Step through the sentence token by token (Play, the slider, or hover a token in the heatmap) and watch
# α, α̂ and τ per state dim, the state's norm and spectrum — or pick *(type your own)* and enter a text.

# %%
from rodimus_lab.widgets import GateExplorer

GateExplorer(model, {"the sentence": sentence}, tokenizer=tok)

# %% [markdown]
# **Summary.** Gates are per token *and* per state dimension; selection ties writing to forgetting, and τ
# sets how sharp that trade is. `03_state_compression` looks at what ends up in the state.
