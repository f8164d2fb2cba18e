"""A small, readable training loop: ``Trainer``, ``TrainConfig``, ``evaluate`` and callbacks.

The trainer knows a model only through ``model(input_ids, labels=...)`` (an ``LMOutput`` with
``.loss``) and ``model.config``. Data are *example sets*: anything with ``len(data)`` and
``data[index_tensor] -> (inputs, labels)`` (``MQARSplit``, ``TokenBlocks``). Which examples
make up step ``s`` is a pure function of (seed, s) — an epoch-wise permutation — so resuming
needs no data-loader state and stopping-then-resuming repeats the uninterrupted run exactly.

Data parallel under torchrun (``rodimus_lab.distributed``): the Trainer joins the process group,
wraps the model in DistributedDataParallel, and each rank takes ``batch_size / world_size`` of
every global batch; the logged loss is the mean over ranks, and only rank 0 (``is_main``) writes
files or shows progress. As the data order depends on the global step only, a checkpoint resumes
with any number of processes.

Callbacks receive ``(metrics, trainer)``: ``on_step`` after every optimizer step, ``on_eval``
after every evaluation, ``on_end`` once with the final summary. Set ``trainer.should_stop`` to
end training early.

The host does not wait for the device inside a step: a step's loss and gradient norm stay on the
device until they are read, once for all steps since the last read, every ``log_every`` steps (and
before an evaluation, a checkpoint and the end). Each step is still logged with its own numbers;
with ``log_every`` > 1 its row, its ``on_step`` call and the divergence check come at the read.
Batches go to a GPU from page-locked memory, asynchronously. On one CUDA device and in one process the
whole step is replayed as one CUDA graph (``rodimus_lab.graphed``), which removes the host's launch work
from every step: ``cuda_graphs = "auto"`` (the default) chooses it where it applies (:func:`choose_step`;
``trainer.step_choice`` says which step runs and why, and a run with a progress bar prints it), ``True``
insists on it, ``False`` trains eagerly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed
from .config import (BOOL, Allowed, ConfigError, DictConfig, int_from, number_above, number_from, number_in, one_of,
                     setting)
from .checkpoint import latest_checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from .data.mqar import IGNORE, MQARSplit
from .files import atomic_write, read_jsonl
from .graphed import GraphedStep, NotCapturable, training_step

__all__ = ["TrainConfig", "Trainer", "Callback", "AccuracyCheck", "TrainingDiverged", "RunFolderError", "evaluate",
           "param_groups", "no_weight_decay", "resolve_device", "run_files", "clear_run_folder", "StepChoice",
           "choose_step"]


_CHECKPOINT_FILE = re.compile(r"^\.?ckpt-\d+\.(json|safetensors)(\.tmp-\d+)?$")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class RunFolderError(ValueError):
    """An output folder that cannot take this run: a file, or a folder that holds another run."""


# What a run writes into its folder. A folder holding any of them holds a run: a new run never
# writes there (two runs would mix their metrics and checkpoints), only that run's resume does.
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "report.html")


def run_files(out_dir: str | os.PathLike) -> list[Path]:
    """The files of a run that ``out_dir`` holds (none: a new run may start there)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} is a file, not a folder: give the run a folder of its own, e.g. runs/NAME")
    return [out / name for name in RUN_FILES if (out / name).exists()]


def clear_run_folder(out_dir: str | os.PathLike) -> list[Path]:
    """Delete the run in ``out_dir`` (only the files a run writes; anything else stays); returns them."""
    found = run_files(out_dir)
    for path in found:
        if path.is_dir():
            for f in path.iterdir():
                if _CHECKPOINT_FILE.match(f.name):
                    f.unlink()
            if not any(path.iterdir()):
                path.rmdir()
        else:
            path.unlink()
    return found


def _is_device(v) -> bool:
    return isinstance(v, str) and (v in ("auto", "cpu") or v.startswith("cuda"))


# TrainConfig fields that say where and how a run executes, not what it computes (cuda_graphs replays the
# same step; like the device it moves the numbers by rounding only): run caches and sweeps ignore them.
HOW_IT_RUNS = frozenset({"device", "progress", "out_dir", "log_every", "cuda_graphs"})


