"""Writing a file so that no reader ever sees half of it.

The new contents go to a temporary file beside the target (same folder, so the same filesystem), are
flushed to disk, and the temporary file is renamed over the target with ``os.replace``, which is
atomic: a crash or a kill leaves the old file or the new one, never a torn one. Checkpoints, run
configs, metric logs, reports and data caches are all written this way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new contents to (any writer: ``np.save``,
    ``tokenizer.save``, ...); when the block ends without error it is synced and moved onto ``path``,
    otherwise removed. The temporary name keeps the suffix (``np.save`` would add one) and carries the
    process id, so concurrent writers (one per rank) never share it."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Replace ``path``'s contents with ``data`` (str is written as UTF-8) atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
