"""Which DDTS kernel hangs, and under which launch knob: one device call answers it.

On the H200 (torch 2.11, Triton 3.6) ``pytest tests -m gpu`` hung inside the float32 DDTS tests, not
every time: ``test_gpu_heads_and_packed_sequences`` (fp32) in two runs of two, ``test_gpu_full_shapes
[300-256-256-fp32]`` in one run of two; the bf16 cases always passed. A hung CUDA call blocks the main
thread in C, so pytest's timeout never fired and nothing said which of the op's launches it was.

This script runs the tests' checks (their ``compare``: forward with an initial and a final state, backward,
float64 reference) at those shapes, one case and one launch variant per CHILD process under a time limit.
In the child every Triton launch is made visible: compiled and loaded on its own (compile seconds,
registers, local memory — spills — and shared memory as the driver reports them), then launched
``--launches`` times with ``torch.cuda.synchronize()`` after each (the kernels are idempotent).
Each step prints one line as it happens, so the last line of a hung child names the kernel and the step:

    <case> <variant> | <kernel> compiled (or cached) in 3.1 s, loaded in 0.01 s: regs 32, local 13216 B/thread, ...
    <case> <variant> | <kernel> #1 launching grid (5, 4, 8)    <- last line before a hang: the launch call
    <case> <variant> | <kernel> #1 queued                      <-   itself blocked (host side: the driver,
                                                                     e.g. growing the local memory)
    <case> <variant> | <kernel> #1 ok in 0.41 ms               <- no "ok": the kernel never finished

A child that outlives ``--timeout`` is reported as ``HANG``, with the GPU's utilisation at that moment
(busy: a kernel spinning; idle: the host blocked) and the child's Python stack (faulthandler) showing
where it was; then it is killed and the next case runs.

Variants (launch knobs the wrapper picks; each overrides every DDTS launch; default: base, stack24k, stages1):
    base     the wrapper's own choice (fp32: 3-pass tf32 products, ≈ fp32 on tensor cores)
    stack24k base launches, the context's local memory reserved up front for 24 KiB per thread (the IEEE
             fp32 kernels spilled 8–20 KiB per thread: without it the driver grows it inside a launch)
    stages1  num_stages = 1 (no software pipelining of the chunk loops, prep included)
    warps8   num_warps = 8
    ieee     input_precision "ieee" where the wrapper asks for "tf32x3": for fp32 inputs the launches before
             the fix, IEEE fp32 products (FMA loops), whose backward compiled for minutes (make_llir)

Cases (float32 unless ``--dtypes``; default: test_heads and n256):
    test_heads  the hung test itself, test_gpu_heads_and_packed_sequences, as pytest calls it (CUDA only):
                its first call is the case packed, its second b3 (the launch grids tell them apart)
    packed      cu_seqlens with lengths [0, 1, 700, 64, 129], H = 4, n = 64, m = 512
    b3          B = 3, T = 300, H = 4, n = 64, m = 256
    n256        B = 2, T = 300, H = 1, n = m = 256              (test_gpu_full_shapes[300-256-256-fp32])
    long        B = 1, T = 65 536, n = 64, m = 128, saturated gates (the precision-sensitive test; --timeout 60)
A child calls the test's own ``compare`` (forward, backward, o, the final state and all six gradients against
the float64 reference, its tolerance asserted) ``--repeats`` times; an error above the tolerance ends it with
ERROR and the assertion's message.

First every (case, variant) is compiled in parallel children (``--jobs``, Triton's cache is shared), so that
the timed runs, one at a time, only load kernels. Everything stops by ``--budget`` seconds.

    python benchmarks/diagnose_ddts_hang.py                      # on the GPU, about 2 minutes
    python benchmarks/diagnose_ddts_hang.py --cases packed b3 --variants base ieee --launches 10
    python benchmarks/diagnose_ddts_hang.py --cases n256 --load 4   # 4 processes busy on the GPU meanwhile
    TRITON_INTERPRET=1 python benchmarks/diagnose_ddts_hang.py --tiny --cases packed b3 n256   # CPU check

Reading the summary: a variant that is ``ok`` where ``base`` hangs names the knob (stack24k: the driver's
local-memory resizing; stages1: the pipelining; ``ieee`` hanging where ``base`` does not: the FMA code path);
the kernel named in the ``HANG`` line is the one to change. All ``ok``: the hang did not reproduce in this
call (it is not deterministic); the per-launch times and local-memory figures are still the evidence to compare.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {   # name: (lengths for cu_seqlens or None, B, T, H, n, m, seed of the test, gate logits' scale)
    "packed": ([0, 1, 700, 64, 129], 1, 894, 4, 64, 512, 4, 2.0),
    "b3": (None, 3, 300, 4, 64, 256, 9, 2.0),
    "n256": (None, 2, 300, 1, 256, 256, 556, 2.0),
    "long": (None, 1, 65536, 1, 64, 128, 1, 30.0),   # test_gpu_long_sequence_saturated_gates: numerics
}
TINY_CASES = {   # the same structures at interpreter sizes
    "packed": ([0, 1, 70, 5], 1, 76, 2, 16, 24, 4, 2.0),
    "b3": (None, 3, 70, 2, 16, 16, 9, 2.0),
    "n256": (None, 1, 70, 1, 256, 16, 556, 2.0),
    "long": (None, 1, 300, 1, 16, 16, 1, 30.0),
}
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-3}   # the tests' relative RMS tolerances
# The hung test itself (tests/kernels/test_ddts_kernel.py, CUDA only), run as pytest would call it: its two
# compare() calls are the cases packed and b3 (those compile its kernels ahead of the runs)
TESTS = {"test_heads": ("test_gpu_heads_and_packed_sequences", ("packed", "b3"))}
VARIANTS = {   # name: (launch-option overrides, constexpr overrides {name: {old: new}}, stack bytes to reserve)
    "base": ({}, {}, 0),
    "stack24k": ({}, {}, 24576),
    "stages1": ({"num_stages": 1}, {}, 0),
    "warps8": ({"num_warps": 8}, {}, 0),
    "ieee": ({}, {"PREC": {"tf32x3": "ieee"}}, 0),
}
DTYPES = ("float32", "bfloat16")
# --load: what other processes on the GPU did when one run hung (training beside the tests)
LOAD_SCRIPT = """import torch
x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
while True:
    x = (x @ x).tanh_()
