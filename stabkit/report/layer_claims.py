"""The claims on where in the network stability is gained, layer by layer (Fig. 3, Fig. 6, Fig. 2, and
the probe page that sets rotation invariance against R_k): R_k falls with depth, spatial pooling in the
first half, channel pooling in the second half, shuffling changes nothing on scale detection, trained
early filters concentrate on the constant filter, and the layer NV tracks R_k.

The batch-norm control of the shuffle (``book/methods.md``, "Channel shuffling"): in batch-norm nets a
shuffled network keeps the running statistics of the unshuffled one, so part of a shuffle gap can be stale
statistics rather than lost channel pooling. :func:`claim_shuffle_no_effect_recalibrated` (Fig. 6) and
:func:`claim_channel_pooling_recalibrated` (Fig. 3) apply the rules of :func:`claim_shuffle_no_effect` and
:func:`claim_channel_pooling_second_half` to the batch-norm nets of the ``recalibrated`` table (every
network measured with its batch-norm running statistics re-estimated after shuffling); given the
``layers`` table too, they report the late-layer (second-half) gap of the same runs before and after
recalibration; :func:`recalibration_texts` and :func:`recalibration_table` say it on the page.

Beside the claims, the tables and sentences the layer pages show: the shuffling gaps layer by layer
(:func:`layer_shuffle_gaps`, shown by :func:`layer_gap_tables`: Fig. 6) and per half of the network
(:func:`shuffle_gap_table`: Fig. 3), the story of the output stabilities told at the last node
(:func:`output_node_story`), and the rotation NV of a layer matched with its R_k (:func:`layer_nv_vs_rk`).

Same conventions as :mod:`stabkit.report.stability_claims`: tidy tables in, a
:class:`~stabkit.report.verdicts.Claim` out.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ..runs.config import MEASUREMENT_FIELDS
from .fits import (
    PER_LAYER_COLUMNS,
    depth_exponents,
    mid_depth_change,
    shuffle_gap,
    zero_mode_fraction,
)
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
from .stability_claims import ratio_story
from .tables import (
    RUN_ID_COLUMNS,
    MarkdownText,
    markdown_table,
    require_columns,
    run_columns,
    select,
    training_label,
)
from .verdicts import FAILS, SHORT_VERDICTS, Claim, verdict

__all__ = [
    "MIN_OUTPUT_FALL", "output_fall", "depth_slopes", "claim_rk_falls_with_depth",
    "claim_channel_pooling_second_half", "claim_spatial_pooling_first_half", "claim_shuffle_no_effect",
    "layer_shuffle_gaps", "layer_gap_tables", "shuffle_gap_table", "output_node_story",
    "claim_spectra_concentrate", "layer_nv_vs_rk", "nv_rk_correlations", "claim_nv_tracks_rk",
    "claim_shuffle_no_effect_recalibrated", "claim_channel_pooling_recalibrated", "NEGLIGIBLE_GAP",
    "removed_text", "recalibration_texts", "recalibration_table",
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


def depth_slopes(layers: pd.DataFrame, quantity: str = "R_f", state: str = "trained", shuffle: int = 0,
                 **where) -> pd.DataFrame:
    """Per run: the least-squares slope of ``log10 quantity`` against the relative depth of its nodes
    (0 = input, 1 = output), in decades from the input to the output (negative: ``quantity`` falls with
    depth). Returns one row per run: ``net`` (when present), the run's key columns, ``slope``, ``r``,
    ``n`` (nodes)."""
    require_columns(layers, [quantity, "rel_depth", "state"], "layers")
    keys = run_columns(layers, exclude=(*_CONVERGENCE_COLUMNS, *PER_LAYER_COLUMNS))
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
                 testable=bool(np.isfinite(diff)) and ok, rule=_channel_pooling_rule(quantity, margin, min_fall),
                 statement="Channel pooling happens in the second half of the network")


def _channel_pooling_rule(quantity: str, margin: float, min_fall: float) -> str:
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
                 rule=_shuffle_no_effect_rule(quantity, tolerance, min_fall),
                 statement="Shuffling channels changes nothing on scale detection")


def _shuffle_no_effect_rule(quantity: str, tolerance: float, min_fall: float) -> str:
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


#: Recalibrated claims: the rows kept and the precondition's words (``book/methods.md``, "Channel shuffling").
_RECALIBRATED_SCOPE = ("batch-norm nets of the recalibrated table (batch-norm running statistics re-estimated after "
                       "shuffling)")
_NO_BATCHNORM = "no batch-norm network measured with recalibrated statistics"


def _batchnorm_rows(recalibrated: pd.DataFrame) -> pd.DataFrame:
    """The rows of the batch-norm nets of a ``recalibrated`` table (a net without batch norm repeats its
    ``layers`` rows there: no control). An empty table (no run measured it) gives no rows."""
    if isinstance(recalibrated, pd.DataFrame) and recalibrated.empty:
        cols = list(dict.fromkeys([*recalibrated.columns, "batchnorm", "layer", "rel_depth", "state", "shuffle",
                                   "R_f", "D_f", "G_f"]))
        return pd.DataFrame(columns=cols)
    require_columns(recalibrated, ["batchnorm", "state", "shuffle"], "recalibrated")
    keep = recalibrated["batchnorm"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    if "recalibrated" in recalibrated.columns:  # the rows measured with re-estimated statistics
        # not `&=`: to_numpy may hand back the table's own memory, which must not change
        keep = keep & recalibrated["recalibrated"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    return recalibrated[keep]


def _before(recalibrated: pd.DataFrame, layers: pd.DataFrame | None, rows: pd.DataFrame, probes: str,
            relu_convention: str) -> pd.DataFrame | None:
    """The "before" rows of the control: the same networks measured as ``layers`` does (batch statistics).
    The measurement writes them beside the recalibrated rows (``recalibrated`` False), so that a network is
    compared with itself; a table without them (an older control) falls back on ``layers``, matched on the
    training configuration, which is the same network only where the control did not train it again."""
    if isinstance(recalibrated, pd.DataFrame) and "recalibrated" in recalibrated.columns and len(recalibrated):
        own = recalibrated[recalibrated["batchnorm"].astype("boolean").fillna(False).to_numpy(dtype=bool)
                           & ~recalibrated["recalibrated"].astype("boolean").fillna(True).to_numpy(dtype=bool)]
        if len(own):
            return _well_trained_rows(paper_rows(own, probes, relu_convention))
    if layers is None:
        return None
    return _same_runs(_well_trained_rows(paper_rows(layers, probes, relu_convention)), rows)


def _recalibrated_precondition(rows: pd.DataFrame, **where) -> tuple[bool, str, int, int]:
    """``(ok, reason, runs, nets)``: at least one batch-norm run (of ``rows``: batch-norm rows as the claims
    see them) measured trained with shuffle 0 and with shuffle 1; ``runs`` and ``nets`` count those."""
    tr = select(rows, state="trained", **where)
    if tr.empty:
        return False, _NO_BATCHNORM + " after training (runs that are not well trained are left out)", 0, 0
    keys = run_columns(tr, exclude=(*_CONVERGENCE_COLUMNS, *PER_LAYER_COLUMNS))
    keys = list(dict.fromkeys((["net"] if "net" in tr.columns else []) + keys))
    both = (tr.groupby(keys, dropna=False)["shuffle"].agg(lambda s: {0, 1} <= set(s)) if keys
            else pd.Series([{0, 1} <= set(tr["shuffle"])]))
    runs = both[both.to_numpy(dtype=bool)]
    if runs.empty:
        return False, _NO_BATCHNORM + " both with and without channel shuffling (shuffle 0 and 1, trained)", 0, 0
    nets = len(set(runs.index.get_level_values("net"))) if "net" in keys else 1
    return True, "", int(len(runs)), int(nets)


def _same_runs(layers: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``layers`` of the networks in ``rows``: matched on the configuration columns both tables
    have, less what is measured (the control is a run of its own, with its own run key, that measures the
    included run's network again: ``stabkit.runs.MEASUREMENT_FIELDS`` and the run identifier differ); on
    ``net`` when they share none."""
    exclude = (*_CONVERGENCE_COLUMNS, *PER_LAYER_COLUMNS, "probes", "relu_convention", "batchnorm", "images",
               *MEASUREMENT_FIELDS, *RUN_ID_COLUMNS)
    keys = [c for c in run_columns(layers.drop(columns=[c for c in RUN_ID_COLUMNS if c in layers.columns]),
                                   exclude=exclude) if c in rows.columns]
    keys = keys or [c for c in ("net",) if c in layers.columns and c in rows.columns]
    if not keys or rows.empty:
        return layers.iloc[0:0]
    have = pd.MultiIndex.from_frame(rows[keys].drop_duplicates())
    return layers[pd.MultiIndex.from_frame(layers[keys]).isin(have)]


