"""SW-SKA kernel vs PyTorch baselines: fwd+bwd time and peak memory, ratios measured in one run.

    python benchmarks/bench_sw_ska.py [--sweep] [--batch 4] [--heads 8] [--head-dim 128]

Rows: (T, window) ∈ {(4096, 128), (4096, 512), (4096, 2048), (16384, 512)}, bf16. Baselines get K
repeated to H heads (what both public Rodimus+ implementations do) and their preferred [B, H, T, d]
layout; our kernel takes [B, T, H, d] with ONE key head:
    flex    torch.nn.attention.flex_attention, compiled, sliding-window BlockMask (128×128 blocks)
    sdpa    scaled_dot_product_attention with an explicit [T, T] boolean mask (the naive version)
    causal  scaled_dot_product_attention(is_causal=True) on the flash backend: full causal, no window
Time of fwd+bwd (torch.autograd.grad, so no .grad accumulation), two ways: the triton.testing.do_bench
median (wall time between events, host launch gaps included: what a training step sees when the host is
slower than the GPU) and the sum of the step's kernel times from torch.profiler (device time alone).
Memory: peak bytes allocated during one fwd+bwd above what was allocated before it (inputs excluded).
TFLOP/s (on the kernel time) counts the visible (query, key) pairs: 4·d FLOPs per pair forward, 2.5× that
backward.
--sweep first times a few tile shapes per kernel at T=4096 (windows 128 and 512) and uses the fastest.
"""

from __future__ import annotations

import argparse
import importlib

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from rodimus_kernels import sw_ska

ska = importlib.import_module("rodimus_kernels.sw_ska")  # the module (the package attribute is the function)
Tiles = ska.Tiles
DEVICE = "cuda"
ROWS = [(4096, 128), (4096, 512), (4096, 2048), (16384, 512)]
CANDIDATES = {  # (rows, cols, warps, stages); fwd/dq tile (queries, keys), dkdv (keys, queries)
    "fwd": [(128, 64, 8, 3), (128, 64, 8, 2), (128, 32, 8, 2), (64, 32, 4, 3), (64, 64, 4, 3)],
    "dq": [(64, 64, 4, 2), (128, 64, 8, 2), (128, 32, 8, 2), (64, 32, 4, 3), (64, 32, 8, 3)],
    "dkdv": [(64, 64, 4, 2), (128, 64, 8, 2), (128, 32, 8, 2), (64, 32, 4, 3), (64, 32, 8, 3)],
}
# The flex mask reads the window from this tensor (filled per row), so one compiled kernel serves every window.
WINDOW = {"tensor": None}


def sliding_window(b, h, q_idx, kv_idx):
    return (kv_idx <= q_idx) & (q_idx - kv_idx < WINDOW["tensor"])


def visible_pairs(T: int, window: int) -> int:
    w = min(window, T)
    return w * (w + 1) // 2 + (T - w) * w


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")


def bench_or_nan(fn) -> float:
    """A baseline that runs out of memory gets NaN instead of ending the run."""
    try:
        return bench(fn)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return float("nan")


def peak_mib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del out
    return peak / 2**20


