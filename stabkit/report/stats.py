"""Inference for the claim checks: correlations and the 2021 law with bootstrap intervals, and the rules
that turn a value and its interval into a verdict, "cannot be tested at this scale" included.

Every interval is a seeded percentile bootstrap over networks (:func:`stabkit.report.analysis.bootstrap_ci`:
the same numbers on every build). A *network* is one trained run (one architecture and seed).

The rules (stated in the ``rule`` of every claim that uses them):

* fewer than :data:`MIN_NETWORKS` networks: "cannot be tested at this scale";
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

from .analysis import bootstrap_ci, positive_logs

__all__ = ["MIN_NETWORKS", "NEAR_CHANCE", "CHANCE_ERROR", "SQRT_LAW_A", "chance_error", "near_chance_fraction",
           "log_correlation", "sqrt_law_fit", "mean_ci", "interval_decision", "sample_decision"]

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


def log_correlation(x, y, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Pearson correlation ``r`` of ``log10 x`` and ``log10 y`` and the least-squares slope, each with a
    bootstrap interval over the points (non-positive or non-finite points dropped).

    Returns ``r, r_low, r_high, slope, slope_low, slope_high, n`` (nan where undefined; intervals need
    at least 3 points)."""
    lx, ly = positive_logs(x, y)
    r_lo, r_hi = bootstrap_ci(_pearson, lx, ly, n_boot=n_boot, level=level, seed=seed)
    s_lo, s_hi = bootstrap_ci(_slope, lx, ly, n_boot=n_boot, level=level, seed=seed)
    return {"r": _pearson(lx, ly), "r_low": r_lo, "r_high": r_hi, "slope": _slope(lx, ly), "slope_low": s_lo,
            "slope_high": s_hi, "n": int(lx.size)}


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


def mean_ci(values, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of the finite ``values`` and its bootstrap interval: ``(mean, low, high)``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = bootstrap_ci(np.mean, v, n_boot=n_boot, level=level, seed=seed)
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
