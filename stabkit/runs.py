"""Runs and sweeps: one frozen configuration -> one folder of result tables (resumable, like ``grid``).

A run is a :class:`RunConfig`. Its hash (with :data:`FORMAT_VERSION`) names its folder ``<root>/<key>``;
:func:`run` trains the network, then measures it in the same process (output and layer-by-layer
stabilities at initialisation and after training, with/without channel shuffling, filter spectra, test
errors), writes every file atomically (tmp file + ``os.replace``) and writes the ``done`` marker LAST.

A sweep is a YAML file under ``sweeps/`` (see :func:`load_sweep` for the format) with scales
``tiny | small | paper | gpu``. :func:`sweep` skips finished runs, redoes interrupted ones and records
failed ones (``status.json`` + ``error.txt``) without stopping. :func:`collect` gathers one table of the
finished runs into one tidy DataFrame with the configuration columns; :func:`results` is the notebooks'
entry point (committed tables under ``results/<sweep>/<scale>/`` first, else run the sweep, then collect);
:func:`export` writes the collected tables and ``provenance.json`` for committing.

Folder of a run::

    config.json      the configuration (plus key and format version)
    lock             while a process works on it (host, pid; touched every epoch)
    best.pt last.pt  checkpoints (state dicts + metadata, loaded with weights_only=True)
    metrics.parquet output.parquet layers.parquet spectra.parquet summary.parquet [+ registered tables]
    status.json      {"status": "done" | "failed", ...};   error.txt   traceback of a failed run
    done             written last: the run is complete

Extension points: :data:`MEASUREMENTS` (name -> ``fn(model, cfg, ctx) -> dict[table, DataFrame]``,
registered with :func:`register_measurement`) and :data:`AUGMENTATIONS` (name -> ``fn(x, generator) -> x``
applied on the device to every training batch after crop/flip, before normalisation, registered with
:func:`register_augmentation`). ``stabkit.probes`` / ``stabkit.invariance`` are imported lazily so that
their registrations are present, and so are the modules named in ``$STABKIT_PLUGINS`` (comma-separated),
e.g. for a user's own measurement used from the command line.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib
import itertools
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "FORMAT_VERSION", "RunConfig", "RunContext", "Sweep", "MEASUREMENTS", "AUGMENTATIONS",
    "register_measurement", "register_augmentation", "default_runs_root", "default_results_root",
    "sweeps_dir", "run", "remeasure", "run_dir", "RunLocked", "run_state", "load_sweep", "sweep", "collect",
    "status", "results",
    "export", "resolve_device", "TABLES", "SCALES",
]

#: Version of the run format and of the code's numerical conventions; part of every run's hash, so bump it
#: when a change of the code must invalidate earlier runs.
FORMAT_VERSION = 1
#: Tables written by the built-in measurements (plus ``metrics`` and ``summary``).
TABLES = ("metrics", "output", "layers", "spectra", "summary")
SCALES = ("tiny", "small", "paper", "gpu")
TASKS = ("cifar10", "twopoints", "scale1d")
STATES = ("init", "trained")
_PKG_DIR = Path(__file__).resolve().parent
_REPO = _PKG_DIR.parent


def _in_repo() -> bool:
    return (_REPO / "pyproject.toml").is_file() and (_REPO / "sweeps").is_dir()


def default_runs_root() -> Path:
    """``$STABKIT_RUNS`` if set, else ``<repo>/runs`` (git-ignored), else ``~/.cache/stabkit/runs``."""
    env = os.environ.get("STABKIT_RUNS")
    if env:
        return Path(env).expanduser()
    return _REPO / "runs" if _in_repo() else Path.home() / ".cache" / "stabkit" / "runs"


def default_results_root() -> Path:
    """``$STABKIT_RESULTS`` if set, else ``<repo>/results`` (committed result tables)."""
    env = os.environ.get("STABKIT_RESULTS")
    if env:
        return Path(env).expanduser()
    return _REPO / "results" if _in_repo() else Path.home() / ".cache" / "stabkit" / "results"


def sweeps_dir() -> Path:
    """``$STABKIT_SWEEPS`` if set, else ``<repo>/sweeps``."""
    return Path(os.environ.get("STABKIT_SWEEPS", _REPO / "sweeps")).expanduser()


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` if available else ``"cpu"``; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as is."""
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" or device.startswith("cuda") or device == "mps":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
        return device
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


# ---------------------------------------------------------------------------------------- registries
MEASUREMENTS: dict[str, Callable[..., dict[str, pd.DataFrame]]] = {}
"""name -> ``fn(model, cfg, ctx) -> {table name: DataFrame}``. Called once per state in ``cfg.states``
(``ctx.state`` is "init" or "trained"; ``model`` is the net in that state, on ``ctx.device``, in eval mode;
``ctx.batch_stats`` is True at "init", where the paper uses batch-norm batch statistics); a ``state``
column is added to every returned table if missing, and tables of the same name are concatenated over states."""
AUGMENTATIONS: dict[str, Callable] = {}
"""name -> ``fn(x, generator) -> x`` applied on the device to each training batch after the loader's
crop/flip and before normalisation (``data.DeviceLoader(extra_augment=...)``: CIFAR images in [0, 1]);
``generator`` lives on the device. ``"crop"`` and ``"flip"`` are built in (done by the loader)."""
_BUILTIN_AUGMENT = ("crop", "flip")
_OPTIONAL_MODULES = ("stabkit.probes", "stabkit.invariance")
_plugins_loaded = False


def _registrar(registry: dict, what: str, name: str, overwrite: bool) -> Callable:
    def deco(fn: Callable) -> Callable:
        if name in registry and not overwrite and registry[name] is not fn:
            raise ValueError(f"{what} {name!r} is already registered (pass overwrite=True to replace it)")
        registry[name] = fn
        return fn
    return deco


