"""Training throughput and peak memory: Rodimus, Rodimus+, Transformer++ and Hugging Face's Llama.

    rodimus-lab bench train                                    # the whole table on the GPU
    rodimus-lab bench train --models rodimus_plus --seq-lens 2048 --profile
    python -m rodimus_lab.bench.train --device cpu --d-model 64 --n-layers 2 --tokens 512 --seq-lens 128

Every model trains in ONE process on the same footing: d_model 768, 12 layers, 12 heads, vocabulary
16384 (flags change them), B·T = 16,384 tokens per step (B = tokens / T), the same random batch each
step, bf16 autocast on CUDA (float32 on CPU), fused AdamW, 3 warm-up steps, then the mean of 6 timed
steps (the device synchronised around each). A step is the Trainer's, ``graphed.training_step``: forward,
backward, the gradient norm (no clipping), the optimizer step. Each row is one model at one T in one mode:
``eager``; ``compiled``, the model under ``torch.compile`` in ``--compile-mode`` (``default``,
``reduce-overhead``: Inductor's own CUDA graphs of the forward and backward, or
``max-autotune-no-cudagraphs``; its first steps compile, they are in the warm-up); ``graphed``, the whole
step (fused AdamW with ``capturable=True``) replayed as one CUDA graph (``rodimus_lab.graphed``; captured
in the warm-up's last step; CUDA only), which removes the host's launch work that bounds the eager steps.
Every model runs in every mode asked for, the Llama peer included, and is compared with the peer of the
same mode. ``peak`` is the CUDA allocator's most allocated bytes during the timed steps (weights, gradients
and optimizer state included); where the step replays CUDA graphs (``graphed``; ``compiled`` in
``reduce-overhead``) during the warm-up too, since a replay allocates nothing: its memory was allocated, and
is measured, while the graphs were recorded.

The outside peer is ``transformers``' LlamaForCausalLM with ``attn_implementation="sdpa"`` at the
Transformer++'s sizes (same d, layers, heads, SwiGLU width, vocabulary; untied head), the baseline a
user would pick (install with the ``bench`` extra). ``--profile`` prints the kernels of one training
step that take the most device time (torch.profiler), per model and T.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ..config import ModelConfig
from ..graphed import GraphedStep, training_step
from ..model import RodimusLM

MODELS = ("rodimus", "rodimus_plus", "transformer", "llama")
MODES = ("eager", "compiled", "graphed")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")   # torch.compile's mode
_MODE_WIDTH = 2 + max(len(f"compiled:{m}") for m in COMPILE_MODES)   # the table's mode column
LABELS = {"rodimus": "Rodimus", "rodimus_plus": "Rodimus+", "transformer": "Transformer++",
          "llama": "Llama (transformers, SDPA)"}


def model_config(name: str, *, d_model=768, n_layers=12, n_heads=12, vocab_size=16384, window=1024,
                 backend="auto") -> ModelConfig:
    """The project's config of ``name`` (for "llama": the Transformer++ it mirrors)."""
    block = "transformer" if name == "llama" else name
    return ModelConfig(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, block=block,
                       n_heads=None if block == "rodimus" else n_heads,
                       window=window if block == "rodimus_plus" else None, backend=backend)


def build(name: str, config: ModelConfig) -> torch.nn.Module:
    """A freshly initialised model whose ``forward(ids, labels=ids).loss`` is the training loss."""
    if name != "llama":
        return RodimusLM(config)
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        raise RuntimeError("the Llama peer needs `transformers` (pip install 'rodimus-lab[bench]')") from e
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.ffn_dim,
        num_hidden_layers=config.n_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads, max_position_embeddings=65536, rms_norm_eps=config.norm_eps,
        tie_word_embeddings=config.tie_embeddings, rope_theta=config.rope_base,
        attn_implementation="sdpa"))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _row(name: str, seq_len: int, mode: str, compile_mode: str, **values) -> dict:
    """A results row's head: what was measured (a compiled row also names its torch.compile mode)."""
    compiled = mode == "compiled"
    return dict(model=name, label=LABELS[name], seq_len=seq_len, mode=mode, compiled=compiled,
                **({"compile_mode": compile_mode} if compiled else {}), **values)


