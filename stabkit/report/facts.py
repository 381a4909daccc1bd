"""What a page states about its runs, computed from the ``summary`` table: the "This run" facts (seeds,
nets, epochs, P, training-set size, device, data, test errors, the differences from the paper's
protocol as a line and as a markdown table: :func:`page_facts`, glued by
:func:`stabkit.report.page.page` under :data:`FACT_KEYS`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from stabkit import sweeps

from .differences import DIFFERENCE_LABELS, NONE_LABELS, differences_table, paper_protocol
from .tables import MarkdownText, config_values, is_missing, markdown_table, run_columns, values_text

__all__ = ["FACT_KEYS", "ptr_text", "page_facts", "ERROR_LABELS", "error_range", "errors_text", "run_facts"]


#: The facts :func:`page_facts` returns (and :func:`stabkit.report.page.page` glues, under these names):
#: ``differences`` is one line of text, ``differences_md`` the same as a small markdown table (render it
#: with a ``{glue:md}`` directive and ``:format: myst``).
FACT_KEYS = ("seeds", "nets", "epochs", "P", "ptr", "device", "data", "differences", "differences_md", "n_runs",
             "n_failed", "test_errors", "error_range")


def ptr_text(summary: pd.DataFrame) -> str:
    """Training-set sizes of the runs: the distinct ``ptr`` values, or "all 50,000" (CIFAR-10) / "full
    training set" when the runs used the whole set."""
    if "ptr" not in summary.columns or summary["ptr"].isna().all():
        tasks = set(summary["task"].dropna()) if "task" in summary.columns else set()
        return "all 50,000" if tasks == {"cifar10"} else NONE_LABELS["ptr"]
    return ", ".join(str(int(v)) for v in sorted(summary["ptr"].dropna().unique()))


def _device_text(summary: pd.DataFrame) -> str:
    if "device" not in summary.columns:
        return "unknown"
    names = []
    for _, r in summary.drop_duplicates([c for c in ("device", "device_name") if c in summary]).iterrows():
        if is_missing(r["device"]):
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
        from stabkit import data  # torch: imported when the data is described, so that page() stays torch-free

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
    the paper's grid: ``differences()`` between ``summary`` and ``stabkit.sweeps.load_sweep(sweep,
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
        "test_errors": errors_text(ok), "error_range": error_range(ok),
    }
    if sweep is None:
        out["differences"] = "unknown"
        out["differences_md"] = MarkdownText("Unknown (no sweep given).")
    else:
        # The paper's protocol (the sweep file's `paper:` block: what the paper states, not the `paper` scale's
        # choices); the probe pages, which reproduce other papers, compare with their sweep's paper grid.
        # At the paper scale the grid is the paper's: only values the paper does not give are listed.
        proto = paper_protocol(sweep)
        paper = ok if scale == "paper" else proto if proto is not None else pd.DataFrame(
            [c.to_dict() for c in sweeps.load_sweep(sweep, "paper").configs])
        table = differences_table(ok, paper)
        table = table.assign(here=[_protocol_value(q, v) for q, v in zip(table["quantity"], table["here"])],
                             paper=[_protocol_value(q, v) for q, v in zip(table["quantity"], table["paper"])])
        text = "; ".join(f"{r.quantity}: {r.paper} in the paper, {r.here} here" for r in table.itertuples())
        out["differences"] = text or ("nothing (this is the paper's grid)" if scale == "paper" else "nothing")
        shown = table.assign(quantity=[DIFFERENCE_LABELS.get(q, q) for q in table["quantity"]])
        shown.columns = ["", "the paper", f"this page ({scale})" if scale else "this page"]
        out["differences_md"] = MarkdownText(markdown_table(shown, empty="Nothing: these runs follow the paper's "
                                                                      "protocol."))
    return out


def _protocol_value(column: str, value: str) -> str:
    if column == "measure_dtype" and value in ("float32", "float64"):
        return f"{value} measurement"
    return value


#: Configuration columns that can tell two runs of one network apart in :func:`errors_text`, in the order
#: they are preferred as labels (after them the ``net_options.*`` / ``task_options.*`` fields), with the
#: words the page uses. Seeds are not labels: runs that differ only by seed are listed together.
ERROR_LABELS = {"task": "task", "noise_std": "noise std", "augment": "augment", "ptr": "P_train",
                "width_factor": "width", "epochs": "epochs", "optimizer": "optimizer", "lr": "lr",
                "weight_decay": "weight decay"}


_OPTION_PREFIXES = ("net_options.", "task_options.")


def _label_value(v: Any) -> str:
    if is_missing(v):
        return ""
    if isinstance(v, (list, tuple, np.ndarray)):
        return "+".join(str(x) for x in v) or "none"
    if isinstance(v, str):
        return "+".join(x.strip() for x in v.split(",")) if "," in v else (v or "none")
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def _sort_key(v: Any):
    if is_missing(v):
        return (0, 0.0, "")
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        return (1, float(v), "")
    return (2, 0.0, _label_value(v))


