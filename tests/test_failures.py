"""Failures carry their cause (issue 25): when the runs a table needs fail, ``sweeps.results`` (and so a page),
the sweep's report and ``python -m stabkit sweep`` say which runs failed and why, in the runs' own words
(here: CIFAR-10 not found, the folders searched and how to provide the data)."""
import subprocess
import sys
from pathlib import Path

import pytest

from stabkit import sweeps

REPO = Path(__file__).resolve().parents[1]


def _spec(data_root: Path) -> dict:
    """Two tiny CIFAR-10 runs whose data root holds nothing (task_options root: no other folder is searched)."""
    base = dict(task="cifar10", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.125,
                batch_size=32, measure=["output"], task_options={"root": str(data_root)})
    return {"name": "nodata", "base": base, "grid": {"seed": [0, 1]}, "scales": {"tiny": {}}}


def test_results_names_the_failed_runs_and_their_error(tmp_path):
    spec = _spec(tmp_path / "no-cifar")
    with pytest.raises(sweeps.RunsFailedError) as info:
        sweeps.results(spec, "tiny", "output", runs_root=tmp_path / "runs", results_root=tmp_path / "results",
                     device="cpu", progress=False)
    msg = str(info.value)
    assert "no 'output' table for sweep 'nodata'" in msg and "2 of 2 run(s) failed" in msg
    sw = sweeps.load_sweep(spec, "tiny")
    assert all(k in msg for k in sw.keys), "every failed run is named"
    # the runs' own error, in full: what was not found, where it looked, how to provide the data
    assert "CIFAR-10 (train split) not found" in msg and str(tmp_path / "no-cifar") in msg
    assert "STABKIT_DATA" in msg and "download=True" in msg
    assert msg.count("not found") == 1, "a cause shared by every run is written once"
    # the same from the run folders alone (run_missing=False: nothing is run again)
    with pytest.raises(sweeps.RunsFailedError, match=r"(?s)2 of 2 run\(s\) failed.*Looked in:"):
        sweeps.results(spec, "tiny", "output", runs_root=tmp_path / "runs", results_root=tmp_path / "results",
                     run_missing=False)


def test_failure_summary_groups_runs_by_error():
    import pandas as pd

    rep = pd.DataFrame({"key": ["a", "b", "c", "d"], "net": ["LeNet"] * 4,
                        "status": ["failed", "failed", "done", "pending"],
                        "error": ["ValueError: no data\nLooked in:\n  - /x", "ValueError: no data\nLooked in:\n  - /x",
                                  "", "not started"], "run_dir": ["r/a", "r/b", "r/c", "r/d"]})
    text = sweeps.failure_summary(rep)
    assert "2 run(s) failed with the same error" in text and "a LeNet (r/a)" in text and "b LeNet (r/b)" in text
    assert text.count("no data") == 1 and "| Looked in:" in text and "|   - /x" in text
    assert "1 run(s) pending" in text and "c LeNet" not in text
    assert sweeps.failure_summary(rep[rep.status == "done"]) == ""


def test_sweep_command_prints_the_cause(tmp_path):
    import yaml

    spec = tmp_path / "nodata.yaml"
    spec.write_text(yaml.safe_dump(_spec(tmp_path / "no-cifar")))
    for quiet in ([], ["--quiet"]):
        res = subprocess.run([sys.executable, "-m", "stabkit", "sweep", str(spec), "--scale", "tiny", "--device",
                              "cpu", "--root", str(tmp_path / "runs"), "--retry-failed", *quiet],
                             capture_output=True, text=True, cwd=REPO, timeout=300)
        assert res.returncode == 1, res.stderr
        assert "2 run(s) failed with the same error" in res.stderr, res.stderr
        assert "Looked in:" in res.stderr and "STABKIT_DATA" in res.stderr and str(tmp_path / "no-cifar") in res.stderr
