"""What a page states about its runs (stabkit.report.facts), from synthetic summary tables."""
from __future__ import annotations

import pandas as pd
import pytest

from stabkit.report import differences, facts
from stabkit.report.facts import run_facts
from stabkit.report.fits import shuffle_gap, trained_over_init, zero_mode_fraction

from synthetic_tables import synthetic_output


def test_bad_input_names_argument():
    with pytest.raises(ValueError, match="output"):
        trained_over_init(pd.DataFrame({"x": [1]}), "R_f")
    with pytest.raises(ValueError, match="layers"):
        shuffle_gap(pd.DataFrame({"R_f": [1.0]}))
    with pytest.raises(ValueError, match="spectra"):
        zero_mode_fraction(pd.DataFrame({"layer": ["a"]}))
    with pytest.raises(ValueError, match="table"):
        run_facts([1, 2])


def test_run_facts():
    facts = run_facts(synthetic_output(), columns=("seed", "device", "dataset", "net", "missing"))
    assert facts["seed"] == "0, 1"
    assert facts["device"] == "cpu"
    assert facts["net"] == "LeNet, ResNet18, VGG11"
    assert "missing" not in facts
    assert facts["n_runs"] == 18
    assert run_facts(pd.DataFrame({"seed": [0, 1, 2, 3]}))["seed"] == "0-3"


def test_page_facts_from_summary_and_sweep_mapping():
    summary = pd.DataFrame({
        "run": ["a", "b", "c"], "net": ["LeNet", "VGG11", "VGG11"], "seed": [0, 0, 1], "epochs": 2,
        "P": 50, "status": ["done", "done", "failed"], "device": ["cpu", "cpu", None],
        "device_name": ["x86_64", "x86_64", None], "task": "twopoints",
        "task_options": '{"d": 28, "xi": 14.0}'})
    spec = {"name": "t", "base": {"task": "twopoints", "epochs": 300, "P": 500},
            "grid": {"net": ["LeNet", "VGG11"], "seed": [0, 1]},
            "scales": {"tiny": {"base": {"epochs": 2}}, "paper": {}}}
    f = facts.page_facts(summary, spec, "tiny")
    assert f["seeds"] == "0" and f["nets"] == "LeNet, VGG11"
    assert f["n_runs"] == 2 and f["n_failed"] == 1
    assert f["device"] == "cpu (x86_64)"
    assert "d = 28" in f["data"] and "scale detection" in f["data"]
    assert "epochs: 300 in the paper, 2 here" in f["differences"]
    assert "P: 500 in the paper, 50 here" in f["differences"]
    assert "seed: 0, 1 in the paper, 0 here" in f["differences"]
    assert facts.page_facts(summary, spec, "paper")["differences"].startswith("nothing")
    assert facts.page_facts(summary)["differences"] == "unknown"


def test_run_facts_sorts_numbers_numerically():
    assert run_facts(pd.DataFrame({"seed": list(range(11))}))["seed"] == "0-10"
    assert run_facts(pd.DataFrame({"epochs": [15, 3]}))["epochs"] == "3, 15"
    assert run_facts(pd.DataFrame({"ptr": [1024.0, 2048.0]}), columns=("ptr",))["ptr"] == "1024, 2048"


def test_differences_table():
    paper = pd.DataFrame({"epochs": [250, 250], "P": 500})
    here = pd.DataFrame({"epochs": [3], "P": 500})
    t = differences.differences_table(here, paper)
    assert t.to_dict("records") == [{"quantity": "epochs", "paper": "250", "here": "3"}]
    assert differences.differences_table(paper, paper).empty
    # per-network training departures name their networks (the FCN's Adam is the paper's own choice)
    here = pd.DataFrame({"task": "cifar10", "net": ["VGG11", "VGG11bn", "DenseNetL2", "AlexNet"],
                         "optimizer": ["adam", "sgd", "adam", "sgd"], "lr": [1e-3, 0.1, 0.1, 0.05],
                         "weight_decay": [0.0, 5e-4, 0.0, 5e-4], "epochs": 15})
    t = differences.differences_table(here, paper).set_index("quantity")
    assert t.loc["optimizer"].to_dict() == {"paper": "sgd", "here": "adam (VGG11)"}
    assert t.loc["lr"].to_dict() == {"paper": "0.1", "here": "0.001 (VGG11); 0.05 (AlexNet)"}
    assert t.loc["weight_decay"].to_dict() == {"paper": "0.0005", "here": "0 (VGG11)"}
    assert t.loc["epochs"].to_dict() == {"paper": "250", "here": "15"}
    errs = pd.DataFrame({"net": ["VGG11bn", "ResNet18", "VGG11bn"] + ["LeNet"] * 5,
                         "best_test_err": [0.487, 0.1948, 0.2019, 0.05, 0.041, 0.049, 0.059, None]})
    assert facts.errors_text(errs, max_listed=3) == "LeNet 4.1-5.9 % (4 runs); ResNet18 19.5 %; VGG11bn 20.2, 48.7 %"
    assert facts.errors_text(errs).startswith("LeNet 4.1, 4.9, 5.0, 5.9 %;")
    assert facts.errors_text(errs.drop(columns="best_test_err")) == "n/a"
    with pytest.raises(ValueError, match="max_listed"):
        facts.errors_text(errs, max_listed=0)
    # runs of one network are labelled by the fewest settings that tell them apart, seeds listed together
    runs = pd.DataFrame({"net": ["VGG11bn"] * 4 + ["LeNet"] * 3,
                         "augment": ["crop,flip", "crop,flip,rotate", "crop,flip", "crop,flip,rotate"] + ["crop"] * 3,
                         "seed": [0, 0, 1, 1, 0, 0, 0], "epochs": [15, 15, 15, 15, 15, 15, 15],
                         "noise_std": [0.0, 0.0, 0.0, 0.0, 30.0, 0.0, 1.0],
                         "width_factor": [0.25, 0.25, 0.25, 0.25, 1.0, 1.0, 1.0],
                         "best_test_err": [0.202, 0.487, 0.198, 0.45, 0.456, 0.409, 0.422]})
    assert facts.errors_text(runs) == ("LeNet 40.9 % (noise std 0), 42.2 % (noise std 1), 45.6 % (noise std 30); "
                                       "VGG11bn 19.8, 20.2 % (augment crop+flip), 45.0, 48.7 % (augment crop+flip+rotate)")
    res = pd.DataFrame({"net": "LowRes", "net_options.source_size": [16, 8, 16],
                        "net_options.antialias": [None, None, False], "best_test_err": [0.28, 0.43, 0.281]})
    assert facts.errors_text(res) == ("LowRes 43.0 % (source size 8), 28.0 % (source size 16), "
                                      "28.1 % (source size 16, antialias False)")
    assert facts.ptr_text(pd.DataFrame({"ptr": [None], "task": ["cifar10"]})) == "all 50,000"
    assert facts.ptr_text(pd.DataFrame({"ptr": [2048.0, 1024.0]})) == "1024, 2048"


def test_error_range_gives_best_and_last_errors():
    from stabkit.report import facts
    s = pd.DataFrame({"best_test_err": [0.0, 0.356, 0.05], "last_test_err": [0.0, 0.356, 0.5]})
    assert facts.error_range(s) == "best 0.0-35.6 %, last epoch 0.0-50.0 %"
    assert facts.error_range(pd.DataFrame({"x": [1]})) == "n/a"
