"""The batch-norm control of the shuffle (``book/methods.md``, "Channel shuffling"): in batch-norm nets a
shuffled network keeps the running statistics of the unshuffled one, so part of a shuffle gap can be stale
statistics rather than lost channel pooling.

:func:`~stabkit.report.layer_claims.claim_shuffle_no_effect_recalibrated` (Fig. 6) and
:func:`~stabkit.report.layer_claims.claim_channel_pooling_recalibrated` (Fig. 3) apply the rules of
:func:`~stabkit.report.layer_claims.claim_shuffle_no_effect` and
:func:`~stabkit.report.layer_claims.claim_channel_pooling_second_half` to the batch-norm nets of the
``recalibrated`` table (every network measured with its batch-norm running statistics re-estimated after
shuffling); given the ``layers`` table too, they report the late-layer (second-half) gap of the same runs
before and after recalibration; :func:`~stabkit.report.layer_claims.recalibration_texts` and
:func:`~stabkit.report.layer_claims.recalibration_table` say it on the page.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ...runs.config import MEASUREMENT_FIELDS
from ..fits import PER_LAYER_COLUMNS, shuffle_gap
from ..selection import paper_rows
from ..tables import (
    RUN_ID_COLUMNS,
    MarkdownText,
    markdown_table,
    require_columns,
    run_columns,
    select,
)
from ..verdicts import FAILS, SHORT_VERDICTS, Claim, verdict
from .pooling import (
    CONVERGENCE_COLUMNS,
    MIN_OUTPUT_FALL,
    channel_pooling_rule,
    claim_channel_pooling_second_half,
    claim_shuffle_no_effect,
    half_gap,
    layer_shuffle_gaps,
    pooling_precondition,
    shuffle_no_effect_rule,
    well_trained_rows,
)


#: Recalibrated claims: the rows kept and the precondition's words (``book/methods.md``, "Channel shuffling").
_RECALIBRATED_SCOPE = ("batch-norm nets of the recalibrated table (batch-norm running statistics re-estimated after "
                       "shuffling)")
_NO_BATCHNORM = "no batch-norm network measured with recalibrated statistics"


def _flag(df: pd.DataFrame, column: str, missing: bool) -> np.ndarray:
    """Column ``column`` of ``df`` as a new boolean array, ``missing`` where it is NA (a new array: `&` on it
    never writes into the table's own memory)."""
    return df[column].astype("boolean").fillna(missing).to_numpy(dtype=bool, copy=True)


def _batchnorm_rows(recalibrated: pd.DataFrame) -> pd.DataFrame:
    """The rows of the batch-norm nets of a ``recalibrated`` table (a net without batch norm repeats its
    ``layers`` rows there: no control). An empty table (no run measured it) gives no rows."""
    if isinstance(recalibrated, pd.DataFrame) and recalibrated.empty:
        cols = list(dict.fromkeys([*recalibrated.columns, "batchnorm", "layer", "rel_depth", "state", "shuffle",
                                   "R_f", "D_f", "G_f"]))
        return pd.DataFrame(columns=cols)
    require_columns(recalibrated, ["batchnorm", "state", "shuffle"], "recalibrated")
    keep = _flag(recalibrated, "batchnorm", False)
    if "recalibrated" in recalibrated.columns:  # the rows measured with re-estimated statistics
        keep &= _flag(recalibrated, "recalibrated", False)
    return recalibrated[keep]


def _before(recalibrated: pd.DataFrame, layers: pd.DataFrame | None, rows: pd.DataFrame, probes: str,
            relu_convention: str) -> pd.DataFrame | None:
    """The "before" rows of the control: the same networks measured as ``layers`` does (batch statistics).
    The measurement writes them beside the recalibrated rows (``recalibrated`` False), so that a network is
    compared with itself; a table without them (an older control) falls back on ``layers``, matched on the
    training configuration, which is the same network only where the control did not train it again."""
    if isinstance(recalibrated, pd.DataFrame) and "recalibrated" in recalibrated.columns and len(recalibrated):
        own = recalibrated[_flag(recalibrated, "batchnorm", False) & ~_flag(recalibrated, "recalibrated", True)]
        if len(own):
            return well_trained_rows(paper_rows(own, probes, relu_convention))
    if layers is None:
        return None
    return _same_runs(well_trained_rows(paper_rows(layers, probes, relu_convention)), rows)


def _recalibrated_precondition(rows: pd.DataFrame, **where) -> tuple[bool, str, int, int]:
    """``(ok, reason, runs, nets)``: at least one batch-norm run (of ``rows``: batch-norm rows as the claims
    see them) measured trained with shuffle 0 and with shuffle 1; ``runs`` and ``nets`` count those."""
    tr = select(rows, state="trained", **where)
    if tr.empty:
        return False, _NO_BATCHNORM + " after training (runs that are not well trained are left out)", 0, 0
    keys = run_columns(tr, exclude=(*CONVERGENCE_COLUMNS, *PER_LAYER_COLUMNS))
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
    exclude = (*CONVERGENCE_COLUMNS, *PER_LAYER_COLUMNS, "probes", "relu_convention", "batchnorm", "images",
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
            out[f"late_{part}{tag}"] = half_gap(shuffle_gap(tab, q, split=split, by=(), **where), "second")
            if "net" in tab.columns:
                for net, g in shuffle_gap(tab, q, split=split, by=("net",), **where).groupby("net"):
                    out[f"{net}:late_{part}{tag}"] = half_gap(g, "second")
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


def _init_reference(after: pd.DataFrame, before: pd.DataFrame | None, quantity: str, **where) -> dict[str, float]:
    """The sensitivity check of the paper's batch-statistics convention at initialisation: per net, the output
    (deepest layer) ``quantity`` of the unshuffled network at init, mean over runs, with batch statistics
    (``before``: ``<net>:init_batch``) and with running statistics re-estimated on training images
    (``after``: ``<net>:init_running``)."""
    out: dict[str, float] = {}
    for tag, tab in (("running", after), ("batch", before)):
        if tab is None or tab.empty or quantity not in tab.columns or "net" not in tab.columns:
            continue
        init = select(tab, state="init", shuffle=0, **where)
        for net, g in init.groupby("net"):
            last = g[g["rel_depth"] == g["rel_depth"].max()]
            out[f"{net}:init_{tag}"] = float(np.exp(np.log(last[quantity].astype(float)).mean()))
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
    decades with training (:data:`~stabkit.report.layer_claims.pooling.MIN_OUTPUT_FALL`, both states of the recalibrated table).

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
    rows = well_trained_rows(paper_rows(bn, probes, relu_convention))
    pre = (False, _NO_BATCHNORM, 0, 0) if bn.empty else _recalibrated_precondition(rows, **where)
    base = claim_shuffle_no_effect(bn, quantity, tolerance, split, probes, relu_convention, min_fall, **where)
    details: dict = {}
    parts = [q for q in (quantity, "D_f", "G_f") if q in rows.columns]
    gaps = layer_shuffle_gaps(rows, list(dict.fromkeys(parts)), **where).dropna(subset=[f"gap_{quantity}"])
    if "net" in gaps.columns:
        for net, g in gaps.groupby("net"):
            worst = float(g[f"gap_{quantity}"].abs().max())
            net_ok = pooling_precondition(rows, quantity, min_fall, **{**where, "net": net})[0]
            details[f"decades:{net}"] = worst
            details[f"verdict:{net}"] = verdict(worst < tolerance, net_ok)
    before = _before(recalibrated, layers, rows, probes, relu_convention)
    details["largest_before"] = float("nan")
    if before is not None and quantity in before.columns:
        b = layer_shuffle_gaps(before, [quantity], **where)[f"gap_{quantity}"].abs()
        details["largest_before"] = float(b.max()) if b.notna().any() else float("nan")
    details.update(_late_gap_details(rows, before, quantity, split, **where), **_test_errors(rows, **where),
                   **_init_reference(bn, before, quantity, **where))
    return _recalibrated(base, "shuffle_no_effect_recalibrated",
                         "Shuffling channels changes nothing on scale detection, once batch-norm statistics are "
                         "re-estimated", shuffle_no_effect_rule(quantity, tolerance, min_fall), pre, details)


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
    rows = well_trained_rows(paper_rows(bn, probes, relu_convention))
    pre = (False, _NO_BATCHNORM, 0, 0) if bn.empty else _recalibrated_precondition(rows, **where)
    base = claim_channel_pooling_second_half(bn, quantity, margin, split, probes, relu_convention, min_fall, **where)
    before = _before(recalibrated, layers, rows, probes, relu_convention)
    details = {**_late_gap_details(rows, before, quantity, split, **where), **_test_errors(rows, **where),
               **_init_reference(bn, before, quantity, **where)}
    return _recalibrated(base, "channel_pooling_second_half_recalibrated",
                         "Channel pooling happens in the second half of the network, once batch-norm statistics "
                         "are re-estimated", channel_pooling_rule(quantity, margin, min_fall), pre, details)


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
    :data:`~stabkit.report.layer_claims.control.NEGLIGIBLE_GAP` before recalibration leaves nothing to remove; a missing number says which."""
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
    sentence on its D_k and G_k parts before / after, decades; empty when none was measured) and ``init_text``
    (the output R_f at initialisation with batch statistics and with re-estimated running statistics, per
    net: the sensitivity check of the paper's convention; empty when not measured)."""
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
    init = [(net, d.get(f"{net}:init_batch"), d.get(f"{net}:init_running")) for net in nets]
    init = [(net, b, r) for net, b, r in init if _finite(b) and _finite(r)]
    init_text = ("At initialisation (the sensitivity check of the paper's convention of measuring with batch "
                 "statistics), the output R_f with batch statistics / with re-estimated running statistics: "
                 + "; ".join(f"{net} {b:.2g} / {r:.2g}" for net, b, r in init) + "." if init else "")
    return {"measured_text": measured, "value_text": value, "gap_text": gap, "parts_text": parts_text,
            "init_text": init_text}


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

