# %% [markdown]
# # DDTS, part 2 — the implicit attention matrix and chunks
#
# The recurrence of part 1 visits tokens one by one. Unrolling it gives two other forms of the same
# function: a **parallel** form, where DDTS is attention with a special (implicit) attention matrix,
# and a **chunkwise** form, which trains fast and never overflows. Layout as before: `[B, T, H, D]`.

# %%
import torch

from rodimus_lab.exercises import check

# %% [markdown]
# ## Exercise 10 · `ddts_parallel_mask` — build the implicit attention matrix (≈ 20 min)
#
# Unroll $S_i = \operatorname{diag}(\alpha_i) S_{i-1} + k_i^\top v_i$ from $S_0 = 0$: token $j$'s write
# reaches step $i \ge j$ decayed by $\alpha_{j+1} \cdots \alpha_i$. With the cumulative log-decay
# $\Lambda_t = \sum_{s \le t} \log\alpha_s$ (inclusive, one value per key dim):
#
# $$o_i = \sum_{j \le i} A_{ij}\, v_j, \qquad
# A_{ij} = \text{scale} \sum_{n} q_i[n]\, k_j[n]\, e^{\Lambda_i[n] - \Lambda_j[n]} \ \ (j \le i), \qquad A_{ij} = 0 \ \ (j > i).$$
#
# Return `(o [B, T, H, m], attn [B, H, T, T])` with `attn[b, h, i, j]` $= A_{ij}$ (rows are queries).
# Tip: take the difference $\Lambda_i - \Lambda_j$ *before* the exponential and mask with $-\infty$,
# so nothing overflows.

# %%
def ddts_parallel(q, k, v, log_alpha, *, scale=None):
    """DDTS all at once through its implicit attention matrix."""
    # BEGIN SOLUTION
    n, T = q.shape[-1], q.shape[1]
    scale = n ** -0.5 if scale is None else scale
    q, k, v, log_alpha = (x.transpose(1, 2) for x in (q, k, v, log_alpha))   # [B, H, T, ·]
    cum = log_alpha.cumsum(dim=2)                                             # Λ
    diff = cum[:, :, :, None, :] - cum[:, :, None, :, :]                      # Λ_i − Λ_j: [B, H, i, j, n]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    decay = diff.masked_fill(~causal[..., None], float("-inf")).exp()
    attn = scale * torch.einsum("bhin,bhjn,bhijn->bhij", q, k, decay)
    return (attn @ v).transpose(1, 2), attn
    # END SOLUTION


# %% tags=["check"]
check("ddts_parallel_mask", ddts_parallel)

# %% [markdown]
# **See it** — drawn from *your* `ddts_parallel` once it passes: the implicit attention matrix of one
# head on random inputs, with Rodimus' gates and normalised keys. The outlined diagonal blocks are
# what the chunkwise form (exercise 11) computes as attention inside each chunk of 8; everything left
# of them reaches a query through the state carried between chunks.

# %%
from rodimus_lab.ddts import ddts_gates, effective_key
from rodimus_lab.viz import attention_matrix

generator = torch.Generator().manual_seed(0)
T, n, m = 24, 8, 8
q, k, v, g_logits, tau_logits = (torch.randn(1, T, 1, d, generator=generator) for d in (n, n, m, n, n))
log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
try:
    _, attn = ddts_parallel(q, effective_key(k, alpha_hat), v, log_alpha)      # your function, from above
    figure = attention_matrix(attn[0, 0], chunk_size=8)
except NotImplementedError:
    figure = print("Solve exercise 10 first: this cell draws the matrix your ddts_parallel returns.")
figure

# %% [markdown]
# ## Exercise 11 · `ddts_chunkwise` — one chunk-to-chunk state update (≈ 20 min)
#
# The chunkwise form cuts the sequence into chunks of $C$ tokens. Inside a chunk it uses the
# attention form; between chunks it carries the state. Your job is the hand-over: given the state
# $S$ before a chunk and the chunk's `k, v, log_alpha` (`[B, C, H, ·]`), return the state after
# the chunk — **without a loop over tokens**. With $b_j = \sum_{s \le j} \log\alpha_s$ the local
# (inclusive) cumulative decay inside the chunk and $b_C$ its last row:
#
# $$S_\text{new} = \operatorname{diag}(e^{b_C})\, S + \sum_{j=1}^{C} \big(k_j \odot e^{b_C - b_j}\big)^\top v_j .$$
#
# Every exponent is $\le 0$: this form never overflows, however long the sequence. It must equal
# $C$ steps of your `ddts_step`.

# %%
def chunk_state_update(k, v, log_alpha, state):
    """The state after one chunk: k, log_alpha [B, C, H, n], v [B, C, H, m], state [B, H, n, m]."""
    # BEGIN SOLUTION
    b = log_alpha.cumsum(dim=1)                                 # [B, C, H, n]
    b_last = b[:, -1]                                           # [B, H, n]
    k_decayed = k * (b_last[:, None] - b).exp()                 # each write decayed to the chunk's end
    writes = torch.einsum("bchn,bchm->bhnm", k_decayed, v)
    return b_last.exp()[..., None] * state + writes
    # END SOLUTION


# %% tags=["check"]
check("ddts_chunkwise", chunk_state_update)