def register_measurement(name: str, *, overwrite: bool = False) -> Callable:
    """Decorator: ``@register_measurement("rotations") def fn(model, cfg, ctx) -> dict[str, DataFrame]``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    return _registrar(MEASUREMENTS, "measurement", name, overwrite)


def register_augmentation(name: str, *, overwrite: bool = False) -> Callable:
    """Decorator: ``@register_augmentation("rotate") def fn(x [B,C,H,W], generator) -> x``."""
    if not isinstance(name, str) or not name or name in _BUILTIN_AUGMENT:
        raise ValueError(f"augmentation name must be a non-empty string other than {_BUILTIN_AUGMENT}, got {name!r}")
    return _registrar(AUGMENTATIONS, "augmentation", name, overwrite)


def _load_plugins() -> None:
    """Import the optional modules that register measurements/augmentations (if they exist)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for mod in _OPTIONAL_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    for mod in filter(None, (m.strip() for m in os.environ.get("STABKIT_PLUGINS", "").split(","))):
        importlib.import_module(mod)  # user modules registering measurements/augmentations


# ------------------------------------------------------------------------------------------- config
def _tuple(value: Any, kind: type = str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, int, float)):
        value = [value]
    return tuple(kind(v) for v in value)


def _opt(value: Any, kind: type) -> Any:
    return None if value is None else kind(value)


