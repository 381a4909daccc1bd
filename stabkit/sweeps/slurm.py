"""Sweeps on SLURM through submitit (``executor="slurm"``, ``"submitit-local"``, ``"submitit-debug"`` or a submitit
``Executor``): the partition, account and qos checked with the scheduler before anything is submitted
(:func:`check_slurm_params`), one job array per sweep call (:func:`submitit_map`), and jobs that a time limit or
a preemption stops leave their run interrupted (resumable), never failed.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..runs.config import RunConfig
from .worker import run_guarded

__all__ = ["check_slurm_params", "submitit_map"]

#: submitit parameters naming things the cluster must know, and their sbatch options
_SLURM_NAMES = {"slurm_partition": "partition", "slurm_account": "account", "slurm_qos": "qos"}


def _slurm_list(cmd: list[str]) -> list[str] | None:
    """Names a SLURM command prints one per line (sorted, unique); None when it cannot say."""
    import subprocess
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return sorted({line.strip().rstrip("*") for line in res.stdout.splitlines() if line.strip()})


def check_slurm_params(params: Mapping | None) -> None:
    """Ask the scheduler, before anything is submitted, whether it accepts the partition, account and qos
    of ``params`` (submitit's ``slurm_partition``, ``slurm_account``, ``slurm_qos``): ``sbatch --test-only``
    validates them without queueing a job. Raises ``ValueError`` naming the parameter and the names the
    cluster accepts (``sinfo``; accounts from ``sacctmgr``); without a bad name it does nothing. A wrong
    name would otherwise be reported by every job of the array, after the sweep has started."""
    import subprocess
    given = {k: str(v) for k, v in dict(params or {}).items() if k in _SLURM_NAMES and v not in (None, "")}
    if not given:
        return
    cmd = ["sbatch", "--test-only", "--job-name=stabkit-check", "--output=/dev/null",
           *(f"--{_SLURM_NAMES[k]}={v}" for k, v in given.items()), "--wrap=true"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ValueError("executor='slurm': the scheduler did not answer `sbatch --test-only` in 60 s; is "
                         "slurmctld up (scontrol ping)?") from None
    if res.returncode == 0:
        return
    said = " ".join(line.strip() for line in (res.stderr or res.stdout).splitlines() if line.strip())[-300:]
    partitions = _slurm_list(["sinfo", "--noheader", "--format=%P"])
    import getpass
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    accounts = _slurm_list(["sacctmgr", "--noheader", "--parsable2", "show", "associations", f"user={user}",
                            "format=account"]) if user else None
    qos = _slurm_list(["sacctmgr", "--noheader", "--parsable2", "show", "qos", "format=name"])
    if "slurm_partition" in given and partitions is not None and given["slurm_partition"] not in partitions:
        raise ValueError(f"submitit param slurm_partition={given['slurm_partition']!r} is no partition of this "
                         f"cluster (sbatch: {said}); partitions: {partitions}")
    if "slurm_account" in given and accounts is not None and given["slurm_account"] not in accounts:
        raise ValueError(f"submitit param slurm_account={given['slurm_account']!r} is no account of user "
                         f"{user!r} here (sbatch: {said}); accounts: {accounts}")
    if "slurm_qos" in given and qos is not None and given["slurm_qos"] not in qos:
        raise ValueError(f"submitit param slurm_qos={given['slurm_qos']!r} is no qos of this cluster "
                         f"(sbatch: {said}); qos: {qos}")
    raise ValueError(f"the cluster refuses {', '.join(f'{k}={v!r}' for k, v in given.items())} (sbatch --test-only: "
                     f"{said}); partitions: {partitions}, accounts: {accounts}")


class _JobStopped(BaseException):
    """Raised in a submitit job by the signal SLURM sends before its time limit or a preemption: a
    ``BaseException``, so that :func:`~stabkit.runs.run` leaves the run ``interrupted`` (resumable: its
    training continues from ``resume.pt``), not ``failed``."""


def _job_run(cfg_dict: dict, root: str, device: str, force: bool, threads: int) -> tuple[str, str, str]:
    """A submitit job: :func:`~stabkit.sweeps.worker.run_guarded`, stopped cleanly by the time-limit / preemption signal.

    submitit's own handler of that signal raises an ``Exception`` in a function it cannot checkpoint, which
    recorded the run as failed (never resumed); here the run stays interrupted and the job returns
    ``stopped``, so that the sweep reports it and the next sweep resumes it."""
    sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
    # imports first (the key imports torch): SLURM may signal at any time, and an exception raised in the middle
    # of ``import torch`` leaves a half-imported module that breaks every later use
    import torch  # noqa: F401
    key = RunConfig.from_dict(cfg_dict).key

    def stop(signum, frame):
        raise _JobStopped(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():  # submitit-debug called from a thread
        return run_guarded(cfg_dict, root, device, False, force, threads)
    previous = signal.signal(sig, stop)
    try:
        return run_guarded(cfg_dict, root, device, False, force, threads)
    except _JobStopped as exc:
        job = os.environ.get("SLURM_JOB_ID", "?")
        return (key, "stopped",
                f"slurm job {job} got {exc} (time limit near, or preempted): stopped, run the sweep again to resume")
    finally:
        signal.signal(sig, previous)


def _job_id(job: Any) -> str:
    return str(getattr(job, "job_id", "?"))


def submitit_map(args: list, executor: Any, jobs: int, device: str, threads: int, root: Path,
                 params: Mapping | None, folder: str | Path | None, bar) -> dict:
    """Run ``args`` as one submitit job array; returns key -> (status, error). Status ``stopped``: the job
    ended without finishing its run (``scancel``, time limit, preemption, node failure); the run folder is
    left resumable."""
    import submitit  # only needed here
    folder = Path(folder or root / "_submitit")
    throttle = False
    if isinstance(executor, str):
        if executor == "slurm":
            ex = submitit.AutoExecutor(folder=folder)
            # ``jobs`` is the array's parallelism (``%jobs``), 1 included: SLURM runs at most that many at once
            ex.update_parameters(slurm_array_parallelism=jobs)
        elif executor == "submitit-local":
            ex, throttle = submitit.LocalExecutor(folder=folder), True
        else:
            ex = submitit.DebugExecutor(folder=folder)
    else:
        ex, throttle = executor, isinstance(executor, submitit.LocalExecutor)
    if params:
        ex.update_parameters(**dict(params))
    if not args:
        return {}
    out = {}
    chunk = jobs if throttle else len(args)
    for i in range(0, len(args), chunk):
        part = args[i:i + chunk]
        n = len(part)
        js = ex.map_array(_job_run, [a[0] for a in part], [a[1] for a in part], [device] * n,
                          [a[2] for a in part], [threads] * n)
        for a, j in zip(part, js):
            try:
                k, st, err = j.result()
            except Exception as exc:  # noqa: BLE001 - the job ended without a result (scancel, killed, node...)
                try:
                    state = str(j.watcher.get_state(j.job_id, mode="force")) if hasattr(j, "watcher") else "?"
                except Exception:  # noqa: BLE001 - no accounting answer: the log still says why
                    state = "?"
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
                said = next((line for line in lines if "state:" in line), lines[0])[:200]
                k, st, err = (RunConfig.from_dict(a[0]).key, "stopped",
                              f"job {_job_id(j)} ended without finishing the run (sacct state {state}; {said});"
                              f" run the sweep again to resume it; log {getattr(j.paths, 'stderr', '?')}")
            out[k] = (st, err)
            bar.update()
    return out
