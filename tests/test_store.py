"""stabkit.runs.folder and stabkit.sweeps.collection: run states, collect (never reads unfinished runs; configuration columns), results
(committed tables first), export with provenance, locks of other live processes."""
import json
import os
import threading
import time

import pandas as pd
import pytest

from stabkit import runs, sweeps

TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25,
            batch_size=32)


def tiny(**kw) -> runs.RunConfig:
    return runs.RunConfig(**{**TINY, **kw})


def test_config_columns_expand_mappings_and_join_lists():
    cols = sweeps.config_columns({"key": "k", "format": 1, "net": "LeNet", "shuffles": [0, 1], "ptr": None,
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
    df = sweeps.collect(tmp_path, "output")
    assert set(df.run) == {cfg.key} and len(df) == 2
    assert {"net", "seed", "ptr", "task", "shuffles", "task_options.xi"} <= set(df.columns)
    assert df.shuffles.iloc[0] == "0" and df["task_options.xi"].iloc[0] == 14.0
    assert "task_options" not in df.columns and "net_options" not in df.columns  # no JSON strings
    assert runs.run_state(half) == "interrupted" and sweeps.status(tmp_path)["pending"] == 1
    assert sweeps.collect(tmp_path / "nothing", "output").empty


def test_results_prefers_committed_tables_then_runs_the_sweep(tmp_path):
    spec = {"name": "res", "base": {**TINY, "measure": ["output"]}, "grid": {"seed": [0, 1]},
            "scales": {"tiny": {}}}
    committed = tmp_path / "results" / "res" / "tiny"
    with pytest.raises(RuntimeError, match="no 'output' table"):
        sweeps.results(spec, "tiny", "output", runs_root=tmp_path / "runs", results_root=tmp_path / "results",
                     run_missing=False)
    df = sweeps.results(spec, "tiny", "output", runs_root=tmp_path / "runs", results_root=tmp_path / "results",
                      device="cpu", progress=False)
    assert len(df) == 4 and set(df.seed) == {0, 1}
    out = sweeps.export(spec, "tiny", tmp_path / "runs", tmp_path / "results")
    assert out == committed
    prov = json.loads((out / "provenance.json").read_text())
    assert {"output", "metrics", "summary"} <= set(prov["tables"]) and len(prov["runs"]) == 2
    assert set(prov["git"]) == {"commit", "dirty"} and {"torch", "python", "host", "created"} <= set(prov)
    assert not list(out.glob(".*.tmp-*"))
    # committed tables first: nothing left in the runs root, the same rows come back from the store
    again = sweeps.results(spec, "tiny", "output", runs_root=tmp_path / "nothing", results_root=tmp_path / "results",
                         run_missing=False)
    cols = ["run", "state", "shuffle", "D_f", "G_f", "R_f"]
    pd.testing.assert_frame_equal(again[cols].sort_values(cols[:3]).reset_index(drop=True),
                                  df[cols].sort_values(cols[:3]).reset_index(drop=True))


def test_git_state_schema(tmp_path):
    assert runs.git_state(tmp_path) == {"commit": None, "dirty": None}  # not a repository
    st = runs.git_state()
    assert set(st) == {"commit", "dirty"}


def test_runs_locked_by_another_live_process_are_waited_for_and_retried(tmp_path):
    """Issue 15.1: a waited-for run whose process dies is computed, not left pending with exit 0."""
    spec = {"name": "locked", "base": {**TINY, "measure": ["output"]}, "scales": {"tiny": {}}}
    cfg = sweeps.load_sweep(spec, "tiny").configs[0]
    (tmp_path / cfg.key).mkdir(parents=True)
    other = runs.RunLock(tmp_path / cfg.key)  # another process computing it (a separate open file)
    assert other.acquire() and runs.run_state(tmp_path / cfg.key) == "running"
    rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, wait_running=False)
    assert list(rep.status) == ["running"] and "another process" in rep.error[0]
    with pytest.raises(runs.RunLocked):
        runs.run(cfg, tmp_path, device="cpu", progress=False)
    threading.Timer(1.0, other.release).start()  # the other process dies before finishing the run
    t0 = time.time()
    rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, poll_s=0.2)
    assert time.time() - t0 >= 0.9 and list(rep.status) == ["done"]  # waited for, then computed here
    assert len(sweeps.collect(tmp_path, "output", spec, "tiny")) == 2


