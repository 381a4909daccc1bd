"""One run in this process: train, then measure (:func:`~stabkit.runs.run`); measure a finished run again
(:func:`~stabkit.runs.remeasure`). Both go through the same measurement loop, :func:`~stabkit.runs.execute.measure_states`."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
import socket
import statistics
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..checkpoints import RESUME_FILE, TRAINED_FILE, TRAINING_OUTPUTS, CheckpointFolder
from ..locks import RunLock
from .config import RunConfig, training_key
from .measurements import MEASUREMENT_FACTS, MEASUREMENTS, check_measurements
from .folder import (RunLocked, check_table_name, hold_lock, mark_done, read_config, run_dir, write_config,
                     write_status, write_table)
from .provenance import git_state
from .tasks import RunContext, build_net, loader, task_data
from .validation import validate

__all__ = ["RESERVED_TABLES", "TRAINED_FILE", "train_spec", "resolve_device", "device_name", "measure_states", "run",
           "remeasure", "run_mode", "find_trained", "finished_training"]

#: Tables a measurement may not write (the run writes them itself).
RESERVED_TABLES = ("metrics", "summary")


def resolve_device(device: str = "auto") -> str:
    """:func:`stabkit.graph.resolve_device` as a string (``"auto"`` -> ``"cuda"`` if available else
    ``"cpu"``; ``ValueError`` for another form, or for a device that is not present here)."""
    from ..graph import resolve_device as resolve  # not at import: torch (see _trainer)
    return str(resolve(device))


def device_name(device: str) -> str:
    """The GPU model of a CUDA device, else the CPU's (:func:`stabkit.precision.cpu_name`: model, family,
    widest vector instructions), which the forecast reads to compare paces of the same machine."""
    import torch  # not at import: loading a sweep through this package must not import torch
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from ..precision import cpu_name
    return cpu_name()


def _env_flag(name: str) -> bool:
    """An on/off environment variable: ``1``, ``true``, ``yes``, ``on`` (any case) are on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def run_mode() -> dict[str, bool]:
    """How runs of this process train, from the environment (not part of a run's configuration, so not of
    its key): ``deterministic`` (``STABKIT_DETERMINISTIC``: ``stabkit.precision.deterministic_mode``; GPU runs
    are not bit-reproducible otherwise) and ``compile`` (``STABKIT_COMPILE``: ``torch.compile`` of the
    training forward on CUDA, off by default). Each run records the mode it used in its summary table."""
    return {"deterministic": _env_flag("STABKIT_DETERMINISTIC"), "compile": _env_flag("STABKIT_COMPILE")}


def measure_states(model, cfg: RunConfig, data, device: str, path: Path, *, init_state: Mapping,
                   checkpoints: CheckpointFolder, train_result: Any = None,
                   heartbeat: Callable[..., Any] = lambda progress=None: None) -> dict[str, pd.DataFrame]:
    """Run every measurement of ``cfg.measure`` on ``model`` in each state of ``cfg.states`` (``init``:
    ``init_state``; ``trained``: the best checkpoint of ``checkpoints``, checked against its run and
    net), in eval mode, those registered with ``grad=False`` (:data:`~stabkit.runs.measurements.MEASUREMENT_FACTS`)
    under ``torch.no_grad()``. ``heartbeat(progress)`` is called as each state begins (e.g. the run lock's
    :meth:`~stabkit.runs.RunLock.heartbeat`, whose record ``stabkit status`` shows).

    Returns one DataFrame per table name, the states concatenated, with a ``state`` column. Raises
    ``TypeError`` if a measurement returns something other than a mapping, ``ValueError`` if it writes
    a table of :data:`~stabkit.runs.execute.RESERVED_TABLES`.
    """
    import torch  # not at import: loading a sweep through this package must not import torch

    check_measurements(cfg.measure)
    tables: dict[str, list[pd.DataFrame]] = {}
    cache: dict = {}
    for state in cfg.states:
        heartbeat({"phase": "measuring", "state": state, "measurements": list(cfg.measure)})
        if state == "init":
            model.load_state_dict(init_state)
        else:
            sd, _ = checkpoints.load("best")
            model.load_state_dict(sd)
        model.eval()  # at init, measure() uses batch statistics (ctx.batch_stats)
        ctx = RunContext(cfg, state, device, path, data, train_result, cache)
        for name in cfg.measure:
            with contextlib.nullcontext() if MEASUREMENT_FACTS[name].grad else torch.no_grad():
                out = MEASUREMENTS[name](model, cfg, ctx)
            if not isinstance(out, Mapping):
                raise TypeError(f"measurement {name!r} must return dict[str, DataFrame], got {type(out).__name__}")
            for tname, df in out.items():
                check_table_name(tname, f"a table name of measurement {name!r}")  # written as <run>/<name>.parquet
                if tname in RESERVED_TABLES:
                    raise ValueError(f"measurement {name!r} may not write the reserved table {tname!r}")
                df = df.copy()
                if "state" not in df.columns:
                    df.insert(0, "state", state)
                tables.setdefault(tname, []).append(df)
        for k in [k for k in cache if isinstance(k, tuple) and k[1] == state]:
            del cache[k]  # free shuffled copies/activations of this state
    return {k: pd.concat(v, ignore_index=True) for k, v in tables.items()}


