"""Which rows a page shows and a claim tests: the paper's probe set and ReLU convention
(:func:`paper_rows`), the error of the task a net was trained for, the CNNs that train well
(:data:`WELL_TRAINED_RULE`), the runs that converged (:data:`CONVERGENCE_RULE`: best against last test
error, training error fell) and those that stopped early at zero training loss (:func:`early_fits`), and
the control runs that measure again a network another run of the page measures (:func:`control_runs`), and
the runs a wider or longer training of the same network supersedes (:func:`superseded_runs`).

See ``book/methods.md``, "Parity with the original code". Nothing here decides a verdict (the
``*_claims`` modules) or words a change (:mod:`stabkit.report.narrative`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import numpy as np
import pandas as pd

from stabkit.protocol import is_fully_connected
from stabkit.runs.config import RunConfig

from .stats import NEAR_CHANCE, chance_error
from .tables import require_columns, run_columns

__all__ = [
    "MAX_ERROR", "FALLS_MAX_ERROR", "LAST_WITHIN", "CONVERGENCE_RULE", "EXCLUDED_NETS", "well_trained_rule",
    "WELL_TRAINED_RULE", "paper_rows", "task_error_column", "well_trained_cnns", "convergence",
    "with_convergence", "collapsed_runs", "early_fits", "CONTROL_MEASUREMENTS", "control_runs",
    "SUCCESSION_FIELDS", "superseded_runs", "superseded_text",
]


#: Largest test error of a network that "trains well" (the claims stated for such networks). In the
#: paper every CIFAR-10 CNN but LeNet ends below about 25 % (AlexNet, the worst, near 20-25 %) and the
#: scale-detection nets below a few %; 30 % keeps all of them and leaves out networks that have not
#: left their initial plateau or learnt little (the cpu/small scales' partly trained nets: 60-70 %).
MAX_ERROR = 0.3


#: Largest test error of a network on which "R_f falls by decades" is testable: the paper's own law
#: (eps_t ~ 0.2 sqrt(R_f)) puts R_f of order one above about 10-20 % error, so a net at 19-33 % cannot
#: show a fall of decades whatever the mechanism.
FALLS_MAX_ERROR = 0.1


#: A run converged when its last-epoch test error is within this (absolute: 2 points) of its best.
LAST_WITHIN = 0.02


#: The convergence rule of :func:`convergence` in words.
CONVERGENCE_RULE = (f"well trained: last-epoch test error within {100 * LAST_WITHIN:g} points of the best, and the "
                    f"training error fell (last epoch below both the first epoch and {NEAR_CHANCE:g} x chance); "
                    f"collapsed: best below {NEAR_CHANCE:g} x chance, last epoch at or above it")


#: CNNs the paper itself sets apart (LeNet: too shallow to pool, trains to ~35 % on CIFAR-10).
EXCLUDED_NETS = ("LeNet",)


def well_trained_rule(max_error: float = MAX_ERROR, excluded: Sequence[str] = EXCLUDED_NETS) -> str:
    """The rule of :func:`well_trained_cnns` in words (shown on the page with the claim)."""
    return (f"CNNs only (not the FCNs DenseNetL*, not {', '.join(excluded)}) whose trained test error is below "
            f"{100 * max_error:g} %")


#: The rule of :func:`well_trained_cnns` in words, with the default threshold (:data:`MAX_ERROR`) and
#: exclusions (:data:`EXCLUDED_NETS`); shown on a page next to the claims stated for such networks.
WELL_TRAINED_RULE = well_trained_rule()


def paper_rows(df: pd.DataFrame, probes: str = "paper", relu_convention: str | None = "true") -> pd.DataFrame:
    """Rows of an ``output`` / ``layers`` table measured as the figure shows them.

    ``probes``: ``"paper"`` (a noise-trained CIFAR-10 net on its own corrupted test images, every other
    net on clean images: the ``"corrupted"`` rows where a run has them, else ``"clean"``), ``"clean"``
    (clean images for every net), ``"corrupted"`` or ``None`` (all rows). Tables written before the
    ``probes`` column existed were measured on clean images: they are kept as they are.
    ``relu_convention``: keep that convention when the table has a ``relu_convention`` column
    (``"true"``, the default, or ``"inplace"``; ``None`` keeps both)."""
    require_columns(df, [], "df")
    out = df
    if relu_convention is not None and "relu_convention" in out.columns:
        out = out[out["relu_convention"].fillna("true") == relu_convention]
    if probes is None or "probes" not in out.columns:
        return out
    if probes not in ("paper", "clean", "corrupted"):
        raise ValueError(f"probes must be 'paper', 'clean', 'corrupted' or None, got {probes!r}")
    kind = out["probes"].fillna("clean")
    if probes != "paper":
        return out[kind == probes]
    keys = run_columns(out.drop(columns=["probes"]))
    has = kind.eq("corrupted").groupby([out[k] for k in keys], dropna=False).transform("any") if keys else \
        pd.Series(kind.eq("corrupted").any(), index=out.index)
    return out[np.where(has.to_numpy(dtype=bool), kind.eq("corrupted"), kind.eq("clean"))]


def task_error_column(df: pd.DataFrame) -> str:
    """``task_err`` (the error on the task the net was trained for: :func:`~stabkit.report.tables.with_task_error`)
    when the table has it, else ``test_err``."""
    return "task_err" if "task_err" in df.columns else "test_err"


def well_trained_cnns(output: pd.DataFrame, max_error: float = MAX_ERROR, excluded: Sequence[str] = EXCLUDED_NETS,
                      error: str | None = None) -> pd.DataFrame:
    """Rows (every state and shuffle) of the runs of CNNs that train well (:data:`WELL_TRAINED_RULE`):
    not fully connected, not in ``excluded``, trained (shuffle 0) ``error`` below ``max_error``
    (default column: :func:`task_error_column`) and, when ``output`` carries the convergence columns
    (:func:`with_convergence`), ``well_trained`` (:data:`CONVERGENCE_RULE`)."""
    if "well_trained" in output.columns:
        output = output[output["well_trained"].fillna(True).astype(bool)]
    error = error or task_error_column(output)
    require_columns(output, ["net", "state", error], "output")
    keys = run_columns(output.drop(columns=[c for c in ("probes", "relu_convention") if c in output.columns]))
    fcn = np.array([is_fully_connected(str(n)) for n in output["net"]], dtype=bool)
    ok_net = ~fcn & ~output["net"].isin(list(excluded)).to_numpy(dtype=bool)
    tr = output[ok_net & (output["state"] == "trained")]
    if "shuffle" in tr.columns:
        tr = tr[tr["shuffle"] == 0]
    good = tr.loc[tr[error] < max_error, keys].drop_duplicates()
    return output.merge(good, on=keys, how="inner") if keys else output[ok_net]


def convergence(summary: pd.DataFrame, metrics: pd.DataFrame | None = None, *, last_within: float = LAST_WITHIN,
                near: float = NEAR_CHANCE) -> pd.DataFrame:
    """Per run, whether it is "well trained" (:data:`CONVERGENCE_RULE`): the best-checkpoint selection
    on the test set can hide a run that collapsed to chance later or never left its plateau.

    ``summary``: one row per run with ``run``, ``net``, ``best_test_err``, ``last_test_err`` (fractions);
    ``metrics``: one row per epoch with ``run``, ``epoch``, ``train_err`` (``None``: the training-error
    rule is not checked). Returns one row per run: ``run``, ``net``, ``seed`` (when present),
    ``best_test_err``, ``last_test_err``, ``train_err_first``, ``train_err_last``, ``converged``,
    ``train_fell``, ``collapsed``, ``well_trained`` (bool) and ``reason`` (words, empty when well trained)."""
    require_columns(summary, ["run", "best_test_err", "last_test_err"], "summary")
    keep = [c for c in ("run", "net", "seed", "task", "noise_std", "ptr") if c in summary.columns]
    out = summary[keep + ["best_test_err", "last_test_err"]].drop_duplicates("run").reset_index(drop=True)
    chance = np.array([chance_error(out.iloc[[i]]) for i in range(len(out))], dtype=np.float64)
    out["train_err_first"] = np.nan
    out["train_err_last"] = np.nan
    if metrics is not None and len(metrics):
        require_columns(metrics, ["run", "epoch", "train_err"], "metrics")
        m = metrics.sort_values(["run", "epoch"]).groupby("run")["train_err"]
        out["train_err_first"] = out["run"].map(m.first()).astype(np.float64)
        out["train_err_last"] = out["run"].map(m.last()).astype(np.float64)
    best = out["best_test_err"].astype(np.float64).to_numpy()
    last = out["last_test_err"].astype(np.float64).to_numpy()
    first_tr = out["train_err_first"].to_numpy()
    last_tr = out["train_err_last"].to_numpy()
    out["converged"] = last - best <= last_within + 1e-12
    known = np.isfinite(last_tr)
    # one epoch has no "fell": a run whose single epoch ends below chance counts as having learnt
    fell = (last_tr < near * chance) & ((last_tr < first_tr) | (first_tr == last_tr))
    out["train_fell"] = np.where(known, fell, True)
    out["collapsed"] = (best < near * chance) & (last >= near * chance)
    out["well_trained"] = out["converged"] & out["train_fell"].astype(bool)
    reasons = []
    for i in range(len(out)):
        why = []
        if out["collapsed"].iloc[i]:
            why.append(f"collapsed: best {100 * best[i]:.1f} %, last epoch {100 * last[i]:.1f} % (chance "
                       f"{100 * chance[i]:g} %)")
        elif not out["converged"].iloc[i]:
            why.append(f"last epoch {100 * last[i]:.1f} % is {100 * (last[i] - best[i]):.1f} points above the best "
                       f"{100 * best[i]:.1f} %")
        if not out["train_fell"].iloc[i]:
            why.append(f"training error did not fall ({100 * first_tr[i]:.1f} % -> {100 * last_tr[i]:.1f} %)")
        reasons.append("; ".join(why))
    out["reason"] = reasons
    return out


def with_convergence(output: pd.DataFrame, conv: pd.DataFrame) -> pd.DataFrame:
    """``output`` (any run table with a ``run`` column) with the columns of :func:`convergence` joined
    by run: ``best_test_err``, ``last_test_err``, ``well_trained``, ``collapsed``, ``converged``,
    ``train_fell``. A run missing from ``conv`` keeps nan (treated as well trained by
    :func:`well_trained_cnns`: nothing says otherwise)."""
    require_columns(output, ["run"], "output")
    require_columns(conv, ["run", "well_trained"], "conv")
    cols = [c for c in ("best_test_err", "last_test_err", "well_trained", "collapsed", "converged", "train_fell")
            if c in conv.columns]
    base = output.drop(columns=[c for c in cols if c in output.columns])
    return base.merge(conv[["run", *cols]], on="run", how="left")


def collapsed_runs(conv: pd.DataFrame) -> pd.DataFrame:
    """The runs of :func:`convergence` that are not well trained, for the page's list: ``net``, ``seed``,
    best and last test error (%) and the reason."""
    bad = conv[~conv["well_trained"].astype(bool)]
    cols = [c for c in ("net", "seed", "noise_std", "ptr") if c in bad.columns]
    out = bad[cols].copy()
    out["best test error (%)"] = (100 * bad["best_test_err"]).round(1)
    out["last test error (%)"] = (100 * bad["last_test_err"]).round(1)
    out["why not well trained"] = bad["reason"]
    return out.reset_index(drop=True)


def early_fits(metrics: pd.DataFrame, threshold: float = 0.1) -> str:
    """The runs that stopped at zero training loss with a test error above ``threshold`` (a fraction), in
    one sentence: ``"VGG13bn seed 2 at epoch 6 (test error 35.6 %, test loss 5.7e+03 at epoch 1, 6.38 at
    the stop)"``, or a sentence saying there is none. ``metrics``: the per-epoch table of the runs (columns
    ``run``, ``net``, ``seed``, ``epoch``, ``train_loss``, ``test_err``, ``test_loss``)."""
    if not isinstance(metrics, pd.DataFrame):
        raise ValueError(f"metrics must be a pandas DataFrame, got {type(metrics).__name__}")
    need = ["run", "net", "seed", "epoch", "train_loss", "test_err", "test_loss"]
    missing = [c for c in need if c not in metrics.columns]
    if missing:
        raise ValueError(f"metrics lacks column(s) {missing} (has {list(metrics.columns)})")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be a fraction in (0, 1), got {threshold!r}")
    found = []
    for _, g in metrics.sort_values("epoch").groupby("run", sort=False):
        last, first = g.iloc[-1], g.iloc[0]
        if last["train_loss"] == 0.0 and last["test_err"] > threshold:
            found.append((str(last["net"]), int(last["seed"]),
                          f"{last['net']} seed {int(last['seed'])} at epoch {int(last['epoch'])} (test error "
                          f"{100 * last['test_err']:.1f} %, test loss {first['test_loss']:.3g} at epoch "
                          f"{int(first['epoch'])}, {last['test_loss']:.3g} at the stop)"))
    if not found:
        return f"No run stopped at zero training loss with a test error above {100 * threshold:.0f} %."
    return (f"Stopped at zero training loss with a test error above {100 * threshold:.0f} %: "
            + "; ".join(text for *_, text in sorted(found)) + ".")


#: Measurements that measure again, as a control, a network that another run of the page trained and
#: measures: the batch-norm recalibrated shuffle (``book/methods.md``, "Channel shuffling"; the sweep files
#: derive these runs from the plain ones with ``set: {measure: [recalibrated]}``).
CONTROL_MEASUREMENTS = frozenset({"recalibrated"})


def _measurements(value) -> list[str]:
    """A ``measure`` cell as a list of names: a list, its JSON text or its comma-joined text."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v).strip() for v in value]
    if not isinstance(value, str):
        return []
    return [v.strip().strip("'\"") for v in value.strip().strip("[]").split(",") if v.strip().strip("'\"")]


