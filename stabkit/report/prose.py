"""Page prose computed from the run tables: what a page states about its runs, and how they differ
from the paper's protocol (as text and as a small table).

``page_facts(summary, sweep, scale)`` gives the strings every figure page shows under "This run"
(seeds, nets, epochs, P, training-set size, device, data, differences from the paper's grid);
:func:`stabkit.report.glue.page` glues them under the standard names.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .analysis import config_values, run_columns

__all__ = ["NONE_LABELS", "DIFFERENCE_COLUMNS", "differences", "differences_table", "page_facts", "run_facts",
           "ptr_text", "FACT_KEYS", "closer_to_prediction"]

#: The facts :func:`page_facts` returns (and :func:`stabkit.report.glue.page` glues, under these names).
FACT_KEYS = ("seeds", "nets", "epochs", "P", "ptr", "device", "data", "differences", "n_runs", "n_failed")
#: Configuration columns compared by :func:`differences` and :func:`differences_table`.
DIFFERENCE_COLUMNS = ("net", "seed", "epochs", "ptr", "test_size", "P", "noise_std", "width_factor",
                      "batch_size", "lr")

# ------------------------------------------------------------------------------------------ page facts
def _fmt_values(values) -> str:
    vals = sorted({_integral(v) for v in values if not (isinstance(v, float) and np.isnan(v))},
                  key=lambda v: (0, float(v), "") if isinstance(v, (int, float, np.number)) and not
                  isinstance(v, bool) else (1, 0.0, str(v)))
    if not vals:
        return "n/a"
    if all(isinstance(v, (int, np.integer)) for v in vals) and len(vals) > 2:
        ints = [int(v) for v in vals]
        if ints == list(range(ints[0], ints[-1] + 1)):
            return f"{ints[0]}-{ints[-1]}"
    return ", ".join(str(v) for v in vals)


#: How :func:`differences` writes a missing (``None``) value of these columns.
NONE_LABELS = {"ptr": "full training set", "test_size": "full test set"}


def differences_table(here: pd.DataFrame, paper: pd.DataFrame, columns: Sequence[str] = DIFFERENCE_COLUMNS,
                      labels: dict[str, str] | None = None) -> pd.DataFrame:
    """How the configurations of ``here`` differ from ``paper``, one row per differing column.

    ``here``, ``paper``: one row per run configuration (e.g. the ``summary`` table, or the configurations
    of a sweep at two scales). For each column of ``columns`` present in both whose sets of distinct
    values differ: ``quantity`` (the label), ``paper`` and ``here`` (the values as text; a long list is
    shortened to its count; a missing value reads "default", or :data:`NONE_LABELS` for ``ptr`` /
    ``test_size``). Empty (same columns) when nothing differs.
    """
    for arg, df in (("here", here), ("paper", paper)):
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"{arg} must be a pandas DataFrame, got {type(df).__name__}")
    labels = labels or {}
    rows = []
    for c in columns:
        if c not in here.columns or c not in paper.columns:
            continue
        none = NONE_LABELS.get(c, "default")
        a = {none if _missing(v) else _integral(v) for v in paper[c].tolist()}
        b = {none if _missing(v) else _integral(v) for v in here[c].tolist()}
        if a != b:
            rows.append({"quantity": labels.get(c, c), "paper": _short(a), "here": _short(b)})
    return pd.DataFrame(rows, columns=["quantity", "paper", "here"])


def differences(here: pd.DataFrame, paper: pd.DataFrame, columns: Sequence[str] = DIFFERENCE_COLUMNS,
                labels: dict[str, str] | None = None) -> str:
    """:func:`differences_table` as one line of text: ``"<label>: <paper values> in the paper, <here
    values> here; ..."``, or ``"nothing"`` if no column differs."""
    table = differences_table(here, paper, columns, labels)
    items = [f"{r.quantity}: {r.paper} in the paper, {r.here} here" for r in table.itertuples()]
    return "; ".join(items) if items else "nothing"


def ptr_text(summary: pd.DataFrame) -> str:
    """Training-set sizes of the runs: the distinct ``ptr`` values, or "all 50,000" (CIFAR-10) / "full
    training set" when the runs used the whole set."""
    if "ptr" not in summary.columns or summary["ptr"].isna().all():
        tasks = set(summary["task"].dropna()) if "task" in summary.columns else set()
        return "all 50,000" if tasks == {"cifar10"} else NONE_LABELS["ptr"]
    return ", ".join(str(int(v)) for v in sorted(summary["ptr"].dropna().unique()))


