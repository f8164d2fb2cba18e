"""How many torch threads a small CPU job should take: the cores that other processes leave free.

A step of the CPU demo is hundreds of operations on tensors of about a megabyte. A second OpenMP thread
makes it about 1.3× faster on an idle 2-core machine, but each operation waits for the slower thread,
so when another process keeps one core busy the second thread gets that core only now and then, and the
whole demo took 1.4× longer than with one thread (docs/benchmarks.md, "CPU training"). Idle threads must
also sleep (``OMP_WAIT_POLICY=PASSIVE``, set by the ``rodimus-lab`` command before torch loads): with
OpenMP's default spin-waiting they take a core from the other processes, and steps became up to 14×
slower. So: as many threads as free cores, where idle threads sleep, else one.

The free cores are measured, not guessed from the load average (which lags by a minute): other processes'
CPU time between two :func:`cpu_sample` calls (Linux ``/proc/stat`` minus this process's own time).
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple


class CpuSample(NamedTuple):
    busy: float   # seconds that all CPUs together have been busy (since boot)
    own: float    # seconds of CPU this process has used
    wall: float   # time.perf_counter()


def cpu_sample(stat: str = "/proc/stat") -> CpuSample | None:
    """The machine's and this process's CPU time now; None where ``stat`` does not exist (not Linux)."""
    try:
        with open(stat) as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]   # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]
    own = os.times()
    return CpuSample(busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter())


def busy_elsewhere(before: CpuSample, after: CpuSample) -> float:
    """How many cores other processes kept busy between the two samples (0.0 on an idle machine)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / wall)


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sleeping_threads() -> bool:
    """Whether idle OpenMP threads sleep: OMP_WAIT_POLICY=PASSIVE (OpenMP reads it in any case)."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def free_threads(most: int, since: CpuSample | None) -> int:
    """Torch threads for a small job: up to ``most``, one per core that other processes left free since
    the sample ``since`` (None: not measurable, every usable core counts as free), where idle threads
    sleep; else 1."""
    if not sleeping_threads():
        return 1
    now = cpu_sample() if since is not None else None
    taken = busy_elsewhere(since, now) if now is not None else 0.0
    return max(1, min(most, round(usable_cores() - taken)))
