"""The ``rodimus-lab`` command: demo, train, eval, generate, info, bench.

Every field of ModelConfig, TrainConfig and DataConfig is a flag (``d_model`` → ``--d-model``); its
help (meaning, allowed values) comes from the field's metadata (:func:`rodimus_lab.config.setting`).
A config file (JSON or YAML) has the sections ``model``, ``train``, ``data``. Flags override the
file, the file overrides the defaults. Each run writes its resolved config to ``<out>/config.json``.

A run folder holds one run: a new run refuses a folder that holds another one (``--overwrite``
replaces it, ``--resume`` continues it with its own saved config), and ``eval`` / ``generate`` on a
run folder use that run's latest checkpoint. Bad input is a one-line error (exit code 2) that names
the flag, field or file; ``--debug`` shows the traceback instead.
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
from .checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from .config import ConfigError
from .cpu_threads import cpu_sample, free_threads
from .data.recipe import DataConfig, build_data, data_vocab_size, validation_split
from .data.text import DataUnavailableError
from .run_config import SECTIONS, flag_value, read_config_file, resolve_configs
from .train import HOW_IT_RUNS, AccuracyCheck, TrainConfig, Trainer, clear_run_folder, evaluate, run_files

__all__ = ["main", "resolve_configs", "DEMO", "EXAMPLES"]

_MODEL_FROM_DATA = ("vocab_size",)   # the data decide these model fields

# `rodimus-lab demo`: ≥ 99% MQAR test accuracy (L=64, p=4, V=128) after 880 steps, stopped by the cheap
# validation check, aiming at under a minute on a 2-core CPU (docs/benchmarks.md, "CPU training"). Flags
# override any of it.
DEMO = {
    "model": {"d_model": 128, "n_layers": 1, "mem_size": 16, "expand": 1.0, "tie_embeddings": True,
              "backend": "reference"},
    "train": {"max_steps": 1000, "batch_size": 32, "lr": 1e-2, "warmup_steps": 20, "eval_every": 0,
              "eval_batch_size": 64, "stop_at_accuracy": 0.99, "weight_decay": 0.1, "out_dir": "runs/demo"},
    "data": {"task": "mqar", "preset": "demo", "num_valid": 256},
}
DEMO_THREADS = 2        # at most; the cores other processes leave free (cpu_threads.free_threads)
DEMO_CHECK_EVERY = 40   # steps between the cheap validation checks (train.AccuracyCheck)

# `rodimus-lab CMD --help` ends with these; `rodimus-lab --help` lists them all.
EXAMPLES = {
    "demo": ["rodimus-lab demo                          # MQAR on the CPU, ≥ 99% in ~1 min, HTML report",
             "rodimus-lab demo --fast --out runs/smoke  # a few seconds' smoke run",
             "rodimus-lab demo --out runs/demo --overwrite   # replace the run in runs/demo"],
    "train": ["rodimus-lab train --task mqar --preset L128_p8 --d-model 128 --lr 1e-3 --out runs/mqar128",
              "rodimus-lab train --config run.yaml --max-steps 2000 --out runs/x   # a file, then flags on top",
              "rodimus-lab train --out runs/mqar128 --resume --max-steps 4000     # continue, with its own config",
              "rodimus-lab train --task text --source /path/to/wikitext-103 --out runs/wt103   # local files",
              "rodimus-lab train --nproc 2 --task mqar --out runs/ddp          # data parallel through torchrun"],
    "eval": ["rodimus-lab eval --checkpoint runs/mqar128          # the run's latest checkpoint",
             "rodimus-lab eval --checkpoint runs/mqar128/checkpoints/ckpt-000500.json"],
    "generate": ["rodimus-lab generate --checkpoint runs/wt103 --prompt 'The history of' --top-p 0.9",
                 "rodimus-lab generate --checkpoint runs/mqar128 --prompt-ids '3 40 5 50 3' --temperature 0",
                 "rodimus-lab generate --pretrained codefuse-ai/Rodimus-Plus-Coder-1.6B-Base --prompt 'def fib(n):'"],
    "info": ["rodimus-lab info --d-model 2048 --n-layers 48 --context 4096",
             "rodimus-lab info --block transformer --d-model 768 --n-heads 12 --context 1024 32768"],
    "bench": ["rodimus-lab bench decode --device cuda --contexts 1024,32768   # decoding latency/memory vs context",
              "rodimus-lab bench train --models rodimus_plus --seq-lens 2048      # training tokens/s and memory",
              "rodimus-lab bench host --models rodimus_plus,llama   # host time of an eager training step (CPU)",
              "rodimus-lab bench memory --models rodimus_plus --tensors   # bytes saved for backward, by module (CPU)",
              "rodimus-lab bench decode --out docs/results/decode.json   # results go to runs/bench/ unless --out",
              "rodimus-lab bench decode --help"],
    "sweep": ["rodimus-lab sweep experiments/mqar_state_size.yaml --device cuda   # every point, resuming",
              "rodimus-lab sweep experiments/mqar_state_size.yaml --only Rodimus --list",
              "rodimus-lab sweep experiments/mqar_state_size.yaml --render --out docs/results/mqar_state_size"],
}


def _epilog(*commands: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for c in commands for line in EXAMPLES.get(c, ()))


class CommandError(Exception):
    """Ends a command with a message and an exit code (Ctrl-C during training: 130)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code

