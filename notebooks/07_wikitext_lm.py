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
# # 07 — Small language models on WikiText: perplexity vs state memory (the shape of Fig. 1a)
#
# **What you will learn**
# - how to train small Rodimus and Rodimus+ language models on WikiText with the library's `Trainer`;
# - how to measure each model's **recurrent-state memory** from its config (`cache_bytes`) the way the paper
#   counts it (2 bytes per element), in MB = 10⁶ bytes;
# - how to compare gate families fairly (the same state memory, each at its best learning rate) and report each
#   run's best evaluation, as the paper does;
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
from rodimus_lab.paper import FIG1A_PPL_VS_STATE_MB
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
# plus the window of one shared key and H values for Rodimus+ (convolution buffers left out, as in the paper),
# at 2 bytes per element. One unit throughout: **MB = 10⁶ bytes**.

# %%
d, layers = (32, 2) if FAST else (256, 4)
sizes = (4, 16) if FAST else (8, 16, 32, 64)
configs = {("Rodimus", n): ModelConfig(vocab_size=data.vocab_size, d_model=d, n_layers=layers, mem_size=n) for n in sizes}
configs |= {("Rodimus+", n): ModelConfig(vocab_size=data.vocab_size, d_model=d, n_layers=layers // 2, mem_size=n,
                                         block="rodimus_plus", n_heads=2, window=16 if FAST else 64)
            for n in sizes[-1:]}
memory_mb = {key: cache_bytes(c, 512, include_conv=False) / 1e6 for key, c in configs.items()}
memory_mb

# %%
# check: the state memory counted by hand — n·m numbers per Rodimus layer; for Rodimus+ also the window of one
# shared key and H values of d_h — 2 bytes each, in MB; and a Rodimus state does not grow with the context
for (name, n), c in configs.items():
    per_layer = n * c.d_inner + (min(512, c.window) * (1 + c.num_heads) * c.head_dim if c.has_attention else 0)
    assert memory_mb[(name, n)] == 2 * c.n_layers * per_layer / 1e6, (name, n)
c = configs[("Rodimus", sizes[0])]
assert cache_bytes(c, 512, include_conv=False) == cache_bytes(c, 10**6, include_conv=False)
print({f"{name}, n = {n}": f"{mb:.4f} MB" for (name, n), mb in memory_mb.items()}, "✓")

# %% [markdown]
# ## 3. Train, report the best evaluation

# %%
steps = 15 if FAST else 3000


def run(config, lr=3e-3):
    """Train a fresh model (seed 0); returns (history, best validation perplexity over the run's evaluations)."""
    seed_everything(0)
    history = Trainer(RodimusLM(config), data.train, data.eval, TrainConfig(
        max_steps=steps, batch_size=8 if FAST else 32, lr=lr, warmup_steps=steps // 10, eval_every=steps // 3,
        eval_batch_size=16, progress=not FAST)).fit()
    return history, min(r["eval_ppl"] for r in history if r["kind"] == "eval")


ours, histories = {}, {}
for (name, n), config in configs.items():
    histories[f"{name}, n = {n}"], best_ppl = run(config)
    ours.setdefault(name, []).append((memory_mb[(name, n)], best_ppl))
viz.training_curves(histories, y=("loss", "eval_ppl"), log_y=True, title="3 · training loss and validation perplexity")

# %%
# check: every model was evaluated several times and improved on its first loss; the reported perplexity is the best
for (name, n), mb in memory_mb.items():
    history = histories[f"{name}, n = {n}"]
    train_losses = [r["loss"] for r in history if r["kind"] == "train"]
    evals = [r["eval_ppl"] for r in history if r["kind"] == "eval"]
    assert train_losses[-1] < train_losses[0] and len(evals) >= 2, (name, n)
    assert (mb, min(evals)) in ours[name]
print({name: [(f"{mb:.4f} MB", round(p, 1)) for mb, p in pts] for name, pts in ours.items()})

# %% [markdown]
# ## 4. Gate families at the same state memory, each at its best learning rate
# The Rodimus block with four gates of the family (notebook `01`, §7), all with the same n × m state per layer —
# the same memory. They stand for GLA, Mamba2 and HGRN2; they are not those models (no other architecture is
# trained here). Each gets a few learning rates; the table reports its best.

# %%
gate_n = sizes[-1]
gate_lrs = (3e-3, 1e-2) if FAST else (1e-3, 3e-3, 1e-2)
gate_names = {"ddts": "DDTS (Rodimus)", "no_alpha_hat": "GLA-style (α̂ = 1)", "mamba2": "Mamba2-style",
              "hgrn2": "HGRN2-style (α̂ = 1 − α)"}
gate_configs = {gate: ModelConfig(vocab_size=data.vocab_size, d_model=d, n_layers=layers, mem_size=gate_n, gate=gate)
                for gate in gate_names}
