"""Inference for the claim checks: correlations and the 2021 law with bootstrap intervals, and the rules
that turn a value and its interval into a verdict, "cannot be tested at this scale" included.

Intervals fit a small number of architectures (seeded: the same numbers on every build). A *network* is
one trained run (one architecture, seed and noise level); the seeds and noise levels of one architecture
are not independent, so the independent unit is the architecture: intervals of a correlation are the
envelope of a cluster bootstrap over architectures and Fisher's interval with n = the number of
architectures; intervals of a mean are the envelope of a cluster bootstrap and the t interval over the
architectures' means; the law ``eps_t = a R_f^b`` is fitted with both ``a`` and ``b`` free. Zero test
errors enter a log as ``1 / (2 N_test)`` (:func:`floor_errors`) and are counted.

The rules (stated in the ``rule`` of every claim that uses them):

* fewer than :data:`MIN_NETWORKS` networks or :data:`MIN_UNITS` architectures: "cannot be tested at
  this scale";
* most networks near chance (test error at least :data:`NEAR_CHANCE` x the chance error of the task,
  :data:`CHANCE_ERROR`): "cannot be tested" (a correlation between networks that learnt nothing says
  nothing about the paper's networks);
* the interval spans the threshold: "cannot be tested"; entirely on the claim's side: "holds"; entirely
  on the other side: "does not hold".
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "positive_logs", "rank_correlation", "bootstrap_ci", "MIN_NETWORKS", "NEAR_CHANCE", "CHANCE_ERROR",
    "SQRT_LAW_A", "chance_error", "near_chance_fraction", "sqrt_law_fit", "mean_ci", "interval_decision",
    "sample_decision", "MIN_UNITS", "t_quantile_95", "t_interval", "per_net_intervals", "fisher_interval", "cluster_bootstrap_ci", "floor_errors",
    "test_set_sizes", "cluster_labels", "log_correlation", "power_law_fit",
]


def positive_logs(*arrays) -> list[np.ndarray]:
    """``log10`` of equal-length arrays, keeping only the positions where every array is finite and > 0."""
    arrs = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    if len({a.size for a in arrs}) != 1:
        raise ValueError(f"x and y must have the same length, got {[a.size for a in arrs]}")
    ok = np.ones(arrs[0].size, dtype=bool)
    for a in arrs:
        ok &= np.isfinite(a) & (a > 0)
    return [np.log10(a[ok]) for a in arrs]


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks; ``nan`` with fewer than 2 points)."""
    x, y = pd.Series(np.asarray(x, dtype=np.float64)), pd.Series(np.asarray(y, dtype=np.float64))
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    return float(x.rank().corr(y.rank())) if len(x) >= 2 else float("nan")


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


#: Fewest networks a correlation is tested on.
MIN_NETWORKS = 5


#: A network is near chance when its error is at least this fraction of the chance error.
NEAR_CHANCE = 0.9


#: Chance test error per task (10 balanced classes; two balanced classes).
CHANCE_ERROR = {"cifar10": 0.9, "twopoints": 0.5, "scale1d": 0.5}


#: The 2021 paper's prefactor of ``eps_t = a sqrt(R_f)`` (Petrini et al. 2021, 15 architectures).
SQRT_LAW_A = 0.2


def chance_error(df: pd.DataFrame, default: float = 0.9) -> float:
    """The chance error of the task of ``df`` (its ``task`` column, :data:`CHANCE_ERROR`); ``default``
    without one or for an unknown task (mixed tasks: the largest)."""
    if "task" not in df.columns or df["task"].dropna().empty:
        return default
    return max(CHANCE_ERROR.get(str(t), default) for t in df["task"].dropna().unique())


