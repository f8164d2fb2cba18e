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
# # 08 — The chunkwise algorithm and the Triton kernels
#
# **What you will learn**
# - the chunkwise form of DDTS tile by tile: attention *inside* a chunk, a carried state *between* chunks —
#   the plan the Triton kernel `rodimus_kernels.ddts` follows;
# - how the kernels are checked against the PyTorch reference: on a GPU if there is one, otherwise through
#   Triton's CPU interpreter (`TRITON_INTERPRET=1`) on small shapes;
# - where the measured speed-ups live (`docs/benchmarks.md`) and how to plot them.

# %%
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # must be set before rodimus_kernels is imported


from rodimus_lab import seed_everything, viz
from rodimus_lab.attention import attention
from rodimus_lab.ddts import ddts, ddts_chunkwise, ddts_gates, ddts_parallel, ddts_recurrent, effective_key

viz.use_notebook_renderer()
FAST = os.environ.get("RODIMUS_FAST") == "1"
seed_everything(0)
T, n, m, C = 24, 8, 6, 8          # tokens, key dim, value dim, chunk size
q, k = torch.randn(1, T, 1, n, dtype=torch.float64), torch.randn(1, T, 1, n, dtype=torch.float64)
v = torch.randn(1, T, 1, m, dtype=torch.float64)
log_alpha, alpha_hat = ddts_gates(torch.randn(1, T, 1, n, dtype=torch.float64), torch.randn(1, T, 1, n, dtype=torch.float64))
k_eff = effective_key(k, alpha_hat)   # α̂ ⊙ k/‖k‖

# %% [markdown]
# ## 1. The implicit attention matrix, cut into chunks
# The chunkwise form computes the orange **diagonal blocks** as small attention matrices (parallel,
# tensor-core friendly). Everything **left of a block** reaches the chunk through one n × m state carried
# from the previous chunk — never materialised as a T × T matrix.

# %%
o_par, attn = ddts_parallel(q, k_eff, v, log_alpha)
viz.attention_matrix(attn[0, 0], chunk_size=C, title=f"1 · implicit attention, chunks of {C} tokens")

# %% [markdown]
# ## 2. Tile by tile, written out
# Inside a chunk, let `b_i = Σ_{s ≤ i} log α_s` be the chunk-local cumulative log-decay (b ≤ 0, decreasing) and
# `S` the state handed over from the previous chunks. Then, with scale = n^−1/2,
#
# - **the diagonal block**: `A_ij = scale · Σ_n q_i[n] k_j[n] e^{b_i[n] − b_j[n]}` for j ≤ i — attention inside
#   the chunk, as if the state started at zero;
# - **what the carried state adds**: `scale · (q_i ⊙ e^{b_i}) S` — the state decayed to token i, read by q_i;
# - **the hand-over**: `S_next = diag(e^{b_C}) S + Σ_j (k_j ⊙ e^{b_C − b_j})ᵀ v_j` — the old state decayed over the
#   whole chunk, plus every write of the chunk decayed to its end.
#
# Every exponent is ≤ 0, so nothing overflows however long the sequence. Below, these three lines run chunk by
# chunk (no library call) and are compared with the recurrence written as a plain loop.
# *Practise: exercises 10–11 (`ddts_parallel_mask`, `ddts_chunkwise`).*

# %%
scale = n ** -0.5
causal = torch.ones(C, C, dtype=torch.bool).tril()
state = torch.zeros(n, m, dtype=torch.float64)
pieces, blocks = [], []
for start in range(0, T, C):
    qc, kc, vc, lac = (x[0, start:start + C, 0] for x in (q, k_eff, v, log_alpha))
    b = lac.cumsum(0)                                                        # [C, n], ≤ 0
    decay = (b[:, None, :] - b[None, :, :]).masked_fill(~causal[..., None], float("-inf")).exp()
    block = scale * torch.einsum("in,jn,ijn->ij", qc, kc, decay)             # the diagonal block
    pieces.append(block @ vc + scale * (qc * b.exp()) @ state)               # + what the carried state adds
    state = b[-1].exp()[:, None] * state + (kc * (b[-1] - b).exp()).T @ vc   # the hand-over
    blocks.append(block)
o_tiles = torch.cat(pieces)

S_loop, o_loop = torch.zeros(n, m, dtype=torch.float64), []                 # the recurrence, token by token
for t in range(T):
    S_loop = log_alpha[0, t, 0].exp()[:, None] * S_loop + torch.outer(k_eff[0, t, 0], v[0, t, 0])
    o_loop.append(scale * q[0, t, 0] @ S_loop)
o_loop = torch.stack(o_loop)
float((o_tiles - o_loop).abs().max())

