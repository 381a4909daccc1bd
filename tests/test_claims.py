"""Table analysis, claim checks and page prose (stabkit.report) on synthetic tidy tables whose truth is
known (fast, CPU, no networks)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stabkit.report import analysis, claims, prose
from stabkit.report.analysis import (depth_exponents, error_fit, loglog_fit, ratio_stats, shuffle_gap,
                                     sqrt_law_prefactor, trained_over_init, zero_mode_fraction)
from stabkit.report.claims import (Claim, claim_channel_pooling_second_half, claim_error_correlation,
                                   claim_gf_grows, claim_rf_falls, claim_rf_init_order_one,
                                   claim_shuffle_no_effect, claim_spectra_concentrate, verdict)
from stabkit.report.prose import run_facts

EIGEN_3 = {0.0: 1, 1.0: 2, 2.0: 1, 3.0: 2, 4.0: 2, 6.0: 1}  # 3x3 grid Laplacian


def synthetic_output(seed: int = 0, run_column: bool = False, falls: float = 2.0) -> pd.DataFrame:
    """Output table: trained R_f = 10**-falls * spread, eps_t = 0.2 sqrt(R_f) * small noise; init R_f ~ 1;
    G_f grows 10x with training."""
    rng = np.random.default_rng(seed)
    rows = []
    for net_i, net in enumerate(["VGG11", "LeNet", "ResNet18"]):
        for s in (0, 1):
            for noise in (0.0, 1.0, 10.0):
                r_tr = 10 ** (-falls + 0.5 * net_i + 0.1 * np.log10(1 + noise) + rng.normal(0, 0.05))
                err = 0.2 * np.sqrt(r_tr) * 10 ** rng.normal(0, 0.02)
                g_init = 0.1 * 10 ** rng.normal(0, 0.1)
                cfg = dict(net=net, seed=s, noise_std=noise, dataset="cifar10", device="cpu")
                if run_column:
                    cfg["run"] = f"{net}-{s}-{noise}"
                r_init = 10 ** rng.normal(0, 0.1)
                for state, r, g in (("init", r_init, g_init), ("trained", r_tr, 10 * g_init)):
                    rows.append(dict(cfg, state=state, shuffle=0, R_f=r, G_f=g, D_f=r * g,
                                     D=r * g, G=g, deno=1.0, P=100,
                                     test_err=err if state == "trained" else 0.9))
    return pd.DataFrame(rows)


def synthetic_layers(second_half_gap: float = 1.0, first_half_gap: float = 0.0,
                     n_layers: int = 10) -> pd.DataFrame:
    rows = []
    for net in ("VGG11", "AlexNet"):
        for s in (0, 1):
            for i in range(n_layers):
                rd = i / (n_layers - 1)
                r_tr = 10 ** (-2 * rd)
                gap = first_half_gap if rd <= 0.5 else second_half_gap
                for state, shuffle, r in (("init", 0, 1.0), ("trained", 0, r_tr),
                                          ("trained", 1, r_tr * 10 ** gap)):
                    rows.append(dict(net=net, seed=s, layer=f"l{i}", depth=i + 1, rel_depth=rd,
                                     state=state, shuffle=shuffle, R_f=r, D_f=r, G_f=1.0, P=50))
    return pd.DataFrame(rows)


def synthetic_spectra(trained_zero: float | dict[str, float] = 0.6, nets=("VGG11", "LeNet", "AlexNet"),
                      well_trained: bool | None = True) -> pd.DataFrame:
    """Spectra of 2 seeds per net (``trained_zero``: the trained early layers' fraction at lambda = 0, one
    for all or per net); ``well_trained``: the convergence column joined (None: left out)."""
    rows = []
    for net in nets:
        tz = trained_zero[net] if isinstance(trained_zero, dict) else trained_zero
        for s in (0, 1):
            for i in range(4):
                rd = i / 3
                for state in ("init", "trained"):
                    for lam, mult in EIGEN_3.items():
                        if state == "init":
                            frac = mult / 9
                        elif rd <= 0.5:
                            frac = tz if lam == 0 else (1 - tz) * mult / 8
                        else:
                            frac = mult / 9
                        rows.append(dict(net=net, seed=s, layer=f"features.{3 * i}", depth=i,
                                         rel_depth=rd, kernel_size=3, eigenvalue=lam,
                                         energy=2.0 * frac, fraction=frac, state=state))
    df = pd.DataFrame(rows)
    return df if well_trained is None else df.assign(well_trained=well_trained)


# ------------------------------------------------------------------------------------------------ fits
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


# ------------------------------------------------------------------------------------------- output
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


def test_output_claims_hold_on_paper_like_data():
    out = paper_output(seeds=(0, 1), rf_falls=2.5)  # 7 CNN architectures (intervals need several)
    c = claim_rf_falls(out)
    assert isinstance(c, Claim) and c.holds and c.verdict == "holds"
    assert c.value < -1.0
    assert claim_rf_init_order_one(out).holds
    corr = claim_error_correlation(out)
    assert corr.holds and corr.details["b"] == pytest.approx(0.5, abs=0.05)
    assert corr.details["a"] == pytest.approx(0.2, rel=0.15)
    assert corr.details["slope"] == pytest.approx(0.5, abs=0.05)
    g = claim_gf_grows(out)
    assert g.holds and g.value == pytest.approx(10.0)


def test_output_claims_fail_when_they_should():
    out = paper_output(seeds=(0, 1), rf_falls=0.2, err_of=lambda net, nz: 0.05)  # R_f barely falls
    c = claim_rf_falls(out)
    assert not c.holds and c.verdict == "does not hold"
    shrunk = out.copy()
    shrunk.loc[shrunk["state"] == "trained", "G_f"] /= 100  # G_f falls 10x
    assert not claim_gf_grows(shrunk).holds
    big = out.copy()
    big.loc[big["state"] == "init", "R_f"] = 50.0
    assert not claim_rf_init_order_one(big).holds
    rng = np.random.default_rng(1)
    scrambled = out.copy()
    tr = scrambled["state"] == "trained"
    scrambled.loc[tr, "test_err"] = rng.permutation(scrambled.loc[tr, "test_err"].to_numpy())[::-1]
    scrambled.loc[tr, "test_err"] = 0.5 / scrambled.loc[tr, "R_f"] ** 0.3  # anti-correlated
    assert not claim_error_correlation(scrambled).holds


def test_verdict_strings():
    assert verdict(True) == "holds" and verdict(False) == "does not hold"
    assert verdict(np.bool_(True)) == "holds"


# ------------------------------------------------------------------------------------------- layers
def test_shuffle_gap_by_half():
    gaps = shuffle_gap(synthetic_layers(second_half_gap=1.0, first_half_gap=0.0))
    first = gaps[gaps["half"] == "first"]
    second = gaps[gaps["half"] == "second"]
    assert set(gaps["net"]) == {"VGG11", "AlexNet"}
    np.testing.assert_allclose(first["gap"], 0.0, atol=1e-12)
    np.testing.assert_allclose(second["gap"], 1.0)
    assert (first["n"] == 2 * 5).all()  # 2 seeds x 5 layers with rel_depth <= 0.5


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


# ------------------------------------------------------------------------------------------ spectra
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
    assert c.verdict == claims.UNTESTABLE and "convergence" in c.details["reason"]
    # the runs that are not well trained are left out: 2 architectures remain, too few for an interval
    sp = synthetic_spectra(0.6)
    sp.loc[sp["net"] == "LeNet", "well_trained"] = False
    c = claim_spectra_concentrate(sp)
    assert c.verdict == claims.UNTESTABLE and c.details["n_not_well_trained"] == 2 and c.details["n_units"] == 2
    # architectures that disagree: the interval spans the threshold
    c = claim_spectra_concentrate(synthetic_spectra({"VGG11": 0.9, "LeNet": 1 / 9, "AlexNet": 0.12}))
    assert c.verdict == claims.UNTESTABLE and c.ci_low < 1.5 < c.ci_high
    assert c.details["reason"].endswith("spans the threshold 1.5")
    c = claim_spectra_concentrate(synthetic_spectra({"VGG11": 0.12, "LeNet": 1 / 9, "AlexNet": 0.13}))
    assert c.verdict == claims.FAILS and c.ci_high < 1.5


# ------------------------------------------------------------------------------------------- errors
def test_bad_input_names_argument():
    with pytest.raises(ValueError, match="output"):
        trained_over_init(pd.DataFrame({"x": [1]}), "R_f")
    with pytest.raises(ValueError, match="layers"):
        shuffle_gap(pd.DataFrame({"R_f": [1.0]}))
    with pytest.raises(ValueError, match="spectra"):
        zero_mode_fraction(pd.DataFrame({"layer": ["a"]}))
    with pytest.raises(ValueError, match="table"):
        run_facts([1, 2])


def test_run_facts():
    facts = run_facts(synthetic_output(), columns=("seed", "device", "dataset", "net", "missing"))
    assert facts["seed"] == "0, 1"
    assert facts["device"] == "cpu"
    assert facts["net"] == "LeNet, ResNet18, VGG11"
    assert "missing" not in facts
    assert facts["n_runs"] == 18
    assert run_facts(pd.DataFrame({"seed": [0, 1, 2, 3]}))["seed"] == "0-3"


@pytest.mark.parametrize("module", [analysis, claims, prose])
def test_module_exports_exist(module):
    for name in module.__all__:
        assert hasattr(module, name), name


def test_differences_lists_only_changed_columns():
    paper = pd.DataFrame({"net": ["VGG11", "LeNet", "AlexNet"] * 4, "seed": [0, 1, 2, 3] * 3,
                          "epochs": 250, "P": 500})
    here = pd.DataFrame({"net": ["VGG11", "LeNet"], "seed": [0, 0], "epochs": 3, "P": 500})
    text = prose.differences(here, paper, labels={"epochs": "epochs"})
    assert "epochs: 250 in the paper, 3 here" in text
    assert "seed: 0-3 in the paper, 0 here" in text
    assert "net: AlexNet, LeNet, VGG11 in the paper, LeNet, VGG11 here" in text
    assert "P" not in text
    assert prose.differences(paper, paper) == "nothing"
    with pytest.raises(ValueError, match="here"):
        prose.differences(None, paper)


def test_differences_labels_missing_ptr():
    paper = pd.DataFrame({"ptr": [None, None]})
    here = pd.DataFrame({"ptr": [5000]})
    assert prose.differences(here, paper) == "ptr: full training set in the paper, 5000 here"


def test_page_facts_from_summary_and_sweep_mapping():
    summary = pd.DataFrame({
        "run": ["a", "b", "c"], "net": ["LeNet", "VGG11", "VGG11"], "seed": [0, 0, 1], "epochs": 2,
        "P": 50, "status": ["done", "done", "failed"], "device": ["cpu", "cpu", None],
        "device_name": ["x86_64", "x86_64", None], "task": "twopoints",
        "task_options": '{"d": 28, "xi": 14.0}'})
    spec = {"name": "t", "base": {"task": "twopoints", "epochs": 300, "P": 500},
            "grid": {"net": ["LeNet", "VGG11"], "seed": [0, 1]},
            "scales": {"tiny": {"base": {"epochs": 2}}, "paper": {}}}
    f = prose.page_facts(summary, spec, "tiny")
    assert f["seeds"] == "0" and f["nets"] == "LeNet, VGG11"
    assert f["n_runs"] == 2 and f["n_failed"] == 1
    assert f["device"] == "cpu (x86_64)"
    assert "d = 28" in f["data"] and "scale detection" in f["data"]
    assert "epochs: 300 in the paper, 2 here" in f["differences"]
    assert "P: 500 in the paper, 50 here" in f["differences"]
    assert "seed: 0, 1 in the paper, 0 here" in f["differences"]
    assert prose.page_facts(summary, spec, "paper")["differences"].startswith("nothing")
    assert prose.page_facts(summary)["differences"] == "unknown"


def test_spatial_pooling_first_half():
    lay = synthetic_layers(second_half_gap=1.0, first_half_gap=0.0)
    mid = analysis.mid_depth_change(lay, shuffle=1)
    # deepest layer with rel_depth <= 0.5 is i = 4 (rel 4/9): R = 10**(-8/9) trained and shuffled, 1 at init
    np.testing.assert_allclose(mid["decades"], -8 / 9)
    assert (mid["n"] == 2).all()
    c = claims.claim_spatial_pooling_first_half(lay)
    assert c.holds and c.value == pytest.approx(-8 / 9)
    flat = lay.copy()
    flat.loc[flat["state"] == "trained", "R_f"] = 1.0  # training changed nothing
    assert not claims.claim_spatial_pooling_first_half(flat).holds


def test_untestable_claims_say_so():
    out = synthetic_output().iloc[:4]  # two runs only
    c = claim_error_correlation(out)
    assert not c.testable and c.verdict == claims.UNTESTABLE and np.isnan(c.value)
    lay = synthetic_layers()
    c = claim_channel_pooling_second_half(lay[lay["shuffle"] == 0])
    assert not c.testable and c.verdict == claims.UNTESTABLE
    c = claim_shuffle_no_effect(lay[lay["shuffle"] == 0])
    assert c.verdict == claims.UNTESTABLE
    # the Fig. 6 page cites these details whatever the verdict (a glue key it never glued fails the page)
    for k in ("worst_layer", "worst_net", "worst_D", "worst_G", "n_over", "n_layers", "output_fall", "first_D",
              "second_D", "first_G", "second_G", "first", "second", "reason"):
        assert k in c.details, k
    sp = synthetic_spectra()
    assert claim_spectra_concentrate(sp[sp["state"] == "trained"]).verdict == claims.UNTESTABLE
    assert claim_rf_falls(out[out["state"] == "trained"]).verdict == claims.UNTESTABLE
    assert verdict(True, testable=False) == claims.UNTESTABLE


def test_claims_table():
    out = paper_output(seeds=(0, 1))
    t = claims.claims_table([claim_rf_falls(out), claim_gf_grows(out)])
    assert list(t.columns) == ["claim", "value", "rule", "verdict"]
    assert t["rule"].str.len().min() > 10
    assert list(t["verdict"]) == ["holds", "holds"]


def test_claims_table_with_labels():
    out = synthetic_output()
    t = claims.claims_table({"R_f falls": claim_rf_falls(out)})
    assert t.loc[0, "claim"] == "R_f falls"
    with pytest.raises(ValueError, match="items"):
        claims.claims_table({"x": 1.0})


def test_claims_on_empty_tables_are_untestable():
    assert claim_spectra_concentrate(synthetic_spectra().iloc[:0]).verdict == claims.UNTESTABLE
    lay = synthetic_layers().iloc[:0]
    for fn in (claim_channel_pooling_second_half, claim_shuffle_no_effect,
               claims.claim_spatial_pooling_first_half):
        assert fn(lay).verdict == claims.UNTESTABLE
    out = synthetic_output().iloc[:0]
    for fn in (claim_rf_falls, claim_error_correlation, claim_gf_grows, claim_rf_init_order_one):
        assert fn(out).verdict == claims.UNTESTABLE


def test_differences_compares_integral_floats_as_ints():
    paper = pd.DataFrame({"ptr": [1024, 2048, None]})  # pandas makes this column float
    here = pd.DataFrame({"ptr": [1024.0]})
    assert prose.differences(here, paper) == "ptr: 1024, 2048, full training set in the paper, 1024 here"


def test_run_facts_sorts_numbers_numerically():
    assert run_facts(pd.DataFrame({"seed": list(range(11))}))["seed"] == "0-10"
    assert run_facts(pd.DataFrame({"epochs": [15, 3]}))["epochs"] == "3, 15"
    assert run_facts(pd.DataFrame({"ptr": [1024.0, 2048.0]}), columns=("ptr",))["ptr"] == "1024, 2048"


# ------------------------------------------------------------------------------- probe-page claims
def curves_table(k2_kept: float = 0.76, kmax_acc: float = 20.0, salient_gap: float = -5.0) -> pd.DataFrame:
    """Accuracy curves (%) as analysis.accuracy_curves returns them, for masking (variant) and patch
    shuffling (mode), two nets trained without rotations."""
    rows = []
    for net, clean in (("VGG11bn", 80.0), ("LeNet", 60.0)):
        for k, acc in ((1, clean), (2, clean * k2_kept), (4, 0.5 * clean), (8, kmax_acc)):
            rows.append(dict(net=net, training="unrotated", mode="full", variant=None, magnitude=float(k),
                             mean=acc, sd=1.0, n=2))
        for f in (0.0, 0.5, 0.9):
            acc = clean * (1 - f)
            rows.append(dict(net=net, training="unrotated", mode=None, variant=analysis.MASK_VARIANTS["mask"],
                             magnitude=f, mean=acc, sd=1.0, n=2))
            rows.append(dict(net=net, training="unrotated", mode=None,
                             variant=analysis.MASK_VARIANTS["mask_saliency"], magnitude=f,
                             mean=acc + (salient_gap if f > 0 else 0.0), sd=1.0, n=2))
    return pd.DataFrame(rows)


def test_masking_claims():
    c = claims.claim_mask_falls(curves_table())
    assert c.verdict == claims.HOLDS and c.details["fmax"] == 0.9
    assert c.details["clean_acc"] == pytest.approx(70.0) and c.details["acc_fmax"] == pytest.approx(7.0)
    assert claims.claim_saliency_first(curves_table()).holds
    worse = claims.claim_saliency_first(curves_table(salient_gap=+3.0))
    assert worse.verdict == claims.FAILS and worse.value == pytest.approx(3.0)
    assert claims.claim_mask_falls(curves_table().iloc[:0]).verdict == claims.UNTESTABLE


def test_curves_table_shows_a_dash_for_a_magnitude_a_mode_lacks():
    """A mode measured at fewer magnitudes (rows_cols has no k = 8 here) leaves a hole in the wide table:
    it reads as an en dash, never NaN (check_site's table check fails on NaN)."""
    cur = curves_table()
    full = cur[cur["mode"] == "full"]
    rows_cols = full[full.magnitude < 8].assign(mode="rows_cols")
    wide = analysis.curves_table(pd.concat([full, rows_cols]), ["net", "training", "mode"])
    assert list(wide.columns) == [1.0, 2.0, 4.0, 8.0] and len(wide) == 4
    assert wide.loc[("LeNet", "unrotated", "rows_cols"), 8.0] == "\u2013"
    assert wide.loc[("LeNet", "unrotated", "full"), 2.0] == pytest.approx(45.6)
    html = wide.to_html()
    assert "NaN" not in html and "nan" not in html
    assert analysis.curves_table(full, "net").shape == (2, 4)  # one index column given as a string
    with pytest.raises(ValueError, match="curves"):
        analysis.curves_table(full.drop(columns="magnitude"), ["net"])


def test_patch_shuffle_claims():
    cur = curves_table()
    falls = claims.claim_patch_shuffle_falls(cur)
    assert falls.holds and falls.details["kmax"] == 8 and falls.details["acc_kmax"] == pytest.approx(20.0)
    k2 = claims.claim_patch_shuffle_k2(cur)
    assert k2.holds and k2.value == pytest.approx(76.0)
    assert not claims.claim_patch_shuffle_k2(curves_table(k2_kept=0.95)).holds
    assert claims.claim_patch_shuffle_chance(cur).holds
    assert claims.claim_patch_shuffle_chance(curves_table(kmax_acc=40.0)).verdict == claims.FAILS
    only_small = cur[cur["magnitude"] <= 2]
    assert claims.claim_patch_shuffle_chance(only_small).verdict == claims.UNTESTABLE
    rc = cur[cur["mode"] == "full"].assign(mode="rows_cols", mean=lambda d: d["mean"] + 2.0)
    assert analysis.mode_difference(pd.concat([cur, rc]), "rows_cols", "full") == pytest.approx(2.0)


def test_transfer_claims():
    grid = pd.DataFrame([dict(resampling="bilinear", source=16, target=t, acc_source_mean=60.0,
                              acc_ootb_mean=60.0 - d, delta_mean=-d) for t, d in ((16, 0.0), (32, 20.0))])
    loses = claims.claim_transfer_loses(grid)
    assert loses.holds and loses.value == pytest.approx(-20.0)
    assert loses.details["rel_loss"] == pytest.approx(40.0)
    assert claims.claim_transfer_loss_size(grid).holds
    small = grid.assign(delta_mean=lambda d: -0.1 * d["delta_mean"].abs(), acc_ootb_mean=58.0)
    assert not claims.claim_transfer_loss_size(small).holds
    assert claims.claim_transfer_loses(grid[grid.target == 16]).verdict == claims.UNTESTABLE


def invariance_table(rotated_nv: float = 0.5) -> pd.DataFrame:
    rows = []
    for net in ("LeNet", "VGG11bn"):
        for tr, nv in (("unrotated", 0.8), ("rotated", rotated_nv)):
            for strat, bump in ((False, 0.0), (True, 0.1)):
                for seed in (0, 1):
                    for i, layer in enumerate(("a", "b", "c", "d")):
                        rows.append(dict(net=net, training=tr, stratified=strat, seed=seed, layer=layer,
                                         rel_depth=i / 3, mean_NV=nv + bump + 0.01 * i, run=f"{net}{tr}{seed}",
                                         n_activations=16, n_inf=0, reshape=False))
    return pd.DataFrame(rows)


def test_rotation_nv_claims():
    inv = invariance_table()
    lower = claims.claim_rotation_lowers_nv(inv)
    assert lower.holds and lower.details["n_nets"] == 2 and lower.details["n_lower"] == 2
    assert lower.details["nv_unrot"] == pytest.approx(0.815)
    assert not claims.claim_rotation_lowers_nv(invariance_table(rotated_nv=0.9)).holds
    ref = {"nv_unrotated": {"a": 0.7, "b": 0.9}, "nv_rotated": {"a": 0.4, "b": 0.6}}
    assert claims.claim_nv_in_reference_range(inv, ref).holds
    assert claims.claim_stratified_raises_nv(inv).value == pytest.approx(0.1)
    assert claims.claim_stratified_raises_nv(inv[~inv.stratified]).verdict == claims.UNTESTABLE
    one = claims.claim_rotation_lowers_nv(inv[inv.training == "unrotated"])
    assert one.verdict == claims.UNTESTABLE


def test_rotation_flattens_accuracy():
    rows = []
    for tr, keep in (("unrotated", 0.5), ("rotated", 0.9)):
        for angle in (0.0, 90.0, 180.0):
            rows.append(dict(net="LeNet", training=tr, probe="rotate", label=-1, magnitude=angle,
                             accuracy=0.6 if angle == 0 else 0.6 * keep))
    c = claims.claim_rotation_flattens_accuracy(pd.DataFrame(rows))
    assert c.holds and c.details["kept_rot"] == pytest.approx(90.0) and c.details["acc0_unrot"] == pytest.approx(60.0)


def test_nv_tracks_rk():
    inv = invariance_table()
    inv = inv[~inv.stratified]
    layers = inv[["run", "layer"]].drop_duplicates().assign(
        state="trained", shuffle=0, R_f=lambda d: 10.0 ** d["layer"].map({"a": 0, "b": 1, "c": 2, "d": 3}),
        D_f=1.0, G_f=1.0)
    c = claims.claim_nv_tracks_rk(inv, layers)
    assert c.holds and c.value == pytest.approx(1.0) and c.details["n_corr"] == 8
    anti = layers.assign(R_f=lambda d: 1.0 / d["R_f"])
    assert claims.claim_nv_tracks_rk(inv, anti).verdict == claims.FAILS


def test_claim_record_and_text():
    c = claims.claim_rf_falls(paper_output(seeds=(0, 1)))
    rec = c.to_record()
    assert rec["id"] == "R_f_falls" and rec["verdict"] == claims.HOLDS
    assert rec["ci_low"] <= rec["value"] <= rec["ci_high"]  # every claim now carries its bootstrap interval
    assert c.statement and c.verdict in c.text
    import json
    json.dumps(rec)  # JSON-ready


# ------------------------------------------------------------------------------------- analysis helpers
def test_config_values_reads_json_dicts_and_expanded_columns():
    df = pd.DataFrame({"task_options": ['{"task": 1}', {"task": 2}, None], "augment": ['["crop", "rotate"]', ["crop"], "crop"]})
    assert analysis.config_values(df, "task_options", "task").tolist() == [1, 2, None]
    expanded = pd.DataFrame({"task_options.task": [3, 4]})
    assert analysis.config_values(expanded, "task_options", "task").tolist() == [3, 4]
    assert analysis.training_label(df).tolist() == ["rotated", "unrotated", "unrotated"]
    with pytest.raises(ValueError, match="column"):
        analysis.config_values(df, "nothing")


def test_layer_exponents_is_theory_fit():
    from stabkit import theory

    t = theory.constant_filter_stabilities(2, 2, 6, seeds=1)
    assert analysis.layer_exponents(t, 2) == pytest.approx(
        dict(zip(("D_f", "G_f", "R_f"), theory.fit_exponents(t, 2).values())))
    raw = analysis.layer_exponents(t, 2, columns=("D", "G", "deno"))
    assert set(raw) == {"D", "G", "deno"}
    blocks = pd.DataFrame({"block": [1, 2, 3, 4], "D_f": 2.0 ** -np.arange(1, 5)})
    assert analysis.layer_exponents(blocks, 2, layer="block", columns=("D_f",))["D_f"] == pytest.approx(-1.0)


def test_block_profile_geomean_over_runs():
    lay = pd.DataFrame({"layer": ["features.relu1", "features.relu2", "features.conv1"] * 2, "shuffle": 0,
                        "state": "trained", "seed": [0, 0, 0, 1, 1, 1], "D_f": [1.0, 10.0, 5.0, 100.0, 1000.0, 5.0],
                        "G_f": 1.0, "R_f": 1.0})
    prof = analysis.block_profile(lay)
    assert prof["block"].tolist() == [1, 2] and prof["D_f"].tolist() == pytest.approx([10.0, 100.0])


def test_bootstrap_ci_brackets_the_mean():
    x = np.random.default_rng(0).normal(1.0, 0.1, 200)
    lo, hi = analysis.bootstrap_ci(np.mean, x, n_boot=500)
    assert lo < 1.0 < hi and hi - lo < 0.1
    assert np.isnan(analysis.bootstrap_ci(np.mean, [1.0, 2.0])[0])


def test_differences_table():
    paper = pd.DataFrame({"epochs": [250, 250], "P": 500})
    here = pd.DataFrame({"epochs": [3], "P": 500})
    t = prose.differences_table(here, paper)
    assert t.to_dict("records") == [{"quantity": "epochs", "paper": "250", "here": "3"}]
    assert prose.differences_table(paper, paper).empty
    # per-network training departures name their networks (the FCN's Adam is the paper's own choice)
    here = pd.DataFrame({"task": "cifar10", "net": ["VGG11", "VGG11bn", "DenseNetL2", "AlexNet"],
                         "optimizer": ["adam", "sgd", "adam", "sgd"], "lr": [1e-3, 0.1, 0.1, 0.05],
                         "weight_decay": [0.0, 5e-4, 0.0, 5e-4], "epochs": 15})
    t = prose.differences_table(here, paper).set_index("quantity")
    assert t.loc["optimizer"].to_dict() == {"paper": "sgd", "here": "adam (VGG11)"}
    assert t.loc["lr"].to_dict() == {"paper": "0.1", "here": "0.001 (VGG11); 0.05 (AlexNet)"}
    assert t.loc["weight_decay"].to_dict() == {"paper": "0.0005", "here": "0 (VGG11)"}
    assert t.loc["epochs"].to_dict() == {"paper": "250", "here": "15"}
    errs = pd.DataFrame({"net": ["VGG11bn", "ResNet18", "VGG11bn"] + ["LeNet"] * 5,
                         "best_test_err": [0.487, 0.1948, 0.2019, 0.05, 0.041, 0.049, 0.059, None]})
    assert prose.errors_text(errs, max_listed=3) == "LeNet 4.1-5.9 % (4 runs); ResNet18 19.5 %; VGG11bn 20.2, 48.7 %"
    assert prose.errors_text(errs).startswith("LeNet 4.1, 4.9, 5.0, 5.9 %;")
    assert prose.errors_text(errs.drop(columns="best_test_err")) == "n/a"
    with pytest.raises(ValueError, match="max_listed"):
        prose.errors_text(errs, max_listed=0)
    # runs of one network are labelled by the fewest settings that tell them apart, seeds listed together
    runs = pd.DataFrame({"net": ["VGG11bn"] * 4 + ["LeNet"] * 3,
                         "augment": ["crop,flip", "crop,flip,rotate", "crop,flip", "crop,flip,rotate"] + ["crop"] * 3,
                         "seed": [0, 0, 1, 1, 0, 0, 0], "epochs": [15, 15, 15, 15, 15, 15, 15],
                         "noise_std": [0.0, 0.0, 0.0, 0.0, 30.0, 0.0, 1.0],
                         "width_factor": [0.25, 0.25, 0.25, 0.25, 1.0, 1.0, 1.0],
                         "best_test_err": [0.202, 0.487, 0.198, 0.45, 0.456, 0.409, 0.422]})
    assert prose.errors_text(runs) == ("LeNet 40.9 % (noise std 0), 42.2 % (noise std 1), 45.6 % (noise std 30); "
                                       "VGG11bn 19.8, 20.2 % (augment crop+flip), 45.0, 48.7 % (augment crop+flip+rotate)")
    res = pd.DataFrame({"net": "LowRes", "net_options.source_size": [16, 8, 16],
                        "net_options.antialias": [None, None, False], "best_test_err": [0.28, 0.43, 0.281]})
    assert prose.errors_text(res) == ("LowRes 43.0 % (source size 8), 28.0 % (source size 16), "
                                      "28.1 % (source size 16, antialias False)")
    assert prose.ptr_text(pd.DataFrame({"ptr": [None], "task": ["cifar10"]})) == "all 50,000"
    assert prose.ptr_text(pd.DataFrame({"ptr": [2048.0, 1024.0]})) == "1024, 2048"


# ------------------------------------------------------------------- issue 12: claims that test the paper
from stabkit.report import fidelity, narrative, stats  # noqa: E402

CNNS = ["VGG11", "VGG11bn", "VGG16bn", "ResNet18", "ResNet34", "AlexNet", "EfficientNetB0"]


def paper_output(nets=CNNS, seeds=(0,), noise=(0.0,), err_of=None, rf_falls=2.0, g_grow=10.0,
                 g_noise=1.0, seed=0, probes=False) -> pd.DataFrame:
    """Output table of many nets: trained R_f = 10**-rf_falls * spread, error = 0.2 sqrt(R_f) (or
    ``err_of(net, noise)``), G_f x ``g_grow`` with training, x ``g_noise`` per decade of training noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, net in enumerate(nets):
        for s in seeds:
            for nz in noise:
                r_tr = 10 ** (-rf_falls + 0.15 * i + rng.normal(0, 0.03))
                err = err_of(net, nz) if err_of else 0.2 * np.sqrt(r_tr) * 10 ** rng.normal(0, 0.02)
                g0 = 0.1 * 10 ** rng.normal(0, 0.05)
                g_tr = g0 * g_grow * (g_noise ** np.log10(nz) if nz > 0 else 1.0)
                cfg = dict(net=net, seed=s, noise_std=nz, task="cifar10", run=f"{net}-{s}-{nz}")
                kinds = ("corrupted", "clean") if (probes and nz > 0) else ("clean",)
                for kind in kinds:
                    scale = 1.0 if kind != "clean" or nz == 0 else 1000.0  # clean rows: R_f far off
                    for state, r, g in (("init", 1.0, g0), ("trained", r_tr * scale, g_tr)):
                        rows.append(dict(cfg, state=state, shuffle=0, R_f=r, G_f=g, D_f=r * g, D=r * g, G=g,
                                         deno=1.0, P=100, test_err=err if state == "trained" else 0.9,
                                         **({"probes": kind} if probes else {})))
    return pd.DataFrame(rows)


def test_gf_grows_is_evaluated_on_clean_training_only():
    """12.8: nets trained on large noise have a lower G_f (noise augmentation); 'G_f grows' is stated for
    nets trained without corruption. Before, all noise levels were pooled: 'does not hold'."""
    out = paper_output(noise=(0.0, 10.0, 100.0), g_noise=0.001)
    c = claim_gf_grows(out)
    assert c.verdict == claims.HOLDS and c.value == pytest.approx(10, rel=0.2)
    assert "without corruption" in c.rule and c.ci_low > 1
    assert claim_gf_grows(out, clean_only=False).verdict != claims.HOLDS  # the old, pooled reading
    falls = claims.claim_gf_falls_with_noise(out)
    assert falls.verdict == claims.HOLDS and falls.value < 0
    tab = fidelity.gf_by_noise(out)
    assert list(tab.noise_std) == [0.0, 10.0, 100.0] and tab.G_f.is_monotonic_decreasing


def test_error_correlation_at_each_noise_level():
    """12.8: with noisy training the paper's claim is that R_f still tracks the error, at each level."""
    out = paper_output(noise=(0.0, 1.0, 30.0))
    per = claims.error_correlation_by_noise(out)
    assert sorted(per) == [1.0, 30.0] and all(c.verdict == claims.HOLDS for c in per.values())
    summary = claims.claim_error_correlation_noisy(out)
    assert summary.verdict == claims.HOLDS and summary.details["n_testable"] == 2
    few = paper_output(nets=CNNS[:3], noise=(0.0, 1.0))  # 3 nets per level
    assert claims.claim_error_correlation_noisy(few).verdict == claims.UNTESTABLE


def test_rf_falls_is_restricted_to_cnns_that_train_well():
    """12.9: 'R_f falls by decades' is stated for CNNs that train well: FCNs, LeNet and nets above 30 %
    error are left out (before: pooled, so an FCN or a badly trained net could sink it)."""
    nets = CNNS + ["LeNet", "DenseNetL2", "DenseNetL4"]
    out = paper_output(nets=nets, err_of=lambda net, nz: 0.6 if net in ("LeNet", "DenseNetL2", "DenseNetL4")
                       else 0.08)
    bad = out["net"].isin(["LeNet", "DenseNetL2", "DenseNetL4"]) & (out["state"] == "trained")
    out.loc[bad, "R_f"] = 100.0  # these rise with training
    c = claim_rf_falls(out)
    assert c.verdict == claims.HOLDS and c.details["n"] == len(CNNS)
    assert "CNNs" in c.rule and "LeNet" in c.rule and "10 %" in c.rule
    assert claim_rf_falls(out, restrict=False).verdict != claims.HOLDS
    # a table of partly trained nets (the small scale: 60-70 % error) cannot test it
    poor = paper_output(err_of=lambda net, nz: 0.65)
    assert claim_rf_falls(poor).verdict == claims.UNTESTABLE


def test_correlations_carry_bootstrap_intervals_and_untestable_verdicts():
    """12.10: every correlation has an interval; fewer than 5 nets, nets near chance or an interval that
    spans the threshold give 'cannot be tested at this scale' (the verdict was never used)."""
    c = claim_error_correlation(paper_output())
    assert c.verdict == claims.HOLDS and c.ci_low <= c.value <= c.ci_high and c.ci_low > 0.5
    four = claim_error_correlation(paper_output(nets=CNNS[:4]))  # r = 1 on 4 nets: testable before
    assert four.verdict == claims.UNTESTABLE and "fewer than 5" in four.details["reason"]
    chance = claim_error_correlation(paper_output(err_of=lambda net, nz: 0.88 + 0.001 * CNNS.index(net)))
    assert chance.verdict == claims.UNTESTABLE and "near chance" in chance.details["reason"]
    rng = np.random.default_rng(1)
    noisy = paper_output(nets=[f"N{i}" for i in range(7)], err_of=lambda net, nz: 0.05 * 10 ** rng.normal(0, 0.5))
    spans = claim_error_correlation(noisy, min_r=0.0)
    assert spans.ci_low < 0.0 < spans.ci_high and spans.verdict == claims.UNTESTABLE
    assert "spans" in spans.details["reason"]


def test_sqrt_law_fit_with_interval():
    """12.10: eps_t = a sqrt(R_f) fitted with an interval for a (2021: a about 0.2)."""
    c = claims.claim_sqrt_law(paper_output())
    assert c.verdict == claims.HOLDS and c.details["a"] == pytest.approx(0.2, rel=0.05)
    assert c.value == pytest.approx(0.5, abs=0.05) and c.ci_low < 0.5 < c.ci_high  # value: the free exponent b
    off = claims.claim_sqrt_law(paper_output().assign(test_err=lambda d: d.test_err / 10))
    assert off.verdict == claims.FAILS and off.details["a_high"] < 0.1
    fit = stats.sqrt_law_fit([1e-2, 1e-2, 1e-4], [0.02, 0.02, 0.002])
    assert fit["a"] == pytest.approx(0.2) and fit["a_low"] == pytest.approx(0.2)


def test_shuffle_no_effect_is_tested_layer_by_layer():
    """12.11: one layer changed by a decade among many unchanged ones passed the old half-averaged test."""
    lay = synthetic_layers(second_half_gap=0.0, first_half_gap=0.0)
    one = (lay["layer"] == "l7") & (lay["shuffle"] == 1)
    lay.loc[one, "R_f"] *= 10
    lay.loc[one, "D_f"] *= 10  # the change is in D_k, not in G_k
    assert shuffle_gap(lay, "R_f", by=()).abs_gap.max() < 0.3  # what the old claim looked at
    c = claim_shuffle_no_effect(lay, tolerance=0.3)
    assert c.verdict == claims.FAILS and c.value == pytest.approx(1.0)
    assert c.details["worst_layer"] == "l7" and c.details["worst_D"] == pytest.approx(1.0)
    assert c.details["worst_G"] == pytest.approx(0.0) and c.details["n_over"] == 2  # both nets
    gaps = fidelity.layer_shuffle_gaps(lay)
    np.testing.assert_allclose(gaps.gap_R_f, gaps.gap_D_f - gaps.gap_G_f)
    assert claim_shuffle_no_effect(synthetic_layers(0.0, 0.0)).verdict == claims.HOLDS


def test_sentences_say_direction_and_factor():
    """12.12: 'R_f rose 3.3x', not 'typically falls less'; a ratio moved by its denominator says so."""
    assert narrative.change_sentence("R_f", 3.3) == "R_f rose 3.3x"
    assert narrative.change_sentence("R_f", 1 / 25) == "R_f fell 25x"
    assert narrative.change_sentence("D_f", 1 / 250) == "D_f fell 250x (2.4 decades)"
    assert narrative.change_sentence("G_f", 1.05).startswith("G_f stayed within 10 %")
    assert narrative.decades_sentence("R_k", 0.5) == "R_k rose 3.2x"
    e = narrative.explain_ratio({"D": 1.7, "G": 5.0, "deno": 20.0, "D_f": 1.7 / 20, "G_f": 0.25, "R_f": 0.34}, "D_f")
    assert e["by_denominator"] and e["text"] == ("D_f fell 12x because the spread of the outputs across images "
                                                 "(the denominator) rose 20x, while D rose 1.7x")
    out = paper_output(rf_falls=-0.5)  # trained R_f above init: it rose
    assert "R_f rose" in narrative.training_change(out)
    parts = fidelity.trained_init_factors(out)
    assert parts["n"] == len(CNNS) and parts["R_f"] > 1
    story = narrative.ratio_story(out)
    assert story["R_f"].startswith("R_f rose") and "deno" in story["parts"]


def test_paper_rows_use_the_corrupted_probes_of_noise_trained_nets():
    """12.1 on the page side: a noise-trained net is measured on its own corrupted images; the clean rows
    are extra. Claims use the paper's rows by default."""
    out = paper_output(noise=(0.0, 10.0), probes=True)
    rows = fidelity.paper_rows(out)
    assert set(rows[rows.noise_std > 0].probes) == {"corrupted"} and set(rows[rows.noise_std == 0].probes) == {"clean"}
    assert len(fidelity.paper_rows(out, "clean")) == len(out[out.probes == "clean"])
    assert claim_error_correlation(out, noise_std=10.0).verdict == claims.HOLDS
    old = out[out.probes != "corrupted"].drop(columns="probes")  # a table written before: kept as it is
    pd.testing.assert_frame_equal(fidelity.paper_rows(old), old)
    lay = synthetic_layers().assign(relu_convention="true")
    both = pd.concat([lay, lay.assign(relu_convention="inplace", R_f=lay.R_f * 100)])
    assert len(fidelity.paper_rows(both)) == len(lay)


def test_differences_compare_with_the_paper_protocol():
    """12.13: a page compares its runs with the paper's protocol (nets, seeds, epochs, width, P,
    precision), not with the `paper` scale's config (whose lr 100 the paper never gave)."""
    proto = fidelity.paper_protocol("appendix_scale_detection_1d")
    assert "lr" not in proto.columns and set(proto.measure_dtype) == {"float64"}
    fig1 = fidelity.paper_protocol("fig1_noise_corrupted_cifar")
    assert "VGG19bn" in set(fig1.net) and "VGG16" not in set(fig1.net) and set(fig1.epochs) == {250}
    assert fidelity.paper_protocol("probe_rotation") is None
    here = pd.DataFrame({"net": ["CNN1D"], "ptr": [1024], "P": [200], "width_factor": [0.1], "lr": [10.0],
                         "measure_dtype": ["float32"]})
    text = prose.differences(here, proto, columns=("net", "P", "width_factor", "lr", "measure_dtype"))
    assert "lr" not in text and "measure_dtype: float64 in the paper, float32 here" in text


def test_early_fits_names_runs_that_stop_at_zero_loss_with_a_high_test_error():
    from stabkit.report import narrative

    def run(name, net, seed, losses, errs):
        return [{"run": name, "net": net, "seed": seed, "epoch": e + 1, "train_loss": l, "test_err": t,
                 "test_loss": 100.0 / (e + 1)} for e, (l, t) in enumerate(zip(losses, errs))]

    m = pd.DataFrame(run("a", "VGG13bn", 2, [0.5, 0.0], [0.5, 0.356]) + run("b", "VGG13bn", 1, [0.5, 0.0], [0.4, 0.01])
                     + run("c", "AlexNet", 1, [0.5, 0.002], [0.4, 0.3]))  # c never reached zero loss
    assert narrative.early_fits(m) == ("Stopped at zero training loss with a test error above 10 %: VGG13bn seed 2 "
                                       "at epoch 2 (test error 35.6 %, test loss 100 at epoch 1, 50 at the stop).")
    assert narrative.early_fits(m, threshold=0.5).startswith("No run stopped")
    with pytest.raises(ValueError, match="threshold"):
        narrative.early_fits(m, threshold=10)
    with pytest.raises(ValueError, match="test_loss"):
        narrative.early_fits(m.drop(columns="test_loss"))