"""


def _importable_env() -> dict:
    """The environment a child needs to import rodimus_lab and rodimus_kernels from this checkout (installed
    or not: a copied tree gets a rodimus_kernels link to its kernels/ folder)."""
    paths = [REPO]
    try:
        import rodimus_kernels  # noqa: F401
    except ImportError:
        shim = os.path.join(tempfile.gettempdir(), "ddts_hang_pp")
        os.makedirs(shim, exist_ok=True)
        link = os.path.join(shim, "rodimus_kernels")
        if not os.path.exists(link):
            os.symlink(os.path.join(REPO, "kernels"), link)
        paths.append(shim)
    return dict(os.environ, PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p]))


# ---------------------------------------------------------------------------------------------- child

def _case_inputs(tests, case, device, tiny):
    """The inputs of ``case`` as its test draws them (``tests``: tests/kernels/test_ddts_kernel.py), fp32,
    with cu_seqlens or None."""
    import torch
    lengths, B, T, H, n, m, seed, gate_scale = (TINY_CASES if tiny else CASES)[case]
    inputs = tests.make_inputs(B, T, H, n, m, device=device, g_scale=gate_scale, tau_scale=gate_scale, seed=seed)
    if lengths is None:
        return inputs, None
    inputs[5] = torch.randn(len(lengths), H, n, m, device=device)   # one initial state per sequence
    return inputs, torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device=device)


def _instrument(tag: str, variant: str, launches: int, compile_only: bool):
    """Replace Triton's kernel launch (compiled and interpreted) by one that applies the variant's
    overrides, compiles and loads on its own, and launches ``launches`` times with a sync after each."""
    import torch
    from triton.runtime import interpreter
    from triton.runtime.jit import JITFunction
    options, constexprs, _ = VARIANTS[variant]
    cuda = torch.cuda.is_available()
    seen = set()

    def say(msg):
        print(f"{tag} | {msg}", flush=True)

    def patched(original):
        def run(self, *args, grid, warmup, **kwargs):
            name = getattr(self, "__name__", None) or self.fn.__name__
            kwargs.update(options)
            for param, mapping in constexprs.items():
                if kwargs.get(param) in mapping:
                    kwargs[param] = mapping[kwargs[param]]
            if cuda:   # compile (or fetch from Triton's caches) and load apart from the launch
                t0 = time.perf_counter()
                kernel = original(self, *args, grid=grid, warmup=True, **kwargs)
                if id(kernel) not in seen:   # a kernel (specialisation) not seen yet in this process
                    t1 = time.perf_counter()
                    kernel._init_handles()   # cuModuleLoad: the driver's register / local / shared figures
                    t2 = time.perf_counter()
                    say(f"{name} compiled (or cached) in {t1 - t0:.1f} s, loaded in {t2 - t1:.2f} s: "
                        f"regs {kernel.n_regs}, local {4 * kernel.n_spills} B/thread, "
                        f"shared {kernel.metadata.shared} B, warps {kernel.metadata.num_warps}, "
                        f"stages {kernel.metadata.num_stages}, PREC {kwargs.get('PREC')}")
                    seen.add(id(kernel))
            if compile_only:
                return None
            for i in range(1, launches + 1):
                say(f"{name} #{i} launching grid {tuple(grid)}")
                t0 = time.perf_counter()
                original(self, *args, grid=grid, warmup=False, **kwargs)
                say(f"{name} #{i} queued")
                if cuda:
                    torch.cuda.synchronize()
                say(f"{name} #{i} ok in {1e3 * (time.perf_counter() - t0):.2f} ms")
            return None
        return run

    JITFunction.run = patched(JITFunction.run)
    interpreter.InterpretedFunction.run = patched(interpreter.InterpretedFunction.run)


def _reserve_stack(nbytes: int) -> str:
    """Set the CUDA context's per-thread stack (local memory) limit up front, so that no launch has the
    driver grow the context's local memory (a resize waits for the device to idle, inside the launch)."""
    import ctypes

    import torch
    torch.zeros(1, device="cuda")   # the primary context, current on this thread
    cuda = ctypes.CDLL("libcuda.so.1")
    status = cuda.cuCtxSetLimit(0, ctypes.c_size_t(nbytes))   # 0: CU_LIMIT_STACK_SIZE
    value = ctypes.c_size_t()
    cuda.cuCtxGetLimit(ctypes.byref(value), 0)
    return f"cuCtxSetLimit(STACK_SIZE, {nbytes}) -> status {status}, limit now {value.value} B/thread"


