"""The folder of one run: layout, states, verification (many runs: :mod:`stabkit.sweeps.collect`; the
committed results store: :mod:`stabkit.sweeps.resultstore`).

Folder of a run (``<root>/<key>``)::

    config.json      the configuration (plus key and format version)
    lock             while a process works on it: flock held for the run (stabkit.locks), JSON
                     host/pid/since/nonce, touched every epoch (heartbeat)
    best.pt last.pt  checkpoints (state dicts + metadata, loaded with weights_only=True)
    metrics.parquet output.parquet layers.parquet spectra.parquet summary.parquet [+ registered tables]
    status.json      {"status": "done" | "failed", ...};   error.txt   traceback of a failed run
    done             written last: the run is complete

Every file is written with :mod:`stabkit.atomic` (temporary file, ``fsync``, ``os.replace``), so a reader
or a crash sees a whole file or none, and ``done`` comes last: a run without it is never read. Nothing
here imports torch except :func:`checkpoint_problems` (it loads the checkpoints).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from ..atomic import atomic_write_json, atomic_write_table, atomic_write_text, fsync_dir
from ..checkpoints import CHECKPOINTS, CheckpointFolder
from .config import FORMAT_VERSION, RunConfig
from ..locks import LOCK_NAME, RunLock, heartbeat_age, hold_lock, lock_held, lock_info
from .measurements import MEASUREMENTS, known_tables, measurement_tables
from .paths import default_runs_root

__all__ = ["TABLES", "KNOWN_TABLES", "MEASUREMENT_TABLES", "CHECKPOINTS", "RunLocked", "RunLock", "run_dir",
           "run_state", "verify_run", "checkpoint_problems", "check_table_name", "expected_tables", "hold_lock",
           "lock_held", "write_config", "write_table", "write_status", "read_status", "mark_done", "read_config",
           "error_line", "progress_line"]

#: Tables written by the built-in measurements (plus ``metrics`` and ``summary``).
TABLES = ("metrics", "output", "layers", "spectra", "summary")
#: Tables of each built-in measurement (a finished run must have them), as declared where it is registered.
MEASUREMENT_TABLES = {name: measurement_tables(name) for name in MEASUREMENTS}
#: Every table name the built-in code writes.
KNOWN_TABLES = ("metrics", "summary", *known_tables())


class RunLocked(RuntimeError):
    """Another live process holds the run's lock."""


