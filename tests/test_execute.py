"""stabkit.runs.execute: one run (tables, not redone, deterministic on the CPU), the probe set shared by
every net, and remeasure going through the same checks as a run (checkpoint key, result type, no_grad)."""
import json
import re
import shutil

import pandas as pd
import pytest
import torch

from stabkit import checkpoints as C, runs, sweeps, train as T

TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25,
            batch_size=32)


def tiny(**kw) -> runs.RunConfig:
    return runs.RunConfig(**{**TINY, **kw})


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
    assert C.load_checkpoint(path / "best.pt", config_hash=cfg.key)[1]["net"] == "LeNet"
    mtimes = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    assert runs.run(cfg, tmp_path, device="cpu", progress=False) == path
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == mtimes
    # remeasure: the same numbers as the run, written elsewhere only
    again = runs.remeasure(path, measure=["output"], device="cpu", out_dir=tmp_path / "re")
    pd.testing.assert_frame_equal(again["output"], out, check_like=True)
    assert (tmp_path / "re" / "output.parquet").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == mtimes


def test_same_config_gives_identical_results_on_cpu(tmp_path):
    cfg = tiny(epochs=2, seed=3)
    a = runs.run(cfg, tmp_path / "a", device="cpu", progress=False)
    b = runs.run(cfg, tmp_path / "b", device="cpu", progress=False)
    for t in ("metrics", "output", "layers", "spectra"):
        da, db = pd.read_parquet(a / f"{t}.parquet"), pd.read_parquet(b / f"{t}.parquet")
        da, db = da.drop(columns=["seconds", "cpu_seconds"], errors="ignore"), db.drop(columns=["seconds", "cpu_seconds"], errors="ignore")
        pd.testing.assert_frame_equal(da, db)


def test_same_probe_set_for_every_net():
    d = runs.tasks.task_data(tiny())
    p1 = runs.tasks.probe_set(tiny(net="LeNet"), d)
    p2 = runs.tasks.probe_set(tiny(net="VGG11bn", seed=4), d)
    assert len(p1) == 3 and all(torch.equal(u, v) for u, v in zip(p1, p2))


def test_remeasure_checks_the_checkpoint_like_a_run(tmp_path):
    cfg = tiny(measure=("output",), states=("trained",))
    path = runs.run(cfg, tmp_path, device="cpu", progress=False)
    raw = (path / "best.pt").read_bytes()
    (path / "best.pt").write_bytes(raw[:100])
    with pytest.raises(C.CheckpointError, match="corrupted"):
        runs.remeasure(path, device="cpu")
    C.save_checkpoint(path / "best.pt", torch.nn.Linear(2, 2).state_dict(), net="VGG11", config_hash="x")
    with pytest.raises(C.CheckpointError, match="holds net"):
        runs.remeasure(path, device="cpu")
    # the right net but the checkpoint of another run (e.g. a copied folder)
    other = runs.run(tiny(seed=5, measure=(), states=()), tmp_path, device="cpu", progress=False)
    (path / "best.pt").write_bytes((other / "best.pt").read_bytes())
    with pytest.raises(C.CheckpointError, match="belongs to run"):
        runs.remeasure(path, device="cpu")


def test_one_measurement_loop_for_run_and_remeasure(tmp_path):
    seen = []

    @runs.register_measurement("test_probe_grad", overwrite=True)
    def probe_grad(model, cfg, ctx):
        seen.append((ctx.state, torch.is_grad_enabled(), model.training))
        return {"probe_grad": pd.DataFrame({"v": [1]})}

    @runs.register_measurement("test_not_a_dict", overwrite=True)
    def not_a_dict(model, cfg, ctx):
        return pd.DataFrame({"v": [1]})

    path = runs.run(tiny(measure=("output", "test_probe_grad")), tmp_path, device="cpu", progress=False)
    tabs = runs.remeasure(path, measure=["test_probe_grad"], device="cpu")
    assert list(tabs["probe_grad"].state) == ["init", "trained"]
    assert seen == [("init", True, False), ("trained", True, False)] * 2  # eval mode, grad as the caller's
    for fn in (lambda: runs.remeasure(path, measure=["test_not_a_dict"], device="cpu"),
               lambda: runs.run(tiny(seed=1, measure=("test_not_a_dict",)), tmp_path, device="cpu", progress=False)):
        with pytest.raises(TypeError, match="must return dict"):
            fn()
    with pytest.raises(ValueError, match="unknown measurement"):
        runs.remeasure(path, measure=["no_such_measurement"], device="cpu")


