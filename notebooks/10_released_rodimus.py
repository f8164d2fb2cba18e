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
# # 10 — Explore the gates of a released Rodimus+
#
# **What you will learn**
# - how to load a checkpoint released by the Rodimus authors (`rodimus_lab.from_pretrained`) — the official
#   Hugging Face snapshot: `config.json`, the weights, `tokenizer.json`;
# - how to check that what you loaded is what the files hold, and that decoding from the recurrent state
#   computes what the forward pass computes;
# - what DDTS does inside a model trained on trillions of tokens: which tokens of a piece of code are
#   written into the state, and where the state is kept.
#
# **Getting the weights.** The releases live on the Hugging Face hub (and on ModelScope under the same names):
# `codefuse-ai/Rodimus-Plus-Coder-1.6B-Base` (7.5 GB in float32), `…-1.6B-Chat`, `…-4B-Base`, `…-4B-Chat`, and the
# paper's `codefuse-ai/rodimus_plus_1B6_base_20241001`. Download one once with network access —
#
#     hf download codefuse-ai/Rodimus-Plus-Coder-1.6B-Base      # (huggingface-cli download … with older huggingface_hub)
#
# — and this notebook finds it in the Hugging Face cache; or set `RODIMUS_PRETRAINED` to a snapshot folder or
# another repo id. Without the weights (and always in fast mode, `RODIMUS_FAST=1`), the same cells run on a
# small random Rodimus+ written in the official format, so you can see the pipeline work — its gates are
# untrained and show nothing.

# %%
import os
import tempfile
from pathlib import Path

import torch

import rodimus_lab
from rodimus_lab import ModelConfig, RodimusLM, seed_everything, viz
from rodimus_lab.data.text import train_bpe
from rodimus_lab.generate import generate
from rodimus_lab.official import official_state_dict
from rodimus_lab.pretrained import PretrainedError, load_tokenizer, read_weights, save_pretrained, snapshot_folder

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"
if FAST:
    torch.set_num_threads(1)   # tiny models gain nothing from threads; on a shared CI CPU they cost
seed_everything(0)
SOURCE = os.environ.get("RODIMUS_PRETRAINED", "codefuse-ai/Rodimus-Plus-Coder-1.6B-Base")
CODE = '''def fibonacci(n):
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)
'''

# %% [markdown]
# ## 1. Find the snapshot
# `snapshot_folder` takes a folder, or a repo id that it looks up in the Hugging Face cache (with
# `download=False` it never downloads 7.5 GB behind your back).

# %%
folder = None
if not FAST:
    try:
        folder = snapshot_folder(SOURCE, download=False)
    except PretrainedError as e:
        print(f"no released weights here — {e}\n")
released = folder is not None
if not released:
    # The stand-in: a small random Rodimus+ and a byte-level BPE, written as an official snapshot.
    demo = Path(tempfile.mkdtemp(prefix="rodimus-snapshot-"))
    bpe = train_bpe(CODE.splitlines() * 4 + ["x = [i * i for i in range(10)]", "print(x)"], vocab_size=300,
                    data_dir=demo / "bpe")
    stand_in = RodimusLM(ModelConfig(vocab_size=bpe.vocab_size, d_model=64, n_layers=2, block="rodimus_plus",
                                     n_heads=4, mem_size=16, window=9)).eval()
    folder = save_pretrained(stand_in, demo / "snapshot", shards=2, tokenizer=bpe.path)
    print("using a small random Rodimus+ in the official format (untrained: its gates carry no meaning)")
print(f"snapshot {folder}: {sorted(p.name for p in folder.iterdir())}")

# %% [markdown]
# ## 2. Load it
# `from_pretrained` reads `config.json` (every official key is mapped, or refused by name if rodimus-lab cannot
# reproduce it), the weights (one file, or shards with their index) and renames the official tensors.

# %%
model = rodimus_lab.from_pretrained(folder)
tok = load_tokenizer(folder)
c = model.config
print(f"{c.block}: {c.n_layers} layers, d_model {c.d_model}, DDTS state {c.mem_size} × {c.d_inner}, "
      f"{c.num_heads} query heads ({c.layout}), window {c.window} keys, vocabulary {c.vocab_size}; "
      f"{model.num_parameters() / 1e6:.1f} M parameters")

# %%
# check: the model holds exactly the tensors of the files, under the official names
tensors, sources = read_weights(folder)
ours = official_state_dict(model)
for name, tensor in tensors.items():
    assert torch.equal(ours[name], tensor.to(ours[name].dtype)), name