_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_table_name(name: Any, what: str = "table") -> str:
    """``name`` if it is a plain table name (a letter or digit, then letters, digits, ``_``, ``.``, ``-``;
    no path, no ``..``: ``<name>.parquet`` stays in its run folder), else ``ValueError``."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"{what} must be a plain table name (a letter or digit, then letters, digits, '_', '.', "
                         f"'-'; no path), got {name!r}")
    return name


def run_dir(config: RunConfig, root: str | Path | None = None) -> Path:
    """Folder of ``config`` under ``root`` (default :func:`~stabkit.runs.default_runs_root`)."""
    return Path(root or default_runs_root()) / config.key


# ------------------------------------------------------------------------------------ writing a run
def write_config(path: Path, cfg: RunConfig) -> None:
    """``config.json``: every field, plus ``key`` and ``format``."""
    atomic_write_json(path / "config.json", {"key": cfg.key, "format": FORMAT_VERSION, **cfg.to_dict()})


def write_table(path: Path, df: pd.DataFrame) -> None:
    """One parquet table, atomically (index dropped)."""
    atomic_write_table(path, df)


def write_status(path: Path, info: Mapping[str, Any], traceback_text: str | None = None) -> None:
    """``status.json`` (and ``error.txt`` first, for a failed run)."""
    if traceback_text is not None:
        atomic_write_text(path / "error.txt", traceback_text)
    atomic_write_json(path / "status.json", dict(info))


def read_status(path: str | Path) -> dict:
    """The run folder's ``status.json`` as a dict (empty when it is missing or unreadable)."""
    try:
        st = json.loads((Path(path) / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return st if isinstance(st, dict) else {}


def mark_done(path: Path) -> None:
    """Write the ``done`` marker LAST, once every other file of the run is durable."""
    fsync_dir(path)
    (path / "done").touch()
    fsync_dir(path)


def read_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder as a dict (``ValueError`` naming the file if unreadable)."""
    f = Path(path) / "config.json"
    try:
        return json.loads(f.read_text())
    except ValueError as exc:
        raise ValueError(f"{f}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{f}: JSON nested too deeply to be a run configuration") from None


# ------------------------------------------------------------------------------------ locks and states
def run_state(path: str | Path) -> str:
    """State of a run folder: ``done``, ``failed``, ``running`` (its lock is held by a live process,
    :mod:`~stabkit.locks`), ``interrupted`` (folder without done/failed marker and no live lock) or
    ``pending`` (no folder). Cheap: the files of a done run are not checked (see :func:`verify_run`)."""
    path = Path(path)
    if (path / "done").exists():
        return "done"
    if not path.is_dir():
        return "pending"
    if lock_held(path):
        return "running"
    return "failed" if read_status(path).get("status") == "failed" else "interrupted"


def _duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"3.7 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(path: str | Path) -> str:
    """What the process computing run folder ``path`` last reported in its lock record, as one line
    ("epoch 23 of 300: 12.4 s per epoch, about 57 min left, train loss 0.981, test error 50.1 %; heartbeat 4 s
    ago": the time left at the median pace of the last 5 epochs, the last one named when it strays, a
    heartbeat older than three times the pace flagged as "paused or stuck?"; or
    "measuring the trained network: layers, spectra; heartbeat ..."); ``""`` with no report."""
    lock = Path(path) / LOCK_NAME
    info = lock_info(lock)
    age = heartbeat_age(lock)
    beat = f"; heartbeat {age:.0f} s ago" if age is not None else ""
    try:
        if info.get("phase") == "training":
            last = float(info["epoch_seconds"])
            pace = float(info.get("pace_seconds", last))  # the median of the last 5 epochs (older records: the last)
            left = (int(info["epochs"]) - int(info["epoch"])) * pace
            eta = f", about {_duration(left)} left" if left > 0 else ""
            if left > 0 and _stops_at_zero_loss(Path(path)):  # its epochs are a cap, reached only if the loss stays up
                eta = f", at most {_duration(left)} left (it stops at zero training loss)"
            strays = abs(last - pace) > 10 and not 2 / 3 <= last / pace <= 1.5  # seconds-long epochs jitter
            odd = f" (the last epoch {last:.1f} s)" if strays else ""
            # silent for more than three times its pace: stopped (SIGSTOP, a suspended job) or stuck, not merely slowed
            # by other work (two threads on cores that other processes share can take twice as long)
            quiet = (f" (no report for {age / pace:.1f}x its pace: paused or stuck?)"
                     if age is not None and left > 0 and age > 3 * pace + 60 else "")
            return (f"epoch {int(info['epoch'])} of {int(info['epochs'])}: {pace:.1f} s per epoch{odd}{eta}, "
                    f"train loss {float(info['train_loss']):.3g}, test error {100 * float(info['test_err']):.1f} %"
                    f"{beat}{quiet}")
        if info.get("phase") == "measuring":
            state = {"init": "at initialisation", "trained": "the trained network"}.get(info["state"], info["state"])
            return f"measuring {state}: {', '.join(map(str, info.get('measurements', [])))}{beat}"
    except (KeyError, TypeError, ValueError):
        pass  # a record of other code, or read while being rewritten
    return ""


def _stops_at_zero_loss(path: Path) -> bool:
    try:
        return bool(read_config(path).get("stop_at_zero_loss"))
    except (OSError, ValueError):
        return False


def error_line(path: Path) -> str:
    """The one-line error of a failed run (from ``status.json``), or ``""``."""
    return str(read_status(path).get("error", ""))


# ------------------------------------------------------------------------------------ verifying a run
def _table_ok(f: Path) -> str:
    """``""`` if ``f`` is a readable parquet table, else the problem (naming the file)."""
    if not f.is_file():
        return f"{f}: missing"
    try:
        pq.read_metadata(f)
    except Exception as exc:  # noqa: BLE001 - any reader error means the file is damaged
        return f"{f}: unreadable parquet ({type(exc).__name__}: {str(exc)[:200]})"
    return ""


def expected_tables(cfg: Mapping[str, Any]) -> list[str]:
    """Tables a finished run of configuration ``cfg`` (a ``config.json`` dict) must have: ``metrics``,
    ``summary`` and those its measurements declare (``register_measurement(tables=...)``) when it
    measures some state."""
    out = ["metrics", "summary"]
    if cfg.get("states"):
        for m in cfg.get("measure") or ():
            out += [t for t in measurement_tables(m) if t not in out]
    return out


def checkpoint_problems(path: str | Path, net: str, key: str) -> list[str]:
    """The problems of the checkpoints (``CHECKPOINTS``) of run folder ``path``, each naming the file:
    missing, truncated or corrupted, or not of net ``net`` and run ``key`` (each is loaded, on the CPU).
    Imports torch."""
    return CheckpointFolder(path, net, key).problems()


def verify_run(path: str | Path, checkpoints: bool = False) -> list[str]:
    """The problems of a finished run folder, each naming the file: ``config.json`` unreadable or not
    the configuration of this folder's key, ``status.json`` not ``done``, a table of
    ``expected_tables()`` missing, any ``*.parquet`` unreadable; with ``checkpoints``
    (``sweep --verify``), ``checkpoint_problems`` too (a truncated ``best.pt`` would fail every run that
    reuses the network). ``[]`` for a sound run (or one that is not finished: only finished runs are
    verified)."""
    path = Path(path)
    if not (path / "done").exists():
        return []
    problems = []
    try:
        cfg = read_config(path)
    except (OSError, ValueError) as exc:
        return [str(exc) if str(path) in str(exc) else f"{path / 'config.json'}: {exc}"]
    try:
        key = RunConfig.from_dict(cfg).key
        if key != path.name or cfg.get("key", key) != key:
            problems.append(f"{path / 'config.json'}: configuration of run {key}, not of {path.name}")
    except (TypeError, ValueError) as exc:
        problems.append(f"{path / 'config.json'}: not a RunConfig ({exc})")
    try:
        st = json.loads((path / "status.json").read_text()).get("status")
        if st != "done":
            problems.append(f"{path / 'status.json'}: status {st!r}, not 'done'")
    except (OSError, ValueError, AttributeError) as exc:
        problems.append(f"{path / 'status.json'}: unreadable ({type(exc).__name__})")
    names = set(expected_tables(cfg)) | {f.stem for f in path.glob("*.parquet")}
    problems += [p for p in (_table_ok(path / f"{t}.parquet") for t in sorted(names)) if p]
    if checkpoints and not problems:
        problems += checkpoint_problems(path, str(cfg.get("net")), path.name)
    return problems
