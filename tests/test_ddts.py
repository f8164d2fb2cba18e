"""The four DDTS forms compute one function: recurrent = chunkwise = parallel = stepping; the fused
operator's twins (ddts, ddts_gated_step), the gate ablations and ddts_states agree with them."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rodimus_lab.ddts import (GATE_KINDS, ddts, ddts_chunkwise, ddts_gated_step, ddts_gates, ddts_parallel,
                              ddts_recurrent, ddts_states, ddts_step, effective_key, gate_logits_width, gates)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def make_inputs(B, T, H, n, m, *, dtype=torch.float64, gate_scale=3.0, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, n, generator=g, dtype=dtype)
    k = torch.randn(B, T, H, n, generator=g, dtype=dtype)
    v = torch.randn(B, T, H, m, generator=g, dtype=dtype)
    g_logits = gate_scale * torch.randn(B, T, H, n, generator=g, dtype=dtype)
    tau_logits = torch.randn(B, T, H, n, generator=g, dtype=dtype)
    log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
    k = effective_key(k, alpha_hat)
    s0 = torch.randn(B, H, n, m, generator=g, dtype=dtype)
    tensors = [q, k, v, log_alpha, s0]
    if requires_grad:
        tensors = [t.detach().requires_grad_() for t in tensors]
    return tensors


shapes = st.tuples(
    st.integers(1, 2),                     # B
    st.sampled_from([1, 2, 7, 16, 17, 33]),  # T: 1, below, at and past chunk multiples
    st.integers(1, 3),                     # H
    st.sampled_from([1, 4, 8]),            # n
    st.sampled_from([1, 3, 8]),            # m (≠ n too)
    st.sampled_from([1, 4, 16]),           # chunk size
)


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from([0.1, 3.0, 30.0]), st.integers(0, 2**16))
def test_all_forms_agree_float64(shape, gate_scale, seed):
    B, T, H, n, m, C = shape
    q, k, v, la, s0 = make_inputs(B, T, H, n, m, gate_scale=gate_scale, seed=seed)
    o_rec, s_rec = ddts_recurrent(q, k, v, la, initial_state=s0, output_final_state=True)
    o_chk, s_chk = ddts_chunkwise(q, k, v, la, chunk_size=C, initial_state=s0, output_final_state=True)
    assert rel_err(o_chk, o_rec) <= 1e-10
    assert rel_err(s_chk, s_rec) <= 1e-10
    # the parallel form has no initial state: compare from zero
    o0, s0_rec = ddts_recurrent(q, k, v, la, output_final_state=True)
    o_par, attn = ddts_parallel(q, k, v, la)
    assert rel_err(o_par, o0) <= 1e-10
    assert attn.shape == (B, H, T, T)
    # stepping token by token is the recurrence
    state = torch.zeros_like(s0_rec)
    for t in range(T):
        o_t, state = ddts_step(q[:, t], k[:, t], v[:, t], la[:, t], state)
        assert rel_err(o_t, o0[:, t]) <= 1e-10 or o0[:, t].norm() == 0
    assert rel_err(state, s0_rec) <= 1e-10


def test_float32_agrees_with_float64():
    q, k, v, la, s0 = make_inputs(2, 50, 2, 16, 12, seed=1)
    ref, _ = ddts_recurrent(q, k, v, la, initial_state=s0)
    f32 = [t.float() for t in (q, k, v, la, s0)]
    o_chk, _ = ddts_chunkwise(*f32[:4], chunk_size=16, initial_state=f32[4])
    o_rec, _ = ddts_recurrent(*f32[:4], initial_state=f32[4])
    o_par, _ = ddts_parallel(*(t.float() for t in (q, k, v, la)))
    ref0, _ = ddts_recurrent(q, k, v, la)
    assert o_chk.dtype == torch.float32
    assert rel_err(o_chk.double(), ref) <= 1e-5
    assert rel_err(o_rec.double(), ref) <= 1e-5
    assert rel_err(o_par.double(), ref0) <= 1e-5


def test_extreme_gates():
    """log α near 0 (no forgetting) and far below −20 (instant forgetting) in one sequence."""
    q, k, v, la, s0 = make_inputs(1, 40, 2, 8, 8, seed=2)
    la = la.clone()
    la[:, :10] = -1e-9
    la[:, 10:20] = -25.0
    la[:, 20:30] = -1e4
    o_rec, s_rec = ddts_recurrent(q, k, v, la, initial_state=s0, output_final_state=True)
    o_chk, s_chk = ddts_chunkwise(q, k, v, la, chunk_size=16, initial_state=s0, output_final_state=True)
    o_par, _ = ddts_parallel(q, k, v, la)
    assert torch.isfinite(o_chk).all() and torch.isfinite(o_par).all()
    assert rel_err(o_chk, o_rec) <= 1e-10
    assert rel_err(s_chk, s_rec) <= 1e-10
    assert rel_err(o_par, ddts_recurrent(q, k, v, la)[0]) <= 1e-10


def test_gradients_agree_across_forms():
    B, T, H, n, m = 1, 21, 2, 4, 3
    grads = {}
    for name, fn in [
        ("rec", lambda *a: ddts_recurrent(*a[:4], initial_state=a[4])[0]),
        ("chk", lambda *a: ddts_chunkwise(*a[:4], chunk_size=8, initial_state=a[4])[0]),
    ]:
        inputs = make_inputs(B, T, H, n, m, seed=3, requires_grad=True)
        out = fn(*inputs)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape))
        grads[name] = [t.grad for t in inputs]
    for g_rec, g_chk in zip(grads["rec"], grads["chk"]):
        assert rel_err(g_chk, g_rec) <= 1e-10


@pytest.mark.parametrize("form", ["chunkwise", "parallel"])
def test_gradcheck(form):
    q, k, v, la, s0 = make_inputs(1, 6, 1, 3, 2, seed=4, requires_grad=True)
    if form == "chunkwise":
        fn = lambda q, k, v, la, s0: ddts_chunkwise(q, k, v, la, chunk_size=4, initial_state=s0, output_final_state=True)
        assert torch.autograd.gradcheck(fn, (q, k, v, la, s0))
    else:
        fn = lambda q, k, v, la: ddts_parallel(q, k, v, la)
        assert torch.autograd.gradcheck(fn, (q, k, v, la))


def test_gates_gradcheck_and_selection():
    g = torch.randn(20, dtype=torch.float64, requires_grad=True)
    tau = torch.randn(20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ddts_gates, (g, tau))
    log_alpha, alpha_hat = ddts_gates(g, tau)
    # (α, α̂) = (e^{−g}, g)^τ with g = softplus, τ = sigmoid
    gs, ts = torch.nn.functional.softplus(g), torch.sigmoid(tau)
    assert torch.allclose(log_alpha.exp(), torch.exp(-gs) ** ts)
    assert torch.allclose(alpha_hat, gs ** ts)
    # selection: raising g lowers α and raises α̂
    la2, ah2 = ddts_gates(g + 0.5, tau)
    assert (la2 < log_alpha).all() and (ah2 > alpha_hat).all()


def test_long_sequence_saturated_gates_stays_finite():
    T = 65536
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, T, 1, 8, generator=g) for _ in range(3))
    la = torch.full((1, T, 1, 8), -60.0)
    la[..., ::2] = -1e-7                       # half the dims never forget, half forget at once
    o, s = ddts_chunkwise(q, k, v, la, chunk_size=64, output_final_state=True)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    # the never-forgetting dims sum 65k writes: compare with the float64 recurrence
    o_ref, s_ref = ddts_recurrent(*(t.double() for t in (q, k, v, la)), output_final_state=True)
    assert rel_err(o.double(), o_ref) <= 1e-4
    assert rel_err(s.double(), s_ref) <= 1e-4


def test_long_sequence_matches_recurrence_exactly_where_state_is_reset():
    """Where every dim decays by e^{-60} per step, o_t depends only on token t: compare."""
    T = 4096
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, T, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
    la = torch.full((1, T, 2, 4), -60.0, dtype=torch.float64)
    o, _ = ddts_chunkwise(q, k, v, la, chunk_size=64)
    local = 0.5 * (q * k).sum(-1, keepdim=True) * v        # scale n^-1/2 = 0.5
    assert rel_err(o, local) <= 1e-10


def test_scale_argument():
    q, k, v, la, _ = make_inputs(1, 5, 1, 4, 2, seed=7)
    o1, _ = ddts_chunkwise(q, k, v, la, scale=1.0)
    o2, _ = ddts_chunkwise(q, k, v, la)
    assert rel_err(o2, 0.5 * o1) <= 1e-12


# ------------------------------------------------ the fused operator, gates, states

def logits_inputs(B, T, H, n, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, g_logits, tau_logits = (torch.randn(B, T, H, n, generator=g, dtype=torch.float64) for _ in range(4))
    return q, k, torch.randn(B, T, H, m, generator=g, dtype=torch.float64), 3 * g_logits, tau_logits


@pytest.mark.parametrize("T", [1, 5, 70])
def test_fused_reference_is_the_composition_and_steps_agree(T):
    """ddts(q, k, v, g, τ) = DDTS(q, α̂ ⊙ k/‖k‖, v, log α), written here from the definition; stepping
    ddts_gated_step (state updated in place) gives the same outputs and final state."""
    q, k, v, gl, tl = logits_inputs(2, T, 2, 4, 3, seed=T)
    s0 = torch.randn(2, 2, 4, 3, dtype=torch.float64)
    o, final = ddts(q, k, v, gl, tl, initial_state=s0, output_final_state=True, scale=0.7)
    g, tau = torch.nn.functional.softplus(gl), torch.sigmoid(tl)
    k_eff = g ** tau * k / k.norm(dim=-1, keepdim=True)
    o_def, final_def = ddts_recurrent(q, k_eff, v, -g * tau, initial_state=s0, output_final_state=True, scale=0.7)
    assert rel_err(o, o_def) <= 1e-12 and rel_err(final, final_def) <= 1e-12
    assert ddts(q, k, v, gl, tl)[1] is None
    state = s0.clone()
    for t in range(T):
        o_t, returned = ddts_gated_step(q[:, t], k[:, t], v[:, t], gl[:, t], tl[:, t], state, scale=0.7)
        assert returned is state
        assert rel_err(o_t, o[:, t]) <= 1e-12
    assert rel_err(state, final) <= 1e-12


def test_effective_key_without_norm():
    k, alpha_hat = torch.randn(3, 4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64)
    assert torch.equal(effective_key(k, alpha_hat, normalize=False), alpha_hat * k)
    assert effective_key(k.to(torch.bfloat16), alpha_hat.float()).dtype == torch.float32


def test_gates_of_every_kind():
    n = 5
    for kind in GATE_KINDS:
        logits = torch.randn(2, 7, gate_logits_width(kind, n), dtype=torch.float64)
        out = gates(kind, logits, n)
        assert out.log_alpha.shape == out.alpha_hat.shape == (2, 7, n), kind
        assert (out.log_alpha <= 0).all() and (out.alpha_hat >= 0).all(), kind
    logits = torch.randn(3, 2 * n)
    assert all(torch.equal(a, b) for a, b in zip(gates("ddts", logits, n)[:2], ddts_gates(*logits.chunk(2, -1))))
    retnet = gates("retnet", torch.zeros(1, 3, 0), n).log_alpha[0, 0]
    assert torch.allclose(retnet.exp(), 1 - 2.0 ** (-5 - 4 * torch.arange(n) / (n - 1)))
    with pytest.raises(ValueError, match="reads 10 logits"):
        gates("ddts", torch.randn(3, 4), n)
    with pytest.raises(ValueError, match="unknown gate 'gla'"):
        gate_logits_width("gla", n)


def test_states_end_in_the_final_state():
    q, k, v, la, _ = make_inputs(2, 9, 2, 4, 3, seed=8)
    states = ddts_states(q, k, v, la)
    assert states.shape == (2, 9, 2, 4, 3)
    assert rel_err(states[:, -1], ddts_recurrent(q, k, v, la, output_final_state=True)[1]) <= 1e-12
    assert rel_err(states[:, 3], ddts_recurrent(q[:, :4], k[:, :4], v[:, :4], la[:, :4], output_final_state=True)[1]) <= 1e-12


class TestBadInput:
    def test_wrong_rank(self):
        q = torch.randn(2, 5, 4)
        with pytest.raises(ValueError, match="q must be 4-D"):
            ddts_recurrent(q, q, q, -q.abs())

    def test_k_shape(self):
        q, k, v, la, _ = make_inputs(1, 5, 1, 4, 2)
        with pytest.raises(ValueError, match="k must have the shape of q"):
            ddts_chunkwise(q, k[..., :3], v, la)

    def test_v_shape(self):
        q, k, v, la, _ = make_inputs(1, 5, 1, 4, 2)
        with pytest.raises(ValueError, match="v must agree with q"):
            ddts_parallel(q, k, v[:, :4], la)

    def test_positive_log_alpha(self):
        q, k, v, la, _ = make_inputs(1, 5, 1, 4, 2)
        with pytest.raises(ValueError, match="log_alpha must be ≤ 0"):
            ddts_chunkwise(q, k, v, -la)

    def test_nan_log_alpha(self):
        q, k, v, la, _ = make_inputs(1, 5, 1, 4, 2)
        la = la.clone()
        la[0, 2, 0, 1] = float("nan")
        with pytest.raises(ValueError, match="not NaN"):
            ddts_recurrent(q, k, v, la)

    def test_state_shape(self):
        q, k, v, la, s0 = make_inputs(1, 5, 1, 4, 2)
        with pytest.raises(ValueError, match="initial_state must have shape"):
            ddts_chunkwise(q, k, v, la, initial_state=s0[..., :1])
        with pytest.raises(ValueError, match="state must have shape"):
            ddts_step(q[:, 0], k[:, 0], v[:, 0], la[:, 0], s0.transpose(-1, -2))

    def test_chunk_size(self):
        q, k, v, la, _ = make_inputs(1, 5, 1, 4, 2)
        with pytest.raises(ValueError, match="chunk_size"):
            ddts_chunkwise(q, k, v, la, chunk_size=0)

    def test_not_a_tensor(self):
        q, k, v, la, _ = make_inputs(1, 5, 1, 4, 2)
        with pytest.raises(TypeError, match="v must be a torch.Tensor"):
            ddts_recurrent(q, k, v.tolist(), la)

    def test_gate_shapes(self):
        with pytest.raises(ValueError, match="same shape"):
            ddts_gates(torch.randn(3, 4), torch.randn(3, 5))
