"""Benchmarks that a user runs (``rodimus-lab bench …``); the numbers go to docs/results/ and docs/benchmarks.md."""

import torch


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """RMS of a − b relative to the RMS of b (the reference), in float64: the error every bench reports."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
