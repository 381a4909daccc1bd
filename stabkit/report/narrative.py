"""Sentences that say what happened in the data: the direction and the factor of a change ("R_f rose
3.3x", never "typically falls less"), and, where a ratio moves because of its denominator, the parts
``D``, ``G`` and the denominator ``deno`` (``book/methods.md``, "Stabilities").

The numbers come from :mod:`stabkit.report.fits`; a page glues the
returned strings.
"""
from __future__ import annotations

import math

import pandas as pd

from .fits import ratio_stats, trained_init_factors, trained_over_init

__all__ = [
    "SAME_TOLERANCE", "DENOMINATOR_NAMES", "factor_text", "change_sentence", "decades_sentence",
    "training_change", "explain_ratio", "ratio_story", "early_fits",
]


#: A change smaller than this (relative) reads "stayed within ...".
SAME_TOLERANCE = 0.1


#: What the denominator of a ratio is, in words.
DENOMINATOR_NAMES = {"deno": "the spread of the outputs across images (the denominator)"}


_PARTS = {"D_f": ("D", "deno"), "G_f": ("G", "deno"), "R_f": ("D", "G")}


def factor_text(ratio: float) -> str:
    """A factor as text: ``3.3x``, ``25x``, ``1.2e+03x`` (the factor is >= 1: ``ratio`` or its inverse)."""
    f = ratio if ratio >= 1 else 1.0 / ratio
    if f >= 1000:
        return f"{f:.2g}x".replace("e+0", "e")
    return f"{f:.2g}x" if f < 10 else f"{f:.0f}x"


def change_sentence(quantity: str, ratio: float, tolerance: float = SAME_TOLERANCE) -> str:
    """``"<quantity> rose 3.3x"`` / ``"fell 250x (2.4 decades)"`` / ``"stayed within 10 %"`` for a
    ratio after / before; ``"<quantity>: not measured"`` for nan."""
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0):
        return f"{quantity}: not measured"
    if abs(ratio - 1) <= tolerance:
        return f"{quantity} stayed within {100 * tolerance:g} % ({ratio:.2f}x)"
    verb = "rose" if ratio > 1 else "fell"
    dec = abs(math.log10(ratio))
    tail = f" ({dec:.1f} decades)" if dec >= 2 else ""
    return f"{quantity} {verb} {factor_text(ratio)}{tail}"


def decades_sentence(quantity: str, decades: float, tolerance: float = SAME_TOLERANCE) -> str:
    """:func:`change_sentence` of a change given in decades (``log10`` of the ratio), e.g. the mid-depth
    change of R_k on Fig. 3: ``"R_k rose 3.2x"`` where 0.5 decades."""
    if not (isinstance(decades, (int, float)) and math.isfinite(decades)):
        return f"{quantity}: not measured"
    return change_sentence(quantity, 10.0 ** decades, tolerance)


def training_change(output: pd.DataFrame, quantity: str = "R_f", **where) -> str:
    """What training did to ``quantity``: ``"R_f rose 3.3x with training (geometric mean over 8 runs,
    from 0.12 to 0.4)"``."""
    t = trained_over_init(output, quantity, **where)
    st = ratio_stats(t["ratio"])
    if st["n"] == 0:
        return f"{quantity}: no run has both states"
    init, tr = ratio_stats(t["init"])["geomean"], ratio_stats(t["trained"])["geomean"]
    return (f"{change_sentence(quantity, st['geomean'])} with training (geometric mean over {st['n']} "
            f"run{'s' if st['n'] != 1 else ''}, from {init:.2g} to {tr:.2g})")


def explain_ratio(parts: dict[str, float], quantity: str = "R_f") -> dict[str, str | bool]:
    """Why a ratio moved, from :func:`stabkit.report.fits.trained_init_factors` (trained / init per part).

    Returns ``text`` (e.g. ``"D_f fell 12x because the spread of the outputs across images (the
    denominator) rose 20x, while D rose 1.7x"``), ``by_denominator`` (True when the denominator moved more,
    in decades, than the numerator) and ``parts`` (``"D rose 1.7x; G rose 5x; deno rose 20x"``)."""
    if quantity not in _PARTS:
        raise ValueError(f"quantity must be one of {sorted(_PARTS)}, got {quantity!r}")
    num, den = _PARTS[quantity]
    r, rn, rd = (parts.get(k, float("nan")) for k in (quantity, num, den))
    listed = "; ".join(change_sentence(k, parts.get(k, float("nan"))) for k in ("D", "G", "deno"))
    finite = all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (r, rn, rd))
    if not finite:
        return {"text": change_sentence(quantity, r), "by_denominator": False, "parts": listed}
    by_den = abs(math.log10(rd)) > abs(math.log10(rn))
    den_name = DENOMINATOR_NAMES.get(den, den)
    head = change_sentence(quantity, r)
    if by_den:
        text = f"{head} because {change_sentence(den_name, rd)}, while {change_sentence(num, rn)}"
    else:
        text = f"{head}: {change_sentence(num, rn)} and {change_sentence(den_name, rd)}"
    return {"text": text, "by_denominator": bool(by_den), "parts": listed}


def ratio_story(output: pd.DataFrame, quantities=("D_f", "G_f", "R_f"), **where) -> dict[str, str | bool]:
    """:func:`explain_ratio` of each of ``quantities`` over the runs of ``output`` (``where``: column
    equalities, e.g. ``noise_std=0.0``): ``{"<q>": text, "<q>_by_denominator": bool, "parts": ...}``."""
    parts = trained_init_factors(output, **where)
    out: dict[str, str | bool] = {}
    for q in quantities:
        e = explain_ratio(parts, q)
        out[q] = e["text"]
        out[f"{q}_by_denominator"] = e["by_denominator"]
        out["parts"] = e["parts"]
    return out


def early_fits(metrics: pd.DataFrame, threshold: float = 0.1) -> str:
    """The runs that stopped at zero training loss with a test error above ``threshold`` (a fraction), in
    one sentence: ``"VGG13bn seed 2 at epoch 6 (test error 35.6 %, test loss 5.7e+03 at epoch 1, 6.38 at
    the stop)"``, or a sentence saying there is none. ``metrics``: the per-epoch table of the runs (columns
    ``run``, ``net``, ``seed``, ``epoch``, ``train_loss``, ``test_err``, ``test_loss``)."""
    if not isinstance(metrics, pd.DataFrame):
        raise ValueError(f"metrics must be a pandas DataFrame, got {type(metrics).__name__}")
    need = ["run", "net", "seed", "epoch", "train_loss", "test_err", "test_loss"]
    missing = [c for c in need if c not in metrics.columns]
    if missing:
        raise ValueError(f"metrics lacks column(s) {missing} (has {list(metrics.columns)})")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be a fraction in (0, 1), got {threshold!r}")
    found = []
    for _, g in metrics.sort_values("epoch").groupby("run", sort=False):
        last, first = g.iloc[-1], g.iloc[0]
        if last["train_loss"] == 0.0 and last["test_err"] > threshold:
            found.append((str(last["net"]), int(last["seed"]),
                          f"{last['net']} seed {int(last['seed'])} at epoch {int(last['epoch'])} (test error "
                          f"{100 * last['test_err']:.1f} %, test loss {first['test_loss']:.3g} at epoch "
                          f"{int(first['epoch'])}, {last['test_loss']:.3g} at the stop)"))
    if not found:
        return f"No run stopped at zero training loss with a test error above {100 * threshold:.0f} %."
    return (f"Stopped at zero training loss with a test error above {100 * threshold:.0f} %: "
            + "; ".join(text for *_, text in sorted(found)) + ".")
