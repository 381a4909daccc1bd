"""stabkit.sweeps.executors, local_pool, slurm and worker: sweeps record failures without stopping, submitit
executors, a SIGKILLed sweep resumes (also with the local process pool)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from stabkit import runs, sweeps

REPO = Path(__file__).resolve().parents[1]
TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25,
            batch_size=32)


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.update(extra)
    return env


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
    rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False)
    assert list(rep.status) == ["failed", "done"] and "boom in measurement" in rep.error[0]
    bad = Path(rep.run_dir[0])
    assert "RuntimeError: boom in measurement" in (bad / "error.txt").read_text()
    assert json.loads((bad / "status.json").read_text())["status"] == "failed" and not (bad / "done").exists()
    assert sweeps.status(tmp_path, spec, "tiny") == dict(total=2, done=1, pending=0, failed=1, running=0)
    summ = sweeps.collect(tmp_path, "summary", spec, "tiny")
    assert sorted(summ.status) == ["done", "failed"]
    ext = sweeps.collect(tmp_path, "extra", spec, "tiny")  # a registered measurement's own table
    assert list(ext.value) == [1.0, 2.0, 1.0, 2.0] and set(ext.state) == {"init", "trained"}
    # failed runs are skipped unless retry_failed
    assert list(sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False).status) == ["failed", "done"]
    runs.MEASUREMENTS["test_boom"] = lambda m, c, x: {}
    assert list(sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False,
                           retry_failed=True).status) == ["done", "done"]


# ------------------------------------------------------------------------------------------ executors
def test_submitit_debug_and_local_executors(tmp_path):
    pytest.importorskip("submitit")
    spec = {"name": "sub", "base": {**TINY, "measure": ["output"]}, "grid": {"seed": [0, 1]},
            "scales": {"tiny": {}}}
    rep = sweeps.sweep(spec, "tiny", tmp_path / "debug", executor="submitit-debug", device="cpu", progress=False)
    assert list(rep.status) == ["done", "done"]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    one = {**spec, "grid": {"seed": [0]}}  # one job: a subprocess importing torch is slow on a busy CPU
    rep = sweeps.sweep(one, "tiny", tmp_path / "local", executor="submitit-local", device="cpu",
                     progress=False, submitit_params={"timeout_min": 10})
    assert list(rep.status) == ["done"]
    assert len(sweeps.collect(tmp_path / "local", "output", one, "tiny")) == 2


_PLUGIN = '''
import os, time
import pandas as pd
from stabkit.runs import register_measurement

@register_measurement("test_slow")
def slow(model, cfg, ctx):
    import torch
    if os.environ.get("TEST_NO_SLEEP") != "1":
        time.sleep(float(cfg.options.get("test_slow", {}).get("seconds", 0)))
    return {"slow": pd.DataFrame({"slept": [1], "threads": [torch.get_num_threads()]})}
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
    first, second, third = (root / k for k in sweeps.load_sweep(spec, "tiny").keys)
    # the sequential run (in the sweep process) and the pool workers' runs must use one thread count
    # (issue 15.6): before, the first got OMP_NUM_THREADS and the workers cpu_count // jobs
    env = _env(STABKIT_PLUGINS="slowplug", PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
               OMP_NUM_THREADS="2", STABKIT_THREADS="1")
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
    out = sweeps.collect(root, "output", tmp_path / "killme.yaml", "tiny")
    assert sorted(out.run) == sorted([first.name, second.name, third.name])  # each run once
    slow = sweeps.collect(root, "slow")
    assert len(slow) == 3 and list(slow.threads) == [1, 1, 1]
    # no temporary file and no run lock left; the flock files of <root>/.training/<training key>/ stay by
    # design (unlinking a flock file another process may be waiting on would let two processes hold it)
    assert not list(root.rglob(".*.tmp-*")) and not [p for p in root.rglob("lock") if ".training" not in p.parts]


# ------------------------------------------------------------------------ issue 15: executors refuse clearly
def test_executors_that_cannot_work_here_are_refused(tmp_path, monkeypatch):
    spec = {"name": "ex", "base": {**TINY, "measure": ["output"]}, "scales": {"tiny": {}}}
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch: SLURM is absent
    import importlib.util
    missing = "SLURM.*sbatch" if importlib.util.find_spec("submitit") else "the submitit package"  # checked first
    with pytest.raises(ValueError, match=f"executor='slurm' needs {missing}"):
        sweeps.sweep(spec, "tiny", tmp_path / "r", executor="slurm", device="cpu", progress=False)
    with pytest.raises(ValueError, match="executor must be one of"):
        sweeps.sweep(spec, "tiny", tmp_path / "r", executor="nosuch", device="cpu", progress=False)
    for kw in (dict(slots_per_gpu=0), dict(jobs=0), dict(jobs=1.5), dict(threads=0)):
        with pytest.raises(ValueError, match=next(iter(kw))):
            sweeps.sweep(spec, "tiny", tmp_path / "r", device="cpu", progress=False, **kw)
    assert not (tmp_path / "r").exists()  # refused before anything was made


def test_every_run_uses_the_same_thread_count(monkeypatch, tmp_path):
    """Issue 15.6: the thread count of a run does not depend on --jobs (sequential, pool, submitit)."""
    import torch
    monkeypatch.setenv("STABKIT_THREADS", "1")
    assert sweeps.run_threads() == 1 and sweeps.run_threads(3) == 3
    monkeypatch.delenv("STABKIT_THREADS")
    assert sweeps.run_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("STABKIT_THREADS", "x")
    with pytest.raises(ValueError, match="STABKIT_THREADS"):
        sweeps.run_threads()
    before = torch.get_num_threads()

    @runs.register_measurement("test_threads", overwrite=True)
    def threads(model, cfg, ctx):
        return {"threads": pd.DataFrame({"threads": [torch.get_num_threads()]})}

    from stabkit.sweeps.worker import run_guarded
    torch.set_num_threads(2)
    cfg = runs.RunConfig(**TINY, measure=["test_threads"], states=["trained"])
    assert run_guarded(cfg.to_dict(), str(tmp_path), "cpu", False, False, 1)[1] == "done"
    assert torch.get_num_threads() == 2  # restored: a notebook's own setting is left alone
    assert list(pd.read_parquet(tmp_path / cfg.key / "threads.parquet").threads) == [1]
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_a_jobs_sweep_leaves_no_process_behind(tmp_path, sig):
    """Issue 15.4: the workers of a --jobs 2 sweep die with it (before, they finished their run and then
    blocked forever, holding their memory)."""
    psutil = pytest.importorskip("psutil")
    (tmp_path / "slowplug.py").write_text(_PLUGIN)
    spec = {"name": "orphans", "base": {**TINY, "measure": ["test_slow"], "states": ["trained"],
                                        "options": {"test_slow": {"seconds": 300}}},
            "grid": {"seed": [0, 1]}, "scales": {"tiny": {}}}
    import yaml
    (tmp_path / "orphans.yaml").write_text(yaml.safe_dump(spec))
    root = tmp_path / "runs"
    dirs = [root / k for k in sweeps.load_sweep(spec, "tiny").keys]
    env = _env(STABKIT_PLUGINS="slowplug", PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    proc = subprocess.Popen([sys.executable, "-m", "stabkit", "sweep", str(tmp_path / "orphans.yaml"), "--scale",
                             "tiny", "--root", str(root), "--device", "cpu", "--quiet", "--jobs", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    family = []
    try:
        deadline = time.time() + 240
        while not all((d / "metrics.parquet").exists() for d in dirs):  # both workers now in the measurement
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "the workers did not start in time"
            time.sleep(0.2)
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len([p for p in family if "spawn" in " ".join(p.cmdline())]) >= 2
        proc.send_signal(sig)
        proc.wait(30)

        def alive():
            out = []
            for p in family:
                try:
                    if p.status() != psutil.STATUS_ZOMBIE:
                        out.append(p)
                except psutil.NoSuchProcess:
                    pass
            return out
        deadline = time.time() + 20
        while alive() and time.time() < deadline:
            time.sleep(0.2)
        left = alive()
        assert not left, f"left behind after {signal.Signals(sig).name}: {[p.cmdline()[-2:] for p in left]}"
    finally:
        for p in [*family, psutil.Process(proc.pid) if proc.poll() is None else None]:
            if p is not None:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
    assert all(runs.run_state(d) == "interrupted" for d in dirs)  # locks freed: resumable


# --------------------------------------------------------------------------- issue 28.1: Ctrl-C stops --jobs N
STOP_BOUND_S = 30  # seconds from Ctrl-C to the sweep's exit (1.5 s measured); its runs would take 300 s each


def _sigint_default() -> None:
    """In the child before exec: SIGINT handled by default, as in a terminal. A test suite started as a background
    job of a non-interactive shell (`make test &` in a script, nohup) inherits SIGINT ignored; a Python started so
    keeps ignoring it, and the sweep under test then never saw the Ctrl-C (the cause of this test's failures in
    such suites: the sweep and its workers still running 90 s after the signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_stops_a_jobs_sweep_and_leaves_its_runs_resumable(tmp_path):
    """Issue 28.1: Ctrl-C (SIGINT to the whole process group, as a terminal sends it) stops `sweep --jobs 2`
    at once: no queued run is started, no run is written ``failed``, no worker is left (before, the
    workers took the queued runs and the sweep waited for all of them; an interrupt that landed in a
    lazy import wrote every later run of that worker ``failed``)."""
    (tmp_path / "slowplug.py").write_text(_PLUGIN)
    spec = {"name": "ctrlc", "base": {**TINY, "measure": ["test_slow"], "states": ["trained"],
                                      "options": {"test_slow": {"seconds": 300}}},
            "grid": {"seed": [0, 1, 2, 3]}, "scales": {"tiny": {}}}
    import yaml
    (tmp_path / "ctrlc.yaml").write_text(yaml.safe_dump(spec))
    root = tmp_path / "runs"
    dirs = [root / k for k in sweeps.load_sweep(spec, "tiny").keys]
    env = _env(STABKIT_PLUGINS="slowplug", PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
               STABKIT_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "stabkit", "sweep", str(tmp_path / "ctrlc.yaml"), "--scale",
                             "tiny", "--root", str(root), "--device", "cpu", "--quiet", "--jobs", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_sigint_default)
    try:
        deadline = time.time() + 240
        while sum((d / "metrics.parquet").exists() for d in dirs) < 2:  # both workers in their measurement
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "the workers did not start in time"
            time.sleep(0.2)
        t0 = time.time()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            proc.wait(STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            tree = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,args", "-g", str(proc.pid)],
                                  capture_output=True, text=True).stdout
            pytest.fail(f"sweep --jobs 2 still running {STOP_BOUND_S} s after Ctrl-C; its processes:\n{tree}")
        stopped_s = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    out = proc.stdout.read().decode()
    assert proc.returncode == 130, out[-3000:]
    assert stopped_s < STOP_BOUND_S
    states = [runs.run_state(d) for d in dirs]
    assert "failed" not in states and "done" not in states, (states, out[-3000:])
    assert sorted(states) == ["interrupted", "interrupted", "pending", "pending"], states  # queued: not started
    deadline = time.time() + 20
    while time.time() < deadline:  # no worker left: every lock is free (none of the runs is "running")
        if all(runs.run_state(d) != "running" for d in dirs):
            break
        time.sleep(0.2)
    assert sweeps.status(root, spec, "tiny") == dict(total=4, done=0, pending=4, failed=0, running=0)


# ------------------------------------------------------------------- a network another process trains
def test_a_run_whose_network_another_process_trains_does_not_hold_the_sweep(tmp_path):
    """A control run (measure recalibrated) of a network that another process is training for hours: the
    sweep used to start it, and the run waited inside for that training, holding the process (and a core)
    whatever --wait-timeout said. Now the sweep runs the others first, waits at most the timeout, reports
    the run pending with the reason, and runs it (reusing the network) once the training is done."""
    import threading

    from stabkit.locks import RunLock
    from stabkit.runs.execute import TRAINING_LOCKS

    spec = {"name": "netbusy", "base": TINY, "grid": [{"seed": [0], "measure": [["output"]]},
                                                    {"seed": [1], "measure": [["output"]]}],
            "scales": {"tiny": {}}}
    sw = sweeps.load_sweep(spec, "tiny")
    shared, other = sw.configs
    held = RunLock(tmp_path / TRAINING_LOCKS / shared.training_key)  # "another process" trains shared's network
    held.path.mkdir(parents=True)
    assert held.acquire()
    t0 = time.time()
    rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, wait_timeout_s=1.0,
                       poll_s=0.1).set_index("key")
    assert time.time() - t0 < 60
    assert rep.loc[other.key, "status"] == "done" and rep.loc[shared.key, "status"] == "pending"
    assert "its network is still being trained by another process after waiting 1 s" in rep.loc[shared.key, "error"]
    assert not (tmp_path / shared.key).exists()  # never started: no run waiting inside
    threading.Timer(1.0, held.release).start()  # the training ends while the next sweep waits for it
    rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, poll_s=0.1).set_index("key")
    assert rep.loc[shared.key, "status"] == "done"


