"""Tidy run tables shaped for a page: selecting rows, the columns that identify a run, configuration
fields, derived columns (the probe pages' training label, the error of the task a net was trained for),
markdown tables and CSV downloads: what pages of several concerns use. A table that one concern shows
lives with its claims: the probe pages' accuracy and NV tables in :mod:`stabkit.report.robustness_claims`,
the D / G / deno table in :mod:`stabkit.report.stability_claims`, the layer NV against R_k in
:mod:`stabkit.report.layer_claims`, the 1-D appendix's block profile in :mod:`stabkit.report.theory_claims`.

Every function takes the tidy tables written by :mod:`stabkit.runs` (``output``, ``layers``, ``spectra``,
``accuracy``, ``invariance``...; see ARCHITECTURE.md, "Run tables") and returns a DataFrame, a Series or
text. Fits and exponents are :mod:`stabkit.report.fits`; intervals :mod:`stabkit.report.stats`.

**Conventions.**

* A *run* is one trained network (one configuration). Rows of the same run are matched on the run
  identifier column when the table has one (``run``, ``key``, ``hash`` or ``run_id``), otherwise on all
  configuration columns (every column that is not a measurement, see :data:`MEASUREMENT_COLUMNS`).
* Logarithms are base 10 (``decades``); rows whose value is not finite or not positive are dropped before
  taking logarithms.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stabkit.atomic import atomic_write_text

__all__ = [
    "MEASUREMENT_COLUMNS", "RUN_ID_COLUMNS", "require_columns", "select", "run_columns", "geomean",
    "config_values", "training_label", "with_task_error", "is_missing", "MarkdownText", "markdown_table",
    "ENV_PAGE_TABLES", "table_downloads", "as_integral", "values_text", "training_runs", "compact_runs",
    "SHARED_RUN_COLUMNS",
]


#: Columns of the run tables that are measurements, not configuration (never used to match runs).
MEASUREMENT_COLUMNS = frozenset({
    # output / layers
    "state", "shuffle", "D_f", "G_f", "R_f", "D", "G", "deno", "P", "test_err", "test_err_corrupted",
    "layer", "depth", "rel_depth", "D_k", "G_k", "R_k", "kind", "node", "op",
    # spectra
    "kernel_size", "eigenvalue", "energy", "fraction",
    # metrics / summary
    "epoch", "train_loss", "train_err", "test_loss", "lr", "seconds", "cpu_seconds", "wall_time", "status",
    "best_test_err", "last_test_err", "best_epoch", "epochs_run", "device_name", "finished", "started",
    "path", "dir", "run_dir",
})


#: Columns that identify one run when present (first match wins).
RUN_ID_COLUMNS = ("run", "key", "hash", "run_id", "config_hash")


def require_columns(df: pd.DataFrame, columns: Iterable[str], arg: str) -> None:
    """``ValueError`` naming ``arg`` unless ``df`` is a DataFrame holding every column of ``columns``."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{arg} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{arg} lacks column(s) {missing}; it has {list(df.columns)}")


def select(df: pd.DataFrame, **equal) -> pd.DataFrame:
    """Rows of ``df`` whose columns equal the given values (a value ``None`` or a missing column is
    ignored; a list or tuple means "any of")."""
    mask = np.ones(len(df), dtype=bool)
    for col, val in equal.items():
        if val is None or col not in df.columns:
            continue
        if isinstance(val, (list, tuple, set, frozenset)):
            mask &= df[col].isin(list(val)).to_numpy()
        else:
            mask &= (df[col] == val).to_numpy()
    return df[mask]


def _hashable(series: pd.Series) -> bool:
    try:
        series.map(hash)
        return True
    except TypeError:
        return False


