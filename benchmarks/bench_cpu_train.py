"""CPU training benchmark (not a test): `rodimus-lab demo` end to end, and an MQAR (L=128, p=8) run.

    python benchmarks/bench_cpu_train.py                    # both, a markdown table at the end
    python benchmarks/bench_cpu_train.py --skip-demo --l128-steps 300

The demo is timed as a user runs it (a fresh process, data generation and the report included).
The L=128 run trains the same small Rodimus on Zoology's (128, 8) task for a fixed number of steps
and reports the time per step, tokens per second and the test accuracy reached. Other processes
on the machine slow both down: the load average is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench_demo(threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "rodimus_lab.cli", "demo", "--out", out, "--progress", "false",
               "--threads", str(threads)]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
    found = re.search(r"MQAR accuracy ([\d.]+)% on (\d+) test examples after (\d+) steps", done.stdout)
    return {"run": "demo (L=64, p=4, V=128)", "command": "rodimus-lab demo", "threads": threads,
            "wall_s": round(wall, 1), "steps": int(found.group(3)), "accuracy": float(found.group(1)) / 100}


def bench_l128(steps: int, threads: int) -> dict:
    import torch

    from rodimus_lab import ModelConfig, RodimusLM, seed_everything
    from rodimus_lab.cli import DEMO
    from rodimus_lab.data.mqar import make_mqar_splits, mqar_preset
    from rodimus_lab.train import TrainConfig, Trainer

    torch.set_num_threads(threads)
    seed_everything(0)
    preset = mqar_preset("L128_p8", num_train=20_000, num_test=500)
    train, test = make_mqar_splits(preset)
    model = RodimusLM(ModelConfig(vocab_size=preset.vocab_size, **DEMO["model"]))
    settings = {**DEMO["train"], "max_steps": steps, "eval_every": 0, "stop_at_accuracy": None, "out_dir": None,
                "progress": False}
    trainer = Trainer(model, train, test, TrainConfig(**settings))
    start = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - start
    final = trainer.history[-1]
    return {"run": "MQAR L=128, p=8, V=8192", "command": f"bench_l128(steps={steps})", "threads": threads,
            "wall_s": round(wall, 1), "steps": steps, "ms_per_step": round(1000 * wall / steps),
            "tokens_per_s": round(steps * trainer.config.batch_size * preset.seq_len / wall),
            "accuracy": final["eval_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--l128-steps", type=int, default=100)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    if not args.skip_demo:
        rows.append(bench_demo(args.threads))
        print(json.dumps(rows[-1]), flush=True)
    if args.l128_steps:
        rows.append(bench_l128(args.l128_steps, args.threads))
        print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load[0]:.1f} (1 min) at the end")
    print("| run | threads | wall (s) | steps | accuracy |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['threads']} | {r['wall_s']} | {r['steps']} | {100 * r['accuracy']:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load_average": load}, indent=1))


if __name__ == "__main__":
    main()
