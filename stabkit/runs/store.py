"""Run folders on disk: layout, locks, states, collected tables, provenance (the committed results store
is :mod:`stabkit.runs.resultstore`).

Folder of a run (``<root>/<key>``)::

    config.json      the configuration (plus key and format version)
    lock             while a process works on it: flock held for the run (stabkit.runs.locks), JSON
                     host/pid/since/nonce, touched every epoch (heartbeat)
    best.pt last.pt  checkpoints (state dicts + metadata, loaded with weights_only=True)
    metrics.parquet output.parquet layers.parquet spectra.parquet summary.parquet [+ registered tables]
    status.json      {"status": "done" | "failed", ...};   error.txt   traceback of a failed run
    done             written last: the run is complete

Every file is written with :mod:`stabkit.atomic` (temporary file, ``fsync``, ``os.replace``), so a reader
or a crash sees a whole file or none, and ``done`` comes last: a run without it is never read. Nothing
here imports torch except :func:`~stabkit.runs.provenance` (library versions).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import socket
import subprocess
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_write_json, atomic_write_table, atomic_write_text, fsync_dir
from ..checkpoints import CHECKPOINTS, CheckpointFolder
from .config import FORMAT_VERSION, RunConfig, deferred_registry_checks
from .locks import LOCK_NAME, RunLock, heartbeat_age, hold_lock, lock_held, lock_info
from .measurements import MEASUREMENTS, known_tables, measurement_tables
from .paths import REPO_ROOT, default_runs_root
from .sweepfile import Sweep, as_sweep

__all__ = ["TABLES", "KNOWN_TABLES", "MEASUREMENT_TABLES", "CHECKPOINTS", "RunLocked", "RunLock", "run_dir",
           "run_state", "verify_run", "checkpoint_problems", "check_table_name", "expected_tables", "hold_lock", "lock_held", "write_config", "write_table",
           "write_status", "read_status", "mark_done", "read_config", "error_line", "progress_line", "run_dirs",
           "config_columns", "collect", "status", "git_state", "provenance"]

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
    :mod:`~stabkit.runs.locks`), ``interrupted`` (folder without done/failed marker and no live lock) or
    ``pending`` (no folder). Cheap: the files of a done run are not checked (see :func:`verify_run`)."""
    path = Path(path)
    if (path / "done").exists():
        return "done"
    if not path.is_dir():
        return "pending"
    if lock_held(path):
        return "running"
    return "failed" if read_status(path).get("status") == "failed" else "interrupted"


def progress_line(path: str | Path) -> str:
    """What the process computing run folder ``path`` last reported in its lock record, as one line
    ("epoch 23 of 300: 12.4 s per epoch, train loss 0.981, test error 50.1 %; heartbeat 4 s ago", or
    "measuring the trained network: layers, spectra; heartbeat ..."); ``""`` with no report."""
    lock = Path(path) / LOCK_NAME
    info = lock_info(lock)
    age = heartbeat_age(lock)
    beat = f"; heartbeat {age:.0f} s ago" if age is not None else ""
    try:
        if info.get("phase") == "training":
            return (f"epoch {int(info['epoch'])} of {int(info['epochs'])}: {float(info['epoch_seconds']):.1f} s per "
                    f"epoch, train loss {float(info['train_loss']):.3g}, test error "
                    f"{100 * float(info['test_err']):.1f} %{beat}")
        if info.get("phase") == "measuring":
            state = {"init": "at initialisation", "trained": "the trained network"}.get(info["state"], info["state"])
            return f"measuring {state}: {', '.join(map(str, info.get('measurements', [])))}{beat}"
    except (KeyError, TypeError, ValueError):
        pass  # a record of other code, or read while being rewritten
    return ""


def error_line(path: Path) -> str:
    """The one-line error of a failed run (from ``status.json``), or ``""``."""
    return str(read_status(path).get("error", ""))


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


def _table_ok(f: Path) -> str:
    """``""`` if ``f`` is a readable parquet table, else the problem (naming the file)."""
    if not f.is_file():
        return f"{f}: missing"
    try:
        import pyarrow.parquet as pq
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
    """The problems of the checkpoints (:data:`CHECKPOINTS`) of run folder ``path``, each naming the file:
    missing, truncated or corrupted, or not of net ``net`` and run ``key`` (each is loaded, on the CPU).
    Imports torch."""
    return CheckpointFolder(path, net, key).problems()


