"""Data parallelism on PyTorch's own engine: torchrun + ``torch.distributed`` + DistributedDataParallel.

    torchrun --nproc_per_node=2 -m rodimus_lab train --task mqar --out runs/x   # or:
    rodimus-lab train --nproc 2 --task mqar --out runs/x

torchrun starts one process per GPU (or CPU worker) and tells each who it is through the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). ``setup``
reads those and joins the process group — NCCL for CUDA, gloo for the CPU. Without them it is a
no-op, so the same code runs as one plain process.

How the Trainer uses it: the *global* batch (``TrainConfig.batch_size``) is fixed, every rank
takes ``batch_size / world_size`` examples of it (the data order is a function of the global
step alone, so a checkpoint resumes with any number of processes); DDP averages the gradients;
the logged loss is averaged over ranks; only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup", "launched_by_torchrun", "rank", "world_size", "is_main", "barrier", "main_first",
           "all_reduce_mean", "check_global_batch", "wrap_model", "torchrun_command", "launch"]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None      # None: a single plain process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in _TORCHRUN_VARS)


def _env_int(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer; launch with "
                         "`torchrun --nproc_per_node=N -m rodimus_lab train …` (it sets it)") from None


def _read_env() -> DistInfo:
    """The torchrun environment, checked: a bad world size or rank fails here, with the fix."""
    world, rank, local = _env_int("WORLD_SIZE"), _env_int("RANK"), _env_int("LOCAL_RANK")
    if world < 1:
        raise ValueError(f"WORLD_SIZE={world} is invalid: the number of processes must be ≥ 1 "
                         "(torchrun --nproc_per_node=N with N ≥ 1)")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is invalid for WORLD_SIZE={world}: expected 0 ≤ RANK < WORLD_SIZE")
    if not 0 <= local < world:
        raise ValueError(f"LOCAL_RANK={local} is invalid for WORLD_SIZE={world}: expected 0 ≤ LOCAL_RANK < WORLD_SIZE")
    return DistInfo(rank, world, local)


def setup(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (once; later calls return the same answer).

    ``device`` is ``TrainConfig.device``: CUDA ("auto" with a GPU, "cuda") → NCCL, and this
    process gets GPU ``LOCAL_RANK``; the CPU → gloo. Not under torchrun: a single process.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                        dist.get_backend())
    if not launched_by_torchrun():
        return DistInfo()
    info = _read_env()
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"device {device!r} asks for CUDA but torch sees no GPU; use --device cpu (gloo)")
        if info.local_rank >= count:
            raise ValueError(f"{info.world_size} processes on this host but only {count} CUDA device(s): "
                             f"launch at most {count} per node (--nproc / --nproc_per_node ≤ {count}), "
                             "or use --device cpu")
        torch.cuda.set_device(info.local_rank)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    atexit.register(_teardown)
    return DistInfo(info.rank, info.world_size, info.local_rank, backend)


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. tokenizing into the shared cache), then the others (reading it)."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def all_reduce_mean(value: float, device: torch.device | str = "cpu") -> float:
    """The mean of ``value`` over all ranks (the value itself in a single process)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / world_size()


def check_global_batch(batch_size: int, grad_accum: int, world: int) -> int:
    """The per-rank micro-batch size; a clear error when the global batch does not split evenly."""
    if not isinstance(world, int) or world < 1:
        raise ValueError(f"world_size = {world!r} is invalid: the number of processes must be an int ≥ 1")
    parts = world * grad_accum
    if batch_size % parts:
        ok = [k * parts for k in (max(1, batch_size // parts), batch_size // parts + 1)]
        raise ValueError(
            f"TrainConfig.batch_size = {batch_size} (the global batch) does not divide by world_size × grad_accum = "
            f"{world} × {grad_accum} = {parts}: every process takes the same number of examples per micro-batch. "
            f"Use --batch-size {ok[0]} or {ok[1]}, or change --nproc / --grad-accum")
    return batch_size // parts


def wrap_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when there are several ranks (or a process group);
    the model itself otherwise."""
    if not (dist.is_available() and dist.is_initialized()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return DistributedDataParallel(model, device_ids=[index])
    return DistributedDataParallel(model)


# ------------------------------------------------------------------------- launching

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(nproc: int, train_args: list[str], *, port: int | None = None) -> list[str]:
    """The torchrun command line that runs ``rodimus-lab train TRAIN_ARGS`` in ``nproc`` processes on this host."""
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"--nproc {nproc!r} is invalid: the number of processes must be an int ≥ 1")
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={port or _free_port()}",
            "-m", "rodimus_lab", "train", *train_args]


def launch(command: list[str]) -> int:
    """Run a ``torchrun_command`` in the foreground; its exit code (non-zero when any rank failed)."""
    if launched_by_torchrun():
        raise ValueError("--nproc launches torchrun, but this process already runs under torchrun; leave --nproc out")
    return subprocess.call(command)