def _late_gap_details(after: pd.DataFrame, before: pd.DataFrame | None, quantity: str, split: float,
                      **where) -> dict[str, float]:
    """The late-layer (second-half: ``rel_depth > split``) shuffling gaps, pooled and per net, of the
    recalibrated rows (``after``) and of the same runs' ``layers`` rows (``before``; nan without them):
    ``late_before``, ``late_after`` (mean signed gap of ``quantity``, decades), ``late_removed`` (the
    fraction of the gap that recalibration removes, ``1 - after / before``), the D_k and G_k parts
    ``late_D_before``, ``late_D_after``, ``late_G_before``, ``late_G_after``; per net the same keys as
    ``<net>:late_before``..."""
    nan = float("nan")
    out: dict[str, float] = {}
    nets: list[str] = []
    for tag, tab in (("after", after), ("before", before)):
        for q, part in ((quantity, ""), ("D_f", "D_"), ("G_f", "G_")):
            if tab is None or q not in tab.columns:
                out[f"late_{part}{tag}"] = nan
                continue
            out[f"late_{part}{tag}"] = _half(shuffle_gap(tab, q, split=split, by=(), **where), "second")
            if "net" in tab.columns:
                for net, g in shuffle_gap(tab, q, split=split, by=("net",), **where).groupby("net"):
                    out[f"{net}:late_{part}{tag}"] = _half(g, "second")
                    nets.append(str(net))
    for prefix in ("", *(f"{n}:" for n in dict.fromkeys(nets))):
        for tag in ("before", "after"):
            for part in ("", "D_", "G_"):
                out.setdefault(f"{prefix}late_{part}{tag}", nan)
        b, a = out[f"{prefix}late_before"], out[f"{prefix}late_after"]
        out[f"{prefix}late_removed"] = float(1 - a / b) if np.isfinite(a) and np.isfinite(b) and b != 0 else nan
    return out