def near_chance_fraction(err, chance: float, near: float = NEAR_CHANCE) -> float:
    """Fraction of the finite errors ``err`` that are at least ``near * chance`` (nan if none)."""
    e = np.asarray(err, dtype=np.float64)
    e = e[np.isfinite(e)]
    return float(np.mean(e >= near * chance)) if e.size else float("nan")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:  # two points always lie on a line
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.ptp(x) == 0:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def sqrt_law_fit(R_f, err, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Fit of the 2021 law ``err = a sqrt(R_f)`` (slope fixed at 1/2 in log-log): ``a`` is the geometric
    mean of ``err / sqrt(R_f)`` (the least-squares intercept with the slope fixed), with a bootstrap
    interval over networks. Returns ``a, a_low, a_high, n``."""
    lr, le = positive_logs(R_f, err)
    if lr.size == 0:
        nan = float("nan")
        return {"a": nan, "a_low": nan, "a_high": nan, "n": 0}
    resid = le - 0.5 * lr
    lo, hi = bootstrap_ci(np.mean, resid, n_boot=n_boot, level=level, seed=seed)
    return {"a": float(10 ** resid.mean()), "a_low": float(10 ** lo), "a_high": float(10 ** hi),
            "n": int(lr.size)}


def mean_ci(values, *, clusters=None, n_boot: int = 2000, level: float = 0.95,
            seed: int = 0) -> tuple[float, float, float]:
    """Mean of the finite ``values`` and its 95 % interval: ``(mean, low, high)``.

    Without ``clusters``: a percentile bootstrap over the values. With ``clusters`` (the architecture
    of every value): the envelope of a cluster bootstrap and the t interval over the architectures'
    means (``k - 1`` degrees of freedom), so that 6 architectures x 3 seeds count as 6 units, not 18;
    ``nan`` interval with fewer than :data:`MIN_UNITS` architectures."""
    v = np.asarray(values, dtype=np.float64).ravel()
    ok = np.isfinite(v)
    if not ok.any():
        return float("nan"), float("nan"), float("nan")
    if clusters is None:
        lo, hi = bootstrap_ci(np.mean, v[ok], n_boot=n_boot, level=level, seed=seed)
        return float(v[ok].mean()), lo, hi
    _level_check(level)
    cl = np.asarray(clusters, dtype=object).ravel()
    if cl.size != v.size:
        raise ValueError(f"clusters must have one label per value ({v.size}), got {cl.size}")
    v, cl = v[ok], cl[ok]
    codes = _codes(cl, v.size)
    k = int(codes.max()) + 1
    means = np.array([v[codes == j].mean() for j in range(k)])
    if k < MIN_UNITS:
        return float(v.mean()), float("nan"), float("nan")
    h = t_quantile_95(k - 1) * means.std(ddof=1) / np.sqrt(k)
    boot = cluster_bootstrap_ci(np.mean, v, clusters=cl, n_boot=n_boot, level=level, seed=seed)
    lo, hi = _envelope(boot, (means.mean() - h, means.mean() + h))
    return float(v.mean()), lo, hi


def interval_decision(value: float, low: float, high: float, threshold: float,
                      above: bool = True) -> tuple[bool, bool, str]:
    """``(holds, testable, reason)`` of a claim "``value`` >= ``threshold``" (``above``) or "<=" from its
    interval: on the claim's side entirely -> holds; on the other side entirely -> does not hold; spanning
    the threshold -> not testable. Without an interval (nan) the claim is not testable."""
    if not (np.isfinite(value) and np.isfinite(low) and np.isfinite(high)):
        return False, False, "no confidence interval (too few networks)"
    lo, hi = (low, high) if above else (-high, -low)
    t = threshold if above else -threshold
    if lo >= t:
        return True, True, ""
    if hi < t:
        return False, True, ""
    return False, False, f"the interval [{low:.3g}, {high:.3g}] spans the threshold {threshold:g}"


def sample_decision(n: int, errors=None, chance: float = 0.9, min_networks: int = MIN_NETWORKS,
                    near: float = NEAR_CHANCE) -> tuple[bool, str, dict[str, Any]]:
    """Whether a set of ``n`` networks (with test ``errors``) can test a correlation: ``(ok, reason,
    details)``. Not with fewer than ``min_networks``; not when most networks are near chance."""
    details: dict[str, Any] = {"n": int(n)}
    if n < min_networks:
        return False, f"{n} networks (fewer than {min_networks})", details
    if errors is not None:
        frac = near_chance_fraction(errors, chance, near)
        details["near_chance"] = frac
        if np.isfinite(frac) and frac > 0.5:
            return False, f"{frac:.0%} of the networks are near chance (error >= {near * chance:.2g})", details
    return True, "", details


#: Two-sided 95 % quantiles of Student's t for 1-30 degrees of freedom (no SciPy dependency).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


#: Fewest independent units (architectures, or networks without clusters) an interval is computed on.
MIN_UNITS = 3


def t_quantile_95(df: int) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (table to 30, 1.96 above)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df!r}")
    return _T95[df - 1] if df <= len(_T95) else 1.96 + 2.4 / df  # 1.96 + 2.4/df: within 0.003 above 30


def t_interval(values) -> tuple[float, float, float, int]:
    """Mean of the finite ``values`` and its 95 % t interval over them (``n - 1`` degrees of freedom):
    ``(mean, low, high, n)``; nan interval with fewer than 2 values, nan mean with none."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan"), 1
    h = t_quantile_95(v.size - 1) * float(v.std(ddof=1)) / np.sqrt(v.size)
    return m, m - h, m + h, int(v.size)