def run_columns(df: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Columns that identify one run in ``df``: a run identifier column if present (see
    :data:`RUN_ID_COLUMNS`), else every hashable configuration column (not in ``exclude``)."""
    for c in RUN_ID_COLUMNS:
        if c in df.columns:
            return [c]
    cols = [c for c in df.columns
            if c not in MEASUREMENT_COLUMNS and c not in exclude and _hashable(df[c])]
    return cols


def geomean(df: pd.DataFrame, by: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Geometric mean of ``values`` within groups of ``by`` (rows with a non-positive or non-finite
    value count as missing for that value). Returns a DataFrame with ``by`` + ``values`` columns."""
    by = [b for b in by if b in df.columns]
    logs = df[by].copy()
    for v in values:
        x = df[v].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs[v] = np.where(np.isfinite(x) & (x > 0), np.log10(np.where(x > 0, x, 1.0)), np.nan)
    if not by:
        out = logs[list(values)].mean().to_frame().T
    else:
        out = logs.groupby(by, dropna=False)[list(values)].mean().reset_index()
    for v in values:
        out[v] = 10.0 ** out[v]
    return out


def _parse(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def config_values(df: pd.DataFrame, column: str, key: str | None = None, default: Any = None) -> pd.Series:
    """Per row, a field of a mapping or list configuration column (``task_options``, ``net_options``,
    ``augment``...), whatever the table stores: an expanded column ``"<column>.<key>"``, a dict or list,
    or its JSON text.

    ``key=None`` returns the whole (parsed) value. A row without the field gets ``default``. This is the
    one place that reads configuration fields out of a table (no ``json.loads`` in a notebook).
    """
    require_columns(df, [], "df")
    if key is not None and f"{column}.{key}" in df.columns:
        return df[f"{column}.{key}"].where(df[f"{column}.{key}"].notna(), default)
    if column not in df.columns:
        if key is None:
            raise ValueError(f"column {column!r} is not in the table (columns: {list(df.columns)})")
        return pd.Series([default] * len(df), index=df.index, dtype=object)
    parsed = df[column].map(_parse)
    if key is None:
        return parsed
    return pd.Series([v.get(key, default) if isinstance(v, dict) else default for v in parsed], index=df.index,
                     dtype=object)


def training_label(df: pd.DataFrame, augmentation: str = "rotate",
                   labels: tuple[str, str] = ("rotated", "unrotated")) -> np.ndarray:
    """``labels[0]`` for rows whose run trained with ``augmentation`` (in its ``augment`` list), else
    ``labels[1]`` (the probe pages' "rotated" / "unrotated" training)."""
    aug = config_values(df, "augment") if "augment" in df.columns else pd.Series([[]] * len(df), index=df.index)
    has = aug.map(lambda v: augmentation in v if isinstance(v, (list, tuple)) else augmentation in str(v))
    return np.where(has.to_numpy(dtype=bool), labels[0], labels[1])


def with_task_error(output: pd.DataFrame) -> pd.DataFrame:
    """``output`` with ``task_err``: the test error on the task the net was trained for (the corrupted test
    set, same std, for a net trained on corrupted images; else the clean one), and ``noise_std`` (0 when
    the table has none)."""
    require_columns(output, ["test_err"], "output")
    out = output.copy()
    corrupted = out["test_err_corrupted"] if "test_err_corrupted" in out.columns else np.nan
    out["task_err"] = pd.Series(corrupted, index=out.index).fillna(out["test_err"])
    if "noise_std" not in out.columns:
        out["noise_std"] = 0.0
    return out


def is_missing(v: Any) -> bool:
    """Whether a table cell is missing (``None``, NaN, ``pd.NA``, NaT); a list, tuple, dict or array never is."""
    if isinstance(v, (list, tuple, dict, np.ndarray)):
        return False
    return v is None or bool(pd.isna(v))  # None, NaN, pd.NA, NaT


def as_integral(v):
    """``1024.0 -> 1024`` (pandas turns integer columns with missing values into floats)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    return v


def values_text(values) -> str:
    """Distinct values as text, sorted (numbers first): ``"0-3"`` for a run of more than two consecutive
    integers, else joined by ``", "``; ``"n/a"`` when there is none (NaN left out)."""
    vals = sorted({as_integral(v) for v in values if not (isinstance(v, float) and np.isnan(v))},
                  key=lambda v: (0, float(v), "") if isinstance(v, (int, float, np.number)) and not
                  isinstance(v, bool) else (1, 0.0, str(v)))
    if not vals:
        return "n/a"
    if all(isinstance(v, (int, np.integer)) for v in vals) and len(vals) > 2:
        ints = [int(v) for v in vals]
        if ints == list(range(ints[0], ints[-1] + 1)):
            return f"{ints[0]}-{ints[-1]}"
    return ", ".join(str(v) for v in vals)


class MarkdownText(str):
    """A string that notebooks display as markdown (``text/markdown``): what a ``{glue:md}`` directive
    needs (a plain string is glued as ``text/plain`` only)."""

    def _repr_markdown_(self) -> str:
        return str(self)


def markdown_table(table: pd.DataFrame, empty: str = "") -> str:
    """A DataFrame as a markdown (pipe) table, cells as text (``|`` escaped); ``empty`` if it has no row."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if table.empty:
        return empty

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |",
             "|" + "---|" * table.shape[1]]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


#: Environment variable naming the folder :func:`table_downloads` writes to (the tests point it to a
#: temporary folder); default ``<repo>/book/_generated/tables``.
ENV_PAGE_TABLES = "STABKIT_PAGE_TABLES"


_REPO = Path(__file__).resolve().parents[2]


def table_downloads(page: str, tables: dict[str, pd.DataFrame], folder: str | os.PathLike | None = None,
                    relative_to: str | os.PathLike | None = None) -> str:
    """Write a page's tables as CSV files and return a markdown list of ``{download}`` links to them.

    ``page``: the page name (a sub-folder); ``tables``: ``{name: DataFrame}``, written whole (with the raw
    ``D``, ``G``, ``deno`` columns next to the ratios, and every configuration column) to
    ``<folder>/<page>/<name>.csv``. ``folder``: default ``$STABKIT_PAGE_TABLES``, else
    ``<repo>/book/_generated/tables``. ``relative_to``: the folder of the executed notebook the links are
    written for (default ``<repo>/book/executed``, where ``tools/book.py`` puts the pages). Render the
    returned text with ``{glue:md}`` and ``:format: myst`` (the ``{download}`` role is MyST).
    """
    if not isinstance(page, str) or not page or "/" in page or page.startswith("."):
        raise ValueError(f"page must be a page name such as 'fig1_noise_corrupted_cifar', got {page!r}")
    if not isinstance(tables, dict) or not all(isinstance(v, pd.DataFrame) for v in tables.values()):
        raise ValueError("tables must be a dict {name: pandas DataFrame}")
    root = Path(folder or os.environ.get(ENV_PAGE_TABLES) or _REPO / "book" / "_generated" / "tables")
    base = Path(relative_to) if relative_to else _REPO / "book" / "executed"
    lines = []
    for name, df in tables.items():
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise ValueError(f"table names must be words such as 'output', got {name!r}")
        path = root / page / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, df.to_csv(index=False))
        link = Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
        rows = f"{len(df)} row{'' if len(df) == 1 else 's'}"
        lines.append(f"- {{download}}`{name}.csv <{link}>`: {rows}, {df.shape[1]} columns")
    return MarkdownText("\n".join(lines))


