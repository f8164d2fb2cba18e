"""``rodimus-lab``: demo, train, eval, generate, info.

    rodimus-lab demo                                   # MQAR on the CPU, ≥ 99% in ~2 min, HTML report
    rodimus-lab train --task mqar --preset L128_p8 --d-model 128 --lr 1e-3 --out runs/mqar128
    rodimus-lab train --config run.yaml --max-steps 2000          # a file, then flags on top
    rodimus-lab train --task text --source /path/to/wikitext-103  # local files (offline)
    rodimus-lab train --nproc 2 --task mqar --out runs/ddp        # data parallel through torchrun
    rodimus-lab eval --checkpoint runs/mqar128
    rodimus-lab generate --checkpoint runs/wt103 --prompt "The history of" --top-p 0.9
    rodimus-lab info --d-model 2048 --n-layers 48 --context 4096
    rodimus-lab bench decode --device cuda --contexts 1024,32768   # decoding latency/memory vs context

Every field of ModelConfig, TrainConfig and DataConfig is a flag (``d_model`` → ``--d-model``);
a config file (JSON or YAML) has the sections ``model``, ``train``, ``data``. Flags override the
file, the file overrides the defaults. Each run writes its resolved config to ``<out>/config.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from . import ModelConfig, RodimusLM, cache_bytes, distributed, seed_everything
from .checkpoint import CheckpointError, load_checkpoint
from .data.recipe import DataConfig, build_data, data_vocab_size
from .data.text import DataUnavailableError
from .train import TrainConfig, Trainer, evaluate

__all__ = ["main", "resolve_configs", "DEMO"]

SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}
_MODEL_FROM_DATA = ("vocab_size",)   # the data decide these model fields

# `rodimus-lab demo`: measured to reach ≥ 99% MQAR accuracy (L=64, p=4) within two minutes on a
# 2-core CPU (docs/benchmarks.md, "CPU training"). Flags override any of it.
DEMO = {
    "model": {"d_model": 128, "n_layers": 1, "mem_size": 16, "tie_embeddings": True, "backend": "reference"},
    "train": {"max_steps": 1400, "batch_size": 32, "lr": 1e-2, "warmup_steps": 20, "eval_every": 100,
              "eval_batch_size": 250, "stop_at_accuracy": 0.99, "weight_decay": 0.1, "out_dir": "runs/demo"},
    "data": {"task": "mqar", "preset": "demo"},
}
DEMO_THREADS = 1

# ------------------------------------------------------------------------------ configs

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value(text: str):
    """A flag value: JSON literals (numbers, true/false, null) as such, anything else as a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _add_config_flags(parser: argparse.ArgumentParser, sections=("model", "train", "data")) -> None:
    parser.add_argument("--config", help="a JSON or YAML file with sections model / train / data")
    for section in sections:
        group = parser.add_argument_group(f"{section} ({SECTIONS[section].__name__} fields)")
        for f in dataclasses.fields(SECTIONS[section]):
            if section == "model" and f.name in _MODEL_FROM_DATA:
                continue
            dest = f"{section}.{f.name}"
            default = f.default if f.default is not dataclasses.MISSING else None
            group.add_argument(_flag(f.name), dest=dest, type=_value, default=None, metavar="V",
                               help=f"default {default!r}")
    if "train" in sections:
        parser.add_argument("--out", dest="train.out_dir", type=str, default=None, help="output folder (= --out-dir)")


def _read_config_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml
        loaded = yaml.safe_load(text)
    else:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {path} is not valid JSON ({e}); YAML files need a .yaml/.yml suffix") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} must hold a mapping with sections {sorted(SECTIONS)}")
    unknown = sorted(set(loaded) - set(SECTIONS))
    if unknown:
        raise ValueError(f"config file {path}: unknown section(s) {unknown}; known sections: {sorted(SECTIONS)}")
    return loaded


