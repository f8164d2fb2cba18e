"""Writing a file so that no reader ever sees half of it, and reading the one kind that can be seen half
written: a JSON-lines log appended to a line at a time.

The new contents go to a temporary file beside the target (same folder, so the same filesystem), are
flushed to disk, and the temporary file is renamed over the target with ``os.replace``, which is
atomic: a crash or a kill leaves the old file or the new one, never a torn one. Checkpoints, run
configs, metric logs, reports and data caches are all written this way.

Logs that grow a line per event (``metrics.jsonl``, a sweep's ``results.jsonl``) are appended to instead;
a kill mid-append can cut their last line short, which :func:`read_jsonl` tells apart from damage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "read_jsonl"]


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


def read_jsonl(path: str | os.PathLike, *, missing_ok: bool = False) -> list[dict]:
    """The rows of a JSON-lines file: one JSON object per line, blank lines skipped.

    A last line that does not parse and has no newline after it is an append cut short (a kill, or a
    writer still busy) and is left out: that row was never finished. Any other line that does not parse
    is damage and raises a ValueError naming the file and the line. A missing file gives ``[]`` with
    ``missing_ok``, else a FileNotFoundError naming it.
    """
    path = Path(path)
    try:
        lines = path.read_bytes().split(b"\n")   # not splitlines: it also splits at characters JSON may hold
    except FileNotFoundError:
        if missing_ok:
            return []
        raise FileNotFoundError(f"{path} does not exist") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:   # JSONDecodeError, or UnicodeDecodeError where a character was cut
            if number == len(lines):   # the file does not end in a newline: this append was cut short
                break
            raise ValueError(f"{path}, line {number}, is not JSON ({error}): delete or repair that line") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}, is {type(row).__name__}, not a JSON object: "
                             "delete or repair that line")
        rows.append(row)
    return rows