#: Files a finished run must hold for another run to reuse its training.
_TRAINED_FILES = ("done", *TRAINING_OUTPUTS, "summary.parquet")


def find_trained(config: RunConfig, root: str | Path) -> Path | None:
    """A finished run under ``root``, other than ``config``'s own, that trained the same network
    (equal :attr:`~stabkit.runs.RunConfig.training_key`: the configs differ only in what they measure),
    with its checkpoints (loadable: a damaged one lends nothing) and metrics; ``None`` if there is none.
    The first in key order wins."""
    root = Path(root)
    if not root.is_dir():
        return None
    want = config.training_key
    for p in sorted(root.iterdir()):
        if p.name == config.key or not all((p / f).is_file() for f in _TRAINED_FILES):
            continue
        try:
            other = read_config(p)
        except (OSError, ValueError):
            continue  # a damaged folder is never a donor
        if (training_key(other) == want and _origin(p) != config.key
                and not CheckpointFolder(p, config.net, p.name).problems()):
            return p  # (a run whose network came from this run's earlier training is no donor: redone, it trains)
    return None


def _origin(path: Path) -> str:
    """The run that trained the network of finished run folder ``path``: its ``trained_by``, else itself."""
    try:
        by = pd.read_parquet(path / "summary.parquet").iloc[0].get("trained_by")
    except Exception:  # noqa: BLE001 - an unreadable summary: the folder is its own origin
        return path.name
    return str(by) if isinstance(by, str) and by else path.name


def finished_training(path: str | Path, key: str) -> tuple[dict, pd.DataFrame] | None:
    """The training of the run folder ``path`` if it has ended (``trained.json`` of run ``key`` beside
    ``best.pt``, ``last.pt`` and ``metrics.parquet``): its summary columns and metrics; else ``None``
    (:meth:`stabkit.checkpoints.CheckpointFolder.finished`, which does not look at the net)."""
    return CheckpointFolder(path, "", key).finished()