def measure(name: str, config: ModelConfig, seq_len: int, *, tokens=16384, mode="eager", compile_mode="default",
            device="cuda", warmup=3, steps=6, profile=False, top=25) -> dict:
    """Train ``name`` for warmup + steps steps in ``mode`` (one of MODES; "compiled": torch.compile's
    ``compile_mode``, one of COMPILE_MODES); tokens/s over the timed ones, peak memory, losses."""
    device = torch.device(device)
    if mode == "graphed" and warmup < 2:
        raise ValueError("mode 'graphed' needs warmup >= 2: eager steps, then the capture, before the timed steps")
    batch = max(1, tokens // seq_len)
    torch.manual_seed(0)
    model = build(name, config).to(device)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda",
                                  capturable=mode == "graphed")
    forward = torch.compile(model, mode=compile_mode) if mode == "compiled" else model
    gen = torch.Generator(device=device).manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), device=device, generator=gen)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None

    graphed = None
    if mode == "graphed":   # the same step, captured in the warm-up's last call (eager steps before it)
        graphed = GraphedStep(model, optimizer, autocast_dtype=autocast_dtype, warmup=warmup - 1)

        def step():
            return graphed([(ids, ids)])[0][0]
    else:   # no clipping (grad_clip 0); the norm is computed in every mode, as the graphed step does
        def step():
            return training_step(forward, optimizer, [(ids, ids)], autocast_dtype=autocast_dtype)[0][0]

    row = _row(name, seq_len, mode, compile_mode, batch=batch, params=params)
    losses = []
    if device.type == "cuda":   # replayed graphs: from here (their memory is allocated while they are recorded)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(warmup):
        losses.append(step())
    _sync(device)
    row["warmup_s"] = time.perf_counter() - start
    if device.type == "cuda" and not replays_graphs(mode, compile_mode):
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        losses.append(step())
        _sync(device)
        times.append(time.perf_counter() - start)
    row.update(step_s=sum(times) / len(times), step_s_all=times, tokens_per_s=batch * seq_len * len(times) / sum(times),
               losses=[float(x) for x in losses])
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if profile:
        row["profile"] = _profile(step, device, top)
    # everything that holds the model, its optimizer state or a graph's memory pool (GraphedStep and the
    # optimizer refer to each other: only the collector frees them), before the next row measures its peak
    del model, forward, optimizer, graphed, step
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def replays_graphs(mode: str, compile_mode: str) -> bool:
    """Whether the timed steps replay CUDA graphs recorded in the warm-up (and so allocate nothing)."""
    return mode == "graphed" or (mode == "compiled" and compile_mode == "reduce-overhead")