def _label_columns(keys: pd.DataFrame) -> list[str]:
    """The fewest columns of ``keys`` (label strings per run; preferred ones first) that split the runs as
    all of them together do."""
    varying = [c for c in keys.columns if keys[c].nunique() > 1]
    rank = {c: i for i, c in enumerate(ERROR_LABELS)}
    # preferred columns first, then those with more distinct values, then those set on more runs
    varying.sort(key=lambda c: (rank.get(c, len(rank)), -keys[c].nunique(), int((keys[c] == "").sum()), c))
    target = keys[varying].drop_duplicates().shape[0] if varying else 1
    chosen: list[str] = []
    for c in varying:
        before = keys[chosen].drop_duplicates().shape[0] if chosen else 1
        if keys[chosen + [c]].drop_duplicates().shape[0] > before:
            chosen.append(c)
        if keys[chosen].drop_duplicates().shape[0] == target:
            break
    return chosen


def error_range(summary: pd.DataFrame) -> str:
    """The test-error regime of a page in a few words: ``"best 0.0-35.6 %, last epoch 0.0-50.0 %"``
    (percent; ``"n/a"`` without ``best_test_err``)."""
    if not isinstance(summary, pd.DataFrame):
        raise ValueError(f"summary must be a pandas DataFrame, got {type(summary).__name__}")
    parts = []
    for col, label in (("best_test_err", "best"), ("last_test_err", "last epoch")):
        if col in summary.columns:
            e = 100 * pd.to_numeric(summary[col], errors="coerce").dropna()
            if len(e):
                parts.append(f"{label} {e.min():.1f}-{e.max():.1f} %")
    return ", ".join(parts) or "n/a"


def errors_text(summary: pd.DataFrame, max_listed: int = 4) -> str:
    """Best test error of each run, per network, in percent.

    Runs of one network that differ by their set-up (:data:`ERROR_LABELS` and the expanded
    ``net_options.*`` / ``task_options.*`` columns) are labelled by the fewest settings that tell them
    apart: ``"VGG11bn 20.2 % (augment crop+flip), 48.7 % (augment crop+flip+rotate)"``. Runs that differ
    only by seed are listed together, ``"ResNet18 19.5, 20.1 %"``, or as a range past ``max_listed`` runs,
    ``"LeNet 4.1-5.9 % (12 runs)"``. Networks sorted by name, settings by value; ``"n/a"`` without a
    ``best_test_err`` column."""
    if not isinstance(summary, pd.DataFrame):
        raise ValueError(f"summary must be a pandas DataFrame, got {type(summary).__name__}")
    if not isinstance(max_listed, int) or isinstance(max_listed, bool) or max_listed < 1:
        raise ValueError(f"max_listed must be a positive integer, got {max_listed!r}")
    if "best_test_err" not in summary.columns or "net" not in summary.columns:
        return "n/a"
    df = summary.assign(_err=pd.to_numeric(summary["best_test_err"], errors="coerce")).dropna(subset=["_err"])
    candidates = [c for c in df.columns if c in ERROR_LABELS or c.startswith(_OPTION_PREFIXES)]

    def listed(errs: list[float]) -> str:
        errs = sorted(100 * e for e in errs)
        if len(errs) > max_listed:
            return f"{errs[0]:.1f}-{errs[-1]:.1f} % ({len(errs)} runs)"
        return f"{', '.join(f'{e:.1f}' for e in errs)} %"

    parts = []
    for net, g in df.groupby("net", sort=True):
        keys = pd.DataFrame({c: g[c].map(_label_value) for c in candidates}, index=g.index)
        labels = _label_columns(keys)
        if not labels:
            parts.append(f"{net} {listed(g['_err'].tolist())}")
            continue
        settings = []
        for _, h in g.groupby([keys[c] for c in labels], sort=False):
            first = keys.loc[h.index[0]]
            words = ", ".join(f"{ERROR_LABELS.get(c, c.split('.', 1)[-1].replace('_', ' '))} {first[c]}"
                              for c in labels if first[c]) or "defaults"
            settings.append(([_sort_key(h[c].iloc[0]) for c in labels], f"{listed(h['_err'].tolist())} ({words})"))
        parts.append(f"{net} " + ", ".join(text for _, text in sorted(settings, key=lambda t: t[0])))
    return "; ".join(parts) or "n/a"


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
            facts[c] = values_text(table[c].dropna().unique().tolist())
    keys = run_columns(table)
    facts["n_runs"] = int(table[keys].drop_duplicates().shape[0]) if keys else int(len(table))
    facts["n_rows"] = int(len(table))
    return facts