def control_runs(summary: pd.DataFrame) -> list[str]:
    """The runs (column ``run``) of ``summary`` that measure nothing but :data:`CONTROL_MEASUREMENTS` (column
    ``measure``: a list, its JSON text or its comma-joined text): controls of a network that another run of
    the page trained and measured. A page counts its networks, their test errors and their convergence
    without them (:func:`stabkit.report.page.page`). ``[]`` without a ``run`` or ``measure`` column."""
    require_columns(summary, [], "summary")
    if "run" not in summary.columns or "measure" not in summary.columns:
        return []
    names = summary["measure"].map(_measurements)
    only = names.map(lambda m: bool(m) and set(m) <= CONTROL_MEASUREMENTS).to_numpy(dtype=bool)
    return list(dict.fromkeys(summary.loc[only, "run"].astype(str)))


def _cell(value) -> str:
    """A configuration cell as comparable text (lists, tuples and arrays by their items)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return repr([_cell(v) for v in value])
    if isinstance(value, float) and np.isnan(value):
        return "nan"
    return repr(value)


#: The fields in which a grid's successor of a run may differ from it: a wider or longer training of the same
#: network, in any arithmetic (the cpu grid of Fig. 1 / Fig. 3 keeps a cheaper recipe's run beside its successor).
SUCCESSION_FIELDS = ("width_factor", "epochs", "precision")


def _widths(rows: pd.DataFrame) -> pd.Series:
    """Each row's ``width_factor`` as a number, 1 (the paper's) where the table has none."""
    if "width_factor" not in rows.columns:
        return pd.Series(1.0, rows.index)
    return pd.to_numeric(rows["width_factor"], errors="coerce").fillna(1.0)


def superseded_runs(summary: pd.DataFrame) -> dict[str, str]:
    """``{run: the run that supersedes it}``: runs of ``summary`` that another run of the same configuration
    but for :data:`SUCCESSION_FIELDS` trains closer to the paper's network: wider (the paper's width is 1),
    else for more epochs. A grid that keeps a cheaper recipe's run beside its successor (the cpu grid of
    Fig. 1 / Fig. 3 does) shows, and its claims test, one run per network (:func:`stabkit.report.page.page`),
    so that one network is not counted twice. The order reads the configuration only, never a test error, so
    that no run is chosen for its result; runs of the same width and length (the same recipe in two
    arithmetics) supersede none of each other. The configuration is every :class:`~stabkit.runs.RunConfig`
    field the table has; ``{}`` without ``run`` and ``epochs`` columns. A missing width counts as 1."""
    require_columns(summary, [], "summary")
    if not {"run", "epochs"} <= set(summary.columns) or summary.empty:
        return {}
    cols = [f.name for f in fields(RunConfig) if f.name in summary.columns and f.name not in SUCCESSION_FIELDS]
    rows = summary.drop_duplicates("run")
    key = rows[cols].apply(lambda r: "|".join(_cell(v) for v in r), axis=1) if cols else pd.Series("", rows.index)
    ranked = pd.Series(list(zip(_widths(rows), pd.to_numeric(rows["epochs"], errors="coerce").fillna(0))),
                       index=rows.index)
    out: dict[str, str] = {}
    for _, grp in rows.assign(_config=key).groupby("_config", sort=False):
        top = max(ranked.loc[grp.index])
        leaders = [i for i in grp.index if ranked[i] == top]
        best = str(grp.loc[leaders[0], "run"])  # several leaders (one recipe in two arithmetics): all shown
        out.update({str(grp.loc[i, "run"]): best for i in grp.index if ranked[i] != top})
    return out


def superseded_text(summary: pd.DataFrame, superseded: dict[str, str]) -> str:
    """One sentence naming the superseded runs (:func:`superseded_runs`) and what replaces them, ``""``
    when there are none: "not shown: VGG11bn seed 0 at 20 epochs (its 60-epoch run is)", with the widths
    where they differ: "not shown: ResNet18 seed 0 at width 0.25, 60 epochs (its width-0.5, 40-epoch run
    is)"."""
    if not superseded:
        return ""
    rows = summary.drop_duplicates("run")
    rows = rows.set_index(rows["run"].astype(str))

    def name(run: str) -> str:
        r = rows.loc[run]
        noise = r.get("noise_std", 0) if "noise_std" in rows.columns else 0
        return f"{r['net']} seed {r['seed']}" + (f" noise {noise:g}" if noise and noise == noise else "")

    width = _widths(rows)
    parts = []
    for old, new in superseded.items():
        if old not in rows.index or new not in rows.index:
            continue
        e_old, e_new = int(rows.loc[old, "epochs"]), int(rows.loc[new, "epochs"])
        if width[old] == width[new]:
            parts.append(f"{name(old)} at {e_old} epochs (its {e_new}-epoch run is)")
        else:
            parts.append(f"{name(old)} at width {width[old]:g}, {e_old} epochs (its width-{width[new]:g}, "
                         f"{e_new}-epoch run is)")
    # a network's control run (Fig. 3's batch-norm control) reads as the network itself: named once
    return "not shown: " + "; ".join(dict.fromkeys(parts)) if parts else ""
