"""Many runs: :func:`sweep` (sequential, a local process pool, or submitit / SLURM) and :func:`results`,
the notebooks' entry point (committed tables first, else compute the missing runs and collect)."""
from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .config import RunConfig
from .execute import resolve_device, run
from .paths import default_runs_root
from .store import RunLocked, collect, committed_table, error_line, run_state
from .sweepfile import Sweep, as_sweep

__all__ = ["EXECUTORS", "sweep", "results", "run_guarded"]

EXECUTORS = ("local", "slurm", "submitit-local", "submitit-debug")


def run_guarded(cfg_dict: dict, root: str, device: str, progress: bool = False) -> tuple[str, str, str]:
    """Worker: run one config; never raises. Returns (key, status, error line)."""
    cfg = RunConfig.from_dict(cfg_dict)
    try:
        run(cfg, root, device=device, progress=progress)
        return cfg.key, "done", ""
    except RunLocked as exc:
        return cfg.key, "running", str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded in the run folder by run()
        return cfg.key, "failed", f"{type(exc).__name__}: {exc}"


_WORKER_DEVICE = "cpu"


def _pool_init(device_queue, threads: int) -> None:
    global _WORKER_DEVICE
    import torch
    torch.set_num_threads(max(1, threads))
    _WORKER_DEVICE = device_queue.get() if device_queue is not None else "cpu"


def _pool_run(cfg_dict: dict, root: str) -> tuple[str, str, str]:
    return run_guarded(cfg_dict, root, _WORKER_DEVICE, False)


def sweep(spec: str | Path | Mapping | Sweep, scale: str = "small", root: str | Path | None = None,
          executor: Any = "local", jobs: int = 1, *, device: str = "auto", slots_per_gpu: int = 1,
          retry_failed: bool = False, progress: bool = True, submitit_params: Mapping | None = None,
          submitit_folder: str | Path | None = None, wait_running: bool = True, poll_s: float = 2.0) -> pd.DataFrame:
    """Run every configuration of a sweep that is not finished; return one row per config
    (key, net, status in {done, failed, running, pending}, error, run_dir).

    The sweep is validated first (:meth:`Sweep.validate`: unknown networks fail before any training).
    Finished runs are skipped untouched; interrupted ones are redone; failed ones are skipped unless
    ``retry_failed`` (their traceback stays in ``error.txt``); a failing run never stops the sweep. Runs
    that another live process is computing (lock file) are waited for if ``wait_running`` (default), so
    that two notebooks sharing runs both see them finished.

    ``executor``: ``"local"`` (``jobs`` = 1: sequential in this process; > 1: worker processes, at most
    ``slots_per_gpu`` concurrent runs per visible GPU on CUDA), ``"slurm"`` (submitit AutoExecutor job
    array, ``submitit_params`` passed to ``update_parameters``, e.g. ``timeout_min``, ``slurm_partition``,
    ``gpus_per_node``; ``jobs`` > 1 sets the array parallelism), ``"submitit-local"`` / ``"submitit-debug"``
    (submitit's LocalExecutor / DebugExecutor, for testing; the local one is throttled to ``jobs`` at a
    time), or any submitit ``Executor`` instance.
    """
    sw = as_sweep(spec, scale).validate()
    root = Path(root or default_runs_root())
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    states = {c.key: run_state(root / c.key) for c in sw.configs}
    todo = [c for c in sw.configs if states[c.key] in ("pending", "interrupted")
            or (retry_failed and states[c.key] == "failed")]
    outcome: dict[str, tuple[str, str]] = {}
    from tqdm.auto import tqdm
    bar = tqdm(total=len(todo), desc=f"{sw.name}/{sw.scale}", unit="run", disable=not progress or not todo)
    args = [(c.to_dict(), str(root)) for c in todo]
    if isinstance(executor, str) and executor == "local":
        dev = resolve_device(device)
        if jobs == 1 or len(todo) <= 1:
            for a in args:
                k, st, err = run_guarded(*a, dev, progress)
                outcome[k] = (st, err)
                bar.update()
        else:
            outcome.update(_local_pool(args, dev, jobs, slots_per_gpu, bar))
    else:
        outcome.update(_submitit_map(args, executor, jobs, device, root, submitit_params, submitit_folder, bar))
    bar.close()
    if wait_running:  # runs another live process is computing (e.g. a notebook sharing them): wait for them
        busy = [c.key for c in sw.configs if outcome.get(c.key, ("running",))[0] == "running"
                and run_state(root / c.key) == "running"]
        if busy and progress:
            print(f"{sw.name}/{sw.scale}: waiting for {len(busy)} run(s) computed by another process", file=sys.stderr)
        while busy:
            time.sleep(poll_s)
            busy = [k for k in busy if run_state(root / k) == "running"]
        for k, (st, _) in list(outcome.items()):
            if st == "running":
                outcome[k] = (run_state(root / k), "")
    rows = []
    for c in sw.configs:
        st, err = outcome.get(c.key, (None, ""))
        st = st or run_state(root / c.key)
        rows.append({"key": c.key, "net": c.net, "status": "pending" if st == "interrupted" else st,
                     "error": err or (error_line(root / c.key) if st == "failed" else ""),
                     "run_dir": str(root / c.key)})
    out = pd.DataFrame(rows, columns=["key", "net", "status", "error", "run_dir"])
    n_failed = int((out.status == "failed").sum())
    if n_failed and progress:
        print(f"{sw.name}/{sw.scale}: {n_failed} failed run(s); see error.txt in:\n  "
              + "\n  ".join(out.run_dir[out.status == "failed"]), file=sys.stderr)
    return out


