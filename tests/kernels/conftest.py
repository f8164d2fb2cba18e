"""Kernel tests run the Triton kernels themselves: on a machine without CUDA through Triton's
interpreter, which must be switched on before any kernel is decorated (rodimus_kernels imports its
Triton modules lazily, at the first call, so setting it here is early enough)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
