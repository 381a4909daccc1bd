"""Issue 26: testability preconditions, the convergence rule, small-n statistics (each test fails on the
code before it: a collapsed run counted as well trained, percentile intervals at n = 6, the law with its
slope fixed, zero errors dropped, verdicts decided on untestable nets)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stabkit.report import claims, fidelity, stats
from tests.test_claims import CNNS, paper_output, synthetic_layers


def _summary_metrics() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three scale-detection runs (chance 50 %): a good one, one that collapsed to chance after a good
    best epoch, one that never trained (training error at chance throughout, one lucky test epoch)."""
    runs = {"good": (0.01, 0.012, [0.3, 0.1, 0.0]), "collapsed": (0.05, 0.50, [0.42, 0.2, 0.47]),
            "never": (0.18, 0.50, [0.49, 0.48, 0.49])}
    summary = pd.DataFrame([dict(run=k, net=k.upper(), seed=0, task="twopoints", best_test_err=b, last_test_err=la)
                            for k, (b, la, _) in runs.items()])
    metrics = pd.DataFrame([dict(run=k, epoch=e, train_err=t) for k, (_, _, tr) in runs.items()
                            for e, t in enumerate(tr)])
    return summary, metrics


def test_collapsed_run_is_not_well_trained():
    conv = fidelity.convergence(*_summary_metrics()).set_index("run")
    assert bool(conv.loc["good", "well_trained"]) and not bool(conv.loc["good", "collapsed"])
    assert not bool(conv.loc["collapsed", "well_trained"]) and bool(conv.loc["collapsed", "collapsed"])
    assert "collapsed" in conv.loc["collapsed", "reason"]
    assert not bool(conv.loc["never", "well_trained"])
    assert "training error did not fall" in conv.loc["never", "reason"]
    listed = fidelity.collapsed_runs(conv.reset_index())
    assert list(listed["net"]) == ["COLLAPSED", "NEVER"] and "last test error (%)" in listed.columns


def test_collapsed_runs_leave_the_claims():
    """A net that collapsed after a lucky best epoch is measured on that epoch: it must not enter
    'R_f falls' nor the correlation (before: kept, as its best error was below the threshold)."""
    out = paper_output(seeds=(0, 1), err_of=lambda net, nz: 0.05)
    bad = (out["net"] == "AlexNet") & (out["state"] == "trained")
    out.loc[bad, "R_f"] = 10.0  # rises with training: sinks the pooled claim if counted
    conv = pd.DataFrame({"run": out["run"].unique()})
    conv["well_trained"] = ~conv["run"].str.startswith("AlexNet")
    c = claims.claim_rf_falls(fidelity.with_convergence(out, conv))
    assert c.verdict == claims.HOLDS and "verdict:AlexNet" not in c.details
    counted = claims.claim_rf_falls(out)  # counted: AlexNet goes the other way
    assert counted.verdict != claims.HOLDS and counted.details["verdict:AlexNet"] == claims.FAILS
    corr = claims.claim_error_correlation(fidelity.with_convergence(paper_output(seeds=(0, 1)), conv))
    assert corr.details["n_excluded"] == 2 and "AlexNet" in corr.details["excluded"]


def test_rf_falls_cannot_be_tested_above_ten_percent_error():
    """CIFAR nets at 19-33 % error: the paper's law puts R_f of order one there, so 'R_f falls by
    decades' reads 'cannot be tested', with the reason (before: 'does not hold')."""
    out = paper_output(seeds=(0, 1), rf_falls=0.09, err_of=lambda net, nz: 0.19 + 0.02 * CNNS.index(net))
    c = claims.claim_rf_falls(out)
    assert c.verdict == claims.UNTESTABLE
    assert "10 %" in c.details["reason"] and "19.0 %" in c.details["reason"]


def test_pooling_claims_need_the_output_to_pool():
    """Fig. 3 / Fig. 6: nets whose output R_f fell less than 0.5 decades cannot show where they pool."""
    lay = synthetic_layers(second_half_gap=1.0)
    assert claims.claim_channel_pooling_second_half(lay).verdict == claims.HOLDS
    flat = lay.copy()
    tr = flat["state"] == "trained"
    flat.loc[tr, "R_f"] = flat.loc[tr, "R_f"] ** 0.1  # the output falls 0.2 decades
    for fn in (claims.claim_channel_pooling_second_half, claims.claim_spatial_pooling_first_half,
               claims.claim_shuffle_no_effect):
        c = fn(flat)
        assert c.verdict == claims.UNTESTABLE and "fell 0.20 decades" in c.details["reason"]


def test_channel_pooling_reports_d_and_g_parts_per_half():
    lay = synthetic_layers(second_half_gap=1.0)  # the gap is all in D_k (G_f = 1)
    lay["D_f"] = lay["R_f"]
    c = claims.claim_channel_pooling_second_half(lay)
    assert c.details["second_D"] == pytest.approx(1.0) and c.details["second_G"] == pytest.approx(0.0)
    assert c.details["verdict:VGG11"] == claims.HOLDS


def test_n6_correlation_interval_contains_zero_when_architectures_disagree():
    """Six architectures, r = 0.78: the percentile bootstrap gave [0.6, 0.95] and 'holds'; Fisher's
    interval at n = 6 contains 0, so the claim cannot be tested."""
    rf = np.array([1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1])
    err = 0.2 * np.sqrt(rf) * np.array([1.0, 3.0, 0.4, 2.5, 0.5, 1.8])
    c = stats.log_correlation(rf, err, clusters=[f"n{i}" for i in range(6)])
    assert c["r"] == pytest.approx(0.77, abs=0.01) and c["r_low"] < 0 < c["r_high"] and c["n_units"] == 6
    out = paper_output(nets=CNNS[:6])
    tr = out["state"] == "trained"
    out.loc[tr, "R_f"], out.loc[tr, "test_err"] = rf, err
    claim = claims.claim_error_correlation(out)
    assert claim.verdict == claims.UNTESTABLE and claim.ci_low < 0 and claim.details["n_units"] == 6


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


