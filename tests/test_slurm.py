"""Sweeps through a running SLURM (``--executor slurm``, submitit): the one-node cluster of
``tools/slurm_local.sh`` (munge, slurmdbd + MariaDB, slurmctld, slurmd), started for these tests when no
cluster is up (``$SLURM_CONF`` answering ``sinfo``) and stopped after them. ``make test-slurm`` runs them;
they skip, with the reason, where the SLURM binaries are missing (``tools/slurm_local.sh install``, as root)."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from stabkit import runs, sweeps


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "slurm_local.sh"
TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25,
            batch_size=32, measure=["output"])
_BINARIES = ("sbatch", "squeue", "sacct", "sacctmgr", "scancel", "sinfo", "slurmctld", "slurmd", "slurmdbd", "munged",
             "mariadbd")
_PLUGIN = '''
import os, time
import pandas as pd
from stabkit.runs import register_measurement

@register_measurement("test_slow")
def slow(model, cfg, ctx):
    seconds = float(cfg.options.get("test_slow", {}).get("seconds", 0))
    if os.environ.get("TEST_NO_SLEEP") != "1":
        time.sleep(seconds)
    return {"slow": pd.DataFrame({"slept": [seconds]})}
'''


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _ours_up() -> bool:
    """Whether ``$SLURM_CONF`` is a running cluster of ``tools/slurm_local.sh`` (the tests name its partitions
    and account; a real cluster of the user is never used)."""
    conf = Path(os.environ.get("SLURM_CONF", "/nonexistent"))
    return (conf.is_file() and "ClusterName=stabkit" in conf.read_text()
            and subprocess.run(["sinfo"], capture_output=True, timeout=30).returncode == 0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local SLURM: the one ``$SLURM_CONF`` names if it is one of ``tools/slurm_local.sh``, else one started
    here (and stopped after the tests)."""
    missing = [b for b in _BINARIES if _which(b) is None]
    if missing:
        pytest.skip(f"SLURM not installed here (missing {', '.join(missing)}): `tools/slurm_local.sh install` as "
                    f"root (Debian packages slurmctld slurmd slurm-client slurmdbd munge mariadb-server)")
    mp = pytest.MonkeyPatch()
    mp.setenv("PATH", os.environ["PATH"] + os.pathsep + "/usr/sbin")
    # the jobs import this checkout and read the plugin of the tests (sbatch exports this environment)
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "slurmplug.py").write_text(_PLUGIN)
    mp.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(plugins), *filter(None, [os.environ.get("PYTHONPATH")])]))
    mp.setenv("STABKIT_PLUGINS", "slurmplug")
    mp.setenv("STABKIT_THREADS", "1")
    mp.setenv("OMP_NUM_THREADS", "1")
    started = None
    if not _ours_up():
        started = Path(f"/tmp/stabkit-slurm-test-{os.getpid()}")
        res = subprocess.run(["bash", str(SCRIPT), "start", str(started)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"tools/slurm_local.sh start failed:\n{res.stdout}\n{res.stderr}"
        mp.setenv("SLURM_CONF", str(started / "etc" / "slurm.conf"))
    import stabkit.runs.measurements  # noqa: F401 - registers the plugin in this process too
    if "test_slow" not in runs.MEASUREMENTS:
        sys.path.insert(0, str(plugins))
        __import__("slurmplug")
    try:
        yield os.environ["SLURM_CONF"]
    finally:
        if started is not None:
            subprocess.run(["bash", str(SCRIPT), "stop", str(started)], capture_output=True, timeout=120)
        mp.undo()


def _sacct(job: str) -> pd.DataFrame:
    """The accounting rows of a job array (one per array task, no steps)."""
    out = subprocess.run(["sacct", "--noheader", "--parsable2", "-X", "-j", job,
                          "--format=JobID,State,Start,End,Elapsed,Partition,Account"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=["job", "state", "start", "end", "elapsed", "partition", "account"])


def _sacct_final(job: str, timeout_s: float = 90) -> pd.DataFrame:
    """:func:`_sacct` once no task is pending or running any more (a job's result file is written before
    its process exits and the accounting records the end)."""
    deadline = time.time() + timeout_s
    while True:
        acct = _sacct(job)
        if len(acct) and not acct.state.isin(["PENDING", "RUNNING", "COMPLETING", "REQUEUED"]).any():
            return acct
        assert time.time() < deadline, f"job {job} still not ended in sacct:\n{acct}"
        time.sleep(1)


def _arrays(folder: Path) -> list[str]:
    """Job ids of the arrays submitted with ``folder`` as submitit folder, oldest first."""
    subs = sorted(folder.glob("*_submission.sh"), key=lambda p: p.stat().st_mtime)
    return [p.name.split("_")[0] for p in subs]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_sweep_through_slurm_equals_the_local_one_and_honours_jobs(cluster, tmp_path):
    """Two runs, ``jobs=1``: the array is submitted with ``%1`` and SLURM runs them one after the other
    (before, ``jobs=1`` left submitit's default of 256 at a time); their tables equal the local executor's."""
    spec = {"name": "viaslurm", "base": TINY, "grid": {"seed": [0, 1]}, "scales": {"tiny": {}}}
    rep = sweeps.sweep(spec, "tiny", tmp_path / "slurm", executor="slurm", jobs=1, device="cpu", progress=False,
                     submitit_params={"timeout_min": 10, "slurm_partition": "debug"})
    assert list(rep.status) == ["done"] * 2, rep.error.tolist()
    folder = tmp_path / "slurm" / "_submitit"
    (array,) = _arrays(folder)
    assert "#SBATCH --array=0-1%1" in next(folder.glob(f"{array}_submission.sh")).read_text()
    acct = _sacct_final(array)
    assert list(acct.state) == ["COMPLETED"] * 2 and set(acct.partition) == {"debug"}
    start, end = pd.to_datetime(acct.start).sort_values(), pd.to_datetime(acct.end).sort_values()
    assert all(s >= e for s, e in zip(start.iloc[1:], end.iloc[:-1])), acct  # never two at once
    local = sweeps.sweep(spec, "tiny", tmp_path / "local", device="cpu", progress=False, threads=1)
    assert list(local.status) == ["done"] * 2
    a, b = (sweeps.collect(tmp_path / d, "output", spec, "tiny").sort_values(["run", "state", "shuffle"])
            .reset_index(drop=True) for d in ("slurm", "local"))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_bad_partition_or_account_is_refused_before_anything_is_submitted(cluster, tmp_path):
    spec = {"name": "badname", "base": TINY, "scales": {"tiny": {}}}
    before = subprocess.run(["squeue", "--noheader", "-t", "all"], capture_output=True, text=True).stdout
    with pytest.raises(ValueError, match=r"slurm_partition='nosuch' is no partition.*partitions: \['debug', 'short'\]"):
        sweeps.sweep(spec, "tiny", tmp_path / "r", executor="slurm", progress=False,
                   submitit_params={"slurm_partition": "nosuch"})
    with pytest.raises(ValueError, match=r"slurm_account='nobody' is no account of user .*accounts: \[.*'stabkit'.*\]"):
        sweeps.sweep(spec, "tiny", tmp_path / "r", executor="slurm", progress=False,
                   submitit_params={"slurm_partition": "short", "slurm_account": "nobody"})
    assert not (tmp_path / "r").exists()
    assert subprocess.run(["squeue", "--noheader", "-t", "all"], capture_output=True, text=True).stdout == before
    # the command line says it in one line, exit status 2, nothing submitted
    res = subprocess.run([sys.executable, "-m", "stabkit", "sweep", "fig5_scale_detection", "--scale", "tiny",
                          "--root", str(tmp_path / "cli"), "--executor", "slurm", "--submitit-param",
                          "slurm_partition=gpu"], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "slurm_partition='gpu' is no partition" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "cli").exists()


def _spec_file(tmp_path: Path, name: str, grid: list) -> Path:
    import yaml
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": {**TINY, "measure": ["output", "test_slow"],
                                                          "states": ["trained"]},
                                    "grid": grid, "scales": {"tiny": {}}}))
    return path