# ------------------------------------------------------------------------------ configs

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _show(value) -> str:
    """A value as it is typed on the command line (JSON literals)."""
    return value if isinstance(value, str) else "None" if value is None else json.dumps(value)


def _field_help(f: dataclasses.Field) -> tuple[str, str]:
    """(help, metavar) of a config field's flag, from the field's ``setting`` metadata."""
    allowed = f.metadata.get("allowed")
    text = f.metadata.get("help", "")
    if allowed is not None:
        text += f"; allowed: {allowed.words}"
    text += f" (default {_show(f.default)})"
    if allowed is not None and allowed.choices:
        metavar = "{" + ",".join(map(_show, allowed.choices)) + "}"
    else:   # the field's annotation, e.g. "int | None"
        metavar = next((m for t, m in (("int", "N"), ("float", "X"), ("str", "TEXT")) if t in str(f.type)), "V")
    return text.replace("%", "%%"), metavar


def _add_config_flags(parser: argparse.ArgumentParser, sections=("model", "train", "data")) -> None:
    parser.add_argument("--config", help="a JSON or YAML file with sections model / train / data; flags override it")
    for section in sections:
        group = parser.add_argument_group(
            f"{section} ({SECTIONS[section].__name__} fields; values are JSON literals — 64, 1e-3, true, null "
            "for None — or text)")
        for f in dataclasses.fields(SECTIONS[section]):
            if section == "model" and f.name in _MODEL_FROM_DATA:
                continue
            text, metavar = _field_help(f)
            group.add_argument(_flag(f.name), dest=f"{section}.{f.name}", type=flag_value, default=None, metavar=metavar,
                               help=text)
    if "train" in sections:
        parser.add_argument("--out", dest="train.out_dir", type=str, default=None, metavar="DIR",
                            help="the run folder (= --out-dir): config.json, metrics.jsonl, checkpoints/")


def _model_config(fields: dict, vocab_size: int) -> ModelConfig:
    given = fields.get("vocab_size")
    if given is not None and given != vocab_size:
        raise ValueError(f"model.vocab_size = {given} differs from the data's vocabulary ({vocab_size}); "
                         "leave it out (the data decide it) or set data.vocab_size")
    return ModelConfig.from_dict({**fields, "vocab_size": vocab_size})


def _flags(args) -> dict:
    return {k: v for k, v in vars(args).items() if "." in k}


# ------------------------------------------------------------------------------ commands

