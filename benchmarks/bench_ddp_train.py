"""Training throughput of `rodimus-lab train` under torchrun (DDP): tokens/s read off its metrics log.

    python benchmarks/bench_ddp_train.py --nproc 1 --source .gpu/wikitext-2      # the 1-GPU baseline
    python benchmarks/bench_ddp_train.py --nproc 2 --source .gpu/wikitext-2      # same global batch, 2 GPUs

Default: a ~124M-parameter Rodimus+ (d_model 768, 12 layers, BPE vocab 16384, SW-SKA window 1024),
T = 2048, global batch 16 sequences (32 768 tokens per optimizer step), bf16 autocast, AdamW, trained
on the WikiText-2 files in ``--source`` (valid split for training, test for the final evaluation;
offline). The run itself is ``rodimus-lab train`` through ``rodimus_lab.distributed.torchrun_command``
— the very command a user runs — so NCCL, DDP and rank-0 logging are all in the timing.

tokens/s = global tokens per step × (steps after the first ``--skip``) / their wall time, from the
``time`` field of metrics.jsonl (the first steps compile the Triton kernels and are left out).
Extra ``rodimus-lab train`` flags go after ``--``; they override the defaults.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from rodimus_lab.distributed import torchrun_command


def train_flags(args) -> list[str]:
    return ["--task", "text", "--source", args.source, "--train-split", "valid", "--eval-split", "test",
            "--tokenizer", "bpe", "--vocab-size", "16384", "--block-size", str(args.seq_len), "--data-dir", args.data_dir,
            "--block", "rodimus_plus", "--d-model", "768", "--n-layers", "12", "--window", "1024",
            "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--grad-accum", str(args.grad_accum),
            "--lr", "6e-4", "--warmup-steps", "10", "--eval-every", "0", "--eval-batch-size", "8",
            "--precision", "bf16", "--out", args.out, *args.extra]


def versions() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    nccl=".".join(map(str, torch.cuda.nccl.version())))
        try:
            import triton
            info["triton"] = triton.__version__
        except ImportError:
            pass
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--source", default=".gpu/wikitext-2", help="a folder with wiki.valid.tokens and wiki.test.tokens")
    p.add_argument("--data-dir", default="data", help="tokenizer and token cache")
    p.add_argument("--out", default="runs/bench-ddp")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--skip", type=int, default=10, help="first steps left out of the rate (compilation)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=16, help="global batch (sequences per optimizer step)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("extra", nargs="*", help="more `rodimus-lab train` flags (after --)")
    args = p.parse_args()

    command = torchrun_command(args.nproc, train_flags(args))
    print(json.dumps(versions()))
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    code = subprocess.call(command)
    wall = time.perf_counter() - start
    if code:
        sys.exit(f"the training run failed (exit code {code})")

    rows = [json.loads(line) for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    first, last = train[args.skip - 1], train[-1]
    tokens_per_step = args.batch_size * args.seq_len
    rate = tokens_per_step * (last["step"] - first["step"]) / (last["time"] - first["time"])
    result = {"nproc": args.nproc, "global_batch": args.batch_size, "seq_len": args.seq_len,
              "tokens_per_step": tokens_per_step, "steps": last["step"], "timed_steps": last["step"] - first["step"],
              "s_per_step": (last["time"] - first["time"]) / (last["step"] - first["step"]),
              "tokens_per_s": rate, "tokens_per_s_per_process": rate / args.nproc,
              "first_steps_s": first["time"], "loss_first": train[0]["loss"], "loss_last": last["loss"],
              "eval_ppl": evals[-1]["eval_ppl"] if evals else None, "wall_s": wall}
    print(json.dumps(result))
    for k, v in result.items():
        print(f"{k:>26}  {v:,.3f}" if isinstance(v, float) else f"{k:>26}  {v}")


if __name__ == "__main__":
    main()
