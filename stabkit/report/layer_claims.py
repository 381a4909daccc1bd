"""The claims on where in the network stability is gained, layer by layer (Fig. 3, Fig. 6, Fig. 2, and
the probe page that sets rotation invariance against R_k): R_k falls with depth, spatial pooling in the
first half, channel pooling in the second half, shuffling changes nothing on scale detection, trained
early filters concentrate on the constant filter, and the layer NV tracks R_k.

Same conventions as :mod:`stabkit.report.stability_claims`: tidy tables in, a
:class:`~stabkit.report.verdicts.Claim` out.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .fits import depth_exponents, layer_shuffle_gaps, mid_depth_change, shuffle_gap, zero_mode_fraction
from .selection import (
    CONVERGENCE_RULE,
    paper_rows,
)
from .stats import (
    MIN_UNITS,
    interval_decision,
    mean_ci,
    rank_correlation,
    t_interval,
)
from .tables import layer_nv_vs_rk, require_columns, run_columns
from .verdicts import FAILS, Claim, verdict

__all__ = [
    "MIN_OUTPUT_FALL", "output_fall", "depth_slopes", "claim_rk_falls_with_depth",
    "claim_channel_pooling_second_half", "claim_spatial_pooling_first_half", "claim_shuffle_no_effect",
    "claim_spectra_concentrate", "nv_rk_correlations", "claim_nv_tracks_rk",
]


def _half(gaps: pd.DataFrame, half: str, col: str = "gap") -> float:
    g = gaps[gaps["half"] == half]
    if g.empty:
        return float("nan")
    return float(np.average(g[col], weights=g["n"]))


def _well_trained_rows(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without the runs that are not well trained, where it carries the convergence columns
    (:func:`stabkit.report.selection.with_convergence`); unchanged otherwise."""
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


#: Columns :func:`stabkit.report.selection.with_convergence` joins to a run table (never part of a run's key).
_CONVERGENCE_COLUMNS = ("best_test_err", "last_test_err", "well_trained", "collapsed", "converged", "train_fell")


#: Columns of a layers table that vary from layer to layer but are not in
#: :data:`~stabkit.report.tables.MEASUREMENT_COLUMNS` (they must not split a run into groups).
_PER_LAYER_COLUMNS = ("features",)


def depth_slopes(layers: pd.DataFrame, quantity: str = "R_f", state: str = "trained", shuffle: int = 0,
                 **where) -> pd.DataFrame:
    """Per run: the least-squares slope of ``log10 quantity`` against the relative depth of its nodes
    (0 = input, 1 = output), in decades from the input to the output (negative: ``quantity`` falls with
    depth). Returns one row per run: ``net`` (when present), the run's key columns, ``slope``, ``r``,
    ``n`` (nodes)."""
    require_columns(layers, [quantity, "rel_depth", "state"], "layers")
    keys = run_columns(layers, exclude=(*_CONVERGENCE_COLUMNS, *_PER_LAYER_COLUMNS))
    keys = list(dict.fromkeys((["net"] if "net" in layers.columns else []) + keys))
    out = depth_exponents(layers, quantity, x="rel_depth", law="exp", by=keys, state=state, shuffle=shuffle,
                          **where)
    return out.drop(columns=["base"])


def _per_net_slopes(slopes: pd.DataFrame, threshold: float) -> dict[str, dict]:
    """Per architecture: mean slope over its runs with a t interval over them (``n - 1`` degrees of
    freedom; none with one run) and its own verdict "slope <= ``threshold``" from that interval."""
    out: dict[str, dict] = {}
    if "net" not in slopes.columns:
        return out
    for net, g in slopes.groupby("net"):
        m, lo, hi, n = t_interval(g["slope"])
        if n == 0:
            continue
        holds, ok, _ = interval_decision(m, lo, hi, threshold, above=False)
        out[str(net)] = {"slope": m, "low": lo, "high": hi, "n": n, "holds": holds, "ok": ok}
    return out