def test_law_is_fitted_with_a_free_exponent():
    """eps = a R^b with b = 0.23: the fixed-slope fit found a in [0.1, 0.4] and 'held'; the free fit's
    interval of b excludes 1/2."""
    out = paper_output(seeds=(0, 1, 2))
    tr = out["state"] == "trained"
    out.loc[tr, "test_err"] = 0.27 * out.loc[tr, "R_f"] ** 0.23
    c = claims.claim_sqrt_law(out)
    assert c.verdict == claims.FAILS and c.details["b_high"] < 0.5
    assert c.value == pytest.approx(0.23, abs=0.02) and "excludes 0.5" in c.details["reason"]
    fit = stats.power_law_fit([1e-3, 1e-2, 1e-1, 1e-3], [0.2e-1 ** 1, 0.02, 0.2 * 1e-1 ** 0.5, 0.01],
                              clusters=["a", "b", "c", "d"])
    assert np.isfinite(fit["b_low"]) and fit["b_low"] <= fit["b"] <= fit["b_high"]


def test_zero_errors_are_floored_and_counted():
    out = paper_output(seeds=(0, 1))
    tr = out["state"] == "trained"
    out.loc[tr & (out["net"] == "VGG11"), "test_err"] = 0.0
    c = claims.claim_error_correlation(out)
    assert c.details["n"] == 14 and c.details["n_floored"] == 2  # before: the two dropped silently
    e, n = stats.floor_errors([0.0, 0.1], [10_000, 10_000])
    assert n == 1 and e[0] == pytest.approx(5e-5)


def test_pooled_holds_but_an_architecture_goes_the_other_way():
    out = paper_output(seeds=(0, 1, 2), rf_falls=2.5, err_of=lambda net, nz: 0.03)
    tr = (out["net"] == "AlexNet") & (out["state"] == "trained")
    out.loc[tr, "R_f"] = 10 ** -0.4 * (1 + 0.01 * out.loc[tr, "seed"])
    c = claims.claim_rf_falls(out)
    assert c.details["verdict:AlexNet"] == claims.FAILS and c.details["verdict:VGG11"] == claims.HOLDS
    assert c.verdict == claims.FAILS and "not for AlexNet" in c.details["reason"]


def test_mean_interval_counts_architectures():
    v = np.r_[np.full(3, -2.0), np.full(3, -1.9), np.full(3, 0.2)]
    cl = np.repeat(["a", "b", "c"], 3)
    _, lo, hi = stats.mean_ci(v, clusters=cl)
    _, plo, phi = stats.mean_ci(v)
    assert hi - lo > phi - plo and hi > 0  # 3 units, not 9
    assert np.isnan(stats.mean_ci(v[:6], clusters=cl[:6])[1])  # 2 architectures: no interval
    with pytest.raises(ValueError, match="clusters"):
        stats.mean_ci(v, clusters=cl[:4])


def test_df_falls_and_gf_grows_with_noisy_training():
    out = paper_output(seeds=(0, 1), noise=(0.0, 1.0))
    assert claims.claim_df_falls(out).verdict == claims.HOLDS  # D_f = R_f G_f: 10**-2 x 10 -> -1 decade
    noisy = claims.claim_gf_grows_noisy(out)
    assert noisy.verdict == claims.HOLDS and noisy.details["n"] == 14 and "noise_std > 0" in noisy.rule
    flat = out.copy()
    flat.loc[flat["state"] == "trained", "D_f"] = flat.loc[flat["state"] == "init", "D_f"].to_numpy() * 10
    assert claims.claim_df_falls(flat).verdict == claims.FAILS
    assert claims.claim_gf_grows_noisy(out[out["noise_std"] == 0]).verdict == claims.UNTESTABLE


def test_pooling_claims_leave_out_runs_that_are_not_well_trained():
    lay = synthetic_layers(second_half_gap=1.0)
    lay["run"] = lay["net"] + "-" + lay["seed"].astype(str)
    broken = lay["run"] == "AlexNet-1"
    lay.loc[broken & (lay["shuffle"] == 1), "R_f"] = lay.loc[broken & (lay["shuffle"] == 1), "R_f"] * 1e-3
    assert claims.claim_channel_pooling_second_half(lay).verdict != claims.HOLDS  # the broken run counts
    conv = pd.DataFrame({"run": lay["run"].unique()})
    conv["well_trained"] = conv["run"] != "AlexNet-1"
    assert claims.claim_channel_pooling_second_half(fidelity.with_convergence(lay, conv)).verdict == claims.HOLDS


def test_error_range_gives_best_and_last_errors():
    from stabkit.report import prose
    s = pd.DataFrame({"best_test_err": [0.0, 0.356, 0.05], "last_test_err": [0.0, 0.356, 0.5]})
    assert prose.error_range(s) == "best 0.0-35.6 %, last epoch 0.0-50.0 %"
    assert prose.error_range(pd.DataFrame({"x": [1]})) == "n/a"


def test_claims_table_shows_a_dash_not_nan():
    t = claims.claims_table({"x": claims.Claim("x", False, float("nan"), 1.0, testable=False),
                             "y": claims.Claim("y", True, 0.12345, 1.0)})
    assert list(t["value"]) == ["\u2013", 0.123] and "nan" not in t.to_html().lower()