def _build_run(base: dict | None, args, *, resume: bool = False) -> tuple[Trainer, dict]:
    cfg = resolve_configs(base, args.config, _flags(args))
    data_cfg, train_cfg = cfg["data"], cfg["train"]
    _model_config(cfg["model_fields"], data_vocab_size(data_cfg))   # a bad model field fails before any work
    if train_cfg.out_dir is None and args.command == "train":
        raise CommandError("train needs an output folder: --out runs/NAME")
    if not resume:
        _claim_run_folder(train_cfg.out_dir, args)
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


# ------------------------------------------------------------------------------ run folders

def _claim_run_folder(out: str | None, args) -> None:
    """A new run needs a folder without another run in it: refuse, or with --overwrite delete that run."""
    if out is None:
        return
    found = run_files(out)   # a file given as the folder is an error
    if not found:
        return
    names = ", ".join(p.name for p in found)
    if getattr(args, "overwrite", False):
        clear_run_folder(out)
        print(f"--overwrite: deleted the earlier run in {out} ({names})", file=sys.stderr)
        return
    resume = "continue it with --resume, " if hasattr(args, "resume") else ""
    raise CommandError(f"--out {out} already holds a run ({names}): {resume}replace it with --overwrite, "
                       "or choose another --out")


def _fresh_folder(out: str) -> str:
    """``out``, or ``out-2``, ``out-3``, … : the first that holds no run."""
    candidate, i = out, 1
    while run_files(candidate):
        i += 1
        candidate = f"{out}-{i}"
    return candidate


# On --resume a flag may change these (how long and how the run goes on: train.HOW_IT_RUNS, e.g. the device
# or --cuda-graphs); every other field is the saved run's, and a flag that disagrees with it is an error.
RESUME_MAY_CHANGE = {
    "train": {"max_steps", "eval_every", "eval_batch_size", "checkpoint_every", "keep_last", "stop_at_accuracy",
              *HOW_IT_RUNS},
    "model": {"backend"},
    "data": {"data_dir"},
}


def _resume_base(args) -> dict:
    """The configs of the run in --out (from its latest checkpoint), after checking the given flags."""
    out = getattr(args, "train.out_dir")
    if out is None:
        raise CommandError("--resume continues the run in --out: give --out runs/NAME")
    run_files(out)   # a file given as the folder is an error
    try:
        meta = load_checkpoint(out)
    except CheckpointError as e:
        raise CommandError(f"--resume: {e}; without --resume a new run starts (add --overwrite to replace "
                           f"what {out} holds)") from None
    if "data" not in meta["extra"]:
        raise CommandError(f"--resume: checkpoint {meta['path']} holds no data recipe (it was not written by "
                           "rodimus-lab train)")
    saved = {"model": meta["model_config"], "train": meta["train_config"], "data": meta["extra"]["data"]}
    given = {f"{section}.{name}": value for section, values in
             (read_config_file(args.config).items() if args.config else ()) for name, value in values.items()}
    given.update({k: v for k, v in _flags(args).items() if v is not None})
    for key, value in given.items():
        section, name = key.split(".", 1)
        if name not in RESUME_MAY_CHANGE[section] and value != saved[section].get(name):
            raise CommandError(
                f"{_flag(name)} {_show(value)} conflicts with the run in {out}, saved with {name} = "
                f"{_show(saved[section].get(name))}: a resumed run keeps its config, so drop {_flag(name)} "
                "(or start a new run with another --out)")
    return saved


def _fit(trainer: Trainer, command: str) -> None:
    """trainer.fit(); Ctrl-C ends it with a line that names the last good checkpoint (checkpoints are
    written atomically, so an interrupted save leaves the previous one intact)."""
    try:
        trainer.fit()
    except KeyboardInterrupt:
        last = trainer.last_checkpoint() if trainer.is_main else None
        if last is None:
            where = ("no checkpoint was written yet (--checkpoint-every N saves one every N steps)"
                     if trainer.out_dir is not None else "nothing was saved (no --out)")
        else:
            where = f"the last good checkpoint is {last}"
            if command == "train":
                where += f"; continue with: rodimus-lab train --out {trainer.out_dir} --resume"
        raise CommandError(f"stopped by Ctrl-C during step {trainer.step + 1}; {where}", code=130) from None


