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
# # 07 — Small language models on WikiText: perplexity vs state memory (the shape of Fig. 1a)
#
# **What you will learn**
# - how to train small Rodimus and Rodimus+ language models on WikiText with the library's `Trainer`;
# - how to measure each model's **recurrent-state memory** from its config (`cache_bytes`) the way the paper
#   counts it (2 bytes per element);
# - how to put perplexity vs memory beside the paper's Fig. 1a (WikiText-103, sequence length 512).
#
# Data: `RODIMUS_TEXT` (a folder with `wiki.*.tokens`, or `wikitext-103` through `datasets` when online).
# Fast mode uses the few-KB fixture in `tests/fixtures`: the perplexities are then meaningless — the notebook
# only shows the pipeline. The full mode trains for a while on a CPU; a GPU is better.

# %%
import os
from pathlib import Path

import torch

from rodimus_lab import ModelConfig, RodimusLM, cache_bytes, seed_everything, viz
from rodimus_lab.data.text import load_text_data
from rodimus_lab.train import Trainer, TrainConfig

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"
if FAST:
    torch.set_num_threads(1)   # tiny models gain nothing from threads; on a shared CI CPU they cost
TEXT = os.environ.get("RODIMUS_TEXT", "../tests/fixtures/wikitext-tiny" if FAST else "wikitext-103")
has_train = not Path(TEXT).is_dir() or (Path(TEXT) / "wiki.train.tokens").exists()
seq_len = 32 if FAST else 512

# %% [markdown]
# ## 1. Data

# %%
data = load_text_data(TEXT, tokenizer="bpe", vocab_size=512 if FAST else 8192, block_size=seq_len,
                      train_split="train" if has_train else "valid", eval_split="valid" if has_train else "test",
                      data_dir="../data")
print(f"{len(data.train)} training blocks, {len(data.eval)} evaluation blocks of {seq_len} tokens")

# %%
# check: blocks do not overlap and cover the token stream in order
x, _ = data.train[[0, 1]]
assert x.shape == (2, seq_len) and int(x[1, 0]) == int(data.train.tokens[seq_len])
print("blocks ✓")

# %% [markdown]
# ## 2. Models and their state memory
# State memory = what the layers carry from token to token at sequence length 512: n × m per Rodimus layer,
# plus the window of one shared key and H values for Rodimus+ (convolution buffers left out, as in the paper).

# %%
d, layers = (32, 2) if FAST else (256, 4)
sizes = (4, 16) if FAST else (8, 16, 32, 64)
configs = {("Rodimus", n): ModelConfig(vocab_size=data.vocab_size, d_model=d, n_layers=layers, mem_size=n) for n in sizes}
configs |= {("Rodimus+", n): ModelConfig(vocab_size=data.vocab_size, d_model=d, n_layers=layers // 2, mem_size=n,
                                         block="rodimus_plus", n_heads=2, window=16 if FAST else 64)
            for n in sizes[-1:]}
memory_mb = {key: cache_bytes(c, 512, include_conv=False) / 2**20 for key, c in configs.items()}
memory_mb

# %%
# check: a Rodimus layer's state is n·m numbers of 2 bytes, independent of the context length
key = ("Rodimus", sizes[0])
c = configs[key]
assert cache_bytes(c, 512, include_conv=False) == cache_bytes(c, 10**6, include_conv=False) == 2 * layers * sizes[0] * c.d_inner
print("state memory from the config ✓")

# %% [markdown]
# ## 3. Train

# %%
steps = 15 if FAST else 3000
ours, histories = {}, {}
for (name, n), config in configs.items():
    seed_everything(0)
    trainer = Trainer(RodimusLM(config), data.train, data.eval,
                      TrainConfig(max_steps=steps, batch_size=8 if FAST else 32, lr=3e-3, warmup_steps=steps // 10,
                                  eval_every=0, eval_batch_size=16, progress=not FAST))
    history = trainer.fit()
    histories[f"{name}, n = {n}"] = history
    ppl = [r for r in history if r["kind"] == "eval"][-1]["eval_ppl"]
    ours.setdefault(name, []).append((memory_mb[(name, n)], ppl))
viz.training_curves(histories, y=("loss",), log_y=True, title="3 · training loss")

# %%
# check: every model was evaluated and improved on its first loss
for label, history in histories.items():
    train_losses = [r["loss"] for r in history if r["kind"] == "train"]
    assert train_losses[-1] < train_losses[0], label
print({name: [(round(mb, 4), round(p, 1)) for mb, p in pts] for name, pts in ours.items()})

# %% [markdown]
# ## 4. Beside the paper
# Solid: ours; dashed, open markers: the paper's Fig. 1a (WikiText-103, ~125M-parameter models, seq. 512).
# Compare the shape — perplexity falls as the state grows, Rodimus below the other recurrent models.

# %%
viz.compare_with_paper(ours, viz.paper.FIG1A_PPL_VS_STATE_MB, x_title="recurrent-state memory (MB, log)",
                       y_title="validation perplexity", title="4 · perplexity vs state memory")

# %%
# check: the paper's headline claim, read from its own points: Rodimus at the smallest state beats Mamba2 at the largest
paper = viz.paper.FIG1A_PPL_VS_STATE_MB
assert paper["Rodimus"][0][1] < min(ppl for _, ppl in paper["Mamba2"])
print("paper: Rodimus (n = 8) < Mamba2 (n = 128) in perplexity ✓")

# %% [markdown]
# **Summary.** Perplexity vs state memory is the paper's accuracy–efficiency trade-off in one picture. For the
# real sweep (WikiText-103, n ∈ {8 … 128}) use a GPU and the CLI (`rodimus-lab train --help`).