gate_ppl = {(gate, lr): run(gate_configs[gate], lr)[1] for gate in gate_names for lr in gate_lrs}
best_lr = {gate: min(gate_lrs, key=lambda lr: gate_ppl[(gate, lr)]) for gate in gate_names}
viz.grouped_bars({f"lr {lr:g}": {gate_names[g]: gate_ppl[(g, lr)] for g in gate_names} for lr in gate_lrs},
                 y_title="best validation perplexity",
                 title=f"4 · gates at n = {gate_n} ({memory_mb[('Rodimus', gate_n)]:.4f} MB of state), {steps} steps")

# %%
# check: the same state memory for every gate; each gate's reported perplexity is its best learning rate
assert len({cache_bytes(c, 512, include_conv=False) for c in gate_configs.values()}) == 1
for gate in gate_names:
    assert gate_ppl[(gate, best_lr[gate])] == min(gate_ppl[(gate, lr)] for lr in gate_lrs)
print({gate_names[g]: f"ppl {gate_ppl[(g, best_lr[g])]:.1f} at lr {best_lr[g]:g}" for g in gate_names}, "✓")

# %% [markdown]
# ## 5. Beside the paper
# Solid: ours (best evaluation of each run); dashed, open markers: the paper's Fig. 1a (WikiText-103,
# ~125M-parameter models, sequence length 512, state in MB at 2 bytes per element). The paper reports Rodimus
# below Mamba2, HGRN2 and GLA at every state size; our runs say only what sections 3–4 measured — at this scale,
# and in fast mode nothing at all (the fixture text is a few KB).

# %%
viz.compare_with_paper(ours, FIG1A_PPL_VS_STATE_MB, x_title="recurrent-state memory (MB = 10⁶ bytes, log)",
                       y_title="validation perplexity (best evaluation)", title="5 · perplexity vs state memory")

# %%
# check: the paper's headline claim, read from its own points: Rodimus at the smallest state beats Mamba2 at the largest
paper = FIG1A_PPL_VS_STATE_MB
assert paper["Rodimus"][0][1] < min(ppl for _, ppl in paper["Mamba2"])
print("paper: Rodimus (n = 8) < Mamba2 (n = 128) in perplexity ✓")

# %% [markdown]
# ## 6. The GPU sweep, if its results are here
# **Place for the paper-scale results.** `rodimus-lab sweep experiments/wikitext_state_memory.yaml` (see
# `docs/paper_figures.md`) writes one JSON line per trained point into
# `docs/results/wikitext_state_memory*/results.jsonl` (where `benchmarks/run_paper_sweeps.sh` keeps them); those files are drawn here (each family and state size at its best learning rate).
# Without such a file this section is skipped.

# %%
sweep_files = sorted(Path("../docs/results").glob("wikitext_state_memory*/results.jsonl"))
if sweep_files:
    from rodimus_lab.sweep import figure_series, read_results

    records = [r for f in sweep_files for r in read_results(f.parent)]
    series, references, _ = figure_series(records, {"x": "state_mb", "y": "eval_ppl"})
    print(f"{len(records)} runs from {[str(f.parent.name) for f in sweep_files]}; references without a state: {references}")
    sweep_figure = viz.compare_with_paper(series, FIG1A_PPL_VS_STATE_MB,
                                          x_title="recurrent-state memory (MB = 10⁶ bytes, log)",
                                          y_title="validation perplexity (best evaluation)", title="6 · the GPU sweep",
                                          side_by_side=True)
else:
    sweep_figure = print("no docs/results/wikitext_state_memory*/results.jsonl yet: skipped")
sweep_figure

# %%
# check: each plotted point is the best run of its (family, state size) in the files, recomputed here
if sweep_files:
    best_by_hand = {}
    for r in records:
        key = (r["family"], r["state"]["mb"])
        best_by_hand[key] = min(best_by_hand.get(key, float("inf")), r["best"]["eval_ppl"])
    for family, points in series.items():
        for mb, ppl in points:
            assert ppl == best_by_hand[(family, mb)], (family, mb)
    for family in dict.fromkeys(f for f, _ in best_by_hand):
        row = sorted((mb, ppl) for (f, mb), ppl in best_by_hand.items() if f == family)
        print(f"{family:<42}" + "  ".join(f"{mb:.3f} MB: {ppl:.1f}" for mb, ppl in row))
    spread = [ppl for ppl in best_by_hand.values()]
    print(f"plotted = best per (family, state) ✓; all points within {min(spread):.1f}–{max(spread):.1f}")

# %% [markdown]
# Read the rows: is the gap between two families at equal memory larger than the scatter of one family across
# its state sizes? Only then is it a ranking. `docs/paper_figures.md` states our verdict for each claim of
# Fig. 1a, with these numbers and how far this reduced run is from the paper's scale.

# %% [markdown]
# **Summary.** Perplexity vs state memory is the paper's accuracy–efficiency trade-off in one picture. This notebook
# measured the best validation perplexity of each run (section 3) and of four gates at equal state memory at their
# best learning rate (section 4); the paper's ranking of the real models is the paper's. For the real sweep
# (WikiText-103, n ∈ {8 … 128}) use a GPU and `rodimus-lab sweep`.