def _test_errors(rows: pd.DataFrame, **where) -> dict[str, float]:
    """Per net, the mean test error of the recalibrated trained networks, unshuffled and shuffled
    (``<net>:test_err_unshuffled``, ``<net>:test_err_shuffled``)."""
    out: dict[str, float] = {}
    if "test_err" not in rows.columns or "net" not in rows.columns:
        return out
    tr = select(rows, state="trained", **where)
    for (net, sh), g in tr.groupby(["net", "shuffle"]):
        if sh in (0, 1):
            out[f"{net}:test_err_{'shuffled' if sh else 'unshuffled'}"] = float(g["test_err"].mean())
    return out


def _recalibrated(base: Claim, name: str, statement: str, rule: str, pre: tuple[bool, str, int, int],
                  details: dict) -> Claim:
    """``base`` (a claim computed on the batch-norm rows of the recalibrated table) under its own name,
    statement and rule, with the recalibration precondition ``pre``, the further ``details`` and
    ``against`` (the nets whose own verdict is "does not hold": the pooled rule of both claims already
    covers every net, so none of them can turn a pooled "holds")."""
    pre_ok, pre_reason, n, n_units = pre
    out = {**base.details, **details, "n": n, "n_units": n_units}
    holds, testable, reason = base.holds, base.testable, base.details.get("reason", "")
    against = [k.split(":", 1)[1] for k, v in out.items() if k.startswith("verdict:") and v == FAILS]
    if not pre_ok:
        holds, testable, reason = False, False, pre_reason
    elif not testable and not reason:
        reason = "no layer measured with and without channel shuffling in each half of the network"
    out.update(reason=reason, against=", ".join(against))
    return replace(base, name=name, holds=bool(holds and testable), testable=bool(testable), details=out,
                   rule=f"{_RECALIBRATED_SCOPE}; precondition: at least one batch-norm net measured trained with "
                        f"shuffle 0 and 1, {rule.removeprefix('precondition: ')}",
                   statement=statement)


