"""The committed results store: tables that accumulate across machines, and how they are read (the notebooks read
it through :mod:`stabkit.sweeps.lookup`; runs are merged into it by :mod:`stabkit.sweeps.merging`).

Layout (one store per sweep and scale)::

    results/<sweep>/<scale>/
        runs.parquet       the index, one row per committed run (the commit point, written last)
        <table>.parquet    tidy rows of every committed run (``output``, ``layers``, ``summary``, ...)
        provenance.json    a readable summary of the index (devices, commits, dates; for humans and diffs)

A ``<table>.parquet`` holds the rows :func:`~stabkit.sweeps.collect` gives for a run (the run's own
columns, then its configuration columns; the run key, the configuration hash, is the ``run`` column)
plus ``run_version``: which copy of the run the rows belong to (a hash of key, host and finish date).
``runs.parquet`` has one row per run key (``INDEX_COLUMNS``): ``key``, ``run_version``, ``config``
(the run's ``config.json`` as JSON text), ``code_commit``, ``code_dirty``, ``commit_source`` (``run``:
recorded by the run itself; ``campaign``: by the campaign that packed it; ``export``: the exporting
checkout, when the run recorded none), ``device``, ``device_name``, ``host`` (the machine), ``torch``,
``python``, ``finished`` (UTC ISO date), ``wall_seconds``, ``epochs_run``, ``best_test_err``,
``status`` (the run's whole ``status.json``), ``tables`` and ``schema`` (per table, the run's columns
and dtypes, so that a run's rows come back exactly as the run wrote them).

Readers trust only the (key, run_version) pairs of the index and re-read when the index changed under them,
so a reader never sees a half-merged store, and a store whose ``runs.parquet`` was never written (an
interrupted first export) is not committed at all.

Skipping committed work: ``committed_keys()`` gives the keys a sweep need not run
(``python -m stabkit sweep --recompute`` runs them anyway).

``stabkit.sweeps.lookup.results()`` is the notebooks' entry point (``scale="auto"``, coverage facts).
"""
from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs.paths import default_results_root

__all__ = ["SCALE_ORDER", "INDEX_COLUMNS", "KEY", "VERSION", "INDEX", "PROVENANCE", "store_dir", "committed_runs",
           "committed_keys", "committed_scales", "load", "MissingTableError", "check_store_name", "read_store_table",
           "read_index", "run_schema", "restore_run_rows", "concat_frames", "split_by_run"]


class MissingTableError(ValueError):
    """:func:`stabkit.sweeps.load`: runs are committed, but none of them has the asked table (its message
    lists those they have). A ``ValueError``, as before; its own type lets a caller that reads several
    stores tell it from a damaged store."""

#: Scales by preference for ``scale="auto"``, largest first.
SCALE_ORDER = ("paper", "gpu", "cpu", "small", "tiny")
#: Columns of a store's index ``runs.parquet``, one row per committed run: its key and version, the
#: config, the provenance of the run (commit, device, versions, times) and which tables it holds.
INDEX_COLUMNS = ("key", "run_version", "config", "code_commit", "code_dirty", "commit_source", "device",
                 "device_name", "host", "torch", "python", "finished", "wall_seconds", "epochs_run",
                 "best_test_err", "status", "tables", "schema")
#: The run-key and run-version columns of every table; the index and the provenance file of a store folder.
KEY, VERSION, INDEX, PROVENANCE = "run", "run_version", "runs.parquet", "provenance.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_store_name(what: str, value: Any) -> str:
    """``value`` if it is a plain name of a store folder or table (``what`` names it in the ``ValueError``)."""
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise ValueError(f"{what} must be a plain name (letters, digits, '_', '.', '-'; no path), got {value!r}")
    return value


def store_dir(sweep: str, scale: str, results_root: str | Path | None = None) -> Path:
    """``<results_root>/<sweep>/<scale>`` (default root: :func:`~stabkit.runs.default_results_root`);
    names that would leave the root (``../x``) are refused."""
    return Path(results_root or default_results_root()) / check_store_name("sweep", sweep) / check_store_name("scale", scale)


# ---------------------------------------------------------------------------------------- reading
def read_store_table(f: Path) -> pd.DataFrame:
    """One parquet file, read through one open handle: a merge replaces the file by name (``os.replace``),
    never the inode we hold, so the read sees one version whole (reading by name opens the file more
    than once, and can mix the footer of one version with the data of the next)."""
    try:
        with open(f, "rb") as fh:
            return pd.read_parquet(fh)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
        raise ValueError(f"{f}: not a readable parquet table ({type(exc).__name__}: {exc})") from None


def read_index(d: Path) -> pd.DataFrame:
    """The index ``runs.parquet`` of store folder ``d`` (``INDEX_COLUMNS``; empty when there is none);
    ``ValueError`` naming the file when it is not an index."""
    f = d / INDEX
    if not f.is_file():
        return pd.DataFrame(columns=list(INDEX_COLUMNS))
    idx = read_store_table(f)
    lacking = [c for c in INDEX_COLUMNS if c not in idx.columns]
    if lacking:
        raise ValueError(f"{f}: not a results index (columns {lacking} missing)")
    if idx.key.duplicated().any():
        raise ValueError(f"{f}: run keys listed twice: {sorted(set(idx.key[idx.key.duplicated()]))}")
    return idx