def per_net_intervals(df, column: str, threshold: float, above: bool) -> dict[str, tuple]:
    """Per architecture (``net``): the mean of ``column`` over its runs with its t interval
    (:func:`t_interval`, none with one run) and the decision of that interval against ``threshold``
    (:func:`interval_decision`): ``{net: (mean, low, high, n, holds, ok)}``; empty without a ``net`` column."""
    out: dict[str, tuple] = {}
    if "net" not in df.columns:
        return out
    for net, g in df.groupby("net"):
        m, lo, hi, n = t_interval(g[column])
        if n:
            holds, ok, _ = interval_decision(m, lo, hi, threshold, above=above)
            out[str(net)] = (m, lo, hi, n, holds, ok)
    return out


def _level_check(level: float) -> None:
    if level != 0.95:
        raise ValueError(f"level must be 0.95 (the t and Fisher intervals are tabulated at 95 %), got {level!r}")


def fisher_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """95 % interval of a Pearson correlation ``r`` from ``n`` independent points by Fisher's z
    transform (``atanh r +- 1.96 / sqrt(n - 3)``); ``nan, nan`` with ``n < 4`` or a non-finite ``r``."""
    _level_check(level)
    if not np.isfinite(r) or n < 4:
        return float("nan"), float("nan")
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    h = 1.959964 / np.sqrt(n - 3)
    return float(np.tanh(z - h)), float(np.tanh(z + h))


def _codes(clusters, n: int) -> np.ndarray:
    if clusters is None:
        return np.arange(n)
    c = pd.Series(np.asarray(clusters, dtype=object).ravel())
    if c.size != n:
        raise ValueError(f"clusters must have one label per point ({n}), got {c.size}")
    return pd.factorize(c.astype(str))[0]


