"""Which rows a page shows and a claim tests (stabkit.report.selection): the convergence rule."""
from __future__ import annotations

import pandas as pd

from stabkit.report import selection


def _summary_metrics() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three scale-detection runs (chance 50 %): a good one, one that collapsed to chance after a good
    best epoch, one that never trained (training error at chance throughout, one lucky test epoch)."""
    runs = {"good": (0.01, 0.012, [0.3, 0.1, 0.0]), "collapsed": (0.05, 0.50, [0.42, 0.2, 0.47]),
            "never": (0.18, 0.50, [0.49, 0.48, 0.49])}
    summary = pd.DataFrame([dict(run=k, net=k.upper(), seed=0, task="twopoints", best_test_err=b, last_test_err=la)
                            for k, (b, la, _) in runs.items()])
    metrics = pd.DataFrame([dict(run=k, epoch=e, train_err=t) for k, (_, _, tr) in runs.items()
                            for e, t in enumerate(tr)])
    return summary, metrics


def test_collapsed_run_is_not_well_trained():
    conv = selection.convergence(*_summary_metrics()).set_index("run")
    assert bool(conv.loc["good", "well_trained"]) and not bool(conv.loc["good", "collapsed"])
    assert not bool(conv.loc["collapsed", "well_trained"]) and bool(conv.loc["collapsed", "collapsed"])
    assert "collapsed" in conv.loc["collapsed", "reason"]
    assert not bool(conv.loc["never", "well_trained"])
    assert "training error did not fall" in conv.loc["never", "reason"]
    listed = selection.collapsed_runs(conv.reset_index())
    assert list(listed["net"]) == ["COLLAPSED", "NEVER"] and "last test error (%)" in listed.columns


def test_control_runs_measure_nothing_but_a_control():
    """The recalibrated control runs (sweep files: ``set: {measure: [recalibrated]}``), whatever the table
    stores in ``measure``: a list, its comma-joined text (collect) or its JSON text."""
    summary = pd.DataFrame({"run": ["a", "b", "c", "d", "e"],
                            "measure": ["output,layers,spectra", "recalibrated", '["recalibrated"]',
                                        ["layers", "recalibrated"], None]})
    assert selection.control_runs(summary) == ["b", "c"]
    assert selection.control_runs(summary.assign(measure=[["recalibrated"]] * 5)) == list("abcde")
    assert selection.control_runs(summary.drop(columns="measure")) == []
    assert "recalibrated" in selection.CONTROL_MEASUREMENTS


def test_a_longer_training_of_the_same_configuration_supersedes_the_shorter():
    """The cpu grid keeps VGG11bn at 20 epochs beside its 60-epoch successor (and both controls): each
    shorter run maps to the longest of its configuration; other fields keep runs apart."""
    summary = pd.DataFrame({
        "run": ["v20", "v60", "c20", "c60", "n30", "r20", "v20"],
        "net": ["VGG11bn", "VGG11bn", "VGG11bn", "VGG11bn", "VGG11bn", "ResNet18", "VGG11bn"],
        "seed": 0, "noise_std": [0.0, 0.0, 0.0, 0.0, 30.0, 0.0, 0.0],
        "epochs": [20, 60, 20, 60, 20, 20, 20],
        "measure": [["output", "layers"], ["output", "layers"], ["recalibrated"], ["recalibrated"],
                    ["output", "layers"], ["output", "layers"], ["output", "layers"]],
        "best_test_err": [0.15, 0.09, 0.15, 0.09, 0.3, 0.14, 0.15]})
    assert selection.superseded_runs(summary) == {"v20": "v60", "c20": "c60"}
    text = selection.superseded_text(summary, selection.superseded_runs(summary))
    assert text == "not shown: VGG11bn seed 0 at 20 epochs (its 60-epoch run is)"  # the control: named once
    assert selection.superseded_runs(summary[summary.run.isin(["v20", "n30", "r20"])]) == {}
    assert selection.superseded_runs(summary.drop(columns="epochs")) == {}
    assert selection.superseded_text(summary, {}) == ""


def test_a_wider_training_of_the_same_network_supersedes_the_narrower_whatever_its_epochs():
    """The cpu grid's successors of ResNet18 (quarter width, 20 and 60 epochs) and VGG11bn (half width, 60
    epochs): the widest run stands for its network, then the longest; the arithmetic does not keep runs apart
    and two runs of one width and length (float32 and bf16) are both shown. Test errors play no part: the
    narrower run with the lower error is superseded all the same."""
    summary = pd.DataFrame({
        "run": ["r20", "r60", "r40w", "v60", "v40w", "v40w32", "a20"],
        "net": ["ResNet18"] * 3 + ["VGG11bn"] * 3 + ["AlexNet"],
        "seed": 0, "noise_std": 0.0,
        "width_factor": [0.25, 0.25, 0.5, 0.5, 1.0, 1.0, 0.5],
        "epochs": [20, 60, 40, 60, 40, 40, 20],
        "precision": ["float32", "float32", "bf16", "float32", "bf16", "float32", "float32"],
        "best_test_err": [0.15, 0.08, 0.09, 0.13, 0.10, 0.10, 0.22]})
    assert selection.superseded_runs(summary) == {"r20": "r40w", "r60": "r40w", "v60": "v40w"}
    text = selection.superseded_text(summary, selection.superseded_runs(summary))
    assert text == ("not shown: ResNet18 seed 0 at width 0.25, 20 epochs (its width-0.5, 40-epoch run is); "
                    "ResNet18 seed 0 at width 0.25, 60 epochs (its width-0.5, 40-epoch run is); "
                    "VGG11bn seed 0 at width 0.5, 60 epochs (its width-1, 40-epoch run is)")
    # another noise level, seed or optimiser is another network: nothing supersedes across them
    other = summary.assign(noise_std=[0.0, 0.0, 30.0, 0.0, 0.0, 0.0, 0.0], seed=[0, 0, 0, 0, 1, 1, 0])
    assert selection.superseded_runs(other) == {"r20": "r60"}
    # without a width column every run counts as width 1: the longest training stands
    assert selection.superseded_runs(summary.drop(columns="width_factor")) == {
        "r20": "r60", "r40w": "r60", "v40w": "v60", "v40w32": "v60"}
