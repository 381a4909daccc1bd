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

from .analysis import mid_depth_change, ratio_stats, require_columns, run_columns, select, shuffle_gap, \
    trained_over_init, zero_mode_fraction
from .fidelity import (CONVERGENCE_RULE, FALLS_MAX_ERROR, layer_shuffle_gaps, paper_rows, task_error_column, well_trained_cnns,
                       well_trained_rule)
from .probe_claims import (claim_mask_falls, claim_nv_in_reference_range, claim_nv_tracks_rk,
                           claim_patch_shuffle_chance, claim_patch_shuffle_falls, claim_patch_shuffle_k2,
                           claim_rotation_flattens_accuracy, claim_rotation_lowers_nv, claim_saliency_first,
                           claim_stratified_raises_nv, claim_transfer_loses, claim_transfer_loss_size,
                           nv_rk_correlations)
from .stats import (MIN_NETWORKS, MIN_UNITS, NEAR_CHANCE, SQRT_LAW_A, chance_error, cluster_labels, floor_errors,
                    interval_decision, log_correlation, mean_ci, power_law_fit, sample_decision, sqrt_law_fit,
                    t_quantile_95, test_set_sizes)
from .verdicts import FAILS, HOLDS, UNTESTABLE, Claim, claims_table, verdict, verdict_counts

__all__ = [
    "HOLDS", "FAILS", "UNTESTABLE", "Claim", "verdict", "claims_table", "verdict_counts",
    # figure pages
    "claim_rf_falls", "claim_rf_init_order_one", "claim_error_correlation", "claim_gf_grows",
    "claim_channel_pooling_second_half", "claim_spatial_pooling_first_half", "claim_shuffle_no_effect",
    "claim_spectra_concentrate", "claim_sqrt_law", "error_correlation_by_noise", "claim_error_correlation_noisy",
    "claim_gf_falls_with_noise", "claim_df_falls", "claim_gf_grows_noisy", "per_net_text", "brief", "SHORT_VERDICTS", "output_fall", "MIN_OUTPUT_FALL",
    # probe pages (stabkit.report.probe_claims)
    "claim_mask_falls", "claim_saliency_first", "claim_patch_shuffle_falls", "claim_patch_shuffle_k2",
    "claim_patch_shuffle_chance", "claim_transfer_loses", "claim_transfer_loss_size",
    "claim_rotation_lowers_nv", "claim_nv_in_reference_range", "claim_stratified_raises_nv",
    "claim_rotation_flattens_accuracy", "claim_nv_tracks_rk", "nv_rk_correlations",
]


