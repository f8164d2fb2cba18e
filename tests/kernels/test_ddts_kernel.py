"""rodimus_kernels.ddts / ddts_step against the float64 reference rodimus_lab.ddts.

On CPU the kernels run under TRITON_INTERPRET=1 (set by tests/kernels/conftest.py before any kernel
module is imported) at small shapes; the `gpu` tests run the same checks at full shapes on CUDA
(`pytest tests/kernels -m gpu` on the H200). Errors are relative RMS: ‖out − ref‖ / ‖ref‖.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import rodimus_kernels
from conftest import CUDA, gpu, rel_rms
from rodimus_lab.ddts import ddts as ddts_reference
from rodimus_lab.ddts import ddts_gated_step

NAMES = ("q", "k", "v", "g_logits", "tau_logits", "initial_state")


def reference(q, k, v, g_logits, tau_logits, initial_state=None, scale=None):
    """The reference twin rodimus_lab.ddts.ddts (in float64 here), with its final state."""
    return ddts_reference(q, k, v, g_logits, tau_logits, scale=scale, initial_state=initial_state,
                          output_final_state=True)


def make_inputs(B, T, H, n, m, *, device="cpu", g_scale=2.0, tau_scale=2.0, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=gen, device=device, dtype=torch.float32)

    return [randn(B, T, H, n), randn(B, T, H, n), randn(B, T, H, m),
            randn(B, T, H, n, scale=g_scale), randn(B, T, H, n, scale=tau_scale), randn(B, H, n, m)]


def compare(inputs, *, dtype=torch.float32, cu_seqlens=None, scale=None, with_h0=True, tol=1e-4):
    """Kernel vs float64 reference for o, the final state and all six gradients."""
    q, k, v, g, tau, h0 = inputs
    h0 = h0 if with_h0 else None
    # the kernel sees q, k, v in `dtype`; the reference sees the very same (rounded) values in float64
    kernel_in = [x.to(dtype) for x in (q, k, v)] + [g, tau] + ([h0] if with_h0 else [])
    kernel_in = [x.detach().clone().requires_grad_() for x in kernel_in]
    ref_in = [x.detach().double().requires_grad_() for x in kernel_in]
    o, final = rodimus_kernels.ddts(*kernel_in[:5], initial_state=kernel_in[5] if with_h0 else None,
                                    output_final_state=True, cu_seqlens=cu_seqlens, scale=scale)
    assert o.dtype == dtype and o.shape == v.shape and final.dtype == torch.float32
    # ∂o reaches the kernel in o's dtype: draw it representable there, so both sides see the same ∂o
    weights = torch.randn_like(o, dtype=torch.float32).to(dtype).float(), torch.randn_like(final)
    ((o.float() * weights[0]).sum() + (final * weights[1]).sum()).backward()

    if cu_seqlens is None:
        o_ref, final_ref = reference(*ref_in[:5], ref_in[5] if with_h0 else None, scale=scale)
    else:  # each packed sequence on its own, its own initial state
        bounds = cu_seqlens.tolist()
        outs, finals = [], []
        for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
            seq_h0 = ref_in[5][i:i + 1] if with_h0 else None
            if e == s:  # an empty sequence hands its initial state straight through
                outs.append(ref_in[2][:, s:e])
                finals.append(seq_h0 if with_h0 else torch.zeros_like(final[i:i + 1], dtype=torch.float64))
                continue
            o_i, f_i = reference(*(x[:, s:e] for x in ref_in[:5]), seq_h0, scale=scale)
            outs.append(o_i)
            finals.append(f_i)
        o_ref, final_ref = torch.cat(outs, dim=1), torch.cat(finals)
    ((o_ref * weights[0].double()).sum() + (final_ref * weights[1].double()).sum()).backward()

    errors = {"o": rel_rms(o, o_ref), "final_state": rel_rms(final, final_ref)}
    errors.update({f"d{name}": rel_rms(a.grad, b.grad) for name, a, b in zip(NAMES, kernel_in, ref_in)})
    print(f"relative RMS errors ({dtype}):", errors)   # shown by `pytest -rP`
    bad = {name: err for name, err in errors.items() if not err <= tol}
    assert not bad, f"relative RMS errors above {tol}: {bad} (all: {errors})"
    return errors


# ------------------------------------------------------------------ CPU (TRITON_INTERPRET=1)

@pytest.mark.parametrize(
    "B, T, H, n, m",
    [
        (1, 1, 1, 16, 16),     # one token
        (1, 63, 1, 32, 24),    # one partial chunk, m not a multiple of the tile
        (2, 64, 2, 16, 40),    # exactly one chunk, H > 1, B > 1
        (1, 65, 1, 64, 16),    # one token into the second chunk, n = 64
        (1, 200, 1, 16, 80),   # several chunks, two value tiles
        (2, 70, 3, 32, 8),     # small m
        (1, 40, 2, 24, 16),    # n not a power of two (padded, masked)
    ],
)
def test_matches_reference(B, T, H, n, m):
    compare(make_inputs(B, T, H, n, m, seed=T + n + m))


def test_largest_state():
    """n = m = 256 (d_model 128, mem_size 256: the top of the MQAR state-size sweep), two chunks: the
    launch parameters of the largest tiles (unpipelined loops, 8 × 8 diagonal blocks in the backward)."""
    compare(make_inputs(1, 70, 1, 256, 256, seed=256))


def test_state_above_the_largest_tile_is_refused():
    q, k, v, g, tau, _ = make_inputs(1, 3, 1, 272, 8)
    with pytest.raises(ValueError, match=r"n <= 256, got n = 272.*232448 bytes.*reference"):
        rodimus_kernels.ddts(q, k, v, g, tau)


def test_no_initial_state_and_custom_scale():
    compare(make_inputs(1, 90, 2, 16, 24, seed=3), with_h0=False, scale=0.37)


# tl.sigmoid(x) = 1 / (1 + e^{-x}): at x ≈ −100, e^{100} overflows to inf and σ is exactly 0, as it should
# be; the interpreter's numpy reports the overflow
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("g_shift", [-30.0, 30.0, 0.0])
def test_extreme_logits(g_shift):
    """Saturated gates: softplus/sigmoid at their ends (no decay, total decay, mixed ±30)."""
    q, k, v, g, tau, h0 = make_inputs(1, 130, 1, 16, 16, g_scale=25.0, tau_scale=25.0, seed=7)
    g = g + g_shift if g_shift else g
    compare([q, k, v, g, tau, h0])


def test_packed_sequences_with_empty_and_single_token():
    lengths = [0, 1, 70, 64, 5]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
    q, k, v, g, tau, _ = make_inputs(1, sum(lengths), 2, 16, 24, seed=11)
    h0 = torch.randn(len(lengths), 2, 16, 24)
    compare([q, k, v, g, tau, h0], cu_seqlens=cu)


def test_step_updates_state_in_place_and_matches_reference():
    B, H, n, m = 2, 3, 16, 40
    q, k, v, g, tau, s0 = make_inputs(B, 5, H, n, m, seed=5)
    state = s0.clone()
    ref_state = s0.double()
    for t in range(q.shape[1]):
        o, returned = rodimus_kernels.ddts_step(q[:, t], k[:, t], v[:, t], g[:, t], tau[:, t], state)
        assert returned is state
        o_ref, _ = ddts_gated_step(*(x[:, t].double() for x in (q, k, v, g, tau)), ref_state)
        assert rel_rms(o, o_ref) <= 1e-5
    assert rel_rms(state, ref_state) <= 1e-5


def test_kernel_path_is_used_under_interpreter():
    assert os.environ.get("TRITON_INTERPRET") == "1" or CUDA
    rodimus_kernels.ddts(*make_inputs(1, 3, 1, 16, 16)[:5])
    assert "rodimus_kernels.ddts_triton" in sys.modules


def test_bad_arguments_are_named():
    q, k, v, g, tau, h0 = make_inputs(1, 4, 1, 16, 8)
    with pytest.raises(ValueError, match="tau_logits"):
        rodimus_kernels.ddts(q, k, v, g, tau[..., :8])
    with pytest.raises(ValueError, match="initial_state"):
        rodimus_kernels.ddts(q, k, v, g, tau, initial_state=h0[..., :4])
    with pytest.raises(ValueError, match="B must be 1"):
        rodimus_kernels.ddts(*(torch.cat([x, x]) for x in (q, k, v, g, tau)),
                             cu_seqlens=torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        rodimus_kernels.ddts(q, k, v, g, tau, cu_seqlens=torch.tensor([0, 3]))


FALLBACK_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path[:0] = {paths!r}
    from test_ddts_kernel import compare, make_inputs
    import rodimus_kernels
    compare(make_inputs(1, 40, 2, 16, 8, seed=1))
    cu = torch.tensor([0, 0, 1, 23, 40], dtype=torch.int32)
    q, k, v, g, tau, _ = make_inputs(1, 40, 2, 16, 8, seed=2)
    compare([q, k, v, g, tau, torch.randn(4, 2, 16, 8)], cu_seqlens=cu)
    assert "rodimus_kernels.ddts_triton" not in sys.modules, "the Triton kernels ran without TRITON_INTERPRET"
    print("fallback ok")
""")