def cluster_bootstrap_ci(statistic, *samples, clusters=None, n_boot: int = 2000, level: float = 0.95,
                         seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*samples)`` that resamples whole clusters (e.g. the
    architectures: the seeds and noise levels of one architecture are not independent networks).
    ``clusters=None``: every point is its own cluster. ``nan, nan`` with fewer than :data:`MIN_UNITS`
    clusters or a statistic that is not finite on most resamples (seeded)."""
    arrs = [np.asarray(s, dtype=np.float64).ravel() for s in samples]
    if not arrs or len({a.size for a in arrs}) != 1:
        raise ValueError("samples must be one or more 1-D arrays of the same length")
    codes = _codes(clusters, arrs[0].size)
    k = int(codes.max()) + 1 if codes.size else 0
    if k < MIN_UNITS:
        return float("nan"), float("nan")
    members = [np.flatnonzero(codes == j) for j in range(k)]
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b, pick in enumerate(rng.integers(0, k, size=(n_boot, k))):
        idx = np.concatenate([members[j] for j in pick])
        stats[b] = statistic(*(a[idx] for a in arrs))
    stats = stats[np.isfinite(stats)]
    if stats.size < n_boot / 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _envelope(*intervals: tuple[float, float]) -> tuple[float, float]:
    """The smallest interval containing every finite interval; ``nan, nan`` if any is missing (an
    interval that cannot be computed leaves the claim without one)."""
    if not intervals or any(not (np.isfinite(lo) and np.isfinite(hi)) for lo, hi in intervals):
        return float("nan"), float("nan")
    return float(min(lo for lo, _ in intervals)), float(max(hi for _, hi in intervals))


def floor_errors(err, n_test) -> tuple[np.ndarray, int]:
    """Errors ready for a log: a zero error becomes ``1 / (2 n_test)`` (half a misclassified test
    sample: a log fit must not silently drop the best networks). ``n_test``: test samples per point
    (scalar or array; nan leaves zeros as they are). Returns ``(errors, n_floored)``."""
    e = np.asarray(err, dtype=np.float64).ravel().copy()
    n = np.broadcast_to(np.asarray(n_test, dtype=np.float64), e.shape)
    zero = (e == 0) & np.isfinite(n) & (n > 0)
    e[zero] = 0.5 / n[zero]
    return e, int(zero.sum())


def test_set_sizes(df: pd.DataFrame) -> np.ndarray:
    """Test samples of every row of ``df`` (``book/methods.md``): ``test_size`` where set, else the task's
    default (CIFAR-10: 10,000; twopoints: ``4 ptr``), else nan."""
    n = np.full(len(df), np.nan)
    if "test_size" in df.columns:
        n = pd.to_numeric(df["test_size"], errors="coerce").to_numpy(dtype=np.float64)
    if "task" in df.columns:
        task = df["task"].astype(str).to_numpy()
        n = np.where(np.isnan(n) & (task == "cifar10"), 10_000.0, n)
        if "ptr" in df.columns:
            ptr = pd.to_numeric(df["ptr"], errors="coerce").to_numpy(dtype=np.float64)
            n = np.where(np.isnan(n) & (task == "twopoints"), 4 * ptr, n)
    return n


def cluster_labels(df: pd.DataFrame, column: str = "net") -> np.ndarray | None:
    """The cluster of every row (its architecture, ``column``) or ``None`` without the column."""
    return df[column].astype(str).to_numpy() if column in df.columns else None


def log_correlation(x, y, *, clusters=None, n_boot: int = 2000, level: float = 0.95,
                    seed: int = 0) -> dict[str, Any]:
    """Pearson correlation ``r`` of ``log10 x`` and ``log10 y`` and the least-squares slope, with
    intervals that fit a small number of architectures (non-positive or non-finite points dropped).

    ``clusters``: the architecture of every point. The interval of ``r`` is the envelope of a cluster
    bootstrap (resampling architectures) and Fisher's interval with ``n`` = the number of architectures
    (independent units; every point is one without ``clusters``): a percentile bootstrap alone is
    anti-conservative at n = 6. The slope's interval is the cluster bootstrap. Returns ``r, r_low, r_high,
    slope, slope_low, slope_high, n`` (points) and ``n_units`` (architectures); intervals need
    :data:`MIN_UNITS` units (Fisher: 4)."""
    _level_check(level)
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.size != ya.size:
        raise ValueError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    ok = np.isfinite(xa) & np.isfinite(ya) & (xa > 0) & (ya > 0)
    lx, ly = np.log10(xa[ok]), np.log10(ya[ok])
    cl = None if clusters is None else np.asarray(clusters, dtype=object).ravel()[ok]
    codes = _codes(cl, lx.size)
    units = int(codes.max()) + 1 if codes.size else 0
    r = _pearson(lx, ly)
    boot = cluster_bootstrap_ci(_pearson, lx, ly, clusters=cl, n_boot=n_boot, level=level, seed=seed)
    r_lo, r_hi = _envelope(boot, fisher_interval(r, units, level))
    s_lo, s_hi = cluster_bootstrap_ci(_slope, lx, ly, clusters=cl, n_boot=n_boot, level=level, seed=seed)
    return {"r": r, "r_low": r_lo, "r_high": r_hi, "slope": _slope(lx, ly), "slope_low": s_lo,
            "slope_high": s_hi, "n": int(lx.size), "n_units": units}


def power_law_fit(R_f, err, *, clusters=None, n_boot: int = 2000, level: float = 0.95,
                  seed: int = 0) -> dict[str, Any]:
    """Free fit of ``err = a R_f^b`` (least squares in log-log) with 95 % intervals for ``a`` and ``b``:
    the envelope of a cluster bootstrap (``clusters``: architectures) and the t interval of the
    regression with the number of architectures as degrees of freedom + 2. Returns ``a, a_low, a_high,
    b, b_low, b_high, n, n_units``."""
    _level_check(level)
    lr, le = positive_logs(R_f, err)
    nan = float("nan")
    cl = None
    if clusters is not None:
        ra, ea = (np.asarray(v, dtype=np.float64).ravel() for v in (R_f, err))
        keep = np.isfinite(ra) & np.isfinite(ea) & (ra > 0) & (ea > 0)
        cl = np.asarray(clusters, dtype=object).ravel()[keep]
    codes = _codes(cl, lr.size)
    units = int(codes.max()) + 1 if codes.size else 0
    out: dict[str, Any] = {"a": nan, "a_low": nan, "a_high": nan, "b": nan, "b_low": nan, "b_high": nan,
                           "n": int(lr.size), "n_units": units}
    if lr.size < 3 or np.ptp(lr) == 0:
        return out
    b, c = np.polyfit(lr, le, 1)
    out.update(a=float(10 ** c), b=float(b))

    def intercept(x, y):
        return float(np.polyfit(x, y, 1)[1]) if np.ptp(x) > 0 else float("nan")

    b_boot = cluster_bootstrap_ci(_slope, lr, le, clusters=cl, n_boot=n_boot, level=level, seed=seed)
    c_boot = cluster_bootstrap_ci(intercept, lr, le, clusters=cl, n_boot=n_boot, level=level, seed=seed)
    if units >= MIN_UNITS and lr.size > 2:
        resid = le - (b * lr + c)
        s2 = float(resid @ resid) / (lr.size - 2)
        sxx = float(((lr - lr.mean()) ** 2).sum())
        t = t_quantile_95(max(units - 2, 1))
        se_b = np.sqrt(s2 / sxx)
        se_c = np.sqrt(s2 * (1 / lr.size + lr.mean() ** 2 / sxx))
        b_lo, b_hi = _envelope(b_boot, (b - t * se_b, b + t * se_b))
        c_lo, c_hi = _envelope(c_boot, (c - t * se_c, c + t * se_c))
        out.update(b_low=b_lo, b_high=b_hi, a_low=float(10 ** c_lo) if np.isfinite(c_lo) else nan,
                   a_high=float(10 ** c_hi) if np.isfinite(c_hi) else nan)
    return out