def resolve_configs(base: dict | None = None, file: str | None = None, flags: dict | None = None) -> dict:
    """Defaults ← ``base`` ← config file ← flags (``{"model.d_model": 64, ...}``) → the three configs."""
    merged = {s: dict((base or {}).get(s, {})) for s in SECTIONS}
    if file:
        for section, values in _read_config_file(file).items():
            if not isinstance(values, dict):
                raise ValueError(f"config section {section!r} must be a mapping of fields, got {values!r}")
            merged[section].update(values)
    for key, value in (flags or {}).items():
        if value is not None:
            section, name = key.split(".", 1)
            merged[section][name] = value
    for section, cls in SECTIONS.items():   # ints given where a field expects a float
        for f in dataclasses.fields(cls):
            value = merged[section].get(f.name)
            if isinstance(f.default, float) and isinstance(value, int) and not isinstance(value, bool):
                merged[section][f.name] = float(value)
    data = DataConfig.from_dict(merged["data"])
    return {"data": data, "train": TrainConfig.from_dict(merged["train"]), "model_fields": merged["model"]}


def _model_config(fields: dict, vocab_size: int) -> ModelConfig:
    given = fields.get("vocab_size")
    if given is not None and given != vocab_size:
        raise ValueError(f"model.vocab_size = {given} differs from the data's vocabulary ({vocab_size}); "
                         "leave it out (the data decide it) or set data.vocab_size")
    return ModelConfig.from_dict({**fields, "vocab_size": vocab_size})


def _flags(args) -> dict:
    return {k: v for k, v in vars(args).items() if "." in k}


# ------------------------------------------------------------------------------ commands

def _build_run(base: dict | None, args) -> tuple[Trainer, dict]:
    cfg = resolve_configs(base, args.config, _flags(args))
    data_cfg, train_cfg = cfg["data"], cfg["train"]
    _model_config(cfg["model_fields"], data_vocab_size(data_cfg))   # a bad model field fails before any work
    info = distributed.setup(train_cfg.device)   # under torchrun: join the process group (else a no-op)
    distributed.check_global_batch(train_cfg.batch_size, train_cfg.grad_accum, info.world_size)
    seed_everything(train_cfg.seed)
    with distributed.main_first():   # rank 0 fills the tokenizer/token caches, the others read them
        train, test, tokenizer = build_data(data_cfg)
    model_cfg = _model_config(cfg["model_fields"], data_vocab_size(data_cfg, tokenizer))
    model = RodimusLM(model_cfg)
    meta = {"data": data_cfg.to_dict()}
    if tokenizer is not None:
        meta["tokenizer"] = {"name": tokenizer.name, "path": str(Path(tokenizer.path).resolve()) if tokenizer.path else None}
    trainer = Trainer(model, train, test, train_cfg, meta=meta)
    return trainer, cfg


def cmd_train(args) -> int:
    if args.nproc is not None:
        return _launch_torchrun(args)
    trainer, cfg = _build_run(None, args)
    if trainer.out_dir is None:
        raise ValueError("train needs an output folder: --out runs/NAME")
    say = print if trainer.is_main else (lambda *a, **k: None)
    if args.resume:
        meta = trainer.resume()
        say(f"resumed from {meta['path']} at step {trainer.step}")
    c = trainer.model.config
    say(f"model: {c.block}, d_model {c.d_model}, {c.n_layers} layers, "
        f"{trainer.model.num_parameters():,} parameters; writing to {trainer.out_dir}"
        + (f"; {trainer.world_size} processes" if trainer.world_size > 1 else ""))
    trainer.fit()
    if trainer.is_main:
        _print_eval(trainer.history)
    return 0


