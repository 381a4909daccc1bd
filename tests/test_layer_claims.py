"""The layer-by-layer claims (stabkit.report.layer_claims) on synthetic tidy tables whose truth is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stabkit.report import fits, layer_claims, selection, verdicts
from stabkit.report.fits import shuffle_gap
from stabkit.report.layer_claims import (claim_channel_pooling_second_half, claim_shuffle_no_effect,
                                         claim_spectra_concentrate)

from synthetic_tables import invariance_table, shuffle_layers, synthetic_layers, synthetic_spectra


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
    gaps = layer_claims.layer_shuffle_gaps(lay)
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


def _depth_layers(trained: dict[str, float], seeds=(0, 1), n_layers: int = 8, intercept: float = 0.0,
                  features: bool = False) -> pd.DataFrame:
    """Layers of nets: init R_k = 1, trained log10 R_k = intercept[net] + slope[net] * rel_depth (+ a small
    seed jitter); ``trained``: net -> slope, or net -> (intercept, slope); ``features``: a column that
    varies by layer (as in the run tables)."""
    rows = []
    for net, law in trained.items():
        b, a = law if isinstance(law, tuple) else (intercept, law)
        for s in seeds:
            for i in range(n_layers):
                rd = i / (n_layers - 1)
                r_tr = 10 ** (b + a * rd + 0.02 * (s - 0.5) * rd)
                for state, r in (("init", 1.0), ("trained", r_tr)):
                    rows.append(dict(net=net, seed=s, layer=f"l{i}", depth=i + 1, rel_depth=rd,
                                     **({"features": 64 * (i + 1)} if features else {}), state=state, shuffle=0, R_f=r, D_f=r, G_f=1.0, P=50))
    return pd.DataFrame(rows)


def test_depth_slopes_give_one_slope_per_run():
    s = layer_claims.depth_slopes(_depth_layers({"VGG11": -2.0, "AlexNet": -1.0}, features=True))
    assert len(s) == 4 and set(s["net"]) == {"VGG11", "AlexNet"}  # features (per layer) does not split a run
    np.testing.assert_allclose(s.sort_values(["net", "seed"])["slope"], [-1.01, -0.99, -2.01, -1.99])
    assert (s["n"] == 8).all()


def test_rk_falls_with_depth_holds_with_an_interval_over_architectures():
    c = layer_claims.claim_rk_falls_with_depth(_depth_layers({"VGG11": -2.0, "AlexNet": -1.5, "VGG11bn": -2.5}))
    assert c.verdict == verdicts.HOLDS and c.value == pytest.approx(-2.0)
    assert c.details["n"] == 6 and c.details["n_units"] == 3
    assert c.ci_low < -2.0 < c.ci_high <= -0.3 and c.details["init_slope"] == pytest.approx(0.0)
    assert {c.details[f"verdict:{n}"] for n in ("VGG11", "AlexNet", "VGG11bn")} == {verdicts.HOLDS}
    assert c.details["slope:AlexNet"] == pytest.approx(-1.5)
    # R_k that rises with depth in every net, while the output still fell: the claim does not hold
    up = {n: (-2.0, 0.5) for n in ("VGG11", "AlexNet", "VGG11bn")}
    assert layer_claims.claim_rk_falls_with_depth(_depth_layers(up)).verdict == verdicts.FAILS
    with pytest.raises(ValueError, match="margin"):
        layer_claims.claim_rk_falls_with_depth(_depth_layers({"VGG11": -2.0}), margin=-1)


def test_rk_falls_with_depth_cannot_be_tested_when_the_output_did_not_pool():
    c = layer_claims.claim_rk_falls_with_depth(_depth_layers({"VGG11": -0.2, "AlexNet": -0.2, "VGG11bn": -0.2}))
    assert c.verdict == verdicts.UNTESTABLE and "fell 0.20 decades" in c.details["reason"]
    assert c.details["output_fall"] == pytest.approx(-0.2)
    # no run is well trained: nothing to test
    lay = _depth_layers({"VGG11": -2.0, "AlexNet": -2.0, "VGG11bn": -2.0}).assign(run="r", well_trained=False)
    c = layer_claims.claim_rk_falls_with_depth(lay)
    assert c.verdict == verdicts.UNTESTABLE and c.details["n"] == 0 and "no run measured" in c.details["reason"]
    # too few architectures for an interval
    c = layer_claims.claim_rk_falls_with_depth(_depth_layers({"VGG11": -2.0, "AlexNet": -2.0}))
    assert c.verdict == verdicts.UNTESTABLE and c.details["n_units"] == 2 and "3 architectures" in c.details["reason"]


def test_rk_falls_with_depth_is_refuted_by_one_architecture_that_goes_the_other_way():
    # AlexNet's output fell 1 decade (its precondition holds) but its R_k rises from the first to the last layer
    lay = _depth_layers({"VGG11": -3.0, "VGG11bn": -3.0, "VGG13bn": -3.0, "AlexNet": (-1.5, 0.5)})
    c = layer_claims.claim_rk_falls_with_depth(lay)
    assert c.value < -0.3  # pooled, the fall is there
    assert c.details["verdict:AlexNet"] == verdicts.FAILS and c.details["verdict:VGG11"] == verdicts.HOLDS
    assert c.verdict == verdicts.FAILS and "not for AlexNet" in c.details["reason"] and c.details["against"] == "AlexNet"
    # the runs that are not well trained leave the claim: without AlexNet it holds
    conv = pd.DataFrame({"run": [f"{n}-{s}" for n in ("VGG11", "VGG11bn", "VGG13bn", "AlexNet") for s in (0, 1)]})
    conv["well_trained"] = ~conv["run"].str.startswith("AlexNet")
    lay["run"] = lay["net"] + "-" + lay["seed"].astype(str)
    assert layer_claims.claim_rk_falls_with_depth(selection.with_convergence(lay, conv)).verdict == verdicts.HOLDS


# --- the batch-norm control of the shuffle: claims on the recalibrated table (issue 26, item 4) ---

BN_AND_PLAIN = ("VGG11bn", "ResNet18bn", "VGG11")
BN = {"VGG11bn": True, "ResNet18bn": True, "VGG11": False}
RECALIBRATED_CLAIMS = (layer_claims.claim_shuffle_no_effect_recalibrated, layer_claims.claim_channel_pooling_recalibrated)


def _recalibrated(gaps: dict[str, float], **kw) -> pd.DataFrame:
    """A recalibrated table of two batch-norm nets and a plain VGG11 (``batchnorm`` False): second-half gaps
    per net, all in G_k."""
    return shuffle_layers(second_half_gap=gaps, nets=tuple(gaps), batchnorm={n: BN[n] for n in gaps}, **kw)


def test_shuffle_no_effect_recalibrated_holds_when_recalibration_removes_the_gap():
    # recalibrated: the batch-norm nets' late gap is 0.1 decades; the plain net's 1 decade is no control
    rec = _recalibrated({"VGG11bn": 0.1, "ResNet18bn": 0.1, "VGG11": 1.0})
    lay = shuffle_layers(0.6, nets=BN_AND_PLAIN, recalibrated=False)  # before: 0.6 decades, all in G_k
    c = layer_claims.claim_shuffle_no_effect_recalibrated(rec, layers=lay)
    assert c.verdict == verdicts.HOLDS and c.value == pytest.approx(0.1) and c.threshold == 0.3
    assert c.name == "shuffle_no_effect_recalibrated" and "re-estimated" in c.statement
    assert c.details["n"] == 4 and c.details["n_units"] == 2 and c.details["against"] == ""
    assert {k for k in c.details if k.startswith("verdict:")} == {"verdict:VGG11bn", "verdict:ResNet18bn"}
    assert c.details["verdict:VGG11bn"] == verdicts.HOLDS and c.details["decades:VGG11bn"] == pytest.approx(0.1)
    # the late-layer gap before and after recalibration, and where it sits (G_k: gap_R = gap_D - gap_G)
    d = c.details
    assert d["late_before"] == pytest.approx(0.6) and d["late_after"] == pytest.approx(0.1)
    assert d["late_removed"] == pytest.approx(1 - 0.1 / 0.6) and d["largest_before"] == pytest.approx(0.6)
    assert d["late_G_before"] == pytest.approx(-0.6) and d["late_G_after"] == pytest.approx(-0.1)
    assert d["late_D_before"] == pytest.approx(0.0, abs=1e-12) and d["late_D_after"] == pytest.approx(0.0, abs=1e-12)
    assert d["VGG11bn:late_before"] == pytest.approx(0.6) and d["ResNet18bn:late_after"] == pytest.approx(0.1)
    assert d["worst_G"] == pytest.approx(-0.1) and d["second_G"] == pytest.approx(-0.1)
    assert "VGG11:late_before" not in d  # the plain net is not part of the control, before or after
    assert d["VGG11bn:test_err_unshuffled"] == pytest.approx(0.1) and d["VGG11bn:test_err_shuffled"] == pytest.approx(0.5)
    # without the layers table: the gap after recalibration only
    c = layer_claims.claim_shuffle_no_effect_recalibrated(rec)
    assert c.verdict == verdicts.HOLDS and np.isnan(c.details["late_before"]) and np.isnan(c.details["late_removed"])
    assert c.details["late_after"] == pytest.approx(0.1)
    # the plain net counted as a control, the claim would not hold: it is left out
    assert claim_shuffle_no_effect(rec).verdict == verdicts.FAILS


def test_shuffle_no_effect_recalibrated_does_not_hold_with_a_large_gap_and_has_per_net_verdicts():
    c = layer_claims.claim_shuffle_no_effect_recalibrated(_recalibrated({"VGG11bn": 0.5, "ResNet18bn": 0.5}))
    assert c.verdict == verdicts.FAILS and c.value == pytest.approx(0.5) and c.details["n_over"] == 10  # 5 late layers x 2 nets
    c = layer_claims.claim_shuffle_no_effect_recalibrated(_recalibrated({"VGG11bn": 0.1, "ResNet18bn": 0.5}),
                                                          tolerance=0.3)
    assert c.verdict == verdicts.FAILS and c.details["worst_net"] == "ResNet18bn"
    assert c.details["verdict:VGG11bn"] == verdicts.HOLDS and c.details["verdict:ResNet18bn"] == verdicts.FAILS
    assert c.details["decades:ResNet18bn"] == pytest.approx(0.5) and c.details["against"] == "ResNet18bn"
    assert c.per_net_text() == "ResNet18bn +0.50 decades (does not hold); VGG11bn +0.10 decades (holds)"
    # a looser tolerance: the same gaps hold
    c = layer_claims.claim_shuffle_no_effect_recalibrated(_recalibrated({"VGG11bn": 0.1, "ResNet18bn": 0.5}),
                                                          tolerance=0.6)
    assert c.verdict == verdicts.HOLDS and c.details["verdict:ResNet18bn"] == verdicts.HOLDS
    # a net whose own output did not pool gets no verdict of its own, the pooled one stands
    rec = _recalibrated({"VGG11bn": 0.1, "ResNet18bn": 0.1}, falls={"VGG11bn": 2.0, "ResNet18bn": 0.2})
    c = layer_claims.claim_shuffle_no_effect_recalibrated(rec)
    assert c.verdict == verdicts.HOLDS and c.details["output_fall"] == pytest.approx(-1.1)
    assert c.details["verdict:ResNet18bn"] == verdicts.UNTESTABLE and c.details["verdict:VGG11bn"] == verdicts.HOLDS


def test_channel_pooling_recalibrated_survives_recalibration_or_not():
    lay = shuffle_layers(1.5, nets=BN_AND_PLAIN, recalibrated=False)
    # the channel-pooling gap survives (1 decade of 1.5); the plain net (no gap) is left out
    rec = _recalibrated({"VGG11bn": 1.0, "ResNet18bn": 1.0, "VGG11": 0.0})
    c = layer_claims.claim_channel_pooling_recalibrated(rec, layers=lay)
    assert c.verdict == verdicts.HOLDS and c.value == pytest.approx(1.0) and c.threshold == 0.3
    assert c.name == "channel_pooling_second_half_recalibrated" and c.name != "channel_pooling_second_half"
    assert verdicts.unit_of(c.name) == "decades"
    assert c.details["verdict:VGG11bn"] == verdicts.HOLDS and "verdict:VGG11" not in c.details
    assert c.details["late_before"] == pytest.approx(1.5) and c.details["late_removed"] == pytest.approx(1 / 3)
    assert c.details["second_G"] == pytest.approx(-1.0) and c.details["n_units"] == 2
    assert layer_claims.claim_channel_pooling_second_half(rec).details["verdict:VGG11"] == verdicts.FAILS
    # recalibration removes the gap: no channel pooling left
    c = layer_claims.claim_channel_pooling_recalibrated(_recalibrated({"VGG11bn": 0.1, "ResNet18bn": 0.1}), layers=lay)
    assert c.verdict == verdicts.FAILS and c.value == pytest.approx(0.1)
    assert c.details["late_removed"] == pytest.approx(1 - 0.1 / 1.5)
    # one net keeps its gap, the other loses it: holds pooled, not for that net
    c = layer_claims.claim_channel_pooling_recalibrated(_recalibrated({"VGG11bn": 1.0, "ResNet18bn": 0.1}))
    assert c.value == pytest.approx(0.55) and c.verdict == verdicts.FAILS
    assert c.details["verdict:ResNet18bn"] == verdicts.FAILS and c.details["verdict:VGG11bn"] == verdicts.HOLDS
    assert c.details["against"] == "ResNet18bn" and "holds pooled, not for ResNet18bn" in c.details["reason"]
    # a first-half gap as large: shuffling hurts everywhere, not channel pooling of the second half
    rec = shuffle_layers(1.0, first_half_gap=1.0)
    assert layer_claims.claim_channel_pooling_recalibrated(rec).verdict == verdicts.FAILS
    # shuffled layers measured in the second half only: no first-half gap, nothing to compare
    rec = _recalibrated({"VGG11bn": 1.0, "ResNet18bn": 1.0})
    rec = rec[~((rec["shuffle"] == 1) & (rec["rel_depth"] <= 0.5))]
    c = layer_claims.claim_channel_pooling_recalibrated(rec)
    assert c.verdict == verdicts.UNTESTABLE and "in each half" in c.details["reason"] and c.details["n"] == 4


@pytest.mark.parametrize("claim", RECALIBRATED_CLAIMS)
def test_recalibrated_claims_state_their_rule(claim):
    c = claim(_recalibrated({"VGG11bn": 1.0, "ResNet18bn": 1.0}))
    assert c.rule.startswith("batch-norm nets of the recalibrated table")
    assert "at least one batch-norm net measured trained with shuffle 0 and 1" in c.rule
    assert "output R_f fell >= 0.5 decades with training" in c.rule
    base = (claim_shuffle_no_effect if claim is RECALIBRATED_CLAIMS[0] else claim_channel_pooling_second_half)(
        _recalibrated({"VGG11bn": 1.0, "ResNet18bn": 1.0}))
    assert c.rule.endswith(base.rule.split("; then ", 1)[1]) and c.name != base.name and c.statement != base.statement
    assert claim.__name__ in layer_claims.__all__


# (table, words of the reason); each table would pass the claim but for the precondition
_UNTESTABLE = {
    "no batch-norm net": (lambda g: _recalibrated({"VGG11": g}), "no batch-norm network measured with recalibrated"),
    "empty table": (lambda g: pd.DataFrame(), "no batch-norm network measured with recalibrated statistics"),
    "only shuffle 0": (lambda g: _recalibrated({"VGG11bn": g, "ResNet18bn": g}, shuffles=(0,)),
                       "both with and without channel shuffling"),
    "output did not fall": (lambda g: _recalibrated({"VGG11bn": g, "ResNet18bn": g}, falls=0.2), "fell 0.20 decades"),
    "none well trained": (lambda g: _recalibrated({"VGG11bn": g, "ResNet18bn": g}).assign(well_trained=False),
                          "not well trained are left out"),
    "no run column, only shuffle 1": (
        lambda g: _recalibrated({"VGG11bn": g}, run_column=False).query("state == 'init' or shuffle == 1"),
        "both with and without channel shuffling"),
}


@pytest.mark.parametrize("case", list(_UNTESTABLE))
@pytest.mark.parametrize("claim, gap", [(RECALIBRATED_CLAIMS[0], 0.1), (RECALIBRATED_CLAIMS[1], 1.0)])
def test_recalibrated_claims_cannot_be_tested_without_their_precondition(claim, gap, case):
    make, words = _UNTESTABLE[case]
    assert claim(_recalibrated({"VGG11bn": gap, "ResNet18bn": gap})).verdict == verdicts.HOLDS  # the gap passes
    c = claim(make(gap))
    assert c.verdict == verdicts.UNTESTABLE and not c.holds and words in c.details["reason"]
    assert verdicts.unit_of(c.name)  # the dashboard finds the claim's unit


def test_recalibrated_claims_need_the_batchnorm_column():
    rec = _recalibrated({"VGG11bn": 0.1}).drop(columns="batchnorm")
    with pytest.raises(ValueError, match="batchnorm"):
        layer_claims.claim_shuffle_no_effect_recalibrated(rec)


def test_recalibrated_table_carries_its_own_before_rows_which_win_over_layers():
    """The measurement writes the same network measured with batch statistics (``recalibrated`` False) beside
    the recalibrated rows: the control compares a network with itself, even where a control run retrained
    its network to a different result; those rows are no "after" rows."""
    after = _recalibrated({"VGG11bn": 0.1, "ResNet18bn": 0.1}).assign(recalibrated=True)
    own = _recalibrated({"VGG11bn": 0.8, "ResNet18bn": 0.8}).assign(recalibrated=False, images=0)
    rec = pd.concat([after, own], ignore_index=True)
    other = shuffle_layers(0.6, recalibrated=False)  # the committed runs' networks: not the ones measured here
    for claim in RECALIBRATED_CLAIMS:
        d = claim(rec, layers=other).details
        assert d["late_after"] == pytest.approx(0.1) and d["late_before"] == pytest.approx(0.8)
        assert d["late_removed"] == pytest.approx(1 - 0.1 / 0.8)
        assert claim(rec).details["late_before"] == pytest.approx(0.8)  # no `layers` needed
    kept = rec.copy()
    c = layer_claims.claim_shuffle_no_effect_recalibrated(rec)
    assert c.holds and c.value == pytest.approx(0.1) and c.details["largest_before"] == pytest.approx(0.8)
    pd.testing.assert_frame_equal(rec, kept)  # the caller's table is left as it was


def test_recalibrated_claims_give_the_initialisation_reference_with_running_statistics():
    """Issue 26 item 4: at init, the output R_f with batch statistics (the paper's convention) beside the same
    network with re-estimated running statistics, per net, in the details and in one sentence."""
    after = _recalibrated({"VGG11bn": 0.1, "ResNet18bn": 0.1}).assign(recalibrated=True)
    init = after["state"] == "init"
    after.loc[init & (after["net"] == "VGG11bn"), "R_f"] = 0.2
    own = _recalibrated({"VGG11bn": 0.8, "ResNet18bn": 0.8}).assign(recalibrated=False, images=0)
    rec = pd.concat([after, own], ignore_index=True)
    for claim in RECALIBRATED_CLAIMS:
        c = claim(rec)
        assert c.details["VGG11bn:init_batch"] == pytest.approx(1.0)
        assert c.details["VGG11bn:init_running"] == pytest.approx(0.2)
        assert c.details["ResNet18bn:init_running"] == pytest.approx(1.0)
        text = layer_claims.recalibration_texts(c)["init_text"]
        assert "VGG11bn 1 / 0.2" in text and "ResNet18bn 1 / 1" in text
    assert layer_claims.recalibration_texts(RECALIBRATED_CLAIMS[0](after.iloc[0:0]))["init_text"] == ""


def test_recalibrated_gap_before_matches_the_network_not_the_run_key():
    """The control is a run of its own (sweep files derive it with ``set: {measure: [recalibrated]}``): its
    run key and ``measure`` differ from the run whose network it measures again; the "before" gap is that
    network's, matched on the training configuration."""
    rec = _recalibrated({"VGG11bn": 0.1, "ResNet18bn": 0.1}).assign(measure="['recalibrated']")
    rec["run"] = "control-" + rec["run"]
    lay = pd.concat([shuffle_layers(0.6, recalibrated=False),
                     shuffle_layers(3.0, nets=("VGG11bn",), seeds=(2,), recalibrated=False)], ignore_index=True)
    lay = lay.assign(measure="['output', 'layers', 'spectra']")
    for claim in RECALIBRATED_CLAIMS:
        d = claim(rec, layers=lay).details
        assert d["late_before"] == pytest.approx(0.6) and d["late_removed"] == pytest.approx(1 - 0.1 / 0.6)


@pytest.mark.parametrize("run_column", [True, False])
def test_recalibrated_gap_before_is_that_of_the_same_runs(run_column):
    """The gap before recalibration comes from the layers rows of the runs in the recalibrated table: not
    from a seed measured only in ``layers``, nor from a net without batch norm."""
    rec = _recalibrated({"VGG11bn": 0.1, "ResNet18bn": 0.1, "VGG11": 0.1}, run_column=run_column)
    lay = pd.concat([shuffle_layers(0.6, run_column=run_column, recalibrated=False),
                     shuffle_layers(3.0, nets=("VGG11bn",), seeds=(2,), run_column=run_column, recalibrated=False),
                     shuffle_layers(2.0, nets=("VGG11",), run_column=run_column, recalibrated=False)],
                    ignore_index=True)
    for claim in RECALIBRATED_CLAIMS:
        d = claim(rec, layers=lay).details
        assert d["late_before"] == pytest.approx(0.6) and d["VGG11bn:late_before"] == pytest.approx(0.6)
        assert "VGG11:late_before" not in d and d["late_after"] == pytest.approx(0.1)


def test_layer_gap_tables_and_shuffle_gap_table_are_what_the_claims_test():
    """Fig. 6's gap tables (one per quantity, layer by layer, a net's missing layer as a dash) and Fig. 3's
    table per half: the numbers of layer_shuffle_gaps and fits.shuffle_gap, pivoted for display."""
    lay = synthetic_layers(second_half_gap=1.0, first_half_gap=0.0)
    lay = lay[~((lay["net"] == lay["net"].iloc[0]) & (lay["layer"] == "l9"))]  # one net lacks its last layer
    tabs = layer_claims.layer_gap_tables(lay)
    assert list(tabs) == ["R_f", "D_f", "G_f"] and tabs["R_f"].index.name == "gap of R_k"
    gaps = layer_claims.layer_shuffle_gaps(lay)
    assert list(tabs["R_f"].index) == list(gaps.groupby("layer")["rel_depth"].mean().sort_values().index)
    assert tabs["R_f"].loc["l9", lay["net"].iloc[0]] == "\u2013" and tabs["R_f"].loc["l0"].tolist() == [0.0, 0.0]
    assert layer_claims.layer_gap_tables(lay[lay["shuffle"] == 0])["G_f"].empty  # nothing shuffled: empty tables
    halves = layer_claims.shuffle_gap_table(lay)
    assert list(halves.columns) == ["first", "second"] and sorted(halves.index) == sorted(lay["net"].unique())
    np.testing.assert_allclose(halves["first"], 0.0, atol=1e-12)
    np.testing.assert_allclose(halves["second"], 1.0)


def test_output_node_story_is_the_ratio_story_of_the_last_node():
    from stabkit.report import stability_claims

    lay = synthetic_layers(second_half_gap=1.0).assign(D=1.0, G=1.0, deno=1.0)
    story = layer_claims.output_node_story(lay)
    assert story == stability_claims.ratio_story(lay[lay["rel_depth"] == 1])
    assert story["R_f"].startswith("R_f fell")


def test_layer_nv_vs_rk_matches_trained_unshuffled_layers_by_run_and_layer():
    inv = invariance_table()
    layers = inv[["run", "layer"]].drop_duplicates().assign(state="trained", shuffle=0, R_f=10.0, D_f=1.0, G_f=0.1)
    layers = pd.concat([layers, layers.assign(shuffle=1, R_f=100.0)], ignore_index=True)
    both = layer_claims.layer_nv_vs_rk(inv, layers)
    assert len(both) == len(inv[~inv.stratified]) and not both["stratified"].any()
    assert (both["log10_R"] == 1.0).all() and set(both["training"]) == {"rotated", "unrotated"}


def test_recalibration_texts_and_table_read_right_whatever_the_data():
    """The page's words for a recalibrated claim: measured runs, the late gap before / after and how much
    recalibration removes, its D_k / G_k parts, a per-net table; never "nan" when nothing was measured."""
    rec = _recalibrated({"VGG11bn": 0.1, "ResNet18bn": 0.1, "VGG11": 1.0})
    lay = shuffle_layers(0.6, nets=BN_AND_PLAIN, recalibrated=False)
    c = layer_claims.claim_shuffle_no_effect_recalibrated(rec, layers=lay)
    t = layer_claims.recalibration_texts(c)
    assert t["measured_text"] == "4 runs of 2 batch-norm networks (ResNet18bn, VGG11bn)"
    assert t["value_text"] == "0.10 decades"
    assert "R_k rose 4x" in t["gap_text"] and "R_k rose 1.3x" in t["gap_text"]
    assert t["gap_text"].endswith("Recalibration removes 83 % of the gap (in decades).")
    assert t["parts_text"].endswith("D_k +0.00 / +0.00, G_k -0.60 / -0.10.")  # never "-0.00"
    md = layer_claims.recalibration_table(c)
    assert md.splitlines()[0].startswith("| network | $R_k$ gap before | $R_k$ gap after | $D_k$ gap before")
    assert "| VGG11bn | +0.60 | +0.10 | +0.00 | +0.00 | -0.60 | -0.10 | 10.0 | 50.0 | holds |" in md
    assert "VGG11 |" not in md and md._repr_markdown_() == md  # the plain net is no control
    for claim in RECALIBRATED_CLAIMS:
        empty = claim(pd.DataFrame(), layers=lay)
        t = layer_claims.recalibration_texts(empty)
        assert t == {"measured_text": "none that the claim can use", "value_text": "not measured",
                     "gap_text": "No late-layer shuffling gap was measured with re-estimated batch-norm statistics.",
                     "parts_text": "", "init_text": ""}
        assert "nan" not in layer_claims.recalibration_table(empty).lower()
        assert "No batch-norm network" in layer_claims.recalibration_table(empty)
    # without the layers table: the gap after recalibration, and why the fraction removed is not known
    t = layer_claims.recalibration_texts(layer_claims.claim_channel_pooling_recalibrated(rec))
    assert "R_k: not measured" in t["gap_text"] and "not in the layers table" in t["gap_text"]


@pytest.mark.parametrize("before, after, words", [
    (0.6, 0.1, "removes 83 % of the gap"), (0.6, 0.0, "removes all of the gap."),
    (0.6, -0.3, "removes all of the gap and reverses its sign."), (-0.6, -0.3, "removes 50 % of the gap"),
    (0.6, 0.9, "does not reduce the gap: it grows by 50 %"), (0.01, 0.2, "hardly a gap to remove"),
    (float("nan"), 0.1, "not in the layers table"), (0.6, float("nan"), "nothing was measured"),
])
def test_removed_text(before, after, words):
    assert words in layer_claims.removed_text(before, after)
