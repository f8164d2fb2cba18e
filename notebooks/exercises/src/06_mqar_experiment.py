# %% [markdown]
# # MQAR: measuring associative recall — then an experiment
#
# Multi-query associative recall (MQAR, from Zoology) is the task the paper uses to show how much a
# fixed-size state can remember: a sequence of key–value pairs, then some of the keys again; after each
# queried key the model must produce its value. Comparable numbers need the exact same metric.

# %%
import torch

from rodimus_lab.data.mqar import generate_mqar
from rodimus_lab.exercises import check

# %% [markdown]
# **See it**: one short example (vocab 64, so keys are in $[1, 32)$ and values in $[32, 64)$).
# `labels[i, t]` is the token to predict after `inputs[i, t]`: the value sits at its queried key's
# position, and every other label is −100 (ignored).

# %%
inputs, labels = generate_mqar(1, 24, 4, vocab_size=64, seed=0)
print("inputs:", inputs[0].tolist())
print("labels:", labels[0].tolist())

# %% [markdown]
# ## Exercise 14 · `mqar_accuracy` — Zoology's metric (≈ 10 min)
#
# Given `logits [N, L, V]` and `labels [N, L]`: the prediction at each position is the argmax over
# the **full** vocab; an example's accuracy is the fraction of its labelled positions
# (`labels != -100`) predicted right; the reported accuracy is the **mean over examples** of that
# fraction. Return a plain Python float in $[0, 1]$.

# %%
def mqar_accuracy(logits, labels):
    """Zoology's MQAR accuracy."""
    # BEGIN SOLUTION
    labelled = labels != -100
    correct = (logits.argmax(dim=-1) == labels) & labelled
    per_example = correct.sum(dim=1) / labelled.sum(dim=1)
    return float(per_example.mean())
    # END SOLUTION


# %% tags=["check"]
check("mqar_accuracy", mqar_accuracy)

# %% [markdown]
# ## Exercise 15 · `recall_after_training` — predict, then measure (≈ 40 min, 10 of them waiting)
#
# Now you measure something no equation tells you. First the measurement itself: write the function
# that one row of notebook `06_mqar_recall` computes. Given a `ModelConfig`, an MQAR task
# (`rodimus_lab.data.mqar.MQARPreset`) and a `TrainConfig`:
#
# 1. `seed_everything(train_config.seed)`, **then** build `RodimusLM(config)` (so the weights are reproducible);
# 2. `train, test = make_mqar_splits(task, seed=0)`;
# 3. `history = Trainer(model, train, test, train_config).fit()` — a list of records; those with
#    `kind == "eval"` carry `eval_accuracy` (your exercise-14 metric on the test split);
# 4. return the **best** `eval_accuracy` over the run (the paper reports the best evaluation).

# %%
from rodimus_lab import ModelConfig, RodimusLM, seed_everything
from rodimus_lab.data.mqar import MQARPreset, make_mqar_splits
from rodimus_lab.exercises import check_recall_experiment
from rodimus_lab.train import TrainConfig, Trainer


def recall_after_training(config, task, train_config):
    """The best test accuracy of a fresh model trained on the MQAR task."""
    # BEGIN SOLUTION
    seed_everything(train_config.seed)
    train, test = make_mqar_splits(task, seed=0)
    history = Trainer(RodimusLM(config), train, test, train_config).fit()
    return max(r["eval_accuracy"] for r in history if r["kind"] == "eval")
    # END SOLUTION


# %% tags=["check"]
check("recall_after_training", recall_after_training)

# %% [markdown]
# ### Predict first
# DDTS has a temperature τ; the ablation `gate="no_tau"` fixes τ = 1 — Mamba's pair (e^{−g}, g).
# Below, a small Rodimus learns MQAR (L = 32, 4 pairs) with each gate, two seeds each, the same budget.
# **Before you run it**, write down which gate you expect to recall better — `"ddts"`, `"no_tau"` or
# `"tie"` (no difference beyond the spread between seeds) — and one sentence why. (Notebook `01`, the
# selection curves: what does τ < 1 do to α and α̂ for a token that writes strongly?)

# %%
my_prediction = None      # "ddts", "no_tau" or "tie"
my_reason = ""

# %% [markdown]
# ### Then measure
# One run of 30 steps took 11 s on a shared 2-core CPU (measured while writing this); the time grows
# with the steps, so `STEPS = 300` with three seeds is a coffee break. `check_recall_experiment` checks that
# the numbers are sane (fractions, the same seeds for both gates) and calls a difference real only if it is
# larger than the spread between seeds.

# %%
torch.set_num_threads(1)           # tiny models: extra threads only add overhead
STEPS, SEEDS = 20, (0, 1)          # a quick look; 300 steps and seeds (0, 1, 2) show more
task = MQARPreset(32, 4, vocab_size=64, num_train=2_000, num_test=128, random_non_queries=False)
results = {}
try:
    for gate in ("ddts", "no_tau"):
        config = ModelConfig(vocab_size=64, d_model=32, n_layers=2, mem_size=8, gate=gate)
        results[gate] = [recall_after_training(config, task, TrainConfig(
            max_steps=STEPS, batch_size=32, lr=3e-3, warmup_steps=STEPS // 10, eval_every=max(STEPS // 4, 1),
            seed=seed, progress=False)) for seed in SEEDS]
except NotImplementedError:
    results = None
    print("Solve exercise 15 first: this cell runs your recall_after_training.")
if results is not None:
    check_recall_experiment(results, prediction=my_prediction)

# %% [markdown]
# **Discuss.** Did the measurement agree with your prediction? At 20 steps neither model has learned
# much — is the difference you see larger than the seed spread? What would you change (steps, seeds,
# state size n) to make the comparison fair and firm, and what does the paper's Table (τ ablation) report?