def child(a):
    faulthandler.enable()
    if a.dump_after:   # our own stack to stderr shortly before the parent's time limit
        faulthandler.dump_traceback_later(a.dump_after, exit=False)
    import torch
    import rodimus_kernels
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tag = f"{a.case} {a.dtype} {a.variant}"
    _instrument(tag, a.variant, a.launches, a.compile_only)
    stack = VARIANTS[a.variant][2]
    if stack and device == "cuda":
        print(f"{tag} | {_reserve_stack(stack)}", flush=True)
    sys.path.insert(0, os.path.join(REPO, "tests", "kernels"))
    import test_ddts_kernel as tests
    dtype, tol = getattr(torch, a.dtype), TOLERANCE[a.dtype]
    if a.case in TESTS:
        getattr(tests, TESTS[a.case][0])(dtype, tol)
        print(f"{tag} | done; the test passed", flush=True)
        return
    inputs, cu = _case_inputs(tests, a.case, device, a.tiny)
    if a.compile_only:   # the launches only: the kernels' outputs stay unwritten, nothing to compare
        q, k, v, g, tau, h0 = (x.to(dtype) if i < 3 else x for i, x in enumerate(inputs))
        o, final = rodimus_kernels.ddts(*(x.requires_grad_() for x in (q, k, v, g, tau)), cu_seqlens=cu,
                                        initial_state=h0.requires_grad_(), output_final_state=True)
        (o.float().sum() + final.sum()).backward()
        print(f"{tag} | done (compiled)", flush=True)
        return
    for r in range(1, a.repeats + 1):   # the test's compare: forward, backward, float64 reference, tolerance
        print(f"{tag} | repeat {r}: compare (forward, backward, then the float64 reference)", flush=True)
        tests.compare(inputs, dtype=dtype, cu_seqlens=cu, tol=tol)
    print(f"{tag} | done; every repeat within the tests' tolerance {tol:.0e}", flush=True)


# --------------------------------------------------------------------------------------------- parent

def _gpu_state() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return f"GPU utilisation, memory: {out}"
    except (OSError, subprocess.TimeoutExpired):
        return "GPU state: nvidia-smi not available"


def _child_cmd(a, case, dtype, variant, compile_only, limit):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--case", case, "--dtype", dtype,
           "--variant", variant, "--launches", str(a.launches), "--repeats", str(a.repeats),
           "--dump-after", str(max(1.0, limit - 2))]
    return cmd + (["--compile-only"] if compile_only else []) + (["--tiny"] if a.tiny else [])


