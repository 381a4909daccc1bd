"""A campaign: as many missing figure runs as fit before a deadline, on a time-limited allocation.

``python -m stabkit campaign --deadline 540 --out DIR [--jobs N] [--device cuda] [--scale gpu]`` (or
:func:`campaign`) is meant for a GPU lent for minutes, or a cluster job with a wall-clock limit, that
returns only a few small files. It

1. runs a smoke test (at most ``smoke_seconds``, default 30 s; :mod:`~stabkit.runs.smoke`): versions,
   TF32 flags, one tiny run per task with and without the fast mode (fast only on CUDA), float64
   ``measure`` on the device against the CPU, a step-time probe per network family that replaces the time
   model's assumptions (:mod:`~stabkit.runs.timemodel`) and, on CUDA with ``jobs > 1``, the throughput of
   1, 2 and 4 concurrent runs, from which the number of runs sharing the GPU is chosen;
2. plans the configurations missing from ``results/`` (committed keys of every (sweep, scale)) in the
   priority order of :data:`STAGES`, seed 0 of every network of a stage before its second seed; a run
   shared between sweeps (Fig. 6 in Fig. 5, Fig. 3 in Fig. 1, ...) is computed once;
3. never starts a run whose estimated wall time would pass the deadline (a later, shorter run may start
   instead), and stops every run still going at the deadline;
4. after every finished run rewrites ``DIR/runs.tar`` atomically: ``manifest.json`` (``{"format": 1,
   "runs": {key: [[sweep, scale], ...]}, "created", "device"}``, every (sweep, scale) listing the run) and
   one folder ``<key>/`` per finished run with ``config.json``, ``status.json``, ``done`` and its
   ``*.parquet`` tables, never checkpoints; so a kill at the deadline still returns everything done.

``DIR`` holds at most five files: ``runs.tar``, ``campaign.log``, ``smoke.json``, ``gpu_trace.csv``
(``nvidia-smi`` polled every 2 s: utilisation and memory; on a machine without it, the load average) and
``timing.json`` (time-model estimates per stage and run, measured against actual). Runs and their
checkpoints live in a runs root outside ``DIR`` (``runs_root``, else ``$STABKIT_RUNS``, else a new
temporary folder). ``stabkit.runs.import_runs(DIR)`` merges the runs into ``results/``.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import os
import platform
import queue as _queue
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write, atomic_write_json
from .config import RunConfig
from .paths import sweeps_dir
from .resultstore import committed_keys
from .store import read_status, run_state
from .sweepfile import load_sweep, sweep_scales
from .timemodel import TimeModel, net_features

__all__ = ["STAGES", "MANIFEST_FORMAT", "PlanItem", "Plan", "make_plan", "pack_runs",
           "campaign", "estimate_plan"]

#: Format of ``manifest.json`` in ``runs.tar``.
MANIFEST_FORMAT = 1
#: Priority order: (label, sweep, filter on the configuration). Sweeps of ``sweeps/`` not named here come
#: last, in name order.
STAGES: tuple[tuple[str, str, Callable[[RunConfig], bool] | None], ...] = (
    ("Fig. 6", "fig6_layers_scale_detection", lambda c: c.ptr != 2048),  # the paper's Fig. 6 is ptr 1024
    ("Fig. 5 ptr 1024", "fig5_scale_detection", lambda c: c.ptr != 2048),
    ("Fig. 3", "fig3_layers_cifar", None),
    ("Fig. 2", "fig2_laplacian_spectra", lambda c: c.ptr != 2048),
    ("Fig. 5 ptr 2048", "fig5_scale_detection", None),
    ("1-D appendix", "appendix_scale_detection_1d", None),
    ("Fig. 1 noise 0 and 30", "fig1_noise_corrupted_cifar", lambda c: c.noise_std in (0.0, 30.0)),
    ("Fig. 1", "fig1_noise_corrupted_cifar", None),
    ("probes: rotation", "probe_rotation", None),
    ("probes: resolution", "probe_resolution", None),
    ("probes: masking", "probe_masking", None),
    ("probes: patch shuffle", "probe_patch_shuffle", None),
)
_MAX_DIR_FILES = 5
_TABLE_FILES = ("config.json", "status.json", "done")


# ---------------------------------------------------------------------------------------- the plan


@dataclass
class PlanItem:
    """One run of the plan: its stage label, configuration and the (sweep, scale) pairs that list it."""
    stage: str
    cfg: RunConfig
    members: list[tuple[str, str]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.cfg.key


@dataclass
class Plan:
    """``items`` (every run of the selected stages, in priority order, unique), ``todo`` (their keys
    neither committed nor finished in the runs root), ``done`` (finished in the runs root, not committed),
    ``committed`` (keys), ``stages`` (per stage: label, sweep, runs, committed, done, todo), ``notes``."""
    scale: str
    items: list[PlanItem]
    todo: list[str]
    done: list[str]
    committed: set[str]
    stages: list[dict[str, Any]]
    members: dict[str, list[tuple[str, str]]]
    notes: list[str]

    def item(self, key: str) -> PlanItem:
        index = self.__dict__.get("_index")
        if index is None or len(index) != len(self.items):  # the scheduler asks every second: no scan
            index = self.__dict__["_index"] = {i.key: i for i in self.items}
        return index[key]


def _all_sweeps() -> list[str]:
    return sorted(p.stem for p in sweeps_dir().glob("*.yaml"))


def _selected(only: Sequence[str] | None, sweep: str) -> bool:
    return not only or any(sweep == o or sweep.startswith(f"{o}_") for o in only)


def make_plan(scale: str, *, only: Sequence[str] | None = None, runs_root: str | Path | None = None,
              results_root: str | Path | None = None, skip_tasks: Sequence[str] = ()) -> Plan:
    """The campaign's runs at ``scale`` in priority order (see the module text). ``only``: sweep names
    (or prefixes such as ``fig6``); ``skip_tasks``: tasks that cannot run here (e.g. ``cifar10`` without
    the data set)."""
    notes: list[str] = []
    members: dict[str, list[tuple[str, str]]] = {}
    loaded: dict[str, list[RunConfig]] = {}
    for name in _all_sweeps():
        if scale not in sweep_scales(name):
            continue
        sw = load_sweep(name, scale).validate()
        loaded[name] = sw.configs
        for c in sw.configs:
            members.setdefault(c.key, []).append((name, scale))
    committed: set[str] = set()
    for name in loaded:
        committed |= committed_keys(name, scale, results_root)
    stages = list(STAGES) + [(f"other: {n}", n, None) for n in loaded if n not in {s[1] for s in STAGES}]
    root = Path(runs_root) if runs_root else None
    items: dict[str, PlanItem] = {}
    rows = []
    for label, name, where in stages:
        if not _selected(only, name):
            continue
        if name not in loaded:
            notes.append(f"{label}: sweep {name} has no scale {scale!r} (skipped)")
            continue
        cfgs = [c for c in loaded[name] if where is None or where(c)]
        skipped = [c for c in cfgs if c.task in skip_tasks]
        if skipped:
            notes.append(f"{label}: {len(skipped)} run(s) of task(s) {sorted({c.task for c in skipped})} "
                         "cannot run here (skipped)")
        cfgs = [c for c in cfgs if c.task not in skip_tasks]
        # seed 0 of every network before any second seed (stable: grid order otherwise)
        cfgs = sorted(cfgs, key=lambda c: c.seed)
        new = [c for c in cfgs if c.key not in items]
        for c in new:
            items[c.key] = PlanItem(label, c, members.get(c.key, [(name, scale)]))
        n_comm = sum(c.key in committed for c in cfgs)
        n_done = sum(c.key not in committed and root is not None and run_state(root / c.key) == "done"
                     for c in cfgs)
        rows.append({"stage": label, "sweep": name, "runs": len(cfgs), "new_in_stage": len(new),
                     "committed": n_comm, "done_in_runs_root": n_done, "todo": len(cfgs) - n_comm - n_done})
    todo, done = [], []
    for k, it in items.items():
        if k in committed:
            continue
        if root is not None and run_state(root / k) == "done":
            done.append(k)
        else:
            todo.append(k)
    return Plan(scale, list(items.values()), todo, done, committed, rows, members, notes)


def estimate_plan(plan: Plan, model: TimeModel, slots: int = 1) -> dict[str, Any]:
    """Time-model estimates of a plan: per stage (runs to do, serial seconds, wall seconds with ``slots``
    runs sharing the device, counting each shared run once, in the first stage that lists it) and per run."""
    per_run = {}
    trained = {plan.item(k).cfg.training_key for k in plan.done}
    for k in plan.todo:  # in priority order: a network is trained by the first run that needs it
        it = plan.item(k)
        reuse = it.cfg.training_key in trained
        trained.add(it.cfg.training_key)
        p = model.parts(it.cfg, reuse)
        per_run[it.key] = {"stage": it.stage, "net": it.cfg.net, "seed": it.cfg.seed, "task": it.cfg.task,
                           "reuses_training": reuse, **{k: round(v, 3) for k, v in p.items()},
                           "wall_with_slots": round(model.estimate(it.cfg, slots, reuse) / max(1, slots), 3)}
    stages = []
    for row in plan.stages:
        mine = [r for r in per_run.values() if r["stage"] == row["stage"]]
        serial = sum(r["total"] for r in mine)
        stages.append({**row, "estimate_serial_s": round(serial, 1),
                       "estimate_wall_s": round(sum(r["wall_with_slots"] for r in mine), 1)})
    total = sum(r["total"] for r in per_run.values())
    return {"scale": plan.scale, "slots": slots, "stages": stages, "runs": per_run,
            "total_serial_s": round(total, 1),
            "total_wall_s": round(sum(r["wall_with_slots"] for r in per_run.values()), 1)}


# --------------------------------------------------------------------------------------- packing
def pack_runs(out: str | Path, runs_root: str | Path, keys: Sequence[str],
              members: dict[str, list[tuple[str, str]]], device: str) -> Path:
    """Write ``out`` (a ``.tar``) atomically: ``manifest.json`` and, per finished run of ``keys``, the
    folder ``<key>/`` with ``config.json``, ``status.json``, ``done`` and ``*.parquet`` (never ``*.pt``)."""
    runs_root = Path(runs_root)
    finished = [k for k in keys if (runs_root / k / "done").exists()]
    manifest = {"format": MANIFEST_FORMAT,
                "runs": {k: [list(m) for m in members.get(k, [])] for k in finished},
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "device": device}

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w") as tar:
            blob = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mtime = len(blob), int(time.time())
            tar.addfile(info, io.BytesIO(blob))
            for k in finished:
                d = runs_root / k
                for f in sorted(d.iterdir()):
                    if f.is_file() and (f.name in _TABLE_FILES or f.suffix == ".parquet"):
                        tar.add(f, arcname=f"{k}/{f.name}", recursive=False)
    return atomic_write(out, write)


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


# ----------------------------------------------------------------------------------------- workers
def _worker(wid: int, device: str, threads: int, tasks, results) -> None:
    """A worker process: runs what ``tasks`` sends (``("run", cfg_dict, root)``, ``("throughput", ...)``,
    ``None`` to stop) and reports on ``results``."""
    import torch
    torch.set_num_threads(max(1, threads))
    if device.startswith("cuda"):
        torch.zeros(1, device=device)  # the CUDA context now, not in the first run's time
    results.put(("ready", wid, os.getpid()))
    from .executors import run_guarded
    while True:
        msg = tasks.get()
        if msg is None:
            return
        if msg[0] == "run":
            t = time.time()
            key, st, err = run_guarded(msg[1], msg[2], device, False, threads=threads)
            results.put(("run", wid, key, st, err, time.time() - t))
        elif msg[0] == "throughput":
            from .smoke import concurrent_rate
            try:
                rate = concurrent_rate(RunConfig.from_dict(msg[1]), device, msg[2], msg[3], msg[4])
                results.put(("throughput", wid, rate, ""))
            except Exception as exc:  # noqa: BLE001 - reported, the campaign goes on with 1 slot
                results.put(("throughput", wid, 0.0, f"{type(exc).__name__}: {exc}"))


class _Pool:
    """``n`` spawned worker processes, one task queue each, one result queue; killed by pid at the end."""

    def __init__(self, n: int, device: str, threads: int):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.tasks = [ctx.Queue() for _ in range(n)]
        self.procs = [ctx.Process(target=_worker, args=(i, device, threads, self.tasks[i], self.results),
                                  daemon=True) for i in range(n)]
        for p in self.procs:
            p.start()
        self.ready: set[int] = set()
        self.busy: dict[int, tuple[str, float]] = {}   # worker -> (key, start time)

    def get(self, timeout: float):
        try:
            return self.results.get(timeout=max(0.01, timeout))
        except _queue.Empty:
            return None

    def wait_ready(self, ids: Sequence[int], until: float) -> None:
        while not set(ids) <= self.ready and time.time() < until:
            msg = self.get(until - time.time())
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
        for q in self.tasks:
            q.put(None)
        for p in self.procs:
            p.join(timeout=max(0.1, until - time.time()))
        self.kill()


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
             reserve: float | None = None, echo: bool = True, started: float | None = None) -> dict[str, Any]:
    """Run the campaign (see the module text) and return its summary (also in ``timing.json``).

    Args:
        out: ``DIR``: at most five files are written there (it may exist; other files are left alone).
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
    """
    t0 = time.time() if started is None else float(started)
    from . import smoke as S
    from .execute import resolve_device
    hard = t0 + float(deadline)
    if deadline <= 0:
        raise ValueError(f"deadline must be > 0 seconds, got {deadline!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
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
    model = TimeModel(dev)
    timing: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    try:
        n_workers = jobs
        threads = max(1, (os.cpu_count() or 1) // n_workers)
        pool = _Pool(n_workers, dev, threads)  # workers import torch while the smoke test runs
        smoke_until = t0 + min(float(smoke_seconds), 0.5 * deadline)
        report = S.smoke(dev, scale, runs_root, smoke_until, log)
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
        finished = list(plan.done)
        if finished:
            pack_runs(out / "runs.tar", runs_root, finished, plan.members, dev)
            log(f"packed {len(finished)} run(s) already finished in the runs root")
        _schedule(pool, plan, model, slots, runs_root, out, dev, finished, timing, t0, hard, reserve, log)
        summary = _summary(plan, finished, timing, t0)
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
        extra = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        known = {"runs.tar", "campaign.log", "smoke.json", "gpu_trace.csv", "timing.json"}
        if len([n for n in extra if n in known]) > _MAX_DIR_FILES:  # pragma: no cover - by construction
            raise RuntimeError(f"campaign wrote more than {_MAX_DIR_FILES} files into {out}")
    return summary


def _schedule(pool: _Pool, plan: Plan, model: TimeModel, slots: int, runs_root: Path, out: Path, dev: str,
              finished: list[str], timing: dict, t0: float, hard: float, reserve: float, log) -> None:
    """Start runs in priority order on free workers while their estimate fits before ``hard - reserve``;
    pack after each finished run; kill what still runs at ``hard - 1 s``."""
    queue = list(plan.todo)
    tkey = {k: plan.item(k).cfg.training_key for k in (*plan.todo, *finished)}  # hashed once, not every poll
    trained = {tkey[k] for k in finished}  # networks a run can reuse (find_trained)
    stop_at = hard - reserve
    kill_at = hard - 1.0
    workers = list(range(min(slots, len(pool.procs))))
    runs = timing["runs"]
    while True:
        now = time.time()
        free = [w for w in workers if w in pool.ready and w not in pool.busy]
        for w in free:
            in_use = len(pool.busy) + 1
            training = {tkey[b] for b, _ in pool.busy.values()}
            pick = None
            for k in queue:
                tk = tkey[k]
                if tk in training and tk not in trained:
                    continue  # its network is being trained by a busy worker: wait and reuse it
                est = model.estimate(plan.item(k).cfg, in_use, tk in trained)
                if now + est <= stop_at:
                    pick = (k, est)
                    break
            if pick is None:
                break
            k, est = pick
            if k != queue[0]:
                log(f"{queue[0]} ({plan.item(queue[0]).cfg.net}) does not fit before the deadline; "
                    f"starting the next that does")
            queue.remove(k)
            cfg = plan.item(k).cfg
            pool.tasks[w].put(("run", cfg.to_dict(), str(runs_root)))
            pool.busy[w] = (k, now)
            runs[k] = {"stage": plan.item(k).stage, "net": cfg.net, "seed": cfg.seed, "estimate_s": round(est, 2),
                       "started_s": round(now - t0, 2), "status": "running", "worker": w, "concurrent": in_use}
            log(f"start {k} {plan.item(k).stage}: {cfg.net} seed {cfg.seed} on worker {w}, "
                f"estimate {est:.1f} s")
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
        msg = pool.get(min(1.0, kill_at - time.time()))
        if msg is None:
            continue
        if msg[0] == "ready":
            pool.ready.add(msg[1])
            continue
        if msg[0] != "run":
            continue
        _, w, k, st, err, wall = msg
        pool.busy.pop(w, None)
        cfg = plan.item(k).cfg
        runs[k].update(status=st, wall_s=round(wall, 2), finished_s=round(time.time() - t0, 2))
        if st == "done":
            st = read_status(runs_root / k)
            epochs = _epochs_run(st)
            runs[k].update(epochs_run=epochs, trained_by=st.get("trained_by") or "")
            model.observe(cfg, wall, epochs, runs[k].get("concurrent", 1), bool(runs[k]["trained_by"]))
            trained.add(tkey[k])
            finished.append(k)
            size = pack_runs(out / "runs.tar", runs_root, finished, plan.members, dev).stat().st_size
            if size > 14 * 2**20:
                log(f"WARNING: runs.tar is {size / 2**20:.1f} MiB (a lent GPU returns files of at most 16 MiB)")
            log(f"done  {k} {cfg.net} seed {cfg.seed}: {wall:.1f} s (estimate {runs[k]['estimate_s']} s), "
                f"{epochs} epoch(s); runs.tar holds {len(finished)} run(s)")
        else:
            runs[k]["error"] = err[:500]
            log(f"FAILED {k} {cfg.net} seed {cfg.seed} ({st}): {err[:300]}")
        atomic_write_json(out / "timing.json", {**timing, "model": model.to_dict()})


def _epochs_run(status: dict) -> int | None:
    try:
        return int(status.get("epochs_run"))
    except (ValueError, TypeError):
        return None


def _summary(plan: Plan, finished: list[str], timing: dict, t0: float) -> dict[str, Any]:
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
            "wall_s": round(time.time() - t0, 2)}


def features_table(cfgs: Sequence[RunConfig]) -> list[dict[str, Any]]:
    """Net features (family, MACs, leaf modules) of each configuration (for reports)."""
    return [{"key": c.key, "net": c.net, **net_features(c)} for c in cfgs]
