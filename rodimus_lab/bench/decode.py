"""Decoding cost vs context length: per-token latency and the memory the state takes.

    rodimus-lab bench decode --device cuda --contexts 1024,2048,4096,8192,16384,32768,65536
    python -m rodimus_lab.bench.decode --device cpu --d-model 256 --contexts 256,1024,4096

For each model (Rodimus, Rodimus+, Transformer++ of one width) and each context length T the
benchmark builds the decoding state a T-token prompt leaves behind, then times single-token steps
from it. The state has the exact shapes and random contents: a step's cost depends only on the
shapes, and a real T-token prefill of the reference Transformer would need its T × T attention
matrix. (That prefill + steps computes what stepping the prompt does is tested in
tests/test_generate.py.)

Memory is reported three ways that must agree: analytic (:func:`analytic_state_bytes`, from
:func:`rodimus_lab.memory.cache_elements`), the state's tensors (``DecodeState.nbytes``) and measured
while the state is built (CUDA: the caching allocator's ``memory_allocated``; CPU: torch's allocator
as ``torch.profiler`` records it). ``peak`` adds the most one decode step allocates on top.

The Transformer++ keeps a preallocated KV cache sized for the context plus the timed steps (the
model's ring buffer with ``window`` = that capacity, identical to full attention while the sequence
fits): a fair baseline, where the growing ``torch.cat`` cache would copy the whole cache every token.
CUDA graphs (``--cuda-graphs``) time the same step with the host's launch work removed (at batch 1
it dominates the eager step on a GPU). The graph captures the model's public forward at T = 1 with
``check_inputs=False`` (no host-side id check). Every state update of a step is in place (the DDTS
state, the conv buffer, the ring slots), so replays write into the captured tensors. The attention
steps take the position as a Python int (RoPE offset, ring slot, keys seen), so a graph is captured at
context T and each replay decodes a token at position T again, into the same ring slot: the same work
as the eager step at context T.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ..config import ModelConfig
from ..memory import cache_elements
from ..model import DecodeState, RodimusLM

__all__ = ["analytic_state_bytes", "bench_configs", "synthetic_state", "measure", "run", "summary", "format_table", "main",
           "native_stderr_silenced"]

DEFAULT_CONTEXTS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
# Same width for all three; at d_model 768 the depths give 110–123M non-embedding parameters each
# (a Rodimus layer is one mixer, about half a Transformer++ layer).
DEPTHS = {"rodimus": 24, "rodimus_plus": 12, "transformer": 12}


def analytic_state_bytes(config: ModelConfig, context_len: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of one sequence's DecodeState after ``context_len`` tokens, as the model allocates it:
    the DDTS state in float32 (float64 in a float64 model), the conv buffer and KV cache in ``dtype``;
    a sliding-window cache is a ring of ``window`` slots from the first token on."""
    element = torch.empty((), dtype=dtype).element_size()
    state_element = 8 if dtype == torch.float64 else 4
    ddts = config.mem_size * config.d_inner * config.n_layers if config.has_mixer else 0
    held = context_len if config.window is None else config.window
    return (cache_elements(config, held) - ddts) * element + ddts * state_element