def test_builtin_measurements_run_without_grad(tmp_path, monkeypatch):
    from stabkit.runs import measurements
    grad = []
    real = measurements.MEASUREMENTS["spectra"]

    def spy(model, cfg, ctx):
        grad.append(torch.is_grad_enabled())
        return real(model, cfg, ctx)

    monkeypatch.setitem(measurements.MEASUREMENTS, "spectra", spy)
    path = runs.run(tiny(measure=("spectra",), states=("trained",)), tmp_path, device="cpu", progress=False)
    runs.remeasure(path, device="cpu")
    assert grad == [False, False]


def test_measurements_declare_their_tables_gradients_and_probes(tmp_path):
    """The facts live where a measurement is registered; the store's table lists and the loop read them."""
    from stabkit.runs import folder, measurements as M
    facts = M.MEASUREMENT_FACTS
    assert {n for n, f in facts.items() if not f.grad} >= {"output", "layers", "spectra", "recalibrated"}
    assert facts["accuracy"].grad and facts["invariance"].optional_tables == ("invariance_act",)
    assert {n for n, f in facts.items() if f.probes} == {"output", "layers", "recalibrated"}
    assert folder.MEASUREMENT_TABLES["resolution"] == ("resolution",)
    assert set(folder.KNOWN_TABLES) == {"metrics", "output", "layers", "spectra", "summary", "accuracy", "invariance",
                                        "invariance_act", "resolution", "recalibrated"}

    @runs.register_measurement("test_declared", tables=["declared"], grad=False, overwrite=True)
    def declared(model, cfg, ctx):
        return {"declared": pd.DataFrame({"grad": [torch.is_grad_enabled()]})}

    assert M.measurement_tables("test_declared") == ("declared",) and "declared" in M.known_tables()
    assert folder.expected_tables({"states": ["trained"], "measure": ["test_declared", "output"]}) == [
        "metrics", "summary", "declared", "output"]
    path = runs.run(tiny(measure=("test_declared",), states=("trained",)), tmp_path, device="cpu", progress=False)
    assert not pd.read_parquet(path / "declared.parquet").grad.any()  # grad=False: under no_grad
    for bad, match in (({"tables": "declared"}, "tables must be a sequence"), ({"grad": "no"}, "grad must be")):
        with pytest.raises(ValueError, match=match):
            runs.register_measurement("test_bad", overwrite=True, **bad)


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
    assert {"rotate"} <= set(runs.AUGMENTATIONS)
    assert {"output", "layers", "spectra", "accuracy", "invariance", "resolution"} <= set(runs.MEASUREMENTS)


def test_resolve_device():
    assert runs.resolve_device("cpu") == "cpu" and runs.resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device"):
        runs.resolve_device("gpu")


def test_remeasure_in_place_refreshes_the_runs_own_tables(tmp_path, capsys):
    """A finished run's tables recomputed by the current code (e.g. after a change of measurement
    conventions): same numbers for an unchanged code, metrics kept, the refresh recorded."""
    from stabkit.__main__ import main
    cfg = tiny(shuffles=(0, 1))
    path = runs.run(cfg, tmp_path, device="cpu", progress=False)
    before = {t: pd.read_parquet(path / f"{t}.parquet") for t in ("output", "layers", "spectra", "metrics")}
    stale = before["layers"].assign(depth=before["layers"].depth + 1).iloc[:-1]
    stale.to_parquet(path / "layers.parquet")  # as an older code's table would differ
    with pytest.raises(ValueError, match="own configuration"):
        runs.remeasure(path, P=4, in_place=True)
    runs.remeasure(path, device="cpu", in_place=True)
    for t, df in before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path / f"{t}.parquet"), df)
    summ = pd.read_parquet(path / "summary.parquet").iloc[0]
    assert summ.remeasured_at and "remeasured_commit" in summ and summ.best_test_err == summ.best_test_err
    assert runs.run_state(path) == "done" and runs.verify_run(path) == [] and not (path / "lock").exists()
    assert main(["remeasure", str(path), "--in-place", "--device", "cpu"]) == 0
    assert main(["remeasure", str(path), "--in-place", "--P", "4"]) == 2
    assert "own configuration" in capsys.readouterr().err


