"""A run's three configs (model fields, TrainConfig, DataConfig) from defaults, a base, a JSON/YAML file and
command-line values, in that order of precedence: what ``rodimus-lab train`` and ``rodimus-lab sweep``
both resolve.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .config import ModelConfig
from .data.recipe import DataConfig
from .train import TrainConfig

__all__ = ["SECTIONS", "flag_value", "read_config_file", "resolve_configs"]

SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}


def flag_value(text: str):
    """A flag value: JSON literals (numbers, true/false, null) as such, anything else as a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_config_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"config file {path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
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
        for section, values in read_config_file(file).items():
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
