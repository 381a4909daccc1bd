"""Fits, exponents and ratios (stabkit.report.fits) on synthetic tidy tables whose truth is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stabkit.report import fits
from stabkit.report.fits import (depth_exponents, error_fit, loglog_fit, ratio_stats, shuffle_gap, sqrt_law_prefactor,
                                 trained_over_init, zero_mode_fraction)

from synthetic_tables import synthetic_layers, synthetic_output, synthetic_spectra


def test_loglog_fit_recovers_power_law():
    x = np.geomspace(1e-4, 1, 20)
    fit = loglog_fit(x, 0.2 * x ** 0.5)
    assert fit.slope == pytest.approx(0.5)
    assert fit.prefactor == pytest.approx(0.2)
    assert fit.r == pytest.approx(1.0)
    assert fit.n == 20
    np.testing.assert_allclose(fit.predict([1e-2]), [0.02])


def test_loglog_fit_drops_nonpositive_and_rejects_too_few():
    fit = loglog_fit([1, 10, 100, 0, -1, np.nan], [1, 10, 100, 5, 5, 5])
    assert fit.n == 3 and fit.slope == pytest.approx(1.0)
    with pytest.raises(ValueError, match="x, y"):
        loglog_fit([1, 2], [1, 2])
    with pytest.raises(ValueError, match="same length"):
        loglog_fit([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="distinct x"):
        loglog_fit([1, 1, 1], [1, 2, 3])


def test_negative_correlation_has_negative_r():
    x = np.geomspace(1, 100, 10)
    assert loglog_fit(x, 1 / x).r == pytest.approx(-1.0)


def test_sqrt_law_prefactor():
    r = np.geomspace(1e-3, 1e-1, 7)
    assert sqrt_law_prefactor(r, 0.2 * np.sqrt(r)) == pytest.approx(0.2)
    assert np.isnan(sqrt_law_prefactor([0.0], [0.1]))


def test_ratio_stats():
    st = ratio_stats([0.01, 0.1, 1.0, -1, np.nan])
    assert st["n"] == 3
    assert st["geomean"] == pytest.approx(0.1)
    assert st["decades"] == pytest.approx(-1.0)
    assert st["min"] == pytest.approx(0.01) and st["max"] == pytest.approx(1.0)
    assert ratio_stats([])["n"] == 0


@pytest.mark.parametrize("run_column", [False, True])
def test_trained_over_init_matches_runs(run_column):
    out = synthetic_output(run_column=run_column)
    ratios = trained_over_init(out, "G_f")
    assert len(ratios) == 18  # 3 nets x 2 seeds x 3 noise levels
    np.testing.assert_allclose(ratios["ratio"], 10.0)
    np.testing.assert_allclose(ratios["decades"], 1.0)


def test_trained_over_init_ignores_other_shuffles():
    out = synthetic_output()
    extra = out[out["state"] == "trained"].assign(shuffle=1, G_f=1e6)
    ratios = trained_over_init(pd.concat([out, extra]), "G_f")
    np.testing.assert_allclose(ratios["ratio"], 10.0)


def test_error_fit_on_sqrt_law():
    fit = error_fit(synthetic_output(), "R_f")
    assert fit.slope == pytest.approx(0.5, abs=0.05)
    assert fit.r > 0.95
    assert fit.n == 18


def test_shuffle_gap_by_half():
    gaps = shuffle_gap(synthetic_layers(second_half_gap=1.0, first_half_gap=0.0))
    first = gaps[gaps["half"] == "first"]
    second = gaps[gaps["half"] == "second"]
    assert set(gaps["net"]) == {"VGG11", "AlexNet"}
    np.testing.assert_allclose(first["gap"], 0.0, atol=1e-12)
    np.testing.assert_allclose(second["gap"], 1.0)
    assert (first["n"] == 2 * 5).all()  # 2 seeds x 5 layers with rel_depth <= 0.5


def test_shuffle_gap_without_shuffled_rows_is_empty():
    lay = synthetic_layers()
    assert shuffle_gap(lay[lay["shuffle"] == 0]).empty


def test_depth_exponents_power_and_exp():
    rows = []
    for k in range(1, 9):
        rows.append(dict(net="A", seed=0, layer=f"l{k}", depth=k, rel_depth=k / 8, state="trained",
                         shuffle=0, R_f=k ** -1.5, D_f=2.0 ** -k))
    lay = pd.DataFrame(rows)
    p = depth_exponents(lay, "R_f", law="power")
    assert p.loc[0, "slope"] == pytest.approx(-1.5) and p.loc[0, "r"] == pytest.approx(-1.0)
    e = depth_exponents(lay, "D_f", law="exp")
    assert e.loc[0, "base"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="law"):
        depth_exponents(lay, law="linear")


def test_zero_mode_fraction_and_flat_value():
    z = zero_mode_fraction(synthetic_spectra(0.6))
    init = z[z["state"] == "init"]
    np.testing.assert_allclose(init["fraction"], 1 / 9)
    np.testing.assert_allclose(init["flat"], 1 / 9)
    early = z[(z["state"] == "trained") & (z["rel_depth"] <= 0.5)]
    np.testing.assert_allclose(early["fraction"], 0.6)


def test_zero_mode_fraction_uses_energy_not_fraction_column():
    sp = synthetic_spectra(0.6).drop(columns="fraction")
    z = zero_mode_fraction(sp)
    assert z["fraction"].max() == pytest.approx(0.6)


@pytest.mark.parametrize("run_column", [False, True])
def test_mid_depth_change_does_not_split_a_run_by_a_per_layer_column(run_column):
    """The run tables carry ``features`` (values per probe, one per layer): without a ``run`` column it must
    not be part of a run's key, or every layer counts as a run of its own (the mean over all layers up to
    mid-depth instead of the deepest one)."""
    lay = synthetic_layers(second_half_gap=1.0, first_half_gap=0.0)
    lay["features"] = 64 * (lay["layer"].str[1:].astype(int) + 1)  # varies from layer to layer
    if run_column:
        lay["run"] = lay["net"] + "-" + lay["seed"].astype(str)
    mid = fits.mid_depth_change(lay, shuffle=1)
    # deepest layer with rel_depth <= 0.5: i = 4 (rel 4/9), R = 10**(-8/9) trained, 1 at init; 2 runs per net
    np.testing.assert_allclose(mid["decades"], -8 / 9)
    assert (mid["n"] == 2).all() and np.allclose(mid["rel_depth"], 4 / 9)
    # the output (split 1: the deepest layer, rel_depth 1): R fell 2 decades, over 4 runs
    out = fits.mid_depth_change(lay, split=1.0, by=())
    assert out["decades"].iloc[0] == pytest.approx(-2.0) and out["n"].iloc[0] == 4