def test_training_key_ignores_only_measurement_fields():
    import dataclasses
    base = tiny()
    fields = {f.name for f in dataclasses.fields(runs.RunConfig)}
    assert set(runs.MEASUREMENT_FIELDS) <= fields
    measured = tiny(measure=["output"], states=["trained"], shuffles=[0, 1], P=4, probe_seed=2, delta=0.5,
                    cut=2, layers="output", measure_dtype="float32", options={"layers": {"relu_conventions": ["inplace"]}})
    assert measured.key != base.key and measured.training_key == base.training_key
    for change in (dict(seed=1), dict(data_seed=5), dict(lr=0.01), dict(noise_std=1.0), dict(epochs=2),
                   dict(stop_at_zero_loss=False), dict(width_factor=0.5), dict(test_size=32), dict(ptr=32)):
        assert tiny(**change).training_key != base.training_key, change
    # the key of a config.json read back is the config's own
    assert runs.training_key(json_roundtrip(base)) == base.training_key


def json_roundtrip(cfg):
    import json
    return json.loads(json.dumps({"key": cfg.key, "format": runs.FORMAT_VERSION, **cfg.to_dict()}))


def test_a_network_is_trained_once_for_all_runs_that_measure_it(tmp_path, monkeypatch):
    first = runs.run(tiny(epochs=2, measure=["output"]), tmp_path, device="cpu", progress=False)
    calls = []
    real = T.train
    monkeypatch.setattr(T, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = tiny(epochs=2, measure=["output", "layers"], states=["trained"], P=6)
    path = runs.run(cfg, tmp_path, device="cpu", progress=False)
    assert calls == []  # not trained again
    summ = pd.read_parquet(path / "summary.parquet").iloc[0]
    donor = pd.read_parquet(first / "summary.parquet").iloc[0]
    assert summ.trained_by == first.name and donor.trained_by == ""
    assert summ.best_test_err == donor.best_test_err and summ.epochs_run == donor.epochs_run
    pd.testing.assert_frame_equal(pd.read_parquet(path / "metrics.parquet"), pd.read_parquet(first / "metrics.parquet"))
    sd, meta = C.load_checkpoint(path / "best.pt", config_hash=cfg.key, net="LeNet")
    assert meta["trained_by"] == first.name
    ref, _ = C.load_checkpoint(first / "best.pt")
    assert all(torch.equal(sd[k], ref[k]) for k in ref)
    # the measurement equals a run that trains its own copy of the network
    alone = runs.run(cfg, tmp_path / "alone", device="cpu", progress=False)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(pd.read_parquet(path / "output.parquet"), pd.read_parquet(alone / "output.parquet"))
    # another training (another seed) is never a donor, nor is an unfinished run; the switch turns it off
    other = runs.run(tiny(epochs=2, seed=1, measure=["output"]), tmp_path, device="cpu", progress=False)
    assert pd.read_parquet(other / "summary.parquet").iloc[0].trained_by == ""
    assert len(calls) == 2
    (first / "done").unlink()
    (path / "done").unlink()
    assert runs.find_trained(tiny(epochs=2, P=5), tmp_path) is None
    runs.run(tiny(epochs=2, P=5, measure=["output"]), tmp_path, device="cpu", progress=False, reuse_training=False)
    assert len(calls) == 3


class _Killed(BaseException):
    """A kill in the middle of training (not an Exception: the run is left interrupted, not failed)."""


def test_an_interrupted_run_resumes_its_training(tmp_path, monkeypatch, capsys):
    cfg = tiny(epochs=4, stop_at_zero_loss=False, shuffles=(0, 1))
    ref = runs.run(cfg, tmp_path / "ref", device="cpu", progress=False)
    real = T.train

    def killed_during_epoch_3(*a, **k):
        beat = k["on_epoch"]

        def on_epoch(row):
            if row["epoch"] == 3:
                raise _Killed
            beat(row)
        return real(*a, **{**k, "on_epoch": on_epoch, "resume_every_s": 0})

    monkeypatch.setattr(T, "train", killed_during_epoch_3)
    with pytest.raises(_Killed):
        runs.run(cfg, tmp_path / "cut", device="cpu", progress=False)
    path = tmp_path / "cut" / cfg.key
    assert runs.run_state(path) == "interrupted" and (path / C.RESUME_FILE).is_file()
    from stabkit.__main__ import main
    spec = tmp_path / "one.yaml"  # the dry run says where the training will resume
    spec.write_text("name: one\nscales:\n  tiny:\n    base: " + json.dumps(cfg.to_dict()) + "\n")
    assert main(["sweep", str(spec), "--scale", "tiny", "--root", str(tmp_path / "cut"), "--results-root",
                 str(tmp_path / "res"), "--dry-run"]) == 0
    assert f"{cfg.key} interrupted (training resumes after epoch 2)" in capsys.readouterr().out
    monkeypatch.setattr(T, "train", real)
    assert runs.run(cfg, tmp_path / "cut", device="cpu", progress=False) == path
    summ = pd.read_parquet(path / "summary.parquet").iloc[0]
    assert summ.resumed_epoch == 2 and summ.epochs_run == 4 and not (path / C.RESUME_FILE).exists()
    assert pd.read_parquet(ref / "summary.parquet").iloc[0].resumed_epoch == 0
    for t in ("metrics", "output", "layers", "spectra"):  # as if never interrupted
        a, b = pd.read_parquet(ref / f"{t}.parquet"), pd.read_parquet(path / f"{t}.parquet")
        pd.testing.assert_frame_equal(a.drop(columns=["seconds", "cpu_seconds"], errors="ignore"),
                                      b.drop(columns=["seconds", "cpu_seconds"], errors="ignore"))
    # force redoes from scratch; a resume file of another run is not continued
    monkeypatch.setattr(T, "train", killed_during_epoch_3)
    with pytest.raises(_Killed):
        runs.run(cfg, tmp_path / "cut", device="cpu", progress=False, force=True)
    monkeypatch.setattr(T, "train", real)
    other = tmp_path / "cut" / tiny(epochs=4, stop_at_zero_loss=False, seed=9).key
    other.mkdir()
    shutil.copy(path / C.RESUME_FILE, other / C.RESUME_FILE)  # a state that belongs to another run
    runs.run(cfg, tmp_path / "cut", device="cpu", progress=False, force=True)
    assert pd.read_parquet(path / "summary.parquet").iloc[0].resumed_epoch == 0
    runs.run(tiny(epochs=4, stop_at_zero_loss=False, seed=9), tmp_path / "cut", device="cpu", progress=False)
    assert pd.read_parquet(other / "summary.parquet").iloc[0].resumed_epoch == 0


def test_a_run_killed_while_it_measures_keeps_its_training(tmp_path, monkeypatch, capsys):
    from stabkit.runs import execute
    cfg = tiny(epochs=3, stop_at_zero_loss=False, shuffles=(0, 1))
    ref = runs.run(cfg, tmp_path / "ref", device="cpu", progress=False)
    assert runs.finished_training(ref, cfg.key) is not None  # every trained run leaves the record
    real_measure, real_train = execute.measure_states, T.train

    def killed(*a, **k):
        raise _Killed

    monkeypatch.setattr(execute, "measure_states", killed)
    with pytest.raises(_Killed):
        runs.run(cfg, tmp_path / "cut", device="cpu", progress=False)
    path = tmp_path / "cut" / cfg.key
    assert runs.run_state(path) == "interrupted" and (path / runs.TRAINED_FILE).is_file()
    from stabkit.__main__ import main
    spec = tmp_path / "one.yaml"
    spec.write_text("name: one\nscales:\n  tiny:\n    base: " + json.dumps(cfg.to_dict()) + "\n")
    assert main(["sweep", str(spec), "--scale", "tiny", "--root", str(tmp_path / "cut"), "--results-root",
                 str(tmp_path / "res"), "--dry-run"]) == 0
    assert f"{cfg.key} interrupted (trained: measured again)" in capsys.readouterr().out
    monkeypatch.setattr(execute, "measure_states", real_measure)
    monkeypatch.setattr(T, "train", killed)  # the network is not trained again
    assert runs.run(cfg, tmp_path / "cut", device="cpu", progress=False) == path
    a, b = pd.read_parquet(ref / "summary.parquet").iloc[0], pd.read_parquet(path / "summary.parquet").iloc[0]
    for c in ("best_test_err", "best_epoch", "epochs_run", "stopped_early", "resumed_epoch", "trained_by"):
        assert a[c] == b[c], c
    assert isinstance(b.best_test_err, float) and b.train_seconds > 0
    for t in ("metrics", "output", "layers", "spectra"):  # as if never interrupted
        pd.testing.assert_frame_equal(pd.read_parquet(ref / f"{t}.parquet").drop(columns=["seconds", "cpu_seconds"], errors="ignore"),
                                      pd.read_parquet(path / f"{t}.parquet").drop(columns=["seconds", "cpu_seconds"], errors="ignore"))
    # a record without its checkpoints, or of another run, is not trusted: the network is trained again
    for spoil in (lambda p: (p / "best.pt").unlink(),
                  lambda p: (p / runs.TRAINED_FILE).write_text('{"key": "other", "training": {}}')):
        (path / "done").unlink()
        spoil(path)
        with pytest.raises(_Killed):
            runs.run(cfg, tmp_path / "cut", device="cpu", progress=False)
        monkeypatch.setattr(T, "train", real_train)
        runs.run(cfg, tmp_path / "cut", device="cpu", progress=False)
        monkeypatch.setattr(T, "train", killed)
    with pytest.raises(_Killed):  # force trains again
        runs.run(cfg, tmp_path / "cut", device="cpu", progress=False, force=True)


def test_a_running_run_reports_its_progress(tmp_path, monkeypatch, capsys):
    from stabkit.__main__ import main
    from stabkit.runs import execute
    cfg = tiny(epochs=3, stop_at_zero_loss=False, measure=["output"])
    path, spec = tmp_path / "r" / cfg.key, tmp_path / "one.yaml"
    spec.write_text("name: one\nscales:\n  tiny:\n    base: " + json.dumps(cfg.to_dict()) + "\n")
    seen, cli = [], []
    real_train, real_output = T.train, execute.MEASUREMENTS["output"]

    def spy_train(*a, **k):
        beat = k["on_epoch"]

        def on_epoch(row):
            beat(row)
            seen.append(runs.progress_line(path))
            if row["epoch"] == 2:  # what a user sees from another shell
                main(["status", str(spec), "--scale", "tiny", "--root", str(tmp_path / "r")])
                main(["sweep", str(spec), "--scale", "tiny", "--root", str(tmp_path / "r"), "--results-root",
                      str(tmp_path / "res"), "--dry-run"])
                cli.append(capsys.readouterr().out)
        return real_train(*a, **{**k, "on_epoch": on_epoch})

    def spy_output(model, c, ctx):
        seen.append(runs.progress_line(path))
        return real_output(model, c, ctx)

    monkeypatch.setattr(T, "train", spy_train)
    monkeypatch.setitem(execute.MEASUREMENTS, "output", spy_output)
    runs.run(cfg, tmp_path / "r", device="cpu", progress=False)
    assert len(seen) == 5, seen
    for i, line in enumerate(seen[:3], start=1):
        left = r", about \d+ s left" if i < 3 else ""  # the time left at the recent epochs' pace
        assert re.fullmatch(rf"epoch {i} of 3: \d+\.\d s per epoch{left}, train loss [0-9.e+-]+, test error "
                            r"\d+\.\d %; heartbeat \d+ s ago", line), line
    assert seen[3].startswith("measuring at initialisation: output; heartbeat")
    assert seen[4].startswith("measuring the trained network: output; heartbeat")
    assert f"  running {cfg.key} LeNet seed 0: epoch 2 of 3: " in cli[0]
    assert f"{cfg.key} running (epoch 2 of 3: " in cli[0]
    assert runs.progress_line(path) == ""  # finished: no lock, nothing reported


# ------------------------------------------------------------------ issue 28.5: --verify loads checkpoints
def test_verify_loads_checkpoints_and_a_damaged_one_lends_no_network(tmp_path):
    """Issue 28.5: a truncated ``best.pt`` passed ``sweep --verify`` (and collect and export), and every run
    that reused that network failed, even with ``--retry-failed``."""
    spec = {"name": "ck", "base": {**TINY, "measure": ["output"], "shuffles": [0]}, "scales": {"tiny": {}},
            "grid": {"P": [8, 5]}}  # two runs of one network: the second reuses the first's training
    first, second = (tmp_path / k for k in sweeps.load_sweep(spec, "tiny").keys)
    runs.run(sweeps.load_sweep(spec, "tiny").configs[0], tmp_path, device="cpu", progress=False)
    blob = (first / "best.pt").read_bytes()
    (first / "best.pt").write_bytes(blob[: len(blob) // 2])  # truncated (a full disk, a killed copy)
    assert runs.verify_run(first) == []  # the tables are sound: collect and import (no checkpoints) accept it
    problems = runs.verify_run(first, checkpoints=True)
    assert len(problems) == 1 and problems[0].startswith(f"{first / 'best.pt'}:"), problems
    assert runs.find_trained(sweeps.load_sweep(spec, "tiny").configs[1], tmp_path) is None  # lends no network
    with pytest.warns(UserWarning, match=rf"run {first.name} .* damaged, redoing it: {re.escape(str(first))}/best.pt"):
        rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, verify=True)
    assert list(rep.status) == ["done", "done"], rep.error.tolist()
    assert runs.verify_run(first, checkpoints=True) == [] and runs.verify_run(second, checkpoints=True) == []


def test_remeasure_refuses_more_probes_than_the_test_set(tmp_path):
    """Issue 28.8: ``remeasure --P 1000`` on a 64-image test set measured 64 without a word."""
    path = runs.run(tiny(measure=(), states=()), tmp_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"P=1000 is larger than the test set \(64 samples"):
        runs.remeasure(path, measure=["output"], states=["trained"], P=1000, device="cpu")
    with pytest.raises(ValueError, match=r"options.layers.relu_conventions"):
        runs.remeasure(path, measure=["layers"], states=["trained"], device="cpu",
                       options={"layers": {"relu_conventions": ["bogus"]}})


# ------------------------------------------------------------------------- issue 28.9: the smaller items
def test_table_names_stay_inside_the_run_folder(tmp_path):
    """Issue 28.9: a plugin table named ``../..`` was written outside the run folder; ``collect --table
    ../<key>/output`` read another run's table."""
    @runs.register_measurement("test_escape", overwrite=True)
    def escape(model, cfg, ctx):
        return {"../../escaped": pd.DataFrame({"v": [1]})}

    cfg = tiny(measure=["test_escape"], states=["trained"])
    with pytest.raises(ValueError, match=r"a table name of measurement 'test_escape' must be a plain table name"):
        runs.run(cfg, tmp_path / "r", device="cpu", progress=False)
    assert not list(tmp_path.rglob("escaped*"))
    with pytest.raises(ValueError, match="table must be a plain table name"):
        sweeps.collect(tmp_path / "r", f"../{cfg.key}/metrics")


def test_a_missing_plugin_module_is_named(monkeypatch):
    from stabkit.runs import measurements as M
    monkeypatch.setenv("STABKIT_PLUGINS", "no_such_stabkit_plugin")
    monkeypatch.setattr(M, "_plugins_loaded", False)
    with pytest.raises(ValueError, match=r"\$STABKIT_PLUGINS names module 'no_such_stabkit_plugin'"):
        runs.validate(tiny())  # before any training
    with pytest.raises(ValueError, match="no_such_stabkit_plugin"):  # not silently marked loaded
        M.load_plugins()


def test_a_redone_donor_trains_and_trained_by_names_the_run_that_trained(tmp_path):
    """Issue 28.9: after ``--redo`` of a donor, ``trained_by`` pointed in a circle (A from B, B from A) and
    no run had trained the network."""
    a = runs.run(tiny(measure=["output"], shuffles=[0]), tmp_path, device="cpu", progress=False)
    b = runs.run(tiny(measure=["output"], shuffles=[0], P=5), tmp_path, device="cpu", progress=False)
    by = lambda p: pd.read_parquet(p / "summary.parquet").trained_by.iloc[0]  # noqa: E731
    assert by(a) == "" and by(b) == a.name
    c = runs.run(tiny(measure=["output"], shuffles=[0], P=6), tmp_path, device="cpu", progress=False)
    assert by(c) == a.name  # the run that trained, whichever copy lent it
    (a / "done").unlink()
    (c / "done").unlink()
    runs.run(tiny(measure=["output"], shuffles=[0]), tmp_path, device="cpu", progress=False, force=True)
    assert by(a) == ""  # redone: trained (b's network came from a's earlier training: no circle)


def test_runs_that_share_a_network_and_start_together_train_it_once(tmp_path, monkeypatch):
    """Issue 28.9: two runs of one network started together both trained it. Now the second waits for the
    first's training (a lock per network) and reuses it."""
    import threading
    import time
    real, calls = T.train, []

    def slow_train(*a, **k):
        calls.append(threading.current_thread().name)
        time.sleep(2.0)  # both runs are under way before the first training ends
        return real(*a, **k)
    monkeypatch.setattr(T, "train", slow_train)
    cfgs = [tiny(measure=["output"], shuffles=[0], P=p) for p in (8, 5)]
    errors = []

    def go(c):
        try:
            runs.run(c, tmp_path, device="cpu", progress=False)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=go, args=(c,), name=f"run-{c.P}") for c in cfgs]
    for t in threads:
        t.start()
        time.sleep(0.3)
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert len(calls) == 1, calls
    by = sorted(pd.read_parquet(tmp_path / c.key / "summary.parquet").trained_by.iloc[0] for c in cfgs)
    assert by[0] == "" and by[1] in {c.key for c in cfgs}
    assert not list((tmp_path / ".training").rglob("lock"))  # released


