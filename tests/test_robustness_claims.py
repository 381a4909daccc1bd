"""The probe pages' claims on accuracy and invariance (stabkit.report.robustness_claims) on synthetic tables."""
from __future__ import annotations

import pandas as pd
import pytest

from stabkit.report import robustness_claims, verdicts

from synthetic_tables import curves_table, invariance_table


def test_masking_claims():
    c = robustness_claims.claim_mask_falls(curves_table())
    assert c.verdict == verdicts.HOLDS and c.details["fmax"] == 0.9
    assert c.details["clean_acc"] == pytest.approx(70.0) and c.details["acc_fmax"] == pytest.approx(7.0)
    assert robustness_claims.claim_saliency_first(curves_table()).holds
    worse = robustness_claims.claim_saliency_first(curves_table(salient_gap=+3.0))
    assert worse.verdict == verdicts.FAILS and worse.value == pytest.approx(3.0)
    assert robustness_claims.claim_mask_falls(curves_table().iloc[:0]).verdict == verdicts.UNTESTABLE


def test_patch_shuffle_claims():
    cur = curves_table()
    falls = robustness_claims.claim_patch_shuffle_falls(cur)
    assert falls.holds and falls.details["kmax"] == 8 and falls.details["acc_kmax"] == pytest.approx(20.0)
    k2 = robustness_claims.claim_patch_shuffle_k2(cur)
    assert k2.holds and k2.value == pytest.approx(76.0)
    assert not robustness_claims.claim_patch_shuffle_k2(curves_table(k2_kept=0.95)).holds
    assert robustness_claims.claim_patch_shuffle_chance(cur).holds
    assert robustness_claims.claim_patch_shuffle_chance(curves_table(kmax_acc=40.0)).verdict == verdicts.FAILS
    only_small = cur[cur["magnitude"] <= 2]
    assert robustness_claims.claim_patch_shuffle_chance(only_small).verdict == verdicts.UNTESTABLE
    rc = cur[cur["mode"] == "full"].assign(mode="rows_cols", mean=lambda d: d["mean"] + 2.0)
    assert robustness_claims.mode_difference(pd.concat([cur, rc]), "rows_cols", "full") == pytest.approx(2.0)


def test_transfer_claims():
    grid = pd.DataFrame([dict(resampling="bilinear", source=16, target=t, acc_source_mean=60.0,
                              acc_ootb_mean=60.0 - d, delta_mean=-d) for t, d in ((16, 0.0), (32, 20.0))])
    loses = robustness_claims.claim_transfer_loses(grid)
    assert loses.holds and loses.value == pytest.approx(-20.0)
    assert loses.details["rel_loss"] == pytest.approx(40.0)
    assert robustness_claims.claim_transfer_loss_size(grid).holds
    small = grid.assign(delta_mean=lambda d: -0.1 * d["delta_mean"].abs(), acc_ootb_mean=58.0)
    assert not robustness_claims.claim_transfer_loss_size(small).holds
    assert robustness_claims.claim_transfer_loses(grid[grid.target == 16]).verdict == verdicts.UNTESTABLE


def test_rotation_nv_claims():
    inv = invariance_table()
    lower = robustness_claims.claim_rotation_lowers_nv(inv)
    assert lower.holds and lower.details["n_nets"] == 2 and lower.details["n_lower"] == 2
    assert lower.details["nv_unrot"] == pytest.approx(0.815)
    assert not robustness_claims.claim_rotation_lowers_nv(invariance_table(rotated_nv=0.9)).holds
    ref = {"nv_unrotated": {"a": 0.7, "b": 0.9}, "nv_rotated": {"a": 0.4, "b": 0.6}}
    assert robustness_claims.claim_nv_in_reference_range(inv, ref).holds
    assert robustness_claims.claim_stratified_raises_nv(inv).value == pytest.approx(0.1)
    assert robustness_claims.claim_stratified_raises_nv(inv[~inv.stratified]).verdict == verdicts.UNTESTABLE
    one = robustness_claims.claim_rotation_lowers_nv(inv[inv.training == "unrotated"])
    assert one.verdict == verdicts.UNTESTABLE


def test_rotation_flattens_accuracy():
    rows = []
    for tr, keep in (("unrotated", 0.5), ("rotated", 0.9)):
        for angle in (0.0, 90.0, 180.0):
            rows.append(dict(net="LeNet", training=tr, probe="rotate", label=-1, magnitude=angle,
                             accuracy=0.6 if angle == 0 else 0.6 * keep))
    c = robustness_claims.claim_rotation_flattens_accuracy(pd.DataFrame(rows))
    assert c.holds and c.details["kept_rot"] == pytest.approx(90.0) and c.details["acc0_unrot"] == pytest.approx(60.0)


def test_masking_set_up_and_pixelation_curves():
    """The masking probes' tile size and fractions (the example images); the pixelation curves per training
    size (net_options.source_size, 16 px when unset) and resampling."""
    acc = pd.DataFrame({"probe": ["mask", "mask", "rotate"], "magnitude": [0.5, 0.25, 90.0],
                        "options": ['{"patch": 4}', '{"patch": 4}', "{}"]})
    assert robustness_claims.masking_probes(acc) == (4, [0.25, 0.5])
    with pytest.raises(ValueError, match="mask_mean"):
        robustness_claims.masking_probes(acc, "mask_mean")
    rows = [{"probe": probe, "label": -1, "magnitude": m, "accuracy": a, "seed": seed, "net": "LowRes-ResNet18",
             "net_options": opts}
            for probe in ("pixelate", "rotate") for seed in (0, 1) for m, a in ((1.0, 0.8), (2.0, 0.6))
            for opts in ('{"source_size": 32}', '{"interpolation": "nearest"}')]
    curves = robustness_claims.pixelate_curves(pd.DataFrame(rows))
    assert set(zip(curves["resampling"], curves["source"])) == {("bilinear", 32), ("nearest", 16)}
    assert list(curves.columns[:4]) == ["resampling", "source", "variant", "magnitude"]
    assert list(curves[curves.magnitude == 2.0]["mean"]) == pytest.approx([60.0, 60.0]) and (curves["n"] == 2).all()