# ------------------------------------------------------------------------------ commands

def cmd_train(args) -> int:
    if args.nproc is not None:
        return _launch_torchrun(args)
    base = _resume_base(args) if args.resume else None
    trainer, cfg = _build_run(base, args, resume=args.resume)
    say = print if trainer.is_main else (lambda *a, **k: None)
    if args.resume:
        meta = trainer.resume()
        say(f"resumed from {meta['path']} at step {trainer.step}")
    c = trainer.model.config
    say(f"model: {c.block}, d_model {c.d_model}, {c.n_layers} layers, "
        f"{trainer.model.num_parameters():,} parameters; writing to {trainer.out_dir}"
        + (f"; {trainer.world_size} processes" if trainer.world_size > 1 else ""))
    _fit(trainer, "train")
    if trainer.is_main:
        _print_eval(trainer.history)
    return 0


def _launch_torchrun(args) -> int:
    """``train --nproc N``: check the configs and the run folder here, then run the same flags under torchrun."""
    train_args, skip = [], False
    for a in args.argv[1:]:   # argv[0] is "train"; every flag but --nproc (and --overwrite, done here) goes on
        if not (skip or a.startswith("--nproc=") or a in ("--nproc", "--overwrite")):
            train_args.append(a)
        skip = a == "--nproc"
    command = distributed.torchrun_command(args.nproc, train_args)   # checks --nproc
    base = _resume_base(args) if args.resume else None
    cfg = resolve_configs(base, args.config, _flags(args))
    distributed.check_global_batch(cfg["train"].batch_size, cfg["train"].grad_accum, args.nproc)
    if cfg["train"].out_dir is None:
        raise CommandError("train needs an output folder: --out runs/NAME")
    if not args.resume:
        _claim_run_folder(cfg["train"].out_dir, args)
    print(" ".join(command), flush=True)
    return distributed.launch(command)


def _print_eval(history) -> None:
    evals = [r for r in history if r.get("kind") == "eval"]
    if evals:
        print(json.dumps({k: v for k, v in evals[-1].items() if k != "kind"}, indent=1))


def _threads_text() -> str:
    n = torch.get_num_threads()
    return f"{n} torch thread{'s' * (n > 1)}"


