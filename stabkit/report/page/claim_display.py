"""What a page shows of its claims: each glued under standard names and as one record for the book's
claims dashboard (:func:`~stabkit.report.page.glue_claim`, :func:`~stabkit.report.page.claim_record`), all
of them as a table (:func:`~stabkit.report.page.claims_table`) or counted in words
(:func:`~stabkit.report.page.verdict_counts`); and the note under a page's example images, which says what
generated examples can and cannot show (:func:`~stabkit.report.page.example_note`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..tables import MarkdownText
from ..verdicts import FAILS, HOLDS, UNTESTABLE, Claim
from .glued import echo, glue, quiet_glue, show_glue
from .loading import NAME_PATTERN, current_page


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def claim_record(prefix: str, claim: Any, *, page: str | None = None, figure: str | None = None,
                 scale: str | None = None, condition: str | None = None) -> dict[str, Any]:
    """The dashboard record of a claim: ``id``, ``key`` (``prefix``), ``page``, ``figure``, ``scale``,
    ``statement``, ``value``, ``ci_low``, ``ci_high``, ``threshold``, ``verdict``, ``rule`` (``None`` for
    a missing number), and from the claim's details where it has them: ``n`` (networks), ``n_units``
    (architectures), ``reason``, ``unit``, ``source`` (``"paper"``, ``"related"`` or ``"this project"``),
    ``paper_value``, ``against`` (architectures that go the other way). ``page`` and ``scale`` default to
    those of the last :func:`page` call.

    ``condition`` (e.g. ``"training noise std 30"``) is appended to the statement in parentheses: a page
    that checks one claim on several subsets (noise levels, tasks, training-set sizes) gives each row of
    the dashboard a statement of its own."""
    if condition is not None and (not isinstance(condition, str) or not condition.strip()):
        raise ValueError(f"condition must be a non-empty string or None, got {condition!r}")
    current = current_page()
    rec = claim.to_record()
    details = rec.pop("details", None) or {}
    # what the dashboard shows beside the value: the sample, the reason of an untestable verdict, the
    # per-architecture verdicts, where the statement comes from and the unit of the value
    for k in ("n", "n_units", "reason", "unit", "source", "paper_value", "against"):
        if details.get(k) not in (None, ""):
            rec[k] = details[k]
    if condition:
        rec["statement"] = f"{rec.get('statement') or rec['id']} ({condition.strip()})"
    pg = page or (current.name if current else None)
    return {"id": f"{pg}:{prefix}" if pg else prefix, "key": prefix, "page": pg, "figure": figure or pg,
            "scale": scale or (current.scale if current else None), **{k: v for k, v in rec.items() if k != "id"},
            "claim": rec["id"]}


def glue_claim(prefix: str, claim: Any, *, page: str | None = None, figure: str | None = None,
               scale: str | None = None, condition: str | None = None) -> dict[str, Any]:
    """Glue a :class:`~stabkit.report.verdicts.Claim` for the page text and the claims dashboard.

    Glued names: ``<prefix>_value``, ``<prefix>_verdict``, ``<prefix>_text`` (one sentence),
    ``<prefix>_rule``, ``<prefix>_threshold``, ``<prefix>_ci`` (``"[low, high]"`` or ``"not computed"``),
    ``<prefix>_why`` (``" (<reason>)"`` when the details give a ``reason``, else empty: it follows the
    verdict in the text), ``<prefix>_<key>`` for every detail whose key is a plain name, and ``<prefix>_claim``: the JSON text
    of :func:`claim_record` (hidden; ``display=False``), whose statement carries ``condition`` when given.
    Returns that record.
    """
    if not isinstance(prefix, str) or not NAME_PATTERN.match(prefix):
        raise ValueError(f"prefix must be a name of letters, digits, '_', '.' or '-', got {prefix!r}")
    if not all(hasattr(claim, a) for a in ("value", "verdict", "rule", "details", "to_record")):
        raise TypeError(f"claim must be a stabkit.report.verdicts.Claim, got {type(claim).__name__}")
    rec = claim_record(prefix, claim, page=page, figure=figure, scale=scale, condition=condition)
    lo, hi = claim.ci_low, claim.ci_high
    ci = f"[{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) and math.isfinite(hi) else "not computed"
    with quiet_glue(prefix):
        glue(f"{prefix}_value", claim.value)
        glue(f"{prefix}_verdict", claim.verdict)
        glue(f"{prefix}_text", claim.text)
        glue(f"{prefix}_rule", claim.rule)
        glue(f"{prefix}_threshold", claim.threshold)
        glue(f"{prefix}_ci", ci)
        for key, v in claim.details.items():
            if isinstance(key, str) and key.isidentifier():
                glue(f"{prefix}_{key}", v)
        reason = claim.details.get("reason")
        glue(f"{prefix}_why", f" ({reason})" if reason else "")
        glue(f"{prefix}_claim", json.dumps({k: _finite_or_none(v) for k, v in rec.items()}, default=str))
    if show_glue():  # one line per claim, not one per glued name
        echo(prefix, f"{claim.text}; 95 % interval {ci}")
    return rec


def claims_table(items: Sequence[Claim] | Mapping[str, Claim]) -> pd.DataFrame:
    """A page's claims as a table to display: one row per claim, ``claim``, ``value`` (rounded to 3
    decimals; an en dash when missing), ``rule``, ``verdict``.

    ``items``: claims (named by ``Claim.name``) or a mapping ``label -> Claim`` (named by the label).
    """
    pairs = items.items() if isinstance(items, Mapping) else ((c.name, c) for c in items)
    out = []
    for label, c in pairs:
        if not isinstance(c, Claim):
            raise ValueError(f"items must hold Claim objects, got {type(c).__name__} for {label!r}")
        value = float(c.value) if isinstance(c.value, (int, float, np.floating)) else math.nan
        # a missing value reads as a dash, never "NaN" (make check-book fails on NaN in a table)
        out.append({"claim": label, "value": round(value, 3) if math.isfinite(value) else "\u2013",
                    "rule": c.rule, "verdict": c.verdict})
    return pd.DataFrame(out, columns=["claim", "value", "rule", "verdict"])


def verdict_counts(claims: Sequence[Claim] | Mapping[str, Claim]) -> str:
    """The verdicts of ``claims`` counted, in words: ``"2 hold, 1 does not hold, 1 cannot be tested at
    this scale"`` (verdicts with no claim left out; ``"no claim"`` for none)."""
    items = list(claims.values()) if isinstance(claims, Mapping) else list(claims)
    counts = {v: sum(c.verdict == v for c in items) for v in (HOLDS, FAILS, UNTESTABLE)}
    words = {HOLDS: ("holds", "hold"), FAILS: ("does not hold", "do not hold"),
             UNTESTABLE: ("cannot be tested at this scale", "cannot be tested at this scale")}
    parts = [f"{n} {words[v][n != 1]}" for v, n in counts.items() if n]
    return ", ".join(parts) if parts else "no claim"


def example_note(generated: bool, real: str, instead: str) -> MarkdownText:
    """Markdown about a page's example images (render it with a ``{glue:md}`` directive and ``:format: myst``).

    ``real``: what the examples show when they are CIFAR-10 test images. When they are ``generated``
    (CIFAR-10 not found, :data:`stabkit.robustness.GENERATED_EXAMPLES`), a visible warning that they are not
    CIFAR-10 and how to provide the data, then ``instead``: text that claims only what a generated pattern
    can show (no object to recognise, no class)."""
    if not isinstance(generated, bool):
        raise TypeError(f"generated must be True or False, got {generated!r}")
    if not generated:
        return MarkdownText(real)  # text/markdown: what a {glue:md} directive renders
    return MarkdownText("```{warning}\nThese examples are **generated patterns, not CIFAR-10 images**: CIFAR-10 was not "
            "found and nothing is downloaded. They show what the transformation does to the pixels, not what "
            "it does to a photograph. To show CIFAR-10 test images, set `STABKIT_DATA` to a copy (torchvision's "
            "`cifar-10-batches-py` or a class-folder archive) and rebuild the page.\n```\n\n" + instead)
