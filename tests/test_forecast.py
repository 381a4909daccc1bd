"""``stabkit.campaign.forecast`` and ``stabkit status --forecast``: the core-hours a sweep's unfinished runs
still need on a CPU, from the pace finished runs measured (CPU time where recorded)."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from stabkit import campaign, locks, precision, runs, sweeps
from stabkit.__main__ import main
from stabkit.campaign.timemodel import TimeModel
from stabkit.checkpoints import CheckpointFolder

TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=3, P=8, width_factor=0.25, batch_size=32,
            measure=["output"], stop_at_zero_loss=False)


def _sweep(tmp_path, name="plan", grid=None, base=None):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({"name": name, "base": {**TINY, **(base or {})},
                                    "grid": grid or {"seed": [0, 1, 2, 3]}, "scales": {"tiny": {}}}))
    return spec, sweeps.load_sweep(spec, "tiny")


def _timed(path, seconds, cpu=None, threads=1, device="cpu", machine="CPU A"):
    """Give a finished run folder chosen epoch times (its real ones depend on the machine) and the name of the
    machine that took them (not this one: the forecast prefers runs of the CPU it runs on)."""
    m = pd.read_parquet(path / "metrics.parquet")
    m["seconds"] = seconds
    m["cpu_seconds"] = np.nan if cpu is None else cpu
    m.to_parquet(path / "metrics.parquet")
    s = pd.read_parquet(path / "summary.parquet")
    s["threads"], s["mode_device"], s["device"], s["measure_seconds"] = threads, device, device, 2.0
    s["device_name"] = machine
    s.to_parquet(path / "summary.parquet")
    st = json.loads((path / "status.json").read_text())  # what an export commits beside the tables
    st.update(threads=threads, mode_device=device, device=device, measure_seconds=2.0, device_name=machine)
    (path / "status.json").write_text(json.dumps(st))


def _model_epoch(cfg) -> float:
    p = TimeModel("cpu").parts(cfg)
    return (p["train"] + p["eval"]) / p["epochs"]


def test_paces_take_the_median_epoch_in_cpu_time_else_wall_times_threads(tmp_path):
    _, sw = _sweep(tmp_path)
    root = tmp_path / "runs"
    a, b, gpu = sw.configs[:3]
    for c in (a, b, gpu):
        runs.run(c, root, device="cpu", progress=False)
    _timed(root / a.key, [5.0, 5.0, 5.0], cpu=[1.0, 1.0, 9.0])   # a paused epoch: its wall time, not its CPU time
    _timed(root / b.key, [2.0, 2.0, 50.0], threads=2)            # older record: no CPU time
    _timed(root / gpu.key, [0.1, 0.1, 0.1], device="cuda")       # another kind of machine: not a CPU pace
    sweeps.export(sw, "tiny", root, tmp_path / "results")         # committed and in the runs root: counted once
    got = campaign.paces(tmp_path / "results", root).set_index("run")
    assert sorted(got.index) == sorted([a.key, b.key])
    assert got.loc[a.key, "epoch_core_s"] == 1.0 and got.loc[a.key, "timed_by"] == "cpu time"
    assert got.loc[b.key, "epoch_core_s"] == 4.0 and got.loc[b.key, "timed_by"] == "wall x threads"
    assert got.loc[b.key, "measure_core_s"] == 4.0 and got.loc[a.key, "epochs_run"] == 3
    # a fresh clone has only the committed tables: the same paces
    only_committed = campaign.paces(tmp_path / "results", tmp_path / "nothing").set_index("run")
    pd.testing.assert_frame_equal(only_committed.drop(columns="config").sort_index(),
                                  got.drop(columns="config").sort_index())


def test_forecast_scales_the_pace_of_the_same_network_by_the_time_model(tmp_path):
    _, done = _sweep(tmp_path, "done", grid={"seed": [0]})
    root = tmp_path / "runs"
    runs.run(done.configs[0], root, device="cpu", progress=False)
    _timed(root / done.configs[0].key, [7.0, 7.0, 7.0], cpu=[3.0, 3.0, 3.0])
    _, sw = _sweep(tmp_path, "todo", grid=[{"width_factor": [0.25, 1.0]}, {"net": ["AlexNet"]}],
                   base={"seed": 5})
    f = campaign.forecast_sweep(sw, runs_root=root, results_root=tmp_path / "results").set_index("width_factor")
    narrow, wide = sw.configs[0], sw.configs[1]
    lenet = f[f.net == "LeNet"]
    assert lenet.loc[0.25, "epoch_core_s"] == pytest.approx(3.0)          # the same configuration: its pace
    assert lenet.loc[1.0, "epoch_core_s"] == pytest.approx(3.0 * _model_epoch(wide) / _model_epoch(narrow))
    assert lenet.loc[1.0, "epoch_core_s"] > 3.0
    assert set(lenet.basis) == {"1 run of LeNet"}
    assert list(f[f.net == "AlexNet"].basis) == ["1 run of other networks, scaled"]
    assert (f.state == "pending").all() and (f.epochs_left == 3).all()
    # three epochs and the measurement (that run's 2 s, the same configuration)
    assert lenet.loc[0.25, "core_hours"] == pytest.approx((3 * 3.0 + 2.0) / 3600)
    assert (f.core_hours > 3 * f.epoch_core_s / 3600).all()
    # nothing measured: the time model's assumption, said so
    bare = campaign.forecast_sweep(sw, runs_root=tmp_path / "empty", results_root=tmp_path / "results",
                                   measured=campaign.paces(tmp_path / "none", tmp_path / "none"))
    assert set(bare.basis) == {"time model (assumed)"}


def test_cpu_time_is_preferred_to_wall_times_threads(tmp_path):
    _, done = _sweep(tmp_path, "done", grid={"seed": [0, 1]})
    root = tmp_path / "runs"
    for c in done.configs:
        runs.run(c, root, device="cpu", progress=False)
    _timed(root / done.configs[0].key, [3.0] * 3, cpu=[3.0] * 3)
    _timed(root / done.configs[1].key, [30.0] * 3, threads=2)  # a busy machine, timed by the wall clock
    _, sw = _sweep(tmp_path, "todo", grid={"seed": [9]})
    f = campaign.forecast_sweep(sw, runs_root=root, results_root=tmp_path / "results")
    assert f.epoch_core_s.tolist() == [pytest.approx(3.0)] and f.basis.tolist() == ["1 run of LeNet"]


def test_forecast_counts_what_each_run_has_done(tmp_path):
    _, sw = _sweep(tmp_path, grid={"seed": [0, 1, 2, 3, 4, 5]})
    by_seed = {c.seed: c for c in sw.configs}
    root, res = tmp_path / "runs", tmp_path / "results"
    runs.run(by_seed[0], root, device="cpu", progress=False)
    _timed(root / by_seed[0].key, [4.0] * 3, cpu=[2.0] * 3)
    runs.run(by_seed[1], root, device="cpu", progress=False)
    _timed(root / by_seed[1].key, [4.0] * 3, cpu=[2.0] * 3)
    sweeps.export(sweeps.load_sweep({"name": "plan", "base": TINY, "grid": {"seed": [1]}, "scales": {"tiny": {}}},
                                    "tiny"), "tiny", root, res)
    interrupted = root / by_seed[2].key                              # two epochs saved
    interrupted.mkdir(parents=True)
    CheckpointFolder(interrupted, "LeNet", by_seed[2].key).write_resume({"rows": [{"epoch": 1}, {"epoch": 2}]})
    trained = root / by_seed[3].key                                  # training ended, measurement missing
    trained.mkdir(parents=True)
    (trained / "trained.json").write_text(json.dumps({"key": by_seed[3].key, "training": {}}))
    running = root / by_seed[4].key
    running.mkdir(parents=True)
    lock = locks.RunLock(running)
    assert lock.acquire()
    try:
        lock.heartbeat({"phase": "training", "epoch": 1, "epochs": 3, "epoch_seconds": 9.0, "pace_seconds": 9.0,
                        "pace_cpu_seconds": 8.0, "threads": 1})
        f = campaign.forecast_sweep(sw, runs_root=root, results_root=res).set_index("seed")
    finally:
        lock.release()
    assert sorted(f.index) == [2, 3, 4, 5]                           # seed 0 finished, seed 1 committed
    assert f.loc[2, "state"] == "interrupted" and f.loc[2, "epochs_left"] == 1
    assert f.loc[3, "epochs_left"] == 0
    assert f.loc[4, "state"] == "running" and f.loc[4, "epochs_left"] == 2
    assert f.loc[4, "epoch_core_s"] == 8.0 and f.loc[4, "basis"] == "its own pace"
    assert f.loc[5, "epochs_left"] == 3 and f.loc[5, "epoch_core_s"] == pytest.approx(2.0)
    measure_h = f.loc[3, "core_hours"]
    assert measure_h > 0
    assert f.loc[2, "core_hours"] == pytest.approx(1 * 2.0 / 3600 + measure_h)
    assert f.loc[5, "core_hours"] == pytest.approx(3 * 2.0 / 3600 + measure_h)


def test_a_training_reports_its_pace_in_cpu_time(tmp_path, monkeypatch):
    seen = []
    real = locks.RunLock.heartbeat
    monkeypatch.setattr(locks.RunLock, "heartbeat", lambda self, progress=None: (seen.append(progress),
                                                                                 real(self, progress))[1])
    _, sw = _sweep(tmp_path, grid={"seed": [0]})
    runs.run(sw.configs[0], tmp_path / "runs", device="cpu", progress=False)
    training = [p for p in seen if p and p.get("phase") == "training"]
    assert [p["epoch"] for p in training] == [1, 2, 3]
    assert all(p["pace_cpu_seconds"] > 0 and p["threads"] >= 1 for p in training)


def test_status_forecast_lists_each_unfinished_run_once(tmp_path, capsys):
    base, sw = _sweep(tmp_path, "base", grid={"seed": [0, 1]})
    (tmp_path / "whole.yaml").write_text(yaml.safe_dump({"name": "whole", "include": ["base"], "base": TINY,
                                                         "grid": {"seed": [0, 1, 2]}, "scales": {"tiny": {}}}))
    root = tmp_path / "runs"
    runs.run(sw.configs[0], root, device="cpu", progress=False)
    assert main(["status", str(base), str(tmp_path / "whole.yaml"), "--scale", "tiny", "--root", str(root),
                 "--results-root", str(tmp_path / "results"), "--forecast"]) == 0
    out = capsys.readouterr().out
    keys = {c.seed: c.key for c in sweeps.load_sweep(tmp_path / "whole.yaml", "tiny").configs}
    assert "Core-hours still needed on a CPU, at the pace of 1 finished CPU runs" in out
    assert "base tiny: 1 unfinished runs, about " in out
    assert "whole tiny: 1 unfinished runs (1 more listed above), about " in out
    assert out.count(keys[1]) == 1 and out.count(keys[2]) == 1 and keys[0] not in out.split("Core-hours")[1]
    assert "1 run of LeNet" in out


def test_runs_of_the_same_shape_come_first(tmp_path):
    """Scaling by operations misses an epoch's fixed costs: a run of the same width, data sizes and batch is
    the better guide when there is one."""
    _, done = _sweep(tmp_path, "done", grid={"width_factor": [0.25, 1.0]})
    root = tmp_path / "runs"
    for c in done.configs:
        runs.run(c, root, device="cpu", progress=False)
    narrow, wide = done.configs
    _timed(root / narrow.key, [3.0] * 3, cpu=[3.0] * 3)
    _timed(root / wide.key, [100.0] * 3, cpu=[100.0] * 3)
    _, sw = _sweep(tmp_path, "todo", grid={"width_factor": [0.25, 0.5]}, base={"seed": 7})
    f = campaign.forecast_sweep(sw, runs_root=root, results_root=tmp_path / "results").set_index("width_factor")
    assert f.loc[0.25, "epoch_core_s"] == pytest.approx(3.0) and f.loc[0.25, "basis"] == "1 run of LeNet"
    half = sw.configs[1]
    both = [3.0 * _model_epoch(half) / _model_epoch(narrow), 100.0 * _model_epoch(half) / _model_epoch(wide)]
    assert f.loc[0.5, "epoch_core_s"] == pytest.approx(np.median(both)) and f.loc[0.5, "basis"] == "2 runs of LeNet"


def test_another_precision_is_used_only_when_no_run_of_this_one_finished(tmp_path):
    """A bf16 run is estimated from bf16 runs (of other networks, scaled) before float32 runs of its own network:
    the arithmetic changes the pace by a factor that depends on the CPU. With no bf16 run at all, the float32
    runs of the network, said so in the basis."""
    _, done = _sweep(tmp_path, "done", grid={"seed": [0]})
    root = tmp_path / "runs"
    runs.run(done.configs[0], root, device="cpu", progress=False)
    _timed(root / done.configs[0].key, [3.0] * 3, cpu=[3.0] * 3)
    _, sw = _sweep(tmp_path, "todo", grid={"net": ["LeNet", "AlexNet"]}, base={"seed": 9, "precision": "bf16"})
    f = campaign.forecast_sweep(sw, runs_root=root, results_root=tmp_path / "results").set_index("net")
    assert f.loc["LeNet", "basis"] == "1 run of LeNet in float32, not bf16"
    assert f.loc["LeNet", "epoch_core_s"] == pytest.approx(3.0)
    assert f.loc["AlexNet", "basis"] == "time model (assumed)"
    # once a bf16 run of another network finished, it is the guide (scaled), not the float32 run
    _, bf = _sweep(tmp_path, "bf", grid={"seed": [1]}, base={"net": "AlexNet", "precision": "bf16"})
    runs.run(bf.configs[0], root, device="cpu", progress=False)
    _timed(root / bf.configs[0].key, [50.0] * 3, cpu=[50.0] * 3)
    g = campaign.forecast_sweep(sw, runs_root=root, results_root=tmp_path / "results").set_index("net")
    assert g.loc["LeNet", "basis"] == "1 run of other networks, scaled"
    assert g.loc["LeNet", "epoch_core_s"] == pytest.approx(
        50.0 * _model_epoch(sw.configs[0]) / _model_epoch(bf.configs[0]))
    assert g.loc["AlexNet", "basis"] == "1 run of AlexNet" and g.loc["AlexNet", "epoch_core_s"] == pytest.approx(50.0)


def test_runs_of_this_cpu_come_first_and_bf16_without_native_bf16_is_marked_emulated(tmp_path):
    """CPUs differ (2.4x per float32 step between the project's two EPYC machines): the runs of the CPU the
    estimate is for are the guide when there are any; a bf16 run on a CPU that only emulates bf16 is flagged
    (a local sweep there skips it)."""
    _, done = _sweep(tmp_path, "done", grid={"seed": [0, 1]})
    root = tmp_path / "runs"
    for c in done.configs:
        runs.run(c, root, device="cpu", progress=False)
    _timed(root / done.configs[0].key, [3.0] * 3, cpu=[3.0] * 3, machine="CPU A")
    _timed(root / done.configs[1].key, [7.0] * 3, cpu=[7.0] * 3, machine="CPU B")
    _, sw = _sweep(tmp_path, "todo", grid={"precision": ["float32", "bf16"]}, base={"seed": 5})
    kw = dict(runs_root=root, results_root=tmp_path / "results")
    on_b = campaign.forecast_sweep(sw, cpu="CPU B", native_bf16=False, **kw).set_index("key")
    f32, bf = (on_b.loc[c.key] for c in sw.configs)
    assert f32.epoch_core_s == pytest.approx(7.0) and f32.basis == "1 run of LeNet on this CPU"
    assert not f32.emulated and bf.emulated and "not bf16" in bf.basis
    elsewhere = campaign.forecast_sweep(sw, cpu="CPU C", native_bf16=True, **kw).set_index("key")
    f32, bf = (elsewhere.loc[c.key] for c in sw.configs)
    assert f32.epoch_core_s == pytest.approx(5.0) and f32.basis == "2 runs of LeNet" and not bf.emulated
    # the runs record the CPU they ran on
    assert campaign.paces(tmp_path / "results", root).set_index("run").loc[done.configs[1].key, "cpu"] == "CPU B"


def test_status_forecast_counts_emulated_bf16_runs_apart(tmp_path, capsys, monkeypatch):
    from stabkit import precision

    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    spec, sw = _sweep(tmp_path, "mixed", grid={"precision": ["float32", "bf16"]})
    assert main(["status", str(spec), "--scale", "tiny", "--root", str(tmp_path / "runs"),
                 "--results-root", str(tmp_path / "results"), "--forecast"]) == 0
    out = capsys.readouterr().out
    assert "mixed tiny: 1 unfinished runs, about " in out
    assert "; 1 more in bf16, which this CPU only emulates (11-29x slower; a sweep here skips them)" in out
    bf16_line = next(line for line in out.splitlines() if sw.configs[1].key in line)
    assert bf16_line.endswith("[bf16 emulated here: skipped]") and sw.configs[0].key not in bf16_line


def test_sweep_deadline_starts_only_the_runs_that_fit(tmp_path, capsys):
    """``sweep --deadline S``: a run starts only if its forecast (with the margin) ends within S seconds; the
    others stay pending with the reason, and the runs after them in the grid still get their chance."""
    root = tmp_path / "runs"
    for net, pace in (("LeNet", 1e-3), ("AlexNet", 1e5)):  # AlexNet "takes" a day per epoch on this CPU
        _, ref = _sweep(tmp_path, f"ref{net}", base={"net": net, "seed": 0})
        runs.run(ref.configs[0], root, device="cpu", progress=False)
        _timed(root / ref.configs[0].key, [pace] * 3, cpu=[pace] * 3, machine=precision.cpu_name())
    spec, sw = _sweep(tmp_path, "todo", grid={"net": ["AlexNet", "LeNet"]}, base={"seed": 4})
    args = ["sweep", str(spec), "--scale", "tiny", "--root", str(root), "--results-root", str(tmp_path / "results"),
            "--device", "cpu", "--threads", "1", "--deadline", "3600", "--quiet"]
    assert main(args) == 1
    out = capsys.readouterr()
    alex, lenet = sw.configs
    assert runs.run_state(root / lenet.key) == "done" and runs.run_state(root / alex.key) == "pending"
    assert "not started: it would not end before the deadline (--deadline 3600 s): about 100.00 h on 1 thread(s)" in out.err
    assert "1 run of AlexNet on this CPU" in out.err and "done 1, committed 0, failed 0, running 0, pending 1" in out.out
    with pytest.raises(SystemExit):  # refused by the parser, naming the option
        main([*args[:-3], "--deadline=-5"])
    assert "argument --deadline: expected a number of seconds > 0, got -5" in capsys.readouterr().err
    assert main([*args, "--executor", "submitit-debug"]) == 2  # the forecast is of CPU runs
    assert "--deadline: the forecast it reads is of CPU runs" in capsys.readouterr().err


def test_a_run_whose_network_another_run_trains_needs_only_its_measurement(tmp_path):
    """A control that measures the same network differently (the same training key) waits for that network:
    listed after the run that trains it, or once that run finished, only its measurement counts."""
    _, sw = _sweep(tmp_path, "ctl", grid={"measure": [["output"], ["recalibrated"]]}, base={"net": "VGG11bn"})
    trains, control = sw.configs
    root = tmp_path / "runs"
    kw = dict(runs_root=root, results_root=tmp_path / "results", native_bf16=True)
    f = campaign.forecast_sweep(sw, **kw).set_index("key")
    assert f.loc[trains.key, "epochs_left"] == 3 and f.loc[control.key, "epochs_left"] == 0
    assert f.loc[control.key, "basis"] == f"network trained by {trains.key}"
    assert 0 < f.loc[control.key, "core_hours"] < f.loc[trains.key, "core_hours"]  # the recalibration is timed
    runs.run(trains, root, device="cpu", progress=False)
    g = campaign.forecast_sweep(sw, **kw)
    assert list(g.key) == [control.key] and g.basis[0] == f"network trained by {trains.key}" and g.epochs_left[0] == 0
    # several sweeps in a row: a network that a sweep listed before trains counts as planned
    _, other = _sweep(tmp_path, "other", grid={"measure": [["layers"]]}, base={"net": "AlexNet"})
    planned = {}
    campaign.forecast_sweep(other, **kw, planned=planned)
    _, later = _sweep(tmp_path, "later", grid={"measure": [["recalibrated"]]}, base={"net": "AlexNet"})
    h = campaign.forecast_sweep(later, **kw, planned=planned)
    assert h.basis[0] == f"network trained by {other.configs[0].key}" and h.epochs_left[0] == 0
