"""The training step, ``training_step``, and the same step replayed as one CUDA graph, ``GraphedStep``.

``training_step`` is the one home of "forward, backward, clipping, optimizer step": the Trainer's eager
step, the step ``GraphedStep`` records and the eager and compiled rows of ``rodimus-lab bench train`` all
run it.

An eager training step of a small model is bound by the host: Python, autograd and the dispatcher
issue thousands of kernels per step, and the GPU waits for them (docs/benchmarks.md, "Whole-model
training": a Rodimus+ step at the bench's sizes is 70 ms of GPU work in a 113 ms step). A CUDA graph
records the kernels of one step once and replays them with a single launch, so the host work is gone.

    step = GraphedStep(model, torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True, capturable=True),
                       grad_clip=1.0)
    for i, (x, y) in enumerate(batches):
        step.set_lr(schedule(i))                     # the lr is a device tensor the graph reads
        losses, grad_norm = step([(x, y)])           # device tensors: read them when you log

What is recorded is PyTorch's whole-network recipe (torch.cuda.graphs): the first ``warmup`` calls
run eagerly on a side stream (Triton compiles and tunes its kernels, the optimizer makes its state),
then one call captures forward under autocast, loss, backward, gradient clipping and the optimizer
step, and replays it; every later call copies its batch into the captured input buffers and replays.
Every call is one real training step, warm-up ones included: the same operations as an eager loop
(``tests/test_graphed.py`` compares the losses on a GPU).

What a captured step must not do: read a device value on the host (``.item()``, ``float(t)``, a
Python ``if`` on a tensor: the project's models skip their one such check, the id range, here), change
shapes between steps, or build tensors on the CPU and copy them in. A step that does raises a
``NotCapturable`` at capture that says so; nothing of that call has run, so the caller may run the same
step eagerly (the Trainer does under ``cuda_graphs = "auto"``). Parameters, gradients and optimizer state
keep their storage from replay to replay; ``optimizer.load_state_dict`` (resuming a checkpoint) replaces
the state, so the next call captures anew.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

__all__ = ["GraphedStep", "NotCapturable", "lm_loss", "training_step"]


class NotCapturable(RuntimeError):
    """This step cannot be replayed as a CUDA graph: it does work a graph cannot record, or its batch's shapes
    differ from the recorded ones. Nothing of the call that raised it has run: the step may run eagerly."""


def lm_loss(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``model(inputs, labels=labels).loss``; a model that checks its ids (a RodimusLM: ``check_ids``; also
    inside DistributedDataParallel, ``.module``, or torch.compile) skips that check here (a host sync: the
    caller checks ids before they reach the device, e.g. the Trainer on the CPU batch)."""
    extra = {"check_inputs": False} if hasattr(getattr(model, "module", model), "check_ids") else {}
    return model(inputs, labels=labels, **extra).loss


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = lm_loss, *,
                  grad_clip: float = 0.0, autocast_dtype: torch.dtype | None = None):
    """One optimizer step on ``micro_batches``, ``(inputs, labels)`` pairs on the model's device: each one's
    forward (under autocast to ``autocast_dtype``; None: none) and backward, the gradients averaged (loss / n,
    as gradient accumulation does); the global gradient norm, clipped to ``grad_clip`` (0: not clipped); the
    optimizer's step at its param groups' lr; the gradients dropped (it expects none and leaves none).

    Returns ``(losses, grad_norm)``: every micro-batch's loss [n] and the norm before clipping, float32
    device tensors, without waiting for the device. ``model`` may be a DistributedDataParallel: its ranks
    exchange gradients on the last micro-batch's backward only."""
    n = len(micro_batches)
    losses = []
    for i, (x, y) in enumerate(micro_batches):
        exchange = i == n - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if exchange else model.no_sync():
            with _autocast(x.device, autocast_dtype):
                loss = loss_fn(model, x, y)
            (loss / n if n > 1 else loss).backward()
        losses.append(loss.detach().float())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return torch.stack(losses), grad_norm.float()


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    # torch's rule for autocast in a CUDA graph: no cast cache while capturing (a cached 16-bit weight made
    # outside the recorded region would be replayed stale)
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=not capturing)


