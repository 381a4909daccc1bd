"""Numeric checks of the paper's claims on tidy run tables (METHODS.md section 9).

Every check takes the tidy tables written by :mod:`stabkit.runs` (``output``, ``layers``, ``spectra``;
see ARCHITECTURE.md, "Run tables") and returns plain numbers plus a :class:`Claim` whose ``verdict`` is
the computed string ``"holds"`` or ``"does not hold"``. The notebooks glue these values into the text,
so a sentence such as "R_f falls by decades with training" is never typed by hand.

**Conventions.**

* Logarithms are base 10 (``decades``). A ratio of ``0.01`` is ``-2`` decades.
* Rows whose value is not finite or not positive are dropped before taking logarithms.
* A *run* is one trained network (one configuration). Rows of the same run are matched on the run
  identifier column when the table has one (``run``, ``key``, ``hash`` or ``run_id``), otherwise on all
  configuration columns (every column that is not a measurement, see :data:`MEASUREMENT_COLUMNS`).

**Public API.**

- ``loglog_fit(x, y) -> LogLogFit``
- ``sqrt_law_prefactor(R_f, err) -> float``
- ``error_fit(output, quantity="R_f", ...) -> LogLogFit``
- ``trained_over_init(output, quantity="R_f", ...) -> DataFrame``
- ``ratio_stats(ratios) -> dict``
- ``depth_exponents(layers, quantity="R_f", ...) -> DataFrame``
- ``shuffle_gap(layers, quantity="R_f", ...) -> DataFrame``
- ``zero_mode_fraction(spectra, ...) -> DataFrame``
- ``claim_*`` functions returning :class:`Claim`; ``verdict(bool) -> str``; ``run_facts(table) -> dict``;
- ``differences(here, paper) -> str`` (what differs from the paper's grid, for the page text);
- ``page_facts(summary, sweep, scale) -> dict`` (seeds, nets, device, data, differences of a page).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "MEASUREMENT_COLUMNS", "RUN_ID_COLUMNS", "LogLogFit", "Claim", "verdict", "loglog_fit",
    "sqrt_law_prefactor", "error_fit", "trained_over_init", "ratio_stats", "depth_exponents",
    "shuffle_gap", "zero_mode_fraction", "claim_rf_falls", "claim_rf_init_order_one",
    "claim_error_correlation", "claim_gf_grows", "claim_channel_pooling_second_half",
    "claim_shuffle_no_effect", "claim_spectra_concentrate", "mid_depth_change",
    "claim_spatial_pooling_first_half", "claims_table", "UNTESTABLE", "run_facts", "differences",
    "page_facts", "select", "NONE_LABELS",
]

#: Columns of the run tables that are measurements, not configuration (never used to match runs).
MEASUREMENT_COLUMNS = frozenset({
    # output / layers
    "state", "shuffle", "D_f", "G_f", "R_f", "D", "G", "deno", "P", "test_err", "test_err_corrupted",
    "layer", "depth", "rel_depth", "D_k", "G_k", "R_k", "kind", "node", "op",
    # spectra
    "kernel_size", "eigenvalue", "energy", "fraction",
    # metrics / summary
    "epoch", "train_loss", "train_err", "test_loss", "lr", "seconds", "wall_time", "status",
    "best_test_err", "last_test_err", "best_epoch", "epochs_run", "device_name", "finished", "started",
    "path", "dir", "run_dir",
})

#: Columns that identify one run when present (first match wins).
RUN_ID_COLUMNS = ("run", "key", "hash", "run_id", "config_hash")

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "cannot be tested at this scale"


def verdict(holds: bool, testable: bool = True) -> str:
    """``"holds"`` if ``holds`` else ``"does not hold"`` (the string glued into the page text);
    ``"cannot be tested at this scale"`` if not ``testable`` (too few runs or rows)."""
    if not testable:
        return UNTESTABLE
    return HOLDS if bool(holds) else FAILS


@dataclass(frozen=True)
class Claim:
    """Outcome of one claim check.

    ``name``: short identifier; ``holds``: the computed truth value; ``value``: the headline number the
    decision is based on; ``threshold``: what it was compared with; ``details``: further numbers (all
    JSON-serialisable floats / ints / strings), e.g. per-net values; ``testable``: False when the tables
    hold too little to decide (then ``holds`` is False and ``value`` usually nan); ``rule``: the test in
    words, e.g. ``"log10 geomean(R_f trained / init) <= -1"``.
    """

    name: str
    holds: bool
    value: float
    threshold: float
    details: dict[str, Any] = field(default_factory=dict)
    testable: bool = True
    rule: str = ""

    @property
    def verdict(self) -> str:
        """``"holds"``, ``"does not hold"`` or ``"cannot be tested at this scale"``."""
        return verdict(self.holds, self.testable)


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


# --------------------------------------------------------------------------------------------- helpers
def _positive_logs(*arrays) -> list[np.ndarray]:
    arrs = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    if len({a.size for a in arrs}) != 1:
        raise ValueError(f"x and y must have the same length, got {[a.size for a in arrs]}")
    ok = np.ones(arrs[0].size, dtype=bool)
    for a in arrs:
        ok &= np.isfinite(a) & (a > 0)
    return [np.log10(a[ok]) for a in arrs]


def _require(df: pd.DataFrame, columns: Iterable[str], arg: str) -> None:
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


def _run_columns(df: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    for c in RUN_ID_COLUMNS:
        if c in df.columns:
            return [c]
    cols = [c for c in df.columns
            if c not in MEASUREMENT_COLUMNS and c not in exclude and _hashable(df[c])]
    return cols


def _group_keys(df: pd.DataFrame, by: Sequence[str] | str | None) -> list[str]:
    if by is None:
        return []
    by = [by] if isinstance(by, str) else list(by)
    return [c for c in by if c in df.columns]


# ------------------------------------------------------------------------------------------------ fits
def loglog_fit(x, y) -> LogLogFit:
    """Fit ``log10 y = slope * log10 x + intercept`` by least squares.

    ``x, y``: 1-D arrays of equal length; points with a non-finite or non-positive coordinate are
    dropped. Needs at least 3 remaining points with more than one distinct ``x`` (``ValueError``
    otherwise). ``r`` is ``nan`` when ``y`` is constant.
    """
    lx, ly = _positive_logs(x, y)
    if lx.size < 3 or np.ptp(lx) == 0:
        raise ValueError(f"x, y: need at least 3 positive finite points with distinct x, got {lx.size}")
    slope, intercept = np.polyfit(lx, ly, 1)
    r = float(np.corrcoef(lx, ly)[0, 1]) if np.ptp(ly) > 0 else float("nan")
    return LogLogFit(float(slope), float(intercept), r, int(lx.size))


def sqrt_law_prefactor(R_f, err) -> float:
    """Prefactor ``a`` of ``err ~ a * sqrt(R_f)`` (the 2021 law, a ~ 0.2): the geometric mean of
    ``err / sqrt(R_f)`` over points with positive finite values (``nan`` if none)."""
    lr, le = _positive_logs(R_f, err)
    if lr.size == 0:
        return float("nan")
    return float(10.0 ** np.mean(le - 0.5 * lr))


def error_fit(output: pd.DataFrame, quantity: str = "R_f", error: str = "test_err",
              state: str = "trained", shuffle: int | None = 0, **where) -> LogLogFit:
    """Log-log fit of ``error`` against ``quantity`` over the rows of ``output`` in ``state``.

    ``output``: the ``output`` run table (one row per run and state / shuffle). ``shuffle``: keep only
    that shuffle value (``None`` keeps all). ``where``: further column equalities (see :func:`select`).
    """
    _require(output, [quantity, error], "output")
    rows = select(output, state=state, shuffle=shuffle, **where)
    return loglog_fit(rows[quantity], rows[error])


def trained_over_init(output: pd.DataFrame, quantity: str = "R_f", shuffle: int | None = 0,
                      by: Sequence[str] | None = None, **where) -> pd.DataFrame:
    """Per run, ``quantity`` after training divided by ``quantity`` at initialisation.

    Returns a DataFrame with the run columns, ``init``, ``trained``, ``ratio`` and ``decades``
    (``log10 ratio``), one row per run that has both states. ``by``: run-identifying columns
    (default: see module docstring).
    """
    _require(output, [quantity, "state"], "output")
    rows = select(output, shuffle=shuffle, **where)
    keys = list(by) if by is not None else _run_columns(rows)
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
    (lr,) = _positive_logs(ratios)
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
    _require(layers, [quantity, x], "layers")
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
    _require(layers, [quantity, "rel_depth", "layer", "shuffle"], "layers")
    rows = select(layers, state=state, **where)
    rows = rows[rows["shuffle"].isin([0, shuffled])]
    keys = _group_keys(rows, by)
    run_keys = _run_columns(rows)
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
    _require(spectra, ["layer", "rel_depth", "eigenvalue", "energy", "state"], "spectra")
    rows = select(spectra, **where)
    keys = _group_keys(rows, by)
    run_keys = _run_columns(rows)
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


# ---------------------------------------------------------------------------------------------- claims
def claim_rf_falls(output: pd.DataFrame, decades: float = 1.0, quantity: str = "R_f",
                   **where) -> Claim:
    """"R_f falls by decades with training": the geometric mean over runs of
    ``R_f(trained) / R_f(init)`` is at most ``10**-decades``. ``value`` = log10 of that mean."""
    ratios = trained_over_init(output, quantity, **where)
    st = ratio_stats(ratios["ratio"])
    return Claim(f"{quantity}_falls", bool(st["decades"] <= -decades), st["decades"], -decades,
                 {**st, "threshold_decades": decades}, testable=st["n"] > 0,
                 rule=f"log10 geomean({quantity} trained / init) <= {-decades:g}")


def claim_rf_init_order_one(output: pd.DataFrame, tolerance_decades: float = 0.5,
                            quantity: str = "R_f", shuffle: int | None = 0, **where) -> Claim:
    """"At initialisation R_f ~ 1": the geometric mean of R_f over nets at initialisation is within
    ``tolerance_decades`` of 1. ``value`` = that geometric mean."""
    _require(output, [quantity, "state"], "output")
    rows = select(output, state="init", shuffle=shuffle, **where)
    st = ratio_stats(rows[quantity])
    holds = bool(np.isfinite(st["decades"]) and abs(st["decades"]) <= tolerance_decades)
    return Claim(f"{quantity}_init_order_one", holds, st["geomean"], tolerance_decades, st,
                 testable=st["n"] > 0,
                 rule=f"|log10 geomean({quantity} at init)| <= {tolerance_decades:g}")


def claim_error_correlation(output: pd.DataFrame, quantity: str = "R_f", error: str = "test_err",
                            min_r: float = 0.5, shuffle: int | None = 0, **where) -> Claim:
    """"R_f correlates with test error": Pearson correlation of log10 error and log10 R_f over trained
    nets is at least ``min_r`` and the slope is positive. ``value`` = r; details hold slope, prefactor,
    the sqrt-law prefactor (2021: ~0.2) and n. Untestable with fewer than 3 usable nets."""
    _require(output, [quantity, error, "state"], "output")
    rows = select(output, state="trained", shuffle=shuffle, **where)
    a = sqrt_law_prefactor(rows[quantity], rows[error])
    name = f"{error}_vs_{quantity}"
    try:
        fit = error_fit(output, quantity, error, shuffle=shuffle, **where)
    except ValueError:
        nan = float("nan")
        n = int(len(_positive_logs(rows[quantity], rows[error])[0]))
        return Claim(name, False, nan, min_r, {"r": nan, "slope": nan, "prefactor": nan,
                                                "sqrt_prefactor": a, "n": n}, testable=False,
                     rule=f"r(log {quantity}, log {error}) >= {min_r:g}, slope > 0 (needs >= 3 nets)")
    holds = bool(np.isfinite(fit.r) and fit.r >= min_r and fit.slope > 0)
    return Claim(name, holds, fit.r, min_r,
                 {"r": fit.r, "slope": fit.slope, "prefactor": fit.prefactor, "sqrt_prefactor": a,
                  "n": fit.n}, testable=bool(np.isfinite(fit.r)),
                 rule=f"r(log {quantity}, log {error}) >= {min_r:g}, slope > 0")


def claim_gf_grows(output: pd.DataFrame, quantity: str = "G_f", **where) -> Claim:
    """"G_f grows with training": geometric mean over runs of ``G_f(trained) / G_f(init)`` > 1.
    ``value`` = that geometric mean."""
    st = ratio_stats(trained_over_init(output, quantity, **where)["ratio"])
    return Claim(f"{quantity}_grows", bool(st["geomean"] > 1.0), st["geomean"], 1.0, st,
                 testable=st["n"] > 0, rule=f"geomean({quantity} trained / init) > 1")


def _half(gaps: pd.DataFrame, half: str, col: str = "gap") -> float:
    g = gaps[gaps["half"] == half]
    if g.empty:
        return float("nan")
    return float(np.average(g[col], weights=g["n"]))


def claim_channel_pooling_second_half(layers: pd.DataFrame, quantity: str = "R_f",
                                      margin: float = 0.3, split: float = 0.5, **where) -> Claim:
    """Fig. 3: "channel pooling in the second half": shuffling raises R_k by at least ``margin``
    decades more in the second half than in the first, and the first-half gap stays below ``margin``.
    ``value`` = second-half gap minus first-half gap (decades, pooled over nets)."""
    gaps = shuffle_gap(layers, quantity, split=split, by=(), **where)
    first, second = _half(gaps, "first"), _half(gaps, "second")
    diff = second - first
    holds = bool(np.isfinite(diff) and diff >= margin and abs(first) < margin)
    per_net = shuffle_gap(layers, quantity, split=split, by=("net",), **where)
    details = {"first": first, "second": second, "margin": margin}
    for _, r in per_net.iterrows():
        if "net" in per_net.columns:
            details[f"{r['net']}:{r['half']}"] = float(r["gap"])
    return Claim("channel_pooling_second_half", holds, diff, margin, details,
                 testable=bool(np.isfinite(diff)),
                 rule=f"shuffling gap of {quantity}: second half - first half >= {margin:g} decades, "
                      f"|first half| < {margin:g}")


def mid_depth_change(layers: pd.DataFrame, quantity: str = "R_f", split: float = 0.5,
                     shuffle: int = 0, by: Sequence[str] | str = ("net",), **where) -> pd.DataFrame:
    """Change of a layer quantity with training at mid-depth: for each run, the deepest layer with
    ``rel_depth <= split``, ``log10(quantity[trained, shuffle] / quantity[init, shuffle=0])``.

    Returns one row per group of ``by``: ``decades`` (mean over runs), ``rel_depth`` (mean of the layers
    used), ``n`` (runs).
    """
    _require(layers, [quantity, "rel_depth", "layer", "state"], "layers")
    rows = layers if "shuffle" in layers.columns else layers.assign(shuffle=0)
    rows = select(rows, **where)
    rows = rows[rows["rel_depth"] <= split]
    keys = _group_keys(rows, by)
    run_keys = _run_columns(rows)
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


def claim_spatial_pooling_first_half(layers: pd.DataFrame, quantity: str = "R_f", margin: float = 0.3,
                                     split: float = 0.5, shuffled: int = 1, **where) -> Claim:
    """Fig. 3: "spatial pooling in the first half": by mid-depth, training has already lowered R_k by at
    least ``margin`` decades, **also with shuffled channels** (spatial pooling survives shuffling).
    ``value`` = the mid-depth change of the shuffled nets (decades, all nets pooled); details give the
    unshuffled change too."""
    sh = mid_depth_change(layers, quantity, split, shuffle=shuffled, by=(), **where)
    un = mid_depth_change(layers, quantity, split, shuffle=0, by=(), **where)
    v_sh = float(sh["decades"].iloc[0]) if len(sh) else float("nan")
    v_un = float(un["decades"].iloc[0]) if len(un) else float("nan")
    holds = bool(np.isfinite(v_sh) and v_sh <= -margin)
    return Claim("spatial_pooling_first_half", holds, v_sh, -margin,
                 {"shuffled": v_sh, "unshuffled": v_un, "margin": margin}, testable=bool(np.isfinite(v_sh)),
                 rule=f"mid-depth change of shuffled {quantity} with training <= {-margin:g} decades")


def claims_table(items: Sequence[Claim] | dict[str, Claim]) -> pd.DataFrame:
    """One row per claim: ``claim``, ``value``, ``rule``, ``verdict`` (for display on a page).

    ``items``: claims (named by ``Claim.name``) or a mapping ``label -> Claim`` (named by the label).
    """
    pairs = items.items() if isinstance(items, dict) else ((c.name, c) for c in items)
    rows = []
    for label, c in pairs:
        if not isinstance(c, Claim):
            raise ValueError(f"items must hold Claim objects, got {type(c).__name__} for {label!r}")
        rows.append({"claim": label, "value": c.value, "rule": c.rule, "verdict": c.verdict})
    return pd.DataFrame(rows, columns=["claim", "value", "rule", "verdict"])


def claim_shuffle_no_effect(layers: pd.DataFrame, quantity: str = "R_f", tolerance: float = 0.3,
                            split: float = 0.5, **where) -> Claim:
    """Fig. 6: "shuffling changes nothing": the mean absolute shuffled/unshuffled gap is below
    ``tolerance`` decades in both halves. ``value`` = the larger of the two mean absolute gaps."""
    gaps = shuffle_gap(layers, quantity, split=split, by=(), **where)
    first, second = _half(gaps, "first", "abs_gap"), _half(gaps, "second", "abs_gap")
    worst = float(np.nanmax([first, second])) if np.isfinite([first, second]).any() else float("nan")
    holds = bool(np.isfinite(worst) and worst < tolerance)
    return Claim("shuffle_no_effect", holds, worst, tolerance,
                 {"first": first, "second": second, "tolerance": tolerance},
                 testable=bool(np.isfinite(worst)),
                 rule=f"mean |shuffling gap of {quantity}| < {tolerance:g} decades in both halves")


def claim_spectra_concentrate(spectra: pd.DataFrame, early: float = 0.5, factor: float = 1.5,
                              flat_tolerance: float = 0.5, **where) -> Claim:
    """Fig. 2: "trained early-layer filters concentrate on eigenvalue 0, flat spectrum at init".

    Over conv layers with ``rel_depth <= early``: the mean energy fraction at eigenvalue 0 after training
    is at least ``factor`` times the one at initialisation, and at initialisation it is within
    ``flat_tolerance`` (relative) of the flat value ``1/k^2``. ``value`` = trained / init fraction.
    """
    z = zero_mode_fraction(spectra, by=(), **where)
    z = z[z["rel_depth"] <= early]
    tr = z.loc[z["state"] == "trained", "fraction"].mean()
    ini = z.loc[z["state"] == "init", "fraction"].mean()
    flat = z.loc[z["state"] == "init", "flat"].mean()
    ratio = float(tr / ini) if ini and np.isfinite(ini) else float("nan")
    flat_ok = bool(np.isfinite(flat) and abs(ini / flat - 1) <= flat_tolerance) if np.isfinite(ini) else False
    holds = bool(np.isfinite(ratio) and ratio >= factor and flat_ok)
    return Claim("spectra_concentrate", holds, ratio, factor,
                 {"trained": float(tr), "init": float(ini), "flat": float(flat), "flat_ok": flat_ok},
                 testable=bool(np.isfinite(ratio)),
                 rule=f"early layers: fraction at lambda=0 trained / init >= {factor:g}, init within "
                      f"{flat_tolerance:.0%} of 1/k^2")


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


def differences(here: pd.DataFrame, paper: pd.DataFrame,
                columns: Sequence[str] = ("net", "seed", "epochs", "ptr", "test_size", "P", "noise_std",
                                          "width_factor", "batch_size", "lr"),
                labels: dict[str, str] | None = None) -> str:
    """Plain-text list of how the configurations of ``here`` differ from ``paper``.

    ``here``, ``paper``: one row per run configuration (e.g. the ``summary`` table, or the configurations
    of a sweep at two scales). For each column of ``columns`` present in both, if the sets of distinct
    values differ the item ``"<label>: <paper values> in the paper, <here values> here"`` is listed
    (a long list of values is shortened to its count; a missing value reads "default", or
    :data:`NONE_LABELS` for ``ptr`` / ``test_size``). Returns ``"nothing"`` if no column differs.
    """
    for arg, df in (("here", here), ("paper", paper)):
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"{arg} must be a pandas DataFrame, got {type(df).__name__}")
    labels = labels or {}
    items = []
    for c in columns:
        if c not in here.columns or c not in paper.columns:
            continue
        none = NONE_LABELS.get(c, "default")
        a = {none if _missing(v) else _integral(v) for v in paper[c].tolist()}
        b = {none if _missing(v) else _integral(v) for v in here[c].tolist()}
        if a != b:
            items.append(f"{labels.get(c, c)}: {_short(a)} in the paper, {_short(b)} here")
    return "; ".join(items) if items else "nothing"


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
    import json
    if "task_options" not in summary.columns:
        return {}
    vals = summary.loc[summary.get("task") == task, "task_options"].dropna().unique()
    try:
        return json.loads(vals[0]) if len(vals) == 1 and isinstance(vals[0], str) else {}
    except ValueError:
        return {}


def _cifar_source() -> str:
    """Which CIFAR-10 copy ``stabkit.data`` finds here (the runs do not record it)."""
    try:
        from stabkit import data
        for root in data.data_roots():
            found = data._locate(root)
            if found is not None:
                kind, path = found
                jpeg = "jpeg" in str(path).lower()
                what = "the JPEG copy (quality 75)" if jpeg else {"pickle": "the original pickles"}.get(
                    kind, f"class folders/archive {path.name}")
                return f"CIFAR-10, {what}, found at {path.name}"
    except Exception:  # noqa: BLE001 - a description only
        pass
    return "CIFAR-10 (source not recorded)"


def page_facts(summary: pd.DataFrame, sweep: Any = None, scale: str | None = None) -> dict[str, Any]:
    """What a figure page states about its runs, computed from the ``summary`` table.

    Returns strings ``seeds``, ``nets``, ``epochs``, ``P``, ``device``, ``data``, ``differences`` (from
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
        "epochs": facts.get("epochs", "n/a"), "P": facts.get("P", "n/a"),
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
    keys = _run_columns(table)
    facts["n_runs"] = int(table[keys].drop_duplicates().shape[0]) if keys else int(len(table))
    facts["n_rows"] = int(len(table))
    return facts
