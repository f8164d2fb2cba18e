"""How long Triton takes to compile each DDTS kernel, per dtype, state size and dot precision: a compile
that stalls is named here, before a GPU test waits on it with no word of why.

The float32 "hang" of ``pytest -m gpu`` (docs/benchmarks.md) was no kernel that never finished but Triton 3.6
compiling the IEEE-fp32 DDTS backward on the H200 host: ``ddts_bwd_chunk`` was still in ``make_llir`` after 90 s
where the 3-pass tf32 forms compiled in 18 s or less (found by this script's launch-by-launch version, 3dadb1a).
Since bbcfbc9 no DDTS launch asks for IEEE dots (``kernels/dispatch.py``), and the fp32 GPU tests passed on the
H200 (Triton 3.6). After a kernel change this compiles every kernel as the wrapper launches it
(``benchmarks/kernel_resources.py``: offline for sm_90, no GPU needed), each in its own process with an empty
Triton cache under ``--timeout`` seconds (its imports included), ``--jobs`` at a time, and prints a row per
compile: seconds, shared memory, registers, stack (spilled) bytes per thread. A compile out of time is
``COMPILE TIMEOUT`` with the compiler stage it was in (the child's stack, dumped just before the limit); the
exit status is then 1.

    python benchmarks/diagnose_ddts_hang.py                          # bf16 and fp32, n = 64 and 256, as launched
    python benchmarks/diagnose_ddts_hang.py --kernel ddts_bwd_chunk --dtype fp32 --precision launched ieee

``--precision`` replaces the dot precision (``PREC``) of the kernels that take one: ``launched`` (the
wrapper's choice), ``tf32``, ``tf32x3`` or ``ieee`` (the fp32 launches before bbcfbc9). Compile times depend
on the Triton version: run it with the one the GPU tests use. With Triton 3.7.1 (offline, on a shared
2-core CPU) the IEEE ``ddts_bwd_chunk`` at fp32, n = 64 compiled in 6.9 s: the stall did not show there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import kernel_resources as R   # this folder: the wrapper's launches and the offline compile

PRECISIONS = ("launched", "tf32", "tf32x3", "ieee")


def compiles(kernels, dtypes, ns, precisions, m: int, T: int):
    """(kernel, dtype, n, precision) of every compile to time: one per precision for a kernel with dots
    (``PREC``), one as launched for the others."""
    for dtype in dtypes:
        for n in ns:
            for fn, args, _ in R.kernel_launches(n, m, T, 1, R.DTYPES[dtype]):
                if kernels and fn.__name__ not in kernels:
                    continue
                for prec in precisions if "PREC" in args else ("launched",):
                    yield fn.__name__, dtype, n, prec


def child(kernel: str, dtype: str, n: int, prec: str, m: int, T: int, arch: int) -> None:
    """Compile one kernel (Triton's cache is empty: the parent gives each child its own) and print its row
    as JSON."""
    fn, args, options = next(launch for launch in R.kernel_launches(n, m, T, 1, R.DTYPES[dtype])
                             if launch[0].__name__ == kernel)
    if prec != "launched":
        args = {**args, "PREC": prec}
    start = time.perf_counter()
    compiled = R.compile_kernel(fn, args, options, R.GPUTarget("cuda", arch, 64 if arch < 100 else 128))
    seconds = time.perf_counter() - start
    regs, stack = R.resource_usage(compiled)
    print(json.dumps({"seconds": seconds, "PREC": args["PREC"] if "PREC" in args else "-",
                      "shared": compiled.metadata.shared, "regs": regs, "stack": stack}))


def _stage(stack: str) -> str:
    """The innermost Triton frame of a faulthandler dump (most recent call first): the compiler stage."""
    for path, name in re.findall(r'File "([^"]+)", line \d+ in (\w+)', stack):
        if f"{os.sep}triton{os.sep}" in path:
            return f"in {name} ({path.split(os.sep + 'triton' + os.sep, 1)[1]})"
    return "stage unknown (no Triton frame in the child's stack)"


def timed_compile(run, a, cache_root: str) -> str:
    """One compile in a child process under ``a.timeout`` seconds: its table row."""
    kernel, dtype, n, prec = run
    cmd = [sys.executable, __file__, "--child", kernel, dtype, str(n), prec,
           "--m", str(a.m), "--T", str(a.T), "--arch", str(a.arch), "--dump-after", str(max(1.0, a.timeout - 2))]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}   # compiled, not interpreted
    env["TRITON_CACHE_DIR"] = tempfile.mkdtemp(dir=cache_root)   # a cached kernel would take no time
    head = f"{kernel:18s} {dtype:5s} {n:4d} {prec:8s}"
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired as e:
        stack = e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr or ""
        return f"{head} COMPILE TIMEOUT after {a.timeout:.0f} s, {_stage(stack)}"
    if done.returncode != 0:
        return f"{head} ERROR: {(done.stderr.strip().splitlines() or ['(no message)'])[-1]}"
    r = json.loads(done.stdout.splitlines()[-1])
    return f"{head} {r['PREC']:7s} {r['seconds']:8.1f} {r['shared']:9d} {r['regs']:5d} {r['stack']:7d}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernel", nargs="+", help="only these kernels (default: all six)")
    p.add_argument("--dtype", nargs="+", default=["bf16", "fp32"], choices=sorted(R.DTYPES))
    p.add_argument("--n", type=int, nargs="+", default=[64, 256], help="state sizes (the stall: n = 64 and 256)")
    p.add_argument("--precision", nargs="+", default=["launched"], choices=PRECISIONS)
    p.add_argument("--m", type=int, default=256, help="value width d_inner")
    p.add_argument("--T", type=int, default=256, help="tokens per sequence")
    p.add_argument("--arch", type=int, default=90, help="compute capability × 10 (90 = H100/H200)")
    p.add_argument("--timeout", type=float, default=90, help="seconds a compile may take")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiles at a time")
    p.add_argument("--child", nargs=4, metavar=("KERNEL", "DTYPE", "N", "PREC"), help=argparse.SUPPRESS)
    p.add_argument("--dump-after", type=float, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        import faulthandler
        faulthandler.dump_traceback_later(a.dump_after)   # the stack on stderr before the parent's limit
        kernel, dtype, n, prec = a.child
        child(kernel, dtype, int(n), prec, a.m, a.T, a.arch)
        return 0
    runs = list(compiles(a.kernel, a.dtype, a.n, a.precision, a.m, a.T))
    if not runs:
        p.error(f"no DDTS kernel named {a.kernel}; the kernels: "
                f"{[fn.__name__ for fn, _, _ in R.kernel_launches(16, a.m, a.T, 1, R.DTYPES['bf16'])]}")
    print(f"Triton {R.triton.__version__}, sm_{a.arch}, m={a.m}, T={a.T}: {len(runs)} compiles, {a.jobs} at a "
          f"time, {a.timeout:.0f} s each at most")
    print(f"{'kernel':18s} {'dtype':5s} {'n':>4s} {'asked':8s} {'PREC':7s} {'seconds':>8s} {'shared B':>9s} "
          f"{'regs':>5s} {'stack B':>7s}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as cache_root, ThreadPoolExecutor(a.jobs) as pool:
        for row in pool.map(lambda run: timed_compile(run, a, cache_root), runs):   # in order, as they finish
            print(row, flush=True)
            rows.append(row)
    return 1 if any("TIMEOUT" in row or "ERROR" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
