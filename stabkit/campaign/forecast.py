"""How many core-hours the unfinished runs of a sweep still need on a CPU, from the pace finished runs measured.

A cpu-scale grid takes many sessions of two cores; which run comes next, and when the grid ends, are
planning questions that the time model's assumptions answer badly on one machine. Here the finished CPU runs
(committed tables under ``results/``, every sweep and scale, and finished run folders of the runs root)
are the measurements:

- a finished run's **pace** is the median of its epochs' core-seconds: the CPU time of the training process
  (``cpu_seconds``), or for runs older than that record wall seconds x torch threads, an upper bound. The
  median, not the sum, because sweeps paused (SIGSTOP) or sharing the cores stretch single epochs;
- a run to come is estimated from the finished runs of the **same task, network and training precision**,
  each pace scaled by the time model's ratio of per-epoch cost (:class:`~stabkit.campaign.TimeModel`:
  width, batch, training-set size, corrupted test set), the median of those; those of the same width,
  training- and test-set size and batch only, when there are any (the fixed costs of an epoch do not
  scale with operations); without runs of the network, from every finished run of the task, scaled the
  same way; without any run in its precision, from the finished runs of the network in another precision
  (an upper bound for bf16 on a CPU with native bf16, far too low without it; the basis says which); without
  any, the time model's assumption for this CPU. Its measurement adds the same runs'
  ``measure_seconds`` x threads, scaled by the model's ratio;
- among those runs, the ones that ran on this CPU (the run records its CPU: :func:`stabkit.precision.cpu_name`)
  are the only guide when there are any: the project's two EPYC machines differ by 2.4x per float32 step;
- among those runs, the ones timed in CPU time are preferred when there are any (a run on two threads
  uses about 1.2x the core-seconds of one thread on the 2-core development machine: the estimate for a
  one-thread run from it is high by as much);
- a run that stops at zero training loss is expected to take the most epochs its finished peers (same task,
  network, training-set size) took, else the sweep files' ``campaign.zero_loss_epochs``;
- a run that already trained some epochs (``resume.pt``; a running run's last report) needs only the rest,
  at its own pace when it is running and its report gives one, and a run whose training ended
  (``trained.json``) only its measurement.

A bf16 run on a CPU without native bf16 is marked ``emulated``: a local sweep there skips it
(:func:`stabkit.sweeps.sweep`, ``emulated``), and its hours are those of a CPU with native bf16.

Public: :func:`~stabkit.campaign.paces` (one row per finished CPU run), :func:`~stabkit.campaign.forecast_sweep`
(one row per unfinished run of a sweep), :func:`~stabkit.campaign.admit_before` (which runs fit before a
deadline). Estimates are of CPUs only: runs finished on GPUs are not used.
Leave-one-out over the 53 committed CIFAR-10 runs of the cpu scale (December 2026): median estimate/actual
0.99, quartiles 0.83-1.17; old wall-clock timings of busy machines are the main error.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..checkpoints import TRAINED_FILE, CheckpointFolder
from ..locks import LOCK_NAME, lock_info
from ..runs import RunConfig, default_results_root, default_runs_root, find_trained, run_state
from ..sweeps import Sweep, committed_keys
from ..sweeps.resultstore import INDEX, read_index
from .plan import zero_loss_epochs
from .timemodel import TimeModel

__all__ = ["PACE_COLUMNS", "FORECAST_COLUMNS", "DEADLINE_MARGIN", "TWO_THREAD_COST", "paces", "forecast_sweep",
           "admit_before"]

#: Margin of :func:`admit_before` on the forecast: its estimates were 0.83-1.17x the actual time (quartiles,
#: leave-one-out over the committed cpu runs), so 1.2x covers three runs in four.
DEADLINE_MARGIN = 1.2
#: Core-seconds of a run on two threads against one (the 2-core development machine; see the module text).
TWO_THREAD_COST = 1.2

#: Columns of :func:`~stabkit.campaign.paces`.
PACE_COLUMNS = ["run", "task", "net", "width_factor", "precision", "epochs_run", "epoch_core_s", "measure_core_s",
                "timed_by", "host", "cpu", "config"]
#: Columns of :func:`~stabkit.campaign.forecast_sweep`.
FORECAST_COLUMNS = ["key", "net", "width_factor", "epochs", "noise_std", "seed", "state", "epochs_left",
                    "epoch_core_s", "core_hours", "basis", "emulated"]


def _epoch_core_seconds(metrics: pd.DataFrame, threads: float) -> tuple[float, str]:
    """(median core-seconds per epoch, how it was timed) of one run's metrics."""
    if "cpu_seconds" in metrics and metrics["cpu_seconds"].notna().any():
        return float(metrics["cpu_seconds"].dropna().median()), "cpu time"
    return float(metrics["seconds"].median()) * threads, "wall x threads"


