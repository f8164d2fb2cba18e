"""Kernel tests run the Triton kernels themselves: on a machine without CUDA through Triton's
interpreter, which must be switched on before any kernel is decorated (rodimus_kernels imports its
Triton modules lazily, at the first call, so setting it here is early enough).

Shared by the kernel tests (``from conftest import rel_rms, gpu, interpreted``): the error measure and
the markers that pick CPU-interpreter or GPU runs.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run on the H200 with `pytest -m gpu`)")
interpreted = pytest.mark.skipif(
    not INTERPRET or CUDA, reason="CPU interpreter tests: need TRITON_INTERPRET=1 and no CUDA (the gpu tests cover CUDA)")


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative RMS error ‖a − b‖ / ‖b‖ in float64, with b the reference; ``a`` must be finite.

    Where the reference is exactly zero (e.g. dq, dk of attention over one key: a softmax over one key
    has no gradient) it divides by √numel, the norm of unit noise, so the check becomes an absolute RMS
    there and is never loosened elsewhere.
    """
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite values in the kernel's result"
    return ((a - b).norm() / (b.norm().item() or max(b.numel(), 1) ** 0.5)).item()