def _sig(f: Path) -> tuple | None:
    try:
        st = f.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def committed_runs(sweep: str, scale: str, results_root: str | Path | None = None) -> pd.DataFrame:
    """The index of a store (``INDEX_COLUMNS``, one row per committed run; empty if none)."""
    return read_index(store_dir(sweep, scale, results_root))


def committed_keys(sweep: str, scale: str, results_root: str | Path | None = None) -> set[str]:
    """Keys of the runs committed for ``sweep`` at ``scale``: a sweep need not run them."""
    return set(committed_runs(sweep, scale, results_root).key)


def committed_scales(sweep: str, results_root: str | Path | None = None) -> list[str]:
    """Scales of ``sweep`` with committed runs, largest first (``SCALE_ORDER``, then other names)."""
    base = Path(results_root or default_results_root()) / check_store_name("sweep", sweep)
    found = [p.name for p in base.iterdir() if (p / INDEX).is_file()] if base.is_dir() else []
    found = [s for s in found if _NAME.match(s) and len(read_index(base / s))]
    return sorted(found, key=lambda s: (SCALE_ORDER.index(s) if s in SCALE_ORDER else len(SCALE_ORDER), s))


def run_schema(row: Mapping) -> dict[str, list]:
    """``{table: [[column, dtype], ...]}`` of an index row: the tables of the run and their columns as it wrote them."""
    try:
        return json.loads(row["schema"])
    except (TypeError, ValueError):
        raise ValueError(f"run {row.get('key')}: unreadable schema record in {INDEX}") from None


def restore_run_rows(df: pd.DataFrame, cols: list) -> pd.DataFrame:
    """The rows of one run as it wrote them: its own columns, its dtypes where they survive the union."""
    df = df[[c for c, _ in cols]].reset_index(drop=True)
    for c, dt in cols:
        if str(df[c].dtype) != dt:
            with contextlib.suppress(TypeError, ValueError):
                df[c] = df[c].astype(dt)
    return df


def concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The per-run frames as one table (empty with none)."""
    if not frames:
        return pd.DataFrame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # concat of all-NA columns (e.g. ptr None)
        return pd.concat(frames, ignore_index=True)


def split_by_run(table: pd.DataFrame, f: Path) -> dict[tuple[str, str], pd.DataFrame]:
    """A stored table (file ``f``) cut into its runs' rows: ``{(key, run_version): rows without run_version}``."""
    if KEY not in table.columns or VERSION not in table.columns:
        raise ValueError(f"{f}: not a table of the results store (columns {KEY!r} and {VERSION!r} required)")
    return {(str(k), str(v)): g.drop(columns=[VERSION]) for (k, v), g in table.groupby([KEY, VERSION], sort=False)}


def _frames_of(d: Path, table: str, rows: list[Mapping]) -> dict[tuple[str, str], pd.DataFrame]:
    """The per-run frames of ``table`` for the index ``rows`` that list it (error if the file lacks some)."""
    want = {(r["key"], r["run_version"]): run_schema(r)[table] for r in rows if table in run_schema(r)}
    if not want:
        return {}
    f = d / f"{table}.parquet"
    if not f.is_file():
        raise ValueError(f"{f}: missing, but {d / INDEX} lists {len(want)} run(s) with table {table!r}")
    parts = split_by_run(read_store_table(f), f)
    lost = sorted(p[0] for p in want if p not in parts)
    if lost:
        raise ValueError(f"{f}: no rows of run(s) {lost[:5]} that {d / INDEX} lists with this table")
    try:
        return {p: restore_run_rows(parts[p], cols) for p, cols in want.items()}
    except KeyError as exc:
        raise ValueError(f"{f}: column {exc} of the recorded schema is missing") from None


def load(sweep: str, scale: str, table: str, results_root: str | Path | None = None) -> pd.DataFrame:
    """The committed ``table`` of ``sweep`` at ``scale``: the rows of every run in the index, in key order,
    as :func:`~stabkit.sweeps.collect` gives them (``run`` = key). ``ValueError`` naming the file for a
    damaged store, or :class:`~stabkit.sweeps.resultstore.MissingTableError` (a ``ValueError``) listing the
    committed tables when none of the runs has ``table``; an empty frame when nothing is committed."""
    d = store_dir(sweep, scale, results_root)
    check_store_name("table", table)
    tries = 20
    for attempt in range(tries):  # a merge replacing the index or a table while we read: read again
        before = _sig(d / INDEX)
        try:
            idx = read_index(d)
            rows = sorted(idx.to_dict("records"), key=lambda r: r["key"])
            frames = _frames_of(d, table, rows)
        except ValueError:
            if attempt < tries - 1 and _sig(d / INDEX) != before:
                continue
            raise
        if _sig(d / INDEX) == before:
            break
    if rows and not frames:
        have = sorted({t for r in rows for t in run_schema(r)})
        raise MissingTableError(f"no committed table {table!r} in {d}; committed tables: {have}")
    return concat_frames([frames[p] for p in sorted(frames)])