def _pace_row(cfg: dict, metrics: pd.DataFrame, status: dict) -> dict[str, Any] | None:
    device = str(status.get("mode_device") or status.get("device") or "")
    if not device.startswith("cpu") or metrics.empty or "seconds" not in metrics or status.get("trained_by"):
        return None  # a run that reused another's network holds a copy of that run's metrics
    threads = float(status.get("threads") or 1)
    epoch_s, how = _epoch_core_seconds(metrics, threads)
    measure = status.get("measure_seconds")
    measure_s = float(measure) * threads if measure is not None and np.isfinite(float(measure)) else np.nan
    return {"run": cfg["key"], "task": cfg.get("task", "cifar10"), "net": cfg["net"],
            "width_factor": float(cfg.get("width_factor", 1.0)), "precision": cfg.get("precision", "float32"),
            "epochs_run": len(metrics), "epoch_core_s": epoch_s, "measure_core_s": measure_s, "timed_by": how,
            "host": str(status.get("host", "")), "cpu": str(status.get("device_name") or ""), "config": cfg}


def paces(results_root: str | Path | None = None, runs_root: str | Path | None = None) -> pd.DataFrame:
    """One row per finished CPU run (:data:`~stabkit.campaign.forecast.PACE_COLUMNS`): the committed runs of every sweep and scale under
    ``results_root`` (default ``$STABKIT_RESULTS``, else ``<repo>/results``) and the finished run folders of
    ``runs_root`` (default ``$STABKIT_RUNS``, else ``<repo>/runs``); a run in both counts once. ``config``
    holds the run's configuration (a dict)."""
    rows: dict[str, dict] = {}
    base = Path(results_root or default_results_root())
    for store in sorted(base.glob(f"*/*/{INDEX}")) if base.is_dir() else []:
        index = read_index(store.parent)
        metrics_file = store.parent / "metrics.parquet"
        if index.empty or not metrics_file.is_file():
            continue
        metrics = pd.read_parquet(metrics_file)
        if "run" not in metrics:
            continue
        by_run = dict(tuple(metrics.groupby("run", sort=False)))
        for rec in index.itertuples(index=False):
            if rec.key in rows or rec.key not in by_run:
                continue
            try:
                cfg, status = json.loads(rec.config), json.loads(rec.status)
            except (TypeError, ValueError):
                continue
            row = _pace_row(cfg, by_run[rec.key], status)
            if row:
                rows[rec.key] = row
    root = Path(runs_root or default_runs_root())
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.name in rows or not (p / "metrics.parquet").is_file() or not (p / "summary.parquet").is_file():
            continue
        try:
            cfg = json.loads((p / "config.json").read_text())
            summary = pd.read_parquet(p / "summary.parquet")
            metrics = pd.read_parquet(p / "metrics.parquet")
        except (OSError, ValueError):
            continue
        if run_state(p) == "done" and len(summary):
            row = _pace_row(cfg, metrics, summary.iloc[0].to_dict())
            if row:
                rows[p.name] = row
    return pd.DataFrame(list(rows.values()), columns=PACE_COLUMNS)


def _as_config(cfg: dict) -> RunConfig | None:
    try:
        return RunConfig.from_dict(cfg)
    except (TypeError, ValueError, KeyError):
        return None


def _progress(path: Path, cfg: RunConfig) -> tuple[str, int, bool, float | None]:
    """(state, epochs trained, training ended, own pace in core-seconds per epoch or None) of a run folder:
    a running run's pace is the median of its last epochs' CPU time in its lock record (a record of older
    code: wall seconds x threads when it says its threads)."""
    state = run_state(path)
    if (path / TRAINED_FILE).is_file():
        return state, int(cfg.epochs), True, None
    done, pace = 0, None
    if state == "running":
        info = lock_info(path / LOCK_NAME)
        if info.get("phase") == "training":
            done = int(info.get("epoch", 0))
            if "pace_cpu_seconds" in info:
                pace = float(info["pace_cpu_seconds"])
            elif "threads" in info and "pace_seconds" in info:
                pace = float(info["pace_seconds"]) * int(info["threads"])
    if not done and path.is_dir():
        done = CheckpointFolder(path, cfg.net, cfg.key).resume_epoch() or 0
    return state, min(done, int(cfg.epochs)), False, pace


