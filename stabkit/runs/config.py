"""One run as a frozen, hashable configuration (torch-free).

A :class:`RunConfig` says what to train (task, network, data), how (the training protocol of
``book/methods.md``, section "Tasks, networks and training", unless overridden) and what to measure.
Its :attr:`RunConfig.key`, 12 hex digits of a hash of every field and :data:`FORMAT_VERSION`, names the
run's folder, so the same configuration is never trained twice.

Keys are a contract with every run folder already computed: a change here that alters the key of an
existing configuration orphans hours of training. A new field must therefore be left out of the key while
it holds its default (see :meth:`RunConfig.to_dict`), and the tests pin the keys of real runs.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checks import check_choice, check_float, check_int
from ..protocol import LOSSES, OPTIMIZERS, SCHEDULES, TASKS, training_defaults

__all__ = ["FORMAT_VERSION", "TASKS", "STATES", "SHUFFLES", "MEASURE_DTYPES", "DERIVED_FIELDS", "RunConfig",
           "plain", "deferred_registry_checks", "known_nets"]

#: Version of the run format and of the code's numerical conventions; part of every run's hash, so bump it
#: when a change of the code must invalidate earlier runs.
FORMAT_VERSION = 1
STATES = ("init", "trained")
SHUFFLES = (0, 1, 2)
MEASURE_DTYPES = ("float64", "float32")
#: Fields filled from the task and network when left ``None`` (training protocol, training-set size, data
#: seed). :meth:`RunConfig.replace` derives them again when the task, net or seed changes, unless they
#: were set explicitly.
DERIVED_FIELDS = ("epochs", "optimizer", "lr", "momentum", "weight_decay", "schedule", "loss", "batch_size",
                  "augment", "stop_at_zero_loss", "ptr", "data_seed")
_TRAINING_FIELDS = DERIVED_FIELDS[:10]

# Registry checks (is `net` a network of stabkit.nets?) import torch; `load_sweep` defers them so that
# reading a sweep file stays torch-free, and `Sweep.validate` runs them before anything is trained.
_REGISTRY_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("stabkit_runs_registry_checks",
                                                                        default=True)


@contextlib.contextmanager
def deferred_registry_checks() -> Iterator[None]:
    """Inside this block, new :class:`RunConfig` objects skip the checks that need the network registry
    (and hence torch); call :meth:`RunConfig.check_registries` on them later."""
    token = _REGISTRY_CHECKS.set(False)
    try:
        yield
    finally:
        _REGISTRY_CHECKS.reset(token)


def known_nets() -> tuple[str, ...]:
    """Names a run may train: ``stabkit.nets.list_models()`` (imports torch)."""
    from .. import nets
    if hasattr(nets, "list_models"):
        return tuple(nets.list_models())
    return tuple(nets.NAMES)  # before the nets package: a tuple frozen at import


def _tuple(value: Any, kind: type = str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, int, float)):
        value = [value]
    return tuple(kind(v) for v in value)


def plain(value: Any) -> Any:
    """JSON-able canonical form (tuples -> lists, dict keys sorted, numpy scalars -> Python)."""
    if isinstance(value, Mapping):
        return {str(k): plain(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


@dataclass(frozen=True)
class RunConfig:
    """One run: what to train, how, and what to measure. Frozen; ``key`` (its hash) names its folder.

    Fields of :data:`DERIVED_FIELDS` left ``None`` are filled with the paper's values for ``task``/``net``
    (``stabkit.protocol.training_defaults``; ``ptr`` 1024 for the scale-detection tasks; ``data_seed`` =
    ``seed``) when the config is created, so two spellings of the same run share a key. The config
    remembers which of them were given explicitly (not part of the key or of equality), so that
    :meth:`replace` re-derives the others. ``net`` must name a network of ``stabkit.nets.list_models()``.
    """
    # what
    task: str = "cifar10"                 # cifar10 | twopoints | scale1d
    net: str = "VGG11"                    # a name of stabkit.nets.list_models()
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
        s = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass normalisation
        check_choice("task", self.task, TASKS)
        s("_explicit", frozenset(k for k in DERIVED_FIELDS if getattr(self, k) is not None))
        for k in ("net_options", "task_options", "options"):
            v = getattr(self, k)
            if v is None:
                v = {}
            if not isinstance(v, Mapping):
                raise ValueError(f"{k} must be a mapping, got {v!r}")
            s(k, plain(dict(v)))
        if not isinstance(self.net, str) or not self.net:
            raise ValueError(f"net must be a network name (str), got {self.net!r}")
        d = training_defaults(self.task, self.net)
        for k in _TRAINING_FIELDS:
            if getattr(self, k) is None:
                s(k, d[k])
        for k in ("width_factor", "noise_std", "lr", "momentum", "weight_decay", "delta"):
            s(k, _real(k, getattr(self, k)))
        if self.data_seed is None:
            s("data_seed", self.seed)
        for k in ("seed", "data_seed", "epochs", "batch_size", "P", "probe_seed", "cut"):
            s(k, _integer(k, getattr(self, k)))
        for k in ("ptr", "test_size"):
            v = getattr(self, k)
            s(k, None if v is None else _integer(k, v))
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
            if sh not in SHUFFLES:
                raise ValueError(f"shuffles must be a subset of {SHUFFLES}, got {self.shuffles!r}")
        for k, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("loss", LOSSES),
                           ("measure_dtype", MEASURE_DTYPES)):
            check_choice(k, getattr(self, k), choices)
        if self.epochs < 1 or self.batch_size < 1 or self.P < 1:
            raise ValueError(f"epochs, batch_size and P must be >= 1, got {self.epochs}, {self.batch_size}, {self.P}")
        if _REGISTRY_CHECKS.get():
            self.check_registries()

    def check_registries(self) -> None:
        """The checks that need the registries (imports torch): ``net`` names a network of
        ``stabkit.nets.list_models()``. Run at creation unless inside :func:`deferred_registry_checks`."""
        names = known_nets()
        if self.net not in names:
            raise ValueError(f"net must be one of stabkit.nets.list_models() {sorted(names)}, got {self.net!r}")

    # -- identity
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (lists for tuples); what ``config.json`` holds and the key
        hashes."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`; ignores ``key``/``format``; unknown keys raise ``ValueError``.

        Every field present in ``d`` counts as explicit (see :meth:`replace`), including a config read
        back from a run's ``config.json``."""
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

    @property
    def explicit(self) -> frozenset[str]:
        """The fields of :data:`DERIVED_FIELDS` that were given a value (not derived from task/net/seed)."""
        return self._explicit  # type: ignore[attr-defined]

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed. Derived fields that were not set explicitly are derived again
        for the new task/net/seed: ``RunConfig(task="twopoints", net="VGG11").replace(task="cifar10") ==
        RunConfig(task="cifar10", net="VGG11")`` (same key); explicit ones are kept. Setting a derived
        field to ``None`` makes it derived again."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {unknown}")
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        kw.update({k: None for k in DERIVED_FIELDS if k not in self.explicit})
        kw.update(changes)
        return type(self)(**kw)

    @property
    def hinge(self) -> bool:
        return self.loss == "hinge"


def _real(name: str, value: Any) -> float:
    """A finite float; a numeric string is accepted because YAML 1.1 reads ``1e-3`` as a string."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name} must be a real number, got {value!r}") from None
    try:
        return check_float(name, value)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _integer(name: str, value: Any) -> int:
    """An int, also from an integral float such as 1.0 (YAML/JSON spellings); bools refused."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return check_int(name, value)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