def test_cpu_without_interpreter_falls_back_to_pytorch():
    # "0", not unset: the script imports this module, whose conftest switches an unset interpreter on
    env = dict(os.environ, TRITON_INTERPRET="0", CUDA_VISIBLE_DEVICES="")
    script = FALLBACK_SCRIPT.format(paths=[os.path.dirname(__file__)])
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "fallback ok" in result.stdout, result.stderr[-3000:]


# ----------------------------------------------------------------------------- GPU, full size

# A kernel that never finishes blocks the main thread inside a CUDA call, where pytest-timeout's signal method
# never gets control (fp32 cases hung so on the H200); the thread method dumps every thread's stack, naming
# the launch, and ends the run. The limit leaves room for compiling the kernels.
gpu_time_limit = pytest.mark.timeout(300, method="thread")

@pytest.mark.gpu
@gpu
@gpu_time_limit
@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 5e-3), (torch.float32, 1e-4)])
@pytest.mark.parametrize("T, n, m", [(1000, 64, 2048), (1000, 128, 4096), (65, 16, 4096), (1, 32, 64), (63, 128, 256),
                                     (300, 256, 256)])
def test_gpu_full_shapes(dtype, tol, T, n, m):
    compare(make_inputs(2, T, 1, n, m, device="cuda", seed=T + n), dtype=dtype, tol=tol)


