"""Fits, exponents and ratios of the run tables, shared by the claims of several concerns: log-log fits of
the error against a stability, trained / init ratios per run and their summaries, depth exponents,
shuffling gaps per half of the network, the energy at the constant filter, the parts of a ratio (D, G,
deno).

Logarithms are base 10 (``decades``: a ratio of ``0.01`` is ``-2`` decades); rows whose value is not
finite or not positive are dropped before taking logarithms. Rows of one run are matched as
:mod:`stabkit.report.tables` says (:func:`~stabkit.report.tables.run_columns`). What one concern alone
computes lives with its claims: the layer-by-layer shuffling gaps in :mod:`stabkit.report.layer_claims`,
G_f against the training noise in :mod:`stabkit.report.stability_claims`, the exponents of the
constant-filter laws (:func:`stabkit.theory.fit_exponents`, the one fit of the project) in
:mod:`stabkit.report.theory_claims`. Intervals and verdict rules: :mod:`stabkit.report.stats`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .stats import positive_logs
from .tables import require_columns, run_columns, select

__all__ = [
    "LogLogFit", "loglog_fit", "sqrt_law_prefactor", "error_fit", "trained_over_init", "ratio_stats",
    "depth_exponents", "shuffle_gap", "zero_mode_fraction", "mid_depth_change", "trained_init_factors",
    "PER_LAYER_COLUMNS",
]


#: Columns of a ``layers`` table that vary from layer to layer but are not in
#: :data:`~stabkit.report.tables.MEASUREMENT_COLUMNS` (``features``: values per probe at a node). They are
#: never part of a run's key: without a run identifier column, a run is matched on its configuration.
PER_LAYER_COLUMNS = ("features",)


def _layer_run_keys(rows: pd.DataFrame) -> list[str]:
    """The columns that identify a run in a table with one row per layer: the run identifier when the
    table has one, else its configuration columns, never a per-layer column (:data:`PER_LAYER_COLUMNS`)."""
    return run_columns(rows, exclude=PER_LAYER_COLUMNS)


@dataclass(frozen=True)
class LogLogFit:
    """Least-squares line ``log10 y = slope * log10 x + intercept``.

    ``r`` is the Pearson correlation between ``log10 x`` and ``log10 y``; ``n`` the number of points used;
    ``prefactor = 10**intercept`` so that ``y ~ prefactor * x**slope``.
    """

    slope: float
    intercept: float
    r: float
    n: int

    @property
    def prefactor(self) -> float:
        return float(10.0 ** self.intercept)

    def predict(self, x) -> np.ndarray:
        """``prefactor * x**slope`` for an array ``x`` (same shape)."""
        return self.prefactor * np.asarray(x, dtype=np.float64) ** self.slope


def _group_keys(df: pd.DataFrame, by: Sequence[str] | str | None) -> list[str]:
    if by is None:
        return []
    by = [by] if isinstance(by, str) else list(by)
    return [c for c in by if c in df.columns]


def loglog_fit(x, y) -> LogLogFit:
    """Fit ``log10 y = slope * log10 x + intercept`` by least squares.

    ``x, y``: 1-D arrays of equal length; points with a non-finite or non-positive coordinate are
    dropped. Needs at least 3 remaining points with more than one distinct ``x`` (``ValueError``
    otherwise). ``r`` is ``nan`` when ``y`` is constant.
    """
    lx, ly = positive_logs(x, y)
    if lx.size < 3 or np.ptp(lx) == 0:
        raise ValueError(f"x, y: need at least 3 positive finite points with distinct x, got {lx.size}")
    slope, intercept = np.polyfit(lx, ly, 1)
    r = float(np.corrcoef(lx, ly)[0, 1]) if np.ptp(ly) > 0 else float("nan")
    return LogLogFit(float(slope), float(intercept), r, int(lx.size))


def sqrt_law_prefactor(R_f, err) -> float:
    """Prefactor ``a`` of ``err ~ a * sqrt(R_f)`` (the 2021 law, a ~ 0.2): the geometric mean of
    ``err / sqrt(R_f)`` over points with positive finite values (``nan`` if none)."""
    lr, le = positive_logs(R_f, err)
    if lr.size == 0:
        return float("nan")
    return float(10.0 ** np.mean(le - 0.5 * lr))


def error_fit(output: pd.DataFrame, quantity: str = "R_f", error: str = "test_err",
              state: str = "trained", shuffle: int | None = 0, **where) -> LogLogFit:
    """Log-log fit of ``error`` against ``quantity`` over the rows of ``output`` in ``state``.

    ``output``: the ``output`` run table (one row per run and state / shuffle). ``shuffle``: keep only
    that shuffle value (``None`` keeps all). ``where``: further column equalities (see ``select()``).
    """
    require_columns(output, [quantity, error], "output")
    rows = select(output, state=state, shuffle=shuffle, **where)
    return loglog_fit(rows[quantity], rows[error])


def trained_over_init(output: pd.DataFrame, quantity: str = "R_f", shuffle: int | None = 0,
                      by: Sequence[str] | None = None, **where) -> pd.DataFrame:
    """Per run, ``quantity`` after training divided by ``quantity`` at initialisation.

    Returns a DataFrame with the run columns, ``init``, ``trained``, ``ratio`` and ``decades``
    (``log10 ratio``), one row per run that has both states. ``by``: run-identifying columns
    (default: see module docstring).
    """
    require_columns(output, [quantity, "state"], "output")
    rows = select(output, shuffle=shuffle, **where)
    keys = list(by) if by is not None else run_columns(rows)
    keys = [k for k in keys if k in rows.columns]
    if not keys:
        raise ValueError("output: cannot match trained and init rows (no run or config columns); pass by=")
    wide = (rows[rows["state"].isin(["init", "trained"])]
            .groupby(keys + ["state"], dropna=False)[quantity].mean().unstack("state"))
    for s in ("init", "trained"):
        if s not in wide.columns:
            wide[s] = np.nan
    wide = wide.dropna(subset=["init", "trained"]).reset_index()
    wide.columns.name = None
    with np.errstate(divide="ignore", invalid="ignore"):
        wide["ratio"] = wide["trained"] / wide["init"]
        wide["decades"] = np.log10(wide["ratio"].where(wide["ratio"] > 0))
    return wide[keys + ["init", "trained", "ratio", "decades"]]


def ratio_stats(ratios) -> dict[str, float]:
    """Summary of positive ratios: ``geomean``, ``median``, ``min``, ``max``, ``decades`` (log10 of the
    geometric mean), ``n``. Non-positive or non-finite values are dropped."""
    (lr,) = positive_logs(ratios)
    if lr.size == 0:
        nan = float("nan")
        return {"geomean": nan, "median": nan, "min": nan, "max": nan, "decades": nan, "n": 0}
    return {"geomean": float(10 ** lr.mean()), "median": float(10 ** np.median(lr)),
            "min": float(10 ** lr.min()), "max": float(10 ** lr.max()),
            "decades": float(lr.mean()), "n": int(lr.size)}


def depth_exponents(layers: pd.DataFrame, quantity: str = "R_f", x: str = "depth",
                    law: str = "power", by: Sequence[str] | str = ("net",), state: str = "trained",
                    shuffle: int | None = 0, min_x: float = 1.0, **where) -> pd.DataFrame:
    """Fitted depth exponent of a layer quantity, per group.

    ``law="power"``: ``quantity ~ x**slope`` (log-log fit, rows with ``x >= min_x``);
    ``law="exp"``: ``quantity ~ base**x`` (fit of ``log10 quantity`` against ``x``; ``base = 10**slope``).
    Quantities are first averaged geometrically over runs at each ``x``. Returns one row per group of
    ``by`` with ``slope``, ``base`` (``law="exp"`` only, else nan), ``r``, ``n``.
    """
    if law not in ("power", "exp"):
        raise ValueError(f"law must be 'power' or 'exp', got {law!r}")
    require_columns(layers, [quantity, x], "layers")
    rows = select(layers, state=state, shuffle=shuffle, **where)
    rows = rows[np.isfinite(rows[quantity]) & (rows[quantity] > 0)]
    keys = _group_keys(rows, by)
    out = []
    groups = rows.groupby(keys, dropna=False) if keys else [((), rows)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        avg = g.assign(_l=np.log10(g[quantity])).groupby(x)["_l"].mean()
        xs = avg.index.to_numpy(dtype=np.float64)
        ly = avg.to_numpy()
        if law == "power":
            ok = xs >= min_x
            xs, ly = np.log10(xs[ok]), ly[ok]
        rec = dict(zip(keys, key))
        if xs.size >= 2 and np.ptp(xs) > 0:
            slope, _ = np.polyfit(xs, ly, 1)
            r = float(np.corrcoef(xs, ly)[0, 1]) if np.ptp(ly) > 0 else float("nan")
        else:
            slope, r = float("nan"), float("nan")
        rec.update(slope=float(slope), base=float(10 ** slope) if law == "exp" else float("nan"),
                   r=r, n=int(xs.size))
        out.append(rec)
    return pd.DataFrame(out, columns=keys + ["slope", "base", "r", "n"])


def shuffle_gap(layers: pd.DataFrame, quantity: str = "R_f", split: float = 0.5,
                by: Sequence[str] | str = ("net",), shuffled: int = 1, state: str = "trained",
                **where) -> pd.DataFrame:
    """How much channel shuffling changes a layer quantity, in the first and second half of the net.

    For every run and layer, ``gap = log10(quantity[shuffle=shuffled] / quantity[shuffle=0])`` (both
    trained); layers with ``rel_depth <= split`` form the ``"first"`` half, the others the ``"second"``.
    Returns one row per group of ``by`` and half: ``half``, ``gap`` (mean over layers and runs, decades;
    positive = shuffling raises the quantity), ``abs_gap`` (mean of ``|gap|``), ``n`` (layer-run pairs).
    """
    require_columns(layers, [quantity, "rel_depth", "layer", "shuffle"], "layers")
    rows = select(layers, state=state, **where)
    rows = rows[rows["shuffle"].isin([0, shuffled])]
    keys = _group_keys(rows, by)
    run_keys = run_columns(rows)
    idx = list(dict.fromkeys(keys + run_keys + ["layer", "rel_depth"]))
    wide = rows.groupby(idx + ["shuffle"], dropna=False)[quantity].mean().unstack("shuffle")
    if 0 not in wide.columns or shuffled not in wide.columns:
        return pd.DataFrame(columns=keys + ["half", "gap", "abs_gap", "n"])
    wide = wide.reset_index()
    a, b = wide[0].to_numpy(np.float64), wide[shuffled].to_numpy(np.float64)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    wide = wide[ok].copy()
    wide["gap"] = np.log10(b[ok] / a[ok])
    wide["half"] = np.where(wide["rel_depth"] <= split, "first", "second")
    agg = (wide.groupby(keys + ["half"], dropna=False)["gap"]
           .agg(gap="mean", abs_gap=lambda s: float(np.mean(np.abs(s))), n="size").reset_index())
    return agg[keys + ["half", "gap", "abs_gap", "n"]]


def zero_mode_fraction(spectra: pd.DataFrame, by: Sequence[str] | str = ("net",),
                       **where) -> pd.DataFrame:
    """Fraction of each layer's filter energy at grid-Laplacian eigenvalue 0 (the constant filter).

    ``spectra``: the ``spectra`` run table (``layer``, ``rel_depth``, ``eigenvalue``, ``energy``, ``state``;
    ``kernel_size`` optional). Averaged over runs. Returns one row per group of ``by``, ``layer`` and
    ``state`` with ``rel_depth``, ``fraction`` and ``flat`` (the value for a flat spectrum,
    ``1 / kernel_size**2``; nan without ``kernel_size``).
    """
    require_columns(spectra, ["layer", "rel_depth", "eigenvalue", "energy", "state"], "spectra")
    rows = select(spectra, **where)
    keys = _group_keys(rows, by)
    run_keys = run_columns(rows)
    extra = ["kernel_size"] if "kernel_size" in rows.columns else []
    idx = list(dict.fromkeys(keys + run_keys + ["state", "layer", "rel_depth"] + extra))
    rows = rows.assign(_zero=np.where(np.abs(rows["eigenvalue"]) < 1e-6, rows["energy"], 0.0))
    per = rows.groupby(idx, dropna=False)[["_zero", "energy"]].sum().reset_index()
    per["fraction"] = per["_zero"] / per["energy"]
    out_idx = list(dict.fromkeys(keys + ["state", "layer", "rel_depth"] + extra))
    out = per.groupby(out_idx, dropna=False)["fraction"].mean().reset_index()
    out["flat"] = 1.0 / out["kernel_size"].astype(float) ** 2 if extra else np.nan
    return out.sort_values(keys + ["state", "rel_depth"]).reset_index(drop=True)[
        keys + ["state", "layer", "rel_depth", "fraction", "flat"]]


def mid_depth_change(layers: pd.DataFrame, quantity: str = "R_f", split: float = 0.5,
                     shuffle: int = 0, by: Sequence[str] | str = ("net",), **where) -> pd.DataFrame:
    """Change of a layer quantity with training at mid-depth: for each run, the deepest layer with
    ``rel_depth <= split``, ``log10(quantity[trained, shuffle] / quantity[init, shuffle=0])``.

    Returns one row per group of ``by``: ``decades`` (mean over runs), ``rel_depth`` (mean of the layers
    used), ``n`` (runs).
    """
    require_columns(layers, [quantity, "rel_depth", "layer", "state"], "layers")
    rows = layers if "shuffle" in layers.columns else layers.assign(shuffle=0)
    rows = select(rows, **where)
    rows = rows[rows["rel_depth"] <= split]
    keys = _group_keys(rows, by)
    run_keys = _layer_run_keys(rows)
    idx = list(dict.fromkeys(keys + run_keys + ["layer", "rel_depth"]))
    init = rows[(rows["state"] == "init") & (rows["shuffle"] == 0)].groupby(idx, dropna=False)[quantity].mean()
    tr = rows[(rows["state"] == "trained") & (rows["shuffle"] == shuffle)].groupby(idx, dropna=False)[
        quantity].mean()
    both = pd.concat({"init": init, "trained": tr}, axis=1).dropna().reset_index()
    both = both[(both["init"] > 0) & (both["trained"] > 0)]
    if both.empty:
        return pd.DataFrame(columns=keys + ["decades", "rel_depth", "n"])
    run_idx = list(dict.fromkeys(keys + run_keys))
    deepest = both.loc[both.groupby(run_idx, dropna=False)["rel_depth"].idxmax()]
    deepest = deepest.assign(decades=np.log10(deepest["trained"] / deepest["init"]))
    if keys:
        out = deepest.groupby(keys, dropna=False).agg(decades=("decades", "mean"),
                                                      rel_depth=("rel_depth", "mean"),
                                                      n=("decades", "size")).reset_index()
    else:
        out = pd.DataFrame([{"decades": deepest["decades"].mean(), "rel_depth": deepest["rel_depth"].mean(),
                             "n": len(deepest)}])
    return out[keys + ["decades", "rel_depth", "n"]]


def trained_init_factors(output: pd.DataFrame, quantities: Sequence[str] = ("D", "G", "deno", "D_f", "G_f", "R_f"),
                **where) -> dict[str, float]:
    """Geometric mean over runs of ``trained / init`` for each of ``quantities`` (the parts of
    ``D_f = D / deno``, ``G_f = G / deno``, ``R_f = D / G``), and ``n`` (runs). A ratio can move because
    of its denominator: with training the spread of the outputs across images (``deno``) can grow by
    orders of magnitude, so ``D_f`` falls even where ``D`` rises."""
    out: dict[str, float] = {}
    n = 0
    for q in quantities:
        if q not in output.columns:
            out[q] = float("nan")
            continue
        t = trained_over_init(output, q, **where)
        r = t["ratio"].to_numpy(dtype=np.float64)
        r = r[np.isfinite(r) & (r > 0)]
        out[q] = float(10 ** np.log10(r).mean()) if r.size else float("nan")
        n = max(n, int(r.size))
    out["n"] = n
    return out
