"""rodimus_kernels.glue (fused short conv + SiLU, value gate, gated RMSNorm, gate projection) against their
float64 twins in glue_torch, and the twins against rodimus_lab.model's modules.

On CPU the kernels run under TRITON_INTERPRET=1 (tests/kernels/conftest.py); the `gpu` tests run the
same comparisons at training shapes in bf16 on CUDA. Errors are relative RMS ‖out − ref‖ / ‖ref‖, for the
output and EVERY gradient.
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import gpu, rel_rms
from rodimus_kernels import glue, glue_torch
from rodimus_lab import ModelConfig
from rodimus_lab import attention as attn_ref
from rodimus_lab.model import RMSNorm, RodimusMixer, ShortConv



def check(fused, twin, inputs, *, dtype=torch.float32, tol=1e-5, float_args=(), constants=()):
    """fused(*inputs in `dtype`) vs twin(*the same values in float64): output and every input's gradient.

    Activations (the first inputs, `len(inputs) - len(float_args)` of them) get `dtype`; weights stay
    float32; the inputs at `constants` (tables) need no gradient. The output gradient is drawn
    representable in the output's dtype."""
    n_act = len(inputs) - len(float_args)
    kin = [x.to(dtype) if i < n_act else x for i, x in enumerate(inputs)]
    kin = [x.detach().clone().requires_grad_(i not in constants) for i, x in enumerate(kin)]
    rin = [x.detach().double().requires_grad_(i not in constants) for i, x in enumerate(kin)]
    out = fused(*kin)
    ref = twin(*rin)
    grad = torch.randn(out.shape, dtype=torch.float32, device=out.device).to(out.dtype)
    out.backward(grad)
    ref.backward(grad.double())
    errors = {"out": rel_rms(out, ref)}
    errors.update({f"d{i}": rel_rms(a.grad, b.grad) for i, (a, b) in enumerate(zip(kin, rin)) if i not in constants})
    print(errors)
    assert max(errors.values()) <= tol, errors
    return errors


