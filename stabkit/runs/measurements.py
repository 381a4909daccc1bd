"""What a run measures: the registries and every built-in measurement and augmentation.

A measurement is ``fn(model, cfg, ctx) -> {table name: DataFrame}``, called once per state of
``cfg.states`` by the run's measurement loop (:func:`~stabkit.runs.execute.measure_states`). Built in:

- ``output``, ``layers``: diffeomorphism / noise stabilities (``book/methods.md``, section "Stabilities"),
  with and without channel shuffling (section "Channel shuffling");
- ``spectra``: grid-Laplacian spectra of the filters (section "Grid-Laplacian spectra of filters");
- ``recalibrated``: the channel-shuffle control with batch-norm running statistics re-estimated on training
  images after shuffling (section "Channel shuffling"; :mod:`stabkit.batchnorm`);
- ``accuracy``, ``invariance``, ``resolution``: the related probes of ``book/probes.md`` (accuracy under a
  transform family, rotation invariance per layer, resolution transfer), and the augmentation ``rotate``
  (:func:`stabkit.robustness.rotate_augment`), defined in :mod:`~stabkit.runs.probe_measurements` and
  registered here with their facts; ``crop`` and ``flip`` are done by the loader itself.

A user adds one with :func:`~stabkit.runs.register_measurement` / :func:`~stabkit.runs.register_augmentation`, in a
module named in ``$STABKIT_PLUGINS`` (comma-separated) when it must be found by the command line. This module imports
torch only inside the measurements: the core modules they call (stability, laplacian, batchnorm) import torch, and
the registry and its facts are read while a sweep loads, without torch; so each is imported in the function that
uses it.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..protocol import RELU_CONVENTIONS
from .config import RunConfig, refuse_unknown_keys, strict_int
from .probe_measurements import (accuracy_options, invariance_options, measure_accuracy, measure_invariance,
                                 measure_resolution, resolution_options, rotate)

__all__ = ["MEASUREMENTS", "MEASUREMENT_FACTS", "MeasurementFacts", "AUGMENTATIONS", "BUILTIN_AUGMENT",
           "OPTION_CHECKS", "measurement_tables", "known_tables", "register_measurement", "register_augmentation",
           "load_plugins", "check_measurements", "relu_conventions", "check_options"]

MEASUREMENTS: dict[str, Callable[..., dict[str, pd.DataFrame]]] = {}
"""name -> ``fn(model, cfg, ctx) -> {table name: DataFrame}``. Called once per state in ``cfg.states``
(``ctx.state`` is "init" or "trained"; ``model`` is the net in that state, on ``ctx.device``, in eval mode;
``ctx.batch_stats`` is True at "init", where the paper uses batch-norm batch statistics); a ``state``
column is added to every returned table if missing, and tables of the same name are concatenated over states."""
AUGMENTATIONS: dict[str, Callable] = {}
"""name -> ``fn(x, generator) -> x`` applied on the device to each training batch after the loader's
crop/flip and before normalisation (``data.DeviceLoader(extra_augment=...)``: CIFAR images in [0, 1]);
``generator`` lives on the device. ``"crop"`` and ``"flip"`` are built in (done by the loader)."""
BUILTIN_AUGMENT = ("crop", "flip")


@dataclass(frozen=True)
class MeasurementFacts:
    """What a measurement declares where it is registered (``register_measurement()``).

    ``tables``: the tables it always writes (a finished run must have them; ``None``: not declared, not
    checked); ``optional_tables``: those it writes depending on its options; ``grad``: whether it needs
    gradients (``False``: the measurement loop runs it under ``torch.no_grad()``; ``True``: it manages
    gradients itself, e.g. ``accuracy`` with gradient saliency); ``probes``: whether it measures the run's
    probe set (then ``P`` is checked against the test set and ``layers`` against the network's graph
    before training).
    """
    tables: tuple[str, ...] | None = None
    optional_tables: tuple[str, ...] = ()
    grad: bool = True
    probes: bool = False


MEASUREMENT_FACTS: dict[str, MeasurementFacts] = {}
"""name -> ``MeasurementFacts``, for every name of :data:`MEASUREMENTS`."""
OPTION_CHECKS: dict[str, Callable[[dict], Any]] = {}
"""name -> ``check(options: dict) -> parsed``: parses a measurement's ``options.<name>`` (``ValueError``
naming the key and the accepted values); the measurement parses its options with the same function, and
:func:`check_options` calls it when a configuration is validated, before anything is trained."""
_plugins_loaded = False


def _registrar(registry: dict, what: str, name: str, overwrite: bool) -> Callable:
    def deco(fn: Callable) -> Callable:
        if name in registry and not overwrite and registry[name] is not fn:
            raise ValueError(f"{what} {name!r} is already registered (pass overwrite=True to replace it)")
        registry[name] = fn
        return fn
    return deco


def _table_names(what: str, names: Sequence[str] | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(t, str) and t for t in names):
        raise ValueError(f"{what} must be a sequence of table names (non-empty strings), got {names!r}")
    return tuple(names)


def register_measurement(name: str, *, tables: Sequence[str] | None = None, optional_tables: Sequence[str] = (),
                         grad: bool = True, probes: bool = False, overwrite: bool = False,
                         options: Callable[[dict], Any] | None = None) -> Callable:
    """Decorator: ``@register_measurement("rotations", tables=["rotations"]) def fn(model, cfg, ctx) ->
    dict[str, DataFrame]``, with the measurement's facts (``MeasurementFacts``): the ``tables`` it
    writes (and ``optional_tables``), whether it needs gradients (``grad``) and whether it measures the
    probe set (``probes``). ``options``: ``check(dict) -> parsed`` of its ``options.<name>``
    (``OPTION_CHECKS``), called when a configuration is validated (before training); without it, any
    options are passed through unchecked."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if options is not None and not callable(options):
        raise ValueError(f"options must be a function check(dict) -> parsed options, got {options!r}")
    for flag, v in (("grad", grad), ("probes", probes)):
        if not isinstance(v, bool):
            raise ValueError(f"{flag} must be True or False, got {v!r}")
    facts = MeasurementFacts(_table_names("tables", tables), _table_names("optional_tables", optional_tables) or (),
                             grad, probes)
    deco = _registrar(MEASUREMENTS, "measurement", name, overwrite)

    def register(fn: Callable) -> Callable:
        deco(fn)
        MEASUREMENT_FACTS[name] = facts
        if options is not None:
            OPTION_CHECKS[name] = options
        else:
            OPTION_CHECKS.pop(name, None)
        return fn
    return register