def test_progress_line_says_how_long_is_left(tmp_path):
    import json

    lock = tmp_path / runs.folder.LOCK_NAME
    record = {"phase": "training", "epoch": 5, "epochs": 60, "epoch_seconds": 240.0, "train_loss": 1.0, "test_err": 0.3}
    lock.write_text(json.dumps(record))
    assert "240.0 s per epoch, about 3.7 h left, train loss" in runs.progress_line(tmp_path)
    lock.write_text(json.dumps({**record, "epoch": 58}))
    assert "about 8 min left" in runs.progress_line(tmp_path)
    lock.write_text(json.dumps({**record, "epoch": 60}))
    assert "left" not in runs.progress_line(tmp_path)
    # an epoch stretched by a pause: the time left follows the median pace of the last five, the last is named
    lock.write_text(json.dumps({**record, "epoch_seconds": 1430.0, "pace_seconds": 300.0}))
    line = runs.progress_line(tmp_path)
    assert "300.0 s per epoch (the last epoch 1430.0 s), about 4.6 h left" in line, line
    lock.write_text(json.dumps({**record, "epoch_seconds": 310.0, "pace_seconds": 300.0}))
    assert "300.0 s per epoch, about" in runs.progress_line(tmp_path)
    assert "paused or stuck" not in runs.progress_line(tmp_path)
    # a run that stops at zero training loss: its epochs are a cap
    (tmp_path / "config.json").write_text(json.dumps({"key": "k", "net": "LeNet", "stop_at_zero_loss": True}))
    assert "300.0 s per epoch, at most 4.6 h left (it stops at zero training loss), train loss" in \
        runs.progress_line(tmp_path)


def test_progress_line_flags_a_run_silent_for_longer_than_its_pace(tmp_path):
    import json
    import os
    import time

    lock = tmp_path / runs.folder.LOCK_NAME
    lock.write_text(json.dumps({"phase": "training", "epoch": 3, "epochs": 20, "epoch_seconds": 200.0,
                                "pace_seconds": 200.0, "train_loss": 1.0, "test_err": 0.5}))
    ago = time.time() - 727
    os.utime(lock, (ago, ago))  # a sweep paused (SIGSTOP) 727 s ago, in epochs of 200 s
    line = runs.progress_line(tmp_path)
    assert line.endswith("heartbeat 727 s ago (no report for 3.6x its pace: paused or stuck?)"), line
    ago = time.time() - 600
    os.utime(lock, (ago, ago))  # within three times the pace and a minute: an epoch slowed by other work
    assert runs.progress_line(tmp_path).endswith("heartbeat 600 s ago")
