"""Page prose computed from the run tables: what a page states about its runs, and how they differ
from the paper's protocol (as text and as a small table).

``page_facts(summary, sweep, scale)`` gives the strings every figure page shows under "This run"
(seeds, nets, epochs, P, training-set size, device, data, and the differences from the paper's protocol
as a line of text and as a small markdown table); :func:`stabkit.report.glue.page` glues them under the
standard names.

:func:`ratio_parts` / :func:`parts_display`: the table of ``D``, ``G`` and ``deno`` at initialisation and after
training, which shows whether a ratio (``R_f = D/G``, ``D_f = D/deno``) moved because of its numerator or
its denominator (the sentences are :mod:`stabkit.report.narrative`'s). :func:`table_downloads` writes a page's tables as CSV
files and returns the ``{download}`` links the page shows under "Data".
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stabkit.atomic import atomic_write_text
from stabkit.protocol import TASKS, training_defaults

from .analysis import config_values, run_columns
from .fidelity import paper_protocol

__all__ = ["NONE_LABELS", "DIFFERENCE_COLUMNS", "DIFFERENCE_LABELS", "NOT_GIVEN", "differences",
           "differences_table", "markdown_table", "page_facts", "run_facts", "errors_text", "error_range", "ERROR_LABELS", "ptr_text", "FACT_KEYS",
           "closer_to_prediction", "ratio_parts", "parts_display",
           "table_downloads", "ENV_PAGE_TABLES", "MarkdownText", "example_note"]

#: The facts :func:`page_facts` returns (and :func:`stabkit.report.glue.page` glues, under these names):
#: ``differences`` is one line of text, ``differences_md`` the same as a small markdown table (render it
#: with a ``{glue:md}`` directive and ``:format: myst``).
FACT_KEYS = ("seeds", "nets", "epochs", "P", "ptr", "device", "data", "differences", "differences_md", "n_runs",
             "n_failed", "test_errors", "error_range")
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
        b = {none if _missing(v) else _integral(v) for v in here[c].tolist()}
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
        a = {none if _missing(v) else _integral(v) for v in paper[c].tolist()}
        if a != b:
            rows.append({"quantity": labels.get(c, c), "paper": _short(a), "here": _short(b)})
    return pd.DataFrame(rows, columns=["quantity", "paper", "here"])


def _per_net_difference(here: pd.DataFrame, column: str) -> dict[str, str] | None:
    """``{"paper", "here"}`` texts for the runs of ``here`` whose ``column`` differs from the paper's value
    for their task and network, e.g. ``{"paper": "sgd", "here": "adam (VGG11)"}``; ``None`` if none does."""
    departures: dict[tuple, set] = {}
    for task, net, v in zip(here["task"], here["net"], here[column]):
        if _missing(v) or _missing(task) or task not in TASKS:
            continue
        default = training_defaults(str(task), str(net))[column]
        if _integral(v) != _integral(default):
            departures.setdefault((_integral(v), _integral(default)), set()).add(str(net))
    if not departures:
        return None
    items = sorted(departures.items(), key=lambda kv: str(kv[0]))
    return {"paper": ", ".join(sorted({str(d) for (_, d), _ in items})),
            "here": "; ".join(f"{v} ({', '.join(sorted(nets))})" for (v, _), nets in items)}


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
    text = _fmt_values(list(values)) if values else "none"
    if len(values) > limit and not (all(isinstance(v, (int, np.integer)) for v in values) and "-" in text):
        return f"{len(values)} values"  # a long list (a range of integers stays "0-9")
    return text


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


def example_note(generated: bool, real: str, instead: str) -> MarkdownText:
    """Markdown about a page's example images (render it with a ``{glue:md}`` directive and ``:format: myst``).

    ``real``: what the examples show when they are CIFAR-10 test images. When they are ``generated``
    (CIFAR-10 not found, :data:`stabkit.robustness.GENERATED_EXAMPLES`), a visible warning that they are not
    CIFAR-10 and how to provide the data, then ``instead``: text that claims only what a generated pattern
    can show (no object to recognise, no class)."""
    if not isinstance(generated, bool):
        raise TypeError(f"generated must be True or False, got {generated!r}")
    if not generated:
        return MarkdownText(real)  # text/markdown: what a {glue:md} directive renders
    return MarkdownText("```{warning}\nThese examples are **generated patterns, not CIFAR-10 images**: CIFAR-10 was not "
            "found and nothing is downloaded. They show what the transformation does to the pixels, not what "
            "it does to a photograph. To show CIFAR-10 test images, set `STABKIT_DATA` to a copy (torchvision's "
            "`cifar-10-batches-py` or a class-folder archive) and rebuild the page.\n```\n\n" + instead)


def page_facts(summary: pd.DataFrame, sweep: Any = None, scale: str | None = None) -> dict[str, Any]:
    """What a figure page states about its runs, computed from the ``summary`` table.

    Returns strings ``seeds``, ``nets``, ``epochs``, ``P``, ``ptr`` (:func:`ptr_text`), ``device``, ``data``, ``differences`` (from
    the paper's grid: :func:`differences` between ``summary`` and ``stabkit.sweeps.load_sweep(sweep,
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
        from stabkit import sweeps

        # The paper's protocol (fidelity.PAPER_PROTOCOL: what the paper states, not the `paper` scale's
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


def _missing(v: Any) -> bool:
    if isinstance(v, (list, tuple, dict, np.ndarray)):
        return False
    return v is None or bool(pd.isna(v))  # None, NaN, pd.NA, NaT


def _label_value(v: Any) -> str:
    if _missing(v):
        return ""
    if isinstance(v, (list, tuple, np.ndarray)):
        return "+".join(str(x) for x in v) or "none"
    if isinstance(v, str):
        return "+".join(x.strip() for x in v.split(",")) if "," in v else (v or "none")
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def _sort_key(v: Any):
    if _missing(v):
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


class MarkdownText(str):
    """A string that notebooks display as markdown (``text/markdown``): what a ``{glue:md}`` directive
    needs (a plain string is glued as ``text/plain`` only)."""

    def _repr_markdown_(self) -> str:
        return str(self)


# ------------------------------------------------------------------------------ what the data show
def ratio_parts(output: pd.DataFrame, by: Sequence[str] = (), shuffle: int | None = 0) -> pd.DataFrame:
    """Where a ratio's change comes from: the geometric means over runs of ``D``, ``G``, ``deno`` and of
    ``D_f = D/deno``, ``G_f = G/deno``, ``R_f = D/G``, at initialisation, after training, and their
    ratio trained / init (the row ``"trained / init"``), optionally per ``by`` (e.g. ``("noise_std",)``).
    Only runs measured in both states count. ``output``: the ``output`` run table."""
    cols = ["D", "G", "deno", "D_f", "G_f", "R_f"]
    if not isinstance(output, pd.DataFrame):
        raise ValueError(f"output must be a pandas DataFrame, got {type(output).__name__}")
    missing = [c for c in [*cols, "state", *by] if c not in output.columns]
    if missing:
        raise ValueError(f"output lacks columns {missing}")
    df = output if shuffle is None or "shuffle" not in output.columns else output[output["shuffle"] == shuffle]
    keys = [k for k in run_columns(df) if k not in cols and k not in ("state", "test_err", "task_err",
                                                                     "test_err_corrupted", "P")]
    keys = [*by, *[k for k in keys if k not in by]]
    logs = df[[*keys, "state"]].copy()
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        logs[c] = np.log10(np.where(v > 0, v, np.nan))
    wide = logs.groupby([*keys, "state"], dropna=False)[cols].mean().unstack("state")
    rows = []
    groups = wide.groupby(level=list(by), dropna=False) if by else [((), wide)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        for state in ("init", "trained"):
            if state in g.columns.get_level_values(1):
                both = g.dropna(subset=[(c, s) for c in ("R_f",) for s in ("init", "trained")
                                        if s in g.columns.get_level_values(1)])
                rows.append({**dict(zip(by, key)), "": state, "n": len(both),
                             **{c: 10 ** both[(c, state)].mean() for c in cols}})
        if {"init", "trained"} <= set(g.columns.get_level_values(1)):
            both = g.dropna(subset=[("R_f", "init"), ("R_f", "trained")])
            rows.append({**dict(zip(by, key)), "": "trained / init", "n": len(both),
                         **{c: 10 ** (both[(c, "trained")] - both[(c, "init")]).mean() for c in cols}})
    return pd.DataFrame(rows, columns=[*by, "", "n", *cols])


def parts_display(parts: pd.DataFrame):
    """:func:`ratio_parts` for display: numbers with 3 significant digits, a missing one as an en dash, no
    index (a pandas Styler). The table is marked as a DataFrame (``class="dataframe"``), as pandas marks
    its own: its column names are the CSV's (``D_f``), which ``make check-book`` accepts there only."""
    cols = [c for c in ("D", "G", "deno", "D_f", "G_f", "R_f") if c in parts.columns]
    return (parts.style.format("{:.3g}", subset=cols, na_rep="\u2013").hide(axis="index")
            .set_table_attributes('class="dataframe"'))


# ---------------------------------------------------------------------------------------- downloads
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
