"""How a change is said: the direction and the factor of a ratio ("R_f rose 3.3x", never "typically falls
less"), the words of every sentence a page glues about a change. The sentences built on the run tables use
them: the story of the output stabilities' change with training (:func:`stabkit.report.stability_claims.ratio_story`,
where a ratio moves because of its denominator: the parts ``D``, ``G`` and ``deno``, ``book/methods.md``,
"Stabilities"), a claim's detail in words (:meth:`stabkit.report.verdicts.Claim.change_text`).
"""
from __future__ import annotations

import math

__all__ = ["SAME_TOLERANCE", "factor_text", "change_sentence"]


#: A change smaller than this (relative) reads "stayed within ...".
SAME_TOLERANCE = 0.1


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
