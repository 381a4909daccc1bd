"""Run folders on disk: layout, locks, states, collected tables, export with provenance.

Folder of a run (``<root>/<key>``)::

    config.json      the configuration (plus key and format version)
    lock             while a process works on it (host, pid; touched every epoch)
    best.pt last.pt  checkpoints (state dicts + metadata, loaded with weights_only=True)
    metrics.parquet output.parquet layers.parquet spectra.parquet summary.parquet [+ registered tables]
    status.json      {"status": "done" | "failed", ...};   error.txt   traceback of a failed run
    done             written last: the run is complete

Every file is written with :mod:`stabkit.atomic` (temporary file, ``fsync``, ``os.replace``), so a reader
or a crash sees a whole file or none, and ``done`` comes last: a run without it is never read. Nothing
here imports torch except :func:`export` (library versions).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_write_json, atomic_write_table, atomic_write_text, fsync_dir
from .config import FORMAT_VERSION, RunConfig
from .paths import REPO_ROOT, default_results_root, default_runs_root
from .sweepfile import Sweep, as_sweep

__all__ = ["TABLES", "RunLocked", "run_dir", "run_state", "hold_lock", "write_config", "write_table",
           "write_status", "mark_done", "read_config", "error_line", "run_dirs", "config_columns", "collect",
           "status", "committed_table", "git_state", "provenance", "export"]

#: Tables written by the built-in measurements (plus ``metrics`` and ``summary``).
TABLES = ("metrics", "output", "layers", "spectra", "summary")
_STALE_FOREIGN_S = 2 * 3600  # a lock from another host untouched this long is stale


class RunLocked(RuntimeError):
    """Another live process holds the run's lock."""


def run_dir(config: RunConfig, root: str | Path | None = None) -> Path:
    """Folder of ``config`` under ``root`` (default :func:`~stabkit.runs.paths.default_runs_root`)."""
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


# ------------------------------------------------------------------------------------ locks and states
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_alive(lock: Path) -> bool:
    try:
        info = json.loads(lock.read_text())
        age = time.time() - lock.stat().st_mtime
    except (OSError, ValueError):
        return False
    if info.get("host") == socket.gethostname():
        return _pid_alive(int(info.get("pid", -1)))
    return age < _STALE_FOREIGN_S


def run_state(path: str | Path) -> str:
    """State of a run folder: ``done``, ``failed``, ``running`` (live lock), ``interrupted`` (folder
    without done/failed marker and no live lock) or ``pending`` (no folder)."""
    path = Path(path)
    if (path / "done").exists():
        return "done"
    if not path.is_dir():
        return "pending"
    if (path / "lock").exists() and _lock_alive(path / "lock"):
        return "running"
    try:
        if json.loads((path / "status.json").read_text()).get("status") == "failed":
            return "failed"
    except (OSError, ValueError):
        pass
    return "interrupted"


@contextlib.contextmanager
def hold_lock(path: Path) -> Iterator[Any]:
    """Hold ``path/lock`` (created exclusively); a stale lock (dead pid) is taken over. Yields a heartbeat
    function (touches the lock), or None if another live process holds it."""
    lock = path / "lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _lock_alive(lock):
                yield None
                return
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, fh)
        break
    else:
        yield None
        return
    try:
        yield lambda *_: os.utime(lock)
    finally:
        lock.unlink(missing_ok=True)


def error_line(path: Path) -> str:
    """The one-line error of a failed run (from ``status.json``), or ``""``."""
    try:
        return str(json.loads((path / "status.json").read_text()).get("error", ""))
    except (OSError, ValueError):
        return ""


# ------------------------------------------------------------------------------- collect and status
def run_dirs(root: Path, sw: Sweep | None) -> list[Path]:
    """The run folders of ``sw`` under ``root`` (existing or not), or every run folder under ``root``."""
    if sw is not None:
        return [root / k for k in sw.keys]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())