def run(config: RunConfig | Mapping[str, Any], root: str | Path | None = None, *, device: str = "auto",
        progress: bool = True, force: bool = False, reuse_training: bool = True) -> Path:
    """Train ``config`` and measure it in this process; return its folder ``<root>/<key>``.

    ``reuse_training``: when a finished run of ``root`` trained the same network (:func:`find_trained`),
    its checkpoints and training metrics are copied (re-tagged with this run's key) and only the
    measurements are computed; the summary names that run in ``trained_by`` (empty when this run trained).
    The network is the one this run would train (same data, seeds and hyper-parameters), so each network
    is trained once however many sweeps measure it.

    Already finished (``done``) runs are returned untouched unless ``force``. A leftover folder of an
    interrupted run is cleared and redone, except its training: a run killed while it measured keeps its
    finished training (``trained.json``, checkpoints, metrics) and only measures again; a run killed
    while it trained continues from its training state (``resume.pt``, written by
    :func:`stabkit.train.train` every few minutes of training), with the result of an uninterrupted run on
    the same device and thread count, and the summary records the epochs it took over in
    ``resumed_epoch`` (0: trained in one go). On error, ``status.json`` (status failed) and ``error.txt``
    (traceback) are written and the exception is re-raised. Raises :class:`RunLocked` (a
    ``RuntimeError``) if another live process holds the run's lock.
    """
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    code_state()  # the code this process runs: recorded in the summary
    path = run_dir(cfg, root)
    if (path / "done").exists() and not force:
        return path
    path.mkdir(parents=True, exist_ok=True)
    with hold_lock(path) as heartbeat:
        if heartbeat is None:
            raise RunLocked(f"run {path} is being computed by another live process (lock file)")
        if (path / "done").exists() and not force:
            return path
        ckpt = CheckpointFolder(path, cfg.net, cfg.key)
        keep = {"lock"}
        trained = None if force else ckpt.finished()
        if trained is not None:
            keep.update((TRAINED_FILE, *TRAINING_OUTPUTS))  # killed while measuring: measured again only
        elif not force and ckpt.resume_epoch() is not None:
            keep.add(RESUME_FILE)  # the training state of an interrupted attempt: continued, not redone
        for child in path.iterdir():  # start clean: leftovers of an interrupted or failed attempt
            if child.name not in keep:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        write_config(path, cfg)
        t0 = time.time()
        with contextlib.ExitStack() as shared:  # the network's training lock, held until `done` (see below)
            try:
                donor = find_trained(cfg, path.parent) if reuse_training and trained is None else None
                if reuse_training and trained is None and donor is None:
                    # a run of the same network started by another process: wait for it and reuse its training
                    shared.enter_context(_training_lock(path.parent, cfg.training_key, heartbeat))
                    donor = find_trained(cfg, path.parent)
                if donor is not None:
                    ckpt.drop_resume()
                summary = _run_body(cfg, ckpt, resolve_device(device), progress, heartbeat, donor, trained)
            except Exception as exc:  # Ctrl-C / SIGKILL leave an "interrupted" run, redone next time
                write_status(path, {"status": "failed", "key": cfg.key, "host": socket.gethostname(),
                                    "error": f"{type(exc).__name__}: {exc}"[:2000],
                                    "wall_seconds": time.time() - t0}, traceback.format_exc())
                raise
            summary["wall_seconds"] = time.time() - t0
            write_table(path / "summary.parquet", pd.DataFrame([summary]))
            write_status(path, {"status": "done", **summary})
            mark_done(path)  # LAST; then the training lock goes: a waiting run finds this one as its donor
    return path


#: Folder of a runs root holding one lock per network being trained (:func:`_training_lock`).
TRAINING_LOCKS = ".training"


@contextlib.contextmanager
def _training_lock(root: Path, training_key: str, heartbeat: Callable[..., Any], poll_s: float = 1.0):
    """Hold the lock of network ``training_key`` under ``root`` (``<root>/.training/<key>/lock``, the
    :class:`~stabkit.runs.RunLock` protocol): runs that share a network and start together train it once,
    the others wait here (their own run lock's heartbeat kept fresh) and then reuse it."""
    folder = root / TRAINING_LOCKS / training_key
    folder.mkdir(parents=True, exist_ok=True)
    lk = RunLock(folder)
    while not lk.acquire():
        heartbeat({"phase": "waiting", "for": f"network {training_key}, trained by another run"})
        time.sleep(poll_s)
    try:
        yield
    finally:
        lk.release()


_CODE_STATE: dict | None = None


def code_state() -> dict:
    """The checkout's git state when this process first asked: a long sweep keeps the code it imported at
    its start, so later commits of the checkout must not be credited with its runs."""
    global _CODE_STATE
    if _CODE_STATE is None:
        _CODE_STATE = git_state()
    return _CODE_STATE


def _trainer():
    """:mod:`stabkit.train`, imported on first use: it imports torch, and loading a sweep through this
    package must not (the one door of this module to the training code; tests replace its ``train``)."""
    from .. import train
    return train