@pytest.mark.gpu
@gpu
@gpu_time_limit
@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 5e-3), (torch.float32, 1e-4)])
def test_gpu_heads_and_packed_sequences(dtype, tol):
    lengths = [0, 1, 700, 64, 129]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    q, k, v, g, tau, _ = make_inputs(1, sum(lengths), 4, 64, 512, device="cuda", seed=4)
    h0 = torch.randn(len(lengths), 4, 64, 512, device="cuda")
    compare([q, k, v, g, tau, h0], dtype=dtype, cu_seqlens=cu, tol=tol)
    compare(make_inputs(3, 300, 4, 64, 256, device="cuda", seed=9), dtype=dtype, tol=tol)


@pytest.mark.gpu
@gpu
@gpu_time_limit
@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 5e-3), (torch.float32, 1e-4)])
def test_gpu_long_sequence_saturated_gates(dtype, tol):
    """T = 65 536 with gates at both ends (log α from ≈ 0 to ≈ −30 per token): finite and matching."""
    q, k, v, g, tau, h0 = make_inputs(1, 65536, 1, 64, 128, device="cuda", g_scale=30.0, tau_scale=30.0, seed=1)
    compare([q, k, v, g, tau, h0], dtype=dtype, tol=tol)


@pytest.mark.gpu
@gpu
@gpu_time_limit
def test_gpu_step_matches_reference():
    B, H, n, m = 64, 1, 64, 4096
    q, k, v, g, tau, s0 = make_inputs(B, 3, H, n, m, device="cuda", seed=2)
    state, ref_state = s0.clone(), s0.double()
    for t in range(3):
        o, _ = rodimus_kernels.ddts_step(q[:, t], k[:, t], v[:, t], g[:, t], tau[:, t], state)
        o_ref, _ = ddts_gated_step(*(x[:, t].double() for x in (q, k, v, g, tau)), ref_state)
        assert rel_rms(o, o_ref) <= 1e-5
    assert rel_rms(state, ref_state) <= 1e-5