def _launch_torchrun(args) -> int:
    """``train --nproc N``: check the configs here, then run the same flags under torchrun."""
    train_args, skip = [], False
    for a in args.argv[1:]:   # argv[0] is "train"; every flag but --nproc goes on
        if not (skip or a.startswith("--nproc=") or a == "--nproc"):
            train_args.append(a)
        skip = a == "--nproc"
    command = distributed.torchrun_command(args.nproc, train_args)   # checks --nproc
    cfg = resolve_configs(None, args.config, _flags(args))
    distributed.check_global_batch(cfg["train"].batch_size, cfg["train"].grad_accum, args.nproc)
    if cfg["train"].out_dir is None:
        raise ValueError("train needs an output folder: --out runs/NAME")
    print(" ".join(command), flush=True)
    return distributed.launch(command)


def _print_eval(history) -> None:
    evals = [r for r in history if r.get("kind") == "eval"]
    if evals:
        print(json.dumps({k: v for k, v in evals[-1].items() if k != "kind"}, indent=1))


def cmd_demo(args) -> int:
    from .report import gate_figure, mqar_token_labels, write_report

    base = json.loads(json.dumps(DEMO))
    if args.fast:   # a smoke run for tests: seconds, not minutes (accuracy will be low)
        base["train"].update(max_steps=20, eval_every=10, eval_batch_size=100)
        base["data"].update(num_train=512, num_test=100)
    start = time.perf_counter()
    trainer, cfg = _build_run(base, args)
    test = trainer.eval_data
    print(f"rodimus-lab demo: MQAR L={test.seq_len}, {test.num_kv_pairs} key-value pairs, "
          f"vocab {trainer.model.config.vocab_size}; a {trainer.model.num_parameters():,}-parameter Rodimus "
          f"on {trainer.device.type}")
    trainer.fit()
    elapsed = time.perf_counter() - start
    final = [r for r in trainer.history if r.get("kind") == "eval"][-1]
    accuracy = final["eval_accuracy"]
    print(f"MQAR accuracy {100 * accuracy:.2f}% on {len(test)} test examples after {trainer.step} steps, "
          f"{elapsed:.0f} s")
    out = trainer.out_dir
    summary = {"task": f"MQAR L={test.seq_len} p={test.num_kv_pairs}", "test accuracy": accuracy,
               "test examples": len(test), "steps": trainer.step, "wall time (s)": round(elapsed, 1),
               "parameters": trainer.model.num_parameters(), "device": trainer.device.type,
               "config": str(out / "config.json") if out else "-"}
    tokens = mqar_token_labels(test.inputs[0], test.labels[0], test.num_kv_pairs)
    figure = gate_figure(trainer.model, test.inputs[0], tokens)
    if out is not None:
        report = write_report(out / "report.html", title="rodimus-lab demo: Rodimus on MQAR",
                              summary=summary, history=trainer.history, figures=[figure])
        print(f"report: {report}")
    return 0


def _load_run(checkpoint: str):
    """Model and data recipe from a checkpoint (file or run folder)."""
    meta = load_checkpoint(checkpoint)
    model = RodimusLM(ModelConfig.from_dict(meta["model_config"]))
    load_checkpoint(meta["path"], model)
    return model, meta


def cmd_eval(args) -> int:
    model, meta = _load_run(args.checkpoint)
    if "data" not in meta["extra"]:
        raise ValueError(f"checkpoint {meta['path']} holds no data recipe (it was not written by rodimus-lab train)")
    data_cfg = DataConfig.from_dict({**meta["extra"]["data"], **{k.split(".", 1)[1]: v for k, v in _flags(args).items()
                                                                 if v is not None and k.startswith("data.")}})
    _, test, _ = build_data(data_cfg)
    train_cfg = meta["train_config"]
    metrics = evaluate(model, test, batch_size=args.batch_size or train_cfg.get("eval_batch_size", 64),
                       device=args.device, precision=train_cfg.get("precision", "auto"))
    print(json.dumps({"checkpoint": meta["path"], "step": meta["step"], **metrics}, indent=1))
    return 0


