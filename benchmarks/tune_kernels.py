"""Sweep the launch parameters of the training kernels at one Rodimus+ layer's shapes, checking each candidate.

For each kernel family (conv + SiLU, SW-SKA's three kernels, DDTS) the inputs are built once (seeded) with the
shapes, dtypes and layouts a bf16 Rodimus+ layer passes the public ``rodimus_kernels`` ops (d_model 768:
m = d_inner = 1536, n = 64, one DDTS head; 12 query heads of 64, one key head, window 1024). A forward and
backward under the CURRENT module constants gives the reference outputs and gradients; then each candidate
launch configuration is patched into the module constants (and restored after), its outputs and gradients are
compared with the reference (relative RMS, bf16 tolerance 1e-2), and its forward and backward are timed
separately with CUDA events (warm-up, then the median of ``--reps`` runs). A candidate that fails to compile
or launch is reported and skipped. Triton's compile time counts against ``--budget-s``, shared fairly among
the families (what one leaves, the next gets); candidates past the budget are listed as skipped.

    python benchmarks/tune_kernels.py --out tune.json                      # all families, on the GPU
    python benchmarks/tune_kernels.py --only conv sw_ska_dkdv --budget-s 60
    TRITON_INTERPRET=1 python benchmarks/tune_kernels.py --device cpu     # smoke run: tiny shapes, interpreter

On the CPU the kernels run through Triton's interpreter at tiny shapes in float32 (its bf16 arithmetic is
wrong) with two candidates per family: a check that the sweep runs, not a measurement (its times mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from rodimus_lab.bench import rel_rms

TOLERANCE = 1e-2   # relative RMS of every output and gradient against the current configuration's


@dataclass
class Candidate:
    """One launch configuration: the module attributes it sets, {(module name, attribute): value}."""
    label: str
    patches: dict = field(default_factory=dict)


@dataclass
class Family:
    """A kernel family: its op, its inputs by name (the tensors whose gradients are checked: views of larger
    leaves where the model passes views), which time its candidates change ("fwd", "bwd" or "total"), and its
    candidates (the current configuration first, with no patches)."""
    name: str
    op: Callable
    inputs: dict
    metric: str
    candidates: list


@contextlib.contextmanager
def patched(patches: dict):
    """Set the attributes of ``patches`` ({(module name, attribute): value}) and restore them afterwards."""
    saved = []
    try:
        for (module, attr), value in patches.items():
            mod = importlib.import_module(module)
            saved.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, value)
        yield
    finally:
        for mod, attr, value in reversed(saved):
            setattr(mod, attr, value)


def _randn(gen, device, *shape, dtype, scale=1.0, grad=True):
    x = (scale * torch.randn(*shape, generator=gen, device=device)).to(dtype)
    return x.requires_grad_(grad)


# ---------------------------------------------------------------------------------------------- families

def conv_family(a, gen) -> Family:
    """short_conv_silu on x' [B, T, m], the first half of fc(x) [B, T, 2m] (a view with row stride 2m, as the
    model passes it), the conv's float32 weight [m, 4] and bias [m]."""
    from rodimus_kernels import glue

    tiles_name = "CONV_TILES" if a.cuda else "CONV_TILES_CPU"
    current = (getattr(glue, tiles_name), glue.CONV_WARPS)
    if a.cuda:
        grid = [((bt, bc), w) for bt, bc in [(32, 64), (64, 64), (16, 128), (32, 128), (64, 32)] for w in (4, 8)]
    else:
        grid = [((32, 32), 4)]
    candidates = [Candidate(f"tiles {current[0]} warps {current[1]}")]
    candidates += [Candidate(f"tiles {tiles} warps {w}", {("rodimus_kernels.glue", tiles_name): tiles,
                                                         ("rodimus_kernels.glue", "CONV_WARPS"): w})
                   for tiles, w in grid if (tiles, w) != current]
    fc_out = _randn(gen, a.device, a.batch, a.seq, 2 * a.width, dtype=a.dtype)
    inputs = dict(x=fc_out[..., :a.width], weight=_randn(gen, a.device, a.width, 4, dtype=torch.float32, scale=0.5),
                  bias=_randn(gen, a.device, a.width, dtype=torch.float32, scale=0.1))
    return Family("conv", glue.short_conv_silu, inputs, "total", candidates)


