"""The campaign's worker processes: each runs the runs it is sent, reports their outcome and peak memory, and
exits after a CUDA failure that breaks its context (:class:`WorkerPool` respawns it).
"""
from __future__ import annotations

import gc
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import resource
import time
from collections.abc import Sequence

import torch

from ..runs.config import RunConfig

__all__ = ["failure_kind", "WorkerPool"]


#: Error text of a CUDA failure that leaves the process's CUDA context unusable (every later run in that
#: process would fail too): the worker reports the run, then exits, and is respawned.
_STICKY = ("CUDA error", "cudaError", "illegal memory access", "device-side assert", "CUBLAS_STATUS",
           "CUDNN_STATUS_EXECUTION_FAILED", "unspecified launch failure", "AcceleratorError")


def failure_kind(err: str) -> str:
    """``"oom"`` (out of memory: retried alone on the device), ``"sticky"`` (a broken CUDA context: the
    worker is replaced and the run retried on another) or ``"run"`` (the run's own failure) for the error
    line of a failed run."""
    if "out of memory" in err or "OutOfMemoryError" in err:
        return "oom"
    return "sticky" if any(p in err for p in _STICKY) else "run"


def _memory(device: str) -> dict[str, float]:
    """Peak memory of this process since the last reset: ``peak_gpu_gib`` (torch's allocator, on CUDA) and
    ``peak_rss_gib`` (the process's resident set, never reset)."""
    out = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


def _release(device: str) -> None:
    """Give the caching allocator's unused blocks back to the device after a run, so that a finished run's
    float64 measurement (up to ~19 GiB for ResNet50) does not stay reserved while the next runs start."""
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _worker(wid: int, device: str, threads: int, tasks, results) -> None:
    """A worker process: runs what ``tasks`` sends (``("run", cfg_dict, root)``, ``("throughput", ...)``,
    ``None`` to stop) and reports on ``results`` (the sending end of its own pipe): ``("run", wid, key,
    status, error, wall_s, memory)``.
    It exits after a run that broke its CUDA context (:func:`failure_kind` ``"sticky"``)."""
    torch.set_num_threads(max(1, threads))
    if device.startswith("cuda"):
        torch.zeros(1, device=device)  # the CUDA context now, not in the first run's time
    results.send(("ready", wid, os.getpid()))
    # here, not above: a spawned worker imports this module first and reports ready before the run stack loads
    from ..sweeps.worker import run_guarded
    while True:
        msg = tasks.get()
        if msg is None:
            return
        if msg[0] == "run":
            t = time.time()
            key, st, err = run_guarded(msg[1], msg[2], device, False, threads=threads)
            try:
                mem = _memory(device)
                _release(device)
            except Exception as exc:  # noqa: BLE001 - a broken context shows here too
                mem, err = {}, err or f"{type(exc).__name__}: {exc}"
                st = "failed" if st == "done" and failure_kind(err) == "sticky" else st
            results.send(("run", wid, key, st, err, time.time() - t, mem))
            if st == "failed" and failure_kind(err) == "sticky":
                return  # this process's CUDA context is unusable: the campaign starts a fresh worker
        elif msg[0] == "throughput":
            from .smoke import concurrent_rate  # here, not above: only the smoke test's throughput probe needs it
            try:
                rate = concurrent_rate(RunConfig.from_dict(msg[1]), device, msg[2], msg[3], msg[4])
                results.send(("throughput", wid, rate, ""))
            except Exception as exc:  # noqa: BLE001 - reported, the campaign goes on with 1 slot
                results.send(("throughput", wid, 0.0, f"{type(exc).__name__}: {exc}"))
            finally:
                _release(device)


class WorkerPool:
    """``n`` spawned worker processes, one task queue each, one result queue; killed by pid at the end.
    ``respawn(w)`` replaces a dead worker (a new process and task queue under the same id)."""

    def __init__(self, n: int, device: str, threads: int):
        self.ctx = mp.get_context("spawn")
        self.device, self.threads = device, threads
        # one result pipe per worker, not one queue for all: a worker killed while it held a shared queue's
        # write lock (SIGKILL right after a put) left every later put, a respawned worker's "ready"
        # included, blocked for good
        self.results: list = [None] * n
        self.tasks: list = [None] * n
        self.procs: list = [None] * n
        for i in range(n):
            self._start(i)
        self.ready: set[int] = set()
        self.busy: dict[int, tuple[str, float]] = {}   # worker -> (key, start time)
        self.respawned: dict[int, int] = {}

    def _start(self, i: int) -> None:
        self.tasks[i] = self.ctx.Queue()
        if self.results[i] is not None:
            self.results[i].close()
        self.results[i], send = self.ctx.Pipe(duplex=False)
        self.procs[i] = self.ctx.Process(target=_worker, args=(i, self.device, self.threads, self.tasks[i], send),
                                         daemon=True)
        self.procs[i].start()
        send.close()  # the child holds its end: the parent's reader then sees EOF when the child dies

    def alive(self, w: int) -> bool:
        return self.procs[w].is_alive()

    def exitcode(self, w: int) -> int | None:
        return self.procs[w].exitcode

    def respawn(self, w: int) -> None:
        """A fresh worker ``w`` in place of a dead (or broken) one."""
        old = self.procs[w]
        if old.is_alive():
            old.kill()  # our own child, by its process id
        old.join(timeout=5)
        self.ready.discard(w)
        self.busy.pop(w, None)
        self.respawned[w] = self.respawned.get(w, 0) + 1
        self._start(w)

    def get(self, timeout: float):
        """The next message of any worker, or ``None`` after ``timeout`` seconds (a dead worker's closed
        pipe is set aside; :meth:`alive` tells the caller)."""
        until = time.time() + max(0.01, timeout)
        while True:
            open_ = [c for c in self.results if c is not None and not c.closed]
            ready = mp_connection.wait(open_, timeout=max(0.0, until - time.time())) if open_ else []
            for conn in ready:
                try:
                    return conn.recv()
                except (EOFError, OSError):  # the worker died: nothing more will come from it
                    conn.close()
            if not open_:
                time.sleep(max(0.0, min(0.05, until - time.time())))
            if time.time() >= until:
                return None

    def wait_ready(self, ids: Sequence[int], until: float) -> None:
        """Wait until the workers ``ids`` are ready, or dead, or ``until``."""
        while time.time() < until:
            waiting = [w for w in ids if w not in self.ready and self.alive(w)]
            if not waiting:
                return
            msg = self.get(min(1.0, until - time.time()))
            if msg is not None and msg[0] == "ready":
                self.ready.add(msg[1])
            elif msg is not None:
                raise RuntimeError(f"unexpected worker message {msg[:2]}")

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()  # our own child, by its process id
        for p in self.procs:
            p.join(timeout=5)

    def close(self, until: float) -> None:
        for w, q in enumerate(self.tasks):
            if self.alive(w):
                q.put(None)
        for p in self.procs:
            p.join(timeout=max(0.1, until - time.time()))
        self.kill()
