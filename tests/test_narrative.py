"""How a change is said (stabkit.report.narrative) and the sentences built with it: the story of the output
stabilities' change (stabilities_claims), the runs that stopped early (selection)."""
from __future__ import annotations

import pandas as pd
import pytest

from stabkit.report import fits, narrative, selection, stability_claims

from synthetic_tables import CNNS, paper_output


def test_sentences_say_direction_and_factor():
    """12.12: 'R_f rose 3.3x', not 'typically falls less'; a ratio moved by its denominator says so."""
    assert narrative.change_sentence("R_f", 3.3) == "R_f rose 3.3x"
    assert narrative.change_sentence("R_f", 1 / 25) == "R_f fell 25x"
    assert narrative.change_sentence("D_f", 1 / 250) == "D_f fell 250x (2.4 decades)"
    assert narrative.change_sentence("G_f", 1.05).startswith("G_f stayed within 10 %")
    assert narrative.change_sentence("R_f", float("nan")) == "R_f: not measured"
    e = stability_claims.explain_ratio({"D": 1.7, "G": 5.0, "deno": 20.0, "D_f": 1.7 / 20, "G_f": 0.25, "R_f": 0.34},
                                       "D_f")
    assert e["by_denominator"] and e["text"] == ("D_f fell 12x because the spread of the outputs across images "
                                                 "(the denominator) rose 20x, while D rose 1.7x")
    out = paper_output(rf_falls=-0.5)  # trained R_f above init: it rose
    assert "R_f rose" in stability_claims.training_change(out)
    parts = fits.trained_init_factors(out)
    assert parts["n"] == len(CNNS) and parts["R_f"] > 1
    story = stability_claims.ratio_story(out)
    assert story["R_f"].startswith("R_f rose") and "deno" in story["parts"]


def test_training_change_over_the_cnns_that_train_well():
    """restrict=True: the sentence over selection.well_trained_cnns, the networks 'R_f falls' is stated for."""
    out = paper_output(rf_falls=-0.5)
    assert (stability_claims.training_change(out, restrict=True)
            == stability_claims.training_change(selection.well_trained_cnns(out)))
    assert stability_claims.training_change(out.iloc[:0], restrict=True) == "R_f: no run has both states"


def test_early_fits_names_runs_that_stop_at_zero_loss_with_a_high_test_error():
    def run(name, net, seed, losses, errs):
        return [{"run": name, "net": net, "seed": seed, "epoch": e + 1, "train_loss": l, "test_err": t,
                 "test_loss": 100.0 / (e + 1)} for e, (l, t) in enumerate(zip(losses, errs))]

    m = pd.DataFrame(run("a", "VGG13bn", 2, [0.5, 0.0], [0.5, 0.356]) + run("b", "VGG13bn", 1, [0.5, 0.0], [0.4, 0.01])
                     + run("c", "AlexNet", 1, [0.5, 0.002], [0.4, 0.3]))  # c never reached zero loss
    assert selection.early_fits(m) == ("Stopped at zero training loss with a test error above 10 %: VGG13bn seed 2 "
                                       "at epoch 2 (test error 35.6 %, test loss 100 at epoch 1, 50 at the stop).")
    assert selection.early_fits(m, threshold=0.5).startswith("No run stopped")
    with pytest.raises(ValueError, match="threshold"):
        selection.early_fits(m, threshold=10)
    with pytest.raises(ValueError, match="test_loss"):
        selection.early_fits(m.drop(columns="test_loss"))
