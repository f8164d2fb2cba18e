"""Classroom exercises whose answer key is the library.

From a notebook cell::

    from rodimus_lab.exercises import check
    check("ddts_gates", my_ddts_gates)     # True and one line on success, ExerciseFailed with a hint otherwise

``exercises()`` lists the ids in teaching order with a one-line title each. Every call
draws fresh random cases; the seed is in any failure message, and
``check(id, fn, seed=...)`` replays exactly those cases.
"""

from __future__ import annotations

import secrets
from typing import Callable

from . import attention_exercises, block_exercises, ddts_exercises, mqar_exercise
from .harness import Exercise, ExerciseFailed, run_check
from .mqar_exercise import check_recall_experiment

__all__ = ["check", "check_recall_experiment", "ExerciseFailed", "exercises", "get_exercise"]

_ALL = {ex.id: ex for module in (ddts_exercises, block_exercises, attention_exercises, mqar_exercise)
        for ex in module.EXERCISES}
# Teaching order, by difficulty: single equations, then the pieces of a layer, then the unrolled forms, then
# whole layers from their parts, then an experiment.
_ORDER = ("ddts_gates", "ddts_step", "ddts_recurrent",
          "ska_attention", "sliding_window_mask", "rope",
          "short_conv_step", "two_hop_residual", "state_bytes",
          "ddts_parallel_mask", "ddts_chunkwise",
          "sw_ska_layer", "rodimus_mixer",
          "mqar_accuracy", "recall_after_training")
_REGISTRY: dict[str, Exercise] = {exercise_id: _ALL[exercise_id] for exercise_id in _ORDER}


def exercises() -> dict[str, str]:
    """Exercise id → title, in teaching order."""
    return {ex.id: ex.title for ex in _REGISTRY.values()}


def get_exercise(exercise_id: str) -> Exercise:
    """The exercise's definition: reference, case generator, known bugs, signature."""
    if exercise_id not in _REGISTRY:
        raise ValueError(f"unknown exercise id {exercise_id!r}; known ids: {', '.join(_REGISTRY)}")
    return _REGISTRY[exercise_id]


def check(exercise_id: str, student_fn: Callable, *, seed: int | None = None) -> bool:
    """Run ``student_fn`` on random cases and compare it with the reference.

    Returns True (and prints one line) when every case agrees; raises ExerciseFailed
    with what differed and a hint otherwise. ``seed`` replays a failure's cases.
    """
    __tracebackhide__ = True
    exercise = get_exercise(exercise_id)
    if not callable(student_fn):
        raise TypeError(f"check({exercise_id!r}, student_fn): student_fn must be your function, "
                        f"got {type(student_fn).__name__}")
    if seed is None:
        seed = secrets.randbelow(100_000)
    elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TypeError(f"seed must be a non-negative int (the one a failure message printed), got {seed!r}")
    count = run_check(exercise, student_fn, seed)
    print(f"✓ {exercise_id}: your function matches the reference on {count} random cases.")
    return True


def _show_failures_without_traceback() -> None:
    """In IPython/Jupyter, print an ExerciseFailed as its message alone: the checker's frames would
    only bury the feedback. Leaves any custom exception handler the user already set alone."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or shell.custom_exceptions:
        return

    def show(shell, etype, value, tb, tb_offset=None):
        shell.showtraceback((etype, value, tb), exception_only=True)

    shell.set_custom_exc((ExerciseFailed,), show)


_show_failures_without_traceback()