def _sw_ska_family(a, gen, kernel: str) -> Family:
    """sw_ska on contiguous q [B, T, H, 64], k [B, T, 1, 64], v [B, T, H, 64] (RoPE's outputs and a view of
    v_proj's): the candidates set the tiles of one of its kernels ("fwd", "dq", "dkdv")."""
    from rodimus_kernels import sw_ska

    S = importlib.import_module("rodimus_kernels.sw_ska")   # the module: the package exports its function
    current = S._tiles(kernel, a.dtype, a.device)
    if a.cuda:
        shapes = [(64, 32), (64, 64), (128, 32), (128, 64), (32, 32)]
        grid = [S.Tiles(r, c, w, s) for r, c in shapes for w in (4, 8) for s in (2, 3)]
        # short lists: every shape at the current warps and stages, the warps and stages at the current shape
        grid = [t for t in grid if (t.num_warps, t.num_stages) == (current.num_warps, current.num_stages)
                or (t.rows, t.cols) == (current.rows, current.cols)]
    else:
        grid = [S.Tiles(16, 16)]
    def label(t):
        return f"rows {t.rows} cols {t.cols} warps {t.num_warps} stages {t.num_stages}"

    candidates = [Candidate(label(current))]
    candidates += [Candidate(label(t), {("rodimus_kernels.sw_ska", "TUNING"): {kernel: t}})
                   for t in grid if t != current]
    B, T, H, d = a.batch, a.seq, a.heads, 64
    inputs = {name: _randn(gen, a.device, B, T, heads, d, dtype=a.dtype)
              for name, heads in (("q", H), ("k", 1), ("v", H))}

    def op(q, k, v):
        return sw_ska(q, k, v, window=a.window)

    return Family(f"sw_ska_{kernel}", op, inputs, "fwd" if kernel == "fwd" else "bwd", candidates)


def ddts_family(a, gen) -> Family:
    """ddts on one head: q, k [B, T, 1, n] halves of in_proj(x̃) (views; the op makes them contiguous, as in
    the model), v [B, T, 1, m] from the value gate, the gate logits [B, T, 1, n] halves of gate_linear's
    float32 output. The candidates set the value columns per walk program (BLOCK_M), the warps of the
    walks and sweep and of the per-chunk programs, and the pipeline stages."""
    from rodimus_kernels import ddts

    D = importlib.import_module("rodimus_kernels.ddts")   # the module: the package exports its function
    n = 64
    current = (D.BLOCK_M, D._warps(n), D._warps(n, chunk_program=True), D._stages(n, a.dtype))
    if a.cuda:
        grid = [(32, 4, 8, 3), (128, 4, 8, 3), (128, 8, 8, 3), (64, 8, 8, 3), (64, 4, 4, 3), (64, 4, 8, 2),
                (32, 2, 8, 3), (64, 4, 8, 4)]
    else:
        grid = [(32,) + current[1:]]

    def candidate(block_m, walk_warps, chunk_warps, stages):
        def warps(n, chunk_program=False):
            return chunk_warps if chunk_program else walk_warps

        return Candidate(f"BLOCK_M {block_m} warps {walk_warps}/{chunk_warps} stages {stages}",
                         {("rodimus_kernels.ddts", "BLOCK_M"): block_m, ("rodimus_kernels.ddts", "_warps"): warps,
                          ("rodimus_kernels.ddts", "_stages"): lambda n, dtype: stages})

    candidates = [Candidate(candidate(*current).label)] + [candidate(*c) for c in grid if c != current]
    B, T, m = a.batch, a.seq, a.width
    q, k = _randn(gen, a.device, B, T, 1, 2 * n, dtype=a.dtype).chunk(2, dim=-1)
    g, tau = _randn(gen, a.device, B, T, 1, 2 * n, dtype=torch.float32).chunk(2, dim=-1)
    inputs = dict(q=q, k=k, v=_randn(gen, a.device, B, T, 1, m, dtype=a.dtype), g_logits=g, tau_logits=tau)

    def op(**x):
        return ddts(**x)[0]

    return Family("ddts", op, inputs, "total", candidates)


FAMILIES = {"conv": conv_family,
            "sw_ska_fwd": lambda a, gen: _sw_ska_family(a, gen, "fwd"),
            "sw_ska_dq": lambda a, gen: _sw_ska_family(a, gen, "dq"),
            "sw_ska_dkdv": lambda a, gen: _sw_ska_family(a, gen, "dkdv"),
            "ddts": ddts_family}


# ---------------------------------------------------------------------------------------------- measuring

def forward_backward(family: Family, grad_out: torch.Tensor):
    """(output, gradients of every input) of one forward and backward."""
    out = family.op(**family.inputs)
    return out.detach(), torch.autograd.grad(out, list(family.inputs.values()), grad_out)


def errors(result, reference, names) -> dict:
    """Relative RMS of the output and of the gradient of each input (``names``) against the reference."""
    (out, grads), (ref_out, ref_grads) = result, reference
    errs = {"out": rel_rms(out, ref_out)}
    errs.update({f"d{name}": rel_rms(g, r) for name, g, r in zip(names, grads, ref_grads)})
    return errs


