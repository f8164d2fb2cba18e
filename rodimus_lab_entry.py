"""The ``rodimus-lab`` command's entry point: process settings that must come before ``import torch``,
then :func:`rodimus_lab.cli.main`.

OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads. Its default lets a thread that finished its
part of an operation spin for a while before it sleeps: on small tensors (the CPU demo runs hundreds of
short parallel operations a step) a spinning thread takes its core away from any other process, and a
step with two threads became 1.3× to 14× slower than with one whenever another process wanted a core
(docs/benchmarks.md, "CPU training"). PASSIVE threads sleep at once. The command sets it unless the
user chose a policy; a library import cannot, and this module lives outside the ``rodimus_lab``
package because importing the package imports torch.
"""

import os


def main() -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rodimus_lab.cli import main as run

    return run()
