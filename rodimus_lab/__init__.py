"""rodimus-lab: learn, check and bend the Rodimus* architecture (ICLR 2025)."""

from __future__ import annotations

import random

import torch

from .config import GATES, ModelConfig
from .memory import cache_bytes, cache_elements
from .model import DecodeState, LMOutput, RodimusLM
from .official import config_from_official, load_official
from .pretrained import from_pretrained

__version__ = "0.1.0"

__all__ = [
    "GATES", "ModelConfig", "RodimusLM", "LMOutput", "DecodeState",
    "load_official", "config_from_official", "from_pretrained", "cache_bytes", "cache_elements", "seed_everything",
]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (if installed) and torch (CPU and CUDA) for a reproducible run."""
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    torch.manual_seed(seed)
