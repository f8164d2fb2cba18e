"""What every op of ``rodimus_kernels`` decides the same way: where it runs, how its grid is cut, and
which ``tl.dot`` precision its products get.

Where an op runs:
    CUDA tensors                          the Triton kernels (``<op>_triton.py``)
    CPU tensors, TRITON_INTERPRET=1       the same Triton kernels through Triton's interpreter (how CI tests them)
    CPU tensors otherwise                 the op's plain PyTorch twin (``<op>_torch.py``); Triton is never imported
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

__all__ = ["use_triton", "triton_module", "cdiv", "sm_count", "dot_precision"]

# The interpreter has no SMs; a small count still makes the ops split their work the way a GPU would.
INTERPRETER_SMS = 2

# tl.dot's input_precision by policy, for (float32 inputs, 16-bit inputs). With 16-bit operands the dot
# is a native 16-bit product whatever the setting; "tf32" then matters only for float32 intermediates
# (e.g. an fp32 score block times fp32-cast values).
# No policy asks for "ieee": IEEE fp32 dots are FMA loops off the tensor cores, and Triton 3.6 took minutes
# to compile the DDTS backward's (make_llir, on an H200 host), whose kernels then spilled 8-20 KB per thread.
PRECISION_POLICIES = {
    # fp32 inputs get 3-pass tf32 (≈ fp32 on tensor cores); 16-bit inputs 1-pass tf32 for fp32 intermediates
    "tf32x3": ("tf32x3", "tf32"),
    # products whose sums cancel: ≈ fp32 for every input dtype
    "cancelling": ("tf32x3", "tf32x3"),
}


def use_triton(x: torch.Tensor) -> bool:
    """True when ``x`` goes to the Triton kernels (CUDA, or the interpreter switched on)."""
    return x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache   # every launch asks: a cache hit is ~10x cheaper than import_module's sys.modules lookup
def triton_module(name: str) -> ModuleType:
    """The module of Triton kernels ``rodimus_kernels.<name>``, imported on first use: ``triton.jit`` reads
    TRITON_INTERPRET when a kernel is decorated, so importing late lets tests switch it on first."""
    return importlib.import_module(f"{__package__}.{name}")


def cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ for non-negative ints: the number of b-sized blocks that cover a."""
    return -(-a // b)


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (``INTERPRETER_SMS`` off CUDA), for sizing split grids."""
    if device.type != "cuda":
        return INTERPRETER_SMS
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


def dot_precision(policy: str, dtype: torch.dtype) -> str:
    """``tl.dot``'s input_precision for inputs of ``dtype`` under the named policy (PRECISION_POLICIES)."""
    if policy not in PRECISION_POLICIES:
        raise ValueError(f"unknown precision policy {policy!r}; choose one of {sorted(PRECISION_POLICIES)}")
    fp32, half = PRECISION_POLICIES[policy]
    return fp32 if dtype == torch.float32 else half
