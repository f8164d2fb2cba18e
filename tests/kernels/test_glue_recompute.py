"""The fused path's two memory savers against the formulations they replace, BIT FOR BIT: the SwiGLU product
that recomputes SiLU(g) in its backward (``glue.swiglu`` vs ``F.silu(g) * u``) and the value gate that
rebuilds its logits from the low-rank product (``glue.low_rank_value_gate`` vs
``glue.value_gate(ch_gate_proj(x'))``): the same forward values and every gradient equal (torch.equal, not a
tolerance), in float32 and under bf16 autocast, and fewer bytes saved for the backward (``bench memory``).

On CPU the value-gate kernels run under TRITON_INTERPRET=1 (tests/kernels/conftest.py); both sides of each
comparison run the same kernels, so their results must agree exactly."""

import copy
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from conftest import gpu
from rodimus_kernels import glue
from rodimus_lab import ModelConfig
from rodimus_lab.bench import memory
from rodimus_lab.model import RodimusMixer, SwiGLU

SHAPES = [(1, 1), (2, 7), (1, 37), (3, 64)]   # (B, T): one token, odd lengths, a full tile
MODES = ["fp32", "bf16-autocast"]


def config(**overrides):
    return ModelConfig(**{**dict(d_model=48, n_layers=1, mem_size=16, gate_rank=8, ffn_expand=2.0,
                                 block="rodimus_plus", n_heads=2, window=8, backend="triton"), **overrides})