def _precision(row: pd.Series) -> str:
    """The training arithmetic of a summary row: the recorded mode, else what ``fast`` implied."""
    mode = row.get("mode_precision")
    if isinstance(mode, str) and mode:
        return mode
    return "bf16 (fast)" if bool(row.get("fast")) and row.get("device") == "cuda" else "float32"


def _training_hours(row: pd.Series) -> tuple[float, float, bool]:
    """``(core-hours, GPU-hours, measured)`` of a summary row. On a CPU the process's CPU time over the
    epochs (``train_cpu_seconds``: ``measured``), else, for runs that predate it, wall seconds x torch threads
    (an upper bound: it counts pauses and time-sharing with other processes); on CUDA wall seconds."""
    secs = row.get("train_seconds")
    if row.get("device") == "cuda":
        return np.nan, (np.nan if is_missing(secs) else secs / 3600), True
    cpu = row.get("train_cpu_seconds")
    if not is_missing(cpu):
        return float(cpu) / 3600, np.nan, True
    if is_missing(secs):
        return np.nan, np.nan, True
    threads = row.get("threads")
    return secs * (1.0 if is_missing(threads) else float(threads)) / 3600, np.nan, False


def training_runs(summary: pd.DataFrame, exclude: Iterable[str] = ()) -> pd.DataFrame:
    """One row per trained network of a page's ``summary`` (the runs in ``exclude``, such as control runs
    that measure a network another run trained, left out): net, width, training noise (``noise``, only when
    some run has some), seed, epochs run (of those set), optimizer, training precision, best and last test
    error (%), the epoch of the best checkpoint and the training time (``core-hours`` on a CPU: the process's
    CPU time over the epochs, ``timed by`` "CPU time", or for runs that predate that record wall seconds x
    torch threads, "wall x threads", an upper bound; ``GPU-hours`` on CUDA; a column that no run fills is
    left out). Sorted by noise, then net."""
    require_columns(summary, ["net", "best_test_err"], "summary")
    rows = summary.drop_duplicates("run") if "run" in summary.columns else summary
    if "run" in rows.columns:
        rows = rows[~rows["run"].astype(str).isin(set(map(str, exclude)))]
    out = pd.DataFrame({"net": rows["net"].to_numpy()})
    get = lambda c, default=np.nan: rows[c].to_numpy() if c in rows.columns else np.full(len(rows), default)  # noqa: E731
    out["width"] = get("width_factor", 1.0)
    if "noise_std" in rows.columns and (pd.to_numeric(rows["noise_std"], errors="coerce").fillna(0) != 0).any():
        out["noise"] = get("noise_std", 0.0)  # a page of noise-free nets only shows no noise column
    out["seed"] = get("seed")
    run, total = get("epochs_run"), get("epochs")
    out["epochs"] = [f"{as_integral(r)}" + (f" of {as_integral(t)}" if not is_missing(t) and not is_missing(r)
                                            and r != t else "") if not is_missing(r) else "-"
                     for r, t in zip(run, total)]
    out["optimizer"] = [("-" if is_missing(o) else str(o)) for o in get("optimizer", None)]
    out["precision"] = [_precision(r) for _, r in rows.iterrows()]
    out["best error (%)"] = np.round(100 * get("best_test_err").astype(float), 2)
    out["last error (%)"] = np.round(100 * get("last_test_err").astype(float), 2)
    out["best epoch"] = [as_integral(e) if not is_missing(e) else "-" for e in get("best_epoch")]
    timed = [_training_hours(r) for _, r in rows.iterrows()]
    hours = np.array([t[:2] for t in timed], dtype=float).reshape(-1, 2)
    for i, col in enumerate(("core-hours", "GPU-hours")):
        if np.isfinite(hours[:, i]).any():  # three significant digits: a tiny run's seconds stay above 0
            out[col] = [float(f"{h:.3g}") if np.isfinite(h) else np.nan for h in hours[:, i]]
    if "core-hours" in out.columns:
        out["timed by"] = ["-" if not np.isfinite(h) else "CPU time" if measured else "wall x threads"
                           for h, (_, _, measured) in zip(hours[:, 0], timed)]
    keys = [c for c in ("noise", "net", "seed") if c in out.columns]
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


