"""Host time of one eager training step, measured on CPU: the Python and dispatcher work per op.

    rodimus-lab bench host                                  # all four models, the bench's 12 layers
    rodimus-lab bench host --models rodimus_plus --cprofile # where a Rodimus+ step spends its Python time
    python benchmarks/host_overhead.py --steps 10 --repeats 5

On the H200 the eager Rodimus+ training step is bound by the host (docs/benchmarks.md, "Whole-model
training"): the GPU idles while Python, autograd and the dispatcher issue its ops. This benchmark measures
that host work on any CPU. It trains the models of ``bench train`` with the bench's layer count and op
structure (the same modules, backend and code paths) but tiny tensors (d_model 32, 32 tokens, a small
vocabulary), so that the time of a step is the cost of issuing its ops, not of computing them:

- ``TRITON_INTERPRET=1`` is set, so ``rodimus_kernels.dispatch.use_triton`` sends CPU tensors down the
  kernel path (``KernelOp``, its checks, allocations, launch plans and autograd) exactly as CUDA tensors go;
- every Triton launch is a no-op that only counts itself (``kernel[grid](...)`` still builds its launcher):
  the kernels' outputs are whatever ``torch.empty`` held, so the losses are meaningless, and neither the
  interpreter nor Triton's own launch cost (argument specialisation, the driver call: tens of µs per
  launch on a GPU host) is in the time;
- the other GPU branches are taken as ``bench memory`` takes them (``kernel_path_on_cpu``): SDPA for the
  Transformer++, and under ``--autocast`` the gate projection's tensor-core Function;
- float32 and fused AdamW. ``--autocast`` adds bf16 autocast as on the GPU (its casts are more ops), but
  a bf16 product on a CPU costs ~20 µs whatever its size (oneDNN), which is CPU compute, not host work;
  the aten ops run real CPU kernels on tiny tensors, so their time is the dispatcher's plus a small CPU
  kernel, not a CUDA launch.

Per model: host ms per step (the process's CPU time, the fastest of the repeats and their median, the
models interleaved so load on a shared machine hits them alike; 1 torch thread by default), Triton launches and kernel-op calls (forward and backward) per step, aten ops per
step (those that reach a backend, counted by a TorchDispatchMode), and the ratio to the Llama peer
of the same run. ``--cprofile`` prints the Python functions of a few steps by cumulative and own time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import io
import json
import platform
import pstats
import statistics
import time
from pathlib import Path
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from . import train
from .decode import native_stderr_silenced
from .memory import kernel_path_on_cpu

MODELS = train.MODELS


@contextlib.contextmanager
def kernel_path_without_launches(launches: collections.Counter):
    """CPU tensors take the GPU's branches (``bench memory``'s ``kernel_path_on_cpu``: TRITON_INTERPRET=1,
    SDPA, the tensor-core gate projection) and every Triton launch is a no-op that counts itself under its
    kernel's name; all is restored afterwards."""
    from triton.runtime.interpreter import InterpretedFunction

    def launch(kernel, *args, **kwargs):
        launches[kernel.__name__] += 1

    with kernel_path_on_cpu(launch=True), mock.patch.object(InterpretedFunction, "run", launch):
        yield


