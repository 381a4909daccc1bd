"""Many runs: :func:`~stabkit.sweeps.sweep` (sequential, a local process pool, or submitit / SLURM); the notebooks'
entry point ``results()`` is in :mod:`~stabkit.sweeps.lookup`.

A sweep finishes or retries every run it was asked for: a run another process was computing (its lock)
is waited for, and retried if that process died before finishing it; the returned table (and the
command line's exit status) says which runs did not finish. Every run uses the same number of torch
threads (:func:`~stabkit.sweeps.run_threads`, whatever ``jobs`` is), so that results do not depend on ``--jobs``. Worker
processes die with the sweep that started them (Linux: ``PR_SET_PDEATHSIG``; elsewhere a watchdog
thread), so a killed sweep leaves no process holding memory or a GPU.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..checks import check_int
from ..runs.config import RunConfig
from ..runs.execute import resolve_device, run
from ..runs.folder import RunLocked, error_line, run_state, verify_run
from ..runs.locks import clear_stale_lock, heartbeat_age, lock_info
from ..runs.paths import default_runs_root
from .sweepfile import Sweep, as_sweep

__all__ = ["EXECUTORS", "WAIT_STALE_S", "sweep", "run_guarded", "run_threads", "check_slurm_params",
           "failure_summary"]

EXECUTORS = ("local", "slurm", "submitit-local", "submitit-debug")
#: A run held by another live process whose heartbeat (lock file touched every epoch) is older than this
#: is not waited for any more: the sweep reports it as not finished (a hung process, or one that keeps
#: a lock by mistake), instead of waiting forever.
WAIT_STALE_S = 2 * 3600
_MAX_ATTEMPTS = 3  # a run is started at most this many times per sweep call (a dying worker is retried)


def run_threads(threads: int | None = None) -> int:
    """Torch threads of every run: ``threads``, else ``$STABKIT_THREADS``, else the CPUs this process
    may use. A property of the machine, never of ``jobs``: float reductions depend on the thread count,
    so the same run gives the same numbers whether the sweep runs 1 or N at a time (with N > 1 the
    threads of the workers oversubscribe the cores: set ``threads`` = cores / N for speed, knowing that
    the last digits may then differ from a run made with another count)."""
    if threads is None:
        env = os.environ.get("STABKIT_THREADS", "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise ValueError(f"$STABKIT_THREADS must be an integer >= 1, got {env!r}") from None
        else:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return check_int("threads", threads, minimum=1)


def run_guarded(cfg_dict: dict, root: str, device: str, progress: bool = False, force: bool = False,
                threads: int | None = None) -> tuple[str, str, str]:
    """Worker: run one config with :func:`~stabkit.sweeps.run_threads` torch threads (restored afterwards); never raises.
    Returns (key, status, error line); status ``running`` when another live process holds the run."""
    import torch
    cfg = RunConfig.from_dict(cfg_dict)
    before = torch.get_num_threads()
    torch.set_num_threads(run_threads(threads))
    try:
        run(cfg, root, device=device, progress=progress, force=force)
        return cfg.key, "done", ""
    except RunLocked as exc:
        return cfg.key, "running", str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded in the run folder by run()
        return cfg.key, "failed", f"{type(exc).__name__}: {exc}"
    finally:
        torch.set_num_threads(before)


_WORKER_DEVICE = "cpu"


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker die when the sweep process does: the kernel sends SIGKILL at the parent's death
    (Linux ``prctl(PR_SET_PDEATHSIG)``), and a daemon thread exits when the parent pid changes (any
    POSIX system; the fallback where prctl is missing)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)  # nothing to clean up: locks are released by the kernel, run folders stay resumable
    threading.Thread(target=watch, name="stabkit-parent-watchdog", daemon=True).start()


def _pool_init(device_queue, parent_pid: int) -> None:
    global _WORKER_DEVICE
    # Ctrl-C reaches the whole foreground process group. Only the sweep process acts on it (it stops the
    # workers, whose runs stay resumable): a KeyboardInterrupt inside a worker could land in a lazy import
    # (torch._dynamo, sympy) and leave a half-imported module that makes every later run of that worker fail.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    _WORKER_DEVICE = device_queue.get() if device_queue is not None else "cpu"


def _pool_run(cfg_dict: dict, root: str, force: bool, threads: int) -> tuple[str, str, str]:
    return run_guarded(cfg_dict, root, _WORKER_DEVICE, False, force, threads)


def _check_executor(executor: Any) -> None:
    """Refuse, before anything runs, an executor that cannot work here (clear ``ValueError``)."""
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS} or a submitit Executor, got {executor!r}")
        if executor == "local":
            return
        try:
            import submitit  # noqa: F401 - only needed by these executors
        except ImportError:
            raise ValueError(f"executor={executor!r} needs the submitit package (pip install submitit); "
                             f"use executor='local'") from None
        if executor == "slurm" and shutil.which("sbatch") is None:
            raise ValueError("executor='slurm' needs SLURM, but there is no sbatch on PATH here (submitit would "
                             "silently run the jobs locally); use executor='local', or 'submitit-local' to test")
    elif not hasattr(executor, "map_array"):
        raise ValueError(f"executor must be one of {EXECUTORS} or a submitit Executor, got {executor!r}")


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


def _redo_keys(sw: Sweep, redo: bool | Iterable[str]) -> set[str]:
    if redo is True:
        return set(sw.keys)
    if not redo:
        return set()
    keys = {redo} if isinstance(redo, str) else set(redo)
    unknown = sorted(keys - set(sw.keys))
    if unknown:
        raise ValueError(f"redo: {unknown} are no runs of sweep {sw.name!r} at scale {sw.scale!r}; its runs: "
                         f"{sw.keys}")
    return keys


def sweep(spec: str | Path | Mapping | Sweep, scale: str = "small", root: str | Path | None = None,
          executor: Any = "local", jobs: int = 1, *, device: str = "auto", slots_per_gpu: int = 1,
          retry_failed: bool = False, progress: bool = True, submitit_params: Mapping | None = None,
          submitit_folder: str | Path | None = None, wait_running: bool = True, poll_s: float = 2.0,
          verify: bool = False, redo: bool | Iterable[str] = False, threads: int | None = None,
          wait_timeout_s: float | None = None, stale_s: float = WAIT_STALE_S,
          skip_keys: Iterable[str] = ()) -> pd.DataFrame:
    """Run every configuration of a sweep that is not finished; return one row per config
    (key, net, status in {done, failed, running, pending, committed}, error, run_dir). A status other
    than ``done`` or ``committed`` means the run did not finish in this call; ``error`` says why.
    ``skip_keys``: configurations not to run because their results are committed already
    (``committed_keys()``; the CLI passes them unless ``--recompute``); reported
    ``committed`` unless their run folder is here and done.

    The sweep is validated first (:meth:`Sweep.validate`: unknown networks, options, measurements, P
    above the test set... fail before any training). Finished runs are skipped untouched (``verify``:
    checked first with :func:`~stabkit.runs.verify_run`, and redone with a warning naming the
    damaged file; ``redo``: True or some keys, recomputed anyway); interrupted ones are redone; failed
    ones are skipped unless ``retry_failed`` (their traceback stays in ``error.txt``); a failing run never
    stops the sweep. Runs that another live process is computing (its lock) are waited for if
    ``wait_running`` (default) and retried if that process dies before finishing them; the wait for a
    run ends after ``wait_timeout_s`` (default: none) or when its heartbeat is older than ``stale_s``
    (a hung holder), and the run is then reported ``running``. A run is started at most 3 times.

    ``executor``: ``"local"`` (``jobs`` = 1: sequential in this process; > 1: worker processes, at most
    ``slots_per_gpu`` concurrent runs per visible GPU on CUDA; the workers die with this process),
    ``"slurm"`` (submitit AutoExecutor job array, ``submitit_params`` passed to ``update_parameters``, e.g.
    ``timeout_min``, ``slurm_partition``, ``gpus_per_node``; ``jobs`` is the array parallelism, at most
    ``jobs`` runs at once; refused where SLURM is absent; partition, account and qos checked before
    submission by ``check_slurm_params``; a job that ends without finishing its run (``scancel``,
    time limit, preemption) is reported and not resubmitted in this call: the next call resumes it),
    ``"submitit-local"`` / ``"submitit-debug"`` (submitit's LocalExecutor / DebugExecutor, for testing;
    the local one is throttled to ``jobs`` at a time), or any submitit
    ``Executor`` instance. ``threads``: torch threads of every run (:func:`~stabkit.sweeps.run_threads`).
    """
    jobs = _positive("jobs", jobs)
    slots_per_gpu = _positive("slots_per_gpu", slots_per_gpu)
    threads = run_threads(threads)
    _check_executor(executor)
    if executor == "slurm":
        check_slurm_params(submitit_params)
    sw = as_sweep(spec, scale).validate()
    redo_keys = _redo_keys(sw, redo)
    skip = set(skip_keys) - redo_keys
    root = Path(root or default_runs_root())
    root.mkdir(parents=True, exist_ok=True)
    if verify:
        for c in sw.configs:
            if c.key not in redo_keys and (problems := verify_run(root / c.key, checkpoints=True)):
                warnings.warn(f"run {c.key} of {sw.name}/{sw.scale} is damaged, redoing it: "
                              + "; ".join(problems), stacklevel=2)
                redo_keys.add(c.key)
    for c in sw.configs:  # a process killed between its `done` marker and its lock's release left the file
        if (root / c.key / "done").exists():
            clear_stale_lock(root / c.key)
    dev = resolve_device(device) if executor == "local" else device
    from tqdm.auto import tqdm
    bar = tqdm(total=0, desc=f"{sw.name}/{sw.scale}", unit="run", disable=not progress)
    outcome: dict[str, tuple[str, str]] = {}
    attempts = dict.fromkeys(sw.keys, 0)
    given_up: dict[str, str] = {}
    try:
        while True:
            todo, force = [], []
            for c in sw.configs:
                k, st = c.key, run_state(root / c.key)
                if attempts[k] >= _MAX_ATTEMPTS or st == "running" or k in skip:
                    continue
                if (k in redo_keys and attempts[k] == 0) or st in ("pending", "interrupted") or (
                        st == "failed" and retry_failed and attempts[k] == 0):
                    todo.append(c)
                    force.append(k in redo_keys and attempts[k] == 0)
            for c in todo:
                attempts[c.key] += 1
            bar.total += len(todo)
            bar.refresh()
            args = [(c.to_dict(), str(root), f) for c, f in zip(todo, force)]
            if executor == "local" and (jobs == 1 or len(todo) == 1):
                for cfg_dict, r, f in args:
                    k, st, err = run_guarded(cfg_dict, r, dev, progress, f, threads)
                    outcome[k] = (st, err)
                    bar.update()
            elif executor == "local" and todo:
                outcome.update(_local_pool(args, dev, jobs, slots_per_gpu, threads, bar))
            elif todo:
                ended = _submitit_map(args, executor, jobs, device, threads, root, submitit_params, submitit_folder,
                                      bar)
                outcome.update(ended)
                for k, (st, _) in ended.items():
                    if st == "stopped":  # scancel, time limit, preemption: resumed by the next sweep, not now
                        attempts[k] = _MAX_ATTEMPTS
            # runs held by another live process: wait, then retry those it left unfinished
            busy = [k for k in sw.keys if k not in given_up and k not in skip and run_state(root / k) == "running"]
            if busy and wait_running:
                if progress:
                    print(f"{sw.name}/{sw.scale}: waiting for {len(busy)} run(s) computed by another process",
                          file=sys.stderr)
                stuck = _wait(root, busy, poll_s, wait_timeout_s, stale_s)
                given_up.update(stuck)
                for k in busy:
                    outcome[k] = ("running", stuck[k]) if k in stuck else ("", "")
                continue
            for k in busy:
                outcome[k] = ("running", "computed by another process (not waited for)")
            if not todo:
                break
    finally:
        bar.close()
    return _report(sw, root, outcome, progress, skip)


def _positive(name: str, value: Any) -> int:
    try:
        return check_int(name, value, minimum=1)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _wait(root: Path, keys: list[str], poll_s: float, timeout_s: float | None, stale_s: float) -> dict[str, str]:
    """Wait until none of ``keys`` is held by another live process; returns the keys given up on (wait
    timeout, or heartbeat older than ``stale_s``) with the reason."""
    t0, stuck = time.time(), {}
    keys = list(keys)
    while keys:
        keys = [k for k in keys if run_state(root / k) == "running"]
        for k in list(keys):
            age = heartbeat_age(root / k / "lock")
            if age is not None and age > stale_s:
                info = lock_info(root / k / "lock")
                stuck[k] = (f"held by another process (host {info.get('host')}, pid {info.get('pid')}) whose "
                            f"heartbeat is {age:.0f} s old (> {stale_s:g} s): not waited for")
                keys.remove(k)
        if keys and timeout_s is not None and time.time() - t0 > timeout_s:
            for k in keys:
                stuck[k] = f"still computed by another process after waiting {timeout_s:g} s"
            break
        if keys:
            time.sleep(poll_s)
    return stuck


def _report(sw: Sweep, root: Path, outcome: dict, progress: bool, skip: set = frozenset()) -> pd.DataFrame:
    rows = []
    for c in sw.configs:
        st = run_state(root / c.key)
        if c.key in skip and st != "done":
            rows.append({"key": c.key, "net": c.net, "status": "committed", "error": "",
                         "run_dir": str(root / c.key)})
            continue
        ost, err = outcome.get(c.key, (st, ""))
        if st in ("done", "failed", "running"):  # the folder has the last word
            ost = st
            err = err if st != "done" else ""
            if st == "running":
                err = err or "computed by another process"
        else:
            ost = "pending"
            err = err or ("interrupted: the process computing it died; run the sweep again"
                          if st == "interrupted" else "not started")
        rows.append({"key": c.key, "net": c.net, "status": ost,
                     "error": err or (error_line(root / c.key) if ost == "failed" else ""),
                     "run_dir": str(root / c.key)})
    out = pd.DataFrame(rows, columns=["key", "net", "status", "error", "run_dir"])
    bad = out[~out.status.isin(["done", "committed"])]
    if len(bad) and progress:
        print(f"{sw.name}/{sw.scale}: {len(bad)} of {len(out)} run(s) did not finish:\n{failure_summary(out)}",
              file=sys.stderr)
    return out


def failure_summary(report: pd.DataFrame, max_chars: int = 2000) -> str:
    """The runs of a sweep report (:func:`sweep`: key, net, status, error, run_dir) that did not finish,
    grouped by their error: one block per distinct (status, error) that lists its runs, then the error in
    full (every line, indented; at most ``max_chars`` characters), so that a cause shared by every run (the
    data set not found: where it looked, how to provide it) is read once. ``""`` when every run finished."""
    bad = report[~report["status"].isin(["done", "committed"])]
    groups: dict[tuple[str, str], list] = {}
    for r in bad.itertuples():
        groups.setdefault((str(r.status), str(r.error or "").strip()), []).append(r)
    blocks = []
    for (status, error), rs in groups.items():
        head = (f"{len(rs)} run(s) {status}" + (" with the same error" if error and len(rs) > 1 else "") + ":")
        runs = [f"    {r.key} {r.net} ({r.run_dir})" for r in rs]
        text = error if len(error) <= max_chars else error[:max_chars] + " [...]"
        why = [f"    | {line}" for line in text.splitlines()] or ["    | (no error recorded)"]
        blocks.append("\n".join([f"  {head}", *runs, *why]))
    return "\n".join(blocks)


def _local_pool(args: list, device: str, jobs: int, slots_per_gpu: int, threads: int, bar) -> dict:
    import concurrent.futures as cf
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    queue = None
    if device.startswith("cuda"):
        import torch
        gpus = [device] if ":" in device else [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        slots = [g for _ in range(slots_per_gpu) for g in gpus]
        jobs = min(jobs, len(slots))
        queue = ctx.Queue()
        for g in slots[:jobs]:
            queue.put(g)
    out = {}
    before = {p.pid for p in mp.active_children()}
    pool = cf.ProcessPoolExecutor(max_workers=min(jobs, len(args)), mp_context=ctx, initializer=_pool_init,
                                  initargs=(queue, os.getpid()))
    try:
        futs = {pool.submit(_pool_run, *a, threads): a for a in args}
        for f in cf.as_completed(futs):
            try:
                k, st, err = f.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (e.g. killed): the run is not done
                k, st, err = RunConfig.from_dict(futs[f][0]).key, "failed", f"worker died: {exc}"
            out[k] = (st, err)
            bar.update()
    except BaseException:  # Ctrl-C (or any error here): stop now, queued runs are not started
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_workers(before)
        raise
    pool.shutdown(wait=True)
    return out


class _JobStopped(BaseException):
    """Raised in a submitit job by the signal SLURM sends before its time limit or a preemption: a
    ``BaseException``, so that :func:`~stabkit.runs.run` leaves the run ``interrupted`` (resumable: its
    training continues from ``resume.pt``), not ``failed``."""


def _job_run(cfg_dict: dict, root: str, device: str, force: bool, threads: int) -> tuple[str, str, str]:
    """A submitit job: :func:`run_guarded`, stopped cleanly by the time-limit / preemption signal.

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


def _stop_workers(before: set[int], grace_s: float = 5.0) -> None:
    """End the pool's workers (the multiprocessing children started since ``before`` was taken): SIGTERM,
    then SIGKILL after ``grace_s``. A run killed this way has no ``failed`` status: it is ``interrupted``
    and the next sweep resumes it (its lock dies with the worker)."""
    import multiprocessing as mp
    workers = [p for p in mp.active_children() if p.pid not in before]
    for p in workers:
        p.terminate()
    deadline = time.time() + grace_s
    for p in workers:
        p.join(max(0.0, deadline - time.time()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


def _submitit_map(args: list, executor: Any, jobs: int, device: str, threads: int, root: Path,
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