def cmd_demo(args) -> int:
    from .data.mqar import mqar_token_labels
    from .report import gate_figure, write_report

    base = json.loads(json.dumps(DEMO))
    if args.fast:   # a smoke run for tests: seconds, not minutes (accuracy will be low)
        base["train"].update(max_steps=20, eval_every=10, eval_batch_size=100)
        base["data"].update(num_train=512, num_test=100)
    if getattr(args, "train.out_dir") is None and args.config is None and not args.overwrite:
        default = base["train"]["out_dir"]   # the default folder: never refuse, take the next free one
        base["train"]["out_dir"] = _fresh_folder(default)
        if base["train"]["out_dir"] != default:
            print(f"{default} holds an earlier demo run; this one writes to {base['train']['out_dir']} "
                  f"(--out {default} --overwrite replaces it)")
    start = time.perf_counter()
    sample = cpu_sample()   # what other processes use while the run is built decides the threads
    trainer, cfg = _build_run(base, args)
    if args.threads is None:
        torch.set_num_threads(free_threads(DEMO_THREADS, sample))
    test = trainer.eval_data
    if trainer.config.stop_at_accuracy is not None and cfg["data"].num_valid:   # stop at the target, checked cheaply
        trainer.callbacks.append(AccuracyCheck(validation_split(cfg["data"]), trainer.config.stop_at_accuracy,
                                               DEMO_CHECK_EVERY))
    print(f"rodimus-lab demo: MQAR L={test.seq_len}, {test.num_kv_pairs} key-value pairs, "
          f"vocab {trainer.model.config.vocab_size}; a {trainer.model.num_parameters():,}-parameter Rodimus "
          f"on {trainer.device.type}" + (f" ({_threads_text()})" if trainer.device.type == "cpu" else "")
          + (f", writing to {trainer.out_dir}" if trainer.out_dir else ""))
    _fit(trainer, "demo")
    elapsed = time.perf_counter() - start
    final = [r for r in trainer.history if r.get("kind") == "eval"][-1]
    accuracy = final["eval_accuracy"]
    print(f"MQAR accuracy {100 * accuracy:.2f}% on {len(test)} test examples after {trainer.step} steps, "
          f"{elapsed:.0f} s")
    out = trainer.out_dir
    summary = {"task": f"MQAR L={test.seq_len} p={test.num_kv_pairs}", "test accuracy": accuracy,
               "test examples": len(test), "steps": trainer.step, "wall time (s)": round(elapsed, 1),
               "parameters": trainer.model.num_parameters(), "device": trainer.device.type,
               "torch threads": torch.get_num_threads(),
               "config": str(out / "config.json") if out else "-"}
    tokens = mqar_token_labels(test.inputs[0], test.labels[0], test.num_kv_pairs)
    figure = gate_figure(trainer.model, test.inputs[0], tokens)
    if out is not None:
        report = write_report(out / "report.html", title="rodimus-lab demo: Rodimus on MQAR",
                              summary=summary, history=trainer.history, figures=[figure])
        print(f"report: {report}")
    return 0


def _load_run(checkpoint: str):
    """Model and checkpoint metadata from a checkpoint file or a run folder (its latest checkpoint)."""
    meta = load_checkpoint(resolve_checkpoint(checkpoint))
    model = RodimusLM(ModelConfig.from_dict(meta["model_config"]))
    load_checkpoint(meta["path"], model)
    print(f"checkpoint {meta['path']} (step {meta['step']})", file=sys.stderr)
    return model, meta


def _load_pretrained(source: str):
    """Model and tokenizer (None without a tokenizer.json) of a released checkpoint: a folder or hub repo id."""
    from .pretrained import PretrainedError, from_pretrained, load_tokenizer, snapshot_folder

    try:
        folder = snapshot_folder(source)
        model = from_pretrained(folder)
        tokenizer = load_tokenizer(folder) if (folder / "tokenizer.json").is_file() else None
    except PretrainedError as e:
        raise CommandError(str(e)) from None
    print(f"pretrained {folder}", file=sys.stderr)
    return model, tokenizer


def cmd_eval(args) -> int:
    model, meta = _load_run(args.checkpoint)
    if "data" not in meta["extra"]:
        raise CommandError(f"checkpoint {meta['path']} holds no data recipe (it was not written by rodimus-lab train)")
    data_cfg = DataConfig.from_dict({**meta["extra"]["data"], **{k.split(".", 1)[1]: v for k, v in _flags(args).items()
                                                                 if v is not None and k.startswith("data.")}})
    _, test, _ = build_data(data_cfg)
    train_cfg = meta["train_config"]
    metrics = evaluate(model, test, batch_size=args.batch_size or train_cfg.get("eval_batch_size", 64),
                       device=args.device, precision=train_cfg.get("precision", "auto"))
    print(json.dumps({"checkpoint": meta["path"], "step": meta["step"], **metrics}, indent=1))
    return 0


def _token_ids(text: str) -> list[int]:
    """--prompt-ids: integers separated by spaces or commas."""
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected token ids (integers) separated by spaces or commas, "
                                         f"e.g. '12 7 99'; got {text!r}") from None