def measurement_tables(name: str) -> tuple[str, ...]:
    """The tables measurement ``name`` always writes, as declared (``()`` when undeclared or unknown)."""
    facts = MEASUREMENT_FACTS.get(name)
    return facts.tables or () if facts is not None else ()


def known_tables() -> tuple[str, ...]:
    """Every table a registered measurement declares (always or optionally written), in registration order."""
    out: list[str] = []
    for facts in MEASUREMENT_FACTS.values():
        out += [t for t in (*(facts.tables or ()), *facts.optional_tables) if t not in out]
    return tuple(out)


def check_options(options: Mapping[str, Any]) -> None:
    """Validate a configuration's ``options`` (``{measurement: {key: value}}``) before anything runs: every
    key names a registered measurement (a typo would be ignored silently), each value is a mapping, and
    the measurements with an ``OPTION_CHECKS`` entry accept theirs. ``ValueError`` naming the option."""
    load_plugins()
    unknown = sorted(set(options) - set(MEASUREMENTS))
    if unknown:
        raise ValueError(f"options: {unknown} name no registered measurement; registered: {sorted(MEASUREMENTS)}")
    for name, o in options.items():
        if o is not None and not isinstance(o, Mapping):
            raise ValueError(f"options.{name} must be a mapping of option names to values, got {o!r}")
        if name in OPTION_CHECKS:
            OPTION_CHECKS[name](dict(o or {}))


def check_measurements(names: Sequence[str]) -> None:
    """``ValueError`` listing the registered measurements if one of ``names`` (a configuration's ``measure``)
    is unknown; the modules of ``$STABKIT_PLUGINS`` are loaded first."""
    load_plugins()
    unknown = [m for m in names if m not in MEASUREMENTS]
    if unknown:
        raise ValueError(f"measure: unknown measurement(s) {unknown}; registered: {sorted(MEASUREMENTS)}")


def register_augmentation(name: str, *, overwrite: bool = False) -> Callable:
    """Decorator: ``@register_augmentation("rotate") def fn(x [B,C,H,W], generator) -> x``."""
    if not isinstance(name, str) or not name or name in BUILTIN_AUGMENT:
        raise ValueError(f"augmentation name must be a non-empty string other than {BUILTIN_AUGMENT}, got {name!r}")
    return _registrar(AUGMENTATIONS, "augmentation", name, overwrite)


