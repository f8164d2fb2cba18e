"""The checking machinery shared by every exercise.

An :class:`Exercise` knows how to draw random cases, the reference (a library
function, so the library is the answer key) and a list of known :class:`Bug` s: the
reference with one plausible mistake each. When a student's output disagrees with the
reference, it is compared with every bug's output on the same inputs; a match names
the bug class in the hint. The student's function is always run on private copies of
the inputs, so anything it raises, returns or modifies is reported as feedback, never
as a traceback from here.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["ExerciseFailed", "Exercise", "Case", "Bug", "run_check", "randint", "randn"]

class ExerciseFailed(AssertionError):
    """The student's function disagreed with the reference; the message says where and hints why."""


@dataclass(frozen=True)
class Case:
    """One call: positional ``args`` (named by ``Exercise.arg_names``) and keyword ``kwargs``."""
    args: tuple
    kwargs: dict = field(default_factory=dict)
    label: str = ""


@dataclass(frozen=True)
class Bug:
    """A known mistake: ``fn`` is the reference with that mistake, same signature as the student's."""
    name: str   # the bug class, as the student will read it ("τ missing in the decay")
    hint: str   # where to look — never the fix itself
    fn: Callable


@dataclass(frozen=True)
class Exercise:
    id: str
    title: str
    signature: str                      # the student's function, with shapes
    arg_names: tuple[str, ...]          # names of the positional arguments (for messages)
    outputs: tuple[str, ...]            # one per returned value, "name [layout]" (one entry: a single value)
    reference: Callable
    make_cases: Callable[[torch.Generator], list[Case]]
    bugs: tuple[Bug, ...]
    hints: tuple[str, ...]              # general advice when no known bug matches
    rtol: float = 1e-4
    trains: bool = False                # calls run with autograd on (a training run); otherwise under no_grad


# ------------------------------------------------------------------ random cases

def randint(gen: torch.Generator, low: int, high: int) -> int:
    """An int in [low, high], both included."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen)


# ------------------------------------------------------------------------ running

def run_check(exercise: Exercise, student_fn: Callable, seed: int) -> int:
    """Run every case; raise ExerciseFailed at the first disagreement. Returns the number of cases."""
    __tracebackhide__ = True
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # the cases are tiny: extra threads only add start-up cost (and contention)
    try:
        return _run_cases(exercise, student_fn, seed)
    finally:
        torch.set_num_threads(threads)


def _run_cases(exercise: Exercise, student_fn: Callable, seed: int) -> int:
    __tracebackhide__ = True
    cases = exercise.make_cases(torch.Generator().manual_seed(seed))
    for number, case in enumerate(cases, 1):
        where = f"case {number} of {len(cases)} ({case.label}; seed {seed})"
        expected = _call(exercise.reference, case, exercise.trains)
        got = _call_student(exercise, student_fn, case, where, seed)
        problems = _compare(exercise, expected, got)
        if problems:
            # Every case the student's function runs on narrows down which known bug it is.
            runs = [(case, got)] + _quiet_runs(student_fn, cases[number:], exercise.trains)
            raise ExerciseFailed(_failure_message(exercise, runs, where, seed, problems))
    return len(cases)


def _quiet_runs(student_fn: Callable, cases: list[Case], trains: bool) -> list[tuple[Case, Any]]:
    """(case, output) for the cases the student's function runs on without raising."""
    runs = []
    for case in cases:
        try:
            runs.append((case, _call(student_fn, case, trains)))
        except Exception:
            continue
    return runs


def _call(fn: Callable, case: Case, trains: bool = False):
    args, kwargs = copy.deepcopy((case.args, case.kwargs))
    with torch.set_grad_enabled(trains):
        return fn(*args, **kwargs)


def _call_student(exercise: Exercise, student_fn: Callable, case: Case, where: str, seed: int):
    __tracebackhide__ = True
    args, kwargs = copy.deepcopy((case.args, case.kwargs))
    try:
        with torch.set_grad_enabled(exercise.trains):
            got = student_fn(*args, **kwargs)
    except Exception as err:  # anything the student's code raises becomes feedback
        if isinstance(err, NotImplementedError) and _raised_by(err, student_fn):
            raise ExerciseFailed(
                f"{exercise.id}: not implemented yet — replace the `raise NotImplementedError` line in your "
                "function with your code, then run this cell again."
            ) from None
        raise ExerciseFailed(
            f"{exercise.id} ✗ — {where}: your function raised {type(err).__name__}: {err}\n"
            f"{_student_frames(err)}"
            f"  It is called as {exercise.signature}\n"
            f"  Inputs: {_describe_inputs(exercise, case)}\n"
            f"  Reproduce: check({exercise.id!r}, your_function, seed={seed})"
        ) from None
    changed = _mutated(exercise, case, args, kwargs)
    if changed:
        raise ExerciseFailed(
            f"{exercise.id} ✗ — {where}: your function modified its input {changed} in place "
            "(an in-place op such as `x += …`, `x.mul_(…)`, `x[…] = …`). The caller still needs "
            "its inputs: compute new tensors instead (e.g. `x = x + …` or work on `x.clone()`).\n"
            f"  Reproduce: check({exercise.id!r}, your_function, seed={seed})"
        )
    return got


