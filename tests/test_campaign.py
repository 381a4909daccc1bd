"""The campaign (``python -m stabkit campaign``): a CPU rehearsal of a time-limited GPU allocation, the
plan's priority order, packing, the time model, and the data/ignore conventions it relies on."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from stabkit import campaign as C
from stabkit.campaign import scheduler
from stabkit.runs.config import RunConfig
from stabkit.sweeps.sweepfile import load_sweep
from stabkit.campaign.timemodel import TimeModel, net_features

REPO = Path(__file__).resolve().parents[1]


def _results_module():
    return importlib.import_module("stabkit.sweeps")


def test_plan_priority_seed_order_and_shared_runs(tmp_path):
    plan = C.make_plan("gpu", runs_root=tmp_path / "runs", results_root=tmp_path / "results")
    stages = [it.stage for it in plan.items]
    order = [st.label for _, st in C.plan.stages()]
    assert [order.index(s) for s in stages if s in order] == sorted(order.index(s) for s in stages if s in order)
    assert stages[0] == "Fig. 3"  # the CIFAR-10 claims a CPU cannot test come first
    # within a stage, seed 0 of every network before any second seed
    for label in set(stages):
        seeds = [it.cfg.seed for it in plan.items if it.stage == label]
        assert seeds == sorted(seeds), label
    # runs shared between sweeps are planned once and listed under every (sweep, scale)
    keys = [it.key for it in plan.items]
    assert len(keys) == len(set(keys))
    fig6 = load_sweep("fig6_layers_scale_detection", "gpu")
    for c in fig6.configs:
        names = {s for s, _ in plan.members[c.key]}
        shared = {"fig5_scale_detection", "fig2_laplacian_spectra"}
        # the batch-norm control runs (measure: recalibrated) are Fig. 6's own, the others shared
        assert names == {"fig6_layers_scale_detection"} if c.measure == ("recalibrated",) else names >= {
            "fig6_layers_scale_detection", *shared}
    fig3 = load_sweep("fig3_layers_cifar", "gpu")
    assert all({"fig3_layers_cifar", "fig1_noise_corrupted_cifar"} <= {s for s, _ in plan.members[c.key]}
               for c in fig3.configs if c.measure != ("recalibrated",))
    # Fig. 5 at ptr 2048 only after Fig. 5 at ptr 1024
    first_2048 = next(i for i, it in enumerate(plan.items) if it.cfg.task == "twopoints" and it.cfg.ptr == 2048)
    last_1024 = max(i for i, it in enumerate(plan.items) if it.cfg.task == "twopoints" and it.cfg.ptr == 1024)
    assert last_1024 < first_2048


def test_fig5_gpu_scale_is_the_paper_protocol():
    """The gpu scale of the scale-detection sweeps must never need redoing: no bf16 there."""
    for name in ("fig5_scale_detection", "fig6_layers_scale_detection"):
        for c in load_sweep(name, "gpu").configs:
            assert not c.fast and c.measure_dtype == "float64" and c.P == 500 and c.epochs == 300


def test_time_model_fits_measured_steps():
    cfg = RunConfig(task="twopoints", net="LeNet", width_factor=0.5, ptr=64, test_size=64, epochs=2, P=8,
                    batch_size=32)
    m = TimeModel("cpu")
    before = m.parts(cfg)
    assert before["total"] > 0 and before["epochs"] == 2
    fam = net_features(cfg)["family"]
    m.fit_family(fam, cfg, step_s=0.5, measure_probe_s=0.01)
    assert m.step_seconds(cfg) == pytest.approx(0.5, rel=1e-6)
    assert m.parts(cfg)["train"] == pytest.approx(2 * 2 * 0.5, rel=1e-6)
    m.observe(cfg, wall_s=3 * m.parts(cfg)["total"], epochs_run=2)
    assert m.calibration("twopoints") == pytest.approx(3.0)
    assert m.estimate(cfg) == pytest.approx(3 * m.parts(cfg)["total"])


def test_pack_runs_keeps_tables_never_checkpoints(tmp_path):
    root = tmp_path / "runs"
    for k, done in (("aaaaaaaaaaaa", True), ("bbbbbbbbbbbb", False)):
        d = root / k
        d.mkdir(parents=True)
        for f in ("config.json", "status.json", "output.parquet", "best.pt", "last.pt", "lock"):
            (d / f).write_text("{}")
        if done:
            (d / "done").touch()
    out = C.pack_runs(tmp_path / "out" / "runs.tar", root, ["aaaaaaaaaaaa", "bbbbbbbbbbbb"],
                      {"aaaaaaaaaaaa": [("fig5_scale_detection", "gpu"), ("fig2_laplacian_spectra", "gpu")]}, "cpu")
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert names == {"manifest.json", "aaaaaaaaaaaa/config.json", "aaaaaaaaaaaa/status.json",
                     "aaaaaaaaaaaa/output.parquet", "aaaaaaaaaaaa/done"}
    assert manifest["format"] == 1 and manifest["device"] == "cpu"
    assert manifest["runs"] == {"aaaaaaaaaaaa": [["fig5_scale_detection", "gpu"], ["fig2_laplacian_spectra", "gpu"]]}
    assert [p.name for p in out.parent.iterdir()] == ["runs.tar"]  # no temporary file left


def test_campaign_rehearsal_on_cpu(tmp_path):
    """campaign --device cpu --deadline 20 --scale tiny: skips committed configurations, never starts a run
    it estimates past the deadline, packs runs.tar, and the results store imports it."""
    from stabkit.runs.execute import run

    results = _results_module()
    res_root, runs_root, out = tmp_path / "results", tmp_path / "runs", tmp_path / "campaign"
    committed = load_sweep("appendix_scale_detection_1d", "tiny").configs[1]   # not a smoke-test run
    if True:  # commit one configuration first: the campaign must skip it
        pre = tmp_path / "pre-runs"
        run(committed, pre, device="cpu", progress=False)
        results.export("appendix_scale_detection_1d", "tiny", runs_root=pre, results_root=res_root)
        assert committed.key in results.committed_keys("appendix_scale_detection_1d", "tiny", res_root)
    deadline = 20.0
    t = time.time()
    summary = C.campaign(out, deadline, jobs=1, device="cpu", scale="tiny", runs_root=runs_root,
                         results_root=res_root, echo=False)
    wall = time.time() - t
    assert wall <= deadline + 6.0, wall
    assert sorted(p.name for p in out.iterdir()) == ["campaign.log", "gpu_trace.csv", "runs.tar.gz", "smoke.json",
                                                    "timing.json"]
    timing = json.loads((out / "timing.json").read_text())
    smoke = json.loads((out / "smoke.json").read_text())
    assert smoke["versions"]["torch"] and "matmul" in smoke["tf32"] and smoke["tiny_runs"]
    assert summary["finished"] >= 1
    reserve = max(2.0, 0.02 * deadline)
    for k, r in timing["runs"].items():  # never started past its estimated deadline
        assert r["started_s"] + r["estimate_s"] <= deadline - reserve + 1e-6, (k, r)
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert not [n for n in names if n.endswith(".pt")]
    keys = set(manifest["runs"])
    assert keys and all(f"{k}/done" in names and f"{k}/config.json" in names for k in keys)
    if results is not None:
        assert committed.key not in keys and committed.key not in timing["runs"]
        assert not (runs_root / committed.key).exists()
    fig5 = load_sweep("fig5_scale_detection", "tiny").keys
    for k in keys & set(fig5):
        assert ["fig2_laplacian_spectra", "tiny"] in manifest["runs"][k]
    rep = results.import_runs(out, res_root)
    assert set(rep.key) == keys
    for k, members in manifest["runs"].items():
        for sweep, scale in members:
            assert k in results.committed_keys(sweep, scale, res_root)


def test_cifar_archive_in_an_ignored_data_folder(tmp_path, monkeypatch):
    """The data travel with the code: data/cifar10-jpeg.tar.gz in the checkout, STABKIT_DATA=data."""
    from stabkit.data import data_roots
    from stabkit.data.cifar_files import locate
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar10-jpeg.tar.gz").write_bytes(b"")  # located by name, not read here
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STABKIT_DATA", "data")
    root = data_roots()[0]
    assert root == Path("data")
    kind, path = locate(root)
    assert kind == "archive" and path.name == "cifar10-jpeg.tar.gz"
    res = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "data/cifar10-jpeg.tar.gz"])
    assert res.returncode == 0, "data/ must be ignored by git"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_gitignore_ignores_venv_and_build_links(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")
    target = tmp_path / "elsewhere"
    target.mkdir()
    for name in (".venv", "_build", "data"):
        os.symlink(target, repo / name)
        res = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", name])
        assert res.returncode == 0, f"a link named {name} is not ignored"
        (repo / name).unlink()
        (repo / name).mkdir()
        (repo / name / "f").write_text("x")
        res = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", f"{name}/f"])
        assert res.returncode == 0, f"a folder named {name} is not ignored"
    st = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True)
    assert st.stdout.strip() == "?? .gitignore"


def test_plan_and_time_model_count_each_network_trained_once(tmp_path):
    """The probes' unrotated nets are Fig. 1's noise-free nets (same training): planned as measurements only."""
    cfg = RunConfig(task="twopoints", net="LeNet", width_factor=0.5, ptr=64, test_size=64, epochs=2, P=8,
                    batch_size=32)
    m = TimeModel("cpu")
    full, measure_only = m.parts(cfg), m.parts(cfg, trained=True)
    assert measure_only["train"] == measure_only["eval"] == 0.0 and full["train"] > 0
    assert measure_only["measure"] == full["measure"] and m.estimate(cfg, trained=True) < m.estimate(cfg)
    plan = C.make_plan("gpu", runs_root=tmp_path / "runs", results_root=tmp_path / "results")
    est = C.estimate_plan(plan, m)
    first = {}
    for k in plan.todo:
        tk = plan.item(k).cfg.training_key
        assert est["runs"][k]["reuses_training"] == (tk in first), k
        first.setdefault(tk, k)
    reusing = [k for k in plan.todo if est["runs"][k]["reuses_training"]]
    nets = {plan.item(k).cfg.net for k in reusing}
    assert {"VGG11bn", "AlexNet", "LeNet", "ResNet18"} <= nets  # probe_rotation's unrotated nets
    assert all(est["runs"][k]["train"] == 0.0 for k in reusing)


class _FakePool:
    """Two workers that finish each run at the next poll (the scheduler's view of a pool)."""

    def __init__(self, n=2):
        self.procs, self.ready, self.busy, self.started = list(range(n)), set(range(n)), {}, []
        self.respawned = {}
        self.tasks = [self._Queue(self, w) for w in range(n)]

    class _Queue:
        def __init__(self, pool, w):
            self.pool, self.w = pool, w

        def put(self, msg):
            self.pool.started.append((self.w, RunConfig.from_dict(msg[1]).key))

    def get(self, timeout):
        w, k = next((w, k) for w, k in self.started if w in self.busy and self.busy[w][0] == k)
        return ("run", w, k, "done", "", 0.01, {})

    def alive(self, w):
        return True

    def kill(self):
        pass


def test_scheduler_waits_for_a_network_in_training_instead_of_training_it_twice(tmp_path):
    base = dict(task="twopoints", net="LeNet", width_factor=0.5, ptr=64, test_size=64, epochs=2, P=8, batch_size=32)
    a, b, c = RunConfig(**base), RunConfig(**base, measure=["output"]), RunConfig(**{**base, "seed": 1})
    assert a.training_key == b.training_key != c.training_key
    items = [C.PlanItem("s", cfg) for cfg in (a, b, c)]
    plan = C.Plan("tiny", items, [i.key for i in items], [], set(), [], {}, [])
    pool, timing = _FakePool(2), {"runs": {}}
    (tmp_path / "out").mkdir()
    packer = C.Packer(tmp_path / "out", tmp_path / "runs", {}, "cpu")
    scheduler._schedule(pool, plan, TimeModel("cpu"), 2, tmp_path / "runs", packer, [], timing,
                time.time(), time.time() + 3600, 1.0, lambda msg: None)
    # b waits for a (its network) while c starts on the other worker
    assert [k for _, k in pool.started] == [a.key, c.key, b.key]
    assert timing["runs"][b.key]["estimate_s"] < timing["runs"][a.key]["estimate_s"]