def load_plugins() -> None:
    """Import the user modules named in ``$STABKIT_PLUGINS`` (comma-separated), once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    for mod in filter(None, (m.strip() for m in os.environ.get("STABKIT_PLUGINS", "").split(","))):
        try:
            importlib.import_module(mod)  # user modules registering measurements/augmentations
        except ImportError as exc:  # a typo, or a module off the path: say which
            raise ValueError(f"$STABKIT_PLUGINS names module {mod!r}, which cannot be imported "
                             f"({type(exc).__name__}: {exc}); sys.path holds the current folder and PYTHONPATH")
    _plugins_loaded = True


# --------------------------------------------------------------------------------------- stabilities
def _shuffled(model, ctx, shuffle: int):
    if shuffle == 0:
        return model
    key = ("model", ctx.state, shuffle)
    if key not in ctx.cache:  # one shuffled copy per state, whatever probe set or convention is measured
        from ..stability import shuffle_channels  # torch: see the module docstring
        ctx.cache[key] = shuffle_channels(model, mode=shuffle, generator=ctx.generator(100 + shuffle))
    return ctx.cache[key]


def relu_conventions(cfg: RunConfig) -> list[str]:
    """The ReLU conventions the ``layers`` measurement reports (``options.layers.relu_conventions``,
    default ``["true"]``): ``"true"`` every node's own value, ``"inplace"`` the original code's (post-ReLU
    values at nodes an in-place ReLU overwrites; ``stabkit.stability.measure(relu_convention=...)``)."""
    return _layers_options(cfg.options_of("layers"))


def _layers_options(o: dict) -> list[str]:
    """``options.layers`` -> the ReLU conventions (see :func:`relu_conventions`; YAML ``true`` reads as the
    boolean: both mean "true")."""
    o = dict(o)
    vals = o.pop("relu_conventions", ["true"])
    refuse_unknown_keys("options.layers", o, ("relu_conventions",))
    vals = [vals] if isinstance(vals, (str, bool)) else vals
    if not isinstance(vals, (list, tuple)):
        raise ValueError(f"options.layers.relu_conventions must be a non-empty list of {RELU_CONVENTIONS}, "
                         f"got {vals!r}")
    out = ["true" if v is True else v for v in vals]
    bad = [v for v in out if v not in RELU_CONVENTIONS]
    if bad or not out:
        raise ValueError(f"options.layers.relu_conventions must be a non-empty list of {RELU_CONVENTIONS}, "
                         f"got {vals!r}")
    return list(dict.fromkeys(out))


def _layer_table(net, ctx, probes: str, batch_stats: bool, relu: str = "true") -> pd.DataFrame:
    """``stability.measure`` of ``net`` on the run's probe set ``probes`` with the run's ``layers`` and
    ``measure_dtype``."""
    import torch

    from ..stability import measure  # torch: see the module docstring
    return measure(net, ctx.probes(probes), layers=ctx.cfg.layers, batch_stats=batch_stats,
                   dtype=getattr(torch, ctx.cfg.measure_dtype), relu_convention=relu)


def _stability(model, ctx, shuffle: int, probes: str | None = None, relu: str = "true") -> pd.DataFrame:
    """Layer-by-layer table of ``stability.measure`` for (state, shuffle, probe set, ReLU convention),
    computed once per run. ``probes``: "corrupted" / "clean" (default: the paper's, ``tasks.probe_kinds``)."""
    probes = ctx.probe_kinds()[0] if probes is None else probes
    key = ("stability", ctx.state, shuffle, probes, relu)
    if key not in ctx.cache:
        ctx.cache[key] = _layer_table(_shuffled(model, ctx, shuffle), ctx, probes, ctx.batch_stats, relu)
    return ctx.cache[key]


@register_measurement("layers", tables=["layers"], grad=False, probes=True, options=_layers_options)
def _measure_layers(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``layers``: stability.measure rows (every graph node) per shuffle in ``cfg.shuffles`` and probe set
    (column ``probes``: "corrupted", the paper's for a noise-trained CIFAR-10 net, then "clean"; only
    "clean" otherwise). With ``options.layers.relu_conventions`` (e.g. ``[true, inplace]``), one block of
    rows per convention, labelled by a ``relu_convention`` column (absent by default)."""
    conventions = relu_conventions(cfg)
    tabs = []
    for relu in conventions:
        for kind in ctx.probe_kinds():
            for sh in cfg.shuffles:
                t = _stability(model, ctx, sh, kind, relu).assign(shuffle=sh, probes=kind)
                if "relu_conventions" in cfg.options_of("layers"):
                    t = t.assign(relu_convention=relu)
                tabs.append(t)
    return {"layers": pd.concat(tabs, ignore_index=True)}


@register_measurement("output", tables=["output"], grad=False, probes=True)
def _measure_output(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``output``: D_f, G_f, R_f, D, G, deno, P of the output, test error (+ corrupted) per shuffle and
    probe set (column ``probes``: "corrupted" rows first for a noise-trained CIFAR-10 net, the paper's
    measurement, then "clean"; only "clean" otherwise)."""
    rows = []
    errors: dict = {}
    for kind in ctx.probe_kinds():
        for sh in cfg.shuffles:
            tab = _stability(model, ctx, sh, kind)
            out = tab.loc[tab["depth"].idxmax()]  # the last node in execution order: the network output
            row = {"shuffle": sh, **{k: float(out[k]) for k in ("D_f", "G_f", "R_f", "D", "G", "deno")},
                   "P": int(out["P"]) if "P" in out else cfg.P}
            if sh not in errors:  # the errors do not depend on the probe set
                m = _shuffled(model, ctx, sh)
                errors[sh] = {"test_err": ctx.evaluate(m)[1]}
                if cfg.noise_std > 0:
                    errors[sh]["test_err_corrupted"] = ctx.evaluate(m, ctx.test_loader(cfg.noise_std))[1]
            row.update(errors[sh])
            row["probes"] = kind
            rows.append(row)
    return {"output": pd.DataFrame(rows)}


@register_measurement("spectra", tables=["spectra"], grad=False)
def _measure_spectra(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``spectra``: laplacian.filter_spectra rows (channel shuffling leaves them unchanged)."""
    from ..laplacian import filter_spectra  # torch: see the module docstring
    return {"spectra": filter_spectra(model)}


# ---------------------------------------------------------- the related probes (book/probes.md), registered
register_augmentation("rotate")(rotate)
register_measurement("accuracy", tables=["accuracy"], options=accuracy_options)(measure_accuracy)
register_measurement("invariance", tables=["invariance"], optional_tables=["invariance_act"],
                     options=invariance_options)(measure_invariance)
register_measurement("resolution", tables=["resolution"], options=resolution_options)(measure_resolution)


# ------------------------------------------------------------------ batch-norm recalibrated shuffle
#: Training images whose batch-norm statistics the ``recalibrated`` measurement re-estimates (default).
RECALIBRATION_IMAGES = 10_000


def _recalibrated_options(o: dict) -> dict:
    """``options.recalibrated`` -> ``{"images": int}`` (training images for the statistics, default 10,000)."""
    o = dict(o)
    images = strict_int("options.recalibrated.images", o.pop("images", RECALIBRATION_IMAGES), minimum=2)
    refuse_unknown_keys("options.recalibrated", o, ("images",))
    return {"images": images}


@register_measurement("recalibrated", tables=["recalibrated"], grad=False, probes=True,
                      options=_recalibrated_options)
def _measure_recalibrated(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``recalibrated``: the channel-shuffle control with batch-norm running statistics re-estimated
    (``book/methods.md``, "Channel shuffling"). For every shuffle of ``cfg.shuffles``, the shuffled network's
    batch-norm statistics are re-estimated on ``options.recalibrated.images`` training images (a fixed random
    subset, :func:`stabkit.batchnorm.recalibrate_batchnorm`), then it is measured layer by layer with those
    running statistics, in every state: at "init" this is the sensitivity check of the paper's batch-statistics
    convention. Rows as ``layers`` (the paper's probe set) plus ``test_err`` of that network, ``batchnorm``
    (whether the net has any) and ``recalibrated``: the rows of the same network measured as ``layers`` does
    (batch statistics, ``recalibrated`` False) come with it, so that the control compares one network with
    itself (a control run retrained elsewhere is not bit-identical to the run it controls: training on
    another machine or thread count differs in the last bits, and a scale-detection run that stops at zero
    training loss amplifies them). Without batch norm nothing is recalibrated: only the ``layers`` rows."""
    from ..batchnorm import has_batchnorm, recalibrate_batchnorm  # torch: see the module docstring

    n = _recalibrated_options(cfg.options_of("recalibrated"))["images"]
    kind = ctx.probe_kinds()[0]
    bn = has_batchnorm(model)
    tabs = []
    if bn:
        import torch
        train_x = ctx.data.train_x
        idx = torch.randperm(len(train_x), generator=ctx.generator(200))[:min(n, len(train_x))]
        images = ctx.normalize(train_x[idx])
    for sh in cfg.shuffles:
        shuffled = _shuffled(model, ctx, sh)
        plain = _stability(model, ctx, sh, kind)  # the paper's convention, as `layers` measures it
        tabs.append(plain.assign(shuffle=sh, probes=kind, test_err=ctx.evaluate(shuffled)[1], batchnorm=bn,
                                 images=0, recalibrated=False))
        if bn:
            net = recalibrate_batchnorm(shuffled, images)
            tab = _layer_table(net, ctx, kind, batch_stats=False)  # with the re-estimated running statistics
            tabs.append(tab.assign(shuffle=sh, probes=kind, test_err=ctx.evaluate(net)[1], batchnorm=bn,
                                   images=n, recalibrated=True))
    return {"recalibrated": pd.concat(tabs, ignore_index=True)}