SLEEP_CYCLES = 2_000_000   # ~1 ms of GPU clock: longer than the host takes to launch a family's forward or backward


def _timer(cuda: bool):
    """start() → a stop() that returns the milliseconds since start: CUDA events on the GPU, else the clock.
    On the GPU the stream first sleeps, so the host has queued the whole timed region before the GPU reaches it:
    the events then measure GPU time (what the profiler attributes to the kernels), not the host's launch time."""
    def start():
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(SLEEP_CYCLES)
            begin.record()

            def stop():
                end.record()
                end.synchronize()
                return begin.elapsed_time(end)
            return stop
        t0 = time.perf_counter()
        return lambda: 1e3 * (time.perf_counter() - t0)
    return start


def time_fwd_bwd(family: Family, grad_out, warmup: int, reps: int, cuda: bool) -> tuple[float, float]:
    """Median milliseconds of the forward (with autograd recording, as in training) and of the backward."""
    start = _timer(cuda)
    fwd, bwd = [], []
    for i in range(warmup + reps):
        stop = start()
        out = family.op(**family.inputs)
        t_fwd = stop()
        stop = start()
        torch.autograd.grad(out, list(family.inputs.values()), grad_out)
        t_bwd = stop()
        if i >= warmup:
            fwd.append(t_fwd)
            bwd.append(t_bwd)
    return statistics.median(fwd), statistics.median(bwd)


