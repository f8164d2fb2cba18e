"""Kernel ops that are cheap to call eagerly and opaque to ``torch.compile``.

An op is two functions of plain tensors — ``forward`` and ``backward``, the Triton launches — a gradient
rule and shape (fake) functions. ``torch.compile`` sees them as ``torch.library`` custom ops
(``rodimus::<name>`` and ``rodimus::<name>_backward``) with their autograd and fake functions, so it never
traces into a Triton launch (re-emitting a kernel's module failed: ``NEG_INF = tl.constexpr(-inf)`` became
``NameError: 'inf'``). An eager call skips the custom-op dispatch, which costs host time on every call (on the
H200 machine of docs/benchmarks.md the eager Rodimus+ step was bound by host time), and runs the same two
functions through a plain ``torch.autograd.Function``.
"""

from __future__ import annotations

import torch

__all__ = ["KernelOp"]


class KernelOp:
    """``forward(*args)`` → tensor or tuple of tensors; ``setup_context(ctx, args, output)`` saves what
    ``grad(ctx, backward, *output_grads)`` needs, which returns one gradient (or None) per argument and
    calls ``backward`` (the plain function eagerly, its custom op under compilation). Output gradients
    are None where an output was not used. ``fake`` and ``backward_fake`` give the output shapes.
    ``setup_context`` runs only when a backward can follow (grad enabled and an input requiring grad),
    eagerly as under compilation, so a copy it makes for the backward costs nothing in inference."""

    def __init__(self, name: str, forward, backward, *, setup_context, grad, fake, backward_fake):
        self.name = f"rodimus::{name}"   # the custom op's name; profiled eager calls are recorded under it too
        self.forward, self.backward = forward, backward
        self.setup_context, self.grad = setup_context, grad
        self.op = torch.library.custom_op(self.name, forward, mutates_args=())
        self.op.register_fake(fake)
        self.backward_op = torch.library.custom_op(f"rodimus::{name}_backward", backward, mutates_args=())
        self.backward_op.register_fake(backward_fake)
        self.op.register_autograd(self._compiled_grad, setup_context=setup_context)

    def _compiled_grad(self, ctx, *grads):
        return self.grad(ctx, self.backward_op, *grads)

    def run_forward(self, *args):
        """The forward launches, eagerly, named as the custom op while a profiler collects: for an
        autograd Function that runs this op's launches but saves its own tensors (glue.low_rank_value_gate)."""
        return _recorded(self.name, self.forward)(*args)

    def run_backward(self, *args):
        """The backward launches, eagerly, named ``<op>_backward`` while a profiler collects."""
        return _recorded(f"{self.name}_backward", self.backward)(*args)

    def __call__(self, *args):
        if torch.compiler.is_compiling():
            return self.op(*args)
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return _Eager.apply(self, *args)
        # No backward can follow (no_grad, or nothing requires grad): the launches alone, as the custom op's
        # autograd does, so setup_context runs only when its saved tensors will be used (an autograd.Function
        # cannot tell: grad mode is off inside its forward and ctx.needs_input_grad ignores no_grad).
        return self.run_forward(*args)


def _recorded(name: str, function):
    """``function``, recorded under ``name`` while a profiler collects (torch.profiler then names an eager
    call as it names the custom op: bench prefill counts "rodimus::ddts" so); ``function`` itself otherwise,
    because entering a record_function costs host time on every call even with no profiler running (two
    dispatcher ops, ~8 µs per call on a 2-core CPU: ``rodimus-lab bench host``), and eager steps are
    host-bound on the GPU."""
    if not torch._C._autograd._profiler_enabled():
        return function

    def record(*args):
        with torch.profiler.record_function(name):
            return function(*args)

    return record


class _Eager(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op: KernelOp, *args):
        ctx.set_materialize_grads(False)   # None for unused outputs, as the custom op's autograd gives
        ctx.kernel_op = op
        output = op.run_forward(*args)
        op.setup_context(ctx, args, output)
        return output

    @staticmethod
    def backward(ctx, *grads):
        op = ctx.kernel_op
        return (None, *op.grad(ctx, op.run_backward, *grads))
