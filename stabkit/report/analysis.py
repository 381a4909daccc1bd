"""Table analysis for the book's pages: fits, ratios, exponents and the shaping of tidy run tables.

Every function takes the tidy tables written by :mod:`stabkit.runs` (``output``, ``layers``, ``spectra``,
``accuracy``, ``invariance``...; see ARCHITECTURE.md, "Run tables") and returns numbers or small
DataFrames. Nothing here decides whether a claim holds (that is :mod:`stabkit.report.claims`) or draws
(:mod:`stabkit.report.figures`).

**Conventions.**

* Logarithms are base 10 (``decades``). A ratio of ``0.01`` is ``-2`` decades.
* Rows whose value is not finite or not positive are dropped before taking logarithms.
* A *run* is one trained network (one configuration). Rows of the same run are matched on the run
  identifier column when the table has one (``run``, ``key``, ``hash`` or ``run_id``), otherwise on all
  configuration columns (every column that is not a measurement, see :data:`MEASUREMENT_COLUMNS`).
* Exponents of a law against the layer index are fitted by :func:`stabkit.theory.fit_exponents` (the one
  fit of the project); :func:`layer_exponents` adapts a table to it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MEASUREMENT_COLUMNS", "RUN_ID_COLUMNS", "LogLogFit", "positive_logs", "require_columns", "select",
    "run_columns", "loglog_fit", "sqrt_law_prefactor", "error_fit", "trained_over_init", "ratio_stats",
    "depth_exponents", "shuffle_gap", "zero_mode_fraction", "mid_depth_change", "geomean",
    "config_values", "training_label", "layer_exponents", "block_profile", "accuracy_curves",
    "per_net", "curves_table", "rank_correlation", "layer_nv_vs_rk", "rotation_kept", "bootstrap_ci", "MASK_VARIANTS",
    "SHUFFLE_MODES", "global_nv_table", "mode_difference", "with_task_error", "resampling_label",
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
def positive_logs(*arrays) -> list[np.ndarray]:
    """``log10`` of equal-length arrays, keeping only the positions where every array is finite and > 0."""
    arrs = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    if len({a.size for a in arrs}) != 1:
        raise ValueError(f"x and y must have the same length, got {[a.size for a in arrs]}")
    ok = np.ones(arrs[0].size, dtype=bool)
    for a in arrs:
        ok &= np.isfinite(a) & (a > 0)
    return [np.log10(a[ok]) for a in arrs]


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
    that shuffle value (``None`` keeps all). ``where``: further column equalities (see :func:`select`).
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
    run_keys = run_columns(rows)
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


# ------------------------------------------------------------------------------------ config columns
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


# ------------------------------------------------------------------------------------- layer exponents
def layer_exponents(table: pd.DataFrame, stride: int, layer: str = "layer",
                    columns: Sequence[str] = ("D_f", "G_f", "R_f"), first_layer: int = 1,
                    last_layer: int | None = None) -> dict[str, float]:
    """Exponents of ``columns`` against the layer index, fitted by :func:`stabkit.theory.fit_exponents`.

    ``table``: one row per layer index (column ``layer``, an integer >= 1) holding up to three positive
    ``columns``. Stride 1: slope of ``log Q`` against ``log l``; stride ``s > 1``: slope of ``log_s Q``
    against ``l`` (the form of the constant-filter laws). Returns ``{column: exponent}``.
    """
    from stabkit import theory

    columns = list(columns)
    if not 1 <= len(columns) <= 3:
        raise ValueError(f"columns must name 1 to 3 columns, got {columns!r}")
    require_columns(table, [layer, *columns], "table")
    slots = ("D_f", "G_f", "R_f")
    t = pd.DataFrame({"layer": table[layer].to_numpy()})
    for i, slot in enumerate(slots):
        t[slot] = table[columns[min(i, len(columns) - 1)]].to_numpy(dtype=np.float64)
    fit = theory.fit_exponents(t, stride, first_layer=first_layer, last_layer=last_layer)
    return {c: fit[slot[0]] for c, slot in zip(columns, slots)}


def block_profile(layers: pd.DataFrame, pattern: str = r"features\.relu(\d+)",
                  quantities: Sequence[str] = ("D_f", "G_f", "R_f"), by: Sequence[str] = ("state",),
                  shuffle: int | None = 0) -> pd.DataFrame:
    """Geometric mean over runs of layer quantities at the nodes whose name matches ``pattern`` (its
    first group is the block index): one row per ``by`` group and ``block``."""
    require_columns(layers, ["layer", *quantities], "layers")
    rows = select(layers, shuffle=shuffle)
    rows = rows[rows["layer"].astype(str).str.fullmatch(pattern)]
    rows = rows.assign(block=rows["layer"].astype(str).str.extract(pattern, expand=False).astype(int))
    return geomean(rows, [*by, "block"], list(quantities)).sort_values([*by, "block"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------- probe tables
def _robustness():
    from stabkit import robustness  # torch: imported when a probe table is shaped, not with the module

    return robustness


def accuracy_curves(acc: pd.DataFrame, variants: dict[str, str], by: Sequence[str] = ("net", "training"),
                    variant: str = "variant") -> pd.DataFrame:
    """Accuracy (%) against magnitude, all classes, per ``by`` group and probe variant.

    ``acc``: the ``accuracy`` run table (``probe``, ``label``, ``magnitude``, ``accuracy`` in [0, 1]).
    ``variants``: probe name -> label (rows of other probes are left out). Returns ``by + [variant,
    "magnitude", "mean", "sd", "n"]`` (mean and sample sd over seeds, in %).
    """
    require_columns(acc, ["probe", "label", "magnitude", "accuracy"], "acc")
    s = acc[(acc["label"] < 0) & acc["probe"].isin(list(variants))].copy()
    s[variant] = s["probe"].map(variants)
    s["accuracy"] = 100 * s["accuracy"]
    keys = [c for c in by if c in s.columns] + [variant, "magnitude"]
    return _robustness().summarize(s, by=tuple(keys))


def per_net(curves: pd.DataFrame, value: str = "mean", **where) -> pd.DataFrame:
    """``curves`` rows matching ``where`` as a net x magnitude table of ``value``."""
    rows = select(curves, **where)
    return rows.pivot_table(index="net", columns="magnitude", values=value)


def curves_table(curves: pd.DataFrame, index: Sequence[str], value: str = "mean", decimals: int = 1) -> pd.DataFrame:
    """``curves`` (:func:`accuracy_curves`) for display: one row per ``index`` group, one column per
    magnitude, ``value`` rounded to ``decimals``; a combination that was not measured (a mode without that
    magnitude, a failed run) reads as an en dash, never "NaN" (``make check-book`` fails on NaN in a table).
    """
    index = [index] if isinstance(index, str) else list(index)
    require_columns(curves, [*index, "magnitude", value], "curves")
    wide = curves.pivot_table(index=index, columns="magnitude", values=value).round(decimals)
    # object columns: a number stays a number, a missing one becomes the dash
    return wide.astype(object).where(wide.notna(), "\u2013")


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks; ``nan`` with fewer than 2 points)."""
    x, y = pd.Series(np.asarray(x, dtype=np.float64)), pd.Series(np.asarray(y, dtype=np.float64))
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    return float(x.rank().corr(y.rank())) if len(x) >= 2 else float("nan")