def _sweep_cmd(spec: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stabkit", "sweep", str(spec), "--scale", "tiny", "--root", str(root),
            "--executor", "slurm", "--device", "cpu", "--quiet", *extra]


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_is_reported_and_the_next_sweep_resumes_without_redoing_finished_runs(cluster, tmp_path):
    spec = _spec_file(tmp_path, "cancelme", [{"seed": [0], "options": [{"test_slow": {"seconds": 0}}]},
                                             {"seed": [1], "options": [{"test_slow": {"seconds": 600}}]}])
    root = tmp_path / "runs"
    fast, slow = (root / k for k in sweeps.load_sweep(spec, "tiny").keys)
    proc = subprocess.Popen(_sweep_cmd(spec, root, "--jobs", "2"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.time() + 300
        while not ((fast / "done").exists() and (slow / "metrics.parquet").exists()):  # slow: trained, measuring
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.time() < deadline, "the jobs did not get there in time"
            time.sleep(0.5)
        (array,) = _arrays(root / "_submitit")
        subprocess.run(["scancel", f"{array}_1"], check=True, timeout=60)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out  # the sweep ends (no resubmission of what the user cancelled) and says so
    # sweeps.failure_summary: "1 run(s) pending:", the run ("<key> LeNet (<folder>)"), then its error ("| ...")
    assert re.search(rf"run\(s\) pending:\n\s+{slow.name} LeNet \(.*\)\n\s+\| job {array}_1 ended without "
                     rf"finishing the run \(sacct state CANCELLED", out), out
    assert runs.run_state(slow) == "interrupted" and runs.run_state(fast) == "done"
    acct = _sacct_final(array)
    assert dict(zip(acct.job, acct.state)) == {f"{array}_0": "COMPLETED",
                                                                 f"{array}_1": "CANCELLED by 0"
                                                                 if os.getuid() == 0 else "CANCELLED"}
    before = {p.name: p.stat().st_mtime_ns for p in fast.iterdir()}
    trained = (slow / "metrics.parquet").stat().st_mtime_ns
    res = subprocess.run(_sweep_cmd(spec, root, "--jobs", "2"), env={**os.environ, "TEST_NO_SLEEP": "1"},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in fast.iterdir()} == before  # the finished run: untouched
    assert runs.run_state(slow) == "done" and (slow / "metrics.parquet").stat().st_mtime_ns == trained  # not retrained
    first, second = _arrays(root / "_submitit")
    assert first == array and list(_sacct_final(second).state) == ["COMPLETED"]  # one job: the cancelled run
    assert sorted(sweeps.collect(root, "output", spec, "tiny").run.unique()) == sorted([fast.name, slow.name])


@pytest.mark.slurm
@pytest.mark.slow
def test_a_job_at_its_time_limit_is_reported_and_resumed_not_failed(cluster, tmp_path):
    """A 1-minute limit on a run that measures for 10 minutes: SLURM signals the job before its limit (or
    kills it at the limit); the run is left resumable, not recorded as failed (before: submitit's signal
    handler raised inside the run, which recorded it failed, so that no later sweep resumed it)."""
    spec = _spec_file(tmp_path, "timeout", [{"seed": [0], "options": [{"test_slow": {"seconds": 600}}]}])
    root = tmp_path / "runs"
    (key,) = sweeps.load_sweep(spec, "tiny").keys
    res = subprocess.run(_sweep_cmd(spec, root, "--submitit-param", "timeout_min=1", "--submitit-param",
                                    "slurm_signal_delay_s=20"), capture_output=True, text=True, timeout=400)
    assert res.returncode == 1, res.stdout + res.stderr
    said = res.stdout + res.stderr
    # SLURM signals up to 60 s early (its resolution): in the run (stopped by the job), before it (the job ends
    # through submitit's handler), or never before the kill at the limit (TIMEOUT)
    assert re.search(rf"run\(s\) pending:\n\s+{key} LeNet \(.*\)\n\s+\| (slurm job \S+ got SIGUSR2 \(time limit "
                     rf"near|job \S+ ended without finishing the run \(sacct state)", said), said
    assert runs.run_state(root / key) in ("interrupted", "pending")
    (array,) = _arrays(root / "_submitit")
    # COMPLETED: the job stopped the run; TIMEOUT: killed at the limit; FAILED: signalled before the run began
    # (submitit's own handler ends the job with an error)
    assert _sacct_final(array).state.iloc[0] in ("COMPLETED", "TIMEOUT", "FAILED")
    res = subprocess.run(_sweep_cmd(spec, root, "--submitit-param", "timeout_min=5"),
                         env={**os.environ, "TEST_NO_SLEEP": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert runs.run_state(root / key) == "done"


# ---------------------------------------------------------------------------- without SLURM (every CI run)
def test_the_time_limit_signal_leaves_the_run_resumable_not_failed(tmp_path, monkeypatch):
    """The signal SLURM sends before a job's time limit (or at a preemption) stops the run of a submitit job
    cleanly: ``stopped``, its folder ``interrupted`` (resumed by the next sweep), never ``failed``."""
    import signal

    from stabkit.sweeps.slurm import _job_run

    @runs.register_measurement("test_signal", overwrite=True)
    def signalled(model, cfg, ctx):
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(5)  # the handler interrupts this
        return {"never": pd.DataFrame({"x": [1]})}

    monkeypatch.setenv("SLURM_JOB_ID", "4242_7")
    cfg = runs.RunConfig(**{**TINY, "measure": ["test_signal"]}, states=["trained"])
    before = signal.getsignal(signal.SIGUSR2)
    key, status, error = _job_run(cfg.to_dict(), str(tmp_path), "cpu", False, 1)
    assert (key, status) == (cfg.key, "stopped") and "slurm job 4242_7 got SIGUSR2" in error
    assert runs.run_state(tmp_path / cfg.key) == "interrupted" and not (tmp_path / cfg.key / "error.txt").exists()
    assert signal.getsignal(signal.SIGUSR2) is before  # restored
    runs.MEASUREMENTS["test_signal"] = lambda m, c, x: {"never": pd.DataFrame({"x": [1]})}
    assert _job_run(cfg.to_dict(), str(tmp_path), "cpu", False, 1)[1] == "done"
    assert (tmp_path / cfg.key / "metrics.parquet").exists()


def test_bad_names_are_refused_with_the_names_the_cluster_knows(tmp_path, monkeypatch):
    """sbatch / sinfo / sacctmgr stand-ins: the message names the parameter and what the cluster accepts."""
    pytest.importorskip("submitit")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    fake = {"sbatch": 'case "$*" in *--partition=debug*--account=stabkit*) exit 0;; *--partition=debug*) exit 0;; '
                      '*--partition=*) echo "sbatch: error: invalid partition specified: x" >&2; exit 1;; '
                      '*) echo "sbatch: error: Invalid account or account/partition combination" >&2; exit 1;; esac',
            "sinfo": 'printf "debug*\\nshort\\n"', "sacctmgr": 'echo stabkit'}
    for name, body in fake.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    from stabkit.sweeps.slurm import check_slurm_params
    check_slurm_params({"slurm_partition": "debug", "timeout_min": 5})  # accepted: nothing raised
    check_slurm_params({"timeout_min": 5})  # nothing to check: sbatch not even asked
    with pytest.raises(ValueError, match=r"slurm_partition='gpu' is no partition of this cluster \(sbatch: sbatch: "
                                         r"error: invalid partition specified: x\); partitions: \['debug', 'short'\]"):
        check_slurm_params({"slurm_partition": "gpu"})
    with pytest.raises(ValueError, match=r"slurm_account='nobody' is no account of user .*accounts: \['stabkit'\]"):
        check_slurm_params({"slurm_account": "nobody"})
    spec = {"name": "refused", "base": TINY, "scales": {"tiny": {}}}
    with pytest.raises(ValueError, match="slurm_partition='gpu'"):
        sweeps.sweep(spec, "tiny", tmp_path / "r", executor="slurm", progress=False,
                   submitit_params={"slurm_partition": "gpu"})
    assert not (tmp_path / "r").exists()