def claim_shuffle_no_effect_recalibrated(recalibrated: pd.DataFrame, tolerance: float = 0.3, *,
                                         layers: pd.DataFrame | None = None, quantity: str = "R_f",
                                         split: float = 0.5, probes: str = "paper", relu_convention: str = "true",
                                         min_fall: float = MIN_OUTPUT_FALL, **where) -> Claim:
    """Fig. 6, batch-norm control: "shuffling channels changes nothing on scale detection, once batch-norm
    statistics are re-estimated". The rule of :func:`claim_shuffle_no_effect` (every layer's shuffling gap
    below ``tolerance`` in absolute value, in every net) on the batch-norm nets' rows of ``recalibrated``
    (rows with ``batchnorm`` False are no control and are left out).

    Precondition (else "cannot be tested at this scale", with the reason): at least one batch-norm run
    measured trained with shuffle 0 and 1 in ``recalibrated``, and its output R_f fell at least ``min_fall``
    decades with training (:data:`MIN_OUTPUT_FALL`, both states of the recalibrated table).

    ``value`` = the largest ``|gap|``. Details: those of :func:`claim_shuffle_no_effect` (``worst_*``,
    ``worst_D``, ``worst_G``, ``n_over``, ``n_layers``, ``first``, ``second``, ``first_D``... ``second_G``,
    ``output_fall``); per net its largest ``|gap|`` (``decades:<net>``) and own verdict (``verdict:<net>``,
    its own output-fall precondition); ``against`` (nets that testably do not hold), ``n`` (batch-norm runs
    measured with and without shuffling), ``n_units`` (their nets), ``reason``; the late-layer gap before
    (the same networks with batch statistics: the table's rows with ``recalibrated`` False, else ``layers``
    matched on the training configuration) and after recalibration with its D_k and G_k parts
    (``late_before``, ``late_after``, ``late_removed``, ``late_D_before``, ``late_D_after``,
    ``late_G_before``, ``late_G_after``, and per net ``<net>:late_before``...), ``largest_before`` (the
    largest ``|gap|`` before recalibration) and the recalibrated test errors (``<net>:test_err_unshuffled``,
    ``<net>:test_err_shuffled``)."""
    bn = _batchnorm_rows(recalibrated)
    rows = _well_trained_rows(paper_rows(bn, probes, relu_convention))
    pre = (False, _NO_BATCHNORM, 0, 0) if bn.empty else _recalibrated_precondition(rows, **where)
    base = claim_shuffle_no_effect(bn, quantity, tolerance, split, probes, relu_convention, min_fall, **where)
    details: dict = {}
    parts = [q for q in (quantity, "D_f", "G_f") if q in rows.columns]
    gaps = layer_shuffle_gaps(rows, list(dict.fromkeys(parts)), **where).dropna(subset=[f"gap_{quantity}"])
    if "net" in gaps.columns:
        for net, g in gaps.groupby("net"):
            worst = float(g[f"gap_{quantity}"].abs().max())
            net_ok = _pooling_precondition(rows, quantity, min_fall, **{**where, "net": net})[0]
            details[f"decades:{net}"] = worst
            details[f"verdict:{net}"] = verdict(worst < tolerance, net_ok)
    before = _before(recalibrated, layers, rows, probes, relu_convention)
    details["largest_before"] = float("nan")
    if before is not None and quantity in before.columns:
        b = layer_shuffle_gaps(before, [quantity], **where)[f"gap_{quantity}"].abs()
        details["largest_before"] = float(b.max()) if b.notna().any() else float("nan")
    details.update(_late_gap_details(rows, before, quantity, split, **where), **_test_errors(rows, **where))
    return _recalibrated(base, "shuffle_no_effect_recalibrated",
                         "Shuffling channels changes nothing on scale detection, once batch-norm statistics are "
                         "re-estimated", _shuffle_no_effect_rule(quantity, tolerance, min_fall), pre, details)


