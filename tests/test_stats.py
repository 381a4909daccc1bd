"""Small-n inference of the claim checks (stabkit.report.stats): intervals over architectures, verdict rules."""
from __future__ import annotations

import numpy as np
import pytest

from stabkit.report import stats


def test_bootstrap_ci_brackets_the_mean():
    x = np.random.default_rng(0).normal(1.0, 0.1, 200)
    lo, hi = stats.bootstrap_ci(np.mean, x, n_boot=500)
    assert lo < 1.0 < hi and hi - lo < 0.1
    assert np.isnan(stats.bootstrap_ci(np.mean, [1.0, 2.0])[0])


def test_correlation_resamples_architectures_not_points():
    """18 points of 6 architectures: each architecture's 3 points lie on a steep line of its own, the
    architectures disagree; resampling points treats them as 18 independent nets."""
    rng = np.random.default_rng(0)
    x, y, cl = [], [], []
    for i in range(6):
        base, off = rng.normal(-2, 0.5), rng.normal(0, 0.5)
        for k in range(3):
            x.append(10 ** (base + 0.3 * k))
            y.append(10 ** (-1 + off + 0.3 * k))
            cl.append(f"a{i}")
    by_arch = stats.log_correlation(x, y, clusters=cl)
    by_point = stats.log_correlation(x, y)
    assert by_arch["n"] == 18 and by_arch["n_units"] == 6 and by_point["n_units"] == 18
    assert by_arch["r_high"] - by_arch["r_low"] > by_point["r_high"] - by_point["r_low"]


def test_mean_interval_counts_architectures():
    v = np.r_[np.full(3, -2.0), np.full(3, -1.9), np.full(3, 0.2)]
    cl = np.repeat(["a", "b", "c"], 3)
    _, lo, hi = stats.mean_ci(v, clusters=cl)
    _, plo, phi = stats.mean_ci(v)
    assert hi - lo > phi - plo and hi > 0  # 3 units, not 9
    assert np.isnan(stats.mean_ci(v[:6], clusters=cl[:6])[1])  # 2 architectures: no interval
    with pytest.raises(ValueError, match="clusters"):
        stats.mean_ci(v, clusters=cl[:4])


def test_t_interval_is_the_mean_with_a_student_t_half_width():
    from stabkit.report.stats import t_interval
    m, lo, hi, n = t_interval([1.0, 2.0, 3.0, float("nan")])
    assert (m, n) == (2.0, 3) and lo == pytest.approx(2.0 - 4.303 / 3 ** 0.5) and hi == pytest.approx(2.0 + 4.303 / 3 ** 0.5)
    assert t_interval([5.0])[0] == 5.0 and t_interval([5.0])[3] == 1
    assert all(v != v for v in t_interval([5.0])[1:3]) and t_interval([])[3] == 0