class GraphedStep:
    """One training step (:func:`training_step`: forward, loss, backward, clipping, optimizer step) as a CUDA graph.

    ``model`` on a CUDA device; ``optimizer`` built with ``capturable=True`` (fused AdamW is the fast
    one); ``loss_fn(model, inputs, labels) -> scalar loss`` (default :func:`lm_loss`); ``grad_clip``:
    the max global gradient norm (0: no clipping; the norm is returned either way); ``autocast_dtype``:
    the forward's autocast dtype (None: none); ``warmup``: eager steps before the capture (≥ 1).

    A call takes the step's micro-batches, a sequence of ``(inputs, labels)`` pairs of one fixed shape,
    on the CPU or the GPU; their gradients are averaged (loss / number of micro-batches, as gradient
    accumulation does). It returns ``(losses, grad_norm)``: every micro-batch's loss [n] and the global
    gradient norm before clipping, float32 device tensors of this step (copies: they stay valid after
    the next call). Reading them on the host waits for the GPU; read them only when you log.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = lm_loss, *,
                 grad_clip: float = 0.0, autocast_dtype: torch.dtype | None = torch.bfloat16, warmup: int = 2):
        if not all(group.get("capturable", False) for group in optimizer.param_groups):
            raise ValueError(
                f"the optimizer ({type(optimizer).__name__}) must be built with capturable=True: otherwise its step "
                "counts on the CPU, which a CUDA graph cannot replay. E.g. torch.optim.AdamW(params, lr=..., "
                "fused=True, capturable=True)")
        params = [p for group in optimizer.param_groups for p in group["params"]]
        devices = {p.device for p in model.parameters()} | {p.device for p in params}
        if not torch.cuda.is_available() or any(d.type != "cuda" for d in devices) or len(devices) != 1:
            raise ValueError(
                f"GraphedStep records CUDA graphs: the model and the optimizer's parameters must be on one CUDA "
                f"device, found {sorted(map(str, devices))}"
                + ("" if torch.cuda.is_available() else " (torch sees no CUDA device)")
                + ". Train eagerly instead (TrainConfig.cuda_graphs = False, bench mode 'eager').")
        if warmup < 1 or grad_clip < 0:
            raise ValueError(f"GraphedStep needs warmup >= 1 and grad_clip >= 0, got warmup={warmup}, "
                             f"grad_clip={grad_clip}")
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.grad_clip, self.autocast_dtype, self.warmup = grad_clip, autocast_dtype, warmup
        self.device = next(iter(devices))
        # The lr as a device tensor per group, read by the optimizer step in the graph: set_lr changes it
        # between replays (a Python float would be baked into the recorded kernels).
        self._lrs = []
        for group in optimizer.param_groups:
            lr = group["lr"]
            if not isinstance(lr, torch.Tensor):
                lr = torch.tensor(float(lr), dtype=torch.float32, device=self.device)
            group["lr"] = lr
            self._lrs.append(lr)
        self._flags = [{k: group.get(k) for k in _STEP_FLAGS} for group in optimizer.param_groups]
        optimizer.register_state_dict_post_hook(_portable)
        optimizer.register_load_state_dict_post_hook(self._after_load)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0
        self._inputs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def set_lr(self, lr: float) -> None:
        """The learning rate of every param group from the next step on (no host sync)."""
        for t in self._lrs:
            t.fill_(lr)

    def __call__(self, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]]):
        self._copy_in(micro_batches)
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:   # eager, on a side stream (the recipe's warm-up)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                out = self._step()
                out = tuple(t.clone() for t in out)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return out
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self._losses.clone(), self._grad_norm.clone()

    # ------------------------------------------------------------------ inside
    def _copy_in(self, micro_batches) -> None:
        """The batch into the input buffers the graph reads (allocated on the first call)."""
        pairs = [(x, y) for x, y in micro_batches]
        if not self._inputs:
            if not pairs:
                raise ValueError("GraphedStep needs at least one (inputs, labels) micro-batch")
            self._inputs = [torch.empty_like(x, device=self.device) for x, _ in pairs]
            self._labels = [torch.empty_like(y, device=self.device) for _, y in pairs]
        shapes = [(tuple(x.shape), x.dtype, tuple(y.shape), y.dtype) for x, y in pairs]
        held = [(tuple(x.shape), x.dtype, tuple(y.shape), y.dtype) for x, y in zip(self._inputs, self._labels)]
        if shapes != held:
            raise NotCapturable(f"a CUDA graph replays fixed shapes: this step's micro-batches are {shapes}, the "
                             f"captured ones {held}. Give every step the same number and shape of micro-batches "
                             "(drop a last, smaller batch), or train eagerly.")
        for buffers, tensors in ((self._inputs, [x for x, _ in pairs]), (self._labels, [y for _, y in pairs])):
            for buffer, t in zip(buffers, tensors):
                if t.device.type == "cpu" and not t.is_pinned():
                    t = t.pin_memory()   # an asynchronous copy needs page-locked memory
                buffer.copy_(t, non_blocking=True)

    def _step(self):
        """The recorded work, on the input buffers: (losses [n] float32, grad norm), device tensors."""
        return training_step(self.model, self.optimizer, list(zip(self._inputs, self._labels)), self.loss_fn,
                             grad_clip=self.grad_clip, autocast_dtype=self.autocast_dtype)

    def _capture(self) -> None:
        torch.cuda.synchronize(self.device)
        self.optimizer.zero_grad(set_to_none=True)   # the captured backward allocates the gradients it replays into
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.current_stream(self.device)
        try:
            with torch.cuda.graph(graph):
                self._losses, self._grad_norm = self._step()
        except RuntimeError as e:
            # Recorded work has not run: the parameters and the optimizer state are as before this call. A
            # capture that ends in an error leaves its side stream current and gradients from its memory pool.
            torch.cuda.set_stream(stream)
            self.optimizer.zero_grad(set_to_none=True)
            # when capture_end fails too, its error is the one raised and the step's own is its context; the
            # first line of each (CUDA errors add four lines of generic debugging advice)
            said = "; then ".join(str(x).strip().partition("\n")[0] for x in (e.__context__, e) if x is not None)
            raise NotCapturable(
                "the training step could not be captured as a CUDA graph: something in it waits for the GPU "
                "(.item(), float(tensor), a Python branch on a tensor's value, a CPU tensor copied in) or "
                "changes from step to step. Train eagerly (TrainConfig.cuda_graphs = False, bench mode "
                f"'eager'), or remove that work from the step (a RodimusLM: check_inputs=False). Capture said: {said}"
            ) from e
        self.graph = graph

    def _after_load(self, optimizer) -> None:
        """load_state_dict replaced the param groups (with the saved ones: a plain lr, the saved run's
        implementation flags) and the state: this step's lr tensors, flags and device step counts back,
        and the next call captures anew (the recorded graph reads the replaced state)."""
        for group, lr, flags in zip(optimizer.param_groups, self._lrs, self._flags):
            lr.fill_(float(group["lr"]))
            group["lr"] = lr
            group.update(flags)
            for p in group["params"]:
                state = optimizer.state.get(p, {})
                if isinstance(state.get("step"), torch.Tensor):
                    state["step"] = state["step"].to(device=self.device, dtype=torch.float32)
        self.graph = None


# How the optimizer step runs, not what it computes: a saved state says the plain defaults, so a checkpoint
# of a graphed run resumes eagerly (also on a CPU) and the other way round.
_STEP_FLAGS = ("capturable", "fused", "foreach")


def _portable(optimizer, state_dict: dict) -> dict:
    """The lr as a number (checkpoints write param groups as JSON), the step flags at their defaults."""
    for group in state_dict["param_groups"]:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
        group.update(capturable=False, fused=None, foreach=None)
    return state_dict