def claim_rk_falls_with_depth(layers: pd.DataFrame, quantity: str = "R_f", margin: float = 0.3,
                              probes: str = "paper", relu_convention: str = "true",
                              min_fall: float = MIN_OUTPUT_FALL, **where) -> Claim:
    """Fig. 3 / Fig. 6: "the relative stability R_k of trained networks decreases from the first to the
    last layers".

    Per well-trained run (trained, unshuffled): the slope of ``log10 R_k`` against relative depth
    (:func:`depth_slopes`, decades from input to output). ``value`` = the mean slope over runs with its
    95 % interval over architectures (:func:`stabkit.report.stats.mean_ci`, architectures as clusters);
    holds if the interval lies at or below ``-margin``, does not hold if it lies above, else cannot be
    tested. Beside it every architecture gets its own verdict (``verdict:<net>``, ``slope:<net>``: t
    interval over its seeds, its own precondition): one that testably goes the other way makes the
    claim "does not hold" whatever the pooled interval.

    Precondition (else "cannot be tested at this scale", as the other Fig. 3 / 6 claims): the output
    R_f fell at least ``min_fall`` decades with training, and at least 3 runs of
    :data:`~stabkit.report.stats.MIN_UNITS` architectures. Details: ``n`` (runs), ``n_units``
    (architectures), ``init_slope`` (the same slope at initialisation), ``output_fall``, ``reason``."""
    if not (isinstance(margin, (int, float)) and np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0 (decades), got {margin!r}")
    layers = _well_trained_rows(paper_rows(layers, probes, relu_convention))
    slopes = depth_slopes(layers, quantity, **where)
    slopes = slopes[np.isfinite(slopes["slope"].to_numpy(dtype=np.float64))]  # empty: an object column
    init = depth_slopes(layers, quantity, state="init", **where)["slope"].to_numpy(dtype=np.float64)
    nets = slopes["net"].astype(str).to_numpy() if "net" in slopes.columns else None
    mean, lo, hi = mean_ci(slopes["slope"].to_numpy(dtype=np.float64), clusters=nets)
    holds, ok, reason = interval_decision(mean, lo, hi, -margin, above=False)
    n, n_units = int(len(slopes)), int(len(set(nets))) if nets is not None else int(len(slopes))
    pre_ok, pre_reason, fall = _pooling_precondition(layers, quantity, min_fall, **where)
    details: dict = {"n": n, "n_units": n_units, "margin": margin, "output_fall": fall,
                     "init_slope": float(np.nanmean(init)) if np.isfinite(init).any() else float("nan")}
    against = []
    for net, v in _per_net_slopes(slopes, -margin).items():
        net_ok = v["ok"] and _pooling_precondition(layers, quantity, min_fall, **{**where, "net": net})[0]
        details[f"slope:{net}"] = v["slope"]
        details[f"verdict:{net}"] = verdict(v["holds"], net_ok)
        if details[f"verdict:{net}"] == FAILS:
            against.append(f"{net} ({v['slope']:+.2f} decades)")
    if against and pre_ok:
        pooled = "holds pooled" if holds else ("pooled: does not hold" if ok else "pooled: cannot be tested")
        holds, ok, reason = False, True, f"{pooled}; not for {', '.join(against)}"
    if not pre_ok:
        holds, ok, reason = False, False, pre_reason
    elif n < 3 or n_units < MIN_UNITS:
        holds, ok = False, False
        reason = f"{n} runs of {n_units} architecture(s) (need 3 runs of {MIN_UNITS} architectures)"
    details.update(reason=reason, against=", ".join(a.split(" (")[0] for a in against))
    return Claim("R_k_falls_with_depth", holds, mean, -margin, details, testable=ok,
                 rule=f"precondition: output {quantity} fell >= {min_fall:g} decades with training, at least 3 runs "
                      f"of {MIN_UNITS} architectures; then slope of log10 {quantity} of the trained nets against "
                      f"relative depth <= {-margin:g} decades with its 95 % interval over architectures, and no "
                      f"architecture testably above it",
                 statement="R_k of trained networks falls from the first to the last layers",
                 ci_low=lo, ci_high=hi)


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


def claim_spectra_concentrate(spectra: pd.DataFrame, early: float = 0.5, factor: float = 1.5,
                              flat_tolerance: float = 0.5, **where) -> Claim:
    """Fig. 2: "trained early-layer filters concentrate on eigenvalue 0, flat spectrum at init".

    Testability precondition: the spectra carry the convergence columns of
    :func:`stabkit.report.selection.with_convergence` (a table without them cannot say whether its nets
    trained: "cannot be tested"); runs that are not well trained (:data:`~stabkit.report.selection.CONVERGENCE_RULE`)
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
        holds, ok, reason = False, False, ("the convergence of the runs is unknown (load the tables with page(..., "
                                           "convergence=True) or join selection.with_convergence)")
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


def nv_rk_correlations(both: pd.DataFrame, min_layers: int = 4) -> pd.DataFrame:
    """Spearman correlation between a layer's rotation NV and ``log10 R_k`` per (net, training, seed),
    over runs with at least ``min_layers`` matched layers (``both``:
    :func:`~stabkit.report.tables.layer_nv_vs_rk`)."""
    rows = []
    for (net, tr, seed), d in both.groupby(["net", "training", "seed"]):
        if len(d) >= min_layers:
            rows.append({"net": net, "training": tr, "seed": seed, "layers": len(d),
                         "spearman": rank_correlation(d["log10_R"], d["mean_NV"])})
    return pd.DataFrame(rows, columns=["net", "training", "seed", "layers", "spearman"])


def claim_nv_tracks_rk(inv: pd.DataFrame, layers: pd.DataFrame, min_rho: float = 0.5) -> Claim:
    """A layer's rotation NV tracks its relative stability: the median Spearman correlation between
    layer mean NV and ``log10 R_k`` over trained nets is at least ``min_rho``. ``value`` = the median;
    details ``rho_min``, ``rho_max``, ``n_corr``."""
    corr = nv_rk_correlations(layer_nv_vs_rk(inv, layers))
    rho = corr["spearman"]
    med = float(rho.median()) if len(rho) else float("nan")
    return Claim("nv_tracks_rk", bool(med >= min_rho), med, min_rho,
                 {"rho_min": float(rho.min()) if len(rho) else float("nan"),
                  "rho_max": float(rho.max()) if len(rho) else float("nan"), "n_corr": int(len(rho))},
                 testable=len(rho) > 0, rule=f"median Spearman(layer NV, log10 R_k) >= {min_rho:g}",
                 statement="A layer's rotation NV tracks its relative stability R_k")
