"""Claim, the verdict words and the claims table (stabkit.report.verdicts)."""
from __future__ import annotations

import numpy as np

from stabkit.report import verdicts
from stabkit.report.verdicts import verdict


def test_verdict_strings():
    assert verdict(True) == "holds" and verdict(False) == "does not hold"
    assert verdict(np.bool_(True)) == "holds"


def test_claims_table_shows_a_dash_not_nan():
    t = verdicts.claims_table({"x": verdicts.Claim("x", False, float("nan"), 1.0, testable=False),
                             "y": verdicts.Claim("y", True, 0.12345, 1.0)})
    assert list(t["value"]) == ["\u2013", 0.123] and "nan" not in t.to_html().lower()
