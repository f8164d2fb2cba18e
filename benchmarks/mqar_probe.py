"""Learning curves of a few variants of a sweep's points, side by side, printed the moment they are measured.

A sweep records the best evaluation of each point; to tell "slow to learn" from "cannot learn" one needs
the curve. Each variant is a family of the spec with overrides (as ``rodimus-lab sweep --set`` takes them),
trained in its own process (``--workers`` at a time, on one device), and every evaluation (and the training
loss every ``--log-every`` steps) is printed as one line, prefixed with the variant's name::

    python benchmarks/mqar_probe.py --device cuda --budget 450 --workers 6 \\
        --variant tpp_lr3e-3 Transformer++ train.lr=0.003 \\
        --variant tpp_lr1e-3 Transformer++ train.lr=0.001 \\
        --variant rp16_w256 Rodimus+ model.mem_size=16 model.window=256

Grid axes the overrides leave out take the spec's first value (mem_size 16, lr 3e-3 for mqar_state_size).
Nothing is recorded but these lines (and ``--out DIR/<variant>.jsonl``, the metrics of each eval): a probe,
not a sweep. ``--budget`` stops every variant that many seconds after the start (each process also runs
under ``timeout -k``), so one device call returns its lines whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # a copied tree, not installed

SPEC = "experiments/mqar_state_size.yaml"


def train_one(spec_path: str, family: str, sets: list[str], device: str, deadline: float, log_every: int,
              out: str | None, name: str) -> None:
    import torch

    from rodimus_lab import ModelConfig, RodimusLM, seed_everything
    from rodimus_lab.data.recipe import build_data, data_vocab_size
    from rodimus_lab.run_config import flag_value, resolve_configs
    from rodimus_lab.sweep import load_spec
    from rodimus_lab.train import Callback, Trainer

    overrides = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"{name}: override {item!r}: write SECTION.FIELD=VALUE, e.g. train.lr=0.001")
        overrides[key] = flag_value(value)
    points = [p for p in load_spec(spec_path).points(overrides) if p.family == family]
    if not points:
        raise SystemExit(f"{name}: no family {family!r} in {spec_path}")
    cfg = resolve_configs(points[0].sections)
    train_cfg, data_cfg = cfg["train"], cfg["data"]
    # no run folder: nothing is kept but the printed lines (a checkpoint would need one)
    train_cfg.device, train_cfg.progress, train_cfg.out_dir, train_cfg.checkpoint_every = device, False, None, 0
    train, test, tokenizer = build_data(data_cfg)
    model_cfg = ModelConfig.from_dict({**cfg["model_fields"], "vocab_size": data_vocab_size(data_cfg, tokenizer)})
    seed_everything(train_cfg.seed)
    start = time.time()
    log = open(Path(out) / f"{name}.jsonl", "w") if out else None

    class Report(Callback):
        def on_step(self, metrics, trainer):
            if metrics["step"] % log_every == 0:
                print(f"{name} step {metrics['step']} train_loss {metrics['loss']:.4f} ({time.time() - start:.0f} s)",
                      flush=True)
            if time.time() > deadline:
                print(f"{name} stopped by the budget at step {trainer.step}", flush=True)
                trainer.should_stop = True

        def on_eval(self, metrics, trainer):
            print(f"{name} step {trainer.step} eval_loss {metrics['eval_loss']:.4f} "
                  f"eval_accuracy {metrics.get('eval_accuracy', float('nan')):.4f} ({time.time() - start:.0f} s)",
                  flush=True)
            if log:
                log.write(json.dumps({"variant": name, **metrics}) + "\n")
                log.flush()

    shape = [f"n={model_cfg.mem_size}"] if model_cfg.has_mixer else []
    if model_cfg.has_attention:
        shape += [f"window={model_cfg.window}", f"heads={model_cfg.num_heads}"]
    print(f"{name}: {family} {' '.join(sets)} -> {model_cfg.block} {' '.join(shape)} init_std={model_cfg.init_std} "
          f"embed_scale={model_cfg.embed_scale} lr={train_cfg.lr} steps={train_cfg.max_steps} on {device}", flush=True)
    Trainer(RodimusLM(model_cfg), train, test, train_cfg, callbacks=[Report()]).fit()
    print(f"{name} done in {time.time() - start:.0f} s", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default=SPEC)
    p.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME FAMILY [SECTION.FIELD=VALUE]",
                   help="a name, a family of the spec, its overrides (repeat the flag for each variant)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget", type=float, default=450, help="seconds from the start until every variant stops")
    p.add_argument("--workers", type=int, default=6, help="variants trained at a time")
    p.add_argument("--log-every", type=int, default=250, help="print the training loss every this many steps")
    p.add_argument("--out", default=None, help="folder for <variant>.jsonl (each evaluation's metrics)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)   # a worker: train the one variant given
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.one:
        name, family, *sets = args.variant[0]
        train_one(args.spec, family, sets, args.device, args.deadline, args.log_every, args.out, name)
        return 0
    if any(len(v) < 2 for v in args.variant):
        p.error("each --variant needs a NAME and a FAMILY")
    deadline = time.time() + args.budget
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.workers)), "PYTHONUNBUFFERED": "1", **os.environ}
    todo, running, codes = list(args.variant), [], []

    def relay(proc):
        for line in proc.stdout:
            print(line, end="", flush=True)

    while todo or running:
        while todo and len(running) < args.workers and time.time() < deadline - 30:
            v = todo.pop(0)
            left = deadline - time.time()
            cmd = ["timeout", "-k", "10", str(int(left + 20)), sys.executable, __file__, "--one", "--spec", args.spec,
                   "--device", args.device, "--deadline", str(deadline), "--log-every", str(args.log_every),
                   *(["--out", args.out] if args.out else []), "--variant", *v]
            proc = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            threading.Thread(target=relay, args=(proc,), daemon=True).start()
            running.append(proc)
        if not running:
            break
        time.sleep(1)
        for proc in [q for q in running if q.poll() is not None]:
            running.remove(proc)
            codes.append(proc.returncode)
    for v in todo:
        print(f"{v[0]} not started: the budget ran out", flush=True)
    time.sleep(0.5)   # the relays print the last lines
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
