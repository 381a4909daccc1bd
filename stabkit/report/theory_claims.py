"""The claims on the constant-filter theory's depth laws (``book/methods.md``, "Constant-filter theory"):
a network whose filters are constant has ``D_k ~ k^-1``, ``G_k ~ k^(1/2)``, ``R_k ~ k^(-3/2)`` with stride 1
and ``D_k ~ s^-k``, ``G_k ~ s^k``, ``R_k ~ s^(-2k)`` with filter = stride = ``s``
(:func:`stabkit.theory.predicted_exponents`). Two pages test them: the theory page on the toy network
itself (exact, float64: the replicates are the noise draws) and the appendix on trained 1-D
scale-detection networks with filter = stride = 2 (the replicates are the training seeds).

An exponent is fitted per replicate (:func:`replicate_exponents`), and the claim "the exponent is the
predicted one" is decided from the mean and its t interval over the replicates against a band of
``+- tolerance`` around the prediction: inside the band, holds; outside, does not hold; across an edge
of the band, cannot be tested. Same conventions as :mod:`stabkit.report.stability_claims`: tidy tables
in, a :class:`~stabkit.report.verdicts.Claim` out.

Beside the claims, what the two pages show of the laws: the exponents of a table of layers
(:func:`layer_exponents`; the theory page fits the raw ``D``, ``G``, ``deno`` with it too), the appendix's
block profile (:func:`block_profile`) and its exponents (:func:`block_exponents`,
:func:`closer_to_prediction`), and the appendix's runs by task (:func:`task_names`, :func:`channels_text`,
:func:`task_outcomes`: the trained test error and the change of the output R_f, in words).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from stabkit import theory

from .narrative import change_sentence
from .stats import MIN_UNITS, t_interval
from .tables import config_values, geomean, require_columns, select
from .verdicts import Claim

__all__ = [
    "EXPONENT_TOLERANCE", "TRAINED_MAX_ERROR", "law_text", "layer_exponents", "replicate_exponents",
    "block_profile", "block_exponents", "closer_to_prediction", "task_names", "channels_text", "task_outcomes",
    "claim_constant_filter_exponent", "claim_trained_exponent",
]


#: Half-width of the band around a predicted exponent inside which a fitted one "follows the law": 0.2
#: per layer separates ``2^-k`` from ``2^(-0.8 k)``, a factor 2.6 after the appendix's 7 blocks.
EXPONENT_TOLERANCE = 0.2


#: Largest trained test error of an appendix network whose exponents test the theory (two balanced
#: classes, chance 50 %): a net that has not learnt the task has not learnt to pool either.
TRAINED_MAX_ERROR = 0.1


_QUANTITIES = {"D": "D_f", "G": "G_f", "R": "R_f"}


def _quantity(quantity: str) -> str:
    q = str(quantity).removesuffix("_f").removesuffix("_k")
    if q not in _QUANTITIES:
        raise ValueError(f"quantity must be one of 'D', 'G', 'R' (or 'D_f', 'G_f', 'R_f'), got {quantity!r}")
    return q


def law_text(quantity: str, kernel_size: int, stride: int) -> str:
    """The predicted law of ``quantity`` as inline TeX (the dashboard and the pages typeset it):
    ``"$D_k \\sim k^{-1}$"`` (stride 1), ``"$R_k \\sim 2^{-2k}$"`` (filter = stride = 2)."""
    q = _quantity(quantity)
    e = theory.predicted_exponents(kernel_size, stride)[q]
    if stride == 1:
        return f"${q}_k \\sim k^{{{e:g}}}$"
    power = {1.0: "k", -1.0: "-k"}.get(e, f"{e:g}k")
    return f"${q}_k \\sim {stride}^{{{power}}}$"


def layer_exponents(table: pd.DataFrame, stride: int, layer: str = "layer",
                    columns: Sequence[str] = ("D_f", "G_f", "R_f"), first_layer: int = 1,
                    last_layer: int | None = None) -> dict[str, float]:
    """Exponents of ``columns`` against the layer index, fitted by :func:`stabkit.theory.fit_exponents`.

    ``table``: one row per layer index (column ``layer``, an integer >= 1) holding up to three positive
    ``columns``. Stride 1: slope of ``log Q`` against ``log l``; stride ``s > 1``: slope of ``log_s Q``
    against ``l`` (the form of the constant-filter laws). Returns ``{column: exponent}``.
    """
    columns = list(columns)
    if not 1 <= len(columns) <= 3:
        raise ValueError(f"columns must name 1 to 3 columns, got {columns!r}")
    require_columns(table, [layer, *columns], "table")
    slots = ("D_f", "G_f", "R_f")
    t = pd.DataFrame({"layer": table[layer].to_numpy()})
    for i, slot in enumerate(slots):
        t[slot] = table[columns[min(i, len(columns) - 1)]].to_numpy(dtype=np.float64)
    fit = theory.fit_exponents(t, stride, first_layer=first_layer, last_layer=last_layer)
    return {c: fit[slot[0]] for c, slot in zip(columns, slots)}


def replicate_exponents(table: pd.DataFrame, stride: int, *, replicate: str = "seed", layer: str = "layer",
                        first_layer: int = 1, last_layer: int | None = None) -> pd.DataFrame:
    """Depth exponents of ``D_f``, ``G_f``, ``R_f`` of every replicate (:func:`layer_exponents`:
    stride 1, slope of ``log Q`` against ``log l``; stride ``s``, slope of ``log_s Q`` against ``l``).

    ``table``: one row per replicate and layer index (column ``layer``, integers >= 1; layer 0, the
    input, is left out by ``first_layer >= 1``). Returns one row per replicate: ``replicate``, ``D``, ``G``,
    ``R``, ``layers`` (the number of layers fitted)."""
    require_columns(table, [replicate, layer, *_QUANTITIES.values()], "table")
    rows = []
    for rep, g in table.groupby(replicate, sort=True):
        g = g[(g[layer] >= first_layer) & ((g[layer] <= last_layer) if last_layer is not None else True)]
        if len(g) < 2:
            continue
        fit = layer_exponents(g, stride, layer=layer, first_layer=first_layer, last_layer=last_layer)
        rows.append({replicate: rep, **{q: fit[c] for q, c in _QUANTITIES.items()}, "layers": int(len(g))})
    return pd.DataFrame(rows, columns=[replicate, *_QUANTITIES, "layers"])


def block_profile(layers: pd.DataFrame, pattern: str = r"features\.relu(\d+)",
                  quantities: Sequence[str] = ("D_f", "G_f", "R_f"), by: Sequence[str] = ("state",),
                  shuffle: int | None = 0) -> pd.DataFrame:
    """Geometric mean over runs of layer quantities at the nodes whose name matches ``pattern`` (its
    first group is the block index: the 1-D appendix network's blocks are its ReLU outputs): one row per
    ``by`` group and ``block``, what :func:`block_exponents` fits and
    :func:`stabkit.report.figures.block_profiles` draws."""
    require_columns(layers, ["layer", *quantities], "layers")
    rows = select(layers, shuffle=shuffle)
    rows = rows[rows["layer"].astype(str).str.fullmatch(pattern)]
    rows = rows.assign(block=rows["layer"].astype(str).str.extract(pattern, expand=False).astype(int))
    return geomean(rows, [*by, "block"], list(quantities)).sort_values([*by, "block"]).reset_index(drop=True)


def block_exponents(profile: pd.DataFrame, panels: Sequence[str], panel: str = "task_name", stride: int = 2,
                    states: Sequence[str] = ("init", "trained")) -> dict[tuple[str, str], dict[str, float]]:
    """The depth exponents of a block profile (:func:`block_profile` rows: ``block``,
    ``state``, ``panel``, ``D_f``, ``G_f``, ``R_f``; geometric means over the runs) per value of ``panel``
    and state: ``{(panel value, state): {"D": ..., "G": ..., "R": ...}}``, each the slope of ``log_stride
    Q`` against the block index (:func:`layer_exponents`), what
    :func:`closer_to_prediction` compares with the theory."""
    require_columns(profile, ["block", "state", panel, *_QUANTITIES.values()], "profile")
    out = {}
    for p in panels:
        for state in states:
            fit = layer_exponents(profile[(profile[panel] == p) & (profile["state"] == state)], stride, layer="block")
            out[(p, state)] = {c[0]: v for c, v in fit.items()}
    return out


def closer_to_prediction(exponents: dict, predicted: dict, tasks: dict) -> tuple[str, str]:
    """Which fitted exponents moved towards the prediction with training.

    ``exponents``: ``{(task label, state): {"D": ..., "G": ..., "R": ...}}`` for states ``init`` and
    ``trained``; ``predicted``: ``{"D": ..., ...}``; ``tasks``: ``{task id: task label}``. Returns two
    texts, e.g. ``("D (tasks 1 and 2), R (task 1)", "G (tasks 1 and 2)")`` (``"none"`` when empty).
    """
    closer, farther = [], []
    for q in predicted:
        moved = {tid: abs(exponents[(t, "trained")][q] - predicted[q]) < abs(exponents[(t, "init")][q] - predicted[q])
                 for tid, t in tasks.items()}
        for flag, bucket in ((True, closer), (False, farther)):
            ids = [str(tid) for tid, m in moved.items() if m == flag]
            if ids:
                bucket.append(f"{q} (task{'s' if len(ids) > 1 else ''} {' and '.join(ids)})")
    return ", ".join(closer) or "none", ", ".join(farther) or "none"


def task_names(df: pd.DataFrame, names: Mapping[int, str]) -> pd.Series:
    """The 1-D appendix's task of each row, by name: its configuration field ``task_options.task`` (1: are
    the two pixels close, 2: are they in the same block; read with
    :func:`~stabkit.report.tables.config_values`, whatever the table stores) mapped through ``names``
    (e.g. ``{1: "task 1 (distance)", 2: "task 2 (same block)"}``); a task ``names`` lacks gives NaN."""
    if not isinstance(names, Mapping) or not names:
        raise ValueError(f"names must be a mapping task number -> label such as {{1: 'task 1'}}, got {names!r}")
    return config_values(df, "task_options", "task").map(dict(names))


def channels_text(summary: pd.DataFrame) -> str:
    """The channel counts ``H`` of the 1-D appendix's networks, as text (``"32"``, ``"16, 32"``): the
    distinct ``net_options.width`` times ``width_factor`` of the runs of ``summary``, rounded."""
    require_columns(summary, ["width_factor"], "summary")
    widths = config_values(summary, "net_options", "width")
    return ", ".join(str(h) for h in sorted({int(round(w * f)) for w, f in zip(widths, summary["width_factor"])}))


def task_outcomes(output: pd.DataFrame, task: str = "task_name") -> pd.DataFrame:
    """What training did on each task of the 1-D appendix, from its ``output`` table (unshuffled rows; a
    ``task`` column such as :func:`task_names` gives): one row per task (the index) with ``test_err``
    (trained), ``R_f_init``, ``R_f_trained`` (each the mean over seeds of a seed's mean) and ``R_f_change``,
    the change of the output R_f with training in words (:func:`stabkit.report.narrative.change_sentence`
    of ``R_f_trained / R_f_init``: ``"R_f fell 25x"``)."""
    require_columns(output, [task, "seed", "state", "R_f", "test_err"], "output")
    rows = select(output, shuffle=0)
    tab = rows.pivot_table(index=[task, "seed"], columns="state", values=["R_f", "test_err"]).groupby(task).mean()
    out = pd.DataFrame(index=tab.index)
    have = set(tab.columns.get_level_values(1))
    nan = pd.Series(np.nan, index=tab.index)
    out["test_err"] = tab[("test_err", "trained")] if "trained" in have else nan
    out["R_f_init"] = tab[("R_f", "init")] if "init" in have else nan
    out["R_f_trained"] = tab[("R_f", "trained")] if "trained" in have else nan
    out["R_f_change"] = [change_sentence("R_f", float(tr / ini)) for tr, ini in zip(out["R_f_trained"], out["R_f_init"])]
    return out


def _band_decision(low: float, high: float, predicted: float, tolerance: float) -> tuple[bool, bool, str]:
    """``(holds, testable, reason)`` of "the exponent is ``predicted`` within ``tolerance``" from its
    interval ``[low, high]``: inside the band holds, outside it does not hold, across an edge cannot be
    tested."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return False, False, "no interval (fewer than 2 replicates)"
    if predicted - tolerance <= low and high <= predicted + tolerance:
        return True, True, ""
    if low > predicted + tolerance or high < predicted - tolerance:
        return False, True, ""
    return False, False, (f"the interval [{low:.3g}, {high:.3g}] crosses an edge of the band "
                          f"{predicted:g} +- {tolerance:g}")


def _exponent_claim(name: str, exps: pd.DataFrame, q: str, predicted: float, tolerance: float, *, statement: str,
                    rule: str, replicates: str, min_replicates: int, precondition: tuple[bool, str],
                    details: dict) -> Claim:
    mean, lo, hi, n = t_interval(exps[q] if q in exps.columns else [])
    holds, ok, reason = _band_decision(lo, hi, predicted, tolerance)
    if not precondition[0]:
        holds, ok, reason = False, False, precondition[1]
    elif n < min_replicates:
        holds, ok, reason = False, False, f"{n} {replicates} (need {min_replicates} for an interval)"
    details = {**details, "n": n, "replicates": replicates, "predicted": predicted, "tolerance": tolerance,
               "deviation": mean - predicted if np.isfinite(mean) else float("nan"), "unit": "exponent",
               "paper_value": f"{predicted:g} (constant-filter theory)", "reason": reason}
    return Claim(name, holds, mean, predicted, details, testable=ok, rule=rule, statement=statement,
                 ci_low=lo, ci_high=hi)


def _check_tolerance(tolerance: float) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < np.inf:
        raise ValueError(f"tolerance must be a finite number > 0 (an exponent), got {tolerance!r}")
    return float(tolerance)


def claim_constant_filter_exponent(replicates: pd.DataFrame, quantity: str, kernel_size: int, stride: int, *,
                                   tolerance: float = EXPONENT_TOLERANCE, first_layer: int = 1,
                                   last_layer: int | None = None, min_replicates: int = MIN_UNITS) -> Claim:
    """Theory page: the constant-filter network's ``quantity`` (``"D"``, ``"G"`` or ``"R"``) follows the
    predicted depth law (:func:`stabkit.theory.predicted_exponents`).

    ``replicates``: :func:`stabkit.theory.constant_filter_replicates` (one table per noise draw, column
    ``seed``). The exponent is fitted per draw over layers ``first_layer .. last_layer``
    (:func:`replicate_exponents`); ``value`` = its mean, with its 95 % t interval over the draws (``D_f``
    does not depend on the draw: its interval is a point). Holds if the interval lies within ``tolerance``
    of the prediction, does not hold if it lies outside; fewer than ``min_replicates`` draws: cannot be
    tested. Details: ``predicted``, ``deviation``, ``n`` (draws), ``tolerance``."""
    q = _quantity(quantity)
    tolerance = _check_tolerance(tolerance)
    pred = theory.predicted_exponents(kernel_size, stride)[q]
    exps = replicate_exponents(replicates, stride, first_layer=first_layer, last_layer=last_layer)
    fitted = (f"slope of log {q}_k against log k" if stride == 1 else f"slope of log_{stride} {q}_k against k")
    last = f"..{last_layer}" if last_layer is not None else " onwards"
    return _exponent_claim(
        f"constant_filter_exponent_{q}", exps, q, pred, tolerance,
        statement=f"Constant filters: {law_text(q, kernel_size, stride)}",
        rule=f"{fitted} (layers {first_layer}{last}) per noise draw; mean within {pred:g} +- {tolerance:g} with its "
             f"95 % t interval over at least {min_replicates} draws",
        replicates="noise draws", min_replicates=min_replicates, precondition=(True, ""),
        details={"kernel_size": kernel_size, "stride": stride, "first_layer": first_layer})


def claim_trained_exponent(layers: pd.DataFrame, output: pd.DataFrame, quantity: str, *, kernel_size: int = 2,
                           stride: int = 2, tolerance: float = EXPONENT_TOLERANCE, max_error: float = TRAINED_MAX_ERROR,
                           pattern: str = r"features\.relu(\d+)", replicate: str = "seed",
                           min_replicates: int = MIN_UNITS, error: str = "test_err",
                           blocks: Sequence[int] | None = None, **where) -> Claim:
    """Appendix: the trained 1-D networks' ``quantity`` follows the constant-filter law of filter =
    stride = ``stride`` against the block index.

    ``layers``: the run's ``layers`` table (the blocks are the nodes matching ``pattern``); ``output``: its
    ``output`` table (the trained test errors); ``where``: the rows to test (e.g. ``task_name=...``).
    Per ``replicate`` (seed; several runs of one seed averaged geometrically) the slope of ``log_2 Q``
    against the block index (``blocks``: the blocks fitted, default all); ``value`` = the mean slope with
    its 95 % t interval over the seeds, decided against ``predicted +- tolerance`` as
    :func:`claim_constant_filter_exponent`.

    Precondition (else "cannot be tested at this scale"): every trained network learnt the task (test
    error, shuffle 0, below ``max_error``) and at least ``min_replicates`` seeds. Details: ``predicted``,
    ``deviation``, ``init`` (the same mean slope at initialisation), ``max_test_err``, ``n`` (seeds)."""
    q = _quantity(quantity)
    tolerance = _check_tolerance(tolerance)
    if not (isinstance(max_error, (int, float)) and 0 < max_error <= 1):
        raise ValueError(f"max_error must be a test error in (0, 1], got {max_error!r}")
    require_columns(layers, ["layer", "state", replicate, *_QUANTITIES.values()], "layers")
    require_columns(output, ["state", error], "output")
    pred = theory.predicted_exponents(kernel_size, stride)[q]
    by = (replicate, "state")
    prof = block_profile(select(layers, **where), pattern=pattern, by=by)
    if blocks is not None:
        prof = prof[prof["block"].isin(list(blocks))]
    first = int(prof["block"].min()) if len(prof) else 1
    exps = {st: replicate_exponents(prof[prof["state"] == st], stride, replicate=replicate, layer="block",
                                    first_layer=max(1, first))
            for st in ("trained", "init")}
    errs = select(output, state="trained", shuffle=0, **where)[error].to_numpy(dtype=np.float64)
    errs = errs[np.isfinite(errs)]
    worst = float(errs.max()) if errs.size else float("nan")
    if not errs.size:
        pre = (False, "no trained network measured its test error")
    elif worst >= max_error:
        pre = (False, f"a trained network has {100 * worst:.1f} % test error (the theory describes networks that "
                      f"learnt the task: below {100 * max_error:g} %)")
    else:
        pre = (True, "")
    init = t_interval(exps["init"][q])[0] if len(exps["init"]) else float("nan")
    return _exponent_claim(
        f"trained_exponent_{q}", exps["trained"], q, pred, tolerance,
        statement=f"Trained 1-D nets follow constant filters: {law_text(q, kernel_size, stride)}",
        rule=f"precondition: every trained net below {100 * max_error:g} % test error, at least {min_replicates} "
             f"seeds; then slope of log_{stride} {q}_k against the block index per seed, mean within {pred:g} +- "
             f"{tolerance:g} with its 95 % t interval over the seeds",
        replicates="seeds", min_replicates=min_replicates, precondition=pre,
        details={"init": init, "max_test_err": worst, "stride": stride})
