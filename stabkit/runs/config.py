"""One run as a frozen, hashable configuration (torch-free).

A :class:`RunConfig` says what to train (task, network, data), how (the training protocol of
``book/methods.md``, section "Tasks, networks and training", unless overridden) and what to measure.
Its :attr:`~stabkit.runs.RunConfig.key`, 12 hex digits of a hash of every field and ``FORMAT_VERSION``, names the
run's folder, so the same configuration is never trained twice.

Keys are a contract with every run folder already computed: a change here that alters the key of an
existing configuration orphans hours of training. A new field must therefore be left out of the key while
it holds its default (see :meth:`~stabkit.runs.RunConfig.to_dict`), and the tests pin the keys of real runs.

The strict value checks (``strict_*``: no coercion, errors naming where the value was) check the fields here and
the measurements' ``options`` (:mod:`~stabkit.runs.measurements`, :mod:`~stabkit.runs.probe_measurements`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checks import check_choice, check_float, check_int
from ..protocol import LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULES, TASKS, training_defaults

__all__ = ["FORMAT_VERSION", "TASKS", "STATES", "SHUFFLES", "MEASURE_DTYPES", "DERIVED_FIELDS", "RunConfig",
           "MEASUREMENT_FIELDS", "KEY_SPELLINGS", "key_spelling", "training_key", "plain", "strict_int", "strict_bool",
           "strict_list", "strict_real", "strict_mapping", "refuse_unknown_keys"]

#: Version of the run format and of the code's numerical conventions; part of every run's hash, so bump it
#: when a change of the code must invalidate earlier runs.
FORMAT_VERSION = 1
STATES = ("init", "trained")
SHUFFLES = (0, 1, 2)
MEASURE_DTYPES = ("float64", "float32")
#: Fields filled from the task and network when left ``None`` (training protocol, training-set size, data
#: seed). :meth:`~stabkit.runs.RunConfig.replace` derives them again when the task, net or seed changes, unless they
#: were set explicitly.
DERIVED_FIELDS = ("epochs", "optimizer", "lr", "momentum", "weight_decay", "schedule", "loss", "batch_size",
                  "augment", "stop_at_zero_loss", "ptr", "data_seed")
_TRAINING_FIELDS = DERIVED_FIELDS[:10]

#: Fields that only change what is measured on a trained network; every other field (a new one included)
#: decides the network itself. Runs whose other fields agree share a :attr:`~stabkit.runs.RunConfig.training_key`.
MEASUREMENT_FIELDS = ("measure", "states", "shuffles", "P", "probe_seed", "delta", "cut", "layers",
                      "measure_dtype", "options")


#: Names renamed after runs were committed: field -> {new name: old name}. A run's key and training key
#: hash the old name (:func:`key_spelling`), so every committed run keeps its key; a configuration read
#: with the old name (a ``config.json`` written before the rename) holds the new one. ``config.json``,
#: tables and code say the new name; ``tools/migrate_interpolation.py`` renamed it in ``results/`` once.
KEY_SPELLINGS: dict[str, dict[str, str]] = {"net_options": {"interpolation": "interp"}}


def key_spelling(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (a config dict) with the names of ``KEY_SPELLINGS`` spelled as the keys hash them."""
    out = dict(config)
    for name, renames in KEY_SPELLINGS.items():
        v = out.get(name)
        if isinstance(v, Mapping) and any(k in v for k in renames):
            out[name] = {renames.get(k, k): x for k, x in v.items()}
    return out


def _current_spelling(name: str, value: dict) -> dict:
    """``value`` of field ``name`` with the old names of ``KEY_SPELLINGS`` replaced by the new ones."""
    old_to_new = {old: new for new, old in KEY_SPELLINGS.get(name, {}).items()}
    if not any(k in value for k in old_to_new):
        return value
    both = sorted(k for k in old_to_new if old_to_new[k] in value and k in value)
    if both:
        raise ValueError(f"{name} gives both {both[0]!r} and {old_to_new[both[0]]!r} (the same option; "
                         f"{old_to_new[both[0]]!r} is its name)")
    return {old_to_new.get(k, k): v for k, v in value.items()}