def conv_inputs(B, T, m, K=4, *, device="cpu", strided=False, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(B, T, 2 * m if strided else m, generator=gen, device=device)
    x = x[..., :m] if strided else x   # a chunk of a wider projection, read in place
    return [x, 0.5 * torch.randn(m, K, generator=gen, device=device), torch.randn(m, generator=gen, device=device)]


def norm_inputs(shape, *, device="cpu", seed=0, z_scale=1.0):
    gen = torch.Generator(device=device).manual_seed(seed)
    m = shape[-1]
    o, xc = (torch.randn(shape, generator=gen, device=device) for _ in range(2))
    z = z_scale * torch.randn(*shape[:-1], 2 * m, generator=gen, device=device)[..., m:]   # strided rows
    return [o, xc, z, torch.randn(m, generator=gen, device=device), 1 + 0.3 * torch.randn(m, generator=gen, device=device)]


# ------------------------------------------------------------------ CPU (TRITON_INTERPRET=1)

@pytest.mark.parametrize("B, T, m, K", [(1, 1, 8, 4), (2, 5, 40, 4), (1, 37, 33, 4), (2, 70, 24, 3), (1, 19, 16, 1)])
def test_short_conv_silu(B, T, m, K):
    check(glue.short_conv_silu, glue_torch.short_conv_silu_torch, conv_inputs(B, T, m, K, seed=T + m),
          float_args=(1, 2))


def test_short_conv_silu_reads_a_strided_chunk():
    check(glue.short_conv_silu, glue_torch.short_conv_silu_torch, conv_inputs(2, 23, 20, strided=True, seed=4),
          float_args=(1, 2))


@pytest.mark.parametrize("shape", [(1, 1, 8), (2, 7, 40), (1, 33, 1100), (3, 5, 17)])
def test_gated_rmsnorm(shape):
    eps = 1e-5
    check(lambda *a: glue.gated_rmsnorm(*a, eps), lambda *a: glue_torch.gated_rmsnorm_torch(*a, eps),
          norm_inputs(shape, seed=sum(shape)), float_args=(3, 4))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_gated_rmsnorm_extreme_gates():
    """SiLU(z) at its ends (z ≈ ±40): σ saturates, the kernel must stay finite and exact."""
    eps = 1e-5
    check(lambda *a: glue.gated_rmsnorm(*a, eps), lambda *a: glue_torch.gated_rmsnorm_torch(*a, eps),
          norm_inputs((2, 9, 24), seed=2, z_scale=40.0), float_args=(3, 4))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("shape, scale", [((1, 1, 8), 1.0), ((2, 9, 1030), 1.0), ((1, 13, 24), 30.0)])
def test_value_gate(shape, scale):
    gen = torch.Generator().manual_seed(shape[-1])
    logits = scale * torch.randn(shape, generator=gen)
    x = torch.randn(*shape[:-1], 2 * shape[-1], generator=gen)[..., : shape[-1]]
    check(glue.value_gate, glue_torch.value_gate_torch, [logits, x])


@pytest.mark.parametrize("shape", [(1, 1, 8), (2, 7, 40), (1, 33, 1100)])
def test_rms_norm(shape):
    gen = torch.Generator().manual_seed(shape[-1])
    x = torch.randn(*shape[:-1], 2 * shape[-1], generator=gen)[..., shape[-1]:]   # strided rows
    check(lambda *a: glue.rms_norm(*a, 1e-5), lambda *a: glue_torch.rms_norm_torch(*a, 1e-5),
          [x, 1 + 0.3 * torch.randn(shape[-1], generator=gen)], float_args=(1,))


def test_norms_of_no_rows_have_zero_weight_gradients():
    w = torch.ones(8, requires_grad=True)
    glue.rms_norm(torch.randn(0, 8), w, 1e-5).sum().backward()
    o, xc, z, d, wn = (t.requires_grad_() for t in norm_inputs((1, 0, 8)))
    glue.gated_rmsnorm(o, xc, z, d, wn, 1e-5).sum().backward()
    assert not w.grad.any() and not d.grad.any() and not wn.grad.any()


def rope_tables(T, d, device="cpu"):
    cos, sin = attn_ref.rope_cos_sin(torch.arange(T, device=device), d)
    return cos[:, : d // 2].contiguous(), sin[:, : d // 2].contiguous()


@pytest.mark.parametrize("B, T, H, d", [(1, 1, 1, 8), (2, 13, 3, 16), (1, 70, 1, 64), (1, 5, 12, 24)])
def test_rope(B, T, H, d):
    x = torch.randn(B, T, H, d, generator=torch.Generator().manual_seed(T))
    check(glue.rope, glue_torch.rope_torch, [x, *rope_tables(T, d)], float_args=(1, 2), constants=(1, 2))


def test_twins_compute_what_the_model_modules_compute():
    """The twins are the modules' equations: ShortConv.forward, RMSNorm, attention.rope, the mixer's act_norm
    of (o + d ⊙ x̃) ⊙ SiLU(z) and its gate logits."""
    torch.manual_seed(0)
    config = ModelConfig(d_model=32, n_layers=1, mem_size=16, backend="reference")
    conv = ShortConv(24, 4)
    x = torch.randn(2, 11, 24)
    w, b = conv.conv1d.weight[:, 0], conv.conv1d.bias
    assert rel_rms(glue_torch.short_conv_silu_torch(x, w, b), conv(x)) <= 1e-6
    norm = RMSNorm(24)
    with torch.no_grad():
        norm.weight.normal_()
    assert rel_rms(glue_torch.rms_norm_torch(x, norm.weight, norm.eps), norm(x)) <= 1e-6
    q = torch.randn(2, 11, 3, 16)
    assert rel_rms(glue_torch.rope_torch(q, *rope_tables(11, 16)), attn_ref.rope(q)) <= 1e-6
    mixer = RodimusMixer(config)
    with torch.no_grad():
        mixer.residual_weight.normal_()
        mixer.act_norm.weight.normal_()
    m = config.d_inner
    o, xc, z = torch.randn(3, 2, 9, m).unbind(0)
    expected = mixer.act_norm((o + mixer.residual_weight * xc) * F.silu(z))
    twin = glue_torch.gated_rmsnorm_torch(o, xc, z, mixer.residual_weight, mixer.act_norm.weight, mixer.act_norm.eps)
    assert rel_rms(twin, expected) <= 1e-6
    assert rel_rms(glue_torch.gate_linear_torch(xc, mixer.mem_gate_proj.weight, mixer.mem_gate_proj.bias),
                   mixer.gate_logits(xc)) <= 1e-6


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="weight \\[m, K\\]"):
        glue.short_conv_silu(torch.randn(1, 4, 8), torch.randn(7, 4), torch.randn(8))
    with pytest.raises(ValueError, match="one shape"):
        glue.value_gate(torch.randn(2, 8), torch.randn(2, 9))
    with pytest.raises(ValueError, match="gated_rmsnorm"):
        glue.gated_rmsnorm(*norm_inputs((1, 3, 8))[:4], torch.ones(9), 1e-5)


# ----------------------------------------------------------------------------- GPU (bf16)

@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("T", [1, 333, 2048])
@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 1e-2), (torch.float32, 1e-5)])
def test_gpu_glue(T, dtype, tol):
    m, eps = 1536, 1e-5
    check(glue.short_conv_silu, glue_torch.short_conv_silu_torch,
          conv_inputs(2, T, m, device="cuda", strided=True, seed=T), dtype=dtype, tol=tol, float_args=(1, 2))
    check(lambda *a: glue.gated_rmsnorm(*a, eps), lambda *a: glue_torch.gated_rmsnorm_torch(*a, eps),
          norm_inputs((2, T, m), device="cuda", seed=T), dtype=dtype, tol=tol, float_args=(3, 4))
    gen = torch.Generator("cuda").manual_seed(T)
    check(glue.value_gate, glue_torch.value_gate_torch,
          [torch.randn(2, T, m, generator=gen, device="cuda"), torch.randn(2, T, m, generator=gen, device="cuda")],
          dtype=dtype, tol=tol)
    x = torch.randn(2, T, 768, generator=gen, device="cuda")   # the float32 stream, normed into `dtype`
    assert glue.rms_norm(x, torch.ones(768, device="cuda"), eps, dtype).dtype == dtype
    check(lambda *a: glue.rms_norm(*a, eps), lambda *a: glue_torch.rms_norm_torch(*a, eps),
          [x, torch.randn(768, generator=gen, device="cuda")], tol=tol, float_args=(1,))
    check(glue.rope, glue_torch.rope_torch, [torch.randn(2, T, 12, 64, generator=gen, device="cuda"),
                                            *rope_tables(T, 64, "cuda")], dtype=dtype, tol=tol, float_args=(1, 2),
          constants=(1, 2))
    # the gate projection: 16-bit operands on tensor cores, float32 logits
    x = torch.randn(2, T, m, generator=gen, device="cuda")
    assert glue.gate_linear(x.to(dtype), torch.randn(4, m, device="cuda"), torch.randn(4, device="cuda")).dtype == torch.float32
    check(glue.gate_linear, glue_torch.gate_linear_torch,
          [x, 0.02 * torch.randn(128, m, generator=gen, device="cuda"), torch.randn(128, generator=gen, device="cuda")],
          dtype=dtype, tol=tol, float_args=(1, 2))