def _run_body(cfg: RunConfig, ckpt: CheckpointFolder, device: str, progress: bool, heartbeat: Callable,
              donor: Path | None = None, trained: tuple[dict, pd.DataFrame] | None = None) -> dict:
    import torch  # not at import: loading a sweep through this package must not import torch

    validate(cfg)  # before hours of training: the measurements and their options too
    d = task_data(cfg)
    model = build_net(cfg, d).to(device)
    init_state = _trainer().cpu_state(model)
    if trained is not None:
        training, metrics = trained
    else:
        if donor is not None:
            training, metrics = _copy_training(CheckpointFolder(donor, cfg.net, donor.name), ckpt)
        else:
            training, metrics = _train(cfg, d, model, ckpt, device, progress, heartbeat)
        training = {k: (v.item() if hasattr(v, "item") else v) for k, v in training.items()}  # JSON scalars
        ckpt.record_finished(training, metrics)
    t1 = time.time()
    tables = measure_states(model, cfg, d, device, ckpt.path, init_state=init_state, checkpoints=ckpt,
                            heartbeat=heartbeat)
    for tname, df in tables.items():
        write_table(ckpt.path / f"{tname}.parquet", df)
    code = code_state()
    return {"key": cfg.key, "status": "done", **training, "measure_seconds": time.time() - t1,
            "device": device, "device_name": device_name(device), "host": socket.gethostname(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "code_commit": code["commit"], "code_dirty": code["dirty"],
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat()}


#: Summary columns that describe the training (copied from the run that trained, when it is reused).
_TRAINING_COLUMNS = ("best_test_err", "best_test_err_corrupted", "last_test_err", "best_epoch", "epochs_run",
                     "stopped_early", "train_seconds", "train_cpu_seconds", "resumed_epoch")


def train_spec(cfg: RunConfig, select_on: str = "test") -> Any:
    """The :class:`stabkit.train.TrainSpec` of ``cfg`` (its resolved hyper-parameters, ``data_seed`` for
    the augmentation generator) in this process's :func:`run_mode`."""
    return _trainer().TrainSpec(epochs=cfg.epochs, optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
                     weight_decay=cfg.weight_decay, schedule=cfg.schedule, loss=cfg.loss, batch_size=cfg.batch_size,
                     stop_at_zero_loss=cfg.stop_at_zero_loss, select_on=select_on, seed=cfg.data_seed,
                     precision=cfg.precision, fast=cfg.fast, **run_mode())


def _torch_threads() -> int:
    import torch
    return torch.get_num_threads()


def _train(cfg: RunConfig, d, model, ckpt: CheckpointFolder, device: str, progress: bool,
           heartbeat: Callable) -> tuple[dict, pd.DataFrame]:
    """Train ``model`` for ``cfg`` (checkpoints into ``ckpt``): the summary's training columns, metrics."""
    loaders = {"train": loader(cfg, d, device, train=True, noise_std=cfg.noise_std, seed=cfg.data_seed),
               "test": loader(cfg, d, device, train=False, seed=cfg.data_seed + 1)}
    if cfg.noise_std > 0:
        loaders["test_corrupted"] = loader(cfg, d, device, train=False, noise_std=cfg.noise_std,
                                           seed=cfg.data_seed + 2)
    corrupted = "test_corrupted" in loaders
    t0 = time.time()

    paces: list[float] = []
    cpu_paces: list[float] = []

    def report(row: Mapping[str, Any]) -> None:  # the lock's record: what `sweep --dry-run` and `status` show
        paces.append(float(row["seconds"]))
        if row.get("cpu_seconds") is not None and math.isfinite(float(row["cpu_seconds"])):
            cpu_paces.append(float(row["cpu_seconds"]))
        cpu_pace = {"pace_cpu_seconds": float(statistics.median(cpu_paces[-5:]))} if cpu_paces else {}
        heartbeat({"phase": "training", "epoch": int(row["epoch"]), "epochs": cfg.epochs,
                   "epoch_seconds": float(row["seconds"]),
                   # the pace to estimate the time left: one epoch stretched by a pause (SIGSTOP while a test
                   # suite runs) or a busy machine does not move the median of the last five
                   "pace_seconds": float(statistics.median(paces[-5:])),
                   # the same in CPU time (core-seconds; `stabkit status --forecast`)
                   **cpu_pace, "threads": _torch_threads(),
                   "train_loss": float(row["train_loss"]), "test_err": float(row["test_err"])})

    res = _trainer().train(model, loaders, train_spec(cfg, "test_corrupted" if corrupted else "test"),
                        checkpoints=ckpt, resume=True, on_epoch=report, progress=progress)
    best_row = res.metrics.iloc[res.best_epoch - 1]
    extra = {"best_test_err_corrupted": float(best_row["test_corrupted_err"])} if corrupted else {}
    return ({"trained_by": "", "best_test_err": res.best_test_err, **extra, "last_test_err": res.last_test_err,
             "best_epoch": res.best_epoch, "epochs_run": len(res.metrics), "stopped_early": res.stopped_early,
             # with the time before an interruption (the time model learns from it)
             "train_seconds": time.time() - t0 + res.extra["resumed_seconds"],
             # the core-seconds the epochs used (NaN when an epoch resumed from an older file lacks them)
             "train_cpu_seconds": res.extra["cpu_seconds"],
             "resumed_epoch": res.extra["resumed_epoch"], **_mode_columns(res.mode)}, res.metrics)


def _copy_training(donor: CheckpointFolder, ckpt: CheckpointFolder) -> tuple[dict, pd.DataFrame]:
    """Reuse the training of the finished run ``donor``: its checkpoints re-tagged with ``ckpt``'s key
    (``trained_by`` in their metadata), its metrics, and its summary's training and ``mode_`` columns."""
    origin = _origin(donor.path)  # the run that trained it (a donor may itself have copied it): no chain, no circle
    ckpt.copy_from(donor, trained_by=origin)
    row = pd.read_parquet(donor.path / "summary.parquet").iloc[0]
    training = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()
                if k in _TRAINING_COLUMNS or str(k).startswith("mode_")}
    training["trained_by"] = origin
    return training, pd.read_parquet(donor.path / "metrics.parquet")


