"""stabkit.runs.store: run states, collect (never reads unfinished runs; configuration columns), results
(committed tables first), export with provenance, locks of other live processes."""
import json
import os
import threading
import time

import pandas as pd
import pytest

from stabkit import runs

TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25,
            batch_size=32)


def tiny(**kw) -> runs.RunConfig:
    return runs.RunConfig(**{**TINY, **kw})


def test_config_columns_expand_mappings_and_join_lists():
    cols = runs.config_columns({"key": "k", "format": 1, "net": "LeNet", "shuffles": [0, 1], "ptr": None,
                                "task_options": {"xi": 14.0, "d": 28}, "net_options": {},
                                "options": {"accuracy": {"n": 5, "families": {"rotate": {"magnitudes": [0, 90]}}}}})
    assert cols == {"key": "k", "net": "LeNet", "shuffles": "0,1", "ptr": None, "task_options.d": 28,
                    "task_options.xi": 14.0, "options.accuracy.families.rotate.magnitudes": "0,90",
                    "options.accuracy.n": 5}


def test_collect_never_reads_unfinished_runs(tmp_path):
    cfg = tiny(measure=("output",), task_options={"xi": 14.0})
    runs.run(cfg, tmp_path, device="cpu", progress=False)
    half = tmp_path / "aaaaaaaaaaaa"  # an interrupted run: config and a truncated table, no done marker
    half.mkdir()
    (half / "config.json").write_text(json.dumps({"key": half.name, **tiny(seed=9).to_dict()}))
    (half / "output.parquet").write_bytes(b"PAR1 truncated")
    (tmp_path / cfg.key / ".output.parquet.tmp-1").write_bytes(b"garbage")
    df = runs.collect(tmp_path, "output")
    assert set(df.run) == {cfg.key} and len(df) == 2
    assert {"net", "seed", "ptr", "task", "shuffles", "task_options.xi"} <= set(df.columns)
    assert df.shuffles.iloc[0] == "0" and df["task_options.xi"].iloc[0] == 14.0
    assert "task_options" not in df.columns and "net_options" not in df.columns  # no JSON strings
    assert runs.run_state(half) == "interrupted" and runs.status(tmp_path)["pending"] == 1
    assert runs.collect(tmp_path / "nothing", "output").empty


def test_results_prefers_committed_tables_then_runs_the_sweep(tmp_path):
    spec = {"name": "res", "base": {**TINY, "measure": ["output"]}, "grid": {"seed": [0, 1]},
            "scales": {"tiny": {}}}
    committed = tmp_path / "results" / "res" / "tiny"
    with pytest.raises(RuntimeError, match="no 'output' table"):
        runs.results(spec, "tiny", "output", runs_root=tmp_path / "runs", results_root=tmp_path / "results",
                     run_missing=False)
    df = runs.results(spec, "tiny", "output", runs_root=tmp_path / "runs", results_root=tmp_path / "results",
                      device="cpu", progress=False)
    assert len(df) == 4 and set(df.seed) == {0, 1}
    out = runs.export(spec, "tiny", tmp_path / "runs", committed)
    prov = json.loads((out / "provenance.json").read_text())
    assert {"output", "metrics", "summary"} <= set(prov["tables"]) and len(prov["runs"]) == 2
    assert prov["counts"]["done"] == 2 and all(r["wall_seconds"] > 0 for r in prov["runs"])
    assert set(prov["git"]) == {"commit", "dirty"} and {"torch", "python", "host", "created"} <= set(prov)
    assert not list(out.glob(".*.tmp-*"))
    pd.read_parquet(committed / "output.parquet").assign(marker=1).to_parquet(committed / "output.parquet")
    again = runs.results(spec, "tiny", "output", runs_root=tmp_path / "nothing", results_root=tmp_path / "results")
    assert "marker" in again.columns


def test_git_state_schema(tmp_path):
    assert runs.git_state(tmp_path) == {"commit": None, "dirty": None}  # not a repository
    st = runs.git_state()
    assert set(st) == {"commit", "dirty"}


def test_runs_locked_by_another_live_process_are_waited_for(tmp_path):
    spec = {"name": "locked", "base": {**TINY, "measure": ["output"]}, "scales": {"tiny": {}}}
    key = runs.load_sweep(spec, "tiny").keys[0]
    (tmp_path / key).mkdir(parents=True)
    lock = tmp_path / key / "lock"
    lock.write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": os.getpid()}))
    assert runs.run_state(tmp_path / key) == "running"
    rep = runs.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, wait_running=False)
    assert list(rep.status) == ["running"]
    with pytest.raises(runs.RunLocked):
        runs.run(runs.load_sweep(spec, "tiny").configs[0], tmp_path, device="cpu", progress=False)
    threading.Timer(1.0, lock.unlink).start()  # the other process goes away
    t0 = time.time()
    rep = runs.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, poll_s=0.2)
    assert time.time() - t0 >= 0.9 and list(rep.status) == ["pending"]  # interrupted: redone next time
    assert list(runs.sweep(spec, "tiny", tmp_path, device="cpu", progress=False).status) == ["done"]