def _int_from(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected an int ≥ {low}, got {text!r}")
        return value
    return parse


def cmd_generate(args) -> int:
    from .data.text import get_tokenizer
    from .generate import generate

    if args.pretrained is not None:
        model, tokenizer = _load_pretrained(args.pretrained)
    else:
        model, meta = _load_run(args.checkpoint)
        model.eval()
        tokenizer = None
        if meta["extra"].get("tokenizer"):
            t = meta["extra"]["tokenizer"]
            tokenizer = get_tokenizer(t["name"], tokenizer_path=t["path"])
    if args.prompt_ids is not None:
        ids = args.prompt_ids
        vocab = model.config.vocab_size
        outside = [i for i in ids if not 0 <= i < vocab]
        if outside:
            raise CommandError(f"--prompt-ids: token id {outside[0]} is outside this model's vocabulary "
                               f"(0 … {vocab - 1})")
    elif args.prompt is not None:
        if tokenizer is None:
            raise CommandError("this checkpoint has no tokenizer (an MQAR run): give --prompt-ids '1 2 3' "
                               "instead of --prompt")
        ids = tokenizer.encode(args.prompt)
    else:
        raise CommandError("give --prompt TEXT or --prompt-ids 'ID ID ...'")
    if not ids:
        raise CommandError("the prompt is empty: give at least one token (--prompt TEXT or --prompt-ids 'ID ...')")
    out = generate(model, torch.tensor([ids]), args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, seed=args.seed)[0].tolist()
    print(tokenizer.decode(out) if tokenizer is not None else " ".join(map(str, out)))
    return 0


def cmd_info(args) -> int:
    cfg = resolve_configs(None, args.config, _flags(args))
    vocab_size = args.vocab_size if args.vocab_size is not None else cfg["model_fields"].get("vocab_size") or 8192
    model_cfg = _model_config(cfg["model_fields"], vocab_size)
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
    from .bench import decode, host, memory, train

    {"decode": decode, "train": train, "host": host, "memory": memory}[args.which].main(args.bench_args)   # its own flags: bench <which> --help
    return 0


# ------------------------------------------------------------------------------ parser

def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand with its help line, its examples and --debug."""
    p = sub.add_parser(name, help=help, description=help, epilog=_epilog(name),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="on an error, show the Python traceback")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rodimus-lab", epilog=_epilog(*EXAMPLES) + "\n\n`rodimus-lab COMMAND --help` lists its flags.",
        description="rodimus-lab: train, evaluate and sample Rodimus* models (arXiv 2410.06577); "
                    "a two-minute CPU demo with an HTML report.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "demo", "train a small Rodimus on MQAR (CPU, ~1 min) and write an HTML report")
    p.add_argument("--fast", action="store_true", help="a few seconds' smoke run (low accuracy)")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    p.add_argument("--steps", dest="train.max_steps", type=int, default=None, help="training steps (= --max-steps)")
    p.add_argument("--threads", type=_int_from(1), default=None,
                   help=f"CPU threads for torch (default: up to {DEMO_THREADS}, one per core that other processes "
                        "leave free, where idle threads sleep — OMP_WAIT_POLICY=PASSIVE, which the rodimus-lab "
                        "command sets unless you set it — else 1; the result depends on the thread count)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_demo)

    p = _command(sub, "train", "train a model on MQAR or text")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint, with its saved config (flags may "
                        "change only " + ", ".join(sorted(f"--{n.replace('_', '-')}" for names in RESUME_MAY_CHANGE.values()
                                                          for n in names if n != "out_dir")) + ")")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    p.add_argument("--nproc", type=int, default=None,
                   help="data-parallel processes on this host (one per GPU): runs this command under torchrun")
    p.add_argument("--threads", type=_int_from(1), default=None, help="CPU threads for torch (default: torch's choice)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    checkpoint_help = "a run folder (its latest checkpoint) or a checkpoints/ckpt-NNNNNN.json file"
    p = _command(sub, "eval", "evaluate a checkpoint on its run's test data")
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    p.add_argument("--batch-size", type=_int_from(1), default=None,
                   help="examples per batch (default: the run's eval_batch_size)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:i (default: where the model loads, the CPU)")
    _add_config_flags(p, sections=("data",))
    p.set_defaults(func=cmd_eval)

    p = _command(sub, "generate", "sample from a checkpoint with the recurrent state")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help=checkpoint_help)
    source.add_argument("--pretrained", metavar="FOLDER_OR_REPO_ID",
                        help="a released official checkpoint: a Hugging Face snapshot folder or repo id, e.g. "
                             "codefuse-ai/Rodimus-Plus-Coder-1.6B-Base (downloaded once; see docs/official.md)")
    p.add_argument("--prompt", help="text (runs with a tokenizer: text runs)")
    p.add_argument("--prompt-ids", type=_token_ids, help="token ids separated by spaces or commas, e.g. '12 7 99'")
    p.add_argument("--max-new-tokens", type=_int_from(0), default=50, help="tokens to sample (default 50)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy (default 1)")
    p.add_argument("--top-k", type=_int_from(1), default=None, help="sample among the k likeliest tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample among the likeliest tokens of total mass p, in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling (default: unseeded)")
    p.set_defaults(func=cmd_generate)

    p = _command(sub, "info", "parameter counts and decoding-state bytes of a config")
    p.add_argument("--vocab-size", type=flag_value, default=None, metavar="V",
                   help="tokens in the vocabulary; allowed: an int ≥ 1 (default 8192)")
    p.add_argument("--context", type=_int_from(0), nargs="+", default=[1, 1024, 4096, 32768],
                   help="context lengths (default 1 1024 4096 32768)")
    _add_config_flags(p, sections=("model",))
    p.set_defaults(func=cmd_info)

    p = _command(sub, "bench", "benchmarks: `bench decode` (decoding latency and memory), `bench train` "
                                     "(training tokens/s and memory), `bench host` (host time of an eager "
                                     "training step, on CPU), `bench memory` (bytes saved for the backward, on "
                                     "CPU); add --help after one for its flags")
    p.add_argument("which", choices=["decode", "train", "host", "memory"])
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="the benchmark's own flags")
    p.set_defaults(func=cmd_bench)

    from . import sweep   # (imports this module: here, not at the top)

    p = _command(sub, "sweep", "train the points of a sweep spec (experiments/*.yaml), record them as JSONL, "
                               "draw the figure beside the paper's; resumes where it stopped")
    sweep.add_arguments(p)
    p.set_defaults(func=sweep.main)
    return parser


def _message(e: BaseException) -> str:
    """One line: the error, and for a config field the flag that sets it."""
    text = str(e)
    if isinstance(e, ConfigError):
        section = {cls.__name__: name for name, cls in SECTIONS.items()}.get(e.config)
        if section is not None:
            text += f" (flag {_flag(e.field)}, or {section}.{e.field} in a --config file)"
    return text


def main(argv=None) -> int:
    """Run one command; bad input ends it with a one-line error and exit code 2 (--debug: the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv   # `train --nproc` hands the same flags on to torchrun
    threads_before = torch.get_num_threads()   # restored at the end (a test may run commands in-process)
    if getattr(args, "threads", None):   # else the command's own choice (demo) or torch's
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (CommandError, ValueError, CheckpointError, DataUnavailableError, OSError, KeyboardInterrupt) as e:
        if args.debug:
            raise
        if isinstance(e, KeyboardInterrupt):
            e = CommandError("stopped by Ctrl-C", code=130)
        code = e.code if isinstance(e, CommandError) else 2
        print(f"rodimus-lab {args.command}: {'' if code == 130 else 'error: '}{_message(e)}", file=sys.stderr)
        return code
    finally:
        torch.set_num_threads(threads_before)


if __name__ == "__main__":
    sys.exit(main())
