"""KernelOp's eager path (kernels/ops.py): named under the op's custom-op name while a profiler collects,
forward and backward, and no record_function at all otherwise (it costs host time on every call); what a
backward needs is saved only when a backward can follow."""

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from rodimus_kernels import ops
from rodimus_kernels.ddts import ddts
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


class _CopiesOf(TorchDispatchMode):
    """Counts the clones of one tensor's memory."""

    def __init__(self, tensor):
        super().__init__()
        self.ptr, self.count = tensor.data_ptr(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.clone.default and args[0].data_ptr() == self.ptr:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_ddts_copies_the_initial_state_only_when_a_backward_can_follow():
    """The backward re-walks from a copy of the initial state (prefill overwrites it in place); a no-grad
    prefill, or a call where nothing requires grad, must not pay one [B, H, n, m] copy per layer."""
    B, T, H, n, m = 1, 5, 2, 4, 8
    q, k, g_logits, tau_logits = (torch.randn(B, T, H, n) for _ in range(4))
    v, h0 = torch.randn(B, T, H, m), torch.randn(B, H, n, m)

    def copies():
        with _CopiesOf(h0) as counter:
            ddts(q, k, v, g_logits, tau_logits, initial_state=h0)
        return counter.count

    assert copies() == 0                                  # nothing requires grad
    v.requires_grad_()
    with torch.no_grad():
        assert copies() == 0
    assert copies() == 1                                  # the counter sees the copy when there is one
