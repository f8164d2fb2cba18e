"""KernelOp's eager path (kernels/ops.py): named under the op's custom-op name while a profiler collects,
forward and backward, and no record_function at all otherwise (it costs host time on every call)."""

import torch
from torch.profiler import ProfilerActivity, profile

from rodimus_kernels import ops
from rodimus_kernels.glue import rms_norm


def test_unprofiled_calls_run_the_plain_function():
    def function(x):
        return x

    assert ops._recorded("rodimus::anything", function) is function


def test_profiled_calls_are_named_as_the_custom_ops():
    x = torch.randn(2, 5, 16, requires_grad=True)
    w = torch.ones(16, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rms_norm(x, w, 1e-5).sum().backward()
    names = [event.name for event in prof.events()]
    assert names.count("rodimus::rms_norm") == 1 and names.count("rodimus::rms_norm_backward") == 1
    assert x.grad is not None and w.grad is not None