def claim_channel_pooling_recalibrated(recalibrated: pd.DataFrame, margin: float = 0.3, *,
                                       layers: pd.DataFrame | None = None, quantity: str = "R_f",
                                       split: float = 0.5, probes: str = "paper", relu_convention: str = "true",
                                       min_fall: float = MIN_OUTPUT_FALL, **where) -> Claim:
    """Fig. 3, batch-norm control: "the channel-pooling gap survives recalibration". The rule of
    :func:`claim_channel_pooling_second_half` (shuffling raises R_k at least ``margin`` decades more in the
    second half than in the first, the first-half gap below ``margin``, pooled and for every net) on the
    batch-norm nets' rows of ``recalibrated`` (rows with ``batchnorm`` False are left out).

    Precondition (else "cannot be tested at this scale", with the reason): as
    :func:`claim_shuffle_no_effect_recalibrated`. ``value`` = second-half gap minus first-half gap
    (decades). Details: those of :func:`claim_channel_pooling_second_half` (``first``, ``second``,
    ``first_D``... ``second_G``, ``<net>:first``, ``<net>:second``, ``verdict:<net>``, ``output_fall``),
    ``against``, ``n``, ``n_units``, ``reason``, the late-layer gaps before (``layers``, if given) and after
    recalibration (``late_before``, ``late_after``, ``late_removed``, their D_k and G_k parts, per net
    ``<net>:late_before``...) and the recalibrated test errors, as
    :func:`claim_shuffle_no_effect_recalibrated`."""
    bn = _batchnorm_rows(recalibrated)
    rows = _well_trained_rows(paper_rows(bn, probes, relu_convention))
    pre = (False, _NO_BATCHNORM, 0, 0) if bn.empty else _recalibrated_precondition(rows, **where)
    base = claim_channel_pooling_second_half(bn, quantity, margin, split, probes, relu_convention, min_fall, **where)
    before = _before(recalibrated, layers, rows, probes, relu_convention)
    details = {**_late_gap_details(rows, before, quantity, split, **where), **_test_errors(rows, **where)}
    return _recalibrated(base, "channel_pooling_second_half_recalibrated",
                         "Channel pooling happens in the second half of the network, once batch-norm statistics "
                         "are re-estimated", _channel_pooling_rule(quantity, margin, min_fall), pre, details)


#: A late-layer gap smaller than this (decades, a factor 1.12) before recalibration leaves nothing to remove.
NEGLIGIBLE_GAP = 0.05


def _nets_of(claim: Claim) -> list[str]:
    """The nets a recalibrated claim gives numbers for (``<net>:late_after``, ``verdict:<net>``), in order."""
    nets = [k.split(":", 1)[0] for k in claim.details if isinstance(k, str) and k.endswith(":late_after")]
    nets += [k.split(":", 1)[1] for k in claim.details if isinstance(k, str) and k.startswith("verdict:")]
    return list(dict.fromkeys(nets))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _decades(v: Any) -> str:
    """A signed gap in decades to 2 decimals (``"+0.00"``, never ``"-0.00"``), an en dash when missing."""
    return f"{round(float(v), 2) + 0.0:+.2f}" if _finite(v) else "\u2013"


def removed_text(before: float, after: float) -> str:
    """How much of a late-layer shuffling gap (decades; ``before`` and ``after`` recalibration) recalibration
    removes, in one sentence that reads right whatever the numbers: "Recalibration removes 86 % of the
    gap.", "... all of it and reverses its sign.", "... does not reduce it: it grows by 30 %.", a gap below
    :data:`NEGLIGIBLE_GAP` before recalibration leaves nothing to remove; a missing number says which."""
    if not _finite(after):
        return "How much of the gap recalibration removes is not known: nothing was measured with re-estimated statistics."
    if not _finite(before):
        return ("How much of the gap recalibration removes is not known: the same runs without recalibration are not "
                "in the layers table.")
    if abs(before) < NEGLIGIBLE_GAP:
        return (f"Before recalibration there is hardly a gap to remove (|gap| below {NEGLIGIBLE_GAP:g} decades); after "
                f"it the gap is {after:+.2f} decades.")
    removed = 1 - after / before
    if removed >= 1:
        flips = after * before < 0 and abs(after) >= NEGLIGIBLE_GAP
        return "Recalibration removes all of the gap" + (" and reverses its sign." if flips else ".")
    if removed >= 0:
        return f"Recalibration removes {100 * removed:.0f} % of the gap (in decades)."
    return f"Recalibration does not reduce the gap: it grows by {100 * -removed:.0f} % (in decades)."