def layer_nv_vs_rk(inv: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Trained unshuffled nodes with both a rotation NV (``invariance``, unstratified) and an ``R_k``
    (``layers``), matched on run and layer: ``inv`` columns + ``R_f, D_f, G_f, log10_R`` and ``training``."""
    require_columns(inv, ["run", "layer", "mean_NV"], "inv")
    require_columns(layers, ["run", "layer", "R_f", "state"], "layers")
    plain = inv[~inv["stratified"].astype(bool)] if "stratified" in inv.columns else inv
    lay = select(layers, state="trained", shuffle=0)
    both = plain.merge(lay[["run", "layer", "R_f", "D_f", "G_f"]], on=["run", "layer"], how="inner")
    both = both[np.isfinite(both["mean_NV"]) & (both["R_f"] > 0)].copy()
    both["log10_R"] = np.log10(both["R_f"])
    if "training" not in both.columns:
        both["training"] = training_label(both)
    return both


def rotation_kept(acc: pd.DataFrame) -> pd.DataFrame:
    """Per net and training: accuracy (%) on upright images (``clean``) and the mean over the other
    angles divided by it (``kept``), from the ``rotate`` probe rows of all classes."""
    require_columns(acc, ["probe", "label", "magnitude", "accuracy", "net", "training"], "acc")
    r = acc[(acc["probe"] == "rotate") & (acc["label"] < 0)]
    allr = r.groupby(["net", "training", "magnitude"], as_index=False)["accuracy"].mean()
    allr["accuracy"] *= 100
    clean = allr[allr["magnitude"] == 0].set_index(["net", "training"])["accuracy"]
    rotd = allr[allr["magnitude"] != 0].groupby(["net", "training"])["accuracy"].mean()
    out = pd.DataFrame({"clean": clean, "rotated": rotd}).dropna()
    out["kept"] = out["rotated"] / out["clean"]
    return out.reset_index()


# ------------------------------------------------------------------------------------------ intervals
def bootstrap_ci(statistic, *samples, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*samples)``, resampling the rows of the 1-D
    ``samples`` jointly (same indices for each). ``nan, nan`` with fewer than 3 rows or when the
    statistic is not finite on most resamples (seeded: the same numbers on every run)."""
    arrs = [np.asarray(s, dtype=np.float64).ravel() for s in samples]
    if not arrs or len({a.size for a in arrs}) != 1:
        raise ValueError("samples must be one or more 1-D arrays of the same length")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n = arrs[0].size
    if n < 3:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(*(a[idx] for a in arrs)) for idx in rng.integers(0, n, size=(n_boot, n))],
                     dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if stats.size < n_boot / 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


