"""A campaign: as many missing figure runs as fit before a deadline, on a time-limited allocation.

``python -m stabkit campaign --deadline 540 --out DIR [--jobs N] [--device cuda] [--scale gpu]`` (or
``campaign()``) is meant for a GPU lent for minutes, or a cluster job with a wall-clock limit, that
returns only a few small files. It

1. runs a smoke test (at most ``smoke_seconds``, default 30 s; :mod:`~stabkit.campaign.smoke`): versions,
   TF32 flags, one tiny run per task with and without the fast mode (fast only on CUDA), float64
   ``measure`` on the device against the CPU, a step-time probe per network family that replaces the time
   model's assumptions (:mod:`~stabkit.campaign.timemodel`) and, on CUDA with ``jobs > 1``, the throughput of
   1, 2 and 4 concurrent runs, from which the number of runs sharing the GPU is chosen;
2. plans the configurations missing from ``results/`` (a key committed at any (sweep, scale) is done:
   it is the same configuration) in the priority order of the sweep files' ``campaign.stages``, seed 0 of every network of a stage before its second seed; a run
   shared between sweeps (Fig. 6 in Fig. 5, Fig. 3 in Fig. 1, ...) is computed once;
3. never starts a run whose estimated wall time would pass the deadline (a later, shorter run may start
   instead), and stops every run still going at the deadline;
4. after every finished run rewrites the last part of the packed runs atomically (``Packer``:
   ``DIR/runs.tar.gz``, then ``runs-2.tar.gz``, ... once a part would pass 14 MiB), each a gzip tar of
   ``manifest.json`` (``{"format": 1, "runs": {key: [[sweep, scale], ...]}, "created", "device", "git":
   {"commit", "dirty"}}``, every (sweep, scale) listing the run) and one folder ``<key>/`` per finished run
   with ``config.json``, ``status.json``, ``done`` and its ``*.parquet`` tables, never checkpoints; so a
   kill at the deadline still returns everything done;
5. watches its workers: a dead one (killed, segfault, CUDA failing in the child, a broken CUDA context) is
   logged and respawned once, the run it held retried once on another worker; a run out of device memory
   is retried once alone on the device; each worker empties the CUDA cache after every run and reports
   its peak memory (``timing.json``: ``runs.<key>.peak_gpu_gib``, ``summary.peak_gpu_gib``).

``DIR`` holds the parts ``runs*.tar.gz`` (one for a few hundred runs) and four files: ``campaign.log``,
``smoke.json``, ``gpu_trace.csv``
(``nvidia-smi`` polled every 2 s: utilisation and memory; on a machine without it, the load average) and
``timing.json`` (time-model estimates per stage and run, measured against actual). Runs and their
checkpoints live in a runs root outside ``DIR`` (``runs_root``, else ``$STABKIT_RUNS``, else a new
temporary folder). ``stabkit.sweeps.import_runs(DIR)`` merges the runs into ``results/``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..runs.config import RunConfig
from ..runs.execute import resolve_device
from ..runs.folder import read_status
from . import smoke as S
from .packing import MAX_PARTS, PART_LIMIT, Packer
from .plan import Plan, check_options, estimate_plan, make_plan, zero_loss_epochs
from .timemodel import TimeModel, net_features
from .workers import WorkerPool, failure_kind

__all__ = ["campaign", "features_table"]

#: Longest wait for the CIFAR-10 decoding before the first run (then each worker decodes it itself).
_CIFAR_WAIT_S = 120.0


# ------------------------------------------------------------------------------------ GPU trace
class _Trace(threading.Thread):
    """Polls ``nvidia-smi`` every ``every`` seconds into a CSV (else the load average, with a note)."""

    def __init__(self, path: Path, t0: float, every: float = 2.0):
        super().__init__(daemon=True)
        self.path, self.t0, self.every = path, t0, every
        self.stop = threading.Event()
        self.smi = shutil.which("nvidia-smi")

    def run(self) -> None:
        with open(self.path, "w", buffering=1) as fh:
            if self.smi:
                fh.write("t_s,gpu,util_gpu_pct,util_mem_pct,mem_used_mib,mem_total_mib,power_w\n")
            else:
                fh.write("# no nvidia-smi on this machine: no GPU trace; CPU load average instead\n"
                         "t_s,load_1min,load_5min\n")
            while not self.stop.is_set():
                t = time.time() - self.t0
                if self.smi:
                    try:
                        res = subprocess.run([self.smi, "--query-gpu=index,utilization.gpu,utilization.memory,"
                                              "memory.used,memory.total,power.draw",
                                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                             timeout=5)
                        for line in res.stdout.strip().splitlines():
                            fh.write(f"{t:.1f}," + ",".join(v.strip() for v in line.split(",")) + "\n")
                    except (OSError, subprocess.SubprocessError) as exc:
                        fh.write(f"# {t:.1f}: nvidia-smi failed: {exc}\n")
                else:
                    try:
                        l1, l5, _ = os.getloadavg()
                        fh.write(f"{t:.1f},{l1:.2f},{l5:.2f}\n")
                    except OSError:
                        pass
                self.stop.wait(self.every)


# ------------------------------------------------------------------------------------- the campaign
class _Log:
    def __init__(self, path: Path, t0: float, echo: bool):
        self.fh = open(path, "a", buffering=1)
        self.t0, self.echo = t0, echo

    def __call__(self, text: str) -> None:
        line = f"[{time.time() - self.t0:7.1f} s] {text}"
        self.fh.write(line + "\n")
        if self.echo:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.fh.close()


def campaign(out: str | Path, deadline: float, *, jobs: int = 1, device: str = "auto", scale: str = "gpu",
             only: Sequence[str] | None = None, runs_root: str | Path | None = None,
             results_root: str | Path | None = None, smoke_seconds: float = 30.0, deterministic: bool = False,
             reserve: float | None = None, echo: bool = True, started: float | None = None,
             part_limit: int = PART_LIMIT) -> dict[str, Any]:
    """Run the campaign (see the module text) and return its summary (also in ``timing.json``).

    Args:
        out: ``DIR``: the packed runs and four files are written there (it may exist; other files are left
            alone).
        deadline: seconds from the call after which no run is running and every file is final.
        jobs: worker processes; on CUDA the runs sharing the GPU are chosen from measured throughput (at
            most ``jobs``); on the CPU all ``jobs`` run, sharing the cores.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        scale: the sweeps' scale (``gpu`` on a GPU; ``tiny`` for a rehearsal).
        only: sweep names or prefixes (``fig6``, ``fig5_scale_detection``) to restrict the stages.
        runs_root: run folders and checkpoints (default ``$STABKIT_RUNS``, else a new temporary folder);
            never inside ``out``.
        results_root: committed results (default ``$STABKIT_RESULTS``, else ``<repo>/results``).
        smoke_seconds: budget of the smoke test (its remaining parts are skipped once it is spent).
        deterministic: train in deterministic mode (``STABKIT_DETERMINISTIC=1`` in the workers; slower on CUDA).
        reserve: seconds kept free before the deadline for the last packing (default 2 % of it, >= 2 s).
        started: when the deadline's clock started (``time.time()``; default: now), e.g. the process start.
        part_limit: bytes after which a part of the packed runs is closed (``Packer``).
    """
    t0 = time.time() if started is None else float(started)
    check_options(deadline, jobs=jobs, device=device, scale=scale, only=only, smoke_seconds=smoke_seconds,
                  reserve=reserve, out=out, runs_root=runs_root)
    hard = t0 + float(deadline)
    dev = resolve_device(device)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if runs_root is None:
        runs_root = os.environ.get("STABKIT_RUNS") or tempfile.mkdtemp(prefix="stabkit-campaign-runs-")
    runs_root = Path(runs_root).resolve()
    if runs_root == out or out in runs_root.parents:
        raise ValueError(f"runs_root {runs_root} must not be inside out {out} (checkpoints never go there)")
    runs_root.mkdir(parents=True, exist_ok=True)
    if os.environ.get("STABKIT_DATA"):  # a relative data path keeps working in the workers
        os.environ["STABKIT_DATA"] = str(Path(os.environ["STABKIT_DATA"]).expanduser().resolve())
    if deterministic:
        os.environ["STABKIT_DETERMINISTIC"] = "1"
    reserve = max(2.0, 0.02 * deadline) if reserve is None else float(reserve)
    log = _Log(out / "campaign.log", t0, echo)
    trace = _Trace(out / "gpu_trace.csv", t0)
    trace.start()
    log(f"campaign: scale {scale}, device {dev}, jobs {jobs}, deadline {deadline:.0f} s, out {out}, "
        f"runs root {runs_root}, deterministic {deterministic}, host {platform.node()}")
    pool = None
    model = TimeModel(dev, zero_loss_epochs())
    timing: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    try:
        n_workers = jobs
        threads = max(1, (os.cpu_count() or 1) // n_workers)
        pool = WorkerPool(n_workers, dev, threads)  # workers import torch while the smoke test runs
        smoke_until = t0 + min(float(smoke_seconds), 0.5 * deadline)
        warmup = S.CifarWarmup() if S.cifar_presence()["available"] else None
        if warmup is not None:  # decoding starts now, beside the smoke test, not inside its budget
            warmup.start()
        report = S.smoke(dev, scale, runs_root, smoke_until, log, warmup=warmup)
        # decided from file names (smoke.cifar_presence), never from the time the smoke test had left
        skip_tasks = ["cifar10"] if not report.get("cifar10_available", True) else []
        plan = make_plan(scale, only=only, runs_root=runs_root, results_root=results_root, skip_tasks=skip_tasks)
        for n in plan.notes:
            log(f"plan: {n}")
        todo_cfgs = [plan.item(k).cfg for k in plan.todo]
        report["step_probes"] = S.probe_families(todo_cfgs, dev, model, smoke_until, log)
        slots = 1
        if dev.startswith("cuda") and jobs > 1 and todo_cfgs:
            pool.wait_ready(range(min(jobs, 4)), smoke_until + 10)
            slots, report["concurrency"] = S.choose_slots(pool, todo_cfgs, dev, jobs, model, log)
        elif not dev.startswith("cuda"):
            slots = jobs
            report["concurrency"] = {"note": f"on {dev}: jobs as given ({jobs}), no throughput test"}
        report["slots"] = slots
        S.fast_runs(report, dev, runs_root, smoke_until, log)
        report["seconds"] = round(time.time() - t0, 2)
        atomic_write_json(out / "smoke.json", report)
        est = estimate_plan(plan, model, slots)
        timing = {"device": dev, "scale": scale, "deadline_s": deadline, "slots": slots,
                  "plan": {"stages": est["stages"], "total_serial_s": est["total_serial_s"],
                           "total_wall_s": est["total_wall_s"], "todo": len(plan.todo),
                           "done_before": len(plan.done), "committed": len(plan.committed)},
                  "estimates": est["runs"], "model": model.to_dict(), "runs": {}}
        atomic_write_json(out / "timing.json", timing)
        for row in est["stages"]:
            log(f"plan: {row['stage']:24s} {row['runs']:4d} runs, {row['committed']:3d} committed, "
                f"{row['todo']:4d} to do, estimate {row['estimate_serial_s']:9.0f} s serial, "
                f"{row['estimate_wall_s']:9.0f} s with {slots} slot(s)")
        if warmup is not None and warmup.is_alive() and any(plan.item(k).cfg.task == "cifar10" for k in plan.todo):
            # the CIFAR-10 runs come first: let them read the cache rather than each decode the archive
            wait = max(0.0, min(_CIFAR_WAIT_S, hard - reserve - time.time()))
            log(f"waiting up to {wait:.0f} s for the CIFAR-10 decoding to finish")
            warmup.join(wait)
        if warmup is not None:
            report["cifar10"] = warmup.result or {"error": warmup.error, "decoding": warmup.is_alive()}
            atomic_write_json(out / "smoke.json", report)
            log(f"CIFAR-10 decoding: {report['cifar10']}")
        finished = list(plan.done)
        packer = Packer(out, runs_root, plan.members, dev, part_limit, log)
        if finished:
            packer.pack(finished)
            log(f"packed {len(finished)} run(s) already finished in the runs root")
        _schedule(pool, plan, model, slots, runs_root, packer, finished, timing, t0, hard, reserve, log)
        summary = _summary(plan, finished, timing, t0, packer)
        log(f"campaign done: {summary['finished']} run(s) finished, {summary['failed']} failed, "
            f"{summary['not_started']} not started, {time.time() - t0:.1f} s")
    finally:
        if pool is not None:
            pool.close(min(hard, time.time() + 3))
        trace.stop.set()
        trace.join(timeout=3)
        if timing:
            timing["summary"] = summary
            timing["model"] = model.to_dict()
            atomic_write_json(out / "timing.json", timing)
        log.close()
        n_parts = len(list(out.glob("runs*.tar.gz")))
        if n_parts > MAX_PARTS:
            log_line = (f"WARNING: {n_parts} parts of packed runs in {out}: a lent GPU returns at most 8 files, "
                        f"so fetch them in two calls or merge parts")
            print(log_line, file=sys.stderr)
    return summary


def _schedule(pool: WorkerPool, plan: Plan, model: TimeModel, slots: int, runs_root: Path, packer: Packer,
              finished: list[str], timing: dict, t0: float, hard: float, reserve: float, log) -> None:
    """Start runs in priority order on free workers while their estimate fits before ``hard - reserve``;
    pack after each finished run; kill what still runs at ``hard - 1 s``.

    Broken workers: a worker found dead (killed, segfault, CUDA initialisation failing in the child, or
    exiting after a sticky CUDA error) is logged and respawned once (a second death retires it; with no
    worker left the schedule ends at once); the run it held, or a run that failed on a broken CUDA context,
    is retried once on another worker. A run that ran out of device memory is retried once alone on the
    device (no other run starts while it runs)."""
    queue = list(plan.todo)
    tkey = {k: plan.item(k).cfg.training_key for k in (*plan.todo, *finished)}  # hashed once, not every poll
    trained = {tkey[k] for k in finished}  # networks a run can reuse (find_trained)
    stop_at = hard - reserve
    kill_at = hard - 1.0
    workers = list(range(min(slots, len(pool.procs))))
    runs = timing["runs"]
    retried: set[str] = set()
    alone: set[str] = set()       # ran out of device memory once: runs with no other run on the device
    avoid: dict[str, int] = {}    # run -> the worker it failed on
    events = timing.setdefault("workers", [])

    def retry(k: str, w: int, why: str, exclusive: bool = False) -> None:
        if k in retried or k in finished:
            log(f"{k}: not retried again ({why})")
            return
        retried.add(k)
        avoid[k] = w
        if exclusive:
            alone.add(k)
        queue.insert(0, k)
        runs[k]["retry"] = why
        log(f"{k}: retrying once{' alone on the device' if exclusive else ' on another worker'} ({why})")

    def handle(msg) -> None:
        """One worker message: ready, or a finished run (packed at once) or a failed one (retried or not)."""
        if msg is None:
            return
        if msg[0] == "ready":
            pool.ready.add(msg[1])
            return
        if msg[0] != "run":
            return
        _, w, k, st, err, wall, mem = msg
        if pool.busy.get(w, (None,))[0] != k:
            return  # a report from a worker already declared dead
        pool.busy.pop(w, None)
        cfg = plan.item(k).cfg
        runs[k].update(status=st, wall_s=round(wall, 2), finished_s=round(time.time() - t0, 2), **mem)
        if st == "done":
            status = read_status(runs_root / k)
            epochs = _epochs_run(status)
            runs[k].update(epochs_run=epochs, trained_by=status.get("trained_by") or "")
            model.observe(cfg, wall, epochs, runs[k].get("concurrent", 1), bool(runs[k]["trained_by"]))
            trained.add(tkey[k])
            finished.append(k)
            packed = packer.pack(finished)
            log(f"done  {k} {cfg.net} seed {cfg.seed}: {wall:.1f} s (estimate {runs[k]['estimate_s']} s), "
                f"{epochs} epoch(s), peak {_mem_text(mem)}; {len(finished)} run(s) packed in "
                f"{len(packed)} file(s), {sum(p.stat().st_size for p in packed) / 2**20:.2f} MiB")
        else:
            runs[k]["error"] = err[:500]
            kind = failure_kind(err)
            log(f"FAILED {k} {cfg.net} seed {cfg.seed} ({st}, {kind}): {err[:300]}")
            if st == "failed" and kind == "oom":
                retry(k, w, f"out of memory with {runs[k].get('concurrent', 1)} run(s) on the device", exclusive=True)
            elif st == "failed" and kind == "sticky":
                retry(k, w, f"broken CUDA context on worker {w}")
        atomic_write_json(packer.out / "timing.json", {**timing, "model": model.to_dict()})

    while True:
        now = time.time()
        for w in list(workers):  # dead workers: a run they held failed; respawned once
            if pool.alive(w):
                continue
            while w in pool.busy:  # what it reported before dying (a sticky CUDA error) comes first
                got = pool.get(0.2)
                if got is None:
                    break
                handle(got)
            code = pool.exitcode(w)
            job = pool.busy.pop(w, None)
            what = f"worker {w} died (exit code {code}" + (f", while running {job[0]})" if job else ")")
            events.append({"t_s": round(now - t0, 2), "worker": w, "exit_code": code, "run": job[0] if job else None})
            if job is not None:
                k, started = job
                runs[k].update(status="failed", error=what, wall_s=round(now - started, 2))
                log(f"FAILED {k} {plan.item(k).cfg.net}: {what}")
                retry(k, w, what)
            if pool.respawned.get(w, 0) < 1 and now < stop_at:
                log(f"{what}: respawning it once")
                pool.respawn(w)
            else:
                log(f"{what}: {'died again, ' if pool.respawned.get(w) else ''}not replaced")
                workers.remove(w)
        if not workers:
            log(f"no worker left: {len(queue)} run(s) not started")
            break
        free = [w for w in workers if w in pool.ready and w not in pool.busy]
        for w in free:
            if any(b in alone for b, _ in pool.busy.values()):
                break  # a run that ran out of memory holds the device alone
            in_use = len(pool.busy) + 1
            training = {tkey[b] for b, _ in pool.busy.values()}
            pick = None
            for k in queue:
                tk = tkey[k]
                if tk in training and tk not in trained:
                    continue  # its network is being trained by a busy worker: wait and reuse it
                if avoid.get(k) == w and len(workers) > 1:
                    continue  # retried elsewhere
                est = model.estimate(plan.item(k).cfg, 1 if k in alone else in_use, tk in trained)
                if now + est <= stop_at:
                    pick = (k, est)
                    break
            if pick is None:
                continue  # another free worker may take the run this one must not retry
            k, est = pick
            if k in alone and pool.busy:
                break  # wait for the device to empty
            if k != queue[0]:
                log(f"{queue[0]} ({plan.item(queue[0]).cfg.net}) does not fit before the deadline or waits; "
                    f"starting the next that does")
            queue.remove(k)
            cfg = plan.item(k).cfg
            pool.tasks[w].put(("run", cfg.to_dict(), str(runs_root)))
            pool.busy[w] = (k, now)
            prev = runs.get(k, {})
            runs[k] = {"stage": plan.item(k).stage, "net": cfg.net, "seed": cfg.seed, "estimate_s": round(est, 2),
                       "started_s": round(now - t0, 2), "status": "running", "worker": w, "concurrent": in_use,
                       **({"retry": prev["retry"], "first_error": prev.get("error")} if "retry" in prev else {})}
            log(f"start {k} {plan.item(k).stage}: {cfg.net} seed {cfg.seed} on worker {w}, "
                f"estimate {est:.1f} s{' (alone)' if k in alone else ''}")
        if not pool.busy:
            not_ready = [w for w in workers if w not in pool.ready]
            fits = any(now + model.estimate(plan.item(k).cfg, 1, tkey[k] in trained) <= stop_at for k in queue)
            if not queue or (not not_ready and not fits) or now >= stop_at:
                if queue:
                    log(f"{len(queue)} run(s) not started: none fits before the deadline")
                break
        if now >= kill_at:
            for w, (k, started) in list(pool.busy.items()):
                log(f"deadline: stopping {k} after {now - started:.1f} s (estimate {runs[k]['estimate_s']} s)")
                runs[k].update(status="killed at deadline", wall_s=round(now - started, 2))
            pool.busy.clear()
            pool.kill()
            break
        handle(pool.get(min(1.0, kill_at - time.time())))


def _mem_text(mem: dict) -> str:
    parts = [f"{mem['peak_gpu_gib']:.2f} GiB on the GPU"] if "peak_gpu_gib" in mem else []
    if "peak_rss_gib" in mem:
        parts.append(f"{mem['peak_rss_gib']:.2f} GiB resident")
    return ", ".join(parts) or "memory unknown"


def _epochs_run(status: dict) -> int | None:
    try:
        return int(status.get("epochs_run"))
    except (ValueError, TypeError):
        return None


def _summary(plan: Plan, finished: list[str], timing: dict, t0: float,
             packer: Packer | None = None) -> dict[str, Any]:
    runs = timing.get("runs", {})
    by_stage: dict[str, dict[str, int]] = {}
    for it in plan.items:
        if it.key in plan.committed:
            continue
        row = by_stage.setdefault(it.stage, {"todo": 0, "finished": 0})
        row["todo"] += 1
        row["finished"] += it.key in finished
    return {"finished": len(finished), "failed": sum(r.get("status") == "failed" for r in runs.values()),
            "killed": sum(r.get("status") == "killed at deadline" for r in runs.values()),
            "not_started": len([k for k in plan.todo if k not in runs]), "by_stage": by_stage,
            "retried": sum("retry" in r for r in runs.values()), "dead_workers": len(timing.get("workers", [])),
            "peak_gpu_gib": max((r["peak_gpu_gib"] for r in runs.values() if "peak_gpu_gib" in r), default=None),
            "peak_rss_gib": max((r["peak_rss_gib"] for r in runs.values() if "peak_rss_gib" in r), default=None),
            "packed": [p.name for p in sorted(packer.out.glob("runs*.tar.gz"))] if packer else [],
            "wall_s": round(time.time() - t0, 2)}


def features_table(cfgs: Sequence[RunConfig]) -> list[dict[str, Any]]:
    """Net features (family, MACs, leaf modules) of each configuration (for reports)."""
    return [{"key": c.key, "net": c.net, **net_features(c)} for c in cfgs]