#: Columns of :func:`training_runs` that :func:`compact_runs` moves into its sentence when every row shares
#: their value.
SHARED_RUN_COLUMNS = ("width", "noise", "seed", "optimizer", "precision")


def compact_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """:func:`training_runs` as a page shows it, narrow enough for the book's column: the columns of
    :data:`SHARED_RUN_COLUMNS` whose value every row shares leave the table for a sentence ("Every network:
    seed 0, precision float32."), and the ``timed by`` column is folded into ``core-hours``, where a time
    that is only an upper bound (wall seconds x threads) reads "\u2264 1.8". Returns ``(table, sentence)``; the
    sentence is empty when no column is shared (or with a single row, which keeps every column)."""
    out = runs.copy()
    shared = []
    if len(out) > 1:
        for c in SHARED_RUN_COLUMNS:
            if c in out.columns and out[c].nunique(dropna=False) == 1:
                v = out[c].iloc[0]
                shared.append(f"{c} {as_integral(v)}")
                out = out.drop(columns=c)
    if "timed by" in out.columns:
        out["core-hours"] = [("-" if is_missing(h) else f"\u2264 {h:g}" if how == "wall x threads" else f"{h:g}")
                             for h, how in zip(out["core-hours"], out["timed by"])]
        out = out.drop(columns="timed by")
    return out, (f"Every network: {', '.join(shared)}." if shared else "")