#: Masking probes of the ``probe_masking`` sweep -> the variant labels on the page.
MASK_VARIANTS = {"mask": "random, zero fill", "mask_saliency": "salient first, zero fill",
                 "mask_mean": "random, mean fill"}
#: Patch-shuffling probes -> the ``mode`` labels on the page.
SHUFFLE_MODES = {"patch_shuffle": "full", "patch_shuffle_rows_cols": "rows_cols"}


def global_nv_table(inv: pd.DataFrame) -> pd.DataFrame:
    """Global mean NV (:func:`stabkit.robustness.global_nv`) per run, then averaged over seeds: one row
    per ``net``, ``training`` and ``stratified`` with ``global_NV``."""
    require_columns(inv, ["net", "training", "seed", "stratified", "mean_NV"], "inv")
    g = _robustness().global_nv(inv, by=("net", "training", "seed", "stratified"))
    return g.groupby(["net", "training", "stratified"], as_index=False)["global_NV"].mean()


def mode_difference(curves: pd.DataFrame, a: str, b: str, column: str = "mode", training: str = "unrotated",
                    above: float = 1.0) -> float:
    """Mean over nets and magnitudes ``> above`` of ``curves`` accuracy of ``column == a`` minus
    ``column == b`` (e.g. patch shuffling rows_cols minus full), for nets trained ``training``."""
    u = select(curves, training=training)
    keys = ["net", "magnitude"]
    both = (u[u[column] == a].merge(u[u[column] == b], on=keys, suffixes=("_a", "_b")))
    both = both[both["magnitude"] > above]
    return float((both["mean_a"] - both["mean_b"]).mean()) if len(both) else float("nan")


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


def resampling_label(df: pd.DataFrame) -> pd.Series:
    """How a resolution-probe run resampled its images, as a label: ``"<interpolation>"`` plus ``", no
    antialias"`` without antialiasing; read from ``interpolation`` / ``antialias`` columns (the ``resolution`` table) or from
    the run's ``net_options`` (``nearest`` for nearest-neighbour resampling)."""
    if {"interpolation", "antialias"} <= set(df.columns):
        return df["interpolation"].astype(str) + np.where(df["antialias"].astype(bool), "", ", no antialias")
    interpolation = config_values(df, "net_options", "interpolation", "bilinear")
    aa = config_values(df, "net_options", "antialias", True)
    return pd.Series(["nearest" if i == "nearest" else "bilinear" + ("" if a else ", no antialias")
                      for i, a in zip(interpolation, aa)], index=df.index)
