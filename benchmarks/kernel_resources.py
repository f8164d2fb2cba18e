"""Shared memory, registers and spills of every DDTS kernel per state size n, compiled offline for a GPU.

No GPU needed: Triton compiles each ``@triton.jit`` kernel of ``rodimus_kernels.ddts_triton`` for the
target (default sm_90: H100/H200) with the constexprs, launch options and argument specialisation of a
launch by the wrapper (``ddts.py``), and cuobjdump (shipped with Triton) reads registers and stack (spills)
from the cubin. A kernel whose shared memory exceeds the block limit fails at launch with OutOfResources;
this table shows which would, before any GPU run.

    python benchmarks/kernel_resources.py                 # n = 16 … 256, m = T = 256, H = 1, bf16 and fp32
    python benchmarks/kernel_resources.py --n 256 --dtype bf16 --kernel ddts_fwd_walk

Shared memory depends on the Triton version (3.6 and 3.7 agree on most kernels, not all) and on the
specialisation: sizes divisible by 16 allow the wide asynchronous loads that the loops' pipelining buffers
in shared memory (the default sizes are such, the worst case)."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.compiler import ASTSource, compile as triton_compile

from rodimus_kernels import ddts_triton as K
from rodimus_kernels.dispatch import dot_precision

D = importlib.import_module("rodimus_kernels.ddts")   # the module: the package exports its function `ddts`
SHARED_MEMORY_LIMIT = 232448   # bytes per block on sm_90 (H100/H200): the limit OutOfResources names
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def kernel_launches(n: int, m: int, T: int, H: int, dtype: torch.dtype):
    """(kernel, {argument: value}, launch options) for every DDTS kernel as the wrapper launches it for
    q, k, g_logits, tau_logits, v of ``dtype`` ([B, T, H, n] and [B, T, H, m], no cu_seqlens), training
    with an initial and a final state. Tensors stand for pointers (only their dtype and alignment count)."""
    def ptr(dt):
        return torch.empty(1, dtype=dt)

    x, op, f32 = ptr(dtype), ptr(D._operand_dtype(ptr(dtype))), ptr(torch.float32)
    prec, sum_prec = dot_precision("tf32x3", dtype), dot_precision("cancelling", dtype)
    BN, BM, stages = D._block_n(n), D.BLOCK_M, D._stages(n, dtype)
    walk = dict(num_warps=D._warps(n), num_stages=stages)     # the walks and the sweep
    chunk = dict(num_warps=D._warps(n, chunk_program=True), num_stages=stages)
    prep, step = dict(num_warps=D._warps(n, chunk_program=True)), dict()
    no_tables = dict(cu=None, chunk_seq=None, chunk_local=None)
    sizes = dict(T=T, NT=D.cdiv(T, D.CHUNK), H=H, N=n)
    return [
        (K.ddts_prep_fwd, dict(q=x, k=x, g=x, tau=x, qg=op, kg=op, gc=f32, A=f32, **no_tables, scale=n ** -0.5,
                               **sizes, C=D.CHUNK, SB=D.SUB, BN=BN, PREC=prec, VARLEN=False), prep),
        (K.ddts_fwd_walk, dict(qg=op, kg=op, gc=f32, A=f32, v=x, o=x, h=f32, h0=f32, ht=f32, cu=None,
                               chunk_off=None, **sizes, M=m, C=D.CHUNK, BN=BN, BM=BM, PREC=prec, STORE_H=True,
                               USE_H0=True, STORE_HT=True, VARLEN=False), walk),
        (K.ddts_bwd_walk, dict(qg=op, kg=op, gc=f32, A=f32, do=x, dv=x, dh=f32, dht=f32, dh0=f32, cu=None,
                               chunk_off=None, **sizes, M=m, C=D.CHUNK, BN=BN, BM=BM, PREC=prec, USE_DHT=True,
                               STORE_DH0=True, VARLEN=False), walk),
        (K.ddts_bwd_sweep, dict(v=x, do=x, h=f32, dh=f32, partial=f32, **no_tables, **sizes, M=m,
                                TILES_PER_SPLIT=1, C=D.CHUNK, BN=BN, BM=BM, PREC=sum_prec, VARLEN=False), walk),
        (K.ddts_bwd_chunk, dict(q=x, k=x, g=x, tau=x, partial=f32, dq=x, dk=x, dg=x, dtau=x, scratch=f32,
                                **no_tables, scale=n ** -0.5, **sizes, SPLITS=D.cdiv(m, BM), C=D.CHUNK,
                                SB=D._sub_block(n), BN=BN, PREC=sum_prec, VARLEN=False), chunk),
        (K.ddts_step_kernel, dict(q=x, k=x, v=x, g=x, tau=x, state=f32, o=x, scale=n ** -0.5, N=n, M=m,
                                  BN=BN, BM=BM), step),
    ]


def compile_kernel(fn, args: dict, options: dict, target: GPUTarget):
    """Compile ``fn`` for ``target`` specialised as a launch with these arguments would be: Triton's own
    rule types each runtime argument and marks ints equal to 1 constant and pointers / ints divisible by
    16 as such (what decides vectorised, pipelined loads, and so the shared memory)."""
    signature, constexprs, attrs = {}, {}, {}
    for i, param in enumerate(fn.params):
        value = args[param.name]
        kind, spec = ("constexpr", None) if param.is_constexpr or value is None else \
            native_specialize_impl(BaseBackend, value, False, True, True)
        signature[param.name] = kind
        if kind == "constexpr":
            constexprs[(i,)] = spec if spec is not None else value
        elif spec == "D":
            attrs[(i,)] = [["tt.divisibility", 16]]
    return triton_compile(ASTSource(fn, signature, constexprs=constexprs, attrs=attrs), target=target,
                          options=options)


def resource_usage(compiled) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread — spills) of a compiled kernel, read from its cubin
    by cuobjdump (shipped with Triton; ``CompiledKernel.n_regs`` is only filled in on a GPU)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    usage = dict(re.findall(r"(REG|STACK):(\d+)", out))
    return int(usage["REG"]), int(usage["STACK"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="state sizes (mem_size)")
    p.add_argument("--m", type=int, default=256, help="value width d_inner (256: d_model 128, expand 2)")
    p.add_argument("--T", type=int, default=256, help="tokens per sequence")
    p.add_argument("--H", type=int, default=1, help="heads (the model runs one)")
    p.add_argument("--dtype", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    p.add_argument("--kernel", nargs="+", help="only these kernels (default: all six)")
    p.add_argument("--arch", type=int, default=90, help="compute capability ×10 (90 = H100/H200)")
    p.add_argument("--limit", type=int, default=SHARED_MEMORY_LIMIT, help="shared memory per block, bytes")
    a = p.parse_args()
    target = GPUTarget("cuda", a.arch, 64 if a.arch < 100 else 128)
    print(f"Triton {triton.__version__}, sm_{a.arch}, m={a.m}, T={a.T}, H={a.H}, shared-memory limit {a.limit} B")
    print(f"{'kernel':18s} {'dtype':5s} {'n':>4s} {'warps':>5s} {'stages':>6s} {'shared B':>9s} {'% limit':>7s} "
          f"{'regs':>5s} {'stack B':>7s}")
    for dt in a.dtype:
        for n in a.n:
            for fn, args, options in kernel_launches(n, a.m, a.T, a.H, DTYPES[dt]):
                if a.kernel and fn.__name__ not in a.kernel:
                    continue
                c = compile_kernel(fn, args, options, target)
                md = c.metadata
                regs, stack = resource_usage(c)
                over = "  OVER THE LIMIT" if md.shared > a.limit else ""
                print(f"{fn.__name__:18s} {dt:5s} {n:4d} {md.num_warps:5d} {md.num_stages:6d} {md.shared:9d} "
                      f"{100 * md.shared / a.limit:6.0f}% {regs:5d} {stack:7d}{over}", flush=True)


if __name__ == "__main__":
    main()