def sweep(family: Family, budget_s: float, warmup: int, reps: int, cuda: bool, seed: int = 0) -> dict:
    """Check and time every candidate of ``family`` (the first is the current configuration) until
    ``budget_s`` seconds are spent: {rows: [...], skipped: [labels]}."""
    if budget_s <= 0:   # not even the reference: it compiles the current configuration
        return {"metric": family.metric, "rows": [], "skipped": [c.label for c in family.candidates]}
    deadline = time.monotonic() + budget_s
    out = family.op(**family.inputs)
    gen = torch.Generator(device=out.device).manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=gen, device=out.device).to(out.dtype)
    reference = forward_backward(family, grad_out)
    rows, skipped = [], []
    for i, cand in enumerate(family.candidates):
        if time.monotonic() > deadline:
            skipped = [c.label for c in family.candidates[i:]]
            break
        row = {"label": cand.label, "current": i == 0,
               "patches": {f"{m}.{a}": repr(v) for (m, a), v in cand.patches.items()}}
        t0 = time.monotonic()
        try:
            with patched(cand.patches):
                errs = errors(forward_backward(family, grad_out), reference, family.inputs)
                worst = max(errs.values(), key=lambda e: (math.isnan(e), e))   # a NaN is the worst
                row.update(errors=errs, max_error=worst, ok=all(e < TOLERANCE for e in errs.values()))
                if row["ok"]:
                    row["fwd_ms"], row["bwd_ms"] = time_fwd_bwd(family, grad_out, warmup, reps, cuda)
                    row["total_ms"] = row["fwd_ms"] + row["bwd_ms"]
        except Exception as e:   # a configuration that does not compile or launch (e.g. OutOfResources)
            row.update(ok=False, failure=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        row["seconds"] = time.monotonic() - t0
        rows.append(row)
        print(f"  {family.name}: {cand.label}: " + (row.get("failure") or
              f"max rel RMS {row['max_error']:.1e}" + ("" if row["ok"] else " MISMATCH")), flush=True)
        if "illegal memory access" in row.get("failure", ""):   # sticky: every later CUDA call in this process fails
            return {"metric": family.metric, "rows": rows, "skipped": [c.label for c in family.candidates[i + 1:]],
                    "context_lost": cand.label}
    return {"metric": family.metric, "rows": rows, "skipped": skipped}


def table(name: str, result: dict) -> str:
    """The family's rows sorted by its metric (checked ones first), the current configuration marked *."""
    key = f"{result['metric']}_ms"
    rows = sorted(result["rows"], key=lambda r: (not r["ok"], r.get(key, math.inf)))
    current = next((r for r in result["rows"] if r["current"] and r["ok"]), None)
    lines = [f"{name} (sorted by {result['metric']} time; * = current; speed-up vs current)",
             f"  {'':1s} {'configuration':44s} {'fwd ms':>8s} {'bwd ms':>8s} {'total ms':>9s} {'vs cur':>7s} "
             f"{'rel RMS':>8s}"]
    for r in rows:
        mark = "*" if r["current"] else " "
        if "failure" in r:
            lines.append(f"  {mark} {r['label']:44s} FAILED {r['failure'][:120]}")
        elif not r["ok"]:
            lines.append(f"  {mark} {r['label']:44s} MISMATCH (rel RMS {r['max_error']:.1e} ≥ {TOLERANCE:g}: "
                         f"{', '.join(f'{k} {v:.1e}' for k, v in r['errors'].items())})")
        else:
            gain = f"{current[key] / r[key]:6.2f}x" if current else "     -"
            lines.append(f"  {mark} {r['label']:44s} {r['fwd_ms']:8.3f} {r['bwd_ms']:8.3f} {r['total_ms']:9.3f} "
                         f"{gain:>7s} {r['max_error']:8.1e}")
    if "failure" in result:
        lines.append(f"  the current configuration failed: {result['failure'][:200]}")
    elif "context_lost" in result:
        lines.append(f"  {result['context_lost']} broke the CUDA context (illegal memory access): not run after it, "
                     f"in this process: {'; '.join(result['skipped'])}")
    elif result["skipped"]:
        lines.append(f"  budget spent, not tried: {'; '.join(result['skipped'])}")
    return "\n".join(lines)


def options(argv=None) -> argparse.Namespace:
    """The command line, its defaults filled in for the device (the CPU smoke run's are tiny)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cuda: the sweep; cpu: a smoke run through Triton's interpreter (tiny shapes)")
    p.add_argument("--only", nargs="+", choices=sorted(FAMILIES), help="these families only (default: all)")
    p.add_argument("--budget-s", type=float, default=200.0,
                   help="seconds for the whole sweep, compiling included (shared among the families)")
    p.add_argument("--batch", type=int, help="B (default 8; cpu 1)")
    p.add_argument("--seq", type=int, help="T (default 2048; cpu 72)")
    p.add_argument("--width", type=int, help="m = d_inner, the DDTS value width and conv channels (1536; cpu 64)")
    p.add_argument("--heads", type=int, help="SW-SKA query heads of dim 64 (12; cpu 2)")
    p.add_argument("--window", type=int, help="SW-SKA window (1024; cpu 24)")
    p.add_argument("--warmup", type=int, help="untimed runs per candidate (5; cpu 0)")
    p.add_argument("--reps", type=int, help="timed runs per candidate, the median is reported (25; cpu 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    a.cuda = a.device == "cuda"
    defaults = dict(batch=8, seq=2048, width=1536, heads=12, window=1024, warmup=5, reps=25) if a.cuda else \
        dict(batch=1, seq=72, width=64, heads=2, window=24, warmup=0, reps=1)
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.cuda and not torch.cuda.is_available():
        p.error("--device cuda needs a GPU; --device cpu runs the interpreter smoke path")
    if not a.cuda and os.environ.get("TRITON_INTERPRET") != "1":
        p.error("--device cpu runs the kernels through Triton's interpreter: set TRITON_INTERPRET=1 before Python "
                "starts (the kernels read it when imported)")
    a.device = torch.device(a.device)
    a.dtype = torch.bfloat16 if a.cuda else torch.float32
    return a


def main(argv=None) -> dict:
    a = options(argv)
    names = a.only or list(FAMILIES)
    gen = torch.Generator(device=a.device).manual_seed(a.seed)
    header = {"device": torch.cuda.get_device_name() if a.cuda else "cpu (Triton interpreter)",
              "torch": torch.__version__, "dtype": str(a.dtype), "tolerance": TOLERANCE,
              **{k: getattr(a, k) for k in ("batch", "seq", "width", "heads", "window", "warmup", "reps",
                                            "budget_s")}}
    print(header, flush=True)
    results, started = {}, time.monotonic()
    for i, name in enumerate(names):
        share = (a.budget_s - (time.monotonic() - started)) / (len(names) - i)
        family = FAMILIES[name](a, gen)
        print(f"{name}: {len(family.candidates)} candidates, {max(share, 0):.0f} s", flush=True)
        try:
            results[name] = sweep(family, share, a.warmup, a.reps, a.cuda, a.seed)
        except Exception as e:   # the current configuration itself failed: no reference, the next family goes on
            print(f"{name}: the current configuration failed, nothing to compare with: {type(e).__name__}: {e}")
            results[name] = {"metric": family.metric, "rows": [], "skipped": [c.label for c in family.candidates],
                             "failure": f"{type(e).__name__}: {e}"}
        if "context_lost" in results[name]:
            print(f"the CUDA context is lost: families not run: {', '.join(names[i + 1:]) or 'none'} "
                  f"(run them in a new process with --only)")
            break
    for name, result in results.items():
        print("\n" + table(name, result))
    report = {**header, "families": results}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return report


if __name__ == "__main__":
    main()
