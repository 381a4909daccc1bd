"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Every module that writes a file another process may read (run folders, the results store, data caches,
the book's provenance) goes through these: write a temporary file beside the target, ``fsync`` it,
``os.replace`` it over the target, then ``fsync`` the folder so that the rename itself is durable.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["tmp_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_write_table", "fsync_dir"]


def tmp_path(path: str | Path) -> Path:
    """Hidden temporary name beside ``path``, unique per process (``.<name>.tmp-<pid>``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside folder ``path`` durable (best effort: some file systems refuse it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to produce the file at a temporary path, then move it over ``path`` atomically.

    ``write`` may open the path itself (e.g. ``df.to_parquet(tmp)``); the temporary file is removed if it
    raises. Parent folders are created. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def _with_open(mode: str, emit: Callable[[IO], None]) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, mode) as fh:
            emit(fh)
    return write


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, _with_open("wb", lambda fh: fh.write(data)))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON with sorted keys (``default=str``) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def atomic_write_table(path: str | Path, df: Any) -> Path:
    """Write a pandas DataFrame to ``path`` atomically: parquet (index dropped), or CSV for ``*.csv``."""
    frame = df.reset_index(drop=True)
    if str(path).endswith(".csv"):
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
