"""The paper's protocol and the "different from the paper" table (stabkit.report.differences)."""
from __future__ import annotations

import pandas as pd
import pytest

from stabkit.report import tables, differences


def test_differences_lists_only_changed_columns():
    paper = pd.DataFrame({"net": ["VGG11", "LeNet", "AlexNet"] * 4, "seed": [0, 1, 2, 3] * 3,
                          "epochs": 250, "P": 500})
    here = pd.DataFrame({"net": ["VGG11", "LeNet"], "seed": [0, 0], "epochs": 3, "P": 500})
    text = differences.differences(here, paper, labels={"epochs": "epochs"})
    assert "epochs: 250 in the paper, 3 here" in text
    assert "seed: 0-3 in the paper, 0 here" in text
    assert "net: AlexNet, LeNet, VGG11 in the paper, LeNet, VGG11 here" in text
    assert "P" not in text
    assert differences.differences(paper, paper) == "nothing"
    with pytest.raises(ValueError, match="here"):
        differences.differences(None, paper)


def test_differences_labels_missing_ptr():
    paper = pd.DataFrame({"ptr": [None, None]})
    here = pd.DataFrame({"ptr": [5000]})
    assert differences.differences(here, paper) == "ptr: full training set in the paper, 5000 here"


def test_differences_compares_integral_floats_as_ints():
    paper = pd.DataFrame({"ptr": [1024, 2048, None]})  # pandas makes this column float
    here = pd.DataFrame({"ptr": [1024.0]})
    assert differences.differences(here, paper) == "ptr: 1024, 2048, full training set in the paper, 1024 here"


def test_differences_compare_with_the_paper_protocol():
    """12.13: a page compares its runs with the paper's protocol (nets, seeds, epochs, width, P,
    precision), not with the `paper` scale's config (whose lr 100 the paper never gave)."""
    proto = differences.paper_protocol("appendix_scale_detection_1d")
    assert "lr" not in proto.columns and set(proto.measure_dtype) == {"float64"}
    fig1 = differences.paper_protocol("fig1_noise_corrupted_cifar")
    assert "VGG19bn" in set(fig1.net) and "VGG16" not in set(fig1.net) and set(fig1.epochs) == {250}
    assert differences.paper_protocol("probe_rotation") is None
    here = pd.DataFrame({"net": ["CNN1D"], "ptr": [1024], "P": [200], "width_factor": [0.1], "lr": [10.0],
                         "measure_dtype": ["float32"]})
    text = differences.differences(here, proto, columns=("net", "P", "width_factor", "lr", "measure_dtype"))
    assert "lr" not in text and "measure_dtype: float64 in the paper, float32 here" in text


def test_differences_markdown_table_and_not_given(tmp_path):
    """Issue 12 item 13 / issue 13 item 5: a small table; a value the paper does not give reads so."""
    here = pd.DataFrame({"task": ["scale1d"], "lr": [10.0], "epochs": [30], "measure_dtype": ["float32"]})
    paper = pd.DataFrame({"task": ["scale1d"], "lr": [100.0], "epochs": [300], "measure_dtype": ["float64"]})
    table = differences.differences_table(here, paper)
    assert table.set_index("quantity").loc["lr", "paper"] == "not given"
    md = tables.markdown_table(table)
    assert md.splitlines()[0] == "| quantity | paper | here |" and "| lr | not given | 10 |" in md
    assert tables.markdown_table(table.iloc[:0], empty="Nothing.") == "Nothing."
