"""Benchmark the fused DDTS kernels (rodimus_kernels.ddts / ddts_step) on a CUDA GPU.

Compares, in one run on one GPU:
  * the official path — gates and key norm in PyTorch, then fla's ``chunk_gla`` (decode: fla's
    ``fused_recurrent_gla``), flash-linear-attention 0.6.0;
  * our PyTorch chunkwise reference (rodimus_lab.ddts) — what the kernels buy;
  * the roofline: bytes that must move once / measured copy bandwidth, and the chunkwise flops /
    measured bf16 matmul rate.
Prints one table (times are medians of triton.testing.do_bench, in ms) plus the ratios.

    python benchmarks/bench_ddts.py                 # all shapes
    python benchmarks/bench_ddts.py --fla decode    # fla only for decoding (chunk_gla autotunes for minutes)
    python benchmarks/bench_ddts.py --fla none      # without flash-linear-attention installed
"""

import argparse
import platform

import torch
import triton
from triton.testing import do_bench

import rodimus_kernels
from rodimus_lab.ddts import ddts as ddts_reference
from rodimus_lab.ddts import ddts_gates, effective_key

SHAPES = [  # (B, T, H, n, m)
    (8, 2048, 1, 64, 2048),
    (8, 8192, 1, 64, 2048),
    (8, 2048, 1, 64, 4096),
]
DECODE = [(1, 1, 64, 4096), (64, 1, 64, 4096)]  # (B, H, n, m)


def bench(fn):
    return do_bench(fn, warmup=50, rep=200, return_mode="median")


def inputs(B, T, H, n, m, dtype=torch.bfloat16, requires_grad=True):
    def randn(*shape, dt=dtype, s=1.0):
        return (s * torch.randn(*shape, device="cuda")).to(dt).requires_grad_(requires_grad)

    return [randn(B, T, H, n), randn(B, T, H, n), randn(B, T, H, m),
            randn(B, T, H, n, dt=torch.float32, s=2.0), randn(B, T, H, n, dt=torch.float32)]


def official(q, k, v, g_logits, tau_logits):
    """The official Rodimus path: gate math and key norm in PyTorch, then fla's chunk_gla."""
    from fla.ops.gla import chunk_gla

    log_alpha, alpha_hat = ddts_gates(g_logits, tau_logits)
    k_eff = effective_key(k, alpha_hat).to(q.dtype)
    return chunk_gla(q, k_eff, v, g=log_alpha, scale=q.shape[-1] ** -0.5)[0]


def ours(q, k, v, g_logits, tau_logits):
    return rodimus_kernels.ddts(q, k, v, g_logits, tau_logits)[0]


def reference(q, k, v, g_logits, tau_logits):
    return ddts_reference(q, k, v, g_logits, tau_logits)[0]


def time_path(path, x):
    do = torch.randn_like(x[2])

    def fwd_bwd():
        torch.autograd.grad(path(*x), x, do)

    def fwd():
        with torch.no_grad():
            path(*x)

    return bench(fwd), bench(fwd_bwd)