def _plain(value: Any) -> Any:
    """JSON-able canonical form (tuples -> lists, dict keys sorted, numpy scalars -> Python)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


@dataclass(frozen=True)
class RunConfig:
    """One run: what to train, how, and what to measure. Frozen; ``key`` (its hash) names its folder.

    Training fields left ``None`` are filled with the paper's values for ``task``/``net`` by
    ``stabkit.train.defaults`` when the config is created, so two spellings of the same run share a key.
    """
    # what
    task: str = "cifar10"                 # cifar10 | twopoints | scale1d
    net: str = "VGG11"                    # a name of stabkit.nets.NAMES
    net_options: Mapping = field(default_factory=dict)   # extra nets.build options (input_size is automatic)
    width_factor: float = 1.0
    task_options: Mapping = field(default_factory=dict)  # twopoints: d, xi, gap, norm, pbc; scale1d: L, xi, ...
    # data and seeds
    seed: int = 0                         # initialisation (torch.manual_seed before nets.build)
    data_seed: int | None = None          # training subset, data order, augmentation, noise (None: = seed)
    ptr: int | None = None                # training-set size (None: whole CIFAR-10 train set; twopoints: 1024)
    test_size: int | None = None          # test-set size (None: whole CIFAR-10 test set; twopoints: 4 ptr)
    noise_std: float = 0.0                # Fig. 1 Gaussian corruption of train and test images
    # training (None: paper default for task/net)
    epochs: int | None = None
    optimizer: str | None = None          # sgd | adam
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None           # cosine | constant
    loss: str | None = None               # ce | hinge
    batch_size: int | None = None
    augment: tuple | None = None          # names: crop, flip (+ AUGMENTATIONS, e.g. rotate)
    stop_at_zero_loss: bool | None = None
    fast: bool = False                    # CUDA only: bf16 autocast + channels_last
    # measurements
    measure: tuple = ("output", "layers", "spectra")     # names of MEASUREMENTS
    states: tuple = STATES                # init and/or trained (best-test checkpoint)
    shuffles: tuple = (0,)                # channel shuffling 0 (none), 1 (input channels), 2 (in+out)
    P: int = 500                          # probes
    probe_seed: int = 0                   # the same probes for every net of a sweep
    delta: float = 1.0                    # diffeo typical displacement (pixels) for CIFAR probes
    cut: int = 3                          # diffeo cut-off
    layers: Any = "all"                   # stability.measure layers: "all" | "output" | list of node names
    measure_dtype: str = "float64"        # forward dtype of stability.measure: float64 (reference) | float32
    options: Mapping = field(default_factory=dict)       # options of registered measurements, by name

    def __post_init__(self) -> None:
        from . import train as _train
        s = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass normalisation
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for k in ("net_options", "task_options", "options"):
            v = getattr(self, k)
            if v is None:
                v = {}
            if not isinstance(v, Mapping):
                raise ValueError(f"{k} must be a mapping, got {v!r}")
            s(k, _plain(dict(v)))
        if not isinstance(self.net, str):
            raise ValueError(f"net must be a network name (str), got {self.net!r}")
        d = _train.defaults(self.task, self.net)
        for k in ("epochs", "optimizer", "lr", "momentum", "weight_decay", "schedule", "loss", "batch_size",
                  "augment", "stop_at_zero_loss"):
            if getattr(self, k) is None:
                s(k, d[k])
        for k, kind in (("width_factor", float), ("noise_std", float), ("lr", float), ("momentum", float),
                        ("weight_decay", float), ("delta", float)):
            s(k, kind(getattr(self, k)))
        if self.data_seed is None:
            s("data_seed", self.seed)
        for k in ("seed", "data_seed", "epochs", "batch_size", "P", "probe_seed", "cut"):
            v = getattr(self, k)
            if isinstance(v, bool) or int(v) != v:
                raise ValueError(f"{k} must be an integer, got {v!r}")
            s(k, int(v))
        for k in ("ptr", "test_size"):
            s(k, _opt(getattr(self, k), int))
        if self.ptr is None and self.task != "cifar10":
            s("ptr", 1024)
        for k in ("stop_at_zero_loss", "fast"):
            s(k, bool(getattr(self, k)))
        s("augment", _tuple(self.augment))
        s("measure", _tuple(self.measure))
        s("states", _tuple(self.states))
        s("shuffles", _tuple(self.shuffles, int))
        if not isinstance(self.layers, str):
            s("layers", _tuple(self.layers))
        for st in self.states:
            if st not in STATES:
                raise ValueError(f"states must be a subset of {STATES}, got {self.states!r}")
        for sh in self.shuffles:
            if sh not in (0, 1, 2):
                raise ValueError(f"shuffles must be a subset of (0, 1, 2), got {self.shuffles!r}")
        for k, choices in (("optimizer", ("sgd", "adam")), ("schedule", ("cosine", "constant")),
                           ("loss", ("ce", "hinge")), ("measure_dtype", ("float64", "float32"))):
            if getattr(self, k) not in choices:
                raise ValueError(f"{k} must be one of {choices}, got {getattr(self, k)!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.P < 1:
            raise ValueError(f"epochs, batch_size and P must be >= 1, got {self.epochs}, {self.batch_size}, {self.P}")

    # -- identity
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (lists for tuples)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """Inverse of :meth:`to_dict`; ignores ``key``/``format``; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in ("key", "format")}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {unknown}; accepted: {sorted(names)}")
        return cls(**d)

    @property
    def key(self) -> str:
        """12 hex digits of sha256 over the canonical JSON of the config and FORMAT_VERSION."""
        blob = json.dumps({"format": FORMAT_VERSION, **self.to_dict()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def __hash__(self) -> int:
        return hash(self.key)

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with some fields changed (training defaults are not re-derived for explicit fields)."""
        return dataclasses.replace(self, **changes)

    @property
    def hinge(self) -> bool:
        return self.loss == "hinge"


def run_dir(config: RunConfig, root: str | Path | None = None) -> Path:
    """Folder of ``config`` under ``root`` (default :func:`default_runs_root`)."""
    return Path(root or default_runs_root()) / config.key


# --------------------------------------------------------------------------------- atomic file helpers
def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _tmp(path)
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def _write_table(path: Path, df: pd.DataFrame) -> None:
    tmp = _tmp(path)
    try:
        df.reset_index(drop=True).to_parquet(tmp, index=False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------ locks and states
_STALE_FOREIGN_S = 2 * 3600  # a lock from another host untouched this long is stale


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_alive(lock: Path) -> bool:
    try:
        info = json.loads(lock.read_text())
        age = time.time() - lock.stat().st_mtime
    except (OSError, ValueError):
        return False
    if info.get("host") == socket.gethostname():
        return _pid_alive(int(info.get("pid", -1)))
    return age < _STALE_FOREIGN_S


def run_state(path: str | Path) -> str:
    """State of a run folder: ``done``, ``failed``, ``running`` (live lock), ``interrupted`` (folder
    without done/failed marker and no live lock) or ``pending`` (no folder)."""
    path = Path(path)
    if (path / "done").exists():
        return "done"
    if not path.is_dir():
        return "pending"
    if (path / "lock").exists() and _lock_alive(path / "lock"):
        return "running"
    try:
        if json.loads((path / "status.json").read_text()).get("status") == "failed":
            return "failed"
    except (OSError, ValueError):
        pass
    return "interrupted"


@contextlib.contextmanager
def _locked(path: Path):
    """Hold ``path/lock`` (created exclusively); a stale lock (dead pid) is taken over. Yields a heartbeat
    function (touches the lock), or None if another live process holds it."""
    lock = path / "lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _lock_alive(lock):
                yield None
                return
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, fh)
        break
    else:
        yield None
        return
    try:
        yield lambda *_: os.utime(lock)
    finally:
        lock.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------- task data
@dataclass
class TaskData:
    """Tensors of one task, as the loaders and probes need them (built by :func:`_task_data`)."""
    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any
    in_channels: int
    input_size: int
    mean: Any = None
    std: Any = None
    test_positions: Any = None   # twopoints / scale1d: positions of the test samples (for probes)
    dataset: Any = None          # the task object (TwoPoints / ScaleDetection1D) when there is one


def _subset(x, y, n: int | None, seed: int, name: str):
    import torch
    if n is None or n >= len(y):
        if n is not None and n > len(y):
            raise ValueError(f"{name}={n} is larger than the {len(y)} available samples")
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def _task_data(cfg: RunConfig) -> TaskData:
    """Load/generate the data of ``cfg`` on the CPU (stabkit.data)."""
    from . import data
    import torch
    opts = dict(cfg.task_options)
    if cfg.task == "cifar10":
        root = opts.pop("root", None)
        if opts:
            raise ValueError(f"task_options for cifar10 accept only 'root', got {sorted(opts)}")
        tr_x, tr_y = data.cifar10_tensors(root=root, train=True)
        te_x, te_y = data.cifar10_tensors(root=root, train=False)
        tr_x, tr_y = _subset(tr_x, tr_y, cfg.ptr, cfg.data_seed, "ptr")
        te_x, te_y = _subset(te_x, te_y, cfg.test_size, 0, "test_size")  # same test subset for every seed
        return TaskData(tr_x, tr_y, te_x, te_y, 3, int(tr_x.shape[-1]), data.CIFAR10_MEAN, data.CIFAR10_STD)
    # the two-pixel tasks share one dataset protocol (data.PairTask)
    task_cls = data.TwoPoints if cfg.task == "twopoints" else data.ScaleDetection1D
    kw = dict(opts, ptr=cfg.ptr, seed=cfg.data_seed)
    if cfg.test_size is not None:
        kw.setdefault("testsize", cfg.test_size)
    tr, te = task_cls(train=True, **kw), task_cls(train=False, **kw)
    return TaskData(tr.x, tr.y, te.x, te.y, int(tr.x.shape[1]), int(tr.x.shape[-1]),
                    test_positions=te.positions, dataset=te)


def _loader(cfg: RunConfig, d: TaskData, device: str, *, train: bool, noise_std: float = 0.0, seed: int = 0):
    from . import data
    x, y = (d.train_x, d.train_y) if train else (d.test_x, d.test_y)
    aug = [a for a in cfg.augment if a in _BUILTIN_AUGMENT] if train else []
    if aug and cfg.task != "cifar10":
        raise ValueError(f"augment {aug} (crop/flip) is only defined for cifar10, not {cfg.task!r}")
    if aug and sorted(aug) != ["crop", "flip"]:
        raise ValueError(f"augment: 'crop' and 'flip' go together (DeviceLoader does both), got {cfg.augment}")
    return data.DeviceLoader(x, y, cfg.batch_size if train else max(cfg.batch_size, 512), shuffle=train,
                             augment=bool(aug), mean=d.mean, std=d.std, noise_std=noise_std, device=device,
                             seed=seed, extra_augment=_augment_fn(cfg) if train else None)


def _augment_fn(cfg: RunConfig) -> Callable | None:
    extra = [a for a in cfg.augment if a not in _BUILTIN_AUGMENT]
    if not extra:
        return None
    _load_plugins()
    missing = [a for a in extra if a not in AUGMENTATIONS]
    if missing:
        raise ValueError(f"unknown augment {missing}; accepted: {list(_BUILTIN_AUGMENT) + sorted(AUGMENTATIONS)}")
    fns = [AUGMENTATIONS[a] for a in extra]

    def apply(x, gen):
        for fn in fns:
            x = fn(x, gen)
        return x
    return apply


# --------------------------------------------------------------------------------------- run context
@dataclass
class RunContext:
    """What a measurement gets besides the model and the config.

    Attributes: ``cfg``, ``state`` ("init" | "trained"), ``device`` (str), ``run_dir`` (Path), ``data``
    (``TaskData``, CPU tensors: ``test_x`` raw as the task stores it, e.g. uint8 CIFAR images),
    ``train`` (``stabkit.train.TrainResult`` or None), ``batch_stats`` (True at init), ``cache`` (dict
    shared by the measurements of the run). Methods: ``probes()`` -> ``(x, x_tau, x_eta)`` normalised, on
    the device (the same for every net of a sweep); ``test_loader(noise_std=0.0)``; ``evaluate(model, loader=None) -> (loss, err)``;
    ``normalize(x)`` (raw images -> network input on the device); ``build_net()`` (fresh, same init seed);
    ``generator(offset=0)`` (CPU generator seeded from ``probe_seed``).
    """
    cfg: RunConfig
    state: str
    device: str
    run_dir: Path
    data: Any
    train: Any = None
    cache: dict = field(default_factory=dict)

    @property
    def batch_stats(self) -> bool:
        """Whether batch norm uses batch statistics (``True`` at initialisation, the paper's convention)."""
        return self.state == "init"

    def generator(self, offset: int = 0):
        import torch
        return torch.Generator().manual_seed(int(self.cfg.probe_seed) * 1_000_003 + int(offset))

    def normalize(self, x):
        import torch
        x = torch.as_tensor(x).to(self.device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.data.mean is not None:
            m = torch.as_tensor(self.data.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            s = torch.as_tensor(self.data.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - m) / s
        return x

    def test_loader(self, noise_std: float = 0.0):
        return _loader(self.cfg, self.data, self.device, train=False, noise_std=noise_std,
                       seed=self.cfg.data_seed + 1)

    def evaluate(self, model, loader=None) -> tuple[float, float]:
        from .train import evaluate
        return evaluate(model, loader if loader is not None else self.test_loader(), self.cfg.loss)

    def build_net(self):
        return _build_net(self.cfg, self.data).to(self.device)

    def probes(self):
        """``(x, x_tau, x_eta)``, float64 ``[P, C, ...]`` on the device, cached per run."""
        if "probes" not in self.cache:
            self.cache["probes"] = tuple(t.to(self.device) for t in _probes(self.cfg, self.data))
        return self.cache["probes"]


def _build_net(cfg: RunConfig, d: TaskData):
    from . import nets
    import torch
    torch.manual_seed(cfg.seed)
    opts = dict(cfg.net_options)
    opts.setdefault("input_size", d.input_size)
    return nets.build(cfg.net, in_channels=d.in_channels, num_classes=1 if cfg.hinge else 10,
                      width_factor=cfg.width_factor, **opts)


def _probes(cfg: RunConfig, d: TaskData):
    """Probe set of a run on the CPU: depends only on task/data options, P, probe_seed, delta, cut."""
    import torch
    from . import data
    gen = torch.Generator().manual_seed(cfg.probe_seed)
    if cfg.task == "cifar10":
        from .stability import draw_probes
        n = len(d.test_y)
        if cfg.P > n:
            raise ValueError(f"P={cfg.P} is larger than the test set ({n} images)")
        idx = torch.randperm(n, generator=gen)[: cfg.P]
        x = RunContext(cfg, "init", "cpu", Path("."), d).normalize(d.test_x[idx])
        return draw_probes(x, delta=cfg.delta, cut=cfg.cut, generator=gen)  # float64, CPU
    if cfg.task == "twopoints":
        return data.twopoints_probes(d.test_positions, d.input_size, cfg.P, gen)
    return data.scale1d_probes(d.dataset, P=cfg.P, generator=gen)


# ------------------------------------------------------------------------------ built-in measurements
def _shuffled(model, ctx: RunContext, shuffle: int):
    if shuffle == 0:
        return model
    from .stability import shuffle_channels
    return shuffle_channels(model, mode=shuffle, generator=ctx.generator(100 + shuffle))


def _stability(model, ctx: RunContext, shuffle: int) -> pd.DataFrame:
    """Layer-by-layer table of ``stability.measure`` for (state, shuffle), computed once per run."""
    key = ("stability", ctx.state, shuffle)
    if key not in ctx.cache:
        from .stability import measure
        m = _shuffled(model, ctx, shuffle)
        import torch
        ctx.cache[key] = measure(m, None, probes=ctx.probes(), layers=ctx.cfg.layers, batch_stats=ctx.batch_stats,
                                 dtype=getattr(torch, ctx.cfg.measure_dtype))
        ctx.cache[("model", ctx.state, shuffle)] = m
    return ctx.cache[key]


@register_measurement("layers")
def _measure_layers(model, cfg: RunConfig, ctx: RunContext) -> dict[str, pd.DataFrame]:
    """``layers``: stability.measure rows (every graph node) per shuffle in ``cfg.shuffles``."""
    tabs = [_stability(model, ctx, sh).assign(shuffle=sh) for sh in cfg.shuffles]
    return {"layers": pd.concat(tabs, ignore_index=True)}


@register_measurement("output")
def _measure_output(model, cfg: RunConfig, ctx: RunContext) -> dict[str, pd.DataFrame]:
    """``output``: D_f, G_f, R_f, D, G, deno, P of the output, test error (+ corrupted) per shuffle."""
    rows = []
    for sh in cfg.shuffles:
        tab = _stability(model, ctx, sh)
        out = tab.loc[tab["depth"].idxmax()]  # the last node in execution order: the network output
        row = {"shuffle": sh, **{k: float(out[k]) for k in ("D_f", "G_f", "R_f", "D", "G", "deno")},
               "P": int(out["P"]) if "P" in out else cfg.P}
        m = ctx.cache.get(("model", ctx.state, sh), model)
        row["test_err"] = ctx.evaluate(m)[1]
        if cfg.noise_std > 0:
            row["test_err_corrupted"] = ctx.evaluate(m, ctx.test_loader(cfg.noise_std))[1]
        rows.append(row)
    return {"output": pd.DataFrame(rows)}


@register_measurement("spectra")
def _measure_spectra(model, cfg: RunConfig, ctx: RunContext) -> dict[str, pd.DataFrame]:
    """``spectra``: laplacian.filter_spectra rows (channel shuffling leaves them unchanged)."""
    from .laplacian import filter_spectra
    return {"spectra": filter_spectra(model)}


# ------------------------------------------------------------------------------------------- one run
class RunLocked(RuntimeError):
    """Another live process holds the run's lock."""


def _device_name(device: str) -> str:
    import torch
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine() or "cpu"


def run(config: RunConfig | Mapping[str, Any], root: str | Path | None = None, *, device: str = "auto",
        progress: bool = True, force: bool = False) -> Path:
    """Train ``config`` and measure it in this process; return its folder ``<root>/<key>``.

    Already finished (``done``) runs are returned untouched unless ``force``. A leftover folder of an
    interrupted run is cleared and redone. On error, ``status.json`` (status failed) and ``error.txt``
    (traceback) are written and the exception is re-raised. Raises ``RuntimeError`` if another live
    process holds the run's lock.
    """
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    path = run_dir(cfg, root)
    if (path / "done").exists() and not force:
        return path
    path.mkdir(parents=True, exist_ok=True)
    with _locked(path) as heartbeat:
        if heartbeat is None:
            raise RunLocked(f"run {path} is being computed by another live process (lock file)")
        if (path / "done").exists() and not force:
            return path
        for child in path.iterdir():  # start clean: leftovers of an interrupted or failed attempt
            if child.name != "lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        _write_json(path / "config.json", {"key": cfg.key, "format": FORMAT_VERSION, **cfg.to_dict()})
        t0 = time.time()
        try:
            summary = _run_body(cfg, path, resolve_device(device), progress, heartbeat)
        except Exception as exc:  # Ctrl-C / SIGKILL leave an "interrupted" run, redone next time
            _atomic_write_text(path / "error.txt", traceback.format_exc())
            _write_json(path / "status.json", {"status": "failed", "key": cfg.key, "host": socket.gethostname(),
                                               "error": f"{type(exc).__name__}: {exc}"[:2000],
                                               "wall_seconds": time.time() - t0})
            raise
        summary["wall_seconds"] = time.time() - t0
        _write_table(path / "summary.parquet", pd.DataFrame([summary]))
        _write_json(path / "status.json", {"status": "done", **summary})
        _fsync_dir(path)
        (path / "done").touch()  # LAST
        _fsync_dir(path)
    return path


def _run_body(cfg: RunConfig, path: Path, device: str, progress: bool, heartbeat: Callable) -> dict:
    import torch
    from . import train as T
    _load_plugins()
    unknown = [m for m in cfg.measure if m not in MEASUREMENTS]
    if unknown:
        raise ValueError(f"unknown measurement(s) {unknown}; registered: {sorted(MEASUREMENTS)}")
    d = _task_data(cfg)
    model = _build_net(cfg, d).to(device)
    init_state = T._cpu_state(model)
    train_ld = _loader(cfg, d, device, train=True, noise_std=cfg.noise_std, seed=cfg.data_seed)
    test_ld = _loader(cfg, d, device, train=False, seed=cfg.data_seed + 1)
    extra = {"test_corrupted": _loader(cfg, d, device, train=False, noise_std=cfg.noise_std,
                                       seed=cfg.data_seed + 2)} if cfg.noise_std > 0 else {}
    t0 = time.time()
    res = T.train(model, train_ld, test_ld, task=cfg.task, net=cfg.net, epochs=cfg.epochs,
                  optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                  schedule=cfg.schedule, loss=cfg.loss, stop_at_zero_loss=cfg.stop_at_zero_loss,
                  extra_test_loaders=extra,
                  select_on="test_corrupted" if extra else "test", fast=cfg.fast, seed=cfg.data_seed,
                  checkpoint_dir=path, meta={"net": cfg.net, "config_hash": cfg.key}, progress=progress,
                  on_epoch=heartbeat)
    train_s = time.time() - t0
    _write_table(path / "metrics.parquet", res.metrics)
    t1, tables = time.time(), {}
    ctx_cache: dict = {}
    for state in cfg.states:
        if state == "init":
            model.load_state_dict(init_state)
        else:
            sd, _ = T.load_checkpoint(path / "best.pt", net=cfg.net, config_hash=cfg.key)
            model.load_state_dict(sd)
        model.eval()  # at init, measure() uses batch statistics (ctx.batch_stats)
        ctx = RunContext(cfg, state, device, path, d, res, ctx_cache)
        for name in cfg.measure:
            with torch.no_grad() if name in ("output", "layers", "spectra") else contextlib.nullcontext():
                out = MEASUREMENTS[name](model, cfg, ctx)
            if not isinstance(out, Mapping):
                raise TypeError(f"measurement {name!r} must return dict[str, DataFrame], got {type(out).__name__}")
            for tname, df in out.items():
                if tname in ("metrics", "summary"):
                    raise ValueError(f"measurement {name!r} may not write the reserved table {tname!r}")
                df = df.copy()
                if "state" not in df.columns:
                    df.insert(0, "state", state)
                tables.setdefault(tname, []).append(df)
        for k in [k for k in ctx_cache if isinstance(k, tuple) and k[1] == state]:
            del ctx_cache[k]  # free shuffled copies/activations of this state
        heartbeat()
    for tname, dfs in tables.items():
        _write_table(path / f"{tname}.parquet", pd.concat(dfs, ignore_index=True))
    best_row = res.metrics.iloc[res.best_epoch - 1]
    corrupted = {"best_test_err_corrupted": float(best_row["test_corrupted_err"])} if extra else {}
    return {"key": cfg.key, "status": "done", "best_test_err": res.best_test_err, **corrupted,
            "last_test_err": res.last_test_err, "best_epoch": res.best_epoch, "epochs_run": len(res.metrics),
            "stopped_early": res.stopped_early, "train_seconds": train_s, "measure_seconds": time.time() - t1,
            "device": device, "device_name": _device_name(device), "host": socket.gethostname(),
            "torch": torch.__version__, "finished": _dt.datetime.now(_dt.timezone.utc).isoformat()}


def remeasure(path: str | Path, *, measure: Sequence[str] | None = None, states: Sequence[str] | None = None,
              shuffles: Sequence[int] | None = None, P: int | None = None, device: str = "auto",
              out_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """Measure a finished run again (best checkpoint; "init" rebuilds the same initial weights) with other
    measurement options; returns the tables and writes them to ``out_dir`` if given (never into the run
    folder, whose tables belong to its configuration)."""
    import torch
    from . import train as T
    path = Path(path)
    cfg = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
    changes = {k: v for k, v in dict(measure=measure, states=states, shuffles=shuffles, P=P).items() if v is not None}
    cfg = dataclasses.replace(cfg, **changes)
    _load_plugins()
    unknown = [m for m in cfg.measure if m not in MEASUREMENTS]
    if unknown:
        raise ValueError(f"unknown measurement(s) {unknown}; registered: {sorted(MEASUREMENTS)}")
    dev = resolve_device(device)
    d = _task_data(cfg)
    model = _build_net(cfg, d).to(dev)
    init_state = T._cpu_state(model)
    tables: dict[str, list] = {}
    cache: dict = {}
    for state in cfg.states:
        if state == "init":
            model.load_state_dict(init_state)
        else:
            sd, meta = T.load_checkpoint(path / "best.pt", net=cfg.net)
            model.load_state_dict(sd)
        model.eval()
        ctx = RunContext(cfg, state, dev, path, d, None, cache)
        for name in cfg.measure:
            for tname, df in MEASUREMENTS[name](model, cfg, ctx).items():
                df = df.copy()
                if "state" not in df.columns:
                    df.insert(0, "state", state)
                tables.setdefault(tname, []).append(df)
    out = {k: pd.concat(v, ignore_index=True) for k, v in tables.items()}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for k, df in out.items():
            _write_table(Path(out_dir) / f"{k}.parquet", df)
    del torch
    return out


# -------------------------------------------------------------------------------------------- sweeps
@dataclass
class Sweep:
    """A sweep at one scale: ``name`` (file stem), ``scale``, ``configs`` (unique, in grid order)."""
    name: str
    scale: str
    configs: list[RunConfig]
    path: Path | None = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.configs]


def _sweep_path(spec: str | Path) -> Path:
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ValueError(f"sweep file {p} does not exist")
        return p
    cand = sweeps_dir() / f"{spec}.yaml"
    if not cand.is_file():
        avail = sorted(q.stem for q in sweeps_dir().glob("*.yaml")) if sweeps_dir().is_dir() else []
        raise ValueError(f"unknown sweep {spec!r}: no file {cand}; available: {avail}")
    return cand


def _grid_blocks(grid: Any, where: str) -> list[dict]:
    blocks = [grid] if isinstance(grid, Mapping) else list(grid or [{}])
    for b in blocks:
        if not isinstance(b, Mapping):
            raise ValueError(f"{where}: grid must be a mapping of lists or a list of such mappings, got {b!r}")
        for k, v in b.items():
            if not isinstance(v, list):
                raise ValueError(f"{where}: grid value of {k!r} must be a list (of values to sweep), got {v!r}")
    return [dict(b) for b in blocks] or [{}]


def load_sweep(spec: str | Path | Mapping, scale: str = "small") -> Sweep:
    """Expand a sweep file (or name under ``sweeps/``, or an already parsed mapping) at ``scale``.

    Format (YAML)::

        name: fig5_scale_detection        # optional, default: the file stem
        description: one line             # optional
        include:                          # optional: also the configs of other sweeps at this scale
          - other_sweep                   #   all of them, or a subset:
          - {sweep: fig5_scale_detection, where: {net: [VGG11bn], ptr: [1024]}}
        base: {task: twopoints, P: 500}   # fields of RunConfig shared by every run
        grid: {net: [VGG11, LeNet], seed: [0, 1]}   # product over the lists (or a list of such blocks:
                                                    # union of products)
        scales:                           # each scale overrides base and/or grid keys
          tiny:  {base: {epochs: 1, ptr: 64}, grid: {net: [LeNet]}}
          small: {base: {...}, grid: {...}}
          paper: {}

    A key set in a scale's ``base`` is removed from the grid (fixed) and vice versa; a scale's ``grid``
    given as a list of blocks replaces the grid. Values are RunConfig fields (lists for tuple fields).
    A sweep with ``include`` and no ``grid`` is exactly the included runs (same keys, same folders: no
    rework). Configurations are deduplicated by key, in order.
    """
    if isinstance(spec, Mapping):
        doc, path = dict(spec), None
    else:
        import yaml
        path = _sweep_path(spec)
        doc = yaml.safe_load(path.read_text()) or {}
    name = str(doc.get("name") or (path.stem if path else "sweep"))
    extra = sorted(k for k in doc if k not in ("name", "description", "include", "base", "grid", "scales")
                   and not str(k).startswith("_"))
    if extra:
        raise ValueError(f"sweep {name!r}: unknown top-level key(s) {extra}; accepted: name, description, include, "
                         f"base, grid, scales (keys starting with '_' are free, e.g. YAML anchors)")
    scales = doc.get("scales") or {}
    if scale not in scales:
        raise ValueError(f"sweep {name!r} has no scale {scale!r}; scales: {sorted(scales)}")
    over = scales[scale] or {}
    unknown = sorted(set(over) - {"base", "grid", "description"})
    if unknown:
        raise ValueError(f"sweep {name!r}, scale {scale!r}: unknown key(s) {unknown}; use 'base' and 'grid'")
    base = dict(doc.get("base") or {})
    blocks = _grid_blocks(doc.get("grid"), f"sweep {name!r}")
    sbase = dict(over.get("base") or {})
    sgrid = over.get("grid")
    if isinstance(sgrid, list):
        blocks = _grid_blocks(sgrid, f"sweep {name!r}, scale {scale!r}")
        sgrid = {}
    sgrid = _grid_blocks(sgrid or {}, f"sweep {name!r}, scale {scale!r}")[0]
    base.update(sbase)
    for k in sgrid:
        base.pop(k, None)
    blocks = [{**{k: v for k, v in b.items() if k not in sbase}, **sgrid} for b in blocks]
    configs: dict[str, RunConfig] = {}
    for inc in doc.get("include") or []:
        inc = {"sweep": inc} if isinstance(inc, (str, Path)) else dict(inc)
        where = dict(inc.get("where") or {})
        target = inc.get("sweep")
        if target is None or set(inc) - {"sweep", "where"}:
            raise ValueError(f"sweep {name!r}: include entries are names or "
                             f"{{sweep: name, where: {{field: [values]}}}}, got {inc!r}")
        if path is not None and (path.parent / f"{target}.yaml").is_file():
            target = path.parent / f"{target}.yaml"
        for c in load_sweep(target, scale).configs:
            if all(_matches(getattr(c, k, _MISSING), v, k) for k, v in where.items()):
                configs.setdefault(c.key, c)
    if doc.get("include") and not doc.get("grid") and not over.get("grid"):
        blocks = []  # a sweep made only of other sweeps' runs
    for b in blocks:
        keys = list(b)
        for values in itertools.product(*(b[k] for k in keys)):
            try:
                c = RunConfig.from_dict({**base, **dict(zip(keys, values))})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"sweep {name!r}, scale {scale!r}: bad configuration: {exc}") from exc
            configs.setdefault(c.key, c)
    desc = str(over.get("description") or doc.get("description") or "")
    return Sweep(name, scale, list(configs.values()), path, desc)


_MISSING = object()


def _matches(value: Any, allowed: Any, field_name: str) -> bool:
    if value is _MISSING:
        raise ValueError(f"include/where: unknown RunConfig field {field_name!r}")
    allowed = allowed if isinstance(allowed, list) else [allowed]
    value = list(value) if isinstance(value, tuple) else value
    return any(value == (list(a) if isinstance(a, tuple) else a) for a in allowed)


def _as_sweep(spec: str | Path | Mapping | Sweep, scale: str | None) -> Sweep:
    return spec if isinstance(spec, Sweep) else load_sweep(spec, scale or "small")


def _guarded(cfg_dict: dict, root: str, device: str, progress: bool = False) -> tuple[str, str, str]:
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
    return _guarded(cfg_dict, root, _WORKER_DEVICE, False)


def sweep(spec: str | Path | Mapping | Sweep, scale: str = "small", root: str | Path | None = None,
          executor: Any = "local", jobs: int = 1, *, device: str = "auto", slots_per_gpu: int = 1,
          retry_failed: bool = False, progress: bool = True, submitit_params: Mapping | None = None,
          submitit_folder: str | Path | None = None, wait_running: bool = True, poll_s: float = 2.0) -> pd.DataFrame:
    """Run every configuration of a sweep that is not finished; return one row per config
    (key, net, status in {done, failed, running, pending}, error, run_dir).

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
    sw = _as_sweep(spec, scale)
    root = Path(root or default_runs_root())
    root.mkdir(parents=True, exist_ok=True)
    if not isinstance(jobs, int) or jobs < 1:
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
                k, st, err = _guarded(*a, dev, progress)
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
                     "error": err or (_error_line(root / c.key) if st == "failed" else ""),
                     "run_dir": str(root / c.key)})
    out = pd.DataFrame(rows, columns=["key", "net", "status", "error", "run_dir"])
    n_failed = int((out.status == "failed").sum())
    if n_failed and progress:
        print(f"{sw.name}/{sw.scale}: {n_failed} failed run(s); see error.txt in:\n  "
              + "\n  ".join(out.run_dir[out.status == "failed"]), file=sys.stderr)
    return out


_run_sweep = sweep  # `results` and `collect` take a parameter named sweep


def _error_line(path: Path) -> str:
    try:
        return str(json.loads((path / "status.json").read_text()).get("error", ""))
    except (OSError, ValueError):
        return ""


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
            raise ValueError(f"executor must be 'local', 'slurm', 'submitit-local', 'submitit-debug' or a "
                             f"submitit Executor, got {executor!r}")
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
        js = ex.map_array(_guarded, [a[0] for a in part], [a[1] for a in part], [device] * len(part),
                          [False] * len(part))
        for a, j in zip(part, js):
            try:
                k, st, err = j.result()
            except Exception as exc:  # noqa: BLE001 - the job itself failed (killed, timeout...)
                k, st, err = RunConfig.from_dict(a[0]).key, "failed", f"job failed: {str(exc)[-500:]}"
            out[k] = (st, err)
            bar.update()
    return out


# ------------------------------------------------------------------------------- collect and status
def _config_columns(cfg: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        if k in ("format",):
            continue
        if isinstance(v, list):
            v = ",".join(str(x) for x in v)
        elif isinstance(v, dict):
            v = json.dumps(v, sort_keys=True)
        out[k] = v
    return out


def _run_dirs(root: Path, sw: Sweep | None) -> list[Path]:
    if sw is not None:
        return [root / k for k in sw.keys]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())


def collect(root: str | Path | None = None, table: str = "output", sweep: str | Path | Mapping | Sweep | None = None,
            scale: str | None = None) -> pd.DataFrame:
    """Gather ``<table>.parquet`` of every finished run (``done`` marker present) under ``root`` (or of
    the runs of ``sweep`` at ``scale``) into one DataFrame, with the configuration columns appended
    (``run`` = key; list fields joined by commas, mapping fields as JSON). Unfinished runs are never read.
    ``table="summary"`` also lists failed runs (status failed, error)."""
    root = Path(root or default_runs_root())
    sw = _as_sweep(sweep, scale) if sweep is not None else None
    frames = []
    for p in _run_dirs(root, sw):
        st = run_state(p)
        if st == "done":
            f = p / f"{table}.parquet"
            if not f.is_file():
                continue
            df = pd.read_parquet(f)
        elif st == "failed" and table == "summary":
            df = pd.DataFrame([{"key": p.name, "status": "failed", "error": _error_line(p)}])
        else:
            continue
        cfg = _config_columns(json.loads((p / "config.json").read_text()))
        cfg["run"] = cfg.pop("key", p.name)
        for k, v in cfg.items():
            if k not in df.columns:
                df[k] = [v] * len(df)
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # concat of all-NA columns (e.g. ptr None)
        return pd.concat(frames, ignore_index=True)


def status(root: str | Path | None = None, sweep: str | Path | Mapping | Sweep | None = None,
           scale: str | None = None) -> dict[str, int]:
    """Counts ``{"total", "done", "pending", "failed", "running"}`` of a sweep's runs (or of every run
    folder under ``root``); interrupted runs count as pending."""
    root = Path(root or default_runs_root())
    sw = _as_sweep(sweep, scale) if sweep is not None else None
    counts = dict(total=0, done=0, pending=0, failed=0, running=0)
    for p in _run_dirs(root, sw):
        st = run_state(p)
        counts["total"] += 1
        counts["pending" if st in ("pending", "interrupted") else st] += 1
    return counts


def results(sweep: str | Path | Mapping | Sweep, scale: str = "small", table: str = "output", *,
            runs_root: str | Path | None = None, results_root: str | Path | None = None,
            run_missing: bool = True, device: str = "auto", jobs: int = 1, progress: bool = True) -> pd.DataFrame:
    """The notebooks' entry point: the tidy ``table`` of ``sweep`` at ``scale``.

    1. ``<results_root>/<sweep>/<scale>/<table>.parquet`` if committed (e.g. produced on a GPU), else
    2. run the sweep's missing and failed runs (if ``run_missing``; progress bar) under ``runs_root`` and
    3. :func:`collect` them. Warns if some runs failed; raises ``RuntimeError`` if nothing is available.
    """
    sw = _as_sweep(sweep, scale)
    committed = Path(results_root or default_results_root()) / sw.name / sw.scale / f"{table}.parquet"
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


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def export(sweep: str | Path | Mapping | Sweep, scale: str = "small", runs_root: str | Path | None = None,
           out_dir: str | Path | None = None) -> Path:
    """Write every collected table of a sweep (``<table>.parquet``) and ``provenance.json`` (code commit,
    dirty flag, versions, devices/GPU models, wall time per run, counts) to ``out_dir`` (default
    ``<results_root>/<sweep>/<scale>``), for committing results produced elsewhere. Returns ``out_dir``."""
    import torch
    sw = _as_sweep(sweep, scale)
    root = Path(runs_root or default_runs_root())
    out = Path(out_dir or default_results_root() / sw.name / sw.scale)
    out.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    for p in _run_dirs(root, sw):
        if run_state(p) == "done":
            names.update(f.stem for f in p.glob("*.parquet"))
    written = []
    for t in sorted(names):
        df = collect(root, t, sw)
        if not df.empty:
            _write_table(out / f"{t}.parquet", df)
            written.append(t)
    summ = collect(root, "summary", sw)
    runs = [] if summ.empty else [
        {k: (None if isinstance(r.get(k), float) and math.isnan(r.get(k)) else r.get(k))
         for k in ("run", "net", "status", "device", "device_name", "host", "wall_seconds", "train_seconds",
                   "measure_seconds", "epochs_run", "best_test_err", "error") if k in r}
        for r in summ.to_dict("records")]
    prov = {"sweep": sw.name, "scale": sw.scale, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "code_commit": _git("rev-parse", "HEAD"), "code_dirty": bool(_git("status", "--porcelain")),
            "format_version": FORMAT_VERSION, "python": platform.python_version(), "torch": torch.__version__,
            "host": socket.gethostname(), "tables": written, "counts": status(root, sw),
            "devices": sorted({str(r.get("device_name")) for r in runs if r.get("device_name")}),
            "total_wall_seconds": float(sum(r.get("wall_seconds") or 0 for r in runs)), "runs": runs}
    _write_json(out / "provenance.json", prov)
    return out
