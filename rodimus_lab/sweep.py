"""Sweeps: train every point of a declarative grid, one JSONL line per finished point, the figure from that file.

    rodimus-lab sweep experiments/mqar_state_size.yaml --device cuda          # run (or resume) every point
    rodimus-lab sweep experiments/mqar_state_size.yaml --only Rodimus 'rodimus_plus--*'   # a named subset
    rodimus-lab sweep experiments/mqar_state_size.yaml --list                 # which points are done
    rodimus-lab sweep experiments/mqar_state_size.yaml --render               # the figure from results only
    rodimus-lab sweep experiments/mqar_state_size.yaml --curves --only Rodimus   # learning curves of the points

A spec (YAML or JSON) names the sections of a run config (``model``, ``train``, ``data``, as in
``rodimus-lab train --config``) and how they vary::

    name: mqar_state_size
    base:  {model: {n_layers: 2}, train: {max_steps: 2000}, data: {task: mqar, preset: L256_p64}}
    grid:  {model.mem_size: [16, 32, 64], train.lr: [0.001, 0.003]}      # the cross product
    families:                                                             # one line of the figure each
      Rodimus: {model: {block: rodimus}}
      Transformer++: {model: {block: transformer}, grid: {model.mem_size: null}}   # null: no such axis
    figure: {x: n, y: eval_accuracy, paper: FIG1B_MQAR_VS_STATE_SIZE}

A point is a family with one value of each grid axis; its name reads ``rodimus--mem_size=16--lr=0.001``.
Each is trained by the ``Trainer`` in its own folder (``<runs>/<point>``) and recorded, once finished, as
one line of ``<out>/results.jsonl``: config, metrics (the best evaluation of the run — the paper reports the
best — and the last), recurrent-state memory, git commit, versions, seed, device and wall time.

Resuming: a point with a line is skipped (its config must not have changed: that is an error, use another
``--out``); a point without a line restarts from its folder's last checkpoint when that checkpoint belongs
to the same config, else from scratch. Where and how a run executes (``train.HOW_IT_RUNS``: device,
progress bars, log_every, cuda_graphs; and data.data_dir) may differ between calls. So a sweep killed at
any moment — also half-way through a point — continues with ``rodimus-lab sweep SPEC`` again.
``--budget SECONDS`` ends a sweep in time: the running point stops at the budget with a checkpoint (it
resumes next time) and no point starts after it.

``--workers N`` trains N points at a time, each in its own process on the same device: the small models of
these sweeps leave a GPU mostly idle while one process launches kernels, so N processes finish sooner. The
workers share the results file (appends are locked) and split the CPU threads between them.

``--curves`` prints each selected point's learning curve from its run folder (``metrics.jsonl``): a row per
evaluation, ``--curve-every STEPS`` adds one every STEPS steps. The best evaluation alone cannot tell "slow
to learn" from "cannot learn"; the curve can. A probe of a few variants is a sweep into a scratch folder,
then its curves (``--set`` changes every selected point; a variant outside the grid is another ``--out``)::

    rodimus-lab sweep experiments/mqar_state_size.yaml --out /tmp/probe_w256 --only Rodimus+ \\
        --set model.window=256 --device cuda --workers 4 --budget 450 --no-figure
    rodimus-lab sweep experiments/mqar_state_size.yaml --out /tmp/probe_w256 --only Rodimus+ --curves
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import fnmatch
import importlib.metadata
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import RodimusLM, __version__, seed_everything
from . import paper as paper_points
from .checkpoint import CheckpointError, latest_checkpoint
from .run_config import flag_value, resolve_configs
from .config import ModelConfig
from .data.recipe import DataConfig, build_data, data_vocab_size
from .files import read_jsonl
from .memory import cache_bytes, cache_elements
from .train import HOW_IT_RUNS, Callback, Trainer, TrainConfig

__all__ = ["SweepSpec", "Point", "load_spec", "run_sweep", "read_results", "figure_series", "render", "point_status",
           "learning_curve", "print_curves"]

SPEC_KEYS = {"name", "description", "base", "grid", "families", "figure"}
SECTIONS = ("model", "train", "data")
FIGURE_X = {"n": "state size n (log)", "state_mb": "recurrent-state memory (MB, 2 bytes per element; log)"}
FIGURE_Y = {"eval_accuracy": ("MQAR accuracy (best evaluation)", max),
            "eval_ppl": ("validation perplexity (best evaluation)", min),
            "eval_loss": ("validation loss (best evaluation)", min)}
RESULTS = "results.jsonl"


# ------------------------------------------------------------------------------------------ spec

@dataclass
class Point:
    """One run of a sweep: a family with one value per grid axis."""
    name: str
    family: str
    values: dict                  # {"model.mem_size": 16, "train.lr": 0.001}
    sections: dict                # {"model": {...}, "train": {...}, "data": {...}}, before defaults


@dataclass
class SweepSpec:
    name: str
    families: dict
    base: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    figure: dict = field(default_factory=dict)
    description: str = ""
    path: str | None = None

    def points(self, overrides: dict | None = None) -> list[Point]:
        """Every point, families in spec order, grid axes varying last-fastest; ``overrides``
        (``{"data.source": "..."}``) are applied to every point after the grid."""
        out = []
        for family, spec in self.families.items():
            grid = {**self.grid, **spec.get("grid", {})}
            axes = [(k, v) for k, v in grid.items() if v is not None]
            for combo in itertools.product(*(values for _, values in axes)):
                values = dict(zip((k for k, _ in axes), combo))
                sections = copy.deepcopy({s: self.base.get(s, {}) for s in SECTIONS})
                for s in SECTIONS:
                    sections[s].update(copy.deepcopy(spec.get(s, {})))
                for key, value in {**values, **(overrides or {})}.items():
                    section, name = key.split(".", 1)
                    sections[section][name] = value
                label = "--".join([_slug(family)] + [f"{k.split('.', 1)[1]}={_fmt(v)}" for k, v in values.items()])
                out.append(Point(label, family, values, sections))
        return out

    def select(self, only=None, overrides=None) -> list[Point]:
        """The points whose family or name matches one of ``only`` (fnmatch patterns); all when empty."""
        points = self.points(overrides)
        if not only:
            return points
        chosen = [p for p in points if any(p.family == pat or fnmatch.fnmatchcase(p.name, pat) for pat in only)]
        if not chosen:
            raise ValueError(f"--only {' '.join(only)} matches no point of sweep {self.name!r}; families: "
                             f"{list(self.families)}; point names look like {points[0].name!r}")
        return chosen


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower().replace("+", "_plus")).strip("_")


def _fmt(value) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def _check_key(key, where: str) -> None:
    if not isinstance(key, str) or key.split(".", 1)[0] not in SECTIONS or "." not in key:
        raise ValueError(f"{where}: {key!r} is not a field path; write SECTION.FIELD with SECTION one of "
                         f"{SECTIONS}, e.g. 'model.mem_size'")


def _check_sections(d, where: str) -> None:
    if not isinstance(d, dict) or set(d) - set(SECTIONS):
        raise ValueError(f"{where} must be a mapping with the sections {SECTIONS}, got {d!r}")


def spec_from_dict(d: dict, path: str | None = None) -> SweepSpec:
    where = f"sweep spec {path}" if path else "sweep spec"
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a mapping with the keys {sorted(SPEC_KEYS)}")
    unknown = sorted(set(d) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(SPEC_KEYS)}")
    if not isinstance(d.get("name"), str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", d["name"]):
        raise ValueError(f"{where}: 'name' must be a word of letters, digits, '_', '-' or '.' (it names the "
                         f"output folder), got {d.get('name')!r}")
    families = d.get("families")
    if not isinstance(families, dict) or not families:
        raise ValueError(f"{where}: 'families' must map each family's label to its sections, e.g. "
                         "{Rodimus: {model: {block: rodimus}}}")
    _check_sections(d.get("base", {}), f"{where}: base")
    grid = d.get("grid", {})
    for key, values in grid.items():
        _check_key(key, f"{where}: grid")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: grid[{key!r}] must be a non-empty list of values, got {values!r}")
    families = {family: spec or {} for family, spec in families.items()}   # a bare label: no sections of its own
    for family, spec in families.items():
        extra = set(spec) - set(SECTIONS) - {"grid"}
        if extra:
            raise ValueError(f"{where}: family {family!r} has unknown key(s) {sorted(extra)}; "
                             f"known: {list(SECTIONS) + ['grid']}")
        for key, values in spec.get("grid", {}).items():
            _check_key(key, f"{where}: family {family!r} grid")
            if values is not None and (not isinstance(values, list) or not values):
                raise ValueError(f"{where}: family {family!r} grid[{key!r}] must be a list of values or null")
    figure = d.get("figure", {})
    if figure:
        if figure.get("x") not in FIGURE_X:
            raise ValueError(f"{where}: figure.x must be one of {sorted(FIGURE_X)}, got {figure.get('x')!r}")
        if figure.get("y") not in FIGURE_Y:
            raise ValueError(f"{where}: figure.y must be one of {sorted(FIGURE_Y)}, got {figure.get('y')!r}")
        paper = figure.get("paper")
        if paper is not None:
            if paper not in paper_points.__all__:
                raise ValueError(f"{where}: figure.paper {paper!r} is not one of {paper_points.__all__}")
    spec = SweepSpec(name=d["name"], families=families, base=d.get("base", {}), grid=grid, figure=figure,
                     description=d.get("description", ""), path=path)
    names = [p.name for p in spec.points()]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: two points share a name (two families with the same label once "
                         "lower-cased?): give the families distinct labels")
    return spec


def load_spec(path: str | os.PathLike) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"sweep spec {path} does not exist (the shipped ones are in experiments/)")
    if p.suffix in (".yaml", ".yml"):
        import yaml
        loaded = yaml.safe_load(p.read_text())
    else:
        loaded = json.loads(p.read_text())
    return spec_from_dict(loaded, str(path))


# ------------------------------------------------------------------------------------------ provenance

def git_state() -> dict:
    """The commit of the checkout this package runs from and whether tracked files differ from it.

    ``$RODIMUS_LAB_COMMIT``, when set, names the commit instead: a tree copied to a remote machine has no
    git of its own, or sits inside another checkout whose HEAD is not what runs (a copy exported into an
    ignored folder of an older clone recorded that clone's commit)."""
    if os.environ.get("RODIMUS_LAB_COMMIT"):
        return {"commit": os.environ["RODIMUS_LAB_COMMIT"], "dirty": None}
    root = Path(__file__).resolve().parent.parent
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True).stdout.strip()
        if Path(top).resolve() != root:   # inside another repository: its HEAD is not this tree
            return {"commit": None, "dirty": None}
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "rodimus_lab": __version__}
    for package in ("numpy", "triton"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ------------------------------------------------------------------------------------------ results

def read_results(out_dir: str | os.PathLike) -> list[dict]:
    """The finished points of a sweep folder."""
    return read_jsonl(Path(out_dir) / RESULTS, missing_ok=True)


def _append(out_dir: Path, record: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS
    with open(out_dir / f".{RESULTS}.lock", "w") as lock:   # workers of one sweep append to the same file
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else ""
        if text and not text.endswith("\n"):   # a line cut off by a kill: drop it, that point was not finished
            text = text[:text.rfind("\n") + 1]
        tmp = path.with_name(f".{RESULTS}.tmp")
        tmp.write_text(text + json.dumps(record) + "\n")
        os.replace(tmp, path)


def _resolved(point: Point) -> tuple[dict, TrainConfig, DataConfig]:
    """The point's model fields (before the data set the vocabulary) and its train and data configs."""
    cfg = resolve_configs(point.sections)
    fields = dict(cfg["model_fields"])
    if "vocab_size" in fields:
        raise ValueError(f"point {point.name}: leave model.vocab_size out, the data decide it")
    return fields, cfg["train"], cfg["data"]


def _runs_dir(out_dir, runs_dir=None) -> Path:
    """The folder of the points' run folders: ``--runs``, else ``<out>/points``."""
    return Path(runs_dir) if runs_dir else Path(out_dir) / "points"


def point_status(spec: SweepSpec, out_dir, runs_dir=None, only=None, overrides=None) -> list[tuple[str, str]]:
    """(point name, "done" | "partial (step N)" | "todo") for each selected point."""
    done = {r["point"] for r in read_results(out_dir)}
    runs = _runs_dir(out_dir, runs_dir)
    status = []
    for p in spec.select(only, overrides):
        if p.name in done:
            status.append((p.name, "done"))
        elif (ckpt := latest_checkpoint(runs / p.name / "checkpoints")) is not None:
            status.append((p.name, f"partial ({ckpt.stem})"))
        else:
            status.append((p.name, "todo"))
    return status


class _Deadline(Callback):
    """Stops training once the wall clock passes ``deadline`` (time.monotonic())."""

    def __init__(self, deadline: float | None):
        self.deadline, self.hit = deadline, False

    def on_step(self, metrics, trainer):
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.hit = trainer.should_stop = True


def _best(evals: list[dict]) -> dict:
    """The best value of each evaluation metric over the run, and the step it was reached at."""
    best = {}
    for key, (_, pick) in FIGURE_Y.items():
        scored = [(r[key], r["step"]) for r in evals if key in r]
        if scored:
            value, step = pick(scored, key=lambda vs: (vs[0], -vs[1]) if pick is max else (vs[0], vs[1]))
            best[key], best[f"{key}_step"] = value, step
    return best


# fields that may differ between the calls of one sweep (where and how it runs, not what it trains)
_RUN_ONLY = {"train": HOW_IT_RUNS, "data": {"data_dir"}}


def _what_it_trains(config: dict) -> dict:
    """The sections of a run's config without the fields that may differ between the calls of a sweep
    (as JSON gives them back: tuples as lists)."""
    config = json.loads(json.dumps(config))
    return {s: {k: v for k, v in config.get(s, {}).items() if k not in _RUN_ONLY.get(s, ())} for s in SECTIONS}


def _same_run(run_dir: Path, trainer: Trainer) -> bool:
    """Does the folder hold a checkpoint of this point's config (another device or worker count is the
    same run: a sweep killed in one call continues in the next)?"""
    config = run_dir / "config.json"
    if latest_checkpoint(run_dir / "checkpoints") is None or not config.is_file():
        return False
    try:
        return _what_it_trains(json.loads(config.read_text())) == _what_it_trains(trainer.run_config())
    except json.JSONDecodeError:
        return False


def _check_unchanged(point: Point, record: dict, out_dir: Path) -> None:
    """A finished point whose config has changed since would mix two sweeps in one results file."""
    model_fields, train_cfg, data_cfg = _resolved(point)
    model_cfg = ModelConfig.from_dict({**model_fields, "vocab_size": record["config"]["model"]["vocab_size"]})
    now = _what_it_trains({"model": model_cfg.to_dict(), "train": train_cfg.to_dict(), "data": data_cfg.to_dict()})
    before = _what_it_trains(record["config"])
    changed = [f"{s}.{k}: {before[s].get(k)!r} → {v!r}" for s in SECTIONS for k, v in now[s].items()
               if before[s].get(k) != v]
    if changed:
        raise ValueError(f"{out_dir / RESULTS} holds point {point.name} trained with another config "
                         f"({'; '.join(changed)}): write to another --out, or delete that line to train it again")


def run_point(spec: SweepSpec, point: Point, run_dir: Path, *, data_cache: dict, device: str | None = None,
              deadline: float | None = None, progress: bool = True, say=print) -> dict | None:
    """Train one point (resuming its folder when it holds this config's checkpoint); its record, or
    None when the deadline stopped it first."""
    model_fields, train_cfg, data_cfg = _resolved(point)
    train_cfg.out_dir, train_cfg.progress = str(run_dir), progress and train_cfg.progress
    if device is not None:
        train_cfg.device = device
    key = json.dumps(data_cfg.to_dict(), sort_keys=True)
    if key not in data_cache:
        data_cache.clear()   # one data set in memory at a time (points are ordered by family, data mostly shared)
        data_cache[key] = build_data(data_cfg)
    train, test, tokenizer = data_cache[key]
    model_cfg = ModelConfig.from_dict({**model_fields, "vocab_size": data_vocab_size(data_cfg, tokenizer)})
    deadline_cb = _Deadline(deadline)
    meta = {"data": data_cfg.to_dict(), "sweep": {"name": spec.name, "point": point.name, "family": point.family}}

    def new_trainer() -> Trainer:   # seeded before the model is drawn: a point started again starts as a fresh one
        seed_everything(train_cfg.seed)
        return Trainer(RodimusLM(model_cfg), train, test, train_cfg, callbacks=[deadline_cb], meta=meta)

    trainer, resumed_from = new_trainer(), None
    if _same_run(run_dir, trainer):
        try:
            resumed_from = trainer.resume()["step"]
            say(f"  {point.name}: resumed at step {resumed_from}")
        except CheckpointError as e:   # a damaged checkpoint: start this point again
            say(f"  {point.name}: {e}; starting it again")
            shutil.rmtree(run_dir)
            trainer = new_trainer()
    elif run_dir.exists():
        shutil.rmtree(run_dir)   # another config's (or a checkpoint-less) folder: start clean
    start = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - start
    if deadline_cb.hit and trainer.step < train_cfg.max_steps:
        return None
    return _results_line(spec, point, trainer, model_cfg, data_cfg, (train, test), wall_s=wall,
                         resumed_from=resumed_from)


def _results_line(spec: SweepSpec, point: Point, trainer: Trainer, model_cfg: ModelConfig, data_cfg: DataConfig, data,
            *, wall_s: float, resumed_from: int | None) -> dict:
    """The results line of a finished point: its config, evaluations, state memory, data sizes, provenance."""
    (train, test), train_cfg = data, trainer.config
    evals = [{k: v for k, v in r.items() if k != "kind"} for r in trainer.history if r.get("kind") == "eval"]
    if not evals:
        raise ValueError(f"point {point.name}: the run has no evaluation; give the sweep evaluation data")
    context = train[torch.arange(1)][0].shape[1]
    state = cache_bytes(model_cfg, context, include_conv=False)
    sizes = {"train_examples": len(train), "eval_examples": len(test), "tokens_per_example": context,
             "train_tokens": len(train) * context, "eval_tokens": len(test) * context}
    return {
        "sweep": spec.name, "point": point.name, "family": point.family, "values": point.values,
        "config": {"model": model_cfg.to_dict(), "train": {**train_cfg.to_dict(), "out_dir": None},
                   "data": data_cfg.to_dict()},
        "parameters": trainer.model.num_parameters(), "data_size": sizes,
        "state": {"context_len": context, "elements": cache_elements(model_cfg, context, include_conv=False),
                  "bytes": state, "mb": state / 1e6, "bytes_per_element": 2, "conv_buffers": "excluded"},
        "best": _best(evals), "final": evals[-1], "steps": trainer.step,
        "wall_s": round(wall_s, 2), "resumed_from_step": resumed_from, "seed": train_cfg.seed,
        "device": _device_name(trainer.device), "git": git_state(), "versions": versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_sweep(spec: SweepSpec, out_dir: str | os.PathLike, *, only=None, overrides=None, runs_dir=None,
              device: str | None = None, budget_s: float | None = None, progress: bool = True,
              say=print) -> list[dict]:
    """Train every selected point not yet in ``<out_dir>/results.jsonl``; returns the records written now."""
    out_dir = Path(out_dir)
    runs = _runs_dir(out_dir, runs_dir)
    deadline = time.monotonic() + budget_s if budget_s is not None else None
    done = {r["point"]: r for r in read_results(out_dir)}
    points = spec.select(only, overrides)
    for p in points:
        if p.name in done:
            _check_unchanged(p, done[p.name], out_dir)
    todo = [p for p in points if p.name not in done]
    say(f"sweep {spec.name}: {len(points)} points selected, {len(points) - len(todo)} done, {len(todo)} to run; "
        f"results in {out_dir / RESULTS}")
    data_cache, written = {}, []
    for i, point in enumerate(todo):
        if deadline is not None and time.monotonic() > deadline:
            say(f"budget spent: {len(todo) - i} point(s) left; run the same command again to continue")
            break
        say(f"[{i + 1}/{len(todo)}] {point.name}")
        record = run_point(spec, point, runs / point.name, data_cache=data_cache, device=device,
                           deadline=deadline, progress=progress, say=say)
        if record is None:
            say(f"budget spent during {point.name} (checkpoint kept); run the same command again to continue")
            break
        _append(out_dir, record)
        written.append(record)
        best = ", ".join(f"{k} {v:.4g}" for k, v in record["best"].items() if not k.endswith("_step"))
        say(f"  done in {record['wall_s']:.0f} s: best {best}")
    return written


# ------------------------------------------------------------------------------------------ figure

def _x(record: dict, kind: str):
    """The figure's x of a record: the state size n (None for a model without a recurrent state, drawn as
    a horizontal reference line) or the state memory in MB."""
    if kind == "state_mb":
        return record["state"]["mb"]
    model = record["config"]["model"]
    return model["mem_size"] if model["block"] in ("rodimus", "rodimus_plus") else None


def figure_series(records: list[dict], figure: dict) -> tuple[dict, dict, list[dict]]:
    """({family: [(x, best y)]}, {family: best y of a reference without x}, table rows).

    Each (family, x) keeps its best point over the other grid axes (the learning-rate sweep): the
    largest accuracy, the smallest loss or perplexity.
    """
    y_key = figure["y"]
    pick = FIGURE_Y[y_key][1]
    best: dict[tuple, dict] = {}
    for r in records:
        if y_key not in r["best"]:
            continue
        key = (r["family"], _x(r, figure["x"]))
        if key not in best or pick(r["best"][y_key], best[key]["best"][y_key]) != best[key]["best"][y_key]:
            best[key] = r
    series, references, rows = {}, {}, []
    for (family, x), r in best.items():
        y = r["best"][y_key]
        if x is None:
            references[family] = y
        else:
            series.setdefault(family, []).append((x, y))
        rows.append({"family": family, "x": x, "n": r["config"]["model"]["mem_size"], y_key: y, "point": r["point"],
                     "lr": r["config"]["train"]["lr"],
                     "state_mb": r["state"]["mb"], "parameters": r["parameters"], "steps": r["steps"]})
    for points in series.values():
        points.sort()
    families = list(dict.fromkeys(r["family"] for r in records))   # workers finish points in any order
    rows.sort(key=lambda row: (families.index(row["family"]), row["n"] or 0))
    return series, references, rows


def _table(rows: list[dict], figure: dict) -> str:
    y_key = figure["y"]
    lines = [f"| family | n | state MB | best {y_key} | lr | parameters | steps | point |", "|---" * 8 + "|"]
    for r in rows:
        n = "—" if figure["x"] == "n" and r["x"] is None else r["n"]
        lines.append(f"| {r['family']} | {n} | {r['state_mb']:.3g} | {r[y_key]:.4g} | {r['lr']:g} | "
                     f"{r['parameters']:,} | {r['steps']} | `{r['point']}` |")
    return "\n".join(lines) + "\n"


def render(spec: SweepSpec, out_dir: str | os.PathLike, say=print) -> dict:
    """Draw the figure from ``<out_dir>/results.jsonl`` (ours) beside the paper's points: ``<name>.html``,
    ``<name>.png`` (when kaleido can export) and ``<name>.md`` (the table of the plotted points)."""
    from . import viz

    figure = spec.figure
    if not figure:
        raise ValueError(f"sweep spec {spec.path or spec.name} has no 'figure' section to render")
    out_dir = Path(out_dir)
    records = read_results(out_dir)
    if not records:
        raise ValueError(f"no results to render in {out_dir / RESULTS}: run the sweep first")
    series, references, rows = figure_series(records, figure)
    paper = getattr(paper_points, figure["paper"]) if figure.get("paper") else None
    fig = viz.compare_with_paper(series, paper, x_title=figure.get("x_title", FIGURE_X[figure["x"]]),
                                 y_title=figure.get("y_title", FIGURE_Y[figure["y"]][0]),
                                 title=figure.get("title", spec.name), side_by_side=figure.get("side_by_side", False))
    ours_panel = {"row": 1, "col": 1} if figure.get("side_by_side") and paper else {}
    for family, y in references.items():
        fig.add_hline(y=y, line_dash="dot", annotation_text=f"{family} (ours, no fixed state)",
                      annotation_position="bottom right", **ours_panel)
    paths = {"html": out_dir / f"{spec.name}.html", "md": out_dir / f"{spec.name}.md"}
    fig.write_html(paths["html"], include_plotlyjs="cdn")
    paths["md"].write_text(_table(rows, figure))
    try:
        fig.write_image(out_dir / f"{spec.name}.png", scale=1.5)
        paths["png"] = out_dir / f"{spec.name}.png"
    except Exception as e:   # kaleido missing, or no Chrome for it: the HTML and the table still stand
        say(f"PNG not written ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "pip install kaleido (and a Chrome/Chromium) to export it")
    for kind, path in paths.items():
        say(f"{kind}: {path}")
    return paths


# ------------------------------------------------------------------------------------------ learning curves

def learning_curve(rows: list[dict], every: int = 0) -> list[dict]:
    """A run's metrics log (the rows of ``metrics.jsonl``) as its learning curve: a row at each evaluation
    and, with ``every``, one every that many steps. Each row holds the step, the mean training loss over the
    steps logged since the row before (None if none were) and the evaluation's metrics at that step."""
    curve, losses = [], []
    for r in rows:
        if r.get("kind") == "train":
            losses.append(r["loss"])
            if not (every and r["step"] % every == 0):
                continue
        elif r.get("kind") != "eval":
            continue
        evaluation = {k: v for k, v in r.items() if k.startswith("eval_")}
        if curve and curve[-1]["step"] == r["step"]:   # the evaluation after its step's training row
            curve[-1].update(evaluation)
            continue
        curve.append({"step": r["step"], "train_loss": sum(losses) / len(losses) if losses else None, **evaluation})
        losses = []
    return curve


def _curve_table(curve: list[dict]) -> str:
    columns = ["step", "train_loss", *dict.fromkeys(k for row in curve for k in row if k.startswith("eval_"))]
    width = max(map(len, columns)) + 2

    def cell(value) -> str:
        text = "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        return text.rjust(width)

    return "\n".join("".join(row) for row in [[c.rjust(width) for c in columns]]
                     + [[cell(row.get(c)) for c in columns] for row in curve])


def print_curves(spec: SweepSpec, out_dir, *, runs_dir=None, only=None, overrides=None, every: int = 0,
                 say=print) -> dict:
    """Print the learning curve (:func:`learning_curve`) of each selected point from its run folder, finished
    or not; returns {point name: curve} of those that have one."""
    if every < 0:
        raise ValueError(f"--curve-every {every}: give a number of steps (0: a row per evaluation only)")
    runs, curves = _runs_dir(out_dir, runs_dir), {}
    for name, status in point_status(spec, out_dir, runs_dir, only, overrides):
        curve = learning_curve(read_jsonl(runs / name / "metrics.jsonl", missing_ok=True), every)
        if curve:
            curves[name] = curve
            say(f"{name} ({status}):\n{_curve_table(curve)}")
        else:
            say(f"{name} ({status}): no learning curve in {runs / name}")
    if not curves:
        raise ValueError(f"no learning curve in {runs}: train the points first")
    return curves


# ------------------------------------------------------------------------------------------ command

def add_arguments(p) -> None:
    """The flags of ``rodimus-lab sweep``."""
    p.add_argument("spec", help="a sweep spec (YAML or JSON), e.g. experiments/mqar_state_size.yaml")
    p.add_argument("--out", default=None, help="folder of results.jsonl and the figure (default runs/sweeps/NAME)")
    p.add_argument("--runs", default=None, help="folder of the points' run folders (default OUT/points)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only these families (their labels) or points (names or fnmatch patterns)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:i for every point (default: the spec's)")
    p.add_argument("--source", default=None, help="text points: read the text from this folder (= --set data.source=...)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a field in every point, e.g. --set train.max_steps=50 data.train_split=valid "
                        "(given twice, both lists apply)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds (the running point keeps a checkpoint and resumes next time)")
    reading = p.add_mutually_exclusive_group()   # the ways to look at a sweep instead of training it
    reading.add_argument("--list", action="store_true", help="list the points and which are done; train nothing")
    reading.add_argument("--render", action="store_true", help="draw the figure from OUT/results.jsonl; train nothing")
    reading.add_argument("--curves", action="store_true",
                   help="print each selected point's learning curve from its run folder (a row per evaluation, "
                        "finished or not); train nothing")
    p.add_argument("--curve-every", type=int, default=0, metavar="STEPS",
                   help="with --curves: a row every STEPS steps too (the mean training loss since the row before)")
    p.add_argument("--progress", type=json.loads, default=True, metavar="true|false", help="progress bars")
    p.add_argument("--figure", action=argparse.BooleanOptionalAction, default=True,
                   help="draw the figure from the results after training (--no-figure: skip it, e.g. on a "
                        "machine without plotly; --render draws it later)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="train N points at a time, each in its own process on the same device (small models "
                        "leave a GPU mostly idle: 4-6 finish a sweep several times sooner)")


def _overrides(args) -> dict:
    out = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: write SECTION.FIELD=VALUE, e.g. train.max_steps=50")
        _check_key(key, "--set")
        out[key] = flag_value(value)
    if args.source is not None:
        out["data.source"] = args.source
    return out


# Every flag of add_arguments is one of these two: a worker gets the first as its parent got them (what it
# trains, where, for how long); the second are the parent's (how the sweep is shared out, shown or drawn).
# A new flag joins one of them (tests/test_sweep.py checks that none is left out).
WORKER_FLAGS = ("runs", "device", "budget", "source", "set")
PARENT_FLAGS = ("spec", "out", "only", "list", "render", "curves", "curve_every", "progress", "figure", "workers")


def _worker_command(args, out: Path, names: list[str]) -> list[str]:
    """This sweep's command for one worker: the same spec and WORKER_FLAGS, its points."""
    cmd = [sys.executable, "-m", "rodimus_lab.cli", "sweep", args.spec, "--out", str(out), "--workers", "1",
           "--progress", "false", "--no-figure", "--only", *names]   # the figure: once, by the parent
    for dest in WORKER_FLAGS:
        value = getattr(args, dest)
        if value is not None and value != []:
            cmd += [f"--{dest}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return cmd


def run_workers(args, spec: SweepSpec, out: Path, overrides: dict) -> int:
    """Share the points still to train among ``args.workers`` processes (round robin, in spec order) and
    wait for them; their lines are printed as they come, each after its worker's number. The exit status
    is the worst of theirs."""
    todo = [name for name, status in point_status(spec, out, args.runs, args.only, overrides) if status != "done"]
    workers = min(args.workers, len(todo))
    if workers == 0:
        print(f"sweep {spec.name}: every selected point is done ({out / RESULTS})")
        return 0
    # the CPU threads split between the workers (unless OMP_NUM_THREADS says how many): each uses a few,
    # none spins on cores another needs
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers)), **os.environ}
    print(f"sweep {spec.name}: {len(todo)} points over {workers} worker processes; results in {out / RESULTS}")

    def relay(i: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            print(f"[worker {i}] {line}", end="", flush=True)

    procs, relays = [], []

    def stop(signum, frame):   # a `timeout` or `kill` reaches this process only: take the workers with it
        for proc in procs:
            proc.terminate()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for i in range(workers):
            proc = subprocess.Popen(_worker_command(args, out, todo[i::workers]), env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            procs.append(proc)
            relays.append(threading.Thread(target=relay, args=(i, proc), daemon=True))
            relays[-1].start()
        codes = [proc.wait() for proc in procs]
    finally:
        signal.signal(signal.SIGTERM, previous)
    for thread in relays:
        thread.join()
    return max(codes)


def main(args) -> int:
    spec = load_spec(args.spec)
    out = Path(args.out or Path("runs") / "sweeps" / spec.name)
    overrides = _overrides(args)
    if args.list:
        for name, status in point_status(spec, out, args.runs, args.only, overrides):
            print(f"{status:>24}  {name}")
        return 0
    if args.render:
        render(spec, out)
        return 0
    if args.curves:
        print_curves(spec, out, runs_dir=args.runs, only=args.only, overrides=overrides, every=args.curve_every)
        return 0
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: give 1 or more processes")
    code = 0
    if args.workers > 1:
        code = run_workers(args, spec, out, overrides)
    else:
        run_sweep(spec, out, only=args.only, overrides=overrides, runs_dir=args.runs, device=args.device,
                  budget_s=args.budget, progress=args.progress)
    if args.figure and spec.figure and read_results(out):
        try:
            render(spec, out)
        except ImportError as e:   # a bare GPU machine without plotly: render where it is installed
            print(f"figure not drawn ({e}); run `rodimus-lab sweep {args.spec} --render --out {out}` where plotly is")
    return code
