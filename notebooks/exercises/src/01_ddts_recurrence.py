# %% [markdown]
# # DDTS, part 1 — the gates and the recurrence
#
# A Rodimus layer replaces attention's growing KV cache with a **fixed-size matrix state**
# $S \in \mathbb{R}^{n \times m}$ per head (key dim $n$, value dim $m$). Each token decays the state
# and writes itself into it; the output reads the state with the query. How much to forget and how
# much to write is decided per token by **DDTS** (data-dependent tempered selection).
#
# How to work: read the maths, fill in the function where it says `# YOUR CODE HERE`, run the
# check cell below it. The check runs your function on fresh random inputs and compares it with
# rodimus-lab's reference; if something is off it tells you what differed and hints at why (and
# prints a seed so you can replay exactly that case).
#
# Tensors use the layout `[B, T, H, D]` (batch, time, heads, dim); the state is `[B, H, n, m]`.

# %%
import torch
import torch.nn.functional as F

from rodimus_lab.exercises import check

# %% [markdown]
# ## Exercise 1 · `ddts_gates` — the tempered selection pair (≈ 10 min)
#
# From two logits per state dim, DDTS computes
#
# $$g = \operatorname{softplus}(g_\text{logits}) > 0 \qquad \tau = \sigma(\tau_\text{logits}) \in (0, 1)$$
#
# $$\alpha = e^{-\tau g} \quad\text{(decay)}, \qquad \hat\alpha = g^{\tau} \quad\text{(input gate)},
# \qquad\text{i.e.}\quad (\alpha, \hat\alpha) = (e^{-g},\, g)^{\tau}.$$
#
# A large $g$ forgets more **and** writes more (selection); the temperature $\tau$ softens both.
# Return $\log\alpha$ rather than $\alpha$ (products of decays become sums) and $\hat\alpha$.

# %%
def ddts_gates(g_logits, tau_logits):
    """(log_alpha, alpha_hat) from the gate logits; every tensor has the same shape."""
    # BEGIN SOLUTION
    g = F.softplus(g_logits)
    tau = torch.sigmoid(tau_logits)
    return -tau * g, g ** tau
    # END SOLUTION


# %% tags=["check"]
check("ddts_gates", ddts_gates)

# %% [markdown]
# **See it** (drawn with the library's gates, so it runs before you solve anything): as $g$ grows,
# $\alpha$ falls and $\hat\alpha$ rises — forgetting and writing move together (selection); a
# lower temperature $\tau$ flattens both.

# %%
from rodimus_lab.viz import selection_curves

selection_curves()

# %% [markdown]
# ## Exercise 2 · `ddts_step` — one token (≈ 15 min)
#
# With row vectors $q_t, k_t \in \mathbb{R}^{n}$, $v_t \in \mathbb{R}^{m}$ and the decay $\alpha_t \in (0, 1]^n$:
#
# $$S_t = \operatorname{diag}(\alpha_t)\, S_{t-1} + k_t^\top v_t, \qquad o_t = \text{scale} \cdot q_t S_t,
# \qquad \text{scale} = n^{-1/2} \text{ unless given.}$$
#
# Shapes for one step: `q, k, log_alpha` are `[B, H, n]`, `v` is `[B, H, m]`, `state` is `[B, H, n, m]`.
# Return `(o [B, H, m], new_state [B, H, n, m])`. Don't modify `state` in place — the caller keeps it.

# %%
def ddts_step(q, k, v, log_alpha, state, *, scale=None):
    """One DDTS step: decay the state, write k_tᵀ v_t, read with q_t."""
    # BEGIN SOLUTION
    if scale is None:
        scale = q.shape[-1] ** -0.5
    state = log_alpha.exp()[..., None] * state + k[..., :, None] * v[..., None, :]
    o = scale * torch.einsum("bhn,bhnm->bhm", q, state)
    return o, state
    # END SOLUTION


# %% tags=["check"]
check("ddts_step", ddts_step)

# %% [markdown]
# ## Exercise 3 · `ddts_recurrent` — the whole sequence (≈ 15 min)
#
# Run the step over $t = 1 \dots T$ (you may call your `ddts_step`). Inputs are `[B, T, H, ·]`.
# Start from `initial_state` when it is given, from zeros `[B, H, n, m]` otherwise. Return
# `(o [B, T, H, m], final_state)` where `final_state` is the last state if `output_final_state`
# else `None`.
#
# This loop is the *definition* of DDTS; the parallel and chunkwise forms of the next notebook must
# agree with it. While decoding, this state is all a Rodimus layer remembers — its size does not
# grow with the context.

# %%
def ddts_recurrent(q, k, v, log_alpha, *, scale=None, initial_state=None, output_final_state=False):
    """DDTS over a sequence, one token at a time."""
    # BEGIN SOLUTION
    B, T, H, n = q.shape
    state = initial_state if initial_state is not None else torch.zeros(B, H, n, v.shape[-1], dtype=v.dtype)
    outputs = []
    for t in range(T):
        o, state = ddts_step(q[:, t], k[:, t], v[:, t], log_alpha[:, t], state, scale=scale)
        outputs.append(o)
    return torch.stack(outputs, dim=1), (state if output_final_state else None)
    # END SOLUTION


# %% tags=["check"]
check("ddts_recurrent", ddts_recurrent)