def verify_run(path: str | Path, checkpoints: bool = False) -> list[str]:
    """The problems of a finished run folder, each naming the file: ``config.json`` unreadable or not
    the configuration of this folder's key, ``status.json`` not ``done``, a table of
    :func:`~stabkit.runs.store.expected_tables` missing, any ``*.parquet`` unreadable; with ``checkpoints``
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
        with deferred_registry_checks():
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


def collect(root: str | Path | None = None, table: str = "output", sweep: str | Path | Mapping | Sweep | None = None,
            scale: str | None = None) -> pd.DataFrame:
    """Gather ``<table>.parquet`` of every finished run (``done`` marker present) under ``root`` (or of
    the runs of ``sweep`` at ``scale``) into one tidy DataFrame: the table's rows, then the configuration
    columns of :func:`config_columns` (``run`` = key; a mapping field such as ``task_options`` becomes
    columns ``task_options.d``, ``task_options.xi``, ...; list fields are comma-joined strings) unless
    the table has a column of that name. Unfinished runs are never read. ``table="summary"`` also lists
    failed runs (status failed, error).

    A finished run whose ``config.json`` or table is unreadable, or that lacks a table its configuration
    must have (:func:`~stabkit.runs.store.expected_tables`), is skipped with a ``UserWarning`` naming the file (``sweep
    --verify`` redoes such runs). ``ValueError`` naming the accepted tables if no finished run has
    ``table`` and it is no table of the built-in measurements."""
    root = Path(root or default_runs_root())
    check_table_name(table)
    sw = as_sweep(sweep, scale) if sweep is not None else None
    frames, present, n_done = [], set(), 0
    for p in run_dirs(root, sw):
        st = run_state(p)
        if st not in ("done", "failed") or (st == "failed" and table != "summary"):
            continue
        try:
            cfg = read_config(p)
        except (OSError, ValueError) as exc:
            warnings.warn(f"skipped run {p.name}: {exc}", stacklevel=2)
            continue
        if st == "done":
            n_done += 1
            f = p / f"{table}.parquet"
            if not f.is_file():
                if table in expected_tables(cfg):
                    warnings.warn(f"skipped run {p.name}: {f} is missing (the run is finished; "
                                  f"`sweep --verify` redoes it)", stacklevel=2)
                else:
                    present.update(q.stem for q in p.glob("*.parquet"))
                continue
            try:
                df = pd.read_parquet(f)
            except Exception as exc:  # noqa: BLE001 - a damaged table: skip the run, say which file
                warnings.warn(f"skipped run {p.name}: {f} is unreadable ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); `sweep --verify` redoes it", stacklevel=2)
                continue
        else:
            df = pd.DataFrame([{"key": p.name, "status": "failed", "error": error_line(p)}])
        cfg = config_columns(cfg)
        cfg["run"] = cfg.pop("key", p.name)
        extra = {k: [v] * len(df) for k, v in cfg.items() if k not in df.columns}
        frames.append(pd.concat([df, pd.DataFrame(extra, index=df.index)], axis=1) if extra else df)
    if not frames:
        if n_done and table not in KNOWN_TABLES and table not in present:
            raise ValueError(f"table {table!r}: no finished run has it; accepted tables: "
                             f"{sorted(set(KNOWN_TABLES) | present)}")
        return pd.DataFrame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # concat of all-NA columns (e.g. ptr None)
        return pd.concat(frames, ignore_index=True)


def status(root: str | Path | None = None, sweep: str | Path | Mapping | Sweep | None = None,
           scale: str | None = None, committed: Collection[str] | None = None) -> dict[str, int]:
    """Counts ``{"total", "done", "pending", "failed", "running"}`` of a sweep's runs (or of every run
    folder under ``root``); interrupted runs count as pending.

    ``committed``: the run keys committed under ``results/`` (``stabkit.runs.committed_keys``); the counts
    then have a ``"committed"`` entry, and a committed run counts there, not as done, failed or pending
    (its results are published whatever its folder here says), unless a process is computing it again
    (running)."""
    root = Path(root or default_runs_root())
    sw = as_sweep(sweep, scale) if sweep is not None else None
    counts = dict(total=0, done=0, pending=0, failed=0, running=0)
    published = None if committed is None else set(committed)
    if published is not None:
        counts["committed"] = 0
    for p in run_dirs(root, sw):
        st = run_state(p)
        counts["total"] += 1
        if published is not None and p.name in published and st != "running":
            counts["committed"] += 1
        else:
            counts["pending" if st in ("pending", "interrupted") else st] += 1
    return counts


# ----------------------------------------------------------------------------------------- provenance
def _git(root: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


#: Where the code state travels to a copy of the tree without ``.git`` (a lent GPU gets the working tree
#: only): the environment variable (a commit sha; ``STABKIT_CODE_DIRTY`` = 1 or 0 beside it), else this
#: file at the root of the tree (``{"commit": sha, "dirty": bool}``, git-ignored, written before the copy
#: by ``tools/gpu_campaign.sh``'s first step and carried with it).
CODE_COMMIT_ENV = "STABKIT_CODE_COMMIT"
CODE_STATE_FILE = ".code_state.json"
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


def _travelled_state(root: Path) -> dict[str, Any] | None:
    """The code state written before the tree was copied (see :data:`CODE_COMMIT_ENV`), or None."""
    env = os.environ.get(CODE_COMMIT_ENV, "").strip().lower()
    if _SHA.match(env):
        dirty = os.environ.get("STABKIT_CODE_DIRTY", "").strip().lower()
        return {"commit": env, "dirty": {"1": True, "true": True, "0": False, "false": False}.get(dirty)}
    try:
        doc = json.loads((root / CODE_STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    commit = str(doc.get("commit") or "").strip().lower() if isinstance(doc, dict) else ""
    if not _SHA.match(commit):
        return None
    dirty = doc.get("dirty")
    return {"commit": commit, "dirty": dirty if isinstance(dirty, bool) else None}


def git_state(root: str | os.PathLike = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git checkout at ``root``; where the tree has
    no git repository (a copy sent to a lent GPU), the state written before the copy
    (``$STABKIT_CODE_COMMIT``, else ``<root>/.code_state.json``); ``None`` when neither is there. The one
    git schema of every provenance record."""
    root = Path(root)
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        travelled = _travelled_state(root)
        if travelled is not None:
            return travelled
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
