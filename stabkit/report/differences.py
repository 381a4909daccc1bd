"""How a page's runs differ from the paper's protocol: the paper's protocol per sweep
(the ``paper:`` block of its sweep file, ``book/methods.md``, "Tasks, networks and training") and the "different from the
paper" table and line of text (:func:`differences_table`, :func:`differences`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from stabkit.protocol import TASKS, training_defaults
from stabkit.sweeps.sweepfile import Sweep, sweep_facts

from .tables import as_integral, is_missing, values_text

__all__ = [
    "paper_protocol", "DIFFERENCE_COLUMNS", "DIFFERENCE_LABELS", "PER_NET_COLUMNS", "NOT_GIVEN",
    "NONE_LABELS", "differences_table", "differences",
]


def paper_protocol(sweep: str | Sweep | Mapping) -> pd.DataFrame | None:
    """The paper's protocol of ``sweep`` (its sweep file's ``paper:`` block, ``book/methods.md``, "Tasks,
    networks and training": a field the paper does not give is absent) as a table whose column ``c`` holds
    the paper's set of values of ``c`` (rows padded by repetition), the form :func:`differences` compares;
    ``None`` for a sweep that is not a figure of the paper (the probe pages). ``sweep``: a name under
    ``sweeps/``, a file, a parsed mapping or a ``Sweep``."""
    proto = sweep_facts(sweep).paper
    if proto is None:
        return None
    n = max(len(v) for v in proto.values())
    return pd.DataFrame({k: [v[i % len(v)] for i in range(n)] for k, v in proto.items()})


#: Configuration columns compared by :func:`differences` and :func:`differences_table`: the paper's
#: protocol (networks, seeds, epochs, training-set size, width, probes, precision of the measurement...).
DIFFERENCE_COLUMNS = ("net", "seed", "epochs", "ptr", "test_size", "P", "noise_std", "width_factor",
                      "batch_size", "optimizer", "lr", "weight_decay", "schedule", "precision", "measure_dtype")


#: Row labels of the "different from the paper" table on the pages.
DIFFERENCE_LABELS = {"net": "networks", "seed": "seeds", "epochs": "epochs (at most)", "ptr": "training-set size",
                     "test_size": "test-set size", "P": "probes $P$", "noise_std": "training noise std",
                     "width_factor": "width (factor on the channels)", "batch_size": "batch size",
                     "optimizer": "optimizer", "lr": "learning rate", "weight_decay": "weight decay",
                     "schedule": "learning-rate schedule", "precision": "training arithmetic",
                     "measure_dtype": "measurement precision"}


#: Training hyper-parameters the paper sets per network (``stabkit.protocol.training_defaults``: the
#: fully-connected nets train with Adam): the differences name the networks whose runs depart from them.
PER_NET_COLUMNS = ("optimizer", "lr", "weight_decay", "schedule")


#: Protocol values the paper does not give, per task: the page says "not given" for the paper instead of
#: quoting the ``paper`` scale's choice (the 1-D appendix's learning rate and batch size are ours).
NOT_GIVEN = {"scale1d": ("lr", "batch_size")}


#: How :func:`differences` writes a missing (``None``) value of these columns.
NONE_LABELS = {"ptr": "full training set", "test_size": "full test set", "precision": "float32"}


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
    not_given = {c for t in (set(here["task"].dropna()) if "task" in here.columns else ())
                 for c in NOT_GIVEN.get(t, ())}
    rows = []
    for c in columns:
        if c not in here.columns:
            continue
        none = NONE_LABELS.get(c, "default")
        b = {none if is_missing(v) else as_integral(v) for v in here[c].tolist()}
        if c in not_given:
            rows.append({"quantity": labels.get(c, c), "paper": "not given", "here": _short(b)})
            continue
        if c in PER_NET_COLUMNS and {"task", "net"} <= set(here.columns):
            row = _per_net_difference(here, c)
            if row is not None:
                rows.append({"quantity": labels.get(c, c), **row})
            continue
        if c not in paper.columns:
            continue
        a = {none if is_missing(v) else as_integral(v) for v in paper[c].tolist()}
        if a != b:
            rows.append({"quantity": labels.get(c, c), "paper": _short(a), "here": _short(b)})
    return pd.DataFrame(rows, columns=["quantity", "paper", "here"])


def _per_net_difference(here: pd.DataFrame, column: str) -> dict[str, str] | None:
    """``{"paper", "here"}`` texts for the runs of ``here`` whose ``column`` differs from the paper's value
    for their task and network, e.g. ``{"paper": "sgd", "here": "adam (VGG11)"}``; ``None`` if none does."""
    departures: dict[tuple, set] = {}
    for task, net, v in zip(here["task"], here["net"], here[column]):
        if is_missing(v) or is_missing(task) or task not in TASKS:
            continue
        default = training_defaults(str(task), str(net))[column]
        if as_integral(v) != as_integral(default):
            departures.setdefault((as_integral(v), as_integral(default)), set()).add(str(net))
    if not departures:
        return None
    items = sorted(departures.items(), key=lambda kv: str(kv[0]))
    return {"paper": ", ".join(sorted({str(d) for (_, d), _ in items})),
            "here": "; ".join(f"{v} ({', '.join(sorted(nets))})" for (v, _), nets in items)}


def differences(here: pd.DataFrame, paper: pd.DataFrame, columns: Sequence[str] = DIFFERENCE_COLUMNS,
                labels: dict[str, str] | None = None) -> str:
    """:func:`differences_table` as one line of text: ``"<label>: <paper values> in the paper, <here
    values> here; ..."``, or ``"nothing"`` if no column differs."""
    table = differences_table(here, paper, columns, labels)
    items = [f"{r.quantity}: {r.paper} in the paper, {r.here} here" for r in table.itertuples()]
    return "; ".join(items) if items else "nothing"


def _short(values: set, limit: int = 6) -> str:
    text = values_text(list(values)) if values else "none"
    if len(values) > limit and not (all(isinstance(v, (int, np.integer)) for v in values) and "-" in text):
        return f"{len(values)} values"  # a long list (a range of integers stays "0-9")
    return text
