"""The constant-filter exponent claims (stabkit.report.theory_claims) on tables whose exponents are known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stabkit import theory
from stabkit.report import theory_claims, verdicts
from stabkit.report.theory_claims import (claim_constant_filter_exponent, claim_trained_exponent, law_text,
                                          replicate_exponents)


def _law_table(d: float = -1.0, g: float = 1.0, seeds=(0, 1, 2), jitter: float = 0.01, depth: int = 7,
               column: str = "layer") -> pd.DataFrame:
    """Per seed and layer 0..depth: D_f = 2**(d l), G_f = 2**((g + jitter * (seed - 1)) l), R_f = D_f / G_f."""
    rows = []
    for s in seeds:
        for ell in range(depth + 1):
            D, G = 2.0 ** (d * ell), 2.0 ** ((g + jitter * (s - 1)) * ell)
            rows.append({"seed": s, column: ell, "D_f": D, "G_f": G, "R_f": D / G})
    return pd.DataFrame(rows)


def test_law_text_and_quantity_names():
    assert law_text("D", 3, 1) == r"$D_k \sim k^{-1}$" and law_text("G", 3, 1) == r"$G_k \sim k^{0.5}$"
    assert law_text("R_f", 2, 2) == r"$R_k \sim 2^{-2k}$" and law_text("G", 2, 2) == r"$G_k \sim 2^{k}$"
    with pytest.raises(ValueError, match="quantity"):
        law_text("X", 2, 2)


def test_replicate_exponents_fit_one_law_per_replicate():
    exps = replicate_exponents(_law_table(), 2)
    assert list(exps["seed"]) == [0, 1, 2] and (exps["layers"] == 7).all()  # layer 0 (the input) left out
    np.testing.assert_allclose(exps["D"], -1.0)
    np.testing.assert_allclose(exps["G"], [0.99, 1.0, 1.01])
    np.testing.assert_allclose(exps["R"], [-1.99, -2.0, -2.01])


def test_constant_filter_exponent_holds_fails_or_cannot_be_tested():
    c = claim_constant_filter_exponent(_law_table(), "G", 2, 2)
    assert c.verdict == verdicts.HOLDS and c.value == pytest.approx(1.0) and c.threshold == 1.0
    assert c.ci_low < 1.0 < c.ci_high and c.details["n"] == 3 and c.details["replicates"] == "noise draws"
    d = claim_constant_filter_exponent(_law_table(), "D", 2, 2)
    assert d.verdict == verdicts.HOLDS and d.ci_low == d.ci_high == pytest.approx(-1.0)  # D: the same in every draw
    # a law far from the prediction
    c = claim_constant_filter_exponent(_law_table(d=-0.4), "D", 2, 2)
    assert c.verdict == verdicts.FAILS and c.details["deviation"] == pytest.approx(0.6)
    # draws that disagree: the interval crosses the edge of the band
    c = claim_constant_filter_exponent(_law_table(jitter=0.3), "G", 2, 2)
    assert c.verdict == verdicts.UNTESTABLE and "crosses an edge" in c.details["reason"]
    # too few draws for an interval
    c = claim_constant_filter_exponent(_law_table(seeds=(0, 1)), "G", 2, 2)
    assert c.verdict == verdicts.UNTESTABLE and c.details["reason"] == "2 noise draws (need 3 for an interval)"
    with pytest.raises(ValueError, match="tolerance"):
        claim_constant_filter_exponent(_law_table(), "G", 2, 2, tolerance=0)


def test_the_constant_filter_network_follows_its_stride_2_laws():
    draws = theory.constant_filter_replicates(2, 2, 6, seeds=3)
    for q in "DGR":
        c = claim_constant_filter_exponent(draws, q, 2, 2, first_layer=1)
        assert c.verdict == verdicts.HOLDS, (q, c.value, c.ci_low, c.ci_high)
        assert abs(c.details["deviation"]) < theory_claims.EXPONENT_TOLERANCE


def _trained(d: float, g: float, errors=(0.01, 0.0, 0.02), task: str = "task 1") -> tuple[pd.DataFrame, pd.DataFrame]:
    """A 1-D net's layers (blocks features.relu1..7 with a law per seed, plus a conv node that is not a
    block) and output tables; init: flat."""
    law = _law_table(d=d, g=g, depth=7).query("layer >= 1")
    rows = []
    for r in law.itertuples():
        for state, (D, G) in (("trained", (r.D_f, r.G_f)), ("init", (1.0, 1.0))):
            for node in (f"features.relu{r.layer}", f"features.conv{r.layer}"):
                rows.append({"task_name": task, "seed": r.seed, "layer": node, "state": state, "shuffle": 0,
                             "D_f": D if "relu" in node else 1e3, "G_f": G, "R_f": D / G if "relu" in node else 1e3})
    out = pd.DataFrame([{"task_name": task, "seed": s, "state": st, "shuffle": 0,
                         "test_err": e if st == "trained" else 0.5} for s, e in zip((0, 1, 2), errors)
                        for st in ("init", "trained")])
    return pd.DataFrame(rows), out


def test_trained_exponent_compares_the_block_slopes_with_the_theory():
    layers, output = _trained(-1.0, 1.0)
    c = claim_trained_exponent(layers, output, "R")
    assert c.verdict == verdicts.HOLDS and c.value == pytest.approx(-2.0) and c.details["n"] == 3
    assert c.details["init"] == pytest.approx(0.0) and c.details["max_test_err"] == pytest.approx(0.02)
    assert c.details["replicates"] == "seeds" and "task 1" not in c.statement
    # the appendix's trained slopes (about -0.36 / -0.09 / -0.27): far from -1 / +1 / -2
    layers, output = _trained(-0.36, 0.09)
    for q in "DGR":
        assert claim_trained_exponent(layers, output, q).verdict == verdicts.FAILS
    # where= selects the task
    other, _ = _trained(-1.0, 1.0, task="task 2")
    both = pd.concat([layers, other])
    assert claim_trained_exponent(both, output, "D", task_name="task 1").value == pytest.approx(-0.36)


def test_trained_exponent_cannot_be_tested_on_networks_that_did_not_learn_the_task():
    layers, output = _trained(-1.0, 1.0, errors=(0.01, 0.3, 0.02))
    c = claim_trained_exponent(layers, output, "D")
    assert c.verdict == verdicts.UNTESTABLE and "30.0 % test error" in c.details["reason"]
    layers, output = _trained(-1.0, 1.0)
    c = claim_trained_exponent(layers[layers["seed"] < 2], output, "D")
    assert c.verdict == verdicts.UNTESTABLE and c.details["reason"] == "2 seeds (need 3 for an interval)"
    with pytest.raises(ValueError, match="max_error"):
        claim_trained_exponent(layers, output, "D", max_error=5)


def test_block_exponents_and_which_moved_closer_to_the_prediction():
    """The appendix's table of slopes: one fit per task and state of the block profile; training moves D and
    R towards the filter = stride = 2 prediction on both tasks, G on task 1 only."""
    rows = []
    for task, (init, trained) in {"task 1": ((-0.5, 0.5), (-0.9, 0.9)), "task 2": ((-0.5, 0.5), (-0.9, 0.2))}.items():
        for state, (d, g) in (("init", init), ("trained", trained)):
            t = _law_table(d, g, seeds=(1,), jitter=0.0, column="block")
            rows.append(t[t["block"] >= 1].drop(columns="seed").assign(task_name=task, state=state))
    exps = theory_claims.block_exponents(pd.concat(rows), ["task 1", "task 2"])
    assert set(exps) == {(t, s) for t in ("task 1", "task 2") for s in ("init", "trained")}
    assert exps[("task 1", "trained")] == pytest.approx({"D": -0.9, "G": 0.9, "R": -1.8})
    assert exps[("task 2", "init")] == pytest.approx({"D": -0.5, "G": 0.5, "R": -1.0})
    closer, farther = theory_claims.closer_to_prediction(exps, theory.predicted_exponents(2, 2),
                                                         {1: "task 1", 2: "task 2"})
    assert closer == "D (tasks 1 and 2), G (task 1), R (tasks 1 and 2)" and farther == "G (task 2)"


def test_layer_exponents_is_theory_fit():
    t = theory.constant_filter_stabilities(2, 2, 6, seeds=1)
    assert theory_claims.layer_exponents(t, 2) == pytest.approx(
        dict(zip(("D_f", "G_f", "R_f"), theory.fit_exponents(t, 2).values())))
    raw = theory_claims.layer_exponents(t, 2, columns=("D", "G", "deno"))
    assert set(raw) == {"D", "G", "deno"}
    blocks = pd.DataFrame({"block": [1, 2, 3, 4], "D_f": 2.0 ** -np.arange(1, 5)})
    assert theory_claims.layer_exponents(blocks, 2, layer="block", columns=("D_f",))["D_f"] == pytest.approx(-1.0)


def test_block_profile_geomean_over_runs():
    lay = pd.DataFrame({"layer": ["features.relu1", "features.relu2", "features.conv1"] * 2, "shuffle": 0,
                        "state": "trained", "seed": [0, 0, 0, 1, 1, 1], "D_f": [1.0, 10.0, 5.0, 100.0, 1000.0, 5.0],
                        "G_f": 1.0, "R_f": 1.0})
    prof = theory_claims.block_profile(lay)
    assert prof["block"].tolist() == [1, 2] and prof["D_f"].tolist() == pytest.approx([10.0, 100.0])


def test_the_appendix_runs_by_task():
    """task_names (task_options.task, stored as a dict, JSON text or an expanded column), channels_text (H =
    width x width factor) and task_outcomes (per task: trained test error, R_f change in words)."""
    names = {1: "task 1 (distance)", 2: "task 2 (same block)"}
    summary = pd.DataFrame({"task_options": ['{"task": 1}', {"task": 2}, '{"task": 3}'],
                            "net_options": ['{"width": 32}', {"width": 32}, '{"width": 64}'],
                            "width_factor": [1.0, 0.5, 0.5]})
    assert theory_claims.task_names(summary, names).tolist()[:2] == list(names.values())
    assert np.isnan(theory_claims.task_names(summary, names).iloc[2])
    assert theory_claims.task_names(pd.DataFrame({"task_options.task": [2]}), names).tolist() == [names[2]]
    assert theory_claims.channels_text(summary) == "16, 32"
    with pytest.raises(ValueError, match="names"):
        theory_claims.task_names(summary, {})
    rows = []
    for task, (r0, r1, err) in {"a": (1.0, 0.04, 0.02), "b": (1.0, 2.0, 0.3)}.items():
        for seed in (0, 1):
            for state, r, e in (("init", r0, 0.5), ("trained", r1 * (1 + seed), err)):
                rows += [{"task_name": task, "seed": seed, "state": state, "shuffle": sh, "R_f": r * (10 if sh else 1),
                          "test_err": e + 0.01 * seed} for sh in (0, 1)]
    out = theory_claims.task_outcomes(pd.DataFrame(rows))
    assert list(out.index) == ["a", "b"] and out.loc["a", "test_err"] == pytest.approx(0.025)
    assert out.loc["a", "R_f_trained"] == pytest.approx(0.06) and out.loc["a", "R_f_change"] == "R_f fell 17x"
    assert out.loc["b", "R_f_change"] == "R_f rose 3x"