def _mode_columns(mode: Mapping[str, Any]) -> dict[str, Any]:
    """``TrainResult.mode`` as flat summary columns ``mode_<name>`` (lists joined by commas)."""
    return {f"mode_{k}": (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in mode.items()}


def remeasure(path: str | Path, *, measure: Sequence[str] | None = None, states: Sequence[str] | None = None,
              shuffles: Sequence[int] | None = None, P: int | None = None, device: str = "auto",
              out_dir: str | Path | None = None, options: Mapping[str, Any] | None = None,
              in_place: bool = False) -> dict[str, pd.DataFrame]:
    """Measure a finished run again (best checkpoint, checked against the run's key and net; "init"
    rebuilds the same initial weights) with other measurement options; returns the tables and writes
    them to ``out_dir`` if given (never into the run folder, whose tables belong to its configuration).
    ``options`` updates the run's measurement options by measurement name, e.g.
    ``{"layers": {"relu_conventions": ["true", "inplace"]}}`` for the original code's in-place ReLU values.

    ``in_place=True`` refreshes a finished run's own measurement tables with the current code (the run's
    configuration unchanged: no other option may be given), e.g. after a change of the measurement
    conventions: under the run's lock, every table its measurements write is replaced atomically (metrics
    and the training part of the summary are kept), and ``summary``/``status.json`` record
    ``remeasured_commit``, ``remeasured_dirty`` and ``remeasured_at``.
    Same measurement loop as :func:`~stabkit.runs.run` (:func:`~stabkit.runs.execute.measure_states`)."""
    path = Path(path)
    original = RunConfig.from_dict(read_config(path))
    changes = {k: v for k, v in dict(measure=measure, states=states, shuffles=shuffles, P=P).items() if v is not None}
    if options is not None:
        changes["options"] = {**(original.options or {}), **dict(options)}
    if in_place:
        if changes or out_dir is not None:
            raise ValueError("remeasure(in_place=True) measures the run's own configuration: measure, states, "
                             f"shuffles, P, options and out_dir must be left unset (got {sorted(changes)}"
                             + (", out_dir" if out_dir is not None else "") + ")")
        return _remeasure_in_place(path, original, device)
    cfg = original.replace(**changes)
    validate(cfg)  # P above the test set, unknown layers or measurements, options: refused, not measured on fewer
    dev = resolve_device(device)
    d = task_data(cfg)
    model = build_net(cfg, d).to(dev)
    out = measure_states(model, cfg, d, dev, path, init_state=_trainer().cpu_state(model),
                         checkpoints=CheckpointFolder(path, cfg.net, original.key))
    if out_dir is not None:
        for k, df in out.items():
            write_table(Path(out_dir) / f"{k}.parquet", df)
    return out


def _remeasure_in_place(path: Path, cfg: RunConfig, device: str) -> dict[str, pd.DataFrame]:
    if not (path / "done").exists():
        raise ValueError(f"remeasure(in_place=True) needs a finished run; {path} has no 'done' marker")
    with hold_lock(path) as heartbeat:
        if heartbeat is None:
            raise RunLocked(f"run {path} is being computed by another live process (lock file)")
        dev = resolve_device(device)
        d = task_data(cfg)
        model = build_net(cfg, d).to(dev)
        t0 = time.time()
        out = measure_states(model, cfg, d, dev, path, init_state=_trainer().cpu_state(model),
                             checkpoints=CheckpointFolder(path, cfg.net, cfg.key), heartbeat=heartbeat)
        for tname, df in out.items():
            write_table(path / f"{tname}.parquet", df)
        code = git_state()
        stamp = {"remeasured_commit": code["commit"], "remeasured_dirty": code["dirty"],
                 "remeasured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                 "measure_seconds": time.time() - t0}
        summary = pd.read_parquet(path / "summary.parquet")
        for k, v in stamp.items():
            summary[k] = v
        write_table(path / "summary.parquet", summary)
        status = json.loads((path / "status.json").read_text())
        write_status(path, {**status, **stamp})
    return out
