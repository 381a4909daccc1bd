"""stabkit.runs: configs and hashes, run folders, sweeps (resume after SIGKILL, failures), collect,
results/export, executors (local pool, submitit Debug/Local)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from stabkit import runs, train as T

REPO = Path(__file__).resolve().parents[1]
TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25,
            batch_size=32)


def tiny(**kw) -> runs.RunConfig:
    return runs.RunConfig(**{**TINY, **kw})


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------------- configs
def test_config_defaults_hash_and_roundtrip():
    c = runs.RunConfig(task="twopoints", net="VGG11")
    assert (c.lr, c.epochs, c.loss, c.augment, c.stop_at_zero_loss, c.ptr) == (0.05, 300, "hinge", (), True, 1024)
    assert c.data_seed == c.seed == 0
    assert runs.RunConfig(task="twopoints", net="VGG11", lr=0.05, epochs=300, ptr=1024).key == c.key
    assert runs.RunConfig(task="twopoints", net="VGG11", width_factor=1).key == c.key  # 1 == 1.0
    assert runs.RunConfig(task="twopoints", net="VGG11", seed=1).key != c.key
    assert runs.RunConfig(task="twopoints", net="VGG11", seed=1).data_seed == 1
    assert runs.RunConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert len(c.key) == 12 and hash(c) == hash(runs.RunConfig.from_dict(c.to_dict()))
    f = runs.RunConfig(net="DenseNetL2")
    assert (f.optimizer, f.lr, f.weight_decay, f.augment) == ("adam", 0.1, 0.0, ("crop", "flip"))
    with pytest.raises(ValueError, match="task"):
        runs.RunConfig(task="mnist")
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        runs.RunConfig.from_dict({"nett": "VGG11"})
    with pytest.raises(ValueError, match="shuffles"):
        runs.RunConfig(shuffles=[3])


def test_default_runs_root(monkeypatch, tmp_path):
    monkeypatch.setenv("STABKIT_RUNS", str(tmp_path))
    assert runs.default_runs_root() == tmp_path
    monkeypatch.delenv("STABKIT_RUNS")
    assert runs.default_runs_root() == REPO / "runs"


def test_load_sweep_grid_scales_blocks_and_include(tmp_path):
    (tmp_path / "a.yaml").write_text("""
base: {task: twopoints, net: LeNet, P: 10}
grid: {seed: [0, 1], ptr: [64, 128]}
scales:
  paper: {}
  tiny: {base: {ptr: 32}, grid: {width_factor: [0.5, 0.25]}}
  blocks: {grid: [{net: [LeNet], seed: [0]}, {net: [VGG11], seed: [0, 1]}]}
""")
    (tmp_path / "b.yaml").write_text("""
