"""The local process pool of a sweep (``executor="local"``, ``jobs > 1``): spawned workers, each bound to one
device slot, that die with the sweep process that started them (Linux: ``PR_SET_PDEATHSIG``; elsewhere a
watchdog thread), so that a killed sweep leaves no process holding memory or a GPU; Ctrl-C stops them and
their runs stay resumable.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from ..runs.config import RunConfig
from .worker import run_guarded

__all__ = ["local_pool"]

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


def local_pool(args: list, device: str, jobs: int, slots_per_gpu: int, threads: int, bar) -> dict:
    """Run ``args`` (``(config dict, runs root, force)`` each) in at most ``jobs`` spawned worker processes (on
    CUDA at most ``slots_per_gpu`` per visible GPU, each worker bound to one), ``threads`` torch threads each;
    returns key -> (status, error) and ticks ``bar`` per run. Ctrl-C stops the workers, leaving their runs
    resumable."""
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