if not released:
    ids = torch.randint(0, c.vocab_size, (1, 12))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, stand_in(ids).logits)
print(f"{len(tensors)} tensors from {sorted(set(sources.values()))} are the model's ✓")

# %% [markdown]
# ## 3. Continue a piece of code
# `generate` runs the prompt through the forward pass once and then decodes token by token from the state:
# the DDTS state of each layer and a ring buffer of the last `window` keys and values.

# %%
prompt = torch.tensor([tok.encode(CODE[:40])])
out = generate(model, prompt, 8 if FAST else 40, temperature=0)
print(tok.decode(out[0].tolist()))

# %%
# check: every greedy token is the argmax of the FORWARD pass over the tokens before it — decoding from
# the recurrent state and the sliding-window cache computes what the forward pass computes
with torch.no_grad():
    forward_logits = model(out[:, :-1]).logits[0, prompt.shape[1] - 1:]
assert torch.equal(forward_logits.argmax(-1), out[0, prompt.shape[1]:])
print("greedy decoding = argmax of the forward pass, token by token ✓")

# %% [markdown]
# ## 4. The gates, token by token
# `viz.probe` reads every layer's gates on the code (forward hooks, no model change). Rows are state
# dimensions, columns tokens. −ln α = τg is on a log scale: small (dark) = the state is kept.

# %%
layer = c.n_layers // 2
mixer = model.layers[layer].mixer
captured = {}
hook = mixer.short_conv.register_forward_hook(lambda mod, inp, out: captured.update(x_conv=out))
result = viz.probe(model, text=CODE, tokenizer=tok)
hook.remove()
viz.gate_heatmaps(result.gates[layer], tokens=result.tokens, title=f"4 · DDTS gates of layer {layer}")

# %%
viz.write_keep_profile(result.gates[layer], tokens=result.tokens,
                       title="4 · which tokens are written, where the state is kept")

# %%
# check: the probed gates are the layer's own — recomputed from the conv output x̃ (read by a hook) and the
# released gate projection: g = softplus(x̃W_g + b_g), τ = sigmoid(x̃W_τ + b_τ), α = e^{−τg}, α̂ = g^τ
g = result.gates[layer]
with torch.no_grad():
    proj = mixer.mem_gate_proj
    g_logits, tau_logits = (captured["x_conv"][0].float() @ proj.weight.float().T + proj.bias.float()).split(c.mem_size, -1)
g_hand, tau_hand = torch.nn.functional.softplus(g_logits), torch.sigmoid(tau_logits)
assert torch.allclose(g["g"], g_hand, rtol=1e-4, atol=1e-6) and torch.allclose(g["tau"], tau_hand, rtol=1e-4)
assert torch.allclose(g["alpha_hat"], g_hand ** tau_hand, rtol=1e-4, atol=1e-6)
print(f"layer {layer}: the probed gates are (e^{{−g}}, g)^τ of the loaded projection; "
      f"α ∈ [{float(g['log_alpha'].exp().min()):.4f}, {float(g['log_alpha'].exp().max()):.6f}] ✓")

# %% [markdown]
# ## 5. Which tokens does it write?
# Rank the code's tokens by their mean write strength α̂ over the state dims, in every layer. In the released
# model, look for structure: names and keywords against whitespace and punctuation.

# %%
for i, gates in sorted(result.gates.items()):
    write = gates["alpha_hat"].mean(1)
    order = write.argsort(descending=True).tolist()
    print(f"layer {i:2d} most written: {[result.tokens[j] for j in order[:6]]}  least: {[result.tokens[j] for j in order[-4:]]}")

# %%
viz.selection_curves(observed=g, title=f"5 · layer {layer}'s gates on the tempered selection curves")

# %% [markdown]
# ## 6. Explore it yourself
# Step through the code token by token (Play, the slider, or hover a token), switch layers, or pick
# *(type your own)* and enter any text.

# %%
from rodimus_lab.widgets import GateExplorer

GateExplorer(model, {"fibonacci": CODE}, tokenizer=tok, layer=layer)

# %% [markdown]
# **Summary.** A released checkpoint is one call away, and the same probes, figures and widgets that teach DDTS
# on toy models read it. `docs/official.md` says how the official code's conventions map onto rodimus-lab's
# (window size, head pairing, RoPE variants) and where its own KV-cache decoding departs from its forward pass.