def config_columns(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a run's configuration adds to each collected row.

    Scalars as they are; lists (``augment``, ``measure``, ``states``, ``shuffles``, a list of ``layers``)
    as one string, items joined by commas (``"0,1"``); mappings (``task_options``, ``net_options``,
    ``options``) expanded into one column per leaf, named by the dotted path (``task_options.d``,
    ``options.accuracy.n``); an empty mapping adds no column. ``format`` is dropped, ``key`` kept.
    """
    out: dict[str, Any] = {}

    def put(name: str, v: Any) -> None:
        if isinstance(v, Mapping):
            for k in sorted(v):
                put(f"{name}.{k}", v[k])
        elif isinstance(v, (list, tuple)):
            out[name] = ",".join(str(x) for x in v)
        else:
            out[name] = v

    for k, v in cfg.items():
        if k != "format":
            put(k, v)
    return out


def collect(root: str | Path | None = None, table: str = "output", sweep: str | Path | Mapping | Sweep | None = None,
            scale: str | None = None) -> pd.DataFrame:
    """Gather ``<table>.parquet`` of every finished run (``done`` marker present) under ``root`` (or of
    the runs of ``sweep`` at ``scale``) into one tidy DataFrame: the table's rows, then the configuration
    columns of :func:`config_columns` (``run`` = key; a mapping field such as ``task_options`` becomes
    columns ``task_options.d``, ``task_options.xi``, ...; list fields are comma-joined strings) unless
    the table has a column of that name. Unfinished runs are never read. ``table="summary"`` also lists
    failed runs (status failed, error)."""
    root = Path(root or default_runs_root())
    sw = as_sweep(sweep, scale) if sweep is not None else None
    frames = []
    for p in run_dirs(root, sw):
        st = run_state(p)
        if st == "done":
            f = p / f"{table}.parquet"
            if not f.is_file():
                continue
            df = pd.read_parquet(f)
        elif st == "failed" and table == "summary":
            df = pd.DataFrame([{"key": p.name, "status": "failed", "error": error_line(p)}])
        else:
            continue
        cfg = config_columns(read_config(p))
        cfg["run"] = cfg.pop("key", p.name)
        extra = {k: [v] * len(df) for k, v in cfg.items() if k not in df.columns}
        frames.append(pd.concat([df, pd.DataFrame(extra, index=df.index)], axis=1) if extra else df)
    if not frames:
        return pd.DataFrame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # concat of all-NA columns (e.g. ptr None)
        return pd.concat(frames, ignore_index=True)


def status(root: str | Path | None = None, sweep: str | Path | Mapping | Sweep | None = None,
           scale: str | None = None) -> dict[str, int]:
    """Counts ``{"total", "done", "pending", "failed", "running"}`` of a sweep's runs (or of every run
    folder under ``root``); interrupted runs count as pending."""
    root = Path(root or default_runs_root())
    sw = as_sweep(sweep, scale) if sweep is not None else None
    counts = dict(total=0, done=0, pending=0, failed=0, running=0)
    for p in run_dirs(root, sw):
        st = run_state(p)
        counts["total"] += 1
        counts["pending" if st in ("pending", "interrupted") else st] += 1
    return counts


def committed_table(sw: Sweep, table: str, results_root: str | Path | None = None) -> Path:
    """Where the committed ``table`` of ``sw`` lives: ``<results_root>/<sweep>/<scale>/<table>.parquet``
    (it may not exist)."""
    return Path(results_root or default_results_root()) / sw.name / sw.scale / f"{table}.parquet"


# ----------------------------------------------------------------------------------------- provenance
def _git(root: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_state(root: str | os.PathLike = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git checkout at ``root`` (``None`` when
    git or the repository is missing). The one git schema of every provenance record."""
    root = Path(root)
    commit = _git(root, "rev-parse", "HEAD")
    st = _git(root, "status", "--porcelain", "--untracked-files=normal")
    return {"commit": commit or None, "dirty": None if st is None else bool(st)}


def provenance() -> dict[str, Any]:
    """Where and with what code a result was made: ``created`` (UTC ISO date), ``git``
    (:func:`git_state`), ``host``, ``python``, ``torch``, ``stabkit`` versions."""
    import torch

    import stabkit
    return {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "git": git_state(),
            "host": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
            "stabkit": getattr(stabkit, "__version__", None)}


_RUN_FIELDS = ("run", "net", "status", "device", "device_name", "host", "wall_seconds", "train_seconds",
               "measure_seconds", "epochs_run", "best_test_err", "error")


def export(sweep: str | Path | Mapping | Sweep, scale: str = "small", runs_root: str | Path | None = None,
           out_dir: str | Path | None = None) -> Path:
    """Write every collected table of a sweep (``<table>.parquet``) and ``provenance.json`` to ``out_dir``
    (default ``<results_root>/<sweep>/<scale>``), for committing results produced elsewhere; returns
    ``out_dir``. ``provenance.json``: :func:`provenance` (``git: {commit, dirty}``, versions, host, date)
    plus ``sweep``, ``scale``, ``format_version``, ``tables``, ``counts``, ``devices``,
    ``total_wall_seconds`` and ``runs`` (per run: device, wall time, epochs, best test error, ...)."""
    sw = as_sweep(sweep, scale)
    root = Path(runs_root or default_runs_root())
    out = Path(out_dir or default_results_root() / sw.name / sw.scale)
    out.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    for p in run_dirs(root, sw):
        if run_state(p) == "done":
            names.update(f.stem for f in p.glob("*.parquet"))
    written = []
    for t in sorted(names):
        df = collect(root, t, sw)
        if not df.empty:
            write_table(out / f"{t}.parquet", df)
            written.append(t)
    summ = collect(root, "summary", sw)
    runs = [] if summ.empty else [
        {k: (None if isinstance(r.get(k), float) and math.isnan(r.get(k)) else r.get(k)) for k in _RUN_FIELDS
         if k in r} for r in summ.to_dict("records")]
    prov = {"sweep": sw.name, "scale": sw.scale, **provenance(), "format_version": FORMAT_VERSION,
            "tables": written, "counts": status(root, sw),
            "devices": sorted({str(r.get("device_name")) for r in runs if r.get("device_name")}),
            "total_wall_seconds": float(sum(r.get("wall_seconds") or 0 for r in runs)), "runs": runs}
    atomic_write_json(out / "provenance.json", prov)
    return out