# ------------------------------------------------------------------------------ emulated precision
@pytest.mark.filterwarnings("ignore:precision=.bf16. on a CPU without native")
def test_bf16_runs_wait_for_a_cpu_that_does_not_emulate_them(tmp_path, monkeypatch):
    from stabkit import precision

    spec = {"name": "emul", "base": dict(TINY, measure=["output"]), "grid": {"precision": ["float32", "bf16"]},
            "scales": {"tiny": {}}}
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)  # an AVX2-only CPU
    rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False)
    assert list(rep.status) == ["done", "pending"]
    assert "emulated" in rep.error[1] and "--emulated run" in rep.error[1]
    assert runs.run_state(Path(rep.run_dir[1])) == "pending"  # never started
    with pytest.raises(ValueError, match=r"emulated must be one of \('skip', 'run'\), got 'yes'"):
        sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, emulated="yes")
    assert list(sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False, emulated="run").status) == [
        "done", "done"]
    # a run that only measures a network trained already (a control) is not emulated: it runs
    control = dict(spec, name="emul_control", grid={"precision": ["bf16"]},
                   base=dict(TINY, measure=["layers"]))
    assert list(sweeps.sweep(control, "tiny", tmp_path, device="cpu", progress=False).status) == ["done"]
    # a CPU with native bf16 runs them by default
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    other = tmp_path / "native"
    assert list(sweeps.sweep(spec, "tiny", other, device="cpu", progress=False).status) == ["done", "done"]