# %%
# check: blocks + carried state + hand-over reproduce the token-by-token loop and its final state; the library's
# diagonal blocks, parallel, recurrent and chunkwise forms agree with the same loop
assert torch.allclose(o_tiles, o_loop) and torch.allclose(state, S_loop)
assert all(torch.allclose(blk, attn[0, 0, i * C:(i + 1) * C, i * C:(i + 1) * C]) for i, blk in enumerate(blocks))
o_rec, S_rec = ddts_recurrent(q, k_eff, v, log_alpha, output_final_state=True)
o_chunk, S_chunk = ddts_chunkwise(q, k_eff, v, log_alpha, chunk_size=C, output_final_state=True)
assert all(torch.allclose(o[0, :, 0], o_loop) for o in (o_par, o_rec, o_chunk))
assert torch.allclose(S_rec[0, 0], S_loop) and torch.allclose(S_chunk[0, 0], S_loop)
print("diagonal blocks + carried state + hand-over = the loop; library forms = the loop ✓")

# %%
viz.state_norms({"‖S_t‖ (recurrent)": torch.stack([ddts_recurrent(q[:, :t], k_eff[:, :t], v[:, :t], log_alpha[:, :t],
                                                                  output_final_state=True)[1][0, 0] for t in range(1, T + 1)])},
                title="2 · the state the chunks hand over (sampled at every token)")

# %% [markdown]
# ## 3. Kernel vs reference
# `rodimus_kernels.ddts(q, k, v, g_logits, tau_logits)` fuses the gates, the key normalisation and the
# chunkwise algorithm. On a GPU it runs the compiled kernels; on a CPU with `TRITON_INTERPRET=1` (set in the
# first cell) the *same* Triton code runs in Triton's interpreter — slow, so only small shapes here.

# %%
try:
    import rodimus_kernels
except ImportError as error:          # the kernels package is optional (pip install -e ".[kernels]")
    rodimus_kernels, missing = None, error
device = "cuda" if torch.cuda.is_available() else "cpu"
mode = "GPU" if device == "cuda" else ("TRITON_INTERPRET=1 (CPU)" if os.environ.get("TRITON_INTERPRET") == "1" else "reference fallback")
results = {}
if rodimus_kernels is not None:
    B, Tk, H, nk, mk = (1, 40, 2, 16, 32) if FAST else (2, 130, 2, 16, 64)
    gen = torch.Generator().manual_seed(1)
    qk, kk = (torch.randn(B, Tk, H, nk, generator=gen) for _ in range(2))
    vk = torch.randn(B, Tk, H, mk, generator=gen)
    g_logits, tau_logits = (torch.randn(B, Tk, H, nk, generator=gen) for _ in range(2))
    o_kernel, S_kernel = rodimus_kernels.ddts(*(t.to(device) for t in (qk, kk, vk, g_logits, tau_logits)),
                                              output_final_state=True)
    # the reference twin with the kernel's signature: gates and key norm, then the chunkwise form
    o_ref, S_ref = ddts(qk, kk, vk, g_logits, tau_logits, output_final_state=True)
    results["ddts output"] = float((o_kernel.cpu() - o_ref).abs().max())
    results["ddts final state"] = float((S_kernel.cpu() - S_ref).abs().max())
    sw_ska = getattr(rodimus_kernels, "sw_ska", None)
    if sw_ska is not None:
        qa, va = torch.randn(B, Tk, 4, 32, generator=gen), torch.randn(B, Tk, 4, 32, generator=gen)
        ka = torch.randn(B, Tk, 1, 32, generator=gen)
        o_sw = sw_ska(qa.to(device), ka.to(device), va.to(device), window=9)
        results["sw_ska output"] = float((o_sw.cpu() - attention(qa, ka, va, window=9)).abs().max())
print(f"mode: {mode}")
results if rodimus_kernels is not None else f"rodimus_kernels is not installed here: {missing}"

# %%
# check: every kernel agrees with its reference twin (float32 tolerances)
assert all(err < 1e-4 for err in results.values()), results
print("kernels = reference ✓" if results else "no kernels to check in this install")

# %% [markdown]
# ## 4. The benchmark table
# `docs/benchmarks.md` holds the numbers measured on a GPU by the scripts in `benchmarks/`. Every Markdown
# table in it is parsed by `viz.markdown_tables`; pick the columns to plot.

# %%
bench_path = os.path.join("..", "docs", "benchmarks.md")
tables = viz.markdown_tables(open(bench_path).read()) if os.path.exists(bench_path) else []
[list(t[0]) for t in tables]     # the columns of each table

# %%
timed = [t for t in tables if viz.timing_columns(t, next(iter(t[0])))]   # tables with … ms / … µs columns
figures = [viz.benchmark_figure(t, log_y=True, title=f"4 · docs/benchmarks.md, table {i + 1}") for i, t in enumerate(timed)]
if not figures:
    print("docs/benchmarks.md has no measured table yet: run the scripts in benchmarks/ on a GPU.")
for fig in figures:
    fig.show()

# %% [markdown]
# **Summary.** The chunkwise form = small attention blocks + a carried state; the kernels do exactly that
# (with the gates fused in) and are checked against the reference on every CI run through the interpreter.