def training_key(config: Mapping[str, Any]) -> str:
    """12 hex digits of sha256 over the fields of a config dict (``RunConfig.to_dict()`` or a run's
    ``config.json``) outside ``MEASUREMENT_FIELDS``: equal for runs that train the same network."""
    train = {k: v for k, v in key_spelling(config).items() if k not in (*MEASUREMENT_FIELDS, "key", "format")}
    blob = json.dumps({"format": FORMAT_VERSION, **train}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]

def _tuple(value: Any, kind: type = str, name: str = "value") -> tuple:
    """A tuple field from a list (or one item): names must be strings, numbers integers (``0.5`` is
    refused, never truncated to ``0``)."""
    if value is None:
        return ()
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list, got {value!r}")
    if kind is int:
        return tuple(_integer(f"{name} item", v) for v in value)
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{name} must be a list of names (strings), got {list(value)!r}")
    return tuple(value)


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

    Fields of :data:`~stabkit.runs.config.DERIVED_FIELDS` left ``None`` are filled with the paper's values for
    ``task``/``net`` (``stabkit.protocol.training_defaults``; ``ptr`` 1024 for the scale-detection tasks; ``data_seed``
    = ``seed``) when the config is created, so two spellings of the same run share a key. The config
    remembers which of them were given explicitly (not part of the key or of equality), so that
    :meth:`replace` re-derives the others. Creating a config runs the torch-free checks (types, ranges,
    choices); the checks against the registries (``net`` names a network of ``stabkit.nets.list_models()``,
    options, measurements, the network builds for the task) are :func:`stabkit.runs.validate`, which a run, a
    sweep and the command line call before training.
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
    schedule: str | None = None           # cosine (T = 0.8 epochs) | cosine_to_zero (T = epochs) | constant
    loss: str | None = None               # ce | hinge
    batch_size: int | None = None
    augment: tuple | None = None          # names: crop, flip (+ AUGMENTATIONS, e.g. rotate)
    stop_at_zero_loss: bool | None = None
    fast: bool = False                    # CUDA only: bf16 autocast + channels_last
    precision: str = "float32"            # training arithmetic: float32 | bf16 (autocast, CPU or CUDA)
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
            s(k, _current_spelling(k, plain(strict_mapping(k, getattr(self, k)))))
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
            strict_bool(k, getattr(self, k))
        s("augment", _tuple(self.augment, name="augment"))
        s("measure", _tuple(self.measure, name="measure"))
        s("states", _tuple(self.states, name="states"))
        s("shuffles", _tuple(self.shuffles, int, "shuffles"))
        if not isinstance(self.layers, str):
            s("layers", _tuple(self.layers, name="layers"))
        for st in self.states:
            if st not in STATES:
                raise ValueError(f"states must be a subset of {STATES}, got {self.states!r}")
        for sh in self.shuffles:
            if sh not in SHUFFLES:
                raise ValueError(f"shuffles must be a subset of {SHUFFLES}, got {self.shuffles!r}")
        for k, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("loss", LOSSES),
                           ("measure_dtype", MEASURE_DTYPES), ("precision", PRECISIONS)):
            check_choice(k, getattr(self, k), choices)
        if self.epochs < 1 or self.batch_size < 1 or self.P < 1:
            raise ValueError(f"epochs, batch_size and P must be >= 1, got {self.epochs}, {self.batch_size}, {self.P}")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Torch-free value checks (every message names the field and what it accepts)."""
        for k, lo, strict in (("width_factor", 0.0, True), ("lr", 0.0, True), ("noise_std", 0.0, False),
                              ("momentum", 0.0, False), ("weight_decay", 0.0, False), ("delta", 0.0, False)):
            v = getattr(self, k)
            if (v <= lo) if strict else (v < lo):
                raise ValueError(f"{k} must be {'>' if strict else '>='} {lo:g}, got {v!r}")
        if self.cut < 2:
            raise ValueError(f"cut must be an integer >= 2 (diffeomorphism mode cut-off), got {self.cut}")
        for k in ("ptr", "test_size"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ValueError(f"{k} must be >= 1 or None, got {v}")
        for k in ("measure", "states", "shuffles", "augment"):
            v = getattr(self, k)
            dup = sorted({x for x in v if v.count(x) > 1}, key=str)
            if dup:
                raise ValueError(f"{k} lists {dup} more than once (the tables would repeat rows), got {list(v)}")
        if isinstance(self.layers, str):
            check_choice("layers", self.layers, ("all", "output"))
        elif not self.layers or not all(isinstance(n, str) and n for n in self.layers):
            raise ValueError(f"layers must be 'all', 'output' or a non-empty list of node names, got "
                             f"{list(self.layers)!r}")

    # -- identity
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (lists for tuples); what ``config.json`` holds and the key
        hashes. Fields added after runs were committed are left out while they hold their default
        (``_KEY_NEUTRAL_DEFAULTS``), so that every earlier run keeps its key."""
        out = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        for k, default in _KEY_NEUTRAL_DEFAULTS.items():
            if out.get(k) == default:
                del out[k]
        return out

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
        """12 hex digits of sha256 over the canonical JSON of the config (names of ``KEY_SPELLINGS``
        as they were) and FORMAT_VERSION."""
        blob = json.dumps({"format": FORMAT_VERSION, **key_spelling(self.to_dict())}, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def training_key(self) -> str:
        """:func:`~stabkit.runs.training_key` of this config: runs that differ only in what they
        measure (``MEASUREMENT_FIELDS``) train the same network and share it."""
        return training_key(self.to_dict())

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def explicit(self) -> frozenset[str]:
        """The fields of :data:`~stabkit.runs.config.DERIVED_FIELDS` that were given a value (not derived from
        task/net/seed)."""
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

    def options_of(self, measurement: str) -> dict:
        """The options of a measurement (``options.<measurement>``) as a new dict; ``{}`` when it has none."""
        return dict((self.options or {}).get(measurement) or {})


#: Fields added after runs were committed, and the default at which they stay out of the key.
_KEY_NEUTRAL_DEFAULTS = {"precision": "float32"}


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


# ------------------------------------------------------------------- strict values (no coercion)
#: Checks of values read from a configuration document (YAML or JSON): a value of the wrong kind is refused with
#: a ``ValueError`` naming where it was (``where``), never converted (``"no"`` is no ``False``, ``0.5`` no ``0``).
def strict_int(where: str, v: Any, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (an integral float such as ``4.0`` is accepted, a bool or ``0.5`` is not)."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {v!r}")
    return v


def strict_bool(where: str, v: Any) -> bool:
    """A bool (``bool("no")`` is True: a string or a number is a mistake, not a flag)."""
    if not isinstance(v, bool):
        raise ValueError(f"{where} must be true or false, got {v!r}")
    return v


def strict_list(where: str, v: Any, one: Callable[[str, Any], Any]) -> list:
    """A non-empty list whose items ``one(where, item)`` accepts (a single value counts as a list of it)."""
    items = list(v) if isinstance(v, (list, tuple)) else [v]
    if not items:
        raise ValueError(f"{where} must be a non-empty list, got {v!r}")
    return [one(where, x) for x in items]


def strict_real(where: str, v: Any) -> float:
    """A finite int or float (a bool or a string is refused), as a float."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{where} must be a finite number, got {v!r}")
    return float(v)


def strict_mapping(where: str, v: Any) -> dict:
    """A mapping as a new dict (``None``: empty)."""
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ValueError(f"{where} must be a mapping, got {v!r}")
    return dict(v)


def refuse_unknown_keys(where: str, o: dict, accepted: tuple[str, ...]) -> None:
    """``ValueError`` naming the keys left in ``o`` (those a parser did not take) and the ``accepted`` ones."""
    if o:
        raise ValueError(f"{where}: unknown key(s) {sorted(o)}; accepted: {', '.join(accepted)}")