# ---------------------------------------------------------------------------------------------- claims
def _per_net_ratio(ratios: pd.DataFrame, threshold: float, below: bool) -> dict[str, dict]:
    """Per architecture: mean log10(trained / init) over its runs, its t interval over runs (``n - 1``
    degrees of freedom; none with one run) and its own verdict against ``threshold``."""
    out: dict[str, dict] = {}
    if "net" not in ratios.columns:
        return out
    for net, g in ratios.groupby("net"):
        d = g["decades"].to_numpy(dtype=np.float64)
        d = d[np.isfinite(d)]
        if d.size == 0:
            continue
        m = float(d.mean())
        if d.size >= 2:
            h = t_quantile_95(d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
            lo, hi = m - h, m + h
        else:
            lo = hi = float("nan")
        holds, ok, _ = interval_decision(m, lo, hi, threshold, above=not below)
        out[str(net)] = {"decades": m, "low": lo, "high": hi, "n": int(d.size), "verdict": verdict(holds, ok)}
    return out


#: Verdicts in a list of many (each phrase once per sentence: "cannot be tested at this scale" is long).
SHORT_VERDICTS = {HOLDS: "holds", FAILS: "does not hold", UNTESTABLE: "cannot be tested"}


def _num(v, fmt: str = ".2f") -> str:
    """``v`` formatted, or an en dash for a missing number (never "nan" on a page)."""
    return format(v, fmt) if isinstance(v, (int, float, np.floating)) and np.isfinite(v) else "\u2013"


def brief(claim: Claim, symbol: str = "r") -> str:
    """One claim in a few words for a list: ``"r = 0.78 [-0.06, 0.98], n = 6 (6 architectures), cannot be
    tested"`` (missing numbers as an en dash, the short verdict)."""
    n = claim.details.get("n")
    units = claim.details.get("n_units")
    sample = f", n = {n}" + (f" ({units} architectures)" if units is not None else "") if n is not None else ""
    return (f"{symbol} = {_num(claim.value)} [{_num(claim.ci_low)}, {_num(claim.ci_high)}]{sample}, "
            f"{SHORT_VERDICTS.get(claim.verdict, claim.verdict)}")


def per_net_text(claim: Claim) -> str:
    """The per-architecture verdicts of a pooled claim, in words: ``"AlexNet -0.47 decades (does not
    hold); VGG11bn -2.69 decades (holds)"`` (``"none"`` without them)."""
    parts = []
    for key, v in claim.details.items():
        if isinstance(key, str) and key.startswith("verdict:"):
            net = key.split(":", 1)[1]
            dec = claim.details.get(f"decades:{net}", claim.details.get(f"{net}:shuffled"))
            num = f" {dec:+.2f} decades" if isinstance(dec, (int, float)) and np.isfinite(dec) else ""
            parts.append(f"{net}{num} ({SHORT_VERDICTS.get(v, v)})")
    return "; ".join(parts) if parts else "none"


def _trained_ratio_claim(name: str, output: pd.DataFrame, quantity: str, threshold_decades: float, below: bool,
                         rule: str, statement: str, restriction: str, **where) -> Claim:
    """A "trained / init" claim: mean over runs of log10(trained / init) with a 95 % interval over
    architectures (:func:`stabkit.report.stats.mean_ci` with clusters), compared with
    ``threshold_decades`` (``below``: the claim is "<="); at least 3 runs and :data:`~stabkit.report.stats.MIN_UNITS`
    architectures. Beside the pooled verdict, every architecture gets its own (``verdict:<net>``,
    ``decades:<net>``, t interval over its seeds): one architecture that testably goes the other way makes
    the claim "does not hold" whatever the pooled interval (the paper states it for every such network)."""
    ratios = trained_over_init(output, quantity, **where)
    if "net" not in ratios.columns and "net" in output.columns and "run" in ratios.columns:
        ratios = ratios.merge(output[["run", "net"]].drop_duplicates("run"), on="run", how="left")
    st = ratio_stats(ratios["ratio"])
    dec = ratios["decades"].to_numpy(dtype=np.float64)
    ok_rows = np.isfinite(dec)
    clusters = cluster_labels(ratios)
    mean, lo, hi = mean_ci(dec[ok_rows], clusters=None if clusters is None else clusters[ok_rows])
    holds, ok, reason = interval_decision(mean, lo, hi, threshold_decades, above=not below)
    n_units = int(ratios.loc[ok_rows, "net"].nunique()) if "net" in ratios.columns else int(ok_rows.sum())
    per_net = _per_net_ratio(ratios, threshold_decades, below)
    against = [n for n, v in per_net.items() if v["verdict"] == FAILS]
    if against and st["n"] >= 3:
        # a statement about every such network is refuted by one architecture that testably goes the
        # other way, whatever the pooled interval says
        pooled = "holds pooled" if holds else ("pooled: does not hold" if ok else "pooled: cannot be tested")
        holds, ok = False, True
        worst = ", ".join(f"{n} ({per_net[n]['decades']:+.2f} decades)" for n in against)
        reason = f"{pooled}; not for {worst}"
    if st["n"] < 3 or n_units < MIN_UNITS:
        holds, ok = False, False
        reason = (f"no run qualifies ({restriction})" if st["n"] == 0 else
                  f"{st['n']} runs of {n_units} architecture(s) (need 3 runs of {MIN_UNITS} architectures)")
    details = {**st, "n_units": n_units, "threshold_decades": threshold_decades, "restricted_to": restriction,
               "reason": reason, "against": ", ".join(against)}
    for net, v in per_net.items():
        details[f"decades:{net}"] = v["decades"]
        details[f"verdict:{net}"] = v["verdict"]
    return Claim(name, holds, st["decades"], threshold_decades, details, testable=ok, rule=rule,
                 statement=statement, ci_low=lo, ci_high=hi)


def claim_rf_falls(output: pd.DataFrame, decades: float = 1.0, quantity: str = "R_f", restrict: bool = True,
                   max_error: float = FALLS_MAX_ERROR, probes: str = "paper", **where) -> Claim:
    """"R_f falls by decades with training", stated by the paper for CNNs that train well.

    Testability precondition: only networks that can show it count (``restrict``:
    :func:`stabkit.report.fidelity.well_trained_cnns`: CNNs, test error below ``max_error`` (10 %: above
    it the paper's own law puts R_f of order one) and, where the table has them, the convergence columns
    of :func:`stabkit.report.fidelity.with_convergence`); fewer than 3 such runs of 3 architectures:
    "cannot be tested at this scale", with the reason. Over those runs the mean of ``log10(R_f trained /
    init)`` and its 95 % interval over architectures lie at or below ``-decades``, and no architecture
    testably stays above it. ``value`` = log10 of the geometric mean ratio."""
    rows = paper_rows(output, probes)
    restriction = "all networks"
    if restrict:
        rows = well_trained_cnns(rows, max_error=max_error)
        restriction = well_trained_rule(max_error) + (", well trained (last epoch within 2 points of the best, "
                                                      "training error fell)" if "well_trained" in output.columns
                                                      else "")
    c = _trained_ratio_claim(f"{quantity}_falls", rows, quantity, -decades, True,
                             f"precondition: {restriction}, at least 3 runs of {MIN_UNITS} architectures; then mean "
                             f"log10({quantity} trained / init) <= {-decades:g} with its 95 % interval over "
                             f"architectures, and no architecture testably above it",
                             "R_f falls by decades with training (CNNs that train well)", restriction, **where)
    if restrict and not c.testable and c.details.get("n", 0) < 3:
        errs = select(paper_rows(output, probes), state="trained", shuffle=0)
        col = task_error_column(errs)
        best = float(errs[col].min()) if col in errs.columns and len(errs) else float("nan")
        why = (f"{c.details.get('n', 0)} runs satisfy the precondition (need 3): the best network here has "
               f"{100 * best:.1f} % test error (the claim needs below {100 * max_error:g} %, where the paper's "
               f"law lets R_f fall by decades)") if np.isfinite(best) else "no trained network"
        c = Claim(c.name, False, c.value, c.threshold, {**c.details, "reason": why}, False, c.rule, c.statement,
                  c.ci_low, c.ci_high)
    return c


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


def _error_rows(output: pd.DataFrame, error: str, shuffle: int | None, probes: str,
                **where) -> tuple[pd.DataFrame, dict]:
    """Trained rows for a correlation with the test error: runs that are not well trained (the
    convergence columns of :func:`stabkit.report.fidelity.with_convergence`: their best checkpoint is
    a test-set-selected excursion) left out and listed; zero errors floored at ``1 / (2 N_test)`` and
    counted (:func:`stabkit.report.stats.floor_errors`)."""
    rows = select(paper_rows(output, probes), state="trained", shuffle=shuffle, **where)
    info: dict = {"excluded": "", "n_excluded": 0}
    if "well_trained" in rows.columns:
        bad = rows[~rows["well_trained"].fillna(True).astype(bool)]
        if len(bad):
            names = bad[[c for c in ("net", "seed") if c in bad.columns]].drop_duplicates()
            info["excluded"] = ", ".join(" seed ".join(str(v) for v in r) for r in names.itertuples(index=False))
            info["n_excluded"] = int(len(names))
        rows = rows[rows["well_trained"].fillna(True).astype(bool)]
    err, n_floored = floor_errors(rows[error], test_set_sizes(rows))
    rows = rows.assign(**{error: err})
    info["n_floored"] = n_floored
    return rows, info


def claim_error_correlation(output: pd.DataFrame, quantity: str = "R_f", error: str = "test_err",
                            min_r: float = 0.5, shuffle: int | None = 0, probes: str = "paper",
                            min_networks: int = MIN_NETWORKS, chance: float | None = None, **where) -> Claim:
    """"R_f correlates with test error": Pearson correlation r of log10 error and log10 R_f over trained,
    well-trained nets (collapsed or unconverged runs are left out and listed in ``excluded``; zero errors
    floored at ``1 / (2 N_test)``, counted in ``n_floored``), with a 95 % interval fit for a few
    architectures (:func:`stabkit.report.stats.log_correlation`: cluster bootstrap over architectures and
    Fisher's interval with n = architectures); holds when the interval lies above ``min_r`` (and the
    slope is positive), does not hold when it lies below; "cannot be tested at this scale" with fewer
    than ``min_networks`` nets or :data:`~stabkit.report.stats.MIN_UNITS` architectures, when most nets are near chance (error
    >= 0.9 x ``chance``) or when the interval spans ``min_r``. ``value`` = r; details: slope (and interval),
    the free law ``err = a R_f^b`` with intervals of ``a`` and ``b``, ``n`` (nets), ``n_units``
    (architectures)."""
    require_columns(output, [quantity, error, "state"], "output")
    rows, info = _error_rows(output, error, shuffle, probes, **where)
    chance = chance_error(rows) if chance is None else chance
    clusters = cluster_labels(rows)
    c = log_correlation(rows[quantity], rows[error], clusters=clusters)
    law = power_law_fit(rows[quantity], rows[error], clusters=clusters)
    ok_n, why, sample = sample_decision(c["n"], rows[error], chance, min_networks)
    holds, ok, reason = interval_decision(c["r"], c["r_low"], c["r_high"], min_r)
    holds = holds and np.isfinite(c["slope"]) and c["slope"] > 0
    if not ok_n:
        holds, ok, reason = False, False, why
    elif c["n_units"] < MIN_UNITS + 1:
        holds, ok, reason = False, False, f"{c['n_units']} architectures (too few for an interval: need " \
                                          f"{MIN_UNITS + 1})"
    details = {"r": c["r"], "slope": c["slope"], "slope_low": c["slope_low"], "slope_high": c["slope_high"],
               "a": law["a"], "a_low": law["a_low"], "a_high": law["a_high"], "b": law["b"],
               "b_low": law["b_low"], "b_high": law["b_high"], "reason": reason, **sample, **info,
               "n": c["n"], "n_units": c["n_units"]}
    return Claim(f"{error}_vs_{quantity}", bool(holds), c["r"], min_r, details, testable=ok,
                 rule=f"r(log {quantity}, log {error}) >= {min_r:g} with its 95 % interval (cluster bootstrap over "
                      f"architectures and Fisher's interval with n = architectures), slope > 0; >= {min_networks} "
                      f"well-trained nets of >= {MIN_UNITS + 1} architectures, most not near chance (error < "
                      f"{NEAR_CHANCE:g} x chance)",
                 statement=_CORR, ci_low=c["r_low"], ci_high=c["r_high"])


def claim_sqrt_law(output: pd.DataFrame, quantity: str = "R_f", error: str = "test_err", a: float = SQRT_LAW_A,
                   b: float = 0.5, factor: float = 2.0, shuffle: int | None = 0, probes: str = "paper",
                   min_networks: int = MIN_NETWORKS, chance: float | None = None, **where) -> Claim:
    """The 2021 law ``eps_t = a sqrt(R_f)`` (``a`` about 0.2), tested as a free fit ``eps_t = a R_f^b``
    (:func:`stabkit.report.stats.power_law_fit`, intervals over architectures) over well-trained nets:
    holds when the interval of the exponent contains ``b`` (1/2) and the interval of ``a`` with the
    exponent fixed at ``b`` lies within a ``factor`` of ``a`` (0.1-0.4); does not hold when the exponent's
    interval excludes ``b`` or ``a``'s lies outside; else (or with too few nets / architectures, or nets
    near chance) "cannot be tested at this scale". ``value`` = the free exponent ``b``; details: ``a``
    (free and fixed-exponent) with intervals, ``n``, ``n_units``, ``n_floored``."""
    require_columns(output, [quantity, error, "state"], "output")
    rows, info = _error_rows(output, error, shuffle, probes, **where)
    chance = chance_error(rows) if chance is None else chance
    clusters = cluster_labels(rows)
    free = power_law_fit(rows[quantity], rows[error], clusters=clusters)
    fixed = sqrt_law_fit(rows[quantity], rows[error])
    lo_t, hi_t = a / factor, a * factor
    ok_n, why, sample = sample_decision(free["n"], rows[error], chance, min_networks)
    b_ok = np.isfinite(free["b_low"]) and np.isfinite(free["b_high"])
    if not ok_n:
        holds, ok, reason = False, False, why
    elif not b_ok or not (np.isfinite(fixed["a_low"]) and np.isfinite(fixed["a_high"])):
        holds, ok, reason = False, False, f"no confidence interval ({free['n_units']} architectures)"
    elif free["b_high"] < b or free["b_low"] > b:
        holds, ok, reason = False, True, f"the exponent's interval [{free['b_low']:.2f}, {free['b_high']:.2f}] " \
                                         f"excludes {b:g}"
    elif fixed["a_high"] < lo_t or fixed["a_low"] > hi_t:
        holds, ok, reason = False, True, f"a's interval lies outside [{lo_t:g}, {hi_t:g}]"
    elif lo_t <= fixed["a_low"] and fixed["a_high"] <= hi_t:
        holds, ok, reason = True, True, ""
    else:
        holds, ok, reason = False, False, f"a's interval [{fixed['a_low']:.3g}, {fixed['a_high']:.3g}] straddles " \
                                          f"[{lo_t:g}, {hi_t:g}]"
    details = {"b": free["b"], "b_low": free["b_low"], "b_high": free["b_high"], "a_free": free["a"],
               "a_free_low": free["a_low"], "a_free_high": free["a_high"], "a": fixed["a"],
               "a_low": fixed["a_low"], "a_high": fixed["a_high"], "reference_a": a, "reference_b": b,
               "reason": reason, **sample, **info, "n": free["n"], "n_units": free["n_units"]}
    return Claim(f"sqrt_law_{error}", bool(holds), free["b"], b, details, testable=ok,
                 rule=f"free fit {error} = a {quantity}^b over well-trained nets: the 95 % interval of b (over "
                      f"architectures) contains {b:g} and, with b = {b:g}, a's interval lies within "
                      f"[{lo_t:g}, {hi_t:g}]; >= {min_networks} nets, most not near chance",
                 statement=f"The test error follows eps_t = {a:g} sqrt(R_f) (2021 paper)",
                 ci_low=free["b_low"], ci_high=free["b_high"])


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
    if "well_trained" in rows.columns:  # a collapsed run is measured on a test-set-selected excursion
        rows = rows[rows["well_trained"].fillna(True).astype(bool)]
        restriction += ", well trained"
    c = _trained_ratio_claim(f"{quantity}_grows", rows, quantity, 0.0, False,
                             f"{restriction}: mean log10({quantity} trained / init) > 0 with its 95 % interval "
                             f"over architectures (>= 3 runs of {MIN_UNITS} architectures), and no architecture "
                             f"testably below it", "G_f grows with training", restriction, **where)
    details = dict(c.details)
    if str(details.get("reason", "")).startswith("the interval"):  # decades -> the factor the value is in
        details["reason"] = f"the interval [{10 ** c.ci_low:.3g}, {10 ** c.ci_high:.3g}] of the factor spans 1"
    return Claim(c.name, c.holds, c.details["geomean"], 1.0, details, c.testable, c.rule, c.statement,
                 10 ** c.ci_low, 10 ** c.ci_high)


def claim_df_falls(output: pd.DataFrame, quantity: str = "D_f", clean_only: bool = True, probes: str = "paper",
                   **where) -> Claim:
    """"D_f falls with training" (the paper: trained networks become less sensitive to diffeomorphisms
    relative to the spread of their outputs): over well-trained runs (networks trained without corruption
    with ``clean_only``), the mean of ``log10(D_f trained / init)`` and its 95 % interval over
    architectures lie below 0, and no architecture testably above. ``value`` = log10 of the geometric
    mean ratio (decades)."""
    rows = paper_rows(output, probes)
    restriction = "all networks"
    if clean_only and "noise_std" in rows.columns:
        rows = rows[rows["noise_std"] == 0]
        restriction = "networks trained without corruption (noise_std = 0)"
    if "well_trained" in rows.columns:
        rows = rows[rows["well_trained"].fillna(True).astype(bool)]
        restriction += ", well trained"
    return _trained_ratio_claim(f"{quantity}_falls", rows, quantity, 0.0, True,
                                f"{restriction}: mean log10({quantity} trained / init) < 0 with its 95 % interval "
                                f"over architectures (>= 3 runs of {MIN_UNITS} architectures), and no architecture "
                                f"testably above it", "D_f falls with training", restriction, **where)


def claim_gf_grows_noisy(output: pd.DataFrame, quantity: str = "G_f", probes: str = "paper", **where) -> Claim:
    """"G_f grows with training", stated in the paper's abstract also for networks trained on noisy
    images: :func:`claim_gf_grows` over the runs with ``noise_std > 0`` (measured, as in the paper, on
    their own corrupted images). "cannot be tested at this scale" without such runs."""
    require_columns(output, ["noise_std"], "output")
    c = claim_gf_grows(output[output["noise_std"] > 0], quantity, clean_only=False, probes=probes, **where)
    return Claim("G_f_grows_noisy", c.holds, c.value, c.threshold, c.details, c.testable,
                 c.rule.replace("all networks", "networks trained on noisy images (noise_std > 0)"),
                 "G_f grows with training, also with noise-corrupted training", c.ci_low, c.ci_high)


def claim_gf_falls_with_noise(output: pd.DataFrame, quantity: str = "G_f", probes: str = "paper",
                              min_networks: int = MIN_NETWORKS, **where) -> Claim:
    """Noise-trained networks: G_f after training falls as the training noise grows (training on noise is
    noise augmentation). Pearson r of ``log10 G_f`` (trained) against ``log10 noise_std`` over nets with
    ``noise_std > 0``, with its bootstrap interval: holds when the interval lies below 0. The table
    behind it: :func:`stabkit.report.fidelity.gf_by_noise`. This project's hypothesis, not a statement of
    the paper (``details["source"]``)."""
    require_columns(output, [quantity, "state", "noise_std"], "output")
    rows = select(paper_rows(output, probes), state="trained", shuffle=0, **where)
    rows = rows[rows["noise_std"] > 0]
    c = log_correlation(rows["noise_std"], rows[quantity], clusters=cluster_labels(rows))
    holds, ok, reason = interval_decision(c["r"], c["r_low"], c["r_high"], 0.0, above=False)
    levels = int(rows["noise_std"].nunique())
    if c["n"] < min_networks or levels < 2:
        holds, ok, reason = False, False, f"{c['n']} nets over {levels} noise level(s) (need {min_networks}, 2)"
    return Claim(f"{quantity}_falls_with_noise", bool(holds and c["r"] < 0), c["r"], 0.0,
                 {"r": c["r"], "slope": c["slope"], "n": c["n"], "n_units": c["n_units"], "levels": levels,
                  "reason": reason, "source": "this project's hypothesis"}, testable=ok,
                 rule=f"r(log noise_std, log {quantity} trained) < 0 with its 95 % bootstrap interval "
                      f"(noise_std > 0, >= {min_networks} nets, >= 2 levels)",
                 statement="Training on larger noise lowers G_f (noise augmentation; this project's hypothesis, "
                           "not the paper's)",
                 ci_low=c["r_low"], ci_high=c["r_high"])


def _half(gaps: pd.DataFrame, half: str, col: str = "gap") -> float:
    g = gaps[gaps["half"] == half]
    if g.empty:
        return float("nan")
    return float(np.average(g[col], weights=g["n"]))


def _well_trained_rows(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without the runs that are not well trained, where it carries the convergence columns
    (:func:`stabkit.report.fidelity.with_convergence`); unchanged otherwise."""
    if "well_trained" not in df.columns:
        return df
    return df[df["well_trained"].fillna(True).astype(bool)]


#: Fig. 3 / Fig. 6 precondition: the networks must have learnt to pool at all (their output R_f fell at
#: least this many decades with training) before the depth at which they pool can be located.
MIN_OUTPUT_FALL = 0.5


def output_fall(layers: pd.DataFrame, quantity: str = "R_f", **where) -> float:
    """Mean over runs of ``log10(quantity trained / init)`` at each run's deepest layer (the output), with
    shuffle 0 (decades; nan without both states)."""
    d = mid_depth_change(layers, quantity, split=1.0, shuffle=0, by=(), **where)
    return float(d["decades"].iloc[0]) if len(d) else float("nan")


def _pooling_precondition(layers: pd.DataFrame, quantity: str, min_fall: float, **where) -> tuple[bool, str, float]:
    """``(ok, reason, fall)``: the Fig. 3 / Fig. 6 testability precondition (output ``quantity`` fell at
    least ``min_fall`` decades, mean over runs)."""
    fall = output_fall(layers, quantity, **where)
    if not np.isfinite(fall):
        return False, ("no run measured both at initialisation and after training (runs that are not well "
                       "trained are left out)"), fall
    if fall > -min_fall:
        moved = f"fell {-fall:.2f}" if fall < 0 else f"rose {fall:.2f}"
        return False, (f"the output {quantity} {moved} decades with training (the precondition needs a fall of at "
                       f"least {min_fall:g}: nets that barely pool cannot show where they pool)"), fall
    return True, "", fall


def _halves_parts(layers: pd.DataFrame, split: float, **where) -> dict[str, float]:
    """Shuffling gaps of D_f and G_f in each half (decades; gap_R = gap_D - gap_G): where a gap comes
    from, the numerator D_k (spatial) or the denominator G_k (which batch-norm statistics also move)."""
    out: dict[str, float] = {}
    for q, tag in (("D_f", "D"), ("G_f", "G")):
        if q in layers.columns:
            h = shuffle_gap(layers, q, split=split, by=(), **where)
            out[f"first_{tag}"] = _half(h, "first")
            out[f"second_{tag}"] = _half(h, "second")
    return out


def claim_channel_pooling_second_half(layers: pd.DataFrame, quantity: str = "R_f",
                                      margin: float = 0.3, split: float = 0.5, probes: str = "paper",
                                      relu_convention: str = "true", min_fall: float = MIN_OUTPUT_FALL,
                                      **where) -> Claim:
    """Fig. 3: "channel pooling in the second half": shuffling raises R_k by at least ``margin``
    decades more in the second half than in the first, and the first-half gap stays below ``margin``.

    Precondition (else "cannot be tested at this scale"): the output R_f fell at least ``min_fall``
    decades with training. ``value`` = second-half gap minus first-half gap (decades, pooled over
    nets); details: the D_k and G_k parts of each half's gap (``first_D``, ``first_G``, ``second_D``,
    ``second_G``) and every net's gaps and own verdict (``verdict:<net>``)."""
    layers = _well_trained_rows(paper_rows(layers, probes, relu_convention))
    gaps = shuffle_gap(layers, quantity, split=split, by=(), **where)
    first, second = _half(gaps, "first"), _half(gaps, "second")
    diff = second - first
    holds = bool(np.isfinite(diff) and diff >= margin and abs(first) < margin)
    per_net = shuffle_gap(layers, quantity, split=split, by=("net",), **where)
    ok, reason, fall = _pooling_precondition(layers, quantity, min_fall, **where)
    details = {"first": first, "second": second, "margin": margin, "output_fall": fall,
               **_halves_parts(layers, split, **where)}
    if "net" in per_net.columns:
        for net, g in per_net.groupby("net"):
            f, sec = _half(g, "first"), _half(g, "second")
            details[f"{net}:first"], details[f"{net}:second"] = f, sec
            net_ok = _pooling_precondition(layers, quantity, min_fall, **{**where, "net": net})[0]
            details[f"verdict:{net}"] = verdict(bool(sec - f >= margin and abs(f) < margin),
                                                bool(np.isfinite(sec - f)) and net_ok)
    against = [k.split(":", 1)[1] for k, v in details.items() if k.startswith("verdict:") and v == FAILS]
    if holds and against:
        holds, reason = False, f"holds pooled, not for {', '.join(against)}"
    details["reason"] = reason
    return Claim("channel_pooling_second_half", holds and ok, diff, margin, details,
                 testable=bool(np.isfinite(diff)) and ok,
                 rule=f"precondition: output {quantity} fell >= {min_fall:g} decades with training; then shuffling "
                      f"gap of {quantity}: second half - first half >= {margin:g} decades, |first half| < {margin:g}, "
                      f"pooled and for every net",
                 statement="Channel pooling happens in the second half of the network")


def claim_spatial_pooling_first_half(layers: pd.DataFrame, quantity: str = "R_f", margin: float = 0.3,
                                     split: float = 0.5, shuffled: int = 1, probes: str = "paper",
                                     relu_convention: str = "true", min_fall: float = MIN_OUTPUT_FALL,
                                     **where) -> Claim:
    """Fig. 3 / Fig. 6: "spatial pooling in the first half": by mid-depth, training has already lowered
    R_k by at least ``margin`` decades, **also with shuffled channels** (spatial pooling survives
    shuffling).

    Precondition (else "cannot be tested at this scale"): the output R_f fell at least ``min_fall``
    decades. ``value`` = the mid-depth change of the shuffled nets (decades, all nets pooled); details:
    the unshuffled change and every net's change with its own verdict (``verdict:<net>``); a pooled
    "holds" with a net that testably does not reads "does not hold"."""
    layers = _well_trained_rows(paper_rows(layers, probes, relu_convention))
    sh = mid_depth_change(layers, quantity, split, shuffle=shuffled, by=(), **where)
    un = mid_depth_change(layers, quantity, split, shuffle=0, by=(), **where)
    v_sh = float(sh["decades"].iloc[0]) if len(sh) else float("nan")
    v_un = float(un["decades"].iloc[0]) if len(un) else float("nan")
    holds = bool(np.isfinite(v_sh) and v_sh <= -margin)
    ok, reason, fall = _pooling_precondition(layers, quantity, min_fall, **where)
    details: dict = {"shuffled": v_sh, "unshuffled": v_un, "margin": margin, "output_fall": fall}
    if "net" in layers.columns:
        per = mid_depth_change(layers, quantity, split, shuffle=shuffled, by=("net",), **where)
        for _, r in per.iterrows():
            details[f"{r['net']}:shuffled"] = float(r["decades"])
            net_ok = _pooling_precondition(layers, quantity, min_fall, **{**where, "net": r["net"]})[0]
            details[f"verdict:{r['net']}"] = verdict(bool(r["decades"] <= -margin), net_ok)
    against = [k.split(":", 1)[1] for k, v in details.items() if k.startswith("verdict:") and v == FAILS]
    if holds and against:
        holds, reason = False, f"holds pooled, not for {', '.join(against)}"
    details["reason"] = reason
    return Claim("spatial_pooling_first_half", holds and ok, v_sh, -margin, details,
                 testable=bool(np.isfinite(v_sh)) and ok,
                 rule=f"precondition: output {quantity} fell >= {min_fall:g} decades with training; then mid-depth "
                      f"change of shuffled {quantity} with training <= {-margin:g} decades, pooled and for every net",
                 statement="Spatial pooling happens in the first half of the network")


def claim_shuffle_no_effect(layers: pd.DataFrame, quantity: str = "R_f", tolerance: float = 0.3,
                            split: float = 0.5, probes: str = "paper", relu_convention: str = "true",
                            min_fall: float = MIN_OUTPUT_FALL, **where) -> Claim:
    """Fig. 6: "shuffling changes nothing", tested layer by layer: for every net and layer, the shuffled /
    unshuffled gap of ``quantity`` (decades, mean over runs) is below ``tolerance`` in absolute value.
    ``value`` = the largest ``|gap|``; details: the worst net and layer with the D_k and G_k parts of its gap
    (``worst_D``, ``worst_G``: gaps of D_f and G_f; ``gap_R = gap_D - gap_G``), the number of layers
    over the tolerance, and the mean ``|gap|`` of each half (``first``, ``second``, as before).
    Precondition (else "cannot be tested at this scale"): the output R_f fell at least ``min_fall``
    decades with training."""
    layers = _well_trained_rows(paper_rows(layers, probes, relu_convention))
    parts = [q for q in (quantity, "D_f", "G_f") if q in layers.columns]
    gaps = layer_shuffle_gaps(layers, list(dict.fromkeys(parts)), **where)
    col = f"gap_{quantity}"
    g = gaps.dropna(subset=[col]) if col in gaps.columns else gaps
    halves = shuffle_gap(layers, quantity, split=split, by=(), **where)
    details: dict = {"first": _half(halves, "first", "abs_gap"), "second": _half(halves, "second", "abs_gap"),
                     "tolerance": tolerance}
    if g.empty:  # no well-trained run measured with and without shuffling: every detail the page cites, empty
        ok, reason, fall = _pooling_precondition(layers, quantity, min_fall, **where)
        details.update({"worst_layer": "–", "worst_net": "–", "worst_rel_depth": float("nan"),
                        "worst_gap": float("nan"), "worst_D": float("nan"), "worst_G": float("nan"), "n_over": 0,
                        "n_layers": 0, "output_fall": fall, "first_D": float("nan"), "second_D": float("nan"),
                        "first_G": float("nan"), "second_G": float("nan"),
                        "reason": reason or "no well-trained run measured with and without channel shuffling"})
        details.update(_halves_parts(layers, split, **where))
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
    ok, reason, fall = _pooling_precondition(layers, quantity, min_fall, **where)
    details.update(output_fall=fall, reason=reason, **_halves_parts(layers, split, **where))
    return Claim("shuffle_no_effect", bool(value < tolerance) and ok, value, tolerance, details, testable=ok,
                 rule=f"precondition: output {quantity} fell >= {min_fall:g} decades with training; then |shuffling "
                      f"gap of {quantity}| < {tolerance:g} decades at every layer of every net (D_k and G_k parts "
                      f"reported)",
                 statement="Shuffling channels changes nothing on scale detection")


#: Columns :func:`stabkit.report.fidelity.with_convergence` joins to a run table (never part of a run's key).
_CONVERGENCE_COLUMNS = ("best_test_err", "last_test_err", "well_trained", "collapsed", "converged", "train_fell")


def claim_spectra_concentrate(spectra: pd.DataFrame, early: float = 0.5, factor: float = 1.5,
                              flat_tolerance: float = 0.5, **where) -> Claim:
    """Fig. 2: "trained early-layer filters concentrate on eigenvalue 0, flat spectrum at init".

    Testability precondition: the spectra carry the convergence columns of
    :func:`stabkit.report.fidelity.with_convergence` (a table without them cannot say whether its nets
    trained: "cannot be tested"); runs that are not well trained (:data:`~stabkit.report.fidelity.CONVERGENCE_RULE`)
    are left out, and at least 3 runs of :data:`~stabkit.report.stats.MIN_UNITS` architectures must remain.

    Per run, over its conv layers with ``rel_depth <= early``: the mean energy fraction at eigenvalue 0
    after training over the one at initialisation. ``value`` = the geometric mean of these ratios, with
    its 95 % interval over architectures (:func:`stabkit.report.stats.mean_ci` on ``log10`` with the
    architecture as cluster). Holds if the interval lies at or above ``factor`` and the initial spectrum
    is flat (within ``flat_tolerance``, relative, of ``1/k^2``); does not hold if it lies below ``factor``
    (or the initial spectrum is not flat); an interval spanning ``factor`` cannot be tested.
    """
    require_columns(spectra, ["state"], "spectra")
    rule = (f"precondition: trained networks well trained ({CONVERGENCE_RULE}), at least 3 runs of {MIN_UNITS} "
            f"architectures; then early layers (relative depth <= {early:g}): fraction at lambda = 0 trained / "
            f"init >= {factor:g} with its 95 % interval over architectures (geometric mean over runs), init "
            f"within {flat_tolerance:.0%} of 1/k^2")
    statement = "Trained early-layer filters concentrate on the constant filter"
    nan = float("nan")
    has_conv = "well_trained" in spectra.columns
    rows = _well_trained_rows(spectra) if has_conv else spectra
    keys = run_columns(rows, exclude=_CONVERGENCE_COLUMNS)
    z = zero_mode_fraction(rows, by=list(dict.fromkeys(["net", *keys])), **where)
    z = z[z["rel_depth"] <= early]
    keys = [c for c in dict.fromkeys(["net", *keys]) if c in z.columns]
    tr = z.loc[z["state"] == "trained", "fraction"].mean()
    ini = z.loc[z["state"] == "init", "fraction"].mean()
    flat = z.loc[z["state"] == "init", "flat"].mean()
    flat_ok = bool(np.isfinite(flat) and abs(ini / flat - 1) <= flat_tolerance) if np.isfinite(ini) else False
    per_run = (z.pivot_table(index=keys, columns="state", values="fraction", aggfunc="mean", dropna=False)
               if keys and len(z) else pd.DataFrame())
    if {"trained", "init"} <= set(per_run.columns):
        ratio = (per_run["trained"] / per_run["init"]).to_numpy(dtype=np.float64)
        nets = (per_run.index.get_level_values("net").to_numpy(dtype=object) if "net" in keys
                else np.arange(len(per_run)).astype(object))
    else:
        ratio, nets = np.array([], dtype=np.float64), np.array([], dtype=object)
    ok_rows = np.isfinite(ratio) & (ratio > 0)
    log_r, nets = np.log10(ratio[ok_rows]), nets[ok_rows]
    mean, lo, hi = mean_ci(log_r, clusters=nets) if log_r.size else (nan, nan, nan)
    n_runs, n_units = int(log_r.size), int(len(set(nets)))
    holds, ok, reason = interval_decision(mean, lo, hi, float(np.log10(factor)), above=True)
    if reason.startswith("the interval"):  # in the claim's units (a factor), not log10
        reason = f"the interval [{10 ** lo:.3g}, {10 ** hi:.3g}] spans the threshold {factor:g}"
    if ok and not flat_ok:
        holds, reason = False, f"the initial spectrum is not flat (fraction {ini:.3g} against 1/k^2 = {flat:.3g})"
    bad = ~spectra["well_trained"].fillna(True).astype(bool) if has_conv else None
    n_dropped = int(len(spectra.loc[bad, keys].drop_duplicates())) if has_conv and keys else 0
    if not has_conv:
        holds, ok, reason = False, False, ("the convergence of the runs is unknown (join summary and metrics with "
                                           "fidelity.with_convergence)")
    elif n_runs < 3 or n_units < MIN_UNITS:
        holds, ok = False, False
        reason = (f"{n_runs} well-trained runs of {n_units} architecture(s) (need 3 runs of {MIN_UNITS} "
                  f"architectures; {n_dropped} run(s) not well trained left out)")
    details = {"trained": float(tr), "init": float(ini), "flat": float(flat), "flat_ok": flat_ok, "n": n_runs,
               "n_units": n_units, "n_not_well_trained": n_dropped, "reason": reason}
    return Claim("spectra_concentrate", holds, float(10 ** mean) if np.isfinite(mean) else nan, factor, details,
                 testable=ok, rule=rule, statement=statement,
                 ci_low=float(10 ** lo) if np.isfinite(lo) else nan,
                 ci_high=float(10 ** hi) if np.isfinite(hi) else nan)