def test_model_backend_triton_matches_reference():
    """RodimusMixer's wired call sites (forward: ddts, decoding: ddts_step) against backend='reference'."""
    from rodimus_lab import ModelConfig, RodimusLM

    def model(backend):
        torch.manual_seed(0)
        config = ModelConfig(vocab_size=61, d_model=64, n_layers=2, block="rodimus", mem_size=16, backend=backend)
        return RodimusLM(config)

    fused, ref = model("triton"), model("reference")
    ids = torch.randint(0, 61, (2, 70), generator=torch.Generator().manual_seed(1))
    logits = fused(ids).logits
    logits_ref = ref(ids).logits
    assert rel_rms(logits, logits_ref) <= 1e-4
    logits.square().mean().backward()
    logits_ref.square().mean().backward()
    for (name, p), p_ref in zip(fused.named_parameters(), ref.parameters()):
        assert rel_rms(p.grad, p_ref.grad) <= 1e-4, name
    with torch.no_grad():
        state, state_ref = fused.init_state(2), ref.init_state(2)
        for t in range(3):
            step, _ = fused.step(ids[:, t], state)
            step_ref, _ = ref.step(ids[:, t], state_ref)
            assert rel_rms(step, step_ref) <= 1e-5


def test_model_auto_backend_takes_the_reference_above_the_largest_state(monkeypatch):
    """backend 'auto' where the kernels would run (CUDA, stood in for by patching the backend choice):
    mem_size 256 goes through rodimus_kernels.ddts, mem_size 272 through the reference; backend 'triton'
    at 272 gets the kernel's error naming n."""
    from rodimus_lab import ModelConfig, RodimusLM, model as model_module

    calls = []
    kernel = rodimus_kernels.ddts
    monkeypatch.setattr(rodimus_kernels, "ddts", lambda *a, **kw: calls.append(a[0].shape[-1]) or kernel(*a, **kw))
    monkeypatch.setattr(model_module, "_use_triton", lambda backend, x: backend != "reference")
    ids = torch.randint(0, 61, (1, 5), generator=torch.Generator().manual_seed(2))
    for n in (256, 272):
        RodimusLM(ModelConfig(vocab_size=61, d_model=32, n_layers=1, block="rodimus", mem_size=n))(ids)
    assert calls == [256]
    forced = RodimusLM(ModelConfig(vocab_size=61, d_model=32, n_layers=1, block="rodimus", mem_size=272,
                                   backend="triton"))
    with pytest.raises(ValueError, match="n = 272"):
        forced(ids)


@pytest.mark.parametrize("block", ["rodimus", "rodimus_plus"])
def test_model_prefill_runs_the_chunk_kernel_and_hands_over_its_state(block, monkeypatch):
    """Prefill (the model's forward with a state) on backend 'triton' sends the prompt through
    rodimus_kernels.ddts with output_final_state; its logits and every state tensor equal the reference
    model's prefill, and decoding goes on identically."""
    from rodimus_lab import ModelConfig, RodimusLM
    from rodimus_lab.generate import prefill

    def model(backend):
        torch.manual_seed(0)
        config = ModelConfig(vocab_size=61, d_model=128, n_layers=2, block=block, mem_size=16, n_heads=2,
                             window=5 if block == "rodimus_plus" else None, backend=backend)
        return RodimusLM(config)

    calls = []
    kernel = rodimus_kernels.ddts
    monkeypatch.setattr(rodimus_kernels, "ddts", lambda *a, **kw: calls.append(kw) or kernel(*a, **kw))
    fused, ref = model("triton"), model("reference")
    ids = torch.randint(0, 61, (2, 70), generator=torch.Generator().manual_seed(1))   # two chunks of 64
    with torch.no_grad():
        logits, state = prefill(fused, ids)
        logits_ref, state_ref = prefill(ref, ids)
        assert len(calls) == 2 and all(kw["output_final_state"] and kw["initial_state"] is not None for kw in calls)
        assert rel_rms(logits, logits_ref) <= 1e-4
        for layer, layer_ref in zip(state.layers, state_ref.layers):
            for part, tensors in layer.items():
                for name, tensor in tensors.items():
                    assert rel_rms(tensor, layer_ref[part][name]) <= 1e-4, (part, name)
        for token in ids[:, :3].T:
            assert rel_rms(fused.step(token, state)[0], ref.step(token, state_ref)[0]) <= 1e-4

