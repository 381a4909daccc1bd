"""Tidy run tables shaped for a page (stabkit.report.tables) on synthetic tables whose truth is known."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from stabkit.report import (differences, facts, fits, layer_claims, narrative, page, robustness_claims, selection,
                            stability_claims, stats, tables, theory_claims, verdicts)
from stabkit.report.tables import geomean

from synthetic_tables import curves_table


@pytest.mark.parametrize("module", [tables, fits, stats, verdicts, layer_claims, robustness_claims, stability_claims,
                                    facts, differences, narrative, page, selection, theory_claims])
def test_module_exports_exist(module):
    for name in module.__all__:
        assert hasattr(module, name), name


def test_curves_table_shows_a_dash_for_a_magnitude_a_mode_lacks():
    """A mode measured at fewer magnitudes (rows_cols has no k = 8 here) leaves a hole in the wide table:
    it reads as an en dash, never NaN (check_site's table check fails on NaN)."""
    cur = curves_table()
    full = cur[cur["mode"] == "full"]
    rows_cols = full[full.magnitude < 8].assign(mode="rows_cols")
    wide = robustness_claims.curves_table(pd.concat([full, rows_cols]), ["net", "training", "mode"])
    assert list(wide.columns) == [1.0, 2.0, 4.0, 8.0] and len(wide) == 4
    assert wide.loc[("LeNet", "unrotated", "rows_cols"), 8.0] == "\u2013"
    assert wide.loc[("LeNet", "unrotated", "full"), 2.0] == pytest.approx(45.6)
    html = wide.to_html()
    assert "NaN" not in html and "nan" not in html
    assert robustness_claims.curves_table(full, "net").shape == (2, 4)  # one index column given as a string
    with pytest.raises(ValueError, match="curves"):
        robustness_claims.curves_table(full.drop(columns="magnitude"), ["net"])


def test_config_values_reads_json_dicts_and_expanded_columns():
    df = pd.DataFrame({"task_options": ['{"task": 1}', {"task": 2}, None], "augment": ['["crop", "rotate"]', ["crop"], "crop"]})
    assert tables.config_values(df, "task_options", "task").tolist() == [1, 2, None]
    expanded = pd.DataFrame({"task_options.task": [3, 4]})
    assert tables.config_values(expanded, "task_options", "task").tolist() == [3, 4]
    assert tables.training_label(df).tolist() == ["rotated", "unrotated", "unrotated"]
    with pytest.raises(ValueError, match="column"):
        tables.config_values(df, "nothing")


def test_geomean():
    df = pd.DataFrame({"g": ["a", "a", "b"], "v": [1.0, 100.0, -1.0]})
    out = geomean(df, ["g"], ["v"]).set_index("g")["v"]
    assert out["a"] == pytest.approx(10.0)
    assert np.isnan(out["b"])


def test_ratio_parts_shows_the_denominator():
    """Issue 12 item 12: a ratio that moves because of its denominator is shown with D, G and deno."""
    rows = []
    for run in ("a", "b"):
        for state, D, G, deno in (("init", 1.0, 1.0, 1.0), ("trained", 2.0, 0.5, 20.0)):
            rows.append(dict(run=run, state=state, shuffle=0, D=D, G=G, deno=deno, D_f=D / deno, G_f=G / deno,
                             R_f=D / G, noise_std=0.0))
    parts = stability_claims.ratio_parts(pd.DataFrame(rows))
    ratio = parts[parts[""] == "trained / init"].iloc[0]
    assert abs(ratio["deno"] - 20) < 1e-9 and abs(ratio["R_f"] - 4) < 1e-9 and ratio["n"] == 2
    assert stability_claims.parts_display(parts).data.equals(parts)


def test_table_downloads_writes_csv_and_links(tmp_path):
    df = pd.DataFrame({"D": [1.0], "G": [2.0], "deno": [3.0], "R_f": [0.5]})
    md = tables.table_downloads("fig1", {"output": df}, folder=tmp_path / "t", relative_to=tmp_path / "book")
    assert md == "- {download}`output.csv <../t/fig1/output.csv>`: 1 row, 4 columns"
    assert (tmp_path / "t" / "fig1" / "output.csv").read_text().splitlines()[0] == "D,G,deno,R_f"
    with pytest.raises(ValueError, match="page"):
        tables.table_downloads("../x", {"output": df}, folder=tmp_path)


def test_training_runs_lists_each_network_once_with_its_cost():
    """The networks table of the Fig. 1 / Fig. 3 pages: controls left out, core-hours = CPU time (else
    seconds x threads) on a CPU, GPU-hours on CUDA, the recorded precision (else float32, or bf16 for a fast CUDA run)."""
    from stabkit.report.tables import training_runs

    summary = pd.DataFrame({
        "run": ["a", "b", "c", "a"], "net": ["VGG11bn", "ResNet18", "VGG11bn", "VGG11bn"], "seed": 0,
        "noise_std": [0.0, 30.0, 0.0, 0.0], "width_factor": [0.5, 0.25, 0.5, 0.5], "epochs": [60, 20, 60, 60],
        "epochs_run": [41, 20, 41, 41], "optimizer": "sgd", "mode_precision": ["float32", None, "float32", "float32"],
        "fast": [False, True, False, False], "device": ["cpu", "cuda", "cpu", "cpu"],
        "best_test_err": [0.0912, 0.2, 0.0912, 0.0912], "last_test_err": [0.0931, 0.21, 0.0931, 0.0931],
        "best_epoch": [40.0, 19.0, 40.0, 40.0], "train_seconds": [7200.0, 600.0, 7200.0, 7200.0],
        "threads": [2.0, 1.0, 2.0, 2.0]})
    t = training_runs(summary, exclude=["c"])
    assert list(t.net) == ["VGG11bn", "ResNet18"]  # sorted by noise; the duplicate row and the control once out
    first = t.iloc[0]
    assert first["epochs"] == "41 of 60" and first["core-hours"] == 4.0 and np.isnan(first["GPU-hours"])
    assert first["best error (%)"] == 9.12 and first["best epoch"] == 40 and first["precision"] == "float32"
    assert t.iloc[1]["GPU-hours"] == 0.167 and t.iloc[1]["precision"] == "bf16 (fast)"
    assert "GPU-hours" not in training_runs(summary[summary.device == "cpu"]).columns
    assert t.iloc[1]["epochs"] == "20"
    assert "noise" in t.columns and "noise" not in training_runs(summary[summary.noise_std == 0]).columns
    with pytest.raises(ValueError, match="best_test_err"):
        training_runs(summary.drop(columns="best_test_err"))
    assert list(t["timed by"]) == ["wall x threads", "-"]  # no CPU time recorded: the upper bound, named
    # with the CPU time of the epochs recorded, that is the cost (a paused or time-shared run's wall time is not)
    timed = training_runs(summary.assign(train_cpu_seconds=[3600.0, np.nan, 3600.0, 3600.0]), exclude=["c"])
    assert timed.iloc[0]["core-hours"] == 1.0 and timed.iloc[0]["timed by"] == "CPU time"


def test_compact_runs_moves_shared_values_into_a_sentence_and_marks_upper_bounds():
    """The page's networks table fits the book's column: columns every network shares become a sentence,
    and a core-hours value timed by wall x threads reads as an upper bound."""
    from stabkit.report.tables import compact_runs

    runs = pd.DataFrame({"net": ["VGG11bn", "VGG11"], "width": [0.5, 0.5], "seed": [0.0, 0.0],
                         "optimizer": ["sgd", "adam"], "precision": ["float32", "float32"],
                         "core-hours": [1.8, 0.97], "timed by": ["wall x threads", "CPU time"]}).set_index("net")
    table, sentence = compact_runs(runs)
    assert list(table.columns) == ["optimizer", "core-hours"] and list(table.index) == ["VGG11bn", "VGG11"]
    assert sentence == "Every network: width 0.5, seed 0, precision float32."
    assert list(table["core-hours"]) == ["\u2264 1.8", "0.97"]
    one, none = compact_runs(runs.iloc[:1])
    assert "seed" in one.columns and none == ""  # a single network keeps its columns
    assert compact_runs(runs.drop(columns="timed by"))[0]["core-hours"].tolist() == [1.8, 0.97]