def _raised_by(err: BaseException, fn: Callable) -> bool:
    """Whether ``err`` was raised by ``fn``'s own body (the unfilled stub), not somewhere it called."""
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code is getattr(fn, "__code__", None)


def _student_frames(err: BaseException) -> str:
    """The last lines of the student's own code that ran (our frame is the first one, dropped)."""
    frames = traceback.extract_tb(err.__traceback__)[1:][-3:]
    if not frames:
        return ""
    lines = [f"    {f.name}, line {f.lineno}: {(f.line or '').strip()}" for f in frames]
    return "  Where it happened (last lines that ran):\n" + "\n".join(lines) + "\n"


def _mutated(exercise: Exercise, case: Case, args: tuple, kwargs: dict) -> str | None:
    named = list(zip(exercise.arg_names, args)) + list(kwargs.items())
    pristine = list(case.args) + list(case.kwargs.values())
    for (name, after), before in zip(named, pristine):
        if not _same(before, after):
            return f"`{name}`"
    return None


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, torch.nn.Module):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(_same(sa[k], sb[k]) for k in sa)
    if dataclasses.is_dataclass(a):
        return a == b
    return True   # plain numbers and callables cannot be changed in place by the caller's view


# ---------------------------------------------------------------------- comparing

def _as_tuple(exercise: Exercise, value) -> tuple:
    return (value,) if len(exercise.outputs) == 1 else value


def _compare(exercise: Exercise, expected, got, *, rtol: float | None = None) -> list[str]:
    """Problems with ``got`` (student or bug output) against ``expected``; [] if they agree."""
    rtol = exercise.rtol if rtol is None else rtol
    expected = _as_tuple(exercise, expected)
    n = len(exercise.outputs)
    if got is None:
        return ["your function returned None — did you forget a `return`?"]
    if n > 1 and (not isinstance(got, (tuple, list)) or len(got) != n):
        names = ", ".join(_name(o) for o in exercise.outputs)
        count = f"{len(got)} values" if isinstance(got, (tuple, list)) else f"a {type(got).__name__}"
        return [f"your function returned {count}; it must return {n} values: ({names})"]
    got = _as_tuple(exercise, got)
    problems = []
    for spec, e, g in zip(exercise.outputs, expected, got):
        if e is None:   # not asked for (e.g. a final state with output_final_state=False)
            continue
        problem = _compare_value(spec, e, g, rtol)
        if problem:
            problems.append(problem)
    return problems


def _name(spec: str) -> str:
    return spec.split(" ")[0]


def _layout(spec: str) -> list[str]:
    inside = spec.partition("[")[2].rstrip("]")
    return [d.strip() for d in inside.split(",")] if inside else []


def _compare_value(spec: str, expected, got, rtol: float) -> str | None:
    name = f"`{_name(spec)}`"
    if got is None:
        return f"{name} is None — did you forget a `return`?"
    if isinstance(expected, torch.Tensor):
        return _compare_tensor(spec, name, expected, got, rtol)
    if isinstance(expected, bool) or not isinstance(expected, numbers.Number):
        raise TypeError(f"unsupported reference output {type(expected).__name__}")
    if isinstance(expected, numbers.Integral):
        if isinstance(got, bool) or not isinstance(got, numbers.Integral):
            return f"{name} must be an int (a whole number of bytes), got {type(got).__name__} {got!r}"
        if got != expected:
            return f"{name} is {got:,}, expected {expected:,} (ratio {got / expected:.4g})"
        return None
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            return f"{name} must be one number, got a tensor of shape {tuple(got.shape)} — reduce it to a scalar"
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Real):
        return f"{name} must be a number, got {type(got).__name__}"
    if math.isnan(got):
        return f"{name} is NaN — look for a division by zero (an empty mean?)"
    if abs(got - expected) > max(rtol * abs(expected), 1e-9):
        return f"{name} is {got:.6g}, expected {expected:.6g}"
    return None


