"""A campaign: as many missing figure runs as fit before a deadline, on a time-limited allocation.

``python -m stabkit campaign --deadline 540 --out DIR [--jobs N] [--device cuda] [--scale gpu]`` (or
:func:`campaign`) is meant for a GPU lent for minutes, or a cluster job with a wall-clock limit, that
returns only a few small files. It

1. runs a smoke test (at most ``smoke_seconds``, default 30 s; :mod:`~stabkit.runs.smoke`): versions,
   TF32 flags, one tiny run per task with and without the fast mode (fast only on CUDA), float64
   ``measure`` on the device against the CPU, a step-time probe per network family that replaces the time
   model's assumptions (:mod:`~stabkit.runs.timemodel`) and, on CUDA with ``jobs > 1``, the throughput of
   1, 2 and 4 concurrent runs, from which the number of runs sharing the GPU is chosen;
2. plans the configurations missing from ``results/`` (a key committed at any (sweep, scale) is done:
   it is the same configuration) in the priority order of :data:`STAGES`, seed 0 of every network of a stage before its second seed; a run
   shared between sweeps (Fig. 6 in Fig. 5, Fig. 3 in Fig. 1, ...) is computed once;
3. never starts a run whose estimated wall time would pass the deadline (a later, shorter run may start
   instead), and stops every run still going at the deadline;
4. after every finished run rewrites the last part of the packed runs atomically (:class:`Packer`:
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
temporary folder). ``stabkit.runs.import_runs(DIR)`` merges the runs into ``results/``.
"""
from __future__ import annotations

import datetime as _dt
import functools
import io
import json
import math
import os
import platform
import queue as _queue
import re
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
from .resultstore import committed_keys, committed_scales
from .store import git_state, read_status, run_state
from .sweepfile import load_sweep, sweep_scales
from .timemodel import TimeModel, net_features

__all__ = ["check_options", "simulate", "STAGES", "MANIFEST_FORMAT", "PART_LIMIT", "PlanItem", "Plan", "make_plan", "pack_runs", "Packer",
           "part_name", "failure_kind",
           "campaign", "estimate_plan"]

#: Format of ``manifest.json`` in the packed runs.
MANIFEST_FORMAT = 1

@functools.cache
def _nets_at(sweep: str, scale: str) -> frozenset[str]:
    """The networks of ``sweep``'s grid at ``scale`` (empty when the sweep lacks that scale)."""
    if scale not in sweep_scales(sweep):
        return frozenset()
    return frozenset(c.net for c in load_sweep(sweep, scale).configs)


