"""Claim, its text and the verdict words (stabkit.report.verdicts); the claims table of a page."""
from __future__ import annotations

import numpy as np

from stabkit.report import verdicts
from stabkit.report.page import claims_table, verdict_counts
from stabkit.report.verdicts import Claim, verdict


def test_verdict_strings():
    assert verdict(True) == "holds" and verdict(False) == "does not hold"
    assert verdict(np.bool_(True)) == "holds"


def test_claims_table_shows_a_dash_not_nan():
    t = claims_table({"x": verdicts.Claim("x", False, float("nan"), 1.0, testable=False),
                      "y": verdicts.Claim("y", True, 0.12345, 1.0)})
    assert list(t["value"]) == ["\u2013", 0.123] and "nan" not in t.to_html().lower()


def test_verdict_counts():
    claims = [Claim("a", True, 1.0, 0.0), Claim("b", True, 1.0, 0.0), Claim("c", False, 1.0, 0.0),
              Claim("d", False, float("nan"), 0.0, testable=False)]
    assert verdict_counts(claims) == "2 hold, 1 does not hold, 1 cannot be tested at this scale"
    assert verdict_counts({"a": claims[0]}) == "1 holds" and verdict_counts([]) == "no claim"


def test_claim_brief():
    c = Claim("corr", False, 0.781, 0.5, {"n": 6, "n_units": 6}, testable=False, ci_low=-0.06, ci_high=0.98)
    assert c.brief() == "r = 0.78 [-0.06, 0.98], n = 6 (6 architectures), cannot be tested"
    assert Claim("law", True, float("nan"), 0.0).brief(symbol="slope") == "slope = \u2013 [\u2013, \u2013], holds"


def test_claim_per_net_text_and_verdicts():
    c = Claim("R_f_falls", False, -1.2, -1.0, {"verdict:AlexNet": verdicts.FAILS, "decades:AlexNet": -0.47,
                                               "verdict:VGG11bn": verdicts.HOLDS, "decades:VGG11bn": -2.69,
                                               "verdict:LeNet": verdicts.UNTESTABLE})
    assert c.per_net_text() == ("AlexNet -0.47 decades (does not hold); VGG11bn -2.69 decades (holds); LeNet "
                                "(cannot be tested)")
    assert c.per_net_verdicts() == "AlexNet: does not hold; VGG11bn: holds; LeNet: cannot be tested at this scale"
    bare = Claim("x", True, 1.0, 0.0)
    assert bare.per_net_text() == "none" and bare.per_net_verdicts() == "none"
    shuffled = Claim("spatial", True, 1.0, 0.0, {"verdict:VGG11": verdicts.HOLDS, "VGG11:shuffled": -0.5})
    assert shuffled.per_net_text() == "VGG11 -0.50 decades (holds)"


def test_claim_change_text():
    c = Claim("channel", True, 1.0, 0.0, {"first": 0.5, "second": -2.5, "missing": float("nan")})
    assert c.change_text("first", "R_k") == "R_k rose 3.2x"
    assert c.change_text("second", "R_k") == "R_k fell 316x (2.5 decades)"
    assert c.change_text("missing", "R_k") == c.change_text("absent", "R_k") == "R_k: not measured"
