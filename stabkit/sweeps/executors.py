"""Many runs: :func:`~stabkit.sweeps.sweep` (sequential, a local process pool, or submitit / SLURM); the notebooks'
entry point ``results()`` is in :mod:`~stabkit.sweeps.lookup`.

A sweep finishes or retries every run it was asked for: a run another process was computing (its lock)
is waited for, and retried if that process died before finishing it; the returned table (and the
command line's exit status) says which runs did not finish. Every run uses the same number of torch
threads (:func:`~stabkit.sweeps.run_threads`, whatever ``jobs`` is), so that results do not depend on ``--jobs``.
The executors themselves: :mod:`~stabkit.sweeps.local_pool` (worker processes that die with the sweep, so a
killed sweep leaves no process holding memory or a GPU) and :mod:`~stabkit.sweeps.slurm` (submitit job arrays);
each runs :func:`~stabkit.sweeps.worker.run_guarded`.
"""
from __future__ import annotations

import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..checks import check_choice, check_int
from ..runs.execute import TRAINING_LOCKS, find_trained, finished_training, resolve_device
from ..runs.folder import error_line, run_state, verify_run
from ..locks import clear_stale_lock, heartbeat_age, lock_held, lock_info
from ..runs.paths import default_runs_root
from .local_pool import local_pool
from .slurm import check_slurm_params, submitit_map
from .sweepfile import Sweep, as_sweep
from .worker import run_guarded, run_threads

if TYPE_CHECKING:
    from ..runs.config import RunConfig

__all__ = ["EXECUTORS", "EMULATED_CHOICES", "WAIT_STALE_S", "sweep", "failure_summary"]