def forecast_sweep(sweep: Sweep, *, runs_root: str | Path | None = None, results_root: str | Path | None = None,
                   committed: Collection[str] | None = None, measured: pd.DataFrame | None = None,
                   cpu: str | None = None, native_bf16: bool | None = None,
                   planned: dict[str, str] | None = None) -> pd.DataFrame:
    """The runs of ``sweep`` that are neither finished in ``runs_root`` nor committed for its scale, in grid
    order, with the core-hours each still needs (:data:`~stabkit.campaign.forecast.FORECAST_COLUMNS`; see the module text).

    ``state``: pending, interrupted, running or failed; ``epochs_left``: epochs still to train;
    ``epoch_core_s``: the estimated core-seconds of one of its epochs; ``basis``: what the estimate rests on
    ("3 runs of VGG11bn", "5 runs of other networks, scaled", "its own pace", "time model (assumed)"). ``committed``: the
    keys committed for the sweep's scale (default: read from ``results_root``); ``measured``: a
    :func:`~stabkit.campaign.paces` table (default: computed from both roots). Imports torch (the time model builds each
    network once to count its operations).

    ``cpu``: the CPU the estimate is for (default this one, :func:`stabkit.precision.cpu_name`): the references
    that ran on it, when there are any, are the only ones used ("... on this CPU"; CPUs differ by 2.4x per
    float32 step between the project's two EPYC machines). ``native_bf16`` (default: this CPU's,
    :func:`stabkit.precision.cpu_supports_bf16`): without it a bf16 run is ``emulated`` (True in that column):
    a local sweep here skips it, and its hours are those of a CPU with native bf16.

    A run whose network another run trains (the same :attr:`~stabkit.runs.RunConfig.training_key`: a control
    that only measures differently) needs only its measurement, when that other run is finished in
    ``runs_root`` or comes before it in the list ("network trained by KEY"). ``planned``: ``{training key: run
    key}`` of the runs listed before (for several sweeps in a row; updated with this sweep's)."""
    from ..precision import cpu_name, cpu_supports_bf16
    cpu = cpu_name() if cpu is None else cpu
    native_bf16 = cpu_supports_bf16() if native_bf16 is None else native_bf16
    root = Path(runs_root or default_runs_root())
    published = set(committed_keys(sweep.name, sweep.scale, results_root) if committed is None else committed)
    measured = paces(results_root, root) if measured is None else measured
    model = TimeModel("cpu", zero_loss_epochs())
    ref_cfgs = [(_as_config(c), r) for c, r in zip(measured["config"], measured.itertuples(index=False))]
    ref_cfgs = [(c, r) for c, r in ref_cfgs if c is not None]
    for c, r in ref_cfgs:  # runs that stop at zero training loss: as many epochs as their finished peers took
        model.observe(c, 0.0, int(r.epochs_run))

    def per_epoch(cfg: RunConfig) -> tuple[float, float]:
        parts = model.parts(cfg)
        return (parts["train"] + parts["eval"]) / max(1.0, parts["epochs"]), parts["measure"]

    ref_model = {r.run: per_epoch(c) for c, r in ref_cfgs}  # each reference's modelled cost, once

    def shape(c: RunConfig) -> tuple:
        return c.width_factor, c.ptr, c.test_size, c.batch_size

    planned = {} if planned is None else planned
    rows = []
    for cfg in sweep.configs:
        path = root / cfg.key
        if cfg.key in published or run_state(path) == "done":
            continue
        state, done, trained, own = _progress(path, cfg)
        lent = find_trained(cfg, root)  # a finished run with this network: this one only measures
        donor = lent.name if lent is not None else planned.get(cfg.training_key)
        planned.setdefault(cfg.training_key, cfg.key)
        # (the same network means the same training precision: a donor still to train here is emulated too)
        emulated = cfg.precision == "bf16" and not native_bf16 and not trained and lent is None
        epoch_m, measure_m = per_epoch(cfg)
        same = [(c, r) for c, r in ref_cfgs if c.task == cfg.task and c.net == cfg.net and c.precision == cfg.precision]
        task = [(c, r) for c, r in ref_cfgs if c.task == cfg.task and c.precision == cfg.precision]
        if same:
            refs, what = same, f"of {cfg.net}"
        elif task:
            refs, what = task, "of other networks, scaled"
        else:
            # another arithmetic changes the pace by a factor that depends on the CPU (bf16: 1.6-2x faster with
            # native bf16, 11-29x slower without), so the same network in another precision is the last guide
            refs = [(c, r) for c, r in ref_cfgs if c.task == cfg.task and c.net == cfg.net]
            what = f"of {cfg.net} in {'/'.join(sorted({c.precision for c, _ in refs}))}, not {cfg.precision}"
        # the same shape first: scaling by operations misses the fixed costs of an epoch (loaders, evaluation),
        # which dominate small training sets
        refs = [(c, r) for c, r in refs if shape(c) == shape(cfg)] or refs
        here = [(c, r) for c, r in refs if r.cpu == cpu]
        if here:  # the machine sets the pace: another CPU's runs only when none ran here
            refs, what = here, f"{what} on this CPU"
        timed = [(c, r) for c, r in refs if r.timed_by == "cpu time"]
        refs = timed or refs  # CPU time where measured: wall x threads also counts pauses and time-sharing
        if refs:
            epoch_s = float(np.median([r.epoch_core_s * epoch_m / ref_model[r.run][0] for c, r in refs]))
            # measured measurements only of the same kind (a control that measures one thing is no guide)
            ms = [r.measure_core_s * measure_m / ref_model[r.run][1] for c, r in refs
                  if np.isfinite(r.measure_core_s) and c.measure == cfg.measure and ref_model[r.run][1] > 0]
            measure_s = float(np.median(ms)) if ms else measure_m
            basis = f"{len(refs)} run{'s' if len(refs) > 1 else ''} {what}"
        else:
            epoch_s, measure_s, basis = epoch_m, measure_m, "time model (assumed)"
        if own is not None:
            epoch_s, basis = own, "its own pace"
        if donor is not None and not trained and own is None:
            trained, basis = True, f"network trained by {donor}"
        left = 0 if trained else int(model.expected_epochs(cfg)) - done
        rows.append({"key": cfg.key, "net": cfg.net, "width_factor": cfg.width_factor, "epochs": cfg.epochs,
                     "noise_std": cfg.noise_std, "seed": cfg.seed, "state": state, "epochs_left": max(0, left),
                     "epoch_core_s": epoch_s, "core_hours": (max(0, left) * epoch_s + measure_s) / 3600,
                     "basis": basis, "emulated": emulated})
    return pd.DataFrame(rows, columns=FORECAST_COLUMNS)


