"""Training runs as the widgets and sweeps drive them: seeded step-by-step fits, results cached by
config hash. No UI here (``rodimus_lab.widgets`` draws them).

A run is fully described by (data recipe, model config, train config) — a
:class:`~rodimus_lab.data.recipe.DataConfig`, a ModelConfig and a TrainConfig; their hash names it,
so a finished variant is looked up instead of trained again, in memory and optionally on disk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import seed_everything
from .config import ModelConfig
from .data.mqar import mqar_preset
from .data.recipe import DataConfig, build_data
from .files import atomic_write
from .memory import cache_bytes
from .model import RodimusLM
from .train import HOW_IT_RUNS, Callback, TrainConfig, Trainer

__all__ = ["ExampleSlice", "RunResult", "RunCache", "run_key", "train_run"]

# Fields that change how a run executes or what it keeps on disk, not what it computes.
_NOT_HASHED = HOW_IT_RUNS | {"checkpoint_every", "keep_last"}


class ExampleSlice:
    """The first ``n`` examples of an example set: a laptop-sized slice of WikiText."""

    def __init__(self, examples, n: int):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of examples must be an int ≥ 1, got {n!r}")
        self.examples, self.n = examples, min(n, len(examples))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        return self.examples[index]


def run_key(data: DataConfig, model_config: ModelConfig, train_config: TrainConfig) -> str:
    """A short hash of everything that decides a run's numbers."""
    train = {k: v for k, v in train_config.to_dict().items() if k not in _NOT_HASHED}
    data = {k: v for k, v in data.to_dict().items() if k != "data_dir"}
    blob = json.dumps({"data": data, "model": model_config.to_dict(), "train": train}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class RunResult:
    name: str
    key: str
    data: dict                  # DataConfig.to_dict()
    model: dict                 # ModelConfig.to_dict()
    train: dict                 # TrainConfig.to_dict()
    status: str                 # "done" | "stopped" | "diverged"
    history: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    cached: bool = False
    trained: RodimusLM | None = field(default=None, repr=False, compare=False)   # in memory only

    def row(self) -> dict:
        """One line of the results table."""
        m = self.model
        attention = m["block"] != "rodimus"
        d = self.data
        if d.get("task") != "mqar":
            task = f"text {d.get('source')}"
        elif d.get("seq_len") or d.get("num_kv_pairs"):   # a preset with its length / pairs overridden
            preset = mqar_preset(d["preset"], **{k: d[k] for k in ("seq_len", "num_kv_pairs") if d.get(k)})
            task = f"MQAR L={preset.seq_len} p={preset.num_kv_pairs}"
        else:
            task = f"MQAR {d['preset']}"
        return {
            "variant": self.name, "task": task, "block": m["block"], "gate": m["gate"] if m["block"] != "transformer" else "—",
            "n": m["mem_size"], "short_conv": m["short_conv"], "key_norm": m["key_norm"],
            "layout": (m["attn_layout"] or ("ska" if m["block"] == "rodimus_plus" else "mha")) if attention else "—",
            "window": (m["window"] or "all") if attention else "—",
            "two_hop": m["two_hop"] if m["block"] == "rodimus_plus" else "—",
            "steps": self.final.get("step"), "eval_loss": _round(self.final.get("eval_loss")),
            "eval_accuracy": _round(self.final.get("eval_accuracy")), "params": self.final.get("params"),
            "state_bytes": self.final.get("state_bytes"), "seconds": _round(self.final.get("time"), 1),
            "status": self.status + (" (cached)" if self.cached else ""), "key": self.key,
        }

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "key", "data", "model", "train", "status", "history", "final")}


def _round(x, digits=4):
    return None if x is None else round(float(x), digits)


class RunCache:
    """Finished runs by key, in memory and (with ``directory``) as ``<key>.json`` files."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else None
        self._runs: dict[str, RunResult] = {}

    def get(self, key: str) -> RunResult | None:
        if key not in self._runs and self.directory is not None and (self.directory / f"{key}.json").is_file():
            self._runs[key] = RunResult(**json.loads((self.directory / f"{key}.json").read_text()))
        return self._runs.get(key)

    def put(self, result: RunResult) -> None:
        if result.status != "done":
            return   # a stopped or diverged run is not the answer for its config
        self._runs[result.key] = result
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(self.directory / f"{result.key}.json", json.dumps(result.to_json()))

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return len(self._runs)


def train_run(name: str, data_config: DataConfig, model_config: ModelConfig, train_config: TrainConfig,
              callbacks: list[Callback] = (), data=None, should_stop=lambda: False):
    """Generator: build a seeded model, train it step by step, and finally return a RunResult
    (``StopIteration.value``; use ``result = yield from train_run(...)``).

    ``data``: (train, eval) example sets already built from ``data_config`` (default: built here).
    ``should_stop()`` is asked after every step; when it says yes the run ends after that step
    with status "stopped". A NaN loss raises TrainingDiverged.
    """
    key = run_key(data_config, model_config, train_config)
    train, test = data if data is not None else build_data(data_config)[:2]
    seed_everything(train_config.seed)
    model = RodimusLM(model_config)
    trainer = Trainer(model, train, test, train_config, callbacks=list(callbacks))
    steps = trainer.iter_steps()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            summary = done.value
            break
        if should_stop():
            trainer.should_stop = True
        yield trainer
    status = "stopped" if trainer.step < train_config.max_steps else "done"
    seq_len = train[torch.arange(1)][0].shape[1]
    summary.update(params=model.num_parameters(), state_bytes=cache_bytes(model_config, seq_len))
    return RunResult(name=name, key=key, data=data_config.to_dict(), model=model_config.to_dict(),
                     train=train_config.to_dict(), status=status, history=trainer.history, final=summary,
                     trained=model)