def kernel_breakdown(step, reps: int = 10) -> list[tuple[str, float]]:
    """(kernel name, ms per step) from the profiler: where the device time of one fwd+bwd goes."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    rows = [(e.key, getattr(e, "self_device_time_total", 0) / reps / 1e3) for e in prof.key_averages()]
    return sorted((r for r in rows if r[1] > 0), key=lambda r: -r[1])


def inputs(B, T, H, d, seed=0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q, v, do = (torch.randn(B, T, H, d, device=DEVICE, generator=gen, dtype=torch.bfloat16) for _ in range(3))
    k = torch.randn(B, T, 1, d, device=DEVICE, generator=gen, dtype=torch.bfloat16)
    return q, k, v, do


def ours_step(q, k, v, do, window):
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    return lambda: (lambda o: (o, *torch.autograd.grad(o, (q, k, v), do)))(sw_ska(q, k, v, window=window))


def baseline_step(attend, q, k, v, do):
    """[B, H, T, d] inputs, K repeated to H heads inside the step (its cost and memory count)."""
    H = q.shape[1]
    q, k, v = (x.requires_grad_() for x in (q, k, v))

    def step():
        o = attend(q, k.repeat_interleave(H, dim=1), v)
        return (o, *torch.autograd.grad(o, (q, k, v), do))
    return step


def sweep(B, H, d):
    """Time each kernel's candidate tiles alone; return the fastest per kernel (summed over windows)."""
    chosen = {}
    totals = {}
    for window in (128, 512):
        q, k, v, do = inputs(B, 4096, H, d)
        scale = d ** -0.5
        o, lse = ska._forward(q, k, v, window, scale)
        for kernel, shapes in CANDIDATES.items():
            for shape in shapes:
                ska.TUNING.clear()
                ska.TUNING[kernel] = Tiles(*shape)
                fn = ((lambda: ska._forward(q, k, v, window, scale)) if kernel == "fwd"
                      else (lambda: ska._backward(do, q, k, v, o, lse, window, scale)))
                try:
                    ms = bench(fn)
                except Exception as err:  # a shape that does not fit (shared memory) is skipped, not fatal
                    print(f"  {kernel} {shape}: failed ({type(err).__name__}: {str(err)[:80]})")
                    continue
                totals[kernel, shape] = totals.get((kernel, shape), 0.0) + ms
                print(f"  window {window:5d} {kernel:5s} {shape}: {'fwd' if kernel == 'fwd' else 'bwd'} {ms:.3f} ms")
    for kernel in CANDIDATES:
        best = min((ms, shape) for (kern, shape), ms in totals.items() if kern == kernel)[1]
        chosen[kernel] = Tiles(*best)
    ska.TUNING.clear()
    for groups in (1, 2, 4):
        ska.TUNING.update(chosen, dkdv_groups=groups)
        q, k, v, do = inputs(B, 4096, H, d)
        o, lse = ska._forward(q, k, v, 512, d ** -0.5)
        ms = bench(lambda: ska._backward(do, q, k, v, o, lse, 512, d ** -0.5))
        print(f"  dkdv head groups {groups}: bwd {ms:.3f} ms")
        totals["groups", groups] = ms
    chosen["dkdv_groups"] = min((ms, g) for (kern, g), ms in totals.items() if kern == "groups")[1]
    ska.TUNING.clear()
    print("chosen:", chosen)
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--sweep", action="store_true", help="time tile shapes first and use the fastest")
    args = parser.parse_args()
    B, H, d = args.batch, args.heads, args.head_dim
    props = torch.cuda.get_device_properties(0)
    print(f"device {props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}, triton {triton.__version__}")

    if args.sweep:
        ska.TUNING.update(sweep(B, H, d))
    flex = torch.compile(flex_attention, dynamic=False)
    WINDOW["tensor"] = torch.zeros((), dtype=torch.int64, device=DEVICE)
    torch._dynamo.config.cache_size_limit = 64

    header = (f"{'T':>6} {'window':>6} | {'ours ms':>7} {'flex ms':>7} {'ratio':>5} {'sdpa+mask':>9} {'ratio':>5} "
              f"{'causal':>6} {'ratio':>5} {'fwd':>5} | {'ours ms':>7} {'TFLOP/s':>7} {'flex ms':>7} {'ratio':>5} | "
              f"{'MiB ours':>8} {'MiB flex':>8} {'ratio':>5} | {'max|o-flex|':>11}")
    lines, profile_lines = [], []
    for T, window in ROWS:
        q, k, v, do = inputs(B, T, H, d, seed=T + window)
        qh, kh, vh, doh = (x.transpose(1, 2).contiguous() for x in (q, k, v, do))  # [B, H, T, d]
        WINDOW["tensor"].fill_(window)
        block_mask = create_block_mask(sliding_window, None, None, T, T, device=DEVICE)
        pos = torch.arange(T, device=DEVICE)
        mask = (pos[None, :] <= pos[:, None]) & (pos[:, None] - pos[None, :] < window)

        def flex_attend(q_, k_, v_):
            return flex(q_, k_, v_, block_mask=block_mask)

        def sdpa_masked(q_, k_, v_):
            return F.scaled_dot_product_attention(q_, k_, v_, attn_mask=mask)

        def sdpa_causal(q_, k_, v_):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q_, k_, v_, is_causal=True)

        steps = {
            "ours": ours_step(q, k, v, do, window),
            "flex": baseline_step(flex_attend, qh, kh, vh, doh),
            "sdpa": baseline_step(sdpa_masked, qh, kh, vh, doh),
            "causal": baseline_step(sdpa_causal, qh, kh, vh, doh),
        }
        o_ours, o_flex = steps["ours"]()[0], steps["flex"]()[0]
        diff = (o_ours.float() - o_flex.transpose(1, 2).float()).abs().max().item()
        ms = {name: bench_or_nan(step) for name, step in steps.items()}
        q_, k_, v_ = (x.detach() for x in (q, k, v))
        qh_, kh_, vh_ = (x.detach() for x in (qh, kh, vh))
        fwd_ours = bench(lambda: sw_ska(q_, k_, v_, window=window))
        fwd_flex = bench(lambda: flex_attend(qh_, kh_.repeat_interleave(H, dim=1), vh_))
        mem = {name: peak_mib(steps[name]) for name in ("ours", "flex")}
        kernels = {}
        for name in ("ours", "flex"):
            try:
                rows = kernel_breakdown(steps[name])
            except Exception as err:  # the profiler is a diagnosis, not part of the timing
                profile_lines.append(f"{name}: profiler failed ({type(err).__name__}: {err})")
                kernels[name] = float("nan")
                continue
            kernels[name] = sum(ms_k for _, ms_k in rows)
            if (T, window) == (4096, 512):
                profile_lines.append(f"{name}: {kernels[name]:.3f} ms of kernels per fwd+bwd (wall {ms[name]:.3f} ms)")
                profile_lines += [f"    {ms_k:7.3f} ms  {key[:90]}" for key, ms_k in rows[:6]]
        tflops = 3.5 * 4 * d * B * H * visible_pairs(T, window) / (kernels["ours"] * 1e-3) / 1e12
        lines.append(
            f"{T:6d} {window:6d} | {ms['ours']:7.3f} {ms['flex']:7.3f} {ms['ours'] / ms['flex']:5.2f} "
            f"{ms['sdpa']:9.3f} {ms['ours'] / ms['sdpa']:5.2f} {ms['causal']:6.3f} {ms['ours'] / ms['causal']:5.2f} "
            f"{fwd_ours / fwd_flex:5.2f} | {kernels['ours']:7.3f} {tflops:7.0f} {kernels['flex']:7.3f} "
            f"{kernels['ours'] / kernels['flex']:5.2f} | {mem['ours']:8.0f} {mem['flex']:8.0f} {mem['ours'] / mem['flex']:5.2f} | "
            f"{diff:11.2e}")
        print(lines[-1], flush=True)
        del steps, mask, block_mask
        torch.cuda.empty_cache()

    print(f"\nSW-SKA fwd+bwd, B={B}, H={H}, d={d}, bf16; ratio = ours / baseline (lower is better)")
    print("first block: do_bench wall time (fwd: forward-only ratio to flex); second block: summed kernel times")
    print("from torch.profiler (device time without host launch gaps) and TFLOP/s of ours on that time")
    if ska.TUNING:
        print("tiles:", ska.TUNING)
    print(header)
    print("\n".join(lines))
    print("\nprofile at T=4096, window=512 (device time per fwd+bwd, top kernels):")
    print("\n".join(profile_lines))


if __name__ == "__main__":
    main()
