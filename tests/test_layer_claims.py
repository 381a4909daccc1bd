"""The layer-by-layer claims (stabkit.report.layer_claims) on synthetic tidy tables whose truth is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stabkit.report import fits, layer_claims, selection, verdicts
from stabkit.report.fits import shuffle_gap
from stabkit.report.layer_claims import (claim_channel_pooling_second_half, claim_shuffle_no_effect,
                                         claim_spectra_concentrate)

from synthetic_tables import invariance_table, synthetic_layers, synthetic_spectra


def test_channel_pooling_claim():
    c = claim_channel_pooling_second_half(synthetic_layers(1.0, 0.0))
    assert c.holds and c.value == pytest.approx(1.0)
    assert c.details["VGG11:second"] == pytest.approx(1.0)
    assert not claim_channel_pooling_second_half(synthetic_layers(1.0, 1.0)).holds  # shuffling hurts everywhere
    assert not claim_channel_pooling_second_half(synthetic_layers(0.05, 0.0)).holds  # too small


def test_shuffle_no_effect_claim():
    assert claim_shuffle_no_effect(synthetic_layers(0.05, -0.05)).holds
    c = claim_shuffle_no_effect(synthetic_layers(1.0, 0.0))
    assert not c.holds and c.value == pytest.approx(1.0)


def test_spectra_claim():
    c = claim_spectra_concentrate(synthetic_spectra(0.6))
    assert c.holds and c.value == pytest.approx(0.6 * 9)
    assert not claim_spectra_concentrate(synthetic_spectra(1 / 9)).holds
    sp = synthetic_spectra(0.6)
    sp.loc[(sp["state"] == "init") & (sp["eigenvalue"] == 0), "energy"] *= 5  # init not flat
    assert not claim_spectra_concentrate(sp).details["flat_ok"]


def test_spectra_claim_has_a_convergence_precondition_and_an_interval_over_architectures():
    c = claim_spectra_concentrate(synthetic_spectra({"VGG11": 0.6, "LeNet": 0.4, "AlexNet": 0.5}))
    assert c.holds and c.details["n"] == 6 and c.details["n_units"] == 3
    assert c.value == pytest.approx((0.6 * 0.4 * 0.5) ** (1 / 3) * 9)  # geometric mean of the runs' ratios
    assert 1.5 < c.ci_low < c.value < c.ci_high and "well trained" in c.rule
    # no convergence columns: whether the nets trained is unknown, so the claim cannot be tested
    c = claim_spectra_concentrate(synthetic_spectra(0.6, well_trained=None))
    assert c.verdict == verdicts.UNTESTABLE and "convergence" in c.details["reason"]
    # the runs that are not well trained are left out: 2 architectures remain, too few for an interval
    sp = synthetic_spectra(0.6)
    sp.loc[sp["net"] == "LeNet", "well_trained"] = False
    c = claim_spectra_concentrate(sp)
    assert c.verdict == verdicts.UNTESTABLE and c.details["n_not_well_trained"] == 2 and c.details["n_units"] == 2
    # architectures that disagree: the interval spans the threshold
    c = claim_spectra_concentrate(synthetic_spectra({"VGG11": 0.9, "LeNet": 1 / 9, "AlexNet": 0.12}))
    assert c.verdict == verdicts.UNTESTABLE and c.ci_low < 1.5 < c.ci_high
    assert c.details["reason"].endswith("spans the threshold 1.5")
    c = claim_spectra_concentrate(synthetic_spectra({"VGG11": 0.12, "LeNet": 1 / 9, "AlexNet": 0.13}))
    assert c.verdict == verdicts.FAILS and c.ci_high < 1.5


def test_spatial_pooling_first_half():
    lay = synthetic_layers(second_half_gap=1.0, first_half_gap=0.0)
    mid = fits.mid_depth_change(lay, shuffle=1)
    # deepest layer with rel_depth <= 0.5 is i = 4 (rel 4/9): R = 10**(-8/9) trained and shuffled, 1 at init
    np.testing.assert_allclose(mid["decades"], -8 / 9)
    assert (mid["n"] == 2).all()
    c = layer_claims.claim_spatial_pooling_first_half(lay)
    assert c.holds and c.value == pytest.approx(-8 / 9)
    flat = lay.copy()
    flat.loc[flat["state"] == "trained", "R_f"] = 1.0  # training changed nothing
    assert not layer_claims.claim_spatial_pooling_first_half(flat).holds


def test_nv_tracks_rk():
    inv = invariance_table()
    inv = inv[~inv.stratified]
    layers = inv[["run", "layer"]].drop_duplicates().assign(
        state="trained", shuffle=0, R_f=lambda d: 10.0 ** d["layer"].map({"a": 0, "b": 1, "c": 2, "d": 3}),
        D_f=1.0, G_f=1.0)
    c = layer_claims.claim_nv_tracks_rk(inv, layers)
    assert c.holds and c.value == pytest.approx(1.0) and c.details["n_corr"] == 8
    anti = layers.assign(R_f=lambda d: 1.0 / d["R_f"])
    assert layer_claims.claim_nv_tracks_rk(inv, anti).verdict == verdicts.FAILS


def test_shuffle_no_effect_is_tested_layer_by_layer():
    """12.11: one layer changed by a decade among many unchanged ones passed the old half-averaged test."""
    lay = synthetic_layers(second_half_gap=0.0, first_half_gap=0.0)
    one = (lay["layer"] == "l7") & (lay["shuffle"] == 1)
    lay.loc[one, "R_f"] *= 10
    lay.loc[one, "D_f"] *= 10  # the change is in D_k, not in G_k
    assert shuffle_gap(lay, "R_f", by=()).abs_gap.max() < 0.3  # what the old claim looked at
    c = claim_shuffle_no_effect(lay, tolerance=0.3)
    assert c.verdict == verdicts.FAILS and c.value == pytest.approx(1.0)
    assert c.details["worst_layer"] == "l7" and c.details["worst_D"] == pytest.approx(1.0)
    assert c.details["worst_G"] == pytest.approx(0.0) and c.details["n_over"] == 2  # both nets
    gaps = fits.layer_shuffle_gaps(lay)
    np.testing.assert_allclose(gaps.gap_R_f, gaps.gap_D_f - gaps.gap_G_f)
    assert claim_shuffle_no_effect(synthetic_layers(0.0, 0.0)).verdict == verdicts.HOLDS


def test_pooling_claims_need_the_output_to_pool():
    """Fig. 3 / Fig. 6: nets whose output R_f fell less than 0.5 decades cannot show where they pool."""
    lay = synthetic_layers(second_half_gap=1.0)
    assert layer_claims.claim_channel_pooling_second_half(lay).verdict == verdicts.HOLDS
    flat = lay.copy()
    tr = flat["state"] == "trained"
    flat.loc[tr, "R_f"] = flat.loc[tr, "R_f"] ** 0.1  # the output falls 0.2 decades
    for fn in (layer_claims.claim_channel_pooling_second_half, layer_claims.claim_spatial_pooling_first_half,
               layer_claims.claim_shuffle_no_effect):
        c = fn(flat)
        assert c.verdict == verdicts.UNTESTABLE and "fell 0.20 decades" in c.details["reason"]


def test_channel_pooling_reports_d_and_g_parts_per_half():
    lay = synthetic_layers(second_half_gap=1.0)  # the gap is all in D_k (G_f = 1)
    lay["D_f"] = lay["R_f"]
    c = layer_claims.claim_channel_pooling_second_half(lay)
    assert c.details["second_D"] == pytest.approx(1.0) and c.details["second_G"] == pytest.approx(0.0)
    assert c.details["verdict:VGG11"] == verdicts.HOLDS


def test_pooling_claims_leave_out_runs_that_are_not_well_trained():
    lay = synthetic_layers(second_half_gap=1.0)
    lay["run"] = lay["net"] + "-" + lay["seed"].astype(str)
    broken = lay["run"] == "AlexNet-1"
    lay.loc[broken & (lay["shuffle"] == 1), "R_f"] = lay.loc[broken & (lay["shuffle"] == 1), "R_f"] * 1e-3
    assert layer_claims.claim_channel_pooling_second_half(lay).verdict != verdicts.HOLDS  # the broken run counts
    conv = pd.DataFrame({"run": lay["run"].unique()})
    conv["well_trained"] = conv["run"] != "AlexNet-1"
    assert layer_claims.claim_channel_pooling_second_half(selection.with_convergence(lay, conv)).verdict == verdicts.HOLDS
