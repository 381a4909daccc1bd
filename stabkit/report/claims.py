"""The paper's claims, checked on tidy run tables (the related probes' claims are in
:mod:`stabkit.report.probe_claims`, re-exported here).

Every ``claim_*`` function takes tidy tables (or the small tables of :mod:`stabkit.report.analysis`) and
returns a :class:`Claim`: the headline ``value``, the ``threshold`` it was compared with, the computed
``verdict`` (``"holds"``, ``"does not hold"`` or ``"cannot be tested at this scale"``), the ``rule`` in
words, a one-line ``statement`` of what the paper says and further numbers in ``details``. Pages glue a
claim with :func:`stabkit.report.glue.glue_claim`, so a sentence such as "R_f falls by decades with
training" is never decided by hand, and the book's claims dashboard lists every claim of every page.

Claims test what the paper claims (``book/methods.md``, "Parity with the original code"): the figure's
probe set (a noise-trained net on its own corrupted images: :func:`stabkit.report.fidelity.paper_rows`),
the networks a statement is made for (R_f falls by decades: CNNs that train well; G_f grows: networks
trained without corruption), a bootstrap interval for every correlation and fit
(:mod:`stabkit.report.stats`), and "cannot be tested at this scale" when there are fewer than 5 networks,
the networks are near chance or the interval spans the threshold.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .analysis import mid_depth_change, ratio_stats, require_columns, select, shuffle_gap, trained_over_init, \
    zero_mode_fraction
from .fidelity import (MAX_ERROR, layer_shuffle_gaps, paper_rows, task_error_column,
                       well_trained_cnns, well_trained_rule)
from .probe_claims import (claim_mask_falls, claim_nv_in_reference_range, claim_nv_tracks_rk,
                           claim_patch_shuffle_chance, claim_patch_shuffle_falls, claim_patch_shuffle_k2,
                           claim_rotation_flattens_accuracy, claim_rotation_lowers_nv, claim_saliency_first,
                           claim_stratified_raises_nv, claim_transfer_loses, claim_transfer_loss_size,
                           nv_rk_correlations)
from .stats import (MIN_NETWORKS, NEAR_CHANCE, SQRT_LAW_A, chance_error, interval_decision, log_correlation,
                    mean_ci, sample_decision, sqrt_law_fit)
from .verdicts import FAILS, HOLDS, UNTESTABLE, Claim, claims_table, verdict, verdict_counts

__all__ = [
    "HOLDS", "FAILS", "UNTESTABLE", "Claim", "verdict", "claims_table", "verdict_counts",
    # figure pages
    "claim_rf_falls", "claim_rf_init_order_one", "claim_error_correlation", "claim_gf_grows",
    "claim_channel_pooling_second_half", "claim_spatial_pooling_first_half", "claim_shuffle_no_effect",
    "claim_spectra_concentrate", "claim_sqrt_law", "error_correlation_by_noise", "claim_error_correlation_noisy",
    "claim_gf_falls_with_noise",
    # probe pages (stabkit.report.probe_claims)
    "claim_mask_falls", "claim_saliency_first", "claim_patch_shuffle_falls", "claim_patch_shuffle_k2",
    "claim_patch_shuffle_chance", "claim_transfer_loses", "claim_transfer_loss_size",
    "claim_rotation_lowers_nv", "claim_nv_in_reference_range", "claim_stratified_raises_nv",
    "claim_rotation_flattens_accuracy", "claim_nv_tracks_rk", "nv_rk_correlations",
]


# ---------------------------------------------------------------------------------------------- claims
def _trained_ratio_claim(name: str, output: pd.DataFrame, quantity: str, threshold_decades: float, below: bool,
                         rule: str, statement: str, restriction: str, **where) -> Claim:
    """A "trained / init" claim: mean over runs of log10(trained / init) with its bootstrap interval,
    compared with ``threshold_decades`` (``below``: the claim is "<="); at least 3 runs."""
    ratios = trained_over_init(output, quantity, **where)
    st = ratio_stats(ratios["ratio"])
    dec = ratios["decades"].to_numpy(dtype=np.float64)
    mean, lo, hi = mean_ci(dec[np.isfinite(dec)])
    holds, ok, reason = interval_decision(mean, lo, hi, threshold_decades, above=not below)
    if st["n"] < 3:
        holds, ok, reason = False, False, f"{st['n']} runs (fewer than 3)"
    details = {**st, "threshold_decades": threshold_decades, "restricted_to": restriction, "reason": reason}
    return Claim(name, holds, st["decades"], threshold_decades, details, testable=ok, rule=rule,
                 statement=statement, ci_low=lo, ci_high=hi)


def claim_rf_falls(output: pd.DataFrame, decades: float = 1.0, quantity: str = "R_f", restrict: bool = True,
                   max_error: float = MAX_ERROR, probes: str = "paper", **where) -> Claim:
    """"R_f falls by decades with training", stated by the paper for CNNs that train well: over those
    runs (``restrict``: :func:`stabkit.report.fidelity.well_trained_rule`, error below ``max_error``),
    the mean of ``log10(R_f trained / init)`` and its 95 % bootstrap interval lie at or below
    ``-decades``. ``value`` = log10 of the geometric mean ratio; "cannot be tested" with fewer than 3
    such runs or an interval spanning ``-decades``."""
    rows = paper_rows(output, probes)
    restriction = "all networks"
    if restrict:
        rows = well_trained_cnns(rows, max_error=max_error)
        restriction = well_trained_rule(max_error)
    return _trained_ratio_claim(f"{quantity}_falls", rows, quantity, -decades, True,
                                f"{restriction}: mean log10({quantity} trained / init) <= {-decades:g}, "
                                f"95 % bootstrap interval below it (>= 3 runs)",
                                "R_f falls by decades with training (CNNs that train well)", restriction, **where)


def claim_rf_init_order_one(output: pd.DataFrame, tolerance_decades: float = 0.5,
                            quantity: str = "R_f", shuffle: int | None = 0, probes: str = "paper",
                            **where) -> Claim:
    """"At initialisation R_f ~ 1": the geometric mean of R_f over nets at initialisation is within
    ``tolerance_decades`` of 1. ``value`` = that geometric mean."""
    require_columns(output, [quantity, "state"], "output")
    rows = select(paper_rows(output, probes), state="init", shuffle=shuffle, **where)
    st = ratio_stats(rows[quantity])
    holds = bool(np.isfinite(st["decades"]) and abs(st["decades"]) <= tolerance_decades)
    return Claim(f"{quantity}_init_order_one", holds, st["geomean"], tolerance_decades, st,
                 testable=st["n"] > 0,
                 rule=f"|log10 geomean({quantity} at init)| <= {tolerance_decades:g}",
                 statement="At initialisation R_f is of order one")


_CORR = "R_f correlates with the test error"


def claim_error_correlation(output: pd.DataFrame, quantity: str = "R_f", error: str = "test_err",
                            min_r: float = 0.5, shuffle: int | None = 0, probes: str = "paper",
                            min_networks: int = MIN_NETWORKS, chance: float | None = None, **where) -> Claim:
    """"R_f correlates with test error": Pearson correlation r of log10 error and log10 R_f over trained
    nets, with a 95 % bootstrap interval; holds when the interval lies above ``min_r`` (and the slope is
    positive), does not hold when it lies below; "cannot be tested at this scale" with fewer than
    ``min_networks`` nets, when most nets are near chance (error >= 0.9 x ``chance``, default from the
    task) or when the interval spans ``min_r``. ``value`` = r; details: slope (and interval), the fitted
    prefactor, the sqrt-law prefactor ``a`` of ``err = a sqrt(R_f)`` (2021: ~0.2) with its interval, n."""
    require_columns(output, [quantity, error, "state"], "output")
    rows = select(paper_rows(output, probes), state="trained", shuffle=shuffle, **where)
    chance = chance_error(rows) if chance is None else chance
    c = log_correlation(rows[quantity], rows[error])
    law = sqrt_law_fit(rows[quantity], rows[error])
    ok_n, why, sample = sample_decision(c["n"], rows[error], chance, min_networks)
    holds, ok, reason = interval_decision(c["r"], c["r_low"], c["r_high"], min_r)
    holds = holds and np.isfinite(c["slope"]) and c["slope"] > 0
    if not ok_n:
        holds, ok, reason = False, False, why
    prefactor = float(10 ** (np.mean(np.log10(rows[error].clip(lower=1e-300))) - c["slope"] *
                             np.mean(np.log10(rows[quantity].clip(lower=1e-300))))) if c["n"] else float("nan")
    details = {"r": c["r"], "slope": c["slope"], "slope_low": c["slope_low"], "slope_high": c["slope_high"],
               "prefactor": prefactor, "sqrt_prefactor": law["a"], "sqrt_prefactor_low": law["a_low"],
               "sqrt_prefactor_high": law["a_high"], "n": c["n"], "reason": reason, **sample}
    details["n"] = c["n"]
    return Claim(f"{error}_vs_{quantity}", bool(holds), c["r"], min_r, details, testable=ok,
                 rule=f"r(log {quantity}, log {error}) >= {min_r:g} with its 95 % bootstrap interval, slope > 0; "
                      f">= {min_networks} nets, most not near chance (error < {NEAR_CHANCE:g} x chance)",
                 statement=_CORR, ci_low=c["r_low"], ci_high=c["r_high"])


def claim_sqrt_law(output: pd.DataFrame, quantity: str = "R_f", error: str = "test_err", a: float = SQRT_LAW_A,
                   factor: float = 2.0, shuffle: int | None = 0, probes: str = "paper",
                   min_networks: int = MIN_NETWORKS, chance: float | None = None, **where) -> Claim:
    """The 2021 law ``eps_t = a sqrt(R_f)`` with ``a`` about 0.2: fit of ``a`` (slope fixed at 1/2) over
    trained nets with a 95 % bootstrap interval; holds when the interval lies within a ``factor`` of
    ``a`` (0.1-0.4 by default), does not hold when it lies outside, else (or with too few nets, or nets
    near chance) "cannot be tested at this scale". ``value`` = fitted a; details: the free log-log slope
    (0.5 for the law) with its interval."""
    require_columns(output, [quantity, error, "state"], "output")
    rows = select(paper_rows(output, probes), state="trained", shuffle=shuffle, **where)
    chance = chance_error(rows) if chance is None else chance
    law = sqrt_law_fit(rows[quantity], rows[error])
    c = log_correlation(rows[quantity], rows[error])
    lo_t, hi_t = a / factor, a * factor
    ok_n, why, sample = sample_decision(law["n"], rows[error], chance, min_networks)
    if not ok_n:
        holds, ok, reason = False, False, why
    elif not (np.isfinite(law["a_low"]) and np.isfinite(law["a_high"])):
        holds, ok, reason = False, False, "no confidence interval"
    elif lo_t <= law["a_low"] and law["a_high"] <= hi_t:
        holds, ok, reason = True, True, ""
    elif law["a_high"] < lo_t or law["a_low"] > hi_t:
        holds, ok, reason = False, True, ""
    else:
        holds, ok, reason = False, False, f"the interval [{law['a_low']:.3g}, {law['a_high']:.3g}] straddles " \
                                          f"[{lo_t:g}, {hi_t:g}]"
    details = {"a": law["a"], "n": law["n"], "slope": c["slope"], "slope_low": c["slope_low"],
               "slope_high": c["slope_high"], "reference_a": a, "reason": reason, **sample}
    details["n"] = law["n"]
    return Claim(f"sqrt_law_{error}", bool(holds), law["a"], a, details, testable=ok,
                 rule=f"fit of a in {error} = a sqrt({quantity}): 95 % interval within [{lo_t:g}, {hi_t:g}]; "
                      f">= {min_networks} nets, most not near chance",
                 statement=f"The test error follows eps_t = {a:g} sqrt(R_f) (2021 paper)",
                 ci_low=law["a_low"], ci_high=law["a_high"])


def error_correlation_by_noise(output: pd.DataFrame, quantity: str = "R_f", error: str | None = None,
                               min_r: float = 0.5, **kw) -> dict[float, Claim]:
    """:func:`claim_error_correlation` at each training noise level (``noise_std``) of noise-trained
    nets (> 0): the paper's statement that R_f still tracks the test error with noisy training. ``error``
    defaults to :func:`stabkit.report.fidelity.task_error_column`."""
    require_columns(output, ["noise_std"], "output")
    error = error or task_error_column(output)
    levels = sorted(float(v) for v in output["noise_std"].dropna().unique() if v > 0)
    return {lv: claim_error_correlation(output, quantity, error, min_r, noise_std=lv, **kw) for lv in levels}


def claim_error_correlation_noisy(output: pd.DataFrame, quantity: str = "R_f", error: str | None = None,
                                  min_r: float = 0.5, **kw) -> Claim:
    """R_f tracks the test error at every training noise level > 0 (:func:`error_correlation_by_noise`):
    holds when every testable level holds (at least one), does not hold when a testable level does not,
    "cannot be tested at this scale" when no level is testable. ``value`` = the smallest r over
    testable levels; details ``r@<level>`` and ``verdict@<level>``."""
    per = error_correlation_by_noise(output, quantity, error, min_r, **kw)
    testable = {lv: c for lv, c in per.items() if c.testable}
    details: dict = {}
    for lv, c in per.items():
        details[f"r@{lv:g}"] = c.value
        details[f"verdict@{lv:g}"] = c.verdict
    details["n"] = int(sum(c.details.get("n", 0) for c in per.values()))  # nets over all levels
    details["n_levels"] = len(per)
    details["n_testable"] = len(testable)
    value = min((c.value for c in testable.values()), default=float("nan"))
    holds = bool(testable) and all(c.holds for c in testable.values())
    return Claim("error_correlation_each_noise", holds, value, min_r, details, testable=bool(testable),
                 rule=f"at every training noise level > 0: r(log {quantity}, log error) >= {min_r:g} with its 95 % "
                      f"bootstrap interval (levels with too few nets, nets near chance or an interval spanning "
                      f"{min_r:g} are not testable)",
                 statement="With noise-corrupted training, R_f still tracks the test error at each noise level")


def claim_gf_grows(output: pd.DataFrame, quantity: str = "G_f", clean_only: bool = True, probes: str = "paper",
                   **where) -> Claim:
    """"G_f grows with training", stated for networks trained without corruption (``clean_only``: rows
    with ``noise_std == 0`` when the table has the column; training on noise larger than the probe noise
    is noise augmentation, where a lower G_f is expected: :func:`claim_gf_falls_with_noise`). The mean of
    ``log10(G_f trained / init)`` and its 95 % bootstrap interval lie above 0. ``value`` = the geometric
    mean ratio; "cannot be tested" with fewer than 3 runs or an interval spanning 1."""
    rows = paper_rows(output, probes)
    restriction = "all networks"
    if clean_only and "noise_std" in rows.columns:
        rows = rows[rows["noise_std"] == 0]
        restriction = "networks trained without corruption (noise_std = 0)"
    c = _trained_ratio_claim(f"{quantity}_grows", rows, quantity, 0.0, False,
                             f"{restriction}: mean log10({quantity} trained / init) > 0, 95 % bootstrap interval "
                             f"above it (>= 3 runs)", "G_f grows with training", restriction, **where)
    return Claim(c.name, c.holds, c.details["geomean"], 1.0, c.details, c.testable, c.rule, c.statement,
                 10 ** c.ci_low, 10 ** c.ci_high)


def claim_gf_falls_with_noise(output: pd.DataFrame, quantity: str = "G_f", probes: str = "paper",
                              min_networks: int = MIN_NETWORKS, **where) -> Claim:
    """Noise-trained networks: G_f after training falls as the training noise grows (training on noise is
    noise augmentation). Pearson r of ``log10 G_f`` (trained) against ``log10 noise_std`` over nets with
    ``noise_std > 0``, with its bootstrap interval: holds when the interval lies below 0. The table
    behind it: :func:`stabkit.report.fidelity.gf_by_noise`."""
    require_columns(output, [quantity, "state", "noise_std"], "output")
    rows = select(paper_rows(output, probes), state="trained", shuffle=0, **where)
    rows = rows[rows["noise_std"] > 0]
    c = log_correlation(rows["noise_std"], rows[quantity])
    holds, ok, reason = interval_decision(c["r"], c["r_low"], c["r_high"], 0.0, above=False)
    levels = int(rows["noise_std"].nunique())
    if c["n"] < min_networks or levels < 2:
        holds, ok, reason = False, False, f"{c['n']} nets over {levels} noise level(s) (need {min_networks}, 2)"
    return Claim(f"{quantity}_falls_with_noise", bool(holds and c["r"] < 0), c["r"], 0.0,
                 {"r": c["r"], "slope": c["slope"], "n": c["n"], "levels": levels, "reason": reason}, testable=ok,
                 rule=f"r(log noise_std, log {quantity} trained) < 0 with its 95 % bootstrap interval "
                      f"(noise_std > 0, >= {min_networks} nets, >= 2 levels)",
                 statement="Training on larger noise lowers G_f (noise augmentation)",
                 ci_low=c["r_low"], ci_high=c["r_high"])


def _half(gaps: pd.DataFrame, half: str, col: str = "gap") -> float:
    g = gaps[gaps["half"] == half]
    if g.empty:
        return float("nan")
    return float(np.average(g[col], weights=g["n"]))


def claim_channel_pooling_second_half(layers: pd.DataFrame, quantity: str = "R_f",
                                      margin: float = 0.3, split: float = 0.5, probes: str = "paper",
                                      relu_convention: str = "true", **where) -> Claim:
    """Fig. 3: "channel pooling in the second half": shuffling raises R_k by at least ``margin``
    decades more in the second half than in the first, and the first-half gap stays below ``margin``.
    ``value`` = second-half gap minus first-half gap (decades, pooled over nets)."""
    layers = paper_rows(layers, probes, relu_convention)
    gaps = shuffle_gap(layers, quantity, split=split, by=(), **where)
    first, second = _half(gaps, "first"), _half(gaps, "second")
    diff = second - first
    holds = bool(np.isfinite(diff) and diff >= margin and abs(first) < margin)
    per_net = shuffle_gap(layers, quantity, split=split, by=("net",), **where)
    details = {"first": first, "second": second, "margin": margin}
    for _, r in per_net.iterrows():
        if "net" in per_net.columns:
            details[f"{r['net']}:{r['half']}"] = float(r["gap"])
    return Claim("channel_pooling_second_half", holds, diff, margin, details,
                 testable=bool(np.isfinite(diff)),
                 rule=f"shuffling gap of {quantity}: second half - first half >= {margin:g} decades, "
                      f"|first half| < {margin:g}",
                 statement="Channel pooling happens in the second half of the network")


def claim_spatial_pooling_first_half(layers: pd.DataFrame, quantity: str = "R_f", margin: float = 0.3,
                                     split: float = 0.5, shuffled: int = 1, probes: str = "paper",
                                     relu_convention: str = "true", **where) -> Claim:
    """Fig. 3: "spatial pooling in the first half": by mid-depth, training has already lowered R_k by at
    least ``margin`` decades, **also with shuffled channels** (spatial pooling survives shuffling).
    ``value`` = the mid-depth change of the shuffled nets (decades, all nets pooled); details give the
    unshuffled change too."""
    layers = paper_rows(layers, probes, relu_convention)
    sh = mid_depth_change(layers, quantity, split, shuffle=shuffled, by=(), **where)
    un = mid_depth_change(layers, quantity, split, shuffle=0, by=(), **where)
    v_sh = float(sh["decades"].iloc[0]) if len(sh) else float("nan")
    v_un = float(un["decades"].iloc[0]) if len(un) else float("nan")
    holds = bool(np.isfinite(v_sh) and v_sh <= -margin)
    return Claim("spatial_pooling_first_half", holds, v_sh, -margin,
                 {"shuffled": v_sh, "unshuffled": v_un, "margin": margin}, testable=bool(np.isfinite(v_sh)),
                 rule=f"mid-depth change of shuffled {quantity} with training <= {-margin:g} decades",
                 statement="Spatial pooling happens in the first half of the network")


def claim_shuffle_no_effect(layers: pd.DataFrame, quantity: str = "R_f", tolerance: float = 0.3,
                            split: float = 0.5, probes: str = "paper", relu_convention: str = "true",
                            **where) -> Claim:
    """Fig. 6: "shuffling changes nothing", tested layer by layer: for every net and layer, the shuffled /
    unshuffled gap of ``quantity`` (decades, mean over runs) is below ``tolerance`` in absolute value.
    ``value`` = the largest ``|gap|``; details: the worst net and layer with the D_k and G_k parts of its gap
    (``worst_D``, ``worst_G``: gaps of D_f and G_f; ``gap_R = gap_D - gap_G``), the number of layers
    over the tolerance, and the mean ``|gap|`` of each half (``first``, ``second``, as before)."""
    layers = paper_rows(layers, probes, relu_convention)
    parts = [q for q in (quantity, "D_f", "G_f") if q in layers.columns]
    gaps = layer_shuffle_gaps(layers, list(dict.fromkeys(parts)), **where)
    col = f"gap_{quantity}"
    g = gaps.dropna(subset=[col]) if col in gaps.columns else gaps
    halves = shuffle_gap(layers, quantity, split=split, by=(), **where)
    details: dict = {"first": _half(halves, "first", "abs_gap"), "second": _half(halves, "second", "abs_gap"),
                     "tolerance": tolerance}
    if g.empty:
        return Claim("shuffle_no_effect", False, float("nan"), tolerance, details, testable=False,
                     rule=f"|shuffling gap of {quantity}| < {tolerance:g} decades at every layer of every net",
                     statement="Shuffling channels changes nothing on scale detection")
    worst = g.loc[g[col].abs().idxmax()]
    value = float(abs(worst[col]))
    details.update({"worst_layer": str(worst["layer"]), "worst_rel_depth": float(worst["rel_depth"]),
                    "worst_gap": float(worst[col]), "worst_D": float(worst.get("gap_D_f", np.nan)),
                    "worst_G": float(worst.get("gap_G_f", np.nan)),
                    "n_over": int((g[col].abs() >= tolerance).sum()), "n_layers": int(len(g))})
    if "net" in g.columns:
        details["worst_net"] = str(worst["net"])
    return Claim("shuffle_no_effect", bool(value < tolerance), value, tolerance, details, testable=True,
                 rule=f"|shuffling gap of {quantity}| < {tolerance:g} decades at every layer of every net "
                      f"(D_k and G_k parts reported)",
                 statement="Shuffling channels changes nothing on scale detection")


def claim_spectra_concentrate(spectra: pd.DataFrame, early: float = 0.5, factor: float = 1.5,
                              flat_tolerance: float = 0.5, **where) -> Claim:
    """Fig. 2: "trained early-layer filters concentrate on eigenvalue 0, flat spectrum at init".

    Over conv layers with ``rel_depth <= early``: the mean energy fraction at eigenvalue 0 after training
    is at least ``factor`` times the one at initialisation, and at initialisation it is within
    ``flat_tolerance`` (relative) of the flat value ``1/k^2``. ``value`` = trained / init fraction.
    """
    z = zero_mode_fraction(spectra, by=(), **where)
    z = z[z["rel_depth"] <= early]
    tr = z.loc[z["state"] == "trained", "fraction"].mean()
    ini = z.loc[z["state"] == "init", "fraction"].mean()
    flat = z.loc[z["state"] == "init", "flat"].mean()
    ratio = float(tr / ini) if ini and np.isfinite(ini) else float("nan")
    flat_ok = bool(np.isfinite(flat) and abs(ini / flat - 1) <= flat_tolerance) if np.isfinite(ini) else False
    holds = bool(np.isfinite(ratio) and ratio >= factor and flat_ok)
    return Claim("spectra_concentrate", holds, ratio, factor,
                 {"trained": float(tr), "init": float(ini), "flat": float(flat), "flat_ok": flat_ok},
                 testable=bool(np.isfinite(ratio)),
                 rule=f"early layers: fraction at lambda=0 trained / init >= {factor:g}, init within "
                      f"{flat_tolerance:.0%} of 1/k^2",
                 statement="Trained early-layer filters concentrate on the constant filter")


