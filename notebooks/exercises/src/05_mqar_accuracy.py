# %% [markdown]
# # MQAR: measuring associative recall
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
# ## Exercise 12 · `mqar_accuracy` — Zoology's metric (≈ 10 min)
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