def _run_child(a, env, case, dtype, variant, limit, compile_only=False, echo=lambda line: True):
    """Run one child under ``limit`` seconds, echoing its lines (those ``echo`` picks) as they come:
    (status, last line)."""
    proc = subprocess.Popen(_child_cmd(a, case, dtype, variant, compile_only, limit), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    last, errors = [""], []

    def pump():
        for line in proc.stdout:
            last[0] = line.rstrip()
            if echo(last[0]):
                print(last[0], flush=True)
    readers = [threading.Thread(target=pump, daemon=True),
               threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)]
    for t in readers:
        t.start()
    t0 = time.time()
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        state = _gpu_state()
        proc.kill()
        proc.wait()
        for t in readers:
            t.join(timeout=5)
        verdict = "COMPILE TIMEOUT" if compile_only else "HANG"
        print(f"{case} {dtype} {variant} | {verdict}: not done within {limit:.0f} s; last line: {last[0]!r}; at the "
              f"limit {state}; after the kill {_gpu_state()}", flush=True)
        stack = [line.rstrip() for line in errors if line.strip()]
        if stack:
            print(f"{case} {dtype} {variant} | child's stack (faulthandler), last 25 lines:", flush=True)
            for line in stack[-25:]:
                print(f"    {line}", flush=True)
        return verdict, last[0]
    for t in readers:
        t.join(timeout=5)
    if proc.returncode != 0:
        tail = " / ".join(line.strip() for line in errors[-3:])
        print(f"{case} {dtype} {variant} | ERROR exit {proc.returncode} after {time.time() - t0:.1f} s: {tail}",
              flush=True)
        return "ERROR", last[0]
    return f"ok {time.time() - t0:.1f} s", last[0]


def parent(a):
    env = _importable_env()
    start = time.time()

    def left():
        return a.budget - (time.time() - start)

    import torch
    import triton
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"no CUDA (TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')})"
    print(f"torch {torch.__version__}, triton {triton.__version__}, {device}; {_gpu_state()}", flush=True)
    cases = [c for c in a.cases if torch.cuda.is_available() or c not in TESTS]   # the tests need CUDA
    runs = [(c, d, v) for v in a.variants for d in a.dtypes for c in cases]
    if torch.cuda.is_available() and not a.no_precompile:
        jobs = a.jobs or min(len(runs), os.cpu_count() or 1)
        print(f"[{time.time() - start:.0f} s] compiling every (case, dtype, variant) in parallel, {jobs} at a time",
              flush=True)

        def compile_one(run):
            return _run_child(a, env, *run, limit=min(a.compile_timeout, max(left(), 1)), compile_only=True,
                              echo=lambda line: a.verbose or "compiled (or cached)" in line)[0]
        distinct = {}   # variants that launch the same kernels (stack24k and base) compile once
        for case, dtype, variant in runs:
            for compiled in TESTS[case][1] if case in TESTS else (case,):
                distinct.setdefault((compiled, dtype, repr(VARIANTS[variant][:2])), (compiled, dtype, variant))
        with ThreadPoolExecutor(jobs) as pool:
            for run, status in zip(distinct.values(), pool.map(compile_one, distinct.values())):
                print(f"  compile {' '.join(run)}: {status}", flush=True)
    load = [subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT], env=env) for _ in range(a.load)]
    if load:
        print(f"[{time.time() - start:.0f} s] {a.load} processes keep the GPU busy during the runs", flush=True)
    summary = []
    for run in runs:
        if left() < 5:
            summary.append((run, "SKIPPED (budget)", ""))
            continue
        print(f"[{time.time() - start:.0f} s] run {' '.join(run)}", flush=True)
        status, last = _run_child(a, env, *run, limit=min(a.timeout, left()))
        summary.append((run, status, last))
    for proc in load:
        proc.kill()
        proc.wait()
    print(f"[{time.time() - start:.0f} s] summary (case dtype variant: result | last line)", flush=True)
    for run, status, last in summary:
        print(f"  {' '.join(run):28s} {status:18s} | {last}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["test_heads", "n256"], choices=list(TESTS) + list(CASES))
    p.add_argument("--variants", nargs="+", default=["base", "stack24k", "stages1"],
                   choices=list(VARIANTS))
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=DTYPES)
    p.add_argument("--launches", type=int, default=3, help="launches of each kernel per call, synced after each")
    p.add_argument("--repeats", type=int, default=2, help="calls of the test's compare per child")
    p.add_argument("--timeout", type=float, default=20, help="seconds per timed child")
    p.add_argument("--compile-timeout", type=float, default=90, help="seconds per compiling child")
    p.add_argument("--jobs", type=int, default=0, help="compiling children at once (0: one per CPU core)")
    p.add_argument("--budget", type=float, default=140, help="seconds for the whole script")
    p.add_argument("--no-precompile", action="store_true", help="skip the parallel compile step")
    p.add_argument("--load", type=int, default=0, help="processes running matmuls on the GPU during the runs")
    p.add_argument("--tiny", action="store_true", help="interpreter-sized shapes of the same structure")
    p.add_argument("--verbose", action="store_true", help="echo the compiling children's lines too")
    # the child's own arguments
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="base", help=argparse.SUPPRESS)
    p.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dump-after", type=float, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    (child if a.child else parent)(a)


if __name__ == "__main__":
    main()