_run_sweep = sweep  # `results` takes a parameter named sweep


def _local_pool(args: list, device: str, jobs: int, slots_per_gpu: int, bar) -> dict:
    import concurrent.futures as cf
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    queue = None
    if device.startswith("cuda"):
        import torch
        gpus = [device] if ":" in device else [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        slots = [g for _ in range(max(1, slots_per_gpu)) for g in gpus]
        jobs = min(jobs, len(slots))
        queue = ctx.Queue()
        for g in slots[:jobs]:
            queue.put(g)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    out = {}
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_pool_init,
                                initargs=(queue, threads)) as pool:
        futs = {pool.submit(_pool_run, *a): a for a in args}
        for f in cf.as_completed(futs):
            try:
                k, st, err = f.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (e.g. killed): the run is not done
                k, st, err = RunConfig.from_dict(futs[f][0]).key, "failed", f"worker died: {exc}"
            out[k] = (st, err)
            bar.update()
    return out


def _submitit_map(args: list, executor: Any, jobs: int, device: str, root: Path, params: Mapping | None,
                  folder: str | Path | None, bar) -> dict:
    import submitit  # only needed here
    folder = Path(folder or root / "_submitit")
    throttle = False
    if isinstance(executor, str):
        if executor == "slurm":
            ex = submitit.AutoExecutor(folder=folder)
            if jobs > 1:
                ex.update_parameters(slurm_array_parallelism=jobs)
        elif executor == "submitit-local":
            ex, throttle = submitit.LocalExecutor(folder=folder), True
        elif executor == "submitit-debug":
            ex = submitit.DebugExecutor(folder=folder)
        else:
            raise ValueError(f"executor must be one of {EXECUTORS} or a submitit Executor, got {executor!r}")
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
        js = ex.map_array(run_guarded, [a[0] for a in part], [a[1] for a in part], [device] * len(part),
                          [False] * len(part))
        for a, j in zip(part, js):
            try:
                k, st, err = j.result()
            except Exception as exc:  # noqa: BLE001 - the job itself failed (killed, timeout...)
                k, st, err = RunConfig.from_dict(a[0]).key, "failed", f"job failed: {str(exc)[-500:]}"
            out[k] = (st, err)
            bar.update()
    return out


def results(sweep: str | Path | Mapping | Sweep, scale: str = "small", table: str = "output", *,
            runs_root: str | Path | None = None, results_root: str | Path | None = None,
            run_missing: bool = True, device: str = "auto", jobs: int = 1, progress: bool = True) -> pd.DataFrame:
    """The notebooks' entry point: the tidy ``table`` of ``sweep`` at ``scale``.

    1. ``<results_root>/<sweep>/<scale>/<table>.parquet`` if committed (e.g. produced on a GPU), else
    2. run the sweep's missing and failed runs (if ``run_missing``; progress bar) under ``runs_root`` and
    3. :func:`~stabkit.runs.store.collect` them. Warns if some runs failed; raises ``RuntimeError`` if
    nothing is available.
    """
    sw = as_sweep(sweep, scale)
    committed = committed_table(sw, table, results_root)
    if committed.is_file():
        return pd.read_parquet(committed)
    if run_missing:
        rep = _run_sweep(sw, sw.scale, runs_root, jobs=jobs, device=device, progress=progress, retry_failed=True)
        failed = rep[rep.status == "failed"]
        if len(failed):
            warnings.warn(f"{len(failed)} of {len(rep)} runs of {sw.name}/{sw.scale} failed: "
                          f"{'; '.join(failed.error.astype(str).str[:200])}", stacklevel=2)
    df = collect(runs_root, table, sw)
    if df.empty:
        raise RuntimeError(f"no {table!r} table for sweep {sw.name!r} at scale {sw.scale!r}: not committed under "
                           f"{committed.parent} and no finished run under {runs_root or default_runs_root()}"
                           + ("" if run_missing else " (run_missing=False)"))
    return df