def ceilings():
    """(copy bandwidth B/s counting read + write, bf16 matmul FLOP/s), measured here."""
    a = torch.randn(2 ** 30 // 2, device="cuda", dtype=torch.bfloat16)   # 1 GiB
    b = torch.empty_like(a)
    bw = 2 * a.numel() * 2 / (bench(lambda: b.copy_(a)) * 1e-3)
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    rate = 2 * 8192 ** 3 / (bench(lambda: x @ y) * 1e-3)
    return bw, rate


def floor_ms(B, T, H, n, m, bw, rate, C=64):
    """Forward floor: q, k (bf16) and the fp32 logits read once, v read once, o written once;
    chunkwise flops: q·S and the state update (2·n·m each per token), A·v (2·C·m), scores (2·C·n)."""
    tokens = B * T * H
    nbytes = tokens * (2 * n * 2 + 2 * n * 4 + 2 * m * 2)
    flops = tokens * (4 * n * m + 2 * C * m + 2 * C * n)
    return max(nbytes / bw, flops / rate) * 1e3, nbytes / bw * 1e3, flops / rate * 1e3


def decode_times(B, H, n, m, with_fla):
    q, k, g, tau = (torch.randn(B, H, n, device="cuda") for _ in range(4))
    q, k = q.bfloat16(), k.bfloat16()
    v = torch.randn(B, H, m, device="cuda", dtype=torch.bfloat16)
    state = torch.zeros(B, H, n, m, device="cuda")
    t_ours = bench(lambda: rodimus_kernels.ddts_step(q, k, v, g, tau, state))
    t_fla = float("nan")
    if with_fla:
        from fla.ops.gla import fused_recurrent_gla

        def fla_step():
            log_alpha, alpha_hat = ddts_gates(g, tau)
            k_eff = effective_key(k, alpha_hat).to(q.dtype)
            return fused_recurrent_gla(q[:, None], k_eff[:, None], v[:, None], gk=log_alpha[:, None],
                                       initial_state=state, output_final_state=True, scale=n ** -0.5)

        t_fla = bench(fla_step)
    return t_ours, t_fla


def profile_ours(shape):
    """Per-kernel CUDA time of one forward + backward (where the time goes)."""
    x = inputs(*shape)
    do = torch.randn_like(x[2])
    for _ in range(3):
        torch.autograd.grad(ours(*x), x, do)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            torch.autograd.grad(ours(*x), x, do)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fla", choices=["all", "decode", "none"], default="all",
                        help="where to compare with the official fla path")
    parser.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--profile", action="store_true", help="per-kernel times of our fwd+bwd at every shape")
    args = parser.parse_args()
    with_fla = args.fla == "all"
    fla_version = "not used"
    if args.fla != "none":
        import fla

        fla_version = fla.__version__
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"fla {fla_version}, python {platform.python_version()}", flush=True)
    bw, rate = ceilings()
    print(f"measured ceilings: copy {bw / 1e12:.2f} TB/s (read + write), bf16 matmul {rate / 1e12:.0f} TFLOP/s",
          flush=True)
    if args.profile:
        for shape in SHAPES:
            print(f"per-kernel CUDA time, B,T,H,n,m = {shape}, 5 x fwd+bwd")
            profile_ours(shape)

    rows = []
    for shape in SHAPES:
        torch.manual_seed(0)
        x = inputs(*shape)
        floor, _, _ = floor_ms(*shape, bw, rate)
        ours_f, ours_fb = time_path(ours, x)
        ref_f = ref_fb = fla_f = fla_fb = float("nan")
        if not args.no_reference and shape == SHAPES[0]:
            ref_f, ref_fb = time_path(reference, x)
        if with_fla:
            fla_f, fla_fb = time_path(official, x)
        rows.append((shape, floor, ours_f, ours_fb, fla_f, fla_fb, ref_f, ref_fb))
        print("measured", rows[-1], flush=True)
        del x
        torch.cuda.empty_cache()
    decode = [(b, *decode_times(b, h, n, m, args.fla != "none")) for b, h, n, m in DECODE]

    print("\nDDTS, bf16 inputs, fp32 logits; times in ms (median); ratio = ours / other (lower is better)")
    print(f"{'B,T,H,n,m':>22} | {'floor':>6} | {'ours fwd':>8} {'fla fwd':>8} {'ratio':>5} | "
          f"{'ours f+b':>8} {'fla f+b':>8} {'ratio':>5} | {'fwd/floor':>9} | {'ref fwd':>8} {'ref f+b':>8} {'speedup f+b':>11}")
    for shape, floor, of, ofb, ff, ffb, rf, rfb in rows:
        print(f"{','.join(map(str, shape)):>22} | {floor:6.3f} | {of:8.3f} {ff:8.3f} {of / ff:5.2f} | "
              f"{ofb:8.3f} {ffb:8.3f} {ofb / ffb:5.2f} | {of / floor:9.2f} | {rf:8.3f} {rfb:8.3f} {rfb / ofb:11.1f}")
    print("\ndecode step, n=64, m=4096, H=1, bf16, fp32 state: tokens/s (ours in place; fla incl. PyTorch gates)")
    for b, t_ours, t_fla in decode:
        print(f"  B={b:<3} ours {b / (t_ours * 1e-3):12,.0f} tok/s ({t_ours * 1e3:6.1f} us)   "
              f"fla {b / (t_fla * 1e-3):12,.0f} tok/s ({t_fla * 1e3:6.1f} us)   ratio {t_ours / t_fla:.2f}")


if __name__ == "__main__":
    main()