def run(module, forward, x, grad, mode):
    """forward(module, x) under ``mode``, then its backward with ``grad``: (output, x's grad, every
    parameter's grad by name)."""
    x = x.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=mode == "bf16-autocast"):
        y = forward(module, x)
    y.backward(grad.to(y.dtype))
    return y, x.grad, {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


def assert_bitwise_equal(new, old):
    (y1, dx1, dp1), (y0, dx0, dp0) = new, old
    assert y1.dtype == y0.dtype and torch.equal(y1, y0), "forward values differ"
    assert torch.equal(dx1, dx0), "input gradient differs"
    assert dp1.keys() == dp0.keys() and dp1, (dp1.keys(), dp0.keys())
    for name in dp0:
        assert dp1[name].dtype == dp0[name].dtype and torch.equal(dp1[name], dp0[name]), f"grad of {name} differs"


def check_swiglu(B, T, mode, device="cpu", **sizes):
    torch.manual_seed(B * 100 + T)
    ffn = SwiGLU(config(**sizes)).to(device)
    d = ffn.fc.in_features
    x, grad = torch.randn(2, B, T, d, device=device).unbind(0)

    def plain(module, x):   # the formulation the fused path had before (and the reference backend keeps)
        u, g = module.fc(x).chunk(2, dim=-1)
        return module.out_proj(F.silu(g) * u)

    with mock.patch.object(glue, "swiglu", wraps=glue.swiglu) as fused:
        new = run(ffn, SwiGLU.forward, x, grad, mode)
    assert fused.call_count == 1   # the module took the recompute op
    ffn.zero_grad(set_to_none=True)
    assert_bitwise_equal(new, run(ffn, plain, x, grad, mode))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B, T", SHAPES)
def test_swiglu_is_bitwise_the_plain_product(B, T, mode):
    check_swiglu(B, T, mode)


def test_swiglu_extreme_gates_and_names_bad_shapes():
    """SiLU at its ends (g ≈ ±60, σ saturated) and at 0: still the plain expression's bits."""
    g = torch.tensor([-60.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 60.0]).repeat(3, 1).requires_grad_()
    u = torch.randn(3, 7, requires_grad=True)
    dy = torch.randn(3, 7)
    y = glue.swiglu(g, u)
    dg, du = torch.autograd.grad(y, (g, u), dy)
    y0 = F.silu(g) * u
    dg0, du0 = torch.autograd.grad(y0, (g, u), dy)
    assert torch.equal(y, y0) and torch.equal(dg, dg0) and torch.equal(du, du0)
    with pytest.raises(ValueError, match="swiglu takes g and u of one shape"):
        glue.swiglu(torch.randn(2, 4), torch.randn(2, 5))


def check_value_gate(B, T, mode, gate_scale, device="cpu", **sizes):
    torch.manual_seed(B * 100 + T)
    mixer = RodimusMixer(config(**sizes)).to(device)
    with torch.no_grad():   # extreme gates: σ saturated at both ends
        mixer.ch_gate_proj[1].bias.normal_(0.0, gate_scale)
    m = mixer.config.d_inner
    x = torch.randn(B, T, 2 * m, device=device)   # x' as the model has it: a chunk of the fc projection
    grad = torch.randn(B, T, m, device=device)

    def value(module, x):
        return module._value(x.chunk(2, dim=-1)[0])

    def full_logits(module, x):   # the formulation the fused path had before
        x_ = x.chunk(2, dim=-1)[0]
        return glue.value_gate(module.ch_gate_proj(x_), x_)

    with mock.patch.object(glue, "_LowRankValueGate", wraps=glue._LowRankValueGate) as op:
        new = run(mixer, value, x, grad, mode)
    assert op.apply.call_count == 1   # the module took the recompute op
    mixer.zero_grad(set_to_none=True)
    old = run(mixer, full_logits, x, grad, mode)
    assert_bitwise_equal(new, old)
    assert set(new[2]) == {"ch_gate_proj.0.weight", "ch_gate_proj.1.weight", "ch_gate_proj.1.bias"}


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B, T", SHAPES)
@pytest.mark.parametrize("gate_scale", [1.0, 30.0])
def test_low_rank_value_gate_is_bitwise_the_full_logits_path(B, T, mode, gate_scale):
    check_value_gate(B, T, mode, gate_scale)


def test_low_rank_value_gate_without_every_gradient_and_bad_shapes():
    """Only some inputs need gradients (a frozen gate): the others get none, the rest stay exact."""
    torch.manual_seed(0)
    p, x = torch.randn(2, 5, 4), torch.randn(2, 5, 12, requires_grad=True)
    w, b = torch.randn(12, 4), torch.randn(12, requires_grad=True)
    dv = torch.randn(2, 5, 12)
    v = glue.low_rank_value_gate(p, w, b, x)
    db, dx = torch.autograd.grad(v, (b, x), dv)
    v0 = glue.value_gate(F.linear(p, w, b), x)
    db0, dx0 = torch.autograd.grad(v0, (b, x), dv)
    assert torch.equal(v, v0) and torch.equal(db, db0) and torch.equal(dx, dx0)
    with pytest.raises(ValueError, match=r"weight \[m, r\]"):
        glue.low_rank_value_gate(p, torch.randn(12, 3), b, x)


def test_bench_memory_counts_the_savings():
    """At the bench's layout (Rodimus+, toy widths) the layer keeps exactly SiLU(g) (2 bytes × ffn_dim per
    token) and the value-gate logits (2 bytes × d_inner) less than with the formulations they replace."""
    toy = dict(d_model=64, n_heads=2, vocab_size=128, window=32)
    cfg = memory.model_config("rodimus_plus", **toy)

    def previous(p, weight, bias, x):
        return glue.value_gate(F.linear(p, weight, bias), x)

    def plain(g, u):
        return F.silu(g) * u

    after = memory.measure("rodimus_plus", seq_len=64, batch=1, n_layers=1, **toy)
    with mock.patch.object(glue, "low_rank_value_gate", previous), mock.patch.object(glue, "swiglu", plain):
        before = memory.measure("rodimus_plus", seq_len=64, batch=1, n_layers=1, **toy)
    runs = dict(after=after, before=before)
    per_token = {k: acc.layer_bytes(0, "activation") / acc.tokens for k, acc in runs.items()}
    assert per_token["before"] - per_token["after"] == 2 * cfg.ffn_dim + 2 * cfg.d_inner, per_token
    # the FFN's own saves lost SiLU(g) (its product's inputs, chunks of fc's output, stay)
    ffn = {k: acc.by_module("activation")["layers.0.ffn"] / acc.tokens for k, acc in runs.items()}
    assert ffn["before"] - ffn["after"] == 2 * cfg.ffn_dim, ffn


# ----------------------------------------------------------------------------- GPU (bf16)

@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B, T", [(1, 1), (2, 2047)])
def test_gpu_recompute_is_bitwise(B, T, mode):
    """The same comparisons on CUDA at the bench's widths (d_model 768: d_inner 1536, rank 16, ffn 1024)."""
    bench = dict(d_model=768, gate_rank=None, ffn_expand=None, n_heads=12)
    check_swiglu(B, T, mode, "cuda", **bench)
    check_value_gate(B, T, mode, 1.0, "cuda", **bench)