class _CountAten(TorchDispatchMode):
    """Counts the aten ops that reach a backend kernel (after autograd and autocast)."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def make_step(name: str, *, d_model=32, n_layers=12, n_heads=2, vocab_size=256, window=16, seq_len=32,
              batch=1, autocast=False):
    """(model, step): one training step (forward, backward, fused AdamW) of ``name`` on CPU."""
    config = train.model_config(name, d_model=d_model, n_layers=n_layers, n_heads=n_heads, vocab_size=vocab_size,
                                window=window, backend="triton")
    torch.manual_seed(0)
    model = train.build(name, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    ids = torch.randint(0, vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(1))
    extra = {} if name == "llama" else {"check_inputs": False}   # as bench train

    def step(phases=None):
        """One step; adds the CPU seconds of forward, backward and optimizer to ``phases`` (a list of 3)."""
        start = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(ids, labels=ids, **extra).loss
        forward = time.process_time()
        loss.backward()
        backward = time.process_time()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if phases is not None:
            for i, seconds in enumerate((forward - start, backward - forward, time.process_time() - backward)):
                phases[i] += seconds

    return model, step


def count_ops(step, launches: collections.Counter) -> dict:
    """Triton launches, kernel-op calls (rodimus::*, forward and backward) and aten ops of one step."""
    from torch.profiler import ProfilerActivity, profile

    launches.clear()
    with _CountAten() as aten:
        step()
    triton_launches = sum(launches.values())
    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    kernel_ops = collections.Counter(e.name for e in prof.events() if e.name.startswith("rodimus::"))
    return dict(triton_launches=triton_launches, kernel_ops=sum(kernel_ops.values()),
                kernel_op_names=dict(kernel_ops), aten_ops=sum(aten.ops.values()),
                aten_op_names=dict(aten.ops.most_common()))


def measure(models, *, steps=10, repeats=5, warmup=3, **sizes) -> dict:
    """Host ms per step of each model (the fastest and the median of ``repeats`` means over ``steps``
    steps, the models interleaved), with the op counts of one step."""
    launches = collections.Counter()
    rows = {}
    with kernel_path_without_launches(launches):
        built = {name: make_step(name, **sizes) for name in models}
        for name, (model, step) in built.items():
            for _ in range(warmup):
                step()
            rows[name] = dict(model=name, label=train.LABELS[name],
                              params=sum(p.numel() for p in model.parameters()), ms=[], **count_ops(step, launches))
            if name != "llama" and not rows[name]["triton_launches"]:   # else this would time the reference path
                raise RuntimeError(f"{name} launched no Triton kernel: the kernel path was not taken")
        for _ in range(repeats):
            for name, (_, step) in built.items():
                phases = [0.0, 0.0, 0.0]   # this process's CPU time: other work on a shared machine is not ours
                for _ in range(steps):
                    step(phases)
                rows[name]["ms"].append([1e3 * x / steps for x in phases])
    for row in rows.values():   # the least disturbed repeat: others' work only ever adds time
        totals = [sum(x) for x in row["ms"]]
        row["host_ms"], row["host_ms_median"] = min(totals), statistics.median(totals)
        row["forward_ms"], row["backward_ms"], row["optimizer_ms"] = row["ms"][totals.index(min(totals))]
    return dict(environment=dict(python=platform.python_version(), torch=torch.__version__,
                                 platform=platform.platform(), processor=platform.processor() or platform.machine(),
                                 threads=torch.get_num_threads()),
                steps=steps, repeats=repeats, sizes=sizes, rows=list(rows.values()))


def format_table(results: dict) -> str:
    rows = results["rows"]
    peer = next((r for r in rows if r["model"] == "llama"), None)
    lines = [f"{'model':<27}{'host ms/step':>13}{'median':>8}{'× Llama':>9}{'fwd':>7}{'bwd':>7}{'opt':>6}"
             f"{'kernel ops':>11}{'launches':>10}{'aten ops':>10}{'µs/op':>7}"]
    for r in rows:
        ratio = f"{r['host_ms'] / peer['host_ms']:9.2f}" if peer else f"{'-':>9}"
        lines.append(f"{r['label']:<27}{r['host_ms']:13.2f}{r['host_ms_median']:8.2f}{ratio}{r['forward_ms']:7.2f}"
                     f"{r['backward_ms']:7.2f}{r['optimizer_ms']:6.2f}{r['kernel_ops']:11d}"
                     f"{r['triton_launches']:10d}{r['aten_ops']:10d}"
                     f"{1e3 * r['host_ms'] / max(r['aten_ops'] + r['kernel_ops'], 1):7.1f}")
    return "\n".join(lines)


def cprofile(name: str, *, steps=5, top=30, **sizes) -> str:
    """The ``top`` Python functions of ``steps`` steps of ``name``, by cumulative and by own time."""
    launches = collections.Counter()
    with kernel_path_without_launches(launches):
        _, step = make_step(name, **sizes)
        for _ in range(3):
            step()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(steps):
            step()
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    for key in ("cumulative", "tottime"):
        out.write(f"\n--- {train.LABELS[name]}: {steps} steps, by {key} ---\n")
        stats.sort_stats(key).print_stats(top)
    return out.getvalue()


HEADER = """Host time per eager training step on CPU ({processor}, torch {torch}, {threads} thread(s)):
the kernel path with TRITON_INTERPRET=1 routing CPU tensors to it, every Triton launch a counting no-op
(kernel outputs are uninitialised torch.empty memory: the losses mean nothing), SDPA for the Transformer++,
{precision}, fused AdamW, tiny tensors so that the time is the cost of issuing ops.
Not included: Triton's own launch cost and CUDA's."""


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="rodimus-lab bench host", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, from %(default)s")
    parser.add_argument("--n-layers", type=int, default=12, help="as bench train (the op count scales with it)")
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--n-heads", type=int, default=2, help="head dim d_model / n_heads must be 16, 32, 64 or 128")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--window", type=int, default=16, help="Rodimus+ sliding window (below --seq-len)")
    parser.add_argument("--autocast", action="store_true", help="bf16 autocast (see above: CPU bf16 products are slow)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per model (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny ops: 1 is fastest)")
    parser.add_argument("--cprofile", action="store_true", help="also print each model's top Python functions")
    parser.add_argument("--top", type=int, default=30, help="functions --cprofile prints per sort")
    parser.add_argument("--out", default=None, help="also write the results (every repeat, op counts) to this JSON file")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    for bad in sorted(set(models) - set(MODELS)):
        parser.error(f"--models: unknown model {bad!r}; choose from {','.join(MODELS)}")
    if "llama" in models:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("transformers is not installed: no Llama peer (pip install 'rodimus-lab[bench]')")
            models.remove("llama")
    torch.set_num_threads(args.threads)
    sizes = dict(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, seq_len=args.seq_len,
                 batch=args.batch, window=args.window, autocast=args.autocast)
    results = measure(models, steps=args.steps, repeats=args.repeats, **sizes)
    print(HEADER.format(precision="bf16 autocast" if args.autocast else "float32", **results["environment"]))
    print(f"d_model {args.d_model}, {args.n_layers} layers, {args.n_heads} heads, {args.batch} × {args.seq_len} "
          f"tokens; process CPU ms per step, fastest and median of {args.repeats} repeats × {args.steps} steps "
          f"(fwd/bwd/opt: the fastest's split); µs/op = ms / (aten ops + kernel ops)\n")
    print(format_table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"results written to {args.out}")
    if args.cprofile:
        for name in models:
            print(cprofile(name, top=args.top, **sizes))
    return results


if __name__ == "__main__":
    main()