def cmd_generate(args) -> int:
    from .data.text import get_tokenizer
    from .generate import generate

    model, meta = _load_run(args.checkpoint)
    model.eval()
    tokenizer = None
    if meta["extra"].get("tokenizer"):
        t = meta["extra"]["tokenizer"]
        tokenizer = get_tokenizer(t["name"], tokenizer_path=t["path"])
    if args.prompt_ids is not None:
        ids = [int(x) for x in args.prompt_ids.replace(",", " ").split()]
    elif args.prompt is not None:
        if tokenizer is None:
            raise ValueError("this checkpoint has no tokenizer (an MQAR run): give --prompt-ids '1 2 3' instead of --prompt")
        ids = tokenizer.encode(args.prompt)
    else:
        raise ValueError("give --prompt TEXT or --prompt-ids 'ID ID ...'")
    if not ids:
        raise ValueError("the prompt is empty after tokenization")
    out = generate(model, torch.tensor([ids]), args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, seed=args.seed)[0].tolist()
    print(tokenizer.decode(out) if tokenizer is not None else " ".join(map(str, out)))
    return 0


def cmd_info(args) -> int:
    cfg = resolve_configs(None, args.config, _flags(args))
    model_cfg = _model_config(cfg["model_fields"], args.vocab_size or cfg["model_fields"].get("vocab_size") or 8192)
    with torch.device("meta"):
        model = RodimusLM(model_cfg)
    total, non_emb = model.num_parameters(), model.num_parameters(exclude_embeddings=True)
    print(f"block {model_cfg.block}, d_model {model_cfg.d_model}, {model_cfg.n_layers} layers, vocab {model_cfg.vocab_size}")
    print(f"parameters: {total:,} total, {non_emb:,} without embeddings")
    print(f"{'context':>9} {'cache bytes/seq (bf16)':>24} {'bytes per token':>16}")
    for n in args.context:
        b = cache_bytes(model_cfg, n)
        print(f"{n:>9} {b:>24,} {b / max(n, 1):>16,.1f}")
    grow = cache_bytes(model_cfg, max(args.context) + 1) - cache_bytes(model_cfg, max(args.context))
    print(f"fixed recurrent state {cache_bytes(model_cfg, 0):,} bytes; each further token adds {grow:,} bytes")
    return 0


def cmd_bench(args) -> int:
    from .bench import decode, train

    {"decode": decode, "train": train}[args.which].main(args.bench_args)   # its own flags: bench <which> --help
    return 0


# ------------------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rodimus-lab", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train a small Rodimus on MQAR (CPU, ~2 min) and write an HTML report")
    p.add_argument("--fast", action="store_true", help="a few seconds' smoke run (low accuracy)")
    p.add_argument("--steps", dest="train.max_steps", type=int, default=None, help="training steps (= --max-steps)")
    p.add_argument("--threads", type=int, default=DEMO_THREADS,
                   help=f"CPU threads for torch (default {DEMO_THREADS}: the demo's small ops gain little from more, "
                        "and lose a lot when other work shares the cores)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model on MQAR or text")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--nproc", type=int, default=None,
                   help="data-parallel processes on this host (one per GPU): runs this command under torchrun")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on its run's test data")
    p.add_argument("--checkpoint", required=True, help="a ckpt-*.json file or a run folder (latest checkpoint)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default=None)
    _add_config_flags(p, sections=("data",))
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("generate", help="sample from a checkpoint with the recurrent state")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", help="text (runs with a tokenizer)")
    p.add_argument("--prompt-ids", help="token ids, e.g. '12 7 99'")
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("info", help="parameter counts and decoding-state bytes of a config")
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--context", type=int, nargs="+", default=[1, 1024, 4096, 32768], help="context lengths")
    _add_config_flags(p, sections=("model",))
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", help="benchmarks: `bench decode` (decoding latency and memory), `bench train` "
                                     "(training tokens/s and memory); add --help after either for its flags")
    p.add_argument("which", choices=["decode", "train"])
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="the benchmark's own flags")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv   # `train --nproc` hands the same flags on to torchrun
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, CheckpointError, DataUnavailableError) as e:
        print(f"rodimus-lab {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