def recalibration_texts(claim: Claim, quantity: str = "R_k") -> dict[str, str]:
    """The words a page says about a recalibrated claim (:func:`claim_shuffle_no_effect_recalibrated`,
    :func:`claim_channel_pooling_recalibrated`), from its details, each reading right whatever the data
    (never a "nan" on the page): ``measured_text`` (``"2 runs of 2 batch-norm networks (VGG11bn, VGG13bn)"``,
    the well-trained runs measured with and without shuffling, or ``"none that the claim can use"``: its
    reason says why), ``value_text`` (the claim's value in decades, or ``"not measured"``), ``gap_text`` (the
    late-layer gap of ``quantity`` before and after recalibration, :meth:`~stabkit.report.verdicts.Claim.change_text`,
    and how much of it recalibration removes, :func:`removed_text`: sentences) and ``parts_text`` (a
    sentence on its D_k and G_k parts before / after, decades; empty when none was measured)."""
    d = claim.details
    n, units, nets = int(d.get("n") or 0), int(d.get("n_units") or 0), _nets_of(claim)
    measured = (f"{n} run{'s' if n != 1 else ''} of {units} batch-norm network{'s' if units != 1 else ''}"
                + (f" ({', '.join(nets)})" if nets else "")) if n else "none that the claim can use"
    before, after = d.get("late_before"), d.get("late_after")
    if _finite(after):
        gap = (f"In the second half of the networks, shuffling with the unshuffled network's batch-norm statistics: "
               f"{claim.change_text('late_before', quantity)}; with re-estimated statistics: "
               f"{claim.change_text('late_after', quantity)}. {removed_text(before, after)}")
    else:
        gap = "No late-layer shuffling gap was measured with re-estimated batch-norm statistics."
    parts = [(p, d.get(f"late_{p}_before"), d.get(f"late_{p}_after")) for p in ("D", "G")]
    parts_text = ("Its D_k and G_k parts (decades, before / after recalibration): "
                  + ", ".join(f"{p}_k {_decades(b)} / {_decades(a)}" for p, b, a in parts) + "."
                  if any(_finite(b) or _finite(a) for _, b, a in parts) else "")
    value = f"{claim.value:.2f} decades" if _finite(claim.value) else "not measured"
    return {"measured_text": measured, "value_text": value, "gap_text": gap, "parts_text": parts_text}


def recalibration_table(claim: Claim, quantity: str = "R_k") -> MarkdownText:
    """Per batch-norm net of a recalibrated claim, as a markdown table (render it with ``{glue:md}`` and
    ``:format: myst``): the late-layer (second-half) shuffling gap of ``quantity`` before and after
    recalibration and its D_k and G_k parts (decades), the test error of the recalibrated network
    unshuffled and shuffled (%) and the net's own verdict; a missing number reads as an en dash. Without a
    net, one sentence saying so."""
    d = claim.details
    rows = []
    for net in _nets_of(claim):
        def err(key: str) -> str:
            v = d.get(f"{net}:test_err_{key}")
            return f"{100 * v:.1f}" if _finite(v) else "\u2013"

        rows.append({"network": net,
                     **{f"${q}$ gap {t}": _decades(d.get(f"{net}:late_{p}{t}"))
                        for q, p in ((quantity, ""), ("D_k", "D_"), ("G_k", "G_")) for t in ("before", "after")},
                     "test error, unshuffled (%)": err("unshuffled"), "test error, shuffled (%)": err("shuffled"),
                     "verdict": SHORT_VERDICTS.get(d.get(f"verdict:{net}"), d.get(f"verdict:{net}") or "\u2013")})
    return MarkdownText(markdown_table(pd.DataFrame(rows), empty="*No batch-norm network was measured with re-estimated "
                                                               "statistics at this scale.*"))


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


def layer_nv_vs_rk(inv: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Trained unshuffled nodes with both a rotation NV (``invariance``, unstratified) and an ``R_k``
    (``layers``), matched on run and layer: ``inv`` columns + ``R_f, D_f, G_f, log10_R`` and ``training``."""
    require_columns(inv, ["run", "layer", "mean_NV"], "inv")
    require_columns(layers, ["run", "layer", "R_f", "state"], "layers")
    plain = inv[~inv["stratified"].astype(bool)] if "stratified" in inv.columns else inv
    lay = select(layers, state="trained", shuffle=0)
    both = plain.merge(lay[["run", "layer", "R_f", "D_f", "G_f"]], on=["run", "layer"], how="inner")
    both = both[np.isfinite(both["mean_NV"]) & (both["R_f"] > 0)].copy()
    both["log10_R"] = np.log10(both["R_f"])
    if "training" not in both.columns:
        both["training"] = training_label(both)
    return both


def nv_rk_correlations(both: pd.DataFrame, min_layers: int = 4) -> pd.DataFrame:
    """Spearman correlation between a layer's rotation NV and ``log10 R_k`` per (net, training, seed),
    over runs with at least ``min_layers`` matched layers (``both``: :func:`layer_nv_vs_rk`)."""
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