#: Priority order: (label, sweep, filter on the configuration), the book's biggest gaps first: the CIFAR-10
#: claims (Fig. 3, Fig. 1), which a CPU cannot test, then the Fig. 5 networks the cpu scale lacks. Sweeps
#: of ``sweeps/`` not named here come last, in name order. A run is planned in the first stage listing it.
STAGES: tuple[tuple[str, str, Callable[[RunConfig], bool] | None], ...] = (
    ("Fig. 3", "fig3_layers_cifar", None),
    ("Fig. 1 noise 0", "fig1_noise_corrupted_cifar", lambda c: c.noise_std == 0.0),
    ("Fig. 1 noise 30", "fig1_noise_corrupted_cifar", lambda c: c.noise_std == 30.0),
    ("Fig. 5 nets not at cpu", "fig5_scale_detection",
     lambda c: c.ptr != 2048 and c.net not in _nets_at("fig5_scale_detection", "cpu")),
    ("Fig. 2", "fig2_laplacian_spectra", lambda c: c.ptr != 2048),
    ("Fig. 6", "fig6_layers_scale_detection", lambda c: c.ptr != 2048),  # the paper's Fig. 6 is ptr 1024
    ("Fig. 5 ptr 1024", "fig5_scale_detection", lambda c: c.ptr != 2048),
    ("Fig. 5 ptr 2048", "fig5_scale_detection", None),
    ("1-D appendix", "appendix_scale_detection_1d", None),
    ("Fig. 1", "fig1_noise_corrupted_cifar", None),
    ("probes: rotation", "probe_rotation", None),
    ("probes: resolution", "probe_resolution", None),
    ("probes: masking", "probe_masking", None),
    ("probes: patch shuffle", "probe_patch_shuffle", None),
)
#: Longest wait for the CIFAR-10 decoding before the first run (then each worker decodes it itself).
_CIFAR_WAIT_S = 120.0
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
    # a run key hashes the whole configuration: a key committed at any (sweep, scale) is the same run, e.g.
    # the cpu scale's runs whose configuration is also in the gpu grid (Fig. 6), so it is never planned
    committed: set[str] = set()
    elsewhere: dict[str, set[str]] = {}
    for name in _all_sweeps():
        for sc in committed_scales(name, results_root):
            keys = committed_keys(name, sc, results_root)
            committed |= keys
            if sc != scale:
                for k in keys & members.keys():
                    elsewhere.setdefault(k, set()).add(sc)
    if elsewhere:
        scales = sorted({sc for v in elsewhere.values() for sc in v})
        notes.append(f"{len(elsewhere)} run(s) of the {scale} grid are committed at scale(s) {scales} only: "
                     "counted as done (pages read them by key)")
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


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_options(deadline: float, *, jobs: int = 1, device: str = "auto", scale: str = "gpu",
                  only: Sequence[str] | None = None, smoke_seconds: float = 30.0, reserve: float | None = None,
                  out: str | Path | None = None, runs_root: str | Path | None = None) -> list[str]:
    """Check every campaign option before anything runs (``--dry-run`` too): ``ValueError`` naming the
    option and the accepted values. Returns the selected sweeps (all sweeps with ``scale`` when ``only``
    is empty)."""
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not math.isfinite(deadline) \
            or deadline <= 0:
        raise ValueError(f"deadline must be a finite number of seconds > 0, got {deadline!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"device must be one of auto, cpu, cuda, cuda:N, got {device!r}")
    if isinstance(smoke_seconds, bool) or not isinstance(smoke_seconds, (int, float)) \
            or not math.isfinite(smoke_seconds) or smoke_seconds < 0:
        raise ValueError(f"smoke_seconds must be a finite number of seconds >= 0, got {smoke_seconds!r}")
    if reserve is not None and (isinstance(reserve, bool) or not isinstance(reserve, (int, float))
                                or not math.isfinite(reserve) or not 0 <= reserve < deadline):
        raise ValueError(f"reserve must be a number of seconds in [0, deadline), got {reserve!r}")
    names = _all_sweeps()
    with_scale = [n for n in names if scale in sweep_scales(n)]
    if not with_scale:
        have = sorted({sc for n in names for sc in sweep_scales(n)})
        raise ValueError(f"scale must be a scale of the sweeps {have}, got {scale!r}")
    only = [o for o in (only or []) if o]
    unknown = [o for o in only if not any(_selected([o], n) for n in names)]
    if unknown:
        raise ValueError(f"only: {unknown} match(es) no sweep; sweeps: {names} (a name or a prefix such as fig6)")
    selected = [n for n in with_scale if _selected(only, n)]
    if not selected:
        raise ValueError(f"only: {only} select(s) no sweep with scale {scale!r}; those with it: {with_scale}")
    if out is not None and runs_root is not None:
        o, r = Path(out).resolve(), Path(runs_root).resolve()
        if r == o or o in r.parents:
            raise ValueError(f"runs_root {r} must not be inside out {o} (checkpoints never go there)")
    return selected


def simulate(plan: Plan, model: TimeModel, slots: int, deadline: float, start: float = 0.0,
             reserve: float | None = None) -> list[dict[str, Any]]:
    """What the scheduler would do with the time model's estimates: runs started in priority order on
    ``slots`` workers from ``start`` seconds (the smoke test's end) while their estimate ends before
    ``deadline - reserve`` (the campaign's rule). One row per planned run: key, stage, net, seed, start_s,
    end_s, fits (ends before the deadline)."""
    reserve = max(2.0, 0.02 * deadline) if reserve is None else reserve
    stop = deadline - reserve
    free_at = [float(start)] * max(1, slots)
    trained = {plan.item(k).cfg.training_key for k in plan.done}
    rows = []
    for k in plan.todo:
        cfg = plan.item(k).cfg
        w = min(range(len(free_at)), key=lambda i: free_at[i])
        t = free_at[w]
        reuse = cfg.training_key in trained
        est = model.estimate(cfg, min(slots, len(plan.todo)), reuse)
        fits = t + est <= stop
        if fits:
            free_at[w] = t + est
            trained.add(cfg.training_key)
        rows.append({"key": k, "stage": plan.item(k).stage, "net": cfg.net, "seed": cfg.seed,
                     "start_s": round(t, 1), "end_s": round(t + est, 1), "fits": fits})
    return rows


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
#: A part of the packed runs is closed before it passes this size: a lent GPU returns files of at most
#: 16 MiB, and at most 8 files (the campaign writes 4 others, the prepared call one more).
PART_LIMIT = 14 * 2**20
#: Parts the device returns beside the campaign's other files (a warning beyond).
MAX_PARTS = 3


def part_name(i: int) -> str:
    """File name of part ``i`` (1-based) of the packed runs: ``runs.tar.gz``, ``runs-2.tar.gz``, ..."""
    return "runs.tar.gz" if i == 1 else f"runs-{i}.tar.gz"


def pack_runs(out: str | Path, runs_root: str | Path, keys: Sequence[str],
              members: dict[str, list[tuple[str, str]]], device: str, code: dict[str, Any] | None = None) -> Path:
    """Write ``out`` (a ``.tar``, or a gzip-compressed ``.tar.gz``) atomically: ``manifest.json`` and, per
    finished run of ``keys``, the folder ``<key>/`` with ``config.json``, ``status.json``, ``done`` and
    ``*.parquet`` (never ``*.pt``). ``code``: the code state (``{"commit", "dirty"}``) recorded in the
    manifest (``stabkit.runs.store.git_state``, which falls back on ``$STABKIT_CODE_COMMIT``)."""
    runs_root = Path(runs_root)
    finished = [k for k in keys if (runs_root / k / "done").exists()]
    manifest = {"format": MANIFEST_FORMAT,
                "runs": {k: [list(m) for m in members.get(k, [])] for k in finished},
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "device": device,
                "git": dict(code if code is not None else git_state())}

    def write(tmp: Path) -> None:
        gz = str(out).endswith(".gz")
        with tarfile.open(tmp, "w:gz" if gz else "w", **({"compresslevel": 6} if gz else {})) as tar:
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


class Packer:
    """The finished runs, packed into ``DIR/runs.tar.gz``, ``DIR/runs-2.tar.gz``, ... after every run.

    Only the last part is rewritten when a run is added; once adding a run would take it past ``limit``
    bytes, it is left as it was and the run starts the next part (a single run larger than ``limit`` gets
    a part of its own, with a warning). Each part is a complete archive with its own manifest, so any
    subset of the parts imports (``stabkit.runs.import_runs(DIR)`` imports them all)."""

    def __init__(self, out: str | Path, runs_root: str | Path, members: dict[str, list[tuple[str, str]]],
                 device: str, limit: int = PART_LIMIT, log: Callable[[str], None] | None = None):
        self.out, self.runs_root, self.members, self.device = Path(out), Path(runs_root), members, device
        self.limit, self.log = int(limit), log or (lambda text: None)
        self.parts: list[list[str]] = []
        self.code = git_state()  # once: a subprocess per run would cost seconds over a campaign

    def paths(self) -> list[Path]:
        return [self.out / part_name(i + 1) for i in range(len(self.parts))]

    def pack(self, keys: Sequence[str]) -> list[Path]:
        """Add the finished runs of ``keys`` not packed yet; the paths of every part."""
        packed = {k for part in self.parts for k in part}
        for k in keys:
            if k in packed or not (self.runs_root / k / "done").exists():
                continue
            packed.add(k)
            if not self.parts:
                self.parts.append([])
            last = self.parts[-1]
            path = self.out / part_name(len(self.parts))
            size = self._write(path, [*last, k]).stat().st_size
            if size > self.limit and last:
                self._write(path, last)  # as it was: closed
                self.parts.append([k])
                path = self.out / part_name(len(self.parts))
                size = self._write(path, [k]).stat().st_size
                if len(self.parts) > MAX_PARTS:
                    self.log(f"WARNING: {len(self.parts)} parts of packed runs: a lent GPU returns at most 8 "
                             f"files, {MAX_PARTS} of them parts")
            else:
                last.append(k)
            if size > self.limit:
                self.log(f"WARNING: {path.name} holds one run of {size / 2**20:.1f} MiB, over the "
                         f"{self.limit / 2**20:.0f} MiB limit")
        return self.paths()

    def _write(self, path: Path, keys: Sequence[str]) -> Path:
        return pack_runs(path, self.runs_root, keys, self.members, self.device, self.code)


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
    import resource

    import torch
    out = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


def _release(device: str) -> None:
    """Give the caching allocator's unused blocks back to the device after a run, so that a finished run's
    float64 measurement (up to ~19 GiB for ResNet50) does not stay reserved while the next runs start."""
    import gc

    import torch
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _worker(wid: int, device: str, threads: int, tasks, results) -> None:
    """A worker process: runs what ``tasks`` sends (``("run", cfg_dict, root)``, ``("throughput", ...)``,
    ``None`` to stop) and reports on ``results``: ``("run", wid, key, status, error, wall_s, memory)``.
    It exits after a run that broke its CUDA context (:func:`failure_kind` ``"sticky"``)."""
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
            try:
                mem = _memory(device)
                _release(device)
            except Exception as exc:  # noqa: BLE001 - a broken context shows here too
                mem, err = {}, err or f"{type(exc).__name__}: {exc}"
                st = "failed" if st == "done" and failure_kind(err) == "sticky" else st
            results.put(("run", wid, key, st, err, time.time() - t, mem))
            if st == "failed" and failure_kind(err) == "sticky":
                return  # this process's CUDA context is unusable: the campaign starts a fresh worker
        elif msg[0] == "throughput":
            from .smoke import concurrent_rate
            try:
                rate = concurrent_rate(RunConfig.from_dict(msg[1]), device, msg[2], msg[3], msg[4])
                results.put(("throughput", wid, rate, ""))
            except Exception as exc:  # noqa: BLE001 - reported, the campaign goes on with 1 slot
                results.put(("throughput", wid, 0.0, f"{type(exc).__name__}: {exc}"))
            finally:
                _release(device)


class _Pool:
    """``n`` spawned worker processes, one task queue each, one result queue; killed by pid at the end.
    ``respawn(w)`` replaces a dead worker (a new process and task queue under the same id)."""

    def __init__(self, n: int, device: str, threads: int):
        import multiprocessing as mp
        self.ctx = mp.get_context("spawn")
        self.device, self.threads = device, threads
        self.results = self.ctx.Queue()
        self.tasks: list = [None] * n
        self.procs: list = [None] * n
        for i in range(n):
            self._start(i)
        self.ready: set[int] = set()
        self.busy: dict[int, tuple[str, float]] = {}   # worker -> (key, start time)
        self.respawned: dict[int, int] = {}

    def _start(self, i: int) -> None:
        self.tasks[i] = self.ctx.Queue()
        self.procs[i] = self.ctx.Process(target=_worker, args=(i, self.device, self.threads, self.tasks[i],
                                                               self.results), daemon=True)
        self.procs[i].start()

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
        try:
            return self.results.get(timeout=max(0.01, timeout))
        except _queue.Empty:
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
        part_limit: bytes after which a part of the packed runs is closed (:class:`Packer`).
    """
    t0 = time.time() if started is None else float(started)
    from . import smoke as S
    from .execute import resolve_device
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
    model = TimeModel(dev)
    timing: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    try:
        n_workers = jobs
        threads = max(1, (os.cpu_count() or 1) // n_workers)
        pool = _Pool(n_workers, dev, threads)  # workers import torch while the smoke test runs
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


def _schedule(pool: _Pool, plan: Plan, model: TimeModel, slots: int, runs_root: Path, packer: Packer,
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
