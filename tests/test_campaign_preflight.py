"""Campaign pre-flight (issue 27): the first GPU call must not be wasted. Keys committed at any scale are done
and shown by key, the CIFAR-10 stages come first, the smoke test never drops a task for lack of time, dead
workers are replaced, runs.tar is compressed and split, the code commit travels, a page changes scale only
when it loses nothing, float32 training is strict float32, and the campaign's options are checked."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from stabkit import runs, sweeps
from stabkit import campaign as C
from stabkit.campaign import plan as planning
from stabkit.campaign import scheduler, workers
from stabkit.sweeps.sweepfile import load_sweep

TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25, batch_size=32,
            measure=["output"])


def fake_run(root: Path, cfg, finished="2026-01-01T00:00:00+00:00"):
    """A finished run folder as `runs.run` writes it (config, status, done, summary/output)."""
    d = Path(root) / cfg.key
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"key": cfg.key, "format": runs.FORMAT_VERSION, **cfg.to_dict()}))
    summary = {"key": cfg.key, "status": "done", "best_test_err": 0.1, "epochs_run": 1, "device": "cpu",
               "device_name": "x86_64", "host": "a", "torch": "2.x", "finished": finished, "wall_seconds": 2.5}
    pd.DataFrame([summary]).to_parquet(d / "summary.parquet")
    (d / "status.json").write_text(json.dumps(summary))
    pd.DataFrame({"state": ["init", "trained"], "shuffle": [0, 0], "R_f": [1.0, 0.5]}).to_parquet(d / "output.parquet")
    pd.DataFrame({"epoch": [1], "train_loss": [0.5], "test_err": [0.1]}).to_parquet(d / "metrics.parquet")
    (d / "done").touch()
    return d


# ------------------------------------------------------------------ 1, 2: committed at any scale, priority
def test_plan_counts_keys_committed_at_any_scale_and_starts_with_cifar(tmp_path, monkeypatch):
    """D1: gpu-grid keys committed under the cpu scale (same configuration) are never planned, and the plan
    starts with Fig. 3, then Fig. 1 at noise 0 (every net), then Fig. 1 at noise 30."""
    fig6 = set(load_sweep("fig6_layers_scale_detection", "gpu").keys)
    fig3 = set(load_sweep("fig3_layers_cifar", "gpu").keys)
    store = {("fig6_layers_scale_detection", "cpu"): fig6, ("fig3_layers_cifar", "cpu"): {sorted(fig3)[0]}}
    monkeypatch.setattr(planning, "committed_scales", lambda name, root=None: [s for (n, s) in store if n == name],
                        raising=False)
    monkeypatch.setattr(planning, "committed_keys", lambda name, sc, root=None: set(store.get((name, sc), set())))
    plan = C.make_plan("gpu", runs_root=tmp_path / "runs", results_root=tmp_path / "res")
    todo = set(plan.todo)
    assert not todo & fig6 and sorted(fig3)[0] not in todo
    assert fig6 | {sorted(fig3)[0]} <= plan.committed
    assert any("committed at scale(s) ['cpu'] only" in n for n in plan.notes)
    stages = [plan.item(k).stage for k in plan.todo]
    assert stages[:3] == ["Fig. 3"] * 3
    fig1 = [plan.item(k).cfg for k in plan.todo if plan.item(k).stage.startswith("Fig. 1 noise")]
    first_30 = next(i for i, c in enumerate(fig1) if c.noise_std == 30.0)
    assert all(c.noise_std == 0.0 for c in fig1[:first_30]) and all(c.noise_std == 30.0 for c in fig1[first_30:])
    nets0 = {c.net for c in load_sweep("fig1_noise_corrupted_cifar", "gpu").configs if c.noise_std == 0.0}
    planned0 = {plan.item(k).cfg.net for k in plan.todo if plan.item(k).stage in ("Fig. 3", "Fig. 1 noise 0")}
    done_net = next(c.net for c in load_sweep("fig3_layers_cifar", "gpu").configs if c.key == sorted(fig3)[0])
    assert planned0 | {done_net} == nets0  # every net at noise 0 (the committed one excepted)
    # the Fig. 5 nets the cpu grid lacks come before the rest of Fig. 5
    cpu_nets = {c.net for c in load_sweep("fig5_scale_detection", "cpu").configs}
    fig5 = [plan.item(k).cfg for k in plan.todo if plan.item(k).stage.startswith("Fig. 5")]
    lacking = [c.net not in cpu_nets and c.ptr == 1024 for c in fig5]
    assert lacking == sorted(lacking, reverse=True) and any(lacking)


SPEC = {"name": "sc", "base": TINY, "grid": {"seed": [0, 1, 2]},
        "scales": {"tiny": {}, "cpu": {"base": {"epochs": 3}, "grid": {"seed": [0, 1]}},
                   "gpu": {"base": {"epochs": 3}, "grid": {"seed": [0, 1, 2, 3]}}}}


def test_a_page_shows_cpu_committed_runs_of_the_gpu_grid_by_key(tmp_path, monkeypatch):
    monkeypatch.delenv(sweeps.RECOMPUTE_ENV, raising=False)
    res = tmp_path / "res"
    for c in load_sweep(SPEC, "cpu").configs:
        fake_run(tmp_path / "cpu", c)
    sweeps.export(SPEC, "cpu", tmp_path / "cpu", res)
    assert sweeps.committed_scales("sc", res) == ["cpu"]
    from stabkit.sweeps.lookup import scale_choice
    choice = scale_choice(SPEC, res)
    assert choice["scale"] == "gpu" and choice["covered"] == {"cpu": 2, "gpu": 2}
    with pytest.warns(UserWarning, match=r"2 of 4 configurations of the gpu grid .committed.*2 of them committed "
                                         r"at the cpu scale, same configuration"):
        df = sweeps.results(SPEC, "gpu", "output", results_root=res, runs_root=tmp_path / "none", run_missing=False)
    assert set(df.run) == set(load_sweep(SPEC, "cpu").keys)
    assert set(df.attrs["results"]["borrowed"]["cpu"]) == set(load_sweep(SPEC, "cpu").keys)


def test_a_table_only_some_scales_committed_is_read_from_those(tmp_path, monkeypatch):
    """A table that the runs committed at one scale have and those at another lack (a measurement added
    later): the page gets the rows that exist (before: the store without it raised for the whole table)."""
    monkeypatch.delenv(sweeps.RECOMPUTE_ENV, raising=False)
    res = tmp_path / "res"
    cpu, gpu = load_sweep(SPEC, "cpu").configs, load_sweep(SPEC, "gpu").configs
    for c in cpu:
        fake_run(tmp_path / "cpu", c)
    sweeps.export(SPEC, "cpu", tmp_path / "cpu", res)
    late = next(c for c in gpu if c.key not in {x.key for x in cpu})
    d = fake_run(tmp_path / "gpu", late)
    pd.DataFrame({"state": ["trained"], "R_f": [0.25]}).to_parquet(d / "recalibrated.parquet")
    sweeps.export(SPEC, "gpu", tmp_path / "gpu", res)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # part of the grid: said in a warning
        df = sweeps.results(SPEC, "gpu", "recalibrated", results_root=res, runs_root=tmp_path / "none",
                            run_missing=False)
        assert list(df.run) == [late.key] and list(df.R_f) == [0.25]
        out = sweeps.results(SPEC, "gpu", "output", results_root=res, runs_root=tmp_path / "none", run_missing=False)
        assert len(set(out.run)) == 3
        from stabkit.sweeps.resultstore import MissingTableError
        with pytest.raises(MissingTableError, match="no committed table 'spectra'.*committed tables"):
            sweeps.results(SPEC, "gpu", "spectra", results_root=res, runs_root=tmp_path / "none", run_missing=False)


def test_one_larger_scale_run_does_not_flip_a_page(tmp_path, monkeypatch):
    """D7: one committed run of a larger grid (other configurations) leaves the page at the scale that shows
    more; the larger scale is chosen once it covers at least as much."""
    monkeypatch.delenv(sweeps.RECOMPUTE_ENV, raising=False)
    spec = {"name": "fl", "base": TINY, "grid": {"seed": [0, 1, 2]},
            "scales": {"cpu": {"base": {"epochs": 3}}, "gpu": {"base": {"epochs": 5}}}}
    res = tmp_path / "res"
    for c in load_sweep(spec, "cpu").configs:
        fake_run(tmp_path / "cpu", c)
    sweeps.export(spec, "cpu", tmp_path / "cpu", res)
    fake_run(tmp_path / "gpu", load_sweep(spec, "gpu").configs[0])
    sweeps.export(spec, "gpu", tmp_path / "gpu", res)
    assert sweeps.resolve_scale(spec, "auto", res) == "cpu"
    from stabkit.sweeps.lookup import scale_choice
    assert "not gpu (1 configuration(s))" in scale_choice(spec, res)["reason"]
    assert sweeps.resolve_scale(spec, "gpu", res) == "gpu"  # an explicit choice
    for c in load_sweep(spec, "gpu").configs[1:]:
        fake_run(tmp_path / "gpu", c)
    sweeps.export(spec, "gpu", tmp_path / "gpu", res)
    assert sweeps.resolve_scale(spec, "auto", res) == "gpu"


def test_a_larger_grid_with_as_many_networks_replaces_a_partly_trained_smaller_one(tmp_path, monkeypatch):
    """The cpu CIFAR-10 grid trains the small grid's architectures better: with as many networks and at
    least half the configurations it is shown; with fewer networks it is not."""
    monkeypatch.delenv(sweeps.RECOMPUTE_ENV, raising=False)
    spec = {"name": "nw", "base": TINY, "grid": {"net": ["LeNet", "VGG11bn"], "seed": [0, 1]},
            "scales": {"small": {"base": {"epochs": 1}},
                       "cpu": {"base": {"epochs": 3}, "grid": {"net": ["LeNet", "VGG11bn"], "seed": [0]}}}}
    res = tmp_path / "res"
    for c in load_sweep(spec, "small").configs:
        fake_run(tmp_path / "small", c)
    sweeps.export(spec, "small", tmp_path / "small", res)
    cpu = load_sweep(spec, "cpu").configs
    fake_run(tmp_path / "cpu", cpu[0])
    sweeps.export(spec, "cpu", tmp_path / "cpu", res)
    assert sweeps.resolve_scale(spec, "auto", res) == "small"  # one network of two
    fake_run(tmp_path / "cpu", cpu[1])
    sweeps.export(spec, "cpu", tmp_path / "cpu", res)
    assert sweeps.resolve_scale(spec, "auto", res) == "cpu"  # both networks, 2 of the small grid's 4 configurations


# ------------------------------------------------------------------------ 3: the smoke test and CIFAR-10
def _tiny_cifar(root: Path, per_class: int = 2) -> Path:
    """Class folders ``train|test/<class>/*.png`` of random 32x32 images (a CIFAR-10 layout)."""
    import numpy as np
    from PIL import Image

    from stabkit.data import CLASSES
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_spent_smoke_budget_never_drops_cifar(tmp_path, monkeypatch):
    """D2: with the budget spent before the CIFAR-10 check, the data are still found (from names alone) and
    the CIFAR-10 runs stay in the plan."""
    from stabkit.campaign import smoke as S
    monkeypatch.setenv("STABKIT_DATA", str(_tiny_cifar(tmp_path / "cifar")))
    monkeypatch.setenv("STABKIT_CACHE", str(tmp_path / "cache"))
    lines: list[str] = []
    report = S.smoke("cpu", "tiny", tmp_path / "runs", time.time() - 1.0, lines.append)
    assert report["cifar10_available"] is True and report["cifar10_presence"]["kind"] == "folders"
    assert report["skipped"] == ["tiny run twopoints", "tiny run scale1d", "tiny run cifar10"]
    skip = ["cifar10"] if not report["cifar10_available"] else []
    plan = C.make_plan("gpu", only=["fig3", "fig1"], runs_root=tmp_path / "runs", results_root=tmp_path / "res",
                       skip_tasks=skip)
    fig1 = set(load_sweep("fig1_noise_corrupted_cifar", "gpu").keys)
    assert set(plan.todo) == fig1 | set(load_sweep("fig3_layers_cifar", "gpu").keys)  # + Fig. 3's batch-norm control
    monkeypatch.setenv("STABKIT_DATA", str(tmp_path / "nothing-here"))
    import stabkit.data.cifar_files as cifar_files
    monkeypatch.setattr(cifar_files, "shared_data_dir", lambda: None)
    assert S.smoke("cpu", "tiny", tmp_path / "runs", time.time() - 1.0, lines.append)["cifar10_available"] is False


def test_smoke_part_is_really_bounded():
    from stabkit.campaign import smoke as S
    report: dict = {}
    lines: list[str] = []
    t = time.time()
    assert S._part(report, "slow", t + 0.5, lines.append, lambda: time.sleep(5) or 1) is None
    assert time.time() - t < 2.0
    assert report["overrun"] == ["slow"] and "left in the background" in lines[-1]
    assert S._part(report, "quick", time.time() + 5, lines.append, lambda: 7) == 7
    assert S._part(report, "bad", time.time() + 5, lines.append, lambda: 1 / 0) is None
    assert report["errors"]["bad"].startswith("ZeroDivisionError")


def test_cifar_decoding_is_parallel_and_in_order(tmp_path, monkeypatch):
    import threading

    import stabkit.data.cifar_files as cifar_files
    from stabkit.data import cifar10_tensors
    root = _tiny_cifar(tmp_path / "cifar", per_class=40)
    seen: set[str] = set()
    real = cifar_files._decode_image

    def spy(raw, name, tv=None):
        seen.add(threading.current_thread().name)
        return real(raw, name, tv)
    monkeypatch.setattr(cifar_files, "_decode_image", spy)
    monkeypatch.setattr(cifar_files.os, "cpu_count", lambda: 4)
    monkeypatch.setenv("STABKIT_CACHE", str(tmp_path / "cache"))
    x, y = cifar10_tensors(root, train=True)
    assert x.shape == (400, 3, 32, 32) and y.tolist() == sorted(y.tolist())
    assert len({n for n in seen if n.startswith("cifar-decode")}) >= 2
    from PIL import Image
    import numpy as np
    first = np.asarray(Image.open(root / "train" / "airplane" / "0.png").convert("RGB")).transpose(2, 0, 1)
    assert (x[0].numpy() == first).all()
    assert cifar_files.cifar10_location(root) == ("folders", root)


# ----------------------------------------------------------------------- 4: dead and broken workers
class FakePool:
    """The scheduler's view of a worker pool, driven in-process: ``behave(w, key)`` says what worker ``w``
    does with run ``key``: ``"done"``, ``"die"`` (the process disappears), ``"oom"`` or ``"sticky"``."""

    def __init__(self, n, behave, runs_root):
        self.n, self.behave, self.runs_root = n, behave, Path(runs_root)
        self.tasks = [self._Q(self, w) for w in range(n)]
        self.procs = list(range(n))
        self.ready, self.busy, self.respawned = set(range(n)), {}, {}
        self.dead: set[int] = set()
        self.msgs: list = []
        self.log: list = []

    class _Q:
        def __init__(self, pool, w):
            self.pool, self.w = pool, w

        def put(self, msg):
            self.pool.started(self.w, msg)

    def started(self, w, msg):
        cfg = runs.RunConfig.from_dict(msg[1])
        what = self.behave(w, cfg.key)
        self.log.append((w, cfg.key, what))
        if what == "die":
            self.dead.add(w)
        elif what == "done":
            d = self.runs_root / cfg.key
            d.mkdir(parents=True, exist_ok=True)
            (d / "status.json").write_text(json.dumps({"status": "done", "epochs_run": 1}))
            (d / "config.json").write_text("{}")
            (d / "done").touch()
            self.msgs.append(("run", w, cfg.key, "done", "", 0.5, {"peak_gpu_gib": 1.5, "peak_rss_gib": 0.1}))
        elif what == "oom":
            self.msgs.append(("run", w, cfg.key, "failed", "OutOfMemoryError: CUDA out of memory. Tried to "
                              "allocate 2.00 GiB", 0.5, {}))
        elif what == "sticky":
            self.msgs.append(("run", w, cfg.key, "failed", "AcceleratorError: CUDA error: an illegal memory "
                              "access was encountered", 0.5, {}))
            self.dead.add(w)  # the worker exits after reporting

    def alive(self, w):
        return w not in self.dead

    def exitcode(self, w):
        return None if w not in self.dead else -9

    def respawn(self, w):
        self.dead.discard(w)
        self.busy.pop(w, None)
        self.respawned[w] = self.respawned.get(w, 0) + 1

    def get(self, timeout):
        return self.msgs.pop(0) if self.msgs else None

    def kill(self):
        pass


def _schedule(tmp_path, pool, n_runs=4, deadline=30.0):
    plan = C.make_plan("tiny", only=["fig5"], runs_root=tmp_path / "runs", results_root=tmp_path / "res")
    plan.todo = plan.todo[:n_runs]
    model = C.TimeModel("cpu")
    timing = {"runs": {}}
    lines: list[str] = []
    t0 = time.time()
    packer = C.Packer(tmp_path / "out", tmp_path / "runs", plan.members, "cpu")
    (tmp_path / "out").mkdir(exist_ok=True)
    finished: list[str] = []
    scheduler._schedule(pool, plan, model, pool.n, tmp_path / "runs", packer, finished, timing, t0, t0 + deadline, 1.0,
                lines.append)
    return plan, finished, timing, lines, time.time() - t0


def test_a_killed_worker_is_respawned_and_its_run_retried_elsewhere(tmp_path):
    died = []

    def behave(w, key):
        if not died:
            died.append(key)
            return "die"
        return "done"
    pool = FakePool(2, behave, tmp_path / "runs")
    plan, finished, timing, lines, wall = _schedule(tmp_path, pool, n_runs=2)
    assert sorted(finished) == sorted(plan.todo[:2]) and wall < 10
    assert pool.respawned == {0: 1}
    assert any("worker 0 died" in line and "respawning it once" in line for line in lines)
    retried = [w for w, k, _ in pool.log if k == died[0]]
    assert retried == [0, 1]  # retried once, on the other worker
    assert timing["runs"][died[0]]["retry"].startswith("worker 0 died")
    assert timing["runs"][finished[0]]["peak_gpu_gib"] == 1.5


def test_workers_that_keep_dying_end_the_schedule_at_once(tmp_path):
    """D3: a worker that dies at once (CUDA initialisation in the child) is not waited for until the deadline."""
    pool = FakePool(1, lambda w, k: "die", tmp_path / "runs")
    plan, finished, timing, lines, wall = _schedule(tmp_path, pool, n_runs=3, deadline=60.0)
    assert not finished and wall < 10
    assert any("no worker left" in line for line in lines) and pool.respawned == {0: 1}


def test_out_of_memory_is_retried_alone_and_sticky_errors_elsewhere(tmp_path):
    seen: dict[str, int] = {}

    def behave(w, key):
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1 and len(seen) == 1:
            return "oom"
        if seen[key] == 1 and len(seen) == 2:
            return "sticky"
        return "done"
    pool = FakePool(2, behave, tmp_path / "runs")
    plan, finished, timing, lines, wall = _schedule(tmp_path, pool, n_runs=3)
    assert sorted(finished) == sorted(plan.todo[:3])
    oom_key, sticky_key = list(seen)[:2]
    assert timing["runs"][oom_key]["retry"].startswith("out of memory")
    assert timing["runs"][oom_key]["concurrent"] == 1  # alone on the device
    assert timing["runs"][sticky_key]["retry"].startswith("broken CUDA context")
    assert C.failure_kind("OutOfMemoryError: CUDA out of memory") == "oom"
    assert C.failure_kind("ValueError: bad") == "run"


def test_real_pool_notices_dead_workers_and_respawns_them():
    """D3 with processes: a worker killed by SIGKILL, and one whose CUDA initialisation fails in the child (on
    a machine without CUDA), are seen dead at once (no wait for their 'ready'); a respawned worker works."""
    import os
    import signal
    pool = workers.WorkerPool(1, "cpu", 1)
    try:
        pool.wait_ready([0], time.time() + 180)
        assert 0 in pool.ready
        os.kill(pool.procs[0].pid, signal.SIGKILL)  # our own child
        pool.procs[0].join(10)
        t = time.time()
        pool.wait_ready([0], time.time() + 60)
        assert not pool.alive(0) and time.time() - t < 2
        pool.respawn(0)
        pool.wait_ready([0], time.time() + 180)
        assert 0 in pool.ready and pool.respawned == {0: 1}
    finally:
        pool.kill()
    import torch
    if not torch.cuda.is_available():
        bad = workers.WorkerPool(1, "cuda", 1)
        try:
            t = time.time()
            bad.wait_ready([0], time.time() + 180)
            assert not bad.alive(0) and 0 not in bad.ready and time.time() - t < 120
        finally:
            bad.kill()


# ------------------------------------------------------------------------- 5: compressed, split packing
def test_packed_runs_are_compressed_and_split_before_the_limit(tmp_path):
    import os
    import tarfile
    root, out, res = tmp_path / "runs", tmp_path / "out", tmp_path / "res"
    out.mkdir()
    spec = {"name": "pk", "base": TINY, "grid": {"seed": list(range(7))}, "scales": {"cpu": {}}}
    cfgs = load_sweep(spec, "cpu").configs
    for c in cfgs:
        d = fake_run(root, c)
        # ~60 KB that gzip cannot shrink: seven runs need more than one 150 KB part
        pd.DataFrame({"blob": [os.urandom(60_000)]}).to_parquet(d / "noise.parquet", compression=None)
    members = {c.key: [("pk", "cpu")] for c in cfgs}
    packer = C.Packer(out, root, members, "cpu", limit=150_000)
    for i in range(len(cfgs)):
        paths = packer.pack([c.key for c in cfgs[:i + 1]])
    assert [p.name for p in paths][:2] == ["runs.tar.gz", "runs-2.tar.gz"] and len(paths) >= 3
    seen = []
    for p in paths:
        assert p.stat().st_size <= 150_000 and p.read_bytes()[:2] == b"\x1f\x8b"  # gzip
        with tarfile.open(p) as tar:
            man = json.load(tar.extractfile("manifest.json"))
            assert set(man["runs"]) == {n.split("/")[0] for n in tar.getnames() if "/" in n}
            assert "commit" in man["git"]
            seen += list(man["runs"])
    assert sorted(seen) == sorted(c.key for c in cfgs)  # every run once
    got = sweeps.import_runs(out, res)
    assert sorted(got.key) == sorted(c.key for c in cfgs) and set(got.action) == {"added"}
    # plain packing is 3.7x larger on real runs; here: the parquet tables of a run compress
    small = tmp_path / "small"
    C.pack_runs(small / "a.tar", root, [cfgs[0].key], members, "cpu")
    C.pack_runs(small / "a.tar.gz", root, [cfgs[0].key], members, "cpu")
    assert (small / "a.tar.gz").stat().st_size < (small / "a.tar").stat().st_size


# ------------------------------------------------------------------------------ 6: the code commit travels
def test_code_commit_travels_without_git(tmp_path, monkeypatch):
    from stabkit.runs.provenance import CODE_COMMIT_ENV, CODE_STATE_FILE, git_state
    monkeypatch.delenv(CODE_COMMIT_ENV, raising=False)
    monkeypatch.delenv("STABKIT_CODE_DIRTY", raising=False)
    bare = tmp_path / "tree"  # a copy of the tree without .git, as a lent GPU gets it
    bare.mkdir()
    assert git_state(bare) == {"commit": None, "dirty": None}
    (bare / CODE_STATE_FILE).write_text(json.dumps({"commit": "80c0af4" + "0" * 33, "dirty": True}))
    assert git_state(bare) == {"commit": "80c0af4" + "0" * 33, "dirty": True}
    monkeypatch.setenv(CODE_COMMIT_ENV, "abcdef1234567")
    monkeypatch.setenv("STABKIT_CODE_DIRTY", "0")
    assert git_state(bare) == {"commit": "abcdef1234567", "dirty": False}
    monkeypatch.setenv(CODE_COMMIT_ENV, "not a sha")
    assert git_state(bare)["commit"] == "80c0af4" + "0" * 33


# ------------------------------------------------------------------------ 8: strict float32 training
def test_float32_training_is_strict_on_cuda():
    """The gpu scale's "float32 training" must not run TF32 convolutions (torch's default on cuDNN)."""
    from stabkit.precision import float32_mode
    assert float32_mode("cuda", False, "float32") == "strict"
    assert float32_mode("cuda", False, "tf32") == "tf32"
    assert float32_mode("cuda", True, "float32") is None and float32_mode("cuda", False, "bf16") is None
    assert float32_mode("cpu", False, "float32") is None
    for name in ("fig5_scale_detection", "fig6_layers_scale_detection"):
        assert all(float32_mode("cuda", c.fast, c.precision) == "strict" for c in load_sweep(name, "gpu").configs)
    assert runs.RunConfig(task="twopoints", net="LeNet", precision="tf32").precision == "tf32"


def test_train_applies_the_float32_mode(monkeypatch):
    """train() enters the flags float32_mode chooses (checked through the flags it records on the CPU, where
    the decision is None, and with the decision forced to strict)."""
    import torch

    import stabkit.graph as graph
    import stabkit.train as T
    entered = []
    real = graph.strict_float32

    def spy(enabled=True):
        entered.append(enabled)
        return real(enabled)
    monkeypatch.setattr(graph, "strict_float32", spy)
    monkeypatch.setattr(T, "float32_mode", lambda d, f, p: "strict")
    x = torch.randn(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    spec = T.TrainSpec.for_task("twopoints", "LeNet", epochs=1, loss="ce")
    res = T.train(model, {"train": [(x, y)], "test": [(x, y)]}, spec, progress=False)
    assert entered == [True] and res.mode["precision"] == "float32"


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda(), reason="needs CUDA (tools/gpu_campaign.sh runs it first on a lent GPU)")
def test_cuda_float32_training_runs_without_tf32():
    import torch

    import stabkit.train as T
    from stabkit.precision import tf32_state
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(tf32_state())
            return x
    x = torch.randn(8, 1, 8, 8, device="cuda")
    y = torch.randint(0, 10, (8,), device="cuda")
    for precision, want in (("float32", False), ("tf32", True)):
        seen.clear()
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), Probe(), torch.nn.Flatten(),
                                    torch.nn.Linear(72, 10)).cuda()
        spec = T.TrainSpec.for_task("twopoints", "LeNet", epochs=1, loss="ce", precision=precision)
        res = T.train(model, {"train": [(x, y)], "test": [(x, y)]}, spec, progress=False)
        assert seen and all(s == {"matmul": want, "cudnn_conv": want} for s in seen), (precision, seen[:2])
        assert res.mode["tf32_cudnn"] is want and res.mode["precision"] == precision