def _profile(step, device, top: int) -> str:
    """The kernels of one training step that take the most device time, as torch.profiler's table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        _sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=70)


def run(models=MODELS, seq_lens=(2048, 8192), *, modes=("eager", "compiled"), compiled_seq_lens=None,
        compile_mode="default", tokens=16384, device="cuda", warmup=3, steps=6, profile=False, profile_top=25,
        backend="auto", out=None, command=None, **sizes) -> dict:
    """Every model × T × mode; ``compiled_seq_lens`` limits the compiled rows (None: every T), which run
    under torch.compile's ``compile_mode``. With ``out`` the results file is rewritten after every row, so a
    crash keeps the rows measured before it."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode {compile_mode!r}: choose from {', '.join(COMPILE_MODES)}")
    rows = []
    results = dict(environment=_environment(torch.device(device)), tokens_per_step=tokens, warmup=warmup,
                   steps=steps, backend=backend, compile_mode=compile_mode, rows=rows,
                   configs={name: model_config(name, backend=backend, **sizes).to_dict() for name in models})
    if command is not None:
        results["environment"]["command"] = command
    for seq_len in seq_lens:
        for mode in modes:
            if mode == "compiled" and compiled_seq_lens is not None and seq_len not in compiled_seq_lens:
                continue
            for name in models:
                config = model_config(name, backend=backend, **sizes)
                try:
                    row = measure(name, config, seq_len, tokens=tokens, mode=mode, compile_mode=compile_mode,
                                  device=device, warmup=warmup, steps=steps, profile=profile, top=profile_top)
                except Exception as e:   # noqa: BLE001 — a failing row is a result (OOM, compile or capture error)
                    row = _row(name, seq_len, mode, compile_mode,
                               error=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
                    gc.collect()
                    if torch.device(device).type == "cuda":
                        torch.cuda.empty_cache()
                print(format_row(row), flush=True)
                if "profile" in row:
                    print(row["profile"], flush=True)
                rows.append(row)
                if out is not None:
                    Path(out).write_text(json.dumps(results, indent=1))
    return results


def _environment(device: torch.device) -> dict:
    env = dict(date_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
               python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
               device=device.type)
    for package in ("triton", "transformers"):
        with contextlib.suppress(ImportError):
            env[package] = __import__(package).__version__
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return env


def row_mode(r: dict) -> str:
    """A row's mode (results files from before the graphed mode have only ``compiled``)."""
    return r.get("mode", "compiled" if r["compiled"] else "eager")


def mode_text(r: dict) -> str:
    """A row's mode as the table prints it: a compiled row with its torch.compile mode (results files from
    before --compile-mode have none: they ran the default)."""
    mode = row_mode(r)
    return f"{mode}:{r.get('compile_mode', 'default')}" if mode == "compiled" else mode


def format_row(r: dict) -> str:
    head = f"{r['label']:<27}{mode_text(r):<{_MODE_WIDTH}}{r['seq_len']:>6}"
    if "error" in r:
        return f"{head}  {r['error']}"
    peak = f"{r['peak_gib']:9.2f}" if "peak_gib" in r else f"{'-':>9}"
    return (f"{head}{r['params'] / 1e6:9.1f}M{r['tokens_per_s'] / 1e3:10.1f}k{1e3 * r['step_s']:9.1f}{peak}"
            f"{r['warmup_s']:8.1f}")


def format_table(results: dict) -> str:
    """All rows, then each model's tokens/s and peak memory as a multiple of the Llama peer's in the same mode
    (and, in another mode than eager, its tokens/s as a multiple of its own eager row's)."""
    lines = [f"{'model':<27}{'mode':<{_MODE_WIDTH}}{'T':>6}{'params':>10}{'tokens/s':>11}{'ms/step':>9}{'peak GiB':>9}"
             f"{'warm s':>8}"]
    lines += [format_row(r) for r in results["rows"]]
    ok = {(r["model"], r["seq_len"], row_mode(r)): r for r in results["rows"] if "error" not in r}
    for (name, T, mode), r in ok.items():
        peer, eager = ok.get(("llama", T, mode)), ok.get((name, T, "eager"))
        parts = []
        if peer is not None and name != "llama":
            parts.append(f"{r['tokens_per_s'] / peer['tokens_per_s']:.2f}x Llama's tokens/s")
            if "peak_gib" in r:
                parts.append(f"{r['peak_gib'] / peer['peak_gib']:.2f}x its peak memory")
        if eager is not None and mode != "eager":
            parts.append(f"{r['tokens_per_s'] / eager['tokens_per_s']:.2f}x its own eager tokens/s")
        if parts:
            lines.append(f"{LABELS[name]} {mode_text(r)} T={T}: " + ", ".join(parts))
    return "\n".join(lines)


def figure(results: dict):
    """Tokens/s and peak memory of every measured row: one group of bars per (T, mode), one colour per model
    (the project's plot style; the Llama peer in the colour of published baselines)."""
    from plotly.subplots import make_subplots

    from ..viz.style import COLORS, TEMPLATE

    rows = [r for r in results["rows"] if "error" not in r]
    order = sorted({(r["seq_len"], MODES.index(row_mode(r))) for r in rows})
    groups = {key: f"T={key[0]} {MODES[key[1]]}" for key in order}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training tokens / s (thousands)", "peak memory (GiB)"))
    for name in MODELS:
        chosen = sorted((r for r in rows if r["model"] == name), key=lambda r: (r["seq_len"], MODES.index(row_mode(r))))
        if not chosen:
            continue
        x = [groups[(r["seq_len"], MODES.index(row_mode(r)))] for r in chosen]
        label = LABELS[name].replace(" (transformers, SDPA)", "-SDPA")
        color = COLORS.get(name, COLORS["paper"])
        fig.add_bar(x=x, y=[r["tokens_per_s"] / 1e3 for r in chosen], name=label, legendgroup=name,
                    marker_color=color, row=1, col=1)
        if all("peak_gib" in r for r in chosen):
            fig.add_bar(x=x, y=[r["peak_gib"] for r in chosen], name=label, legendgroup=name, showlegend=False,
                        marker_color=color, row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(categoryorder="array", categoryarray=list(groups.values()), row=1, col=col)
    env = results["environment"]
    fig.update_layout(barmode="group", width=1100, height=420, template=TEMPLATE,
                      title=f"B·T = {results['tokens_per_step']} tokens per step, bf16 autocast, AdamW — "
                            f"{env.get('gpu', env['device'])}, torch {env['torch']}")
    return fig


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="rodimus-lab bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, from %(default)s")
    parser.add_argument("--seq-lens", default="2048,8192", help="comma-separated sequence lengths T")
    parser.add_argument("--modes", default="eager,compiled",
                        help="comma-separated, from eager,compiled,graphed (graphed: the step as one CUDA graph)")
    parser.add_argument("--compiled-seq-lens", default=None,
                        help="the T of the compiled rows (default: every --seq-lens; each T compiles anew)")
    parser.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                        help="torch.compile's mode in the compiled rows (default %(default)s; reduce-overhead adds "
                             "Inductor's CUDA graphs)")
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per step (batch = tokens // T)")
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--n-layers", type=int, default=12)
    parser.add_argument("--n-heads", type=int, default=12)
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--window", type=int, default=1024, help="Rodimus+ sliding window (keys seen)")
    parser.add_argument("--backend", default="auto", choices=["auto", "reference", "triton"],
                        help="the Rodimus models' backend (ModelConfig.backend)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (mean reported)")
    parser.add_argument("--profile", action="store_true", help="print the top kernels of one step per row")
    parser.add_argument("--profile-top", type=int, default=25, help="rows of each profile table (default %(default)s)")
    parser.add_argument("--out", default=None, help="results file (default runs/bench/train_<device>.json)")
    parser.add_argument("--figure", default=None, help="also draw tokens/s and peak memory into this image (plotly)")
    args = parser.parse_args(argv)
    models, modes = args.models.split(","), args.modes.split(",")
    for bad in sorted(set(models) - set(MODELS)):
        parser.error(f"--models: unknown model {bad!r}; choose from {','.join(MODELS)}")
    for bad in sorted(set(modes) - set(MODES)):
        parser.error(f"--modes: unknown mode {bad!r}; choose from {','.join(MODES)}")
    compiled_seq_lens = None if args.compiled_seq_lens is None else [int(T) for T in args.compiled_seq_lens.split(",")]
    out = Path(args.out or f"runs/bench/train_{torch.device(args.device).type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    arguments = sys.argv[1:] if argv is None else list(argv)
    results = run(models, [int(T) for T in args.seq_lens.split(",")], modes=modes, compiled_seq_lens=compiled_seq_lens,
                  compile_mode=args.compile_mode, tokens=args.tokens, device=args.device, warmup=args.warmup,
                  steps=args.steps, profile=args.profile, profile_top=args.profile_top, backend=args.backend, out=out,
                  command=" ".join(["rodimus-lab bench train", *arguments]),
                  d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, vocab_size=args.vocab_size,
                  window=args.window)
    print(format_table(results))
    print(f"results written to {out}")
    if args.figure:
        figure(results).write_image(args.figure, scale=2)
        print(f"figure written to {args.figure}")
    return results


if __name__ == "__main__":
    main()