def bench_configs(d_model: int = 768, vocab_size: int = 32000, window: int = 2048, models=tuple(DEPTHS),
                  depths: dict | None = None) -> dict[str, ModelConfig]:
    """The compared models, one width; Rodimus+ with a sliding window of ``window`` keys."""
    depths = {**DEPTHS, **(depths or {})}
    unknown = sorted(set(models) - set(DEPTHS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}: choose from {sorted(DEPTHS)}")
    return {name: ModelConfig(vocab_size=vocab_size, d_model=d_model, n_layers=depths[name], block=name,
                              window=window if name == "rodimus_plus" else None)
            for name in models}


def synthetic_state(model: RodimusLM, context_len: int, batch_size: int = 1) -> DecodeState:
    """A DecodeState of the exact shapes ``context_len`` tokens leave, filled with random numbers."""
    state = model.init_state(batch_size)
    for layer in state.layers:
        if "attn" in layer and model.config.window is None:   # the growing cache holds every token
            cache = layer["attn"]
            for name in ("k", "v"):
                cache[name] = cache[name].new_empty(batch_size, context_len, *cache[name].shape[2:])
        for part in layer.values():
            for tensor in part.values():
                tensor.normal_().mul_(0.1)
    state.position = context_len
    return state


# ------------------------------------------------------------------------- memory

@contextlib.contextmanager
def native_stderr_silenced():
    """The profiler's C++ side (kineto) logs "USDT: … profiler_start/stop" to file descriptor 2 at every
    start and stop, whatever its log level: point fd 2 at /dev/null meanwhile (Python's sys.stderr is
    untouched, so an exception is still reported once fd 2 is back)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _allocated(fn, device: torch.device):
    """Run fn() → (its result, bytes it left allocated, peak bytes allocated meanwhile).

    CUDA: the caching allocator's counters. CPU: torch's allocator as the profiler records it, op by op
    in time order (tracemalloc does not see torch's allocator, and RSS hides reused memory).
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        gc.collect()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        return result, torch.cuda.memory_allocated() - base, torch.cuda.max_memory_allocated() - base
    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    level, peak = 0, 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        level += event.self_cpu_memory_usage
        peak = max(peak, level)
    return result, level, peak


# ------------------------------------------------------------------------- timing

def _timed(step, tokens, warmup: int, sync) -> list[float]:
    """Seconds of each call of ``step(token)`` after ``warmup`` untimed calls."""
    for token in tokens[:warmup]:
        step(token)
    sync()
    times = []
    for token in tokens[warmup:]:
        start = time.perf_counter()
        step(token)
        sync()
        times.append(time.perf_counter() - start)
    return times


def _step_at(model: RodimusLM, state: DecodeState, token: torch.Tensor):
    """() -> logits [B, V]: the model's step from ``token`` (read when called) at the position ``state``
    has now, every time (the position is put back after each call), updating ``state``'s tensors in
    place: what a CUDA graph captures and replays."""
    position = state.position

    def step():
        logits = model(token[:, None], state=state, check_inputs=False).logits[:, 0]
        state.position = position
        return logits

    return step


def _graph_step(model: RodimusLM, state: DecodeState, token: torch.Tensor):
    """A CUDA graph of one step that updates ``state`` in place; returns step(token) -> logits."""
    static_token = token.clone()
    body = _step_at(model, state, static_token)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits = body()

    def step(next_token):
        static_token.copy_(next_token)
        graph.replay()
        return logits

    return step


# ---------------------------------------------------------------------- one point

@torch.no_grad()
def measure(name: str, config: ModelConfig, context_len: int, *, device="cpu", dtype=torch.float32,
            batch_size: int = 1, steps: int = 32, warmup: int = 8, cuda_graph: bool = False) -> dict:
    """Latency and memory of decoding one token after ``context_len`` tokens (one row of the results)."""
    device = torch.device(device)
    if config.block == "transformer":   # preallocated KV cache for the context and the steps (see above)
        config = dataclasses.replace(config, window=context_len + warmup + steps + 1)
    with torch.device(device):
        model = RodimusLM(config).to(dtype).eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tokens = torch.randint(0, config.vocab_size, (warmup + steps, batch_size), device=device)

    state, measured, _ = _allocated(lambda: synthetic_state(model, context_len, batch_size), device)
    with _autocast(device, dtype):
        eager = _timed(lambda t: model.step(t, state), tokens, warmup, sync)
        _, _, step_peak = _allocated(lambda: model.step(tokens[-1], state), device)

    row = dict(
        model=name, context=context_len, batch_size=batch_size, parameters=model.num_parameters(),
        state_bytes_analytic=analytic_state_bytes(config, context_len, dtype) * batch_size,
        state_bytes_tensors=state.nbytes(), state_bytes_measured=measured, peak_bytes=measured + step_peak,
        latency_ms=1e3 * statistics.median(eager), latency_ms_graph=None, graph_max_abs_diff=None,
    )
    if cuda_graph and device.type == "cuda":
        try:
            with _autocast(device, dtype):
                row.update(_graph_latency(model, state, tokens, warmup, sync))
        except RuntimeError as error:   # keep the eager numbers; say why the graph is missing
            row["graph_error"] = str(error).splitlines()[0][:200]
    return row


def _autocast(device: torch.device, dtype: torch.dtype):
    """Half-precision weights run under autocast: the model keeps its residual stream in float32."""
    if dtype in (torch.bfloat16, torch.float16):
        return torch.autocast(device.type, dtype=dtype, cache_enabled=False)
    return contextlib.nullcontext()


def _graph_latency(model, state, tokens, warmup, sync) -> dict:
    """Graph replay latency, and how far the graph's logits are from an eager step's."""
    reference = model.step(tokens[0], state.clone())[0]
    graph_state = state.clone()
    step = _graph_step(model, graph_state, tokens[0])
    for layer, original in zip(graph_state.layers, state.layers):   # the warm-up before capture moved it
        for part, tensors in layer.items():
            for name, tensor in tensors.items():
                tensor.copy_(original[part][name])
    diff = (step(tokens[0]).float() - reference.float()).abs().max().item()
    times = _timed(step, tokens, warmup, sync)
    return dict(latency_ms_graph=1e3 * statistics.median(times), graph_max_abs_diff=diff)


# ---------------------------------------------------------------------- the sweep

def run(contexts=DEFAULT_CONTEXTS, *, models=tuple(DEPTHS), d_model: int = 768, vocab_size: int = 32000,
        window: int = 2048, depths: dict | None = None, device="cpu", dtype=torch.float32, batch_size: int = 1,
        steps: int = 32, warmup: int = 8, cuda_graphs: bool = False, progress: bool = True) -> dict:
    """Every model at every context length → a JSON-ready dict (environment, configs, rows).

    A context that does not fit in memory gets a row with ``"error": "out of memory"``.
    """
    from tqdm.auto import tqdm

    contexts = sorted({int(T) for T in contexts})
    if not contexts or contexts[0] < 1:
        raise ValueError(f"contexts must be lengths ≥ 1, got {contexts!r}")
    configs = bench_configs(d_model, vocab_size, window, models, depths)
    device = torch.device(device)
    rows = []
    points = [(name, T) for name in configs for T in contexts]
    for name, T in tqdm(points, desc="decode bench", disable=not progress):
        try:
            rows.append(measure(name, configs[name], T, device=device, dtype=dtype, batch_size=batch_size,
                                steps=steps, warmup=warmup, cuda_graph=cuda_graphs))
        except torch.OutOfMemoryError:
            rows.append(dict(model=name, context=T, error="out of memory"))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return dict(environment=_environment(device), dtype=str(dtype).removeprefix("torch."), batch_size=batch_size,
                steps=steps, warmup=warmup, configs={name: c.to_dict() for name, c in configs.items()}, rows=rows)


def _environment(device: torch.device) -> dict:
    env = dict(date_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
               python=platform.python_version(), torch=torch.__version__,
               platform=platform.platform(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
               device=device.type)
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return env


def summary(results: dict) -> dict:
    """Per model: latency(longest)/latency(shortest) context, and state bytes at the longest context
    measured for every model, against the Transformer++'s."""
    rows = [r for r in results["rows"] if "error" not in r]
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["context"]] = r
    common = set.intersection(*(set(v) for v in by_model.values())) if by_model else set()
    longest = max(common) if common else None
    out = {}
    for name, points in by_model.items():
        lo, hi = min(points), max(points)
        entry = dict(latency_ratio=points[hi]["latency_ms"] / points[lo]["latency_ms"], shortest=lo, longest=hi)
        if points[lo]["latency_ms_graph"] is not None:
            entry["latency_ratio_graph"] = points[hi]["latency_ms_graph"] / points[lo]["latency_ms_graph"]
        entry["measured_vs_analytic"] = max(abs(r["state_bytes_measured"] / r["state_bytes_analytic"] - 1)
                                            for r in points.values())
        if longest is not None:
            entry["state_bytes_at"] = longest
            entry["state_bytes"] = points[longest]["state_bytes_measured"]
            if "transformer" in by_model:
                entry["vs_transformer"] = by_model["transformer"][longest]["state_bytes_measured"] / entry["state_bytes"]
        out[name] = entry
    return out


def format_table(results: dict) -> str:
    """A plain-text table of the rows, then the summary."""
    mib = lambda b: f"{b / 2**20:10.3f}"   # noqa: E731
    head = (f"{'model':<13}{'context':>8}{'analytic':>11}{'tensors':>11}{'measured':>11}{'peak':>11}"
            f"{'ms/token':>10}{'graph ms':>10}")
    lines = [f"bytes in MiB, batch {results['batch_size']}, {results['dtype']}, "
             f"{results['environment'].get('gpu', results['environment']['device'])}", head]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"{r['model']:<13}{r['context']:>8}  {r['error']}")
            continue
        graph = f"{r['latency_ms_graph']:10.3f}" if r["latency_ms_graph"] is not None else f"{'-':>10}"
        lines.append(f"{r['model']:<13}{r['context']:>8}{mib(r['state_bytes_analytic']):>11}"
                     f"{mib(r['state_bytes_tensors']):>11}{mib(r['state_bytes_measured']):>11}"
                     f"{mib(r['peak_bytes']):>11}{r['latency_ms']:10.3f}{graph}")
    for name, s in summary(results).items():
        line = f"{name}: latency({s['longest']})/latency({s['shortest']}) = {s['latency_ratio']:.3f}"
        if "latency_ratio_graph" in s:
            line += f" (graph {s['latency_ratio_graph']:.3f})"
        line += f"; measured/analytic within {100 * s['measured_vs_analytic']:.2f}%"
        if "vs_transformer" in s:
            line += f"; state at {s['state_bytes_at']}: {s['state_bytes'] / 2**20:.2f} MiB, Transformer++ / this = {s['vs_transformer']:.1f}x"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="rodimus-lab bench decode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEPTHS), help="comma-separated, from %(default)s")
    parser.add_argument("--contexts", default=",".join(map(str, DEFAULT_CONTEXTS)), help="comma-separated lengths")
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--window", type=int, default=2048, help="Rodimus+ sliding window (keys seen)")
    parser.add_argument("--depth", action="append", default=[], metavar="MODEL=LAYERS",
                        help=f"override a depth (defaults {DEPTHS})")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="weights and caches (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=32, help="timed steps per point (median reported)")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a CUDA graph of each model's step (GPU only)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch.set_num_threads); 1 avoids thread contention on a shared machine")
    parser.add_argument("--out", default="runs/bench/decode.json",
                        help="results file (JSON; default %(default)s; the documented results live in docs/results/)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        depths = {k: int(v) for k, v in (item.split("=", 1) for item in args.depth)}
    except ValueError:
        parser.error(f"--depth takes MODEL=LAYERS, got {args.depth}")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    results = run([int(T) for T in args.contexts.split(",")], models=tuple(args.models.split(",")),
                  d_model=args.d_model, vocab_size=args.vocab_size, window=args.window, depths=depths,
                  device=args.device, dtype=dtype, batch_size=args.batch_size, steps=args.steps,
                  warmup=args.warmup, cuda_graphs=args.cuda_graphs)
    arguments = sys.argv[1:] if argv is None else list(argv)
    results["environment"]["command"] = " ".join(["rodimus-lab bench decode", *arguments])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(format_table(results))
    print(f"results written to {out}")
    return results


if __name__ == "__main__":
    main()
