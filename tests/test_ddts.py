"""The four DDTS forms compute one function: recurrent = chunkwise = parallel = stepping."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rodimus_lab.ddts import ddts_chunkwise, ddts_gates, ddts_parallel, ddts_recurrent, ddts_step


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
    k = alpha_hat * torch.nn.functional.normalize(k, dim=-1)
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