include: [{sweep: a, where: {seed: [1]}}]
scales: {paper: {}, tiny: {}}
""")
    paper = runs.load_sweep(tmp_path / "a.yaml", "paper")
    assert len(paper) == 4 and paper.name == "a"
    t = runs.load_sweep(tmp_path / "a.yaml", "tiny")  # ptr fixed by the scale, width gridded
    assert sorted((c.seed, c.ptr, c.width_factor) for c in t.configs) == [
        (0, 32, 0.25), (0, 32, 0.5), (1, 32, 0.25), (1, 32, 0.5)]
    blocks = runs.load_sweep(tmp_path / "a.yaml", "blocks")
    assert [(c.net, c.seed) for c in blocks.configs] == [("LeNet", 0), ("VGG11", 0), ("VGG11", 1)]
    b = runs.load_sweep(tmp_path / "b.yaml", "paper")
    assert sorted(c.key for c in b.configs) == sorted(c.key for c in paper.configs if c.seed == 1)
    with pytest.raises(ValueError, match="no scale 'small'"):
        runs.load_sweep(tmp_path / "a.yaml", "small")
    with pytest.raises(ValueError, match="must be a list"):
        runs.load_sweep({"grid": {"seed": 0}, "scales": {"tiny": {}}}, "tiny")
    with pytest.raises(ValueError, match="unknown sweep"):
        runs.load_sweep("no_such_sweep", "tiny")


def test_paper_figure_sweeps_share_runs():
    fig1 = {c.key for c in runs.load_sweep("fig1_noise_corrupted_cifar", "paper").configs}
    fig3 = runs.load_sweep("fig3_layers_cifar", "paper")
    assert {c.net for c in fig3.configs} == {"VGG11", "VGG11bn", "AlexNet", "LeNet"}
    assert set(fig3.keys) <= fig1 and all(c.shuffles == (0, 1) for c in fig3.configs)
    fig5 = runs.load_sweep("fig5_scale_detection", "paper")
    assert len(fig5) == 11 * 2 * 10 and len(fig1) == 13 * 7 * 4
    fig6 = runs.load_sweep("fig6_layers_scale_detection", "paper")
    assert set(fig6.keys) <= set(fig5.keys) and {c.net for c in fig6.configs} == {"VGG11", "VGG11bn", "VGG13bn"}
    assert len(fig6) == 3 * 2 * 10
    assert set(runs.load_sweep("fig2_laplacian_spectra", "paper").keys) == set(fig5.keys) | set(fig3.keys)


# ------------------------------------------------------------------------------------------ one run
def test_run_writes_tables_and_is_not_redone(tmp_path):
    cfg = tiny(shuffles=(0, 1))
    path = runs.run(cfg, tmp_path, device="cpu", progress=False)
    assert path == tmp_path / cfg.key and runs.run_state(path) == "done"
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "best.pt", "last.pt", "metrics.parquet", "output.parquet", "layers.parquet",
            "spectra.parquet", "summary.parquet", "status.json", "done"} <= names and "lock" not in names
    out = pd.read_parquet(path / "output.parquet")
    assert {"state", "shuffle", "D_f", "G_f", "R_f", "D", "G", "deno", "P", "test_err"} <= set(out.columns)
    assert sorted(zip(out.state, out.shuffle)) == [("init", 0), ("init", 1), ("trained", 0), ("trained", 1)]
    lay = pd.read_parquet(path / "layers.parquet")
    assert {"layer", "depth", "rel_depth", "D", "G", "deno", "D_f", "G_f", "R_f", "P", "state",
            "shuffle"} <= set(lay.columns)
    # the output row of `output` is the last node of `layers`
    last = lay[(lay.state == "trained") & (lay.shuffle == 0)].sort_values("depth").iloc[-1]
    assert out[(out.state == "trained") & (out.shuffle == 0)].R_f.item() == pytest.approx(last.R_f)
    assert set(pd.read_parquet(path / "spectra.parquet").state) == {"init", "trained"}
    summ = pd.read_parquet(path / "summary.parquet").iloc[0]
    assert summ.status == "done" and summ.device == "cpu" and summ.wall_seconds > 0
    assert T.load_checkpoint(path / "best.pt", config_hash=cfg.key)[1]["net"] == "LeNet"
    mtimes = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    assert runs.run(cfg, tmp_path, device="cpu", progress=False) == path
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == mtimes


def test_same_config_gives_identical_results_on_cpu(tmp_path):
    cfg = tiny(epochs=2, seed=3)
    a = runs.run(cfg, tmp_path / "a", device="cpu", progress=False)
    b = runs.run(cfg, tmp_path / "b", device="cpu", progress=False)
    for t in ("metrics", "output", "layers", "spectra"):
        da, db = pd.read_parquet(a / f"{t}.parquet"), pd.read_parquet(b / f"{t}.parquet")
        da, db = da.drop(columns=["seconds"], errors="ignore"), db.drop(columns=["seconds"], errors="ignore")
        pd.testing.assert_frame_equal(da, db)


def test_same_probe_set_for_every_net():
    d = runs._task_data(tiny())
    p1 = runs._probes(tiny(net="LeNet"), d)
    p2 = runs._probes(tiny(net="VGG11bn", seed=4), d)
    assert all(torch.equal(u, v) for u, v in zip(p1, p2))


def test_corrupted_checkpoint_of_a_run_is_refused(tmp_path):
    path = runs.run(tiny(measure=("output",), states=("trained",)), tmp_path, device="cpu", progress=False)
    raw = (path / "best.pt").read_bytes()
    (path / "best.pt").write_bytes(raw[:100])
    with pytest.raises(T.CheckpointError, match="corrupted"):
        runs.remeasure(path, device="cpu")
    T.save_checkpoint(path / "best.pt", torch.nn.Linear(2, 2).state_dict(), net="VGG11", config_hash="x")
    with pytest.raises(T.CheckpointError, match="holds net"):
        runs.remeasure(path, device="cpu")


def test_registered_augmentation_is_applied(tmp_path):
    calls = []

    @runs.register_augmentation("test_negate", overwrite=True)
    def negate(x, generator):
        calls.append(tuple(x.shape))
        return -x

    runs.run(tiny(augment=["test_negate"], measure=()), tmp_path, device="cpu", progress=False)
    assert calls and calls[0][1:] == (1, 28, 28)
    with pytest.raises(ValueError, match="unknown augment"):
        runs.run(tiny(augment=["no_such_aug"], measure=()), tmp_path, device="cpu", progress=False)


# ---------------------------------------------------------------------------------- sweeps, failures
def test_failed_run_is_recorded_and_does_not_stop_the_sweep(tmp_path):
    @runs.register_measurement("test_boom", overwrite=True)
    def boom(model, cfg, ctx):
        raise RuntimeError("boom in measurement")

    @runs.register_measurement("test_extra", overwrite=True)
    def extra(model, cfg, ctx):
        return {"extra": pd.DataFrame({"value": [1.0, 2.0]})}

    spec = {"name": "fails", "base": TINY, "grid": [{"measure": [["test_boom"]]},
                                                  {"measure": [["output", "test_extra"]]}],
            "scales": {"tiny": {}}}
    rep = runs.sweep(spec, "tiny", tmp_path, device="cpu", progress=False)
    assert list(rep.status) == ["failed", "done"] and "boom in measurement" in rep.error[0]
    bad = Path(rep.run_dir[0])
    assert "RuntimeError: boom in measurement" in (bad / "error.txt").read_text()
    assert json.loads((bad / "status.json").read_text())["status"] == "failed" and not (bad / "done").exists()
    assert runs.status(tmp_path, spec, "tiny") == dict(total=2, done=1, pending=0, failed=1, running=0)
    summ = runs.collect(tmp_path, "summary", spec, "tiny")
    assert sorted(summ.status) == ["done", "failed"]
    ext = runs.collect(tmp_path, "extra", spec, "tiny")  # a registered measurement's own table
    assert list(ext.value) == [1.0, 2.0, 1.0, 2.0] and set(ext.state) == {"init", "trained"}
    # failed runs are skipped unless retry_failed
    assert list(runs.sweep(spec, "tiny", tmp_path, device="cpu", progress=False).status) == ["failed", "done"]
    runs.MEASUREMENTS["test_boom"] = lambda m, c, x: {}
    assert list(runs.sweep(spec, "tiny", tmp_path, device="cpu", progress=False,
                           retry_failed=True).status) == ["done", "done"]


def test_collect_never_reads_unfinished_runs(tmp_path):
    cfg = tiny(measure=("output",))
    runs.run(cfg, tmp_path, device="cpu", progress=False)
    half = tmp_path / "aaaaaaaaaaaa"  # an interrupted run: config and a truncated table, no done marker
    half.mkdir()
    (half / "config.json").write_text(json.dumps({"key": half.name, **tiny(seed=9).to_dict()}))
    (half / "output.parquet").write_bytes(b"PAR1 truncated")
    (tmp_path / cfg.key / ".output.parquet.tmp-1").write_bytes(b"garbage")
    df = runs.collect(tmp_path, "output")
    assert set(df.run) == {cfg.key} and len(df) == 2
    assert {"net", "seed", "ptr", "task", "shuffles"} <= set(df.columns) and df.shuffles.iloc[0] == "0"
    assert runs.run_state(half) == "interrupted" and runs.status(tmp_path)["pending"] == 1


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
    pd.read_parquet(committed / "output.parquet").assign(marker=1).to_parquet(committed / "output.parquet")
    again = runs.results(spec, "tiny", "output", runs_root=tmp_path / "nothing", results_root=tmp_path / "results")
    assert "marker" in again.columns


# ------------------------------------------------------------------------------------------ executors
def test_submitit_debug_and_local_executors(tmp_path):
    pytest.importorskip("submitit")
    spec = {"name": "sub", "base": {**TINY, "measure": ["output"]}, "grid": {"seed": [0, 1]},
            "scales": {"tiny": {}}}
    rep = runs.sweep(spec, "tiny", tmp_path / "debug", executor="submitit-debug", device="cpu", progress=False)
    assert list(rep.status) == ["done", "done"]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    one = {**spec, "grid": {"seed": [0]}}  # one job: a subprocess importing torch is slow on a busy CPU
    rep = runs.sweep(one, "tiny", tmp_path / "local", executor="submitit-local", device="cpu",
                     progress=False, submitit_params={"timeout_min": 10})
    assert list(rep.status) == ["done"]
    assert len(runs.collect(tmp_path / "local", "output", one, "tiny")) == 2


_PLUGIN = '''
import os, time
import pandas as pd
from stabkit.runs import register_measurement

@register_measurement("test_slow")
def slow(model, cfg, ctx):
    if os.environ.get("TEST_NO_SLEEP") != "1":
        time.sleep(float(cfg.options.get("test_slow", {}).get("seconds", 0)))
    return {"slow": pd.DataFrame({"slept": [1]})}
'''


def test_sigkill_in_the_middle_then_resume(tmp_path):
    (tmp_path / "slowplug.py").write_text(_PLUGIN)
    base = {**TINY, "measure": ["output", "test_slow"], "states": ["trained"]}
    spec = {"name": "killme", "base": base, "scales": {"tiny": {}},
            "grid": [{"seed": [0], "options": [{"test_slow": {"seconds": 0}}]},
                     {"seed": [1], "options": [{"test_slow": {"seconds": 300}}]},
                     {"seed": [2], "options": [{"test_slow": {"seconds": 0}}]}]}
    import yaml
    (tmp_path / "killme.yaml").write_text(yaml.safe_dump(spec))
    root = tmp_path / "runs"
    first, second, third = (root / k for k in runs.load_sweep(spec, "tiny").keys)
    env = _env(STABKIT_PLUGINS="slowplug", PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    cmd = [sys.executable, "-m", "stabkit", "sweep", str(tmp_path / "killme.yaml"), "--scale", "tiny",
           "--root", str(root), "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not ((first / "done").exists() and (second / "metrics.parquet").exists()):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "sweep did not reach the second run in time"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert runs.run_state(second) == "interrupted" and not third.exists()
    assert (second / "lock").exists()  # stale lock of the killed process
    before = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    t_kill = time.time_ns()
    # resume with 2 local worker processes (also covers the process-pool executor)
    res = subprocess.run(cmd + ["--jobs", "2"], env={**env, "TEST_NO_SLEEP": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == before  # untouched
    assert (second / "done").exists() and (second / "config.json").stat().st_mtime_ns > t_kill  # redone
    assert (third / "done").exists()
    out = runs.collect(root, "output", tmp_path / "killme.yaml", "tiny")
    assert sorted(out.run) == sorted([first.name, second.name, third.name])  # each run once
    assert len(runs.collect(root, "slow")) == 3
    assert not list(root.rglob(".*.tmp-*")) and not list(root.rglob("lock"))


def test_runs_locked_by_another_live_process_are_waited_for(tmp_path):
    import threading
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