def admit_before(sweep: Sweep, end: float, threads: int | None = None, *, label: str = "",
                 runs_root: str | Path | None = None, results_root: str | Path | None = None
                 ) -> Callable[[RunConfig], str | None]:
    """``admit(config)`` for :func:`stabkit.sweeps.sweep` (``stabkit sweep --deadline``): None when the run's
    forecast (:func:`forecast_sweep`: its core-hours, spread over the run's ``threads``, with
    :data:`DEADLINE_MARGIN`) ends before ``end`` (a ``time.time()`` instant), else why not; ``label`` names
    the deadline in that reason. The finished runs' paces are read once, here."""
    import time

    from ..sweeps import run_threads
    measured = paces(results_root, runs_root)
    t = run_threads(threads)
    when = f" ({label})" if label else ""

    def admit(cfg: RunConfig) -> str | None:
        f = forecast_sweep(replace(sweep, configs=[cfg]), runs_root=runs_root, results_root=results_root,
                           committed=(), measured=measured)
        if f.empty:
            return None
        need = float(f.core_hours.iloc[0]) * 3600 * (TWO_THREAD_COST if t > 1 else 1.0) / t * DEADLINE_MARGIN
        left = end - time.time()
        if need <= left:
            return None
        return (f"not started: it would not end before the deadline{when}: about {need / 3600:.2f} h on {t} "
                f"thread(s) with a {DEADLINE_MARGIN - 1:.0%} margin ({f.basis.iloc[0]}), {max(left, 0) / 3600:.2f} h left")
    return admit
