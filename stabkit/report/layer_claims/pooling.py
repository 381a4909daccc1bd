"""Where a network pools, from its ``layers`` table (Fig. 3, Fig. 6): R_k falls with depth, spatial pooling in
the first half, channel pooling in the second half, shuffling changes nothing on scale detection; the
precondition they share (the output fell with training:
:func:`~stabkit.report.layer_claims.output_fall`), the shuffling gaps layer by
layer and per half of the network that the pages show, and the output stabilities' story told at the last
node.

The helpers the other claims of :mod:`stabkit.report.layer_claims` share live here too:
:func:`well_trained_rows`, :func:`pooling_precondition`, :func:`half_gap`, :data:`CONVERGENCE_COLUMNS` and the
rules in words (:func:`channel_pooling_rule`, :func:`shuffle_no_effect_rule`), which the batch-norm control
(:mod:`stabkit.report.layer_claims.control`) applies to its own rows.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..fits import (
    PER_LAYER_COLUMNS,
    depth_exponents,
    mid_depth_change,
    shuffle_gap,
)
from ..selection import paper_rows
from ..stats import (
    MIN_UNITS,
    interval_decision,
    per_net_intervals,
    mean_ci,
)
from ..stability_claims import ratio_story
from ..tables import (
    require_columns,
    run_columns,
    select,
)
from ..verdicts import FAILS, Claim, verdict


def half_gap(gaps: pd.DataFrame, half: str, col: str = "gap") -> float:
    """The mean of ``col`` over the rows of one ``half`` (``"first"`` or ``"second"``) of a
    :func:`stabkit.report.fits.shuffle_gap` table, weighted by their ``n`` (nan without a row)."""
    g = gaps[gaps["half"] == half]
    if g.empty:
        return float("nan")
    return float(np.average(g[col], weights=g["n"]))


def well_trained_rows(df: pd.DataFrame) -> pd.DataFrame:
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


def pooling_precondition(layers: pd.DataFrame, quantity: str, min_fall: float, **where) -> tuple[bool, str, float]:
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
CONVERGENCE_COLUMNS = ("best_test_err", "last_test_err", "well_trained", "collapsed", "converged", "train_fell")


def depth_slopes(layers: pd.DataFrame, quantity: str = "R_f", state: str = "trained", shuffle: int = 0,
                 **where) -> pd.DataFrame:
    """Per run: the least-squares slope of ``log10 quantity`` against the relative depth of its nodes
    (0 = input, 1 = output), in decades from the input to the output (negative: ``quantity`` falls with
    depth). Returns one row per run: ``net`` (when present), the run's key columns, ``slope``, ``r``,
    ``n`` (nodes)."""
    require_columns(layers, [quantity, "rel_depth", "state"], "layers")
    keys = run_columns(layers, exclude=(*CONVERGENCE_COLUMNS, *PER_LAYER_COLUMNS))
    keys = list(dict.fromkeys((["net"] if "net" in layers.columns else []) + keys))
    out = depth_exponents(layers, quantity, x="rel_depth", law="exp", by=keys, state=state, shuffle=shuffle,
                          **where)
    return out.drop(columns=["base"])


def _per_net_slopes(slopes: pd.DataFrame, threshold: float) -> dict[str, dict]:
    """Per architecture: mean slope over its runs with a t interval over them (``n - 1`` degrees of
    freedom; none with one run) and its own verdict "slope <= ``threshold``" from that interval."""
    return {net: {"slope": m, "low": lo, "high": hi, "n": n, "holds": holds, "ok": ok}
            for net, (m, lo, hi, n, holds, ok) in per_net_intervals(slopes, "slope", threshold, False).items()}


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
    layers = well_trained_rows(paper_rows(layers, probes, relu_convention))
    slopes = depth_slopes(layers, quantity, **where)
    slopes = slopes[np.isfinite(slopes["slope"].to_numpy(dtype=np.float64))]  # empty: an object column
    init = depth_slopes(layers, quantity, state="init", **where)["slope"].to_numpy(dtype=np.float64)
    nets = slopes["net"].astype(str).to_numpy() if "net" in slopes.columns else None
    mean, lo, hi = mean_ci(slopes["slope"].to_numpy(dtype=np.float64), clusters=nets)
    holds, ok, reason = interval_decision(mean, lo, hi, -margin, above=False)
    n, n_units = int(len(slopes)), int(len(set(nets))) if nets is not None else int(len(slopes))
    pre_ok, pre_reason, fall = pooling_precondition(layers, quantity, min_fall, **where)
    details: dict = {"n": n, "n_units": n_units, "margin": margin, "output_fall": fall,
                     "init_slope": float(np.nanmean(init)) if np.isfinite(init).any() else float("nan")}
    against = []
    for net, v in _per_net_slopes(slopes, -margin).items():
        net_ok = v["ok"] and pooling_precondition(layers, quantity, min_fall, **{**where, "net": net})[0]
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
            out[f"first_{tag}"] = half_gap(h, "first")
            out[f"second_{tag}"] = half_gap(h, "second")
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
    layers = well_trained_rows(paper_rows(layers, probes, relu_convention))
    gaps = shuffle_gap(layers, quantity, split=split, by=(), **where)
    first, second = half_gap(gaps, "first"), half_gap(gaps, "second")
    diff = second - first
    holds = bool(np.isfinite(diff) and diff >= margin and abs(first) < margin)
    per_net = shuffle_gap(layers, quantity, split=split, by=("net",), **where)
    ok, reason, fall = pooling_precondition(layers, quantity, min_fall, **where)
    details = {"first": first, "second": second, "margin": margin, "output_fall": fall,
               **_halves_parts(layers, split, **where)}
    if "net" in per_net.columns:
        for net, g in per_net.groupby("net"):
            f, sec = half_gap(g, "first"), half_gap(g, "second")
            details[f"{net}:first"], details[f"{net}:second"] = f, sec
            net_ok = pooling_precondition(layers, quantity, min_fall, **{**where, "net": net})[0]
            details[f"verdict:{net}"] = verdict(bool(sec - f >= margin and abs(f) < margin),
                                                bool(np.isfinite(sec - f)) and net_ok)
    against = [k.split(":", 1)[1] for k, v in details.items() if k.startswith("verdict:") and v == FAILS]
    if holds and against:
        holds, reason = False, f"holds pooled, not for {', '.join(against)}"
    details["reason"] = reason
    return Claim("channel_pooling_second_half", holds and ok, diff, margin, details,
                 testable=bool(np.isfinite(diff)) and ok, rule=channel_pooling_rule(quantity, margin, min_fall),
                 statement="Channel pooling happens in the second half of the network")


def channel_pooling_rule(quantity: str, margin: float, min_fall: float) -> str:
    """The rule of :func:`stabkit.report.layer_claims.claim_channel_pooling_second_half` in words (its
    recalibrated control states the same rule)."""
    return (f"precondition: output {quantity} fell >= {min_fall:g} decades with training; then shuffling gap of "
            f"{quantity}: second half - first half >= {margin:g} decades, |first half| < {margin:g}, pooled and for "
            f"every net")


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
    layers = well_trained_rows(paper_rows(layers, probes, relu_convention))
    sh = mid_depth_change(layers, quantity, split, shuffle=shuffled, by=(), **where)
    un = mid_depth_change(layers, quantity, split, shuffle=0, by=(), **where)
    v_sh = float(sh["decades"].iloc[0]) if len(sh) else float("nan")
    v_un = float(un["decades"].iloc[0]) if len(un) else float("nan")
    holds = bool(np.isfinite(v_sh) and v_sh <= -margin)
    ok, reason, fall = pooling_precondition(layers, quantity, min_fall, **where)
    details: dict = {"shuffled": v_sh, "unshuffled": v_un, "margin": margin, "output_fall": fall}
    if "net" in layers.columns:
        per = mid_depth_change(layers, quantity, split, shuffle=shuffled, by=("net",), **where)
        for _, r in per.iterrows():
            details[f"{r['net']}:shuffled"] = float(r["decades"])
            net_ok = pooling_precondition(layers, quantity, min_fall, **{**where, "net": r["net"]})[0]
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
    layers = well_trained_rows(paper_rows(layers, probes, relu_convention))
    parts = [q for q in (quantity, "D_f", "G_f") if q in layers.columns]
    gaps = layer_shuffle_gaps(layers, list(dict.fromkeys(parts)), **where)
    col = f"gap_{quantity}"
    g = gaps.dropna(subset=[col]) if col in gaps.columns else gaps
    halves = shuffle_gap(layers, quantity, split=split, by=(), **where)
    details: dict = {"first": half_gap(halves, "first", "abs_gap"), "second": half_gap(halves, "second", "abs_gap"),
                     "tolerance": tolerance}
    if g.empty:  # no well-trained run measured with and without shuffling: every detail the page cites, empty
        ok, reason, fall = pooling_precondition(layers, quantity, min_fall, **where)
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
    ok, reason, fall = pooling_precondition(layers, quantity, min_fall, **where)
    details.update(output_fall=fall, reason=reason, **_halves_parts(layers, split, **where))
    return Claim("shuffle_no_effect", bool(value < tolerance) and ok, value, tolerance, details, testable=ok,
                 rule=shuffle_no_effect_rule(quantity, tolerance, min_fall),
                 statement="Shuffling channels changes nothing on scale detection")


def shuffle_no_effect_rule(quantity: str, tolerance: float, min_fall: float) -> str:
    """The rule of :func:`stabkit.report.layer_claims.claim_shuffle_no_effect` in words (its recalibrated
    control states the same rule)."""
    return (f"precondition: output {quantity} fell >= {min_fall:g} decades with training; then |shuffling gap of "
            f"{quantity}| < {tolerance:g} decades at every layer of every net (D_k and G_k parts reported)")


def layer_shuffle_gaps(layers: pd.DataFrame, quantities: Sequence[str] = ("R_f", "D_f", "G_f"),
                       shuffled: int = 1, state: str = "trained", by: Sequence[str] = ("net",),
                       **where) -> pd.DataFrame:
    """Layer by layer, how channel shuffling changes each of ``quantities``: ``gap_<q> = log10(q[shuffle =
    shuffled] / q[shuffle = 0])`` (decades, mean over runs) per ``by`` group and layer, with
    ``rel_depth`` and ``n`` (runs). ``gap_R_f = gap_D_f - gap_G_f``: the D_k and G_k parts of a change.
    What :func:`claim_shuffle_no_effect` tests and :func:`layer_gap_tables` shows."""
    require_columns(layers, ["layer", "rel_depth", "shuffle", "state", *quantities], "layers")
    rows = select(layers, state=state, **where)
    rows = rows[rows["shuffle"].isin([0, shuffled])]
    keys = [c for c in by if c in rows.columns]
    run_keys = run_columns(rows.drop(columns=[c for c in ("probes", "relu_convention") if c in rows.columns]))
    idx = list(dict.fromkeys(keys + run_keys + ["layer", "rel_depth"]))
    per_run = []
    for q in quantities:
        w = rows.groupby(idx + ["shuffle"], dropna=False)[q].mean().unstack("shuffle")
        if 0 not in w.columns or shuffled not in w.columns:
            return pd.DataFrame(columns=keys + ["layer", "rel_depth", *(f"gap_{q}" for q in quantities), "n"])
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.log10(w[shuffled].where(w[shuffled] > 0) / w[0].where(w[0] > 0))
        per_run.append(g.rename(f"gap_{q}"))
    wide = pd.concat(per_run, axis=1).reset_index()
    wide = wide.dropna(subset=[f"gap_{q}" for q in quantities], how="all")
    agg = {f"gap_{q}": (f"gap_{q}", "mean") for q in quantities}
    out = wide.groupby(keys + ["layer", "rel_depth"], dropna=False).agg(**agg, n=(f"gap_{quantities[0]}", "size"))
    return out.reset_index().sort_values(keys + ["rel_depth"]).reset_index(drop=True)


def layer_gap_tables(layers: pd.DataFrame, quantities: Sequence[str] = ("R_f", "D_f", "G_f"),
                     **where) -> dict[str, pd.DataFrame]:
    """Fig. 6's tables of the shuffling gaps layer by layer (:func:`layer_shuffle_gaps`), one per quantity:
    ``{q: table}`` with one row per layer (in the order of their mean relative depth; the index is named
    ``"gap of D_k"``...) and one column per net, the gap in decades rounded to 2 decimals, a layer a net
    lacks as an en dash."""
    gaps = layer_shuffle_gaps(layers, quantities, **where)
    if gaps.empty or "net" not in gaps.columns:
        return {q: pd.DataFrame(index=pd.Index([], name=f"gap of {q[0]}_k")) for q in quantities}
    order = gaps.groupby("layer")["rel_depth"].mean().sort_values().index
    return {q: (gaps.pivot_table(index="layer", columns="net", values=f"gap_{q}").reindex(order).round(2)
                .rename_axis(f"gap of {q[0]}_k").astype(object).fillna("\u2013"))  # a layer the net lacks: a dash
            for q in quantities}


def shuffle_gap_table(layers: pd.DataFrame, quantity: str = "R_f", split: float = 0.5, **where) -> pd.DataFrame:
    """Fig. 3's table of the shuffling gaps per half of the network: one row per net, columns ``first`` and
    ``second`` (relative depth up to ``split`` and beyond it), the mean gap of ``quantity`` over the nodes
    and runs of that half (decades, :func:`stabkit.report.fits.shuffle_gap`; positive: shuffling raises
    it), rounded to 2 decimals. Every row of ``layers`` counts (the page's rows: the claims further leave
    out the runs that are not well trained)."""
    gaps = shuffle_gap(layers, quantity, split=split, by=("net",), **where)
    return gaps.pivot(index="net", columns="half", values="gap").round(2)


def output_node_story(layers: pd.DataFrame, quantities: Sequence[str] = ("D_f", "G_f", "R_f"),
                      **where) -> dict[str, str | bool]:
    """The story of the output stabilities' change with training told at the last node of every network
    (``rel_depth`` 1) of a ``layers`` table: :func:`stabkit.report.stability_claims.ratio_story` of those
    rows (``{"R_f": "R_f fell 25x because ...", "parts": "D rose 1.7x; ...", ...}``)."""
    require_columns(layers, ["rel_depth"], "layers")
    return ratio_story(layers[layers["rel_depth"] == 1], quantities, **where)

