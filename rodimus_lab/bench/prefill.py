"""Prefill of a long prompt through the kernels: time, and the state it hands to decoding.

    python benchmarks/bench_prefill.py                      # CUDA: 4096-token prompts, Rodimus and Rodimus+
    python -m rodimus_lab.bench.prefill --prompt-len 8192 --models rodimus

Prefill is the model's forward over the prompt with a fresh state (``generate.prefill``). On the
``triton`` backend the DDTS of every layer runs through the chunk kernel ``rodimus_kernels.ddts`` with
``output_final_state=True`` (and SW-SKA through its kernel), the way training runs: float32 weights under
bf16 autocast. The same weights on the ``reference`` backend (the PyTorch chunkwise DDTS and attention)
give

* the time to beat: the reference prefill under the same autocast (its DDTS arithmetic is float32 either
  way), each the median of ``--repeats`` runs after one warm-up, the device synchronised around each;
* the truth: the reference prefill in float32 without autocast, against which the kernel prefill's
  last-token logits and every tensor of the state it leaves (DDTS states, conv buffers, KV cache) are
  compared by relative RMS, ‖kernel − reference‖ / ‖reference‖.

``ddts kernel calls`` counts the chunk kernel's launches in one prefill (the ``rodimus::ddts``
op in torch.profiler's record): one per Rodimus layer when the kernel carried the prefill.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ..config import ModelConfig
from ..generate import prefill
from ..model import RodimusLM
from . import rel_rms
from .decode import native_stderr_silenced

__all__ = ["bench_config", "measure", "format_table", "main"]

DEFAULT_MODELS = ("rodimus", "rodimus_plus")


def bench_config(name: str, *, d_model: int = 768, n_layers: int | None = None, vocab_size: int = 32000,
                 window: int = 2048, backend: str = "auto") -> ModelConfig:
    """Rodimus (24 layers) or Rodimus+ (12 layers, SW-SKA window of ``window`` keys) at one width."""
    layers = n_layers if n_layers is not None else {"rodimus": 24, "rodimus_plus": 12}[name]
    return ModelConfig(vocab_size=vocab_size, d_model=d_model, n_layers=layers, block=name,
                       window=window if name == "rodimus_plus" else None, backend=backend)


def _ddts_kernel_calls(fn) -> int:
    """How many times ``fn()`` runs the DDTS chunk kernel (its torch.library op, as the profiler records)."""
    with native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.name == "rodimus::ddts" for event in prof.events())


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def _timed(fn, repeats: int, sync) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def measure(config: ModelConfig, prompt_len: int, *, batch_size: int = 1, device="cuda", repeats: int = 5,
            autocast: bool | None = None, seed: int = 0) -> dict:
    """One row: prefill times (kernel, reference) and the kernel prefill's errors against the float32 reference.

    ``autocast`` (default: on for CUDA) runs the two timed prefills under bf16 autocast.
    """
    device = torch.device(device)
    autocast = device.type == "cuda" if autocast is None else autocast
    torch.manual_seed(seed)
    fused = RodimusLM(dataclasses.replace(config, backend="triton")).to(device).eval()
    reference = RodimusLM(dataclasses.replace(config, backend="reference")).to(device).eval()
    reference.load_state_dict(fused.state_dict())
    ids = torch.randint(0, config.vocab_size, (batch_size, prompt_len), device=device,
                        generator=torch.Generator(device).manual_seed(seed + 1))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    with _autocast(device, autocast):
        logits, state = prefill(fused, ids)
        kernel_calls = _ddts_kernel_calls(lambda: prefill(fused, ids))
    truth_logits, truth = prefill(reference, ids)   # float32, no autocast
    errors = {"logits (last token)": rel_rms(logits[:, -1].float(), truth_logits[:, -1])}
    for part, name, label in (("mixer", "ddts", "DDTS states"), ("mixer", "conv", "conv buffers"),
                              ("attn", "k", "cached keys"), ("attn", "v", "cached values")):
        pairs = [(layer[part][name], layer_ref[part][name]) for layer, layer_ref in zip(state.layers, truth.layers)
                 if part in layer and name in layer[part]]
        if pairs:
            errors[label] = rel_rms(torch.cat([a.flatten() for a, _ in pairs]).float(),
                                    torch.cat([b.flatten() for _, b in pairs]).float())

    with _autocast(device, autocast):
        kernel_s = _timed(lambda: prefill(fused, ids), repeats, sync)
        reference_s = _timed(lambda: prefill(reference, ids), repeats, sync)
    return dict(model=config.block, prompt_len=prompt_len, batch_size=batch_size, layers=config.n_layers,
                d_model=config.d_model, autocast_bf16=autocast, kernel_ms=1e3 * kernel_s,
                reference_ms=1e3 * reference_s, ddts_kernel_calls=kernel_calls, errors=errors)


def format_table(rows: list[dict]) -> str:
    """Times, then the relative RMS errors of the kernel prefill against the float32 reference."""
    head = f"{'model':<14}{'T':>6}{'B':>4}{'kernel ms':>12}{'reference ms':>14}{'speed-up':>10}{'ddts kernel calls':>19}"
    lines = [head]
    for r in rows:
        lines.append(f"{r['model']:<14}{r['prompt_len']:>6}{r['batch_size']:>4}{r['kernel_ms']:>12.2f}"
                     f"{r['reference_ms']:>14.2f}{r['reference_ms'] / r['kernel_ms']:>9.1f}x"
                     f"{r['ddts_kernel_calls']:>10} of {r['layers']}")
    lines.append("relative RMS error of the kernel prefill vs the float32 reference prefill:")
    for r in rows:
        lines.append(f"  {r['model']:<14}" + "  ".join(f"{k} {v:.2e}" for k, v in r["errors"].items()))
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench_prefill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated: rodimus, rodimus_plus")
    parser.add_argument("--prompt-len", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--n-layers", type=int, default=None, help="default: 24 (Rodimus), 12 (Rodimus+)")
    parser.add_argument("--window", type=int, default=2048, help="Rodimus+ sliding window (keys seen)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = [measure(bench_config(name, d_model=args.d_model, n_layers=args.n_layers, window=args.window),
                    args.prompt_len, batch_size=args.batch_size, device=args.device, repeats=args.repeats)
            for name in args.models.split(",")]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"prefill of a {args.prompt_len}-token prompt, batch {args.batch_size}, d_model {args.d_model}, {device}")
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