EXECUTORS = ("local", "slurm", "submitit-local", "submitit-debug")
#: What a local CPU sweep does with runs whose training precision the CPU only emulates (``sweep(emulated=...)``).
EMULATED_CHOICES = ("skip", "run")
#: A run held by another live process whose heartbeat (lock file touched every epoch) is older than this
#: is not waited for any more: the sweep reports it as not finished (a hung process, or one that keeps
#: a lock by mistake), instead of waiting forever.
WAIT_STALE_S = 2 * 3600
_MAX_ATTEMPTS = 3  # a run is started at most this many times per sweep call (a dying worker is retried)


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
          skip_keys: Iterable[str] = (), emulated: str = "skip",
          admit: Callable[[RunConfig], str | None] | None = None) -> pd.DataFrame:
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

    ``emulated``: what a local sweep on a CPU without native bfloat16 (no avx512_bf16 / AMX) does with runs
    trained in ``precision="bf16"``, which that CPU emulates 11-29x slower per step than float32:
    ``"skip"`` (default; reported ``pending`` with the reason, so that a grid's other runs go on) or
    ``"run"``. Elsewhere (CUDA, a CPU with native bf16, SLURM or submitit) it has no effect.

    ``admit``: asked just before a run would start, ``admit(config)`` returns None (start it) or why not (the
    run is reported ``pending`` with that reason and not asked about again in this call): e.g. a run that
    would not finish before a deadline (``stabkit sweep --deadline``). With it, at most ``jobs`` runs start
    per round, so that each start is decided when its slot frees.
    """
    jobs = _positive("jobs", jobs)
    slots_per_gpu = _positive("slots_per_gpu", slots_per_gpu)
    threads = run_threads(threads)
    _check_executor(executor)
    check_choice("emulated", emulated, EMULATED_CHOICES)
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
    slow = _emulated_keys(sw, dev, root) if emulated == "skip" and executor == "local" else {}
    skip_slow = set(slow) - redo_keys - skip
    from tqdm.auto import tqdm
    bar = tqdm(total=0, desc=f"{sw.name}/{sw.scale}", unit="run", disable=not progress)
    outcome: dict[str, tuple[str, str]] = {}
    attempts = dict.fromkeys(sw.keys, 0)
    given_up: dict[str, str] = {}
    net_given_up: set[str] = set()
    refused: dict[str, str] = {}
    try:
        while True:
            todo, force, net_busy = [], [], {}
            for c in sw.configs:
                k, st = c.key, run_state(root / c.key)
                if (attempts[k] >= _MAX_ATTEMPTS or st == "running" or k in skip or k in net_given_up
                        or k in skip_slow or k in refused):
                    continue
                if (k in redo_keys and attempts[k] == 0) or st in ("pending", "interrupted") or (
                        st == "failed" and retry_failed and attempts[k] == 0):
                    if (lock := _network_lock(root, c)) is not None:
                        net_busy[k] = lock  # started now, it would wait inside for that training (hours)
                        continue
                    if admit is not None:
                        if len(todo) >= jobs:
                            continue  # asked when a slot frees, not now: its answer may change by then
                        if why := admit(c):
                            refused[k] = why
                            continue
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
                outcome.update(local_pool(args, dev, jobs, slots_per_gpu, threads, bar))
            elif todo:
                ended = submitit_map(args, executor, jobs, device, threads, root, submitit_params, submitit_folder,
                                     bar)
                outcome.update(ended)
                for k, (st, _) in ended.items():
                    if st == "stopped":  # scancel, time limit, preemption: resumed by the next sweep, not now
                        attempts[k] = _MAX_ATTEMPTS
            # runs held by another live process, and runs whose network another process is training: wait,
            # then retry those left unfinished (a run whose network is now trained reuses it)
            busy = {k: root / k for k in sw.keys
                    if k not in given_up and k not in skip and run_state(root / k) == "running"}
            busy.update(net_busy)
            if busy and wait_running:
                if progress:
                    print(f"{sw.name}/{sw.scale}: waiting for {len(busy)} run(s) computed by another process"
                          + (f" ({len(net_busy)} of them for a network it trains)" if net_busy else ""),
                          file=sys.stderr)
                stuck = _wait(busy, poll_s, wait_timeout_s, stale_s, set(net_busy))
                given_up.update(stuck)
                net_given_up.update(k for k in stuck if k in net_busy)  # not started again in this call
                for k in busy:
                    outcome[k] = (("pending" if k in net_busy else "running"), stuck[k]) if k in stuck else ("", "")
                continue
            for k in busy:
                outcome[k] = (("pending", "its network is being trained by another process (not waited for)")
                              if k in net_busy else ("running", "computed by another process (not waited for)"))
            net_given_up.update(net_busy if not wait_running else ())
            if not todo:
                break
    finally:
        bar.close()
    for k, why in [*((k, slow[k]) for k in skip_slow), *refused.items()]:
        if run_state(root / k) != "done":
            outcome[k] = ("pending", why)
    return _report(sw, root, outcome, progress, skip)


def _emulated_keys(sw: Sweep, dev: Any, root: Path) -> dict[str, str]:
    """{key: why} of the runs of ``sw`` that would train in a precision ``dev`` only emulates: bf16 on a CPU
    without native bfloat16."""
    import torch

    from .. import precision  # torch: not at import (loading a sweep must not import it)
    if torch.device(dev).type != "cpu" or precision.cpu_supports_bf16():
        return {}
    why = ("deferred: precision bf16 on a CPU without native bfloat16 (no avx512_bf16 / AMX) is emulated, "
           "11-29x slower per step than float32; train it on a GPU or a CPU with native bf16, or pass "
           "emulated='run' (command line: --emulated run)")
    return {c.key: why for c in sw.configs if c.precision == "bf16" and not _trained(c, root)}


def _trained(cfg: RunConfig, root: Path) -> bool:
    """Whether ``cfg``'s network is trained already (its own training ended, or a finished run with the same
    network lends it): such a run only measures, in float64, whatever its training precision."""
    return finished_training(root / cfg.key, cfg.key) is not None or find_trained(cfg, root) is not None


def _positive(name: str, value: Any) -> int:
    try:
        return check_int(name, value, minimum=1)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _network_lock(root: Path, cfg) -> Path | None:
    """The training lock folder of ``cfg``'s network when another live process holds it (it is training
    that network) and no finished run lends it yet; else ``None``."""
    folder = root / TRAINING_LOCKS / cfg.training_key
    if lock_held(folder) and find_trained(cfg, root) is None:
        return folder
    return None


def _wait(locks: Mapping[str, Path], poll_s: float, timeout_s: float | None, stale_s: float,
          networks: Iterable[str] = ()) -> dict[str, str]:
    """Wait until none of the lock folders ``locks`` (key -> a run folder, or for the keys in ``networks``
    the training lock of their network) is held by another live process; returns the keys given up on
    (wait timeout, or a run's heartbeat older than ``stale_s``) with the reason. A training lock has no
    heartbeat of its own (the run training holds it for hours): only the timeout ends that wait."""
    t0, stuck, networks = time.time(), {}, set(networks)
    keys = list(locks)
    while keys:
        keys = [k for k in keys if lock_held(locks[k])]
        for k in [k for k in keys if k not in networks]:
            age = heartbeat_age(locks[k] / "lock")
            if age is not None and age > stale_s:
                info = lock_info(locks[k] / "lock")
                stuck[k] = (f"held by another process (host {info.get('host')}, pid {info.get('pid')}) whose "
                            f"heartbeat is {age:.0f} s old (> {stale_s:g} s): not waited for")
                keys.remove(k)
        if keys and timeout_s is not None and time.time() - t0 > timeout_s:
            for k in keys:
                stuck[k] = (f"its network is still being trained by another process after waiting {timeout_s:g} s"
                            if k in networks else f"still computed by another process after waiting {timeout_s:g} s")
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
