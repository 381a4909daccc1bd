"""What a claim check returns: :class:`Claim`, the three verdicts, and a claim in words (its sentence, a
brief form for a list, its per-architecture verdicts, a detail's change as a sentence: ``Claim`` methods).
The claims themselves are in the ``*_claims`` modules: :mod:`~stabkit.report.stability_claims`,
:mod:`~stabkit.report.layer_claims`, :mod:`~stabkit.report.robustness_claims`,
:mod:`~stabkit.report.theory_claims`; a page shows its claims as a table with
:func:`stabkit.report.page.claims_table`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .narrative import change_sentence

__all__ = ["HOLDS", "FAILS", "UNTESTABLE", "UNITS", "PAPER_VALUES", "unit_of", "verdict", "Claim", "SHORT_VERDICTS"]

HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "cannot be tested at this scale"


#: The unit of a claim's ``value``, by claim name (prefix match: ``sqrt_law_task_err`` -> ``sqrt_law``).
UNITS = {"R_f_falls": "decades (log10 trained / init)", "D_f_falls": "decades (log10 trained / init)",
         "G_f_grows": "factor (trained / init)", "G_f_grows_noisy": "factor (trained / init)", "R_f_init_order_one": "R_f (geometric mean)",
         "test_err_vs_R_f": "Pearson r", "task_err_vs_R_f": "Pearson r", "sqrt_law": "exponent b",
         "error_correlation_each_noise": "Pearson r (smallest)", "G_f_falls_with_noise": "Pearson r",
         "channel_pooling_second_half": "decades", "spatial_pooling_first_half": "decades",
         "shuffle_no_effect": "decades (largest gap)", "R_k_falls_with_depth": "decades (slope of log10 R_k, input to output)", "spectra_concentrate": "factor (trained / init)"}


#: What the paper (or the 2021 paper) gives for a claim, where it gives a number.
PAPER_VALUES = {"R_f_init_order_one": "about 1", "sqrt_law": "b = 1/2, a about 0.2 (2021 paper)",
                "test_err_vs_R_f": "positive (figure)", "task_err_vs_R_f": "positive (figure)"}


def unit_of(name: str, table: dict[str, str] | None = None) -> str:
    """The entry of ``table`` (default :data:`UNITS`) for claim ``name`` (exact, else the longest prefix
    followed by ``_``); empty when none."""
    table = UNITS if table is None else table
    if name in table:
        return table[name]
    hits = [k for k in table if name.startswith(k + "_")]
    return table[max(hits, key=len)] if hits else ""


def verdict(holds: bool, testable: bool = True) -> str:
    """``"holds"`` if ``holds`` else ``"does not hold"`` (the string glued into the page text);
    ``"cannot be tested at this scale"`` if not ``testable`` (too few runs or rows)."""
    if not testable:
        return UNTESTABLE
    return HOLDS if bool(holds) else FAILS


#: Verdicts in a list of many (each phrase once per sentence: "cannot be tested at this scale" is long).
SHORT_VERDICTS = {HOLDS: "holds", FAILS: "does not hold", UNTESTABLE: "cannot be tested"}


def _num(v, fmt: str = ".2f") -> str:
    """``v`` formatted, or an en dash for a missing number (never "nan" on a page)."""
    return format(v, fmt) if isinstance(v, (int, float, np.floating)) and np.isfinite(v) else "\u2013"


@dataclass(frozen=True)
class Claim:
    """Outcome of one claim check.

    ``name``: short identifier (the claim's id on the dashboard); ``holds``: the computed truth value;
    ``value``: the headline number the decision is based on; ``threshold``: what it was compared with;
    ``details``: further numbers (JSON-serialisable floats / ints / strings), e.g. per-net values;
    ``testable``: False when the tables hold too little to decide (then ``holds`` is False and ``value``
    usually nan); ``rule``: the test in words, e.g. ``"log10 geomean(R_f trained / init) <= -1"``;
    ``statement``: what the paper claims, in one line; ``ci_low``, ``ci_high``: a confidence interval of
    ``value`` (``nan`` when none was computed).
    """

    name: str
    holds: bool
    value: float
    threshold: float
    details: dict[str, Any] = field(default_factory=dict)
    testable: bool = True
    rule: str = ""
    statement: str = ""
    ci_low: float = math.nan
    ci_high: float = math.nan

    @property
    def verdict(self) -> str:
        """``"holds"``, ``"does not hold"`` or ``"cannot be tested at this scale"``."""
        return verdict(self.holds, self.testable)

    @property
    def text(self) -> str:
        """One sentence for a page: ``"<statement>: <verdict> (value v, rule: ...)"``."""
        head = self.statement or self.name
        return f"{head}: {self.verdict} (value {self.value:.3g}; rule: {self.rule})"

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready record: ``id``, ``statement``, ``value``, ``ci_low``, ``ci_high``, ``threshold``,
        ``verdict``, ``rule``, ``details`` (``nan`` becomes ``None``)."""
        def num(v):
            v = float(v)
            return v if math.isfinite(v) else None

        details = {k: (num(v) if isinstance(v, (float, np.floating)) else
                       int(v) if isinstance(v, (np.integer,)) else v) for k, v in self.details.items()}
        details.setdefault("unit", unit_of(self.name))
        details.setdefault("paper_value", unit_of(self.name, PAPER_VALUES))
        return {"id": self.name, "statement": self.statement, "value": num(self.value),
                "ci_low": num(self.ci_low), "ci_high": num(self.ci_high), "threshold": num(self.threshold),
                "verdict": self.verdict, "rule": self.rule, "details": details}

    def brief(self, symbol: str = "r") -> str:
        """The claim in a few words for a list: ``"r = 0.78 [-0.06, 0.98], n = 6 (6 architectures), cannot be
        tested"`` (``symbol`` names the value; missing numbers as an en dash, the short verdict)."""
        n = self.details.get("n")
        units = self.details.get("n_units")
        sample = f", n = {n}" + (f" ({units} architectures)" if units is not None else "") if n is not None else ""
        return (f"{symbol} = {_num(self.value)} [{_num(self.ci_low)}, {_num(self.ci_high)}]{sample}, "
                f"{SHORT_VERDICTS.get(self.verdict, self.verdict)}")

    def _per_net(self) -> list[tuple[str, str]]:
        """``(net, verdict)`` of the details' ``verdict:<net>`` entries, in their order."""
        return [(key.split(":", 1)[1], v) for key, v in self.details.items()
                if isinstance(key, str) and key.startswith("verdict:")]

    def per_net_text(self) -> str:
        """The per-architecture verdicts of a pooled claim with their numbers: ``"AlexNet -0.47 decades (does
        not hold); VGG11bn -2.69 decades (holds)"`` (the number from the details ``decades:<net>``,
        ``<net>:shuffled`` or ``slope:<net>``; ``"none"`` without per-architecture verdicts)."""
        parts = []
        for net, v in self._per_net():
            dec = self.details.get(f"decades:{net}", self.details.get(f"{net}:shuffled",
                                                                      self.details.get(f"slope:{net}")))
            num = f" {dec:+.2f} decades" if isinstance(dec, (int, float)) and np.isfinite(dec) else ""
            parts.append(f"{net}{num} ({SHORT_VERDICTS.get(v, v)})")
        return "; ".join(parts) if parts else "none"

    def per_net_verdicts(self) -> str:
        """The per-architecture verdicts alone, in full: ``"AlexNet: does not hold; VGG11bn: holds"``
        (``"none"`` without them)."""
        return "; ".join(f"{net}: {v}" for net, v in self._per_net()) or "none"

    def change_text(self, key: str, quantity: str) -> str:
        """The detail ``key`` (a change in decades, ``log10`` of a ratio) as a sentence about ``quantity``
        (:func:`stabkit.report.narrative.change_sentence`): ``"R_k rose 3.2x"`` for 0.5 decades, ``"R_k:
        not measured"`` when the detail is missing or not a finite number."""
        decades = self.details.get(key)
        if not (isinstance(decades, (int, float)) and math.isfinite(decades)):
            return f"{quantity}: not measured"
        return change_sentence(quantity, 10.0 ** decades)