@pytest.mark.timeout(120)
def test_a_reused_pid_or_a_hung_holder_does_not_hang_a_sweep(tmp_path):
    """Issue 15.2: a lock whose PID belongs to an unrelated live process (old lock format, heartbeat
    hours old) is stale; a live holder whose heartbeat stopped is given up on, with a clear reason."""
    spec = {"name": "reused", "base": {**TINY, "measure": ["output"]}, "grid": {"seed": [0, 1]},
            "scales": {"tiny": {}}}
    a, b = sweeps.load_sweep(spec, "tiny").keys
    (tmp_path / a).mkdir(parents=True)
    lock = tmp_path / a / "lock"
    lock.write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": os.getpid()}))
    old = time.time() - 7 * 3600
    os.utime(lock, (old, old))
    assert runs.run_state(tmp_path / a) == "interrupted"
    hung = runs.RunLock(tmp_path / b)
    (tmp_path / b).mkdir()
    assert hung.acquire()
    os.utime(tmp_path / b / "lock", (time.time() - 600, time.time() - 600))
    try:
        rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, poll_s=0.2, stale_s=300)
        assert list(rep.status) == ["done", "running"] and "heartbeat is 6" in rep.error[1]
        os.utime(tmp_path / b / "lock")  # alive again, but we stop waiting after wait_timeout_s
        t0 = time.time()
        rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, poll_s=0.2, wait_timeout_s=1)
        assert list(rep.status) == ["done", "running"] and "after waiting 1 s" in rep.error[1]
        assert time.time() - t0 < 30
    finally:
        hung.release()


def test_collect_verifies_finished_runs_and_names_the_damaged_file(tmp_path):
    """Issue 15.5: a deleted table or a truncated config.json: a warning naming the file, the run skipped."""
    spec = {"name": "verify", "base": {**TINY, "measure": ["output", "layers"]}, "grid": {"seed": [0, 1, 2]},
            "scales": {"tiny": {}}}
    rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False)
    a, b, c = (tmp_path / k for k in rep.key)
    assert runs.verify_run(a) == []
    n = len(sweeps.collect(tmp_path, "layers", spec, "tiny"))
    (a / "layers.parquet").unlink()
    (b / "config.json").write_text((b / "config.json").read_text()[:40])
    (c / "output.parquet").write_bytes((c / "output.parquet").read_bytes()[:100])
    with pytest.warns(UserWarning) as rec:
        df = sweeps.collect(tmp_path, "layers", spec, "tiny")
    msgs = " | ".join(str(w.message) for w in rec)
    assert str(a / "layers.parquet") in msgs and str(b / "config.json") in msgs
    assert set(df.run) == {c.name} and len(df) == n // 3
    with pytest.warns(UserWarning) as rec:
        sweeps.collect(tmp_path, "output", spec, "tiny")
    assert any(f"{c / 'output.parquet'} is unreadable" in str(w.message) for w in rec)
    assert any("layers.parquet: missing" in p for p in runs.verify_run(a))
    assert any("config.json" in p for p in runs.verify_run(b))
    assert any("output.parquet: unreadable" in p for p in runs.verify_run(c))
    # sweep --verify redoes the damaged runs (with a warning naming the files), --redo recomputes anyway
    with pytest.warns(UserWarning, match="damaged, redoing it"):
        rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, verify=True)
    assert list(rep.status) == ["done"] * 3 and all(runs.verify_run(p) == [] for p in (a, b, c))
    assert len(sweeps.collect(tmp_path, "layers", spec, "tiny")) == n
    t = (a / "done").stat().st_mtime_ns
    rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, redo=[a.name])
    assert (a / "done").stat().st_mtime_ns > t and list(rep.status) == ["done"] * 3
    with pytest.raises(ValueError, match="no runs of sweep 'verify'"):
        sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, redo=["nosuchkey"])


def test_collect_of_an_unknown_table_names_the_accepted_tables(tmp_path):
    """Issue 15.10: collect(table="nosuch") is an error, not an empty frame."""
    cfg = tiny(measure=("output",))
    runs.run(cfg, tmp_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="table 'nosuch'.*accepted tables.*'layers'.*'output'"):
        sweeps.collect(tmp_path, "nosuch")
    assert sweeps.collect(tmp_path, "layers").empty  # a known table this run does not measure
    assert sweeps.collect(tmp_path / "empty", "nosuch").empty  # nothing finished: nothing to say
