"""Checkpoints: safetensors for tensors + JSON for everything else, written atomically.

One checkpoint is two files side by side::

    ckpt-000500.safetensors   model weights, optimizer moments, torch RNG states
    ckpt-000500.json          model config, train config, step, optimizer hyper-parameters,
                              Python/NumPy RNG states, and the sha256 of the .safetensors file

Each file is written to a temporary name and moved into place with ``os.replace`` (atomic on one
file system); the JSON goes last, so a checkpoint without its JSON never counts. Loading checks
the sha256, so a truncated or edited file raises ``CheckpointError`` and older checkpoints are
untouched. Only ``keep_last`` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .config import ModelConfig
from .files import atomic_write

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "resolve_checkpoint", "list_checkpoints",
           "latest_checkpoint", "rng_state", "set_rng_state"]

FORMAT = "rodimus-lab-checkpoint/1"
_NAME = re.compile(r"^ckpt-(\d+)\.json$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, damaged, or written for another model."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- RNG

def rng_state() -> tuple[dict, dict]:
    """(tensors, json) holding the torch (CPU, CUDA), NumPy and Python RNG states."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    return tensors, {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [py[0], list(py[1]), py[2]],
    }


def set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


# ------------------------------------------------------------------------ optimizer

def _split_optimizer(state_dict: dict) -> tuple[dict, dict]:
    """An optimizer state_dict → (tensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for idx, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# ------------------------------------------------------------------------- save/load

def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The JSON files of the checkpoints in ``directory``, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def save_checkpoint(directory: str | os.PathLike, *, model: torch.nn.Module, step: int,
                    optimizer: torch.optim.Optimizer | None = None, train_config: dict | None = None,
                    extra: dict | None = None, keep_last: int | None = None) -> Path:
    """Write ``ckpt-{step}.safetensors`` + ``.json`` into ``directory``; return the JSON path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # state_dict drops tied duplicates only by name; keep one copy of each shared storage.
    tensors, seen = {}, set()
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape)
        if key not in seen:
            seen.add(key)
            tensors[f"model.{name}"] = t.detach().cpu().contiguous()
    meta = {"format": FORMAT, "step": int(step), "model_config": model.config.to_dict(),
            "train_config": train_config or {}, "extra": extra or {}}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _split_optimizer(optimizer.state_dict())
        tensors.update({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()})
    rng_tensors, meta["rng"] = rng_state()
    tensors.update(rng_tensors)

    blob = save_safetensors(tensors)
    stem = f"ckpt-{step:06d}"
    meta["tensors_file"] = f"{stem}.safetensors"
    meta["sha256"] = _sha256(blob)
    atomic_write(directory / meta["tensors_file"], blob)
    atomic_write(directory / f"{stem}.json", json.dumps(meta, indent=1))
    if keep_last is not None:
        for old in list_checkpoints(directory)[:-keep_last]:
            old.unlink(missing_ok=True)
            old.with_suffix(".safetensors").unlink(missing_ok=True)
    return directory / f"{stem}.json"


def _not_a_checkpoint(path: Path) -> CheckpointError:
    return CheckpointError(f"{path} is not a rodimus-lab checkpoint: give a run folder or its "
                           "checkpoints/ckpt-NNNNNN.json file")


def _read_meta(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if not _NAME.match(path.name):   # README.md and the like: not damaged, just not a checkpoint
            raise _not_a_checkpoint(path) from None
        raise CheckpointError(f"checkpoint {path} is damaged (not valid JSON: {e}); "
                              f"use an earlier checkpoint from {path.parent}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _not_a_checkpoint(path)
    return meta


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint JSON path from a JSON path, its .safetensors twin, or a directory: a run folder
    (the latest of its ``checkpoints/``) or a folder of checkpoints (the latest)."""
    path = Path(path)
    if path.is_dir():
        here, run = latest_checkpoint(path), latest_checkpoint(path / "checkpoints")
        if here is not None and run is not None:
            raise CheckpointError(f"{path} holds checkpoints both in itself and in checkpoints/: give the "
                                  "checkpoint file you mean")
        if here is None and run is None:
            raise CheckpointError(f"no checkpoint (ckpt-*.json) in {path} or {path / 'checkpoints'}")
        return here or run
    if path.suffix == ".safetensors":
        return path.with_suffix(".json")
    return path


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, *, restore_rng: bool = False) -> dict:
    """Read and verify a checkpoint; load it into ``model`` / ``optimizer`` when given.

    Returns the JSON metadata plus ``"model_state"`` (the weights). Raises ``CheckpointError``
    when a file is missing, truncated or edited, or the model's config differs from the saved one.
    """
    path = resolve_checkpoint(path)
    meta = _read_meta(path)
    tensors_path = path.with_name(meta["tensors_file"])
    try:
        blob = tensors_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint tensors {tensors_path} are missing") from None
    if _sha256(blob) != meta["sha256"]:
        raise CheckpointError(
            f"checkpoint {tensors_path} is damaged (truncated or modified: its sha256 does not match "
            f"{path.name}); use an earlier checkpoint from {path.parent}")
    try:
        tensors = load_safetensors(blob)
    except SafetensorError as e:
        raise CheckpointError(f"checkpoint {tensors_path} cannot be read: {e}") from None

    if model is not None:
        _check_config(model.config, meta["model_config"], path)
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        # tied weights are stored once: a missing key is fine if it shares storage with a loaded one
        missing = [k for k in missing if not _is_tied(model, k)]
        if missing or unexpected:
            raise CheckpointError(f"checkpoint {path} does not fit the model: missing {missing}, unexpected {unexpected}")
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"checkpoint {path} holds no optimizer state (it cannot resume training)")
        optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
    if restore_rng:
        set_rng_state(tensors, meta["rng"])
    meta["model_state"] = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    meta["path"] = str(path)
    return meta


def _is_tied(model, name: str) -> bool:
    return name == "lm_head.weight" and getattr(model.config, "tie_embeddings", False)


def _check_config(config: ModelConfig, saved: dict, path: Path) -> None:
    current = config.to_dict()
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs model {current.get(k)!r}"
             for k in sorted(set(current) | set(saved)) if k != "backend" and saved.get(k) != current.get(k)]
    if diffs:
        raise CheckpointError(f"checkpoint {path} was written for another model config ({'; '.join(diffs)}); "
                              "build the model with ModelConfig.from_dict(meta['model_config']) or use `rodimus-lab eval` "
                              "which does so")