def _integral(v):
    """``1024.0 -> 1024`` (pandas turns integer columns with missing values into floats)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    return v


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _short(values: set, limit: int = 6) -> str:
    if len(values) > limit:
        return f"{len(values)} values"
    return _fmt_values(list(values)) if values else "none"


def _device_text(summary: pd.DataFrame) -> str:
    if "device" not in summary.columns:
        return "unknown"
    names = []
    for _, r in summary.drop_duplicates([c for c in ("device", "device_name") if c in summary]).iterrows():
        if _missing(r["device"]):
            continue
        dn = r.get("device_name")
        names.append(f"{r['device']} ({dn})" if isinstance(dn, str) and dn and dn != r["device"] else
                     str(r["device"]))
    return ", ".join(sorted(set(names))) or "unknown"


def _data_text(summary: pd.DataFrame) -> str:
    if "data" in summary.columns and summary["data"].notna().any():
        return ", ".join(sorted(set(summary["data"].dropna().astype(str))))
    tasks = set(summary["task"].dropna()) if "task" in summary.columns else set()
    parts = []
    if "cifar10" in tasks:
        parts.append(_cifar_source())
    if "twopoints" in tasks:
        opts = _task_options(summary, "twopoints")
        parts.append("2-D scale detection, generated ({})".format(
            ", ".join(f"{k} = {v}" for k, v in opts.items()) or "d = 28, xi = 14, gap = 2, L2"))
    if "scale1d" in tasks:
        parts.append("1-D scale detection, generated")
    return "; ".join(parts) or "unknown"


def _task_options(summary: pd.DataFrame, task: str) -> dict:
    rows = summary[summary["task"] == task] if "task" in summary.columns else summary.iloc[:0]
    if "task_options" not in rows.columns or rows.empty:
        return {}
    opts = config_values(rows, "task_options").dropna()
    unique = {json.dumps(o, sort_keys=True) for o in opts if isinstance(o, dict)}
    return json.loads(unique.pop()) if len(unique) == 1 else {}


def _cifar_source() -> str:
    """Which CIFAR-10 copy ``stabkit.data`` finds here (the runs do not record it): the first entry named
    ``cifar*`` in the roots of :func:`stabkit.data.data_roots`, or the root itself."""
    try:
        from stabkit import data

        for root in data.data_roots():
            if not root.exists():
                continue
            found = [root] if root.name.lower().startswith("cifar") else sorted(
                p for p in root.iterdir() if p.name.lower().startswith("cifar"))
            if found:
                path = found[0]
                what = ("the JPEG copy (quality 75)" if "jpeg" in path.name.lower() else
                        "the original pickles" if "python" in path.name.lower() else f"class folders/archive {path.name}")
                return f"CIFAR-10, {what}, found at {path.name}"
    except Exception:  # noqa: BLE001 - a description only
        pass
    return "CIFAR-10 (source not recorded)"


def page_facts(summary: pd.DataFrame, sweep: Any = None, scale: str | None = None) -> dict[str, Any]:
    """What a figure page states about its runs, computed from the ``summary`` table.

    Returns strings ``seeds``, ``nets``, ``epochs``, ``P``, ``ptr`` (:func:`ptr_text`), ``device``, ``data``, ``differences`` (from
    the paper's grid: :func:`differences` between ``summary`` and ``stabkit.runs.load_sweep(sweep,
    "paper")``; ``"nothing"`` at scale ``paper``; ``"unknown"`` without ``sweep``) and ints ``n_runs``,
    ``n_failed``. ``summary``: the collected ``summary`` table (config columns included).
    """
    if not isinstance(summary, pd.DataFrame):
        raise ValueError(f"summary must be a pandas DataFrame, got {type(summary).__name__}")
    ok = summary[summary["status"] != "failed"] if "status" in summary.columns else summary
    facts = run_facts(ok, columns=("seed", "net", "epochs", "P", "ptr"))
    out: dict[str, Any] = {
        "seeds": facts.get("seed", "n/a"), "nets": facts.get("net", "n/a"),
        "epochs": facts.get("epochs", "n/a"), "P": facts.get("P", "n/a"), "ptr": ptr_text(ok),
        "device": _device_text(ok), "data": _data_text(ok), "n_runs": facts["n_runs"],
        "n_failed": int((summary["status"] == "failed").sum()) if "status" in summary.columns else 0,
    }
    if sweep is None:
        out["differences"] = "unknown"
    elif scale == "paper":
        out["differences"] = "nothing (this is the paper's grid)"
    else:
        from stabkit import runs

        paper = pd.DataFrame([c.to_dict() for c in runs.load_sweep(sweep, "paper").configs])
        out["differences"] = differences(ok, paper)
    return out


def run_facts(table: pd.DataFrame, columns: Sequence[str] = ("seed", "device", "dataset", "data",
                                                              "epochs", "P", "net", "scale")) -> dict:
    """Short strings describing the runs behind a table, for the page text.

    For every column of ``columns`` present in ``table``: its distinct values joined by ", " (an integer
    range as ``"0-3"``). Also ``n_runs`` (distinct runs) and ``n_rows``. Missing columns are skipped.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    facts: dict[str, Any] = {}
    for c in columns:
        if c in table.columns:
            facts[c] = _fmt_values(table[c].dropna().unique().tolist())
    keys = run_columns(table)
    facts["n_runs"] = int(table[keys].drop_duplicates().shape[0]) if keys else int(len(table))
    facts["n_rows"] = int(len(table))
    return facts


def closer_to_prediction(exponents: dict, predicted: dict, tasks: dict) -> tuple[str, str]:
    """Which fitted exponents moved towards the prediction with training.

    ``exponents``: ``{(task label, state): {"D": ..., "G": ..., "R": ...}}`` for states ``init`` and
    ``trained``; ``predicted``: ``{"D": ..., ...}``; ``tasks``: ``{task id: task label}``. Returns two
    texts, e.g. ``("D (tasks 1 and 2), R (task 1)", "G (tasks 1 and 2)")`` (``"none"`` when empty).
    """
    closer, farther = [], []
    for q in predicted:
        moved = {tid: abs(exponents[(t, "trained")][q] - predicted[q]) < abs(exponents[(t, "init")][q] - predicted[q])
                 for tid, t in tasks.items()}
        for flag, bucket in ((True, closer), (False, farther)):
            ids = [str(tid) for tid, m in moved.items() if m == flag]
            if ids:
                bucket.append(f"{q} (task{'s' if len(ids) > 1 else ''} {' and '.join(ids)})")
    return ", ".join(closer) or "none", ", ".join(farther) or "none"