def _compare_tensor(spec: str, name: str, expected: torch.Tensor, got, rtol: float) -> str | None:
    layout = " ".join(spec.split(" ")[1:])
    if not isinstance(got, torch.Tensor):
        return f"{name} must be a torch.Tensor {layout}, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)} = {layout}"
    if got.dtype != expected.dtype:
        why = " (a mask is bool: True = may attend)" if expected.dtype == torch.bool else ""
        return f"{name} has dtype {got.dtype}, expected {expected.dtype}{why}"
    got = got.detach()
    if expected.dtype == torch.bool:
        wrong = (got != expected).nonzero().tolist()
        if not wrong:
            return None
        examples = ", ".join(_where(spec, i) for i in wrong[:4])
        return (f"{name} differs at {len(wrong)} of {expected.numel()} entries, e.g. {examples} "
                f"(yours {bool(got[tuple(wrong[0])])}, expected {bool(expected[tuple(wrong[0])])} at the first)")
    if not expected.is_floating_point():
        expected, got = expected.double(), got.double()
    bad = ~torch.isfinite(got)
    if bad.any() and torch.isfinite(expected).all():
        kind = "NaN" if got.isnan().any() else "inf"
        return (f"{name} contains {kind} ({int(bad.sum())} of {got.numel()} entries) — look for an exp "
                "that overflows, a log or power of a non-positive number, or a division by zero")
    diff = got.double() - expected.double()
    diff = diff.masked_fill(got.isnan() & expected.isnan(), 0.0)   # a bug's NaN matches a student's NaN
    err = diff.norm().item() / max(expected.double().nan_to_num().norm().item(), 1e-12)
    if err <= rtol:
        return None
    at = tuple(int(i) for i in torch.unravel_index(diff.abs().argmax(), diff.shape))
    return (f"{name} differs from the reference: relative error {err:.3g}; largest difference at "
            f"{_where(spec, at)}: yours {got[at].item():.5g}, expected {expected[at].item():.5g}")


def _where(spec: str, index) -> str:
    dims = _layout(spec)
    if len(dims) == len(index):
        return "[" + ", ".join(f"{d}={i}" for d, i in zip(dims, index)) + "]"
    return str(tuple(index))


# ---------------------------------------------------------------------- diagnosis

def _matching_bugs(exercise: Exercise, runs: list[tuple[Case, Any]]) -> list[Bug]:
    """The known bugs whose output equals the student's on every case both can run (the first,
    failing, case included); one per bug class."""
    found: dict[str, Bug] = {}
    for bug in exercise.bugs:
        if bug.name not in found and _bug_matches(exercise, bug, runs):
            found[bug.name] = bug
    return list(found.values())


def _bug_matches(exercise: Exercise, bug: Bug, runs: list[tuple[Case, Any]]) -> bool:
    for number, (case, got) in enumerate(runs):
        try:
            out = _call(bug.fn, case, exercise.trains)
        except Exception:   # a bug that cannot run on a case says nothing about it...
            if number == 0:  # ...but must explain the failing one
                return False
            continue
        if _compare(exercise, out, got, rtol=max(exercise.rtol, 1e-3)):
            return False
    return True


def _failure_message(exercise: Exercise, runs: list[tuple[Case, Any]], where: str, seed: int,
                     problems: list[str]) -> str:
    case = runs[0][0]
    lines = [f"{exercise.id} ✗ — {where}"]
    lines += [f"  {p}" for p in problems]
    shape_problem = any(" shape " in p or "must return" in p or "returned None" in p for p in problems)
    dtype_problem = any(" dtype " in p for p in problems)
    bugs = [] if shape_problem or dtype_problem else _matching_bugs(exercise, runs)
    if bugs:
        for bug in bugs:
            lines.append(f"  Likely bug — {bug.name}: {bug.hint}")
    elif shape_problem:
        lines.append(f"  Hint (shape): it is called as {exercise.signature}")
    elif dtype_problem:
        lines.append("  Hint (dtype): keep the inputs' dtype; a tensor you create with torch.zeros(…) or "
                     "torch.tensor(…) needs dtype=… (or use torch.zeros_like)")
    else:
        lines.append("  No known mistake matches; things to check:")
        lines += [f"    • {h}" for h in exercise.hints]
    lines.append(f"  Inputs: {_describe_inputs(exercise, case)}")
    lines.append(f"  Reproduce: check({exercise.id!r}, your_function, seed={seed})")
    return "\n".join(lines)


def _describe_inputs(exercise: Exercise, case: Case) -> str:
    parts = [f"{n}{_short(a)}" for n, a in zip(exercise.arg_names, case.args)]
    parts += [f"{k}={_short(v, keyword=True)}" for k, v in case.kwargs.items()]
    return ", ".join(parts)


def _short(value: Any, keyword: bool = False) -> str:
    if isinstance(value, torch.Tensor):
        body = f"{list(value.shape)} {str(value.dtype).replace('torch.', '')}"
        return body if keyword else " " + body
    if isinstance(value, torch.nn.Module):
        text = f"<{type(value).__name__}>"
    elif dataclasses.is_dataclass(value):
        text = f"<{type(value).__name__}>"
    else:
        text = repr(value)
    return text if keyword else f"={text}"
