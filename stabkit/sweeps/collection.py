"""Many run folders at once: the runs of a sweep gathered into one table, and their states counted (one
run's folder: :mod:`stabkit.runs.folder`).
"""
from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs.folder import KNOWN_TABLES, check_table_name, error_line, expected_tables, read_config, run_state
from ..runs.paths import default_runs_root
from .sweepfile import Sweep, as_sweep

__all__ = ["run_dirs", "config_columns", "collect", "status"]


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
    failed runs (status failed, error).

    A finished run whose ``config.json`` or table is unreadable, or that lacks a table its configuration
    must have (:func:`~stabkit.runs.folder.expected_tables`), is skipped with a ``UserWarning`` naming the file (``sweep
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

    ``committed``: the run keys committed under ``results/`` (``stabkit.sweeps.committed_keys``); the counts
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