@dataclass
class TrainConfig(DictConfig):
    max_steps: int = setting(1000, "optimizer steps of the run", int_from(1))
    batch_size: int = setting(32, "examples per optimizer step, all micro-batches and processes together", int_from(1))
    grad_accum: int = setting(1, "micro-batches per optimizer step (must divide batch_size)", int_from(1))
    lr: float = setting(1e-3, "peak learning rate", number_above(0))
    min_lr_ratio: float = setting(0.1, "the cosine schedule ends at lr · min_lr_ratio", number_in(0, 1))
    warmup_steps: int = setting(100, "steps of linear warmup to lr", int_from(0))
    weight_decay: float = setting(0.1, "AdamW weight decay (not on biases, norms, embeddings)", number_from(0))
    beta1: float = setting(0.9, "AdamW β1", number_in(0, 1))
    beta2: float = setting(0.95, "AdamW β2", number_in(0, 1))
    grad_clip: float = setting(1.0, "max global gradient norm; 0 turns clipping off", number_from(0))
    eval_every: int = setting(200, "steps between evaluations; 0: only at the end", int_from(0))
    eval_batch_size: int = setting(64, "examples per evaluation batch", int_from(1))
    checkpoint_every: int = setting(0, "steps between checkpoints; 0: only at the end (needs out_dir)", int_from(0))
    keep_last: int = setting(3, "checkpoints kept on disk (the newest)", int_from(1))
    stop_at_accuracy: float | None = setting(None, "stop once the MQAR eval accuracy reaches this; None: never",
                                             number_in(0, 1, open_low=True).or_none())
    seed: int = setting(0, "seed of the weights and the data order", int_from(0))
    device: str = setting("auto", "auto (CUDA if present), cpu, cuda or cuda:i",
                          Allowed("'auto', 'cpu' or 'cuda[:i]'", _is_device))
    precision: str = setting("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16",
                             one_of(("auto", "fp32", "bf16")))
    out_dir: str | None = setting(None, "the run folder: config.json, metrics.jsonl, checkpoints/; None: write nothing",
                                  Allowed("None or a folder path", lambda v: v is None or isinstance(v, str)))
    progress: bool = setting(True, "show a progress bar", BOOL)
    log_every: int = setting(1, "steps between reads of the training loss and gradient norm on the host (each read "
                             "waits for the device); every step is still logged, with its own values, at the read",
                             int_from(1))
    cuda_graphs: bool | str = setting(
        "auto", "replay the whole training step as one CUDA graph (fused AdamW): removes the host's launch work, "
        "which bounds small models' steps. auto: where it applies (a CUDA device, one process), else eager; true: "
        "always (an error where it cannot); false: eager",
        Allowed("'auto', true or false", lambda v: v == "auto" or isinstance(v, bool), ("auto", True, False)))

    def check(self) -> None:
        self.need("batch_size", self.batch_size % self.grad_accum == 0, f"a multiple of grad_accum = {self.grad_accum}")
        self.need("cuda_graphs", not (self.cuda_graphs is True and self.device == "cpu"),
                  "'auto' or false with device 'cpu' (CUDA graphs need a CUDA device)")

    def lr_at(self, step: int) -> float:
        """Linear warmup to ``lr``, then a cosine down to ``lr · min_lr_ratio`` at ``max_steps``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class StepChoice:
    """How the Trainer runs its step: replayed as one CUDA graph or eagerly, and why (the run's log line)."""
    graphed: bool
    reason: str

    def __str__(self) -> str:
        return f"training step: {'one CUDA graph, replayed' if self.graphed else 'eager'} ({self.reason})"


def choose_step(cuda_graphs: bool | str, device: torch.device, world_size: int) -> StepChoice:
    """The step the Trainer runs for ``TrainConfig.cuda_graphs`` ("auto", True or False) on ``device`` with
    ``world_size`` processes. A graph (``GraphedStep``) applies on a CUDA device in one process: the Trainer
    builds the capturable fused AdamW it needs and gives it batches of one shape. "auto" takes it there and
    trains eagerly elsewhere; True raises a ConfigError where it does not apply."""
    if cuda_graphs is False:
        return StepChoice(False, "train.cuda_graphs = false")
    if device.type != "cuda":
        why = f"the device is {device}, and CUDA graphs need a CUDA device"
    elif world_size > 1:
        why = f"{world_size} processes: the gradient exchange of DistributedDataParallel is not captured"
    else:
        said = "true" if cuda_graphs is True else "auto (false trains eagerly)"
        return StepChoice(True, f"train.cuda_graphs = {said}: one CUDA device, one process")
    if cuda_graphs is True:
        raise ConfigError(f"TrainConfig.cuda_graphs = True, but {why}: set cuda_graphs = 'auto' (a graph where one "
                          "applies) or False", "TrainConfig", "cuda_graphs")
    return StepChoice(False, f"train.cuda_graphs = auto, but {why}")


class Callback:
    """Override any of these; each gets the metrics dict and the trainer."""

    def on_step(self, metrics: dict, trainer: "Trainer") -> None: ...

    def on_eval(self, metrics: dict, trainer: "Trainer") -> None: ...

    def on_end(self, metrics: dict, trainer: "Trainer") -> None: ...


class AccuracyCheck(Callback):
    """Early stopping without evaluating the whole test set every few steps: every ``every`` steps the MQAR
    accuracy on ``data`` (a small held-out set, never trained on: ``DataConfig.num_valid``), logged as a
    ``"check"`` row; once it reaches ``target``, a full evaluation of the trainer's eval data, whose
    ``TrainConfig.stop_at_accuracy`` then decides whether training stops."""

    def __init__(self, data: MQARSplit, target: float, every: int):
        if not isinstance(data, MQARSplit) or not 0 < target <= 1 or every < 1:
            raise ValueError(f"AccuracyCheck needs an MQARSplit, a target in (0, 1] and every ≥ 1, got "
                             f"{type(data).__name__}, {target!r}, {every!r}")
        self.data, self.target, self.every = data, target, every

    def on_step(self, metrics, trainer):
        if metrics["step"] % self.every:   # the step read (with TrainConfig.log_every > 1 the trainer may be ahead)
            return
        c = trainer.config
        result = evaluate(trainer.model, self.data, batch_size=c.eval_batch_size, device=trainer.device,
                          precision=c.precision)
        trainer._record({"step": trainer.step, "check_accuracy": result["eval_accuracy"],
                         "check_loss": result["eval_loss"]}, "check")
        if result["eval_accuracy"] >= self.target and trainer.eval_data is not None:
            trainer.run_eval()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device; use device='cpu'")
    return torch.device(device)


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norm weights, the residual weight (docs/equations.md §2) and embeddings are not decayed."""
    return param.ndim < 2 or name.endswith("residual_weight") or name.startswith("embeddings.")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, keep = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (keep if no_weight_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": keep, "weight_decay": 0.0, "name": "no_decay"}]


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None


def _autocast(precision: str, device: torch.device):
    dtype = _autocast_dtype(precision, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _named_sets(data) -> dict:
    """One example set, a list of MQARSplits (named by their (L, p)) or a dict name → set."""
    if data is None:
        return {}
    if isinstance(data, dict):
        return data
    if isinstance(data, (list, tuple)):
        return {d.name: d for d in data}
    return {"": data}


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, *, batch_size: int = 64, device=None, precision: str = "auto") -> dict:
    """Loss and perplexity (token-weighted) of every example set, and the per-example metrics a set
    defines (``examples.metrics(logits, labels) -> {name: [N]}``: MQAR's accuracy).

    Keys: ``eval_loss``, ``eval_ppl``, ``eval_NAME`` (e.g. ``eval_accuracy``) over everything, and
    ``eval_loss/SET``, ``eval_NAME/SET`` per named set (per (L, p) slice for a list of MQAR splits).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    sets = _named_sets(data)
    out, loss_sum, tokens, per_example = {}, 0.0, 0, {}
    for name, examples in sets.items():
        set_loss, set_tokens, set_metrics = 0.0, 0, {}
        metrics = getattr(examples, "metrics", None)   # what this kind of data measures besides the loss
        for start in range(0, len(examples), batch_size):
            x, y = examples[torch.arange(start, min(start + batch_size, len(examples)))]
            x, y = x.to(device), y.to(device)
            with _autocast(precision, device):
                logits = model(x).logits.float()
            set_loss += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum"))
            set_tokens += int((y != IGNORE).sum())
            for metric, values in (metrics(logits, y) if metrics else {}).items():
                set_metrics.setdefault(metric, []).append(values.cpu())
        if name and len(sets) > 1:
            out[f"eval_loss/{name}"] = set_loss / max(set_tokens, 1)
            out.update({f"eval_{metric}/{name}": float(torch.cat(v).nanmean()) for metric, v in set_metrics.items()})
        loss_sum, tokens = loss_sum + set_loss, tokens + set_tokens
        for metric, values in set_metrics.items():
            per_example.setdefault(metric, []).extend(values)
    if tokens == 0:
        raise ValueError("evaluate: the evaluation data hold no labelled tokens")
    out["eval_loss"] = loss_sum / tokens
    out["eval_ppl"] = math.exp(min(out["eval_loss"], 50.0))
    out.update({f"eval_{metric}": float(torch.cat(v).nanmean()) for metric, v in per_example.items()})
    model.train(was_training)
    return out


class Trainer:
    """AdamW (no-decay groups) + warmup/cosine + clipping + accumulation + eval + checkpoints.

        trainer = Trainer(model, train_split, test_split, TrainConfig(max_steps=500, out_dir="runs/x"))
        history = trainer.fit()          # list of metric dicts (train steps and evals)
        trainer.resume()                 # from the latest checkpoint in out_dir, then fit() again

    ``meta`` is stored with every checkpoint and in ``config.json`` (the CLI puts the data recipe
    there, so ``rodimus-lab eval`` can rebuild the test set).
    """

    def __init__(self, model: torch.nn.Module, train_data, eval_data=None, config: TrainConfig | None = None,
                 callbacks=(), *, meta: dict | None = None, rank: int | None = None,
                 world_size: int | None = None):
        if len(train_data) == 0:
            raise ValueError("train_data is empty")
        self.config = config if config is not None else TrainConfig()
        if world_size is None:   # under torchrun: join its process group; a plain process: rank 0 of 1
            info = distributed.setup(self.config.device)
            rank, world_size = info.rank, info.world_size
        distributed.check_global_batch(self.config.batch_size, self.config.grad_accum, world_size)
        self.device = resolve_device(self.config.device)
        self.step_choice = choose_step(self.config.cuda_graphs, self.device, world_size)
        self.model = model.to(self.device)
        self.ddp_model = distributed.wrap_model(self.model, self.device)   # what train_step runs
        self.train_data, self.eval_data = train_data, eval_data
        self.callbacks = list(callbacks)
        self.meta = meta or {}
        self.rank, self.world_size = rank or 0, world_size
        c = self.config
        graphed = dict(fused=True, capturable=True) if self.step_choice.graphed else {}
        self.optimizer = torch.optim.AdamW(param_groups(self.model, c.weight_decay), lr=c.lr,
                                           betas=(c.beta1, c.beta2), **graphed)
        # before any resume(): it keeps the optimizer capturable when a checkpoint's state is loaded into it
        self.graphed_step = None if not self.step_choice.graphed else GraphedStep(
            self.model, self.optimizer, grad_clip=c.grad_clip, autocast_dtype=_autocast_dtype(c.precision, self.device))
        # a model that can check ids (RodimusLM.check_ids) skips that check on the device (graphed.lm_loss), a
        # wait for it: the trainer checks the batch on the host instead
        self._checks_ids = hasattr(self.model, "check_ids")
        self._unread: list[dict] = []   # metrics of steps whose loss and grad norm are still device tensors
        self.step = 0
        self.history: list[dict] = []
        self.should_stop = False
        self._perm_epoch, self._perm = -1, None
        self._writes_out_dir = False   # True once this trainer started or resumed the run in out_dir

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def out_dir(self) -> Path | None:
        return Path(self.config.out_dir) if self.config.out_dir else None

    # ------------------------------------------------------------------ data order
    def batch_indices(self, step: int) -> torch.Tensor:
        """This rank's example indices for ``step``: consecutive slices of per-epoch permutations."""
        n, bs = len(self.train_data), self.config.batch_size
        positions = torch.arange(step * bs, (step + 1) * bs)
        out = torch.empty(bs, dtype=torch.long)
        for epoch in positions.div(n, rounding_mode="floor").unique().tolist():
            mask = positions // n == epoch
            out[mask] = self._permutation(epoch)[positions[mask] % n]
        return out[self.rank::self.world_size]

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._perm_epoch, self._perm = epoch, torch.randperm(len(self.train_data), generator=g)
        return self._perm

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict:
        """One optimizer step; its metrics, read (the host waits for the device)."""
        return self._read([self._queue_step()])[0]

    def _queue_step(self) -> dict:
        """One optimizer step, issued without waiting for the device: its metrics hold the micro-batches'
        losses and the gradient norm as device tensors until :meth:`_read`."""
        c = self.config
        self.model.train()
        lr = c.lr_at(self.step)
        micros = [self._batch(micro) for micro in self.batch_indices(self.step).chunk(c.grad_accum)]
        replayed = self._replay(micros, lr) if self.graphed_step is not None else None
        if replayed is not None:
            losses, grad_norm = replayed
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            losses, grad_norm = training_step(self.ddp_model, self.optimizer,
                                              [(self._to_device(x), self._to_device(y)) for x, y in micros],
                                              grad_clip=c.grad_clip,
                                              autocast_dtype=_autocast_dtype(c.precision, self.device))
        self.step += 1
        return {"step": self.step, "loss": losses, "lr": lr, "grad_norm": grad_norm}

    def _replay(self, micros, lr: float):
        """The step as a CUDA graph: (losses, grad norm), or None when it cannot be captured under
        ``cuda_graphs = "auto"`` (nothing of it has run: the caller runs it eagerly, as every later step)."""
        self.graphed_step.set_lr(lr)
        try:
            return self.graphed_step(micros)
        except NotCapturable as e:
            if self.config.cuda_graphs is True:
                raise
            self.graphed_step = None
            self.step_choice = StepChoice(False, f"train.cuda_graphs = auto, but step {self.step + 1} could not "
                                                 "run as a CUDA graph")
            warnings.warn(f"train.cuda_graphs = auto: the training step runs eagerly from step {self.step + 1} on, "
                          f"because {str(e).rstrip('.')}. To train eagerly from the start, without this warning, "
                          "set train.cuda_graphs = false.", RuntimeWarning, stacklevel=2)
            return None

    def _batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at ``indices``, their ids checked where they are (on the host for the usual CPU data)."""
        x, y = self.train_data[indices]
        if self._checks_ids:
            self.model.check_ids(x)
        return x, y

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """t on the training device; a CPU batch goes to a GPU from page-locked memory, without waiting."""
        if self.device.type == "cuda" and t.device.type == "cpu":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _read(self, steps: list[dict]) -> list[dict]:
        """Each step's loss (the mean over its micro-batches and ranks) and gradient norm as numbers, in
        place: one transfer from the device for all of them."""
        sizes = [m["loss"].numel() for m in steps]
        values = torch.cat([torch.cat([m["loss"].double().flatten(), m["grad_norm"].double().reshape(1)])
                            for m in steps]).tolist()
        start = 0
        for m, n in zip(steps, sizes):
            loss_total = 0.0
            for v in values[start:start + n]:   # summed on the host as the logged loss always was
                loss_total += v / self.config.grad_accum
            m["loss"] = distributed.all_reduce_mean(loss_total, self.device)
            m["grad_norm"] = values[start + n]
            start += n + 1
        return steps

    # ------------------------------------------------------------------ loop
    def fit(self) -> list[dict]:
        """Train to ``max_steps`` (or until ``should_stop``); returns the metrics history."""
        for _ in self.iter_steps():
            pass
        return self.history

    def iter_steps(self):
        """``fit`` one optimizer step at a time: a generator that yields each step's metrics (after that
        step's evaluation and checkpoint), so a caller — a widget on the notebook's event loop — can hand
        control back between steps. Its return value (``StopIteration.value``) is the final summary that
        ``on_end`` receives. A NaN or infinite loss raises :class:`TrainingDiverged`. With
        ``log_every`` > 1 a step's yielded metrics hold its loss and grad norm as device tensors until its
        read turns them into numbers (in the same dict)."""
        c = self.config
        self._claim_out_dir()
        self._write_run_config()
        if c.progress and self.is_main:
            print(self.step_choice, file=sys.stderr, flush=True)
        start_time = time.perf_counter()
        bar = tqdm(total=c.max_steps, initial=self.step, desc="train", disable=not (c.progress and self.is_main),
                   dynamic_ncols=True)
        last_eval = None
        postfix = {}
        try:
            while self.step < c.max_steps and not self.should_stop:
                metrics = self._queue_step()
                self._unread.append(metrics)
                evaluating = c.eval_every and self.step % c.eval_every == 0 and self.eval_data is not None
                checkpointing = c.checkpoint_every and self.step % c.checkpoint_every == 0
                if self.step % c.log_every == 0 or evaluating or checkpointing or self.step >= c.max_steps:
                    postfix["loss"] = f"{self._log_unread(start_time):.3f}"
                if evaluating:
                    last_eval = self.run_eval()
                if last_eval and "eval_accuracy" in last_eval:
                    postfix["acc"] = f"{last_eval['eval_accuracy']:.3f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
                if checkpointing:
                    self.save_checkpoint()
                yield metrics
            if self._unread:   # stopped from outside between reads (should_stop set by the caller)
                self._log_unread(start_time)
        finally:
            bar.close()
        last_eval = next((r for r in reversed(self.history) if r["kind"] == "eval"), None)   # also a callback's
        if self.eval_data is not None and (last_eval is None or last_eval["step"] != self.step):
            last_eval = self.run_eval()
        if self.out_dir is not None and not (c.checkpoint_every and self.step % c.checkpoint_every == 0):
            self.save_checkpoint()
        summary = {"step": self.step, "time": time.perf_counter() - start_time, **(last_eval or {})}
        summary.pop("kind", None)
        for cb in self.callbacks:
            cb.on_end(summary, self)
        return summary

    def _log_unread(self, start_time: float) -> float:
        """Read the steps not read yet; log each (metrics file, callbacks), then stop at a NaN or infinite
        loss. Returns the last step's loss."""
        steps, self._unread = self._read(self._unread), []
        now = time.perf_counter() - start_time
        for metrics in steps:
            metrics["time"] = now
            self._record(metrics, "train")
            for cb in self.callbacks:
                cb.on_step(metrics, self)
            if not math.isfinite(metrics["loss"]):
                raise TrainingDiverged(f"The loss became {metrics['loss']} at step {metrics['step']}.")
        return steps[-1]["loss"]

    def run_eval(self) -> dict:
        c = self.config
        metrics = {"step": self.step, **evaluate(self.model, self.eval_data, batch_size=c.eval_batch_size,
                                                 device=self.device, precision=c.precision)}
        self._record(metrics, "eval")
        for cb in self.callbacks:
            cb.on_eval(metrics, self)
        if c.stop_at_accuracy is not None and metrics.get("eval_accuracy", 0.0) >= c.stop_at_accuracy:
            self.should_stop = True
        return metrics

    # ------------------------------------------------------------------ files
    def _record(self, metrics: dict, kind: str) -> None:
        metrics["kind"] = kind
        self.history.append(metrics)
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")

    def _claim_out_dir(self) -> None:
        """A new run refuses a folder that holds another run (its own, after ``resume()``, is fine)."""
        if self.out_dir is None or self._writes_out_dir or not self.is_main:
            return
        found = run_files(self.out_dir)
        if found:
            raise RunFolderError(
                f"{self.out_dir} already holds a run ({', '.join(p.name for p in found)}): continue it with "
                "trainer.resume(), delete it with rodimus_lab.train.clear_run_folder(), or choose another out_dir")
        self._writes_out_dir = True

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint of this run (None: none written yet)."""
        return latest_checkpoint(self.out_dir / "checkpoints") if self.out_dir is not None else None

    def run_config(self) -> dict:
        """The resolved configuration of this run (written to ``out_dir/config.json``)."""
        return {"model": self.model.config.to_dict(), "train": self.config.to_dict(), **self.meta}

    def _write_run_config(self) -> None:
        if self.out_dir is None or not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out_dir / "config.json", json.dumps(self.run_config(), indent=2))

    def save_checkpoint(self) -> Path | None:
        if self.out_dir is None:
            raise ValueError("save_checkpoint needs TrainConfig.out_dir")
        path = None
        if self.is_main:
            path = save_checkpoint(self.out_dir / "checkpoints", model=self.model, step=self.step,
                                   optimizer=self.optimizer, train_config=self.config.to_dict(), extra=self.meta,
                                   keep_last=self.config.keep_last)
        distributed.barrier()   # every rank returns once the checkpoint is on disk
        return path

    def resume(self, path: str | os.PathLike | None = None) -> dict:
        """Load weights, optimizer, step and RNG states from ``path`` (default: the latest checkpoint
        in ``out_dir``); the metrics log is cut back to that step, less a last line the kill cut short,
        so it reads like one run."""
        in_place = path is None
        if in_place:
            if self.out_dir is None:
                raise ValueError("resume() without a path needs TrainConfig.out_dir")
            path = self.out_dir
        path = resolve_checkpoint(path)
        meta = load_checkpoint(path, self.model, self.optimizer, restore_rng=True)
        self.step = meta["step"]
        self.should_stop = False
        self._writes_out_dir = self._writes_out_dir or in_place   # continuing the run of out_dir in place
        log = self.out_dir / "metrics.jsonl" if self.out_dir is not None else None
        if log is not None and log.exists():
            kept = [r for r in read_jsonl(log) if r["step"] <= self.step]
            self.history = kept
            if self.is_main:
                atomic_write(log, "".join(json.dumps(r) + "\n" for r in kept))
        return meta

