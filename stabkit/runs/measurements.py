"""What a run measures: the registries and every built-in measurement and augmentation.

A measurement is ``fn(model, cfg, ctx) -> {table name: DataFrame}``, called once per state of
``cfg.states`` by the run's measurement loop (:func:`~stabkit.runs.execute.measure_states`). Built in:

- ``output``, ``layers``: diffeomorphism / noise stabilities (``book/methods.md``, section "Stabilities"),
  with and without channel shuffling (section "Channel shuffling");
- ``spectra``: grid-Laplacian spectra of the filters (section "Grid-Laplacian spectra of filters");
- ``recalibrated``: the channel-shuffle control with batch-norm running statistics re-estimated on training
  images after shuffling (section "Channel shuffling"; :mod:`stabkit.batchnorm`);
- ``accuracy``, ``invariance``, ``resolution``: the related probes of ``book/probes.md`` (accuracy under a
  transform family, rotation invariance per layer, resolution transfer), wrapping the public functions of
  :mod:`stabkit.robustness` and :mod:`stabkit.invariance`;
- augmentation ``rotate`` (:func:`stabkit.robustness.rotate_augment`); ``crop`` and ``flip`` are done by
  the loader itself.

A user adds one with :func:`~stabkit.runs.register_measurement` / :func:`~stabkit.runs.register_augmentation`, in a
module named in ``$STABKIT_PLUGINS`` (comma-separated) when it must be found by the command line. This module imports
torch only inside the measurements: the core modules they call (stability, laplacian, robustness, invariance)
import torch, and the registry and its facts are read while a sweep loads, without torch; so each is imported
in the function that uses it.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = ["MEASUREMENTS", "MEASUREMENT_FACTS", "MeasurementFacts", "AUGMENTATIONS", "BUILTIN_AUGMENT",
           "RELU_CONVENTIONS", "OPTION_CHECKS", "measurement_tables", "known_tables", "register_measurement",
           "register_augmentation", "load_plugins", "eval_subset", "relu_conventions",
           "check_options"]

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


def _options(cfg, name: str) -> dict:
    return dict((cfg.options or {}).get(name) or {})


# --------------------------------------------------------------------------------------- stabilities
def _shuffled(model, ctx, shuffle: int):
    if shuffle == 0:
        return model
    key = ("model", ctx.state, shuffle)
    if key not in ctx.cache:  # one shuffled copy per state, whatever probe set or convention is measured
        from ..stability import shuffle_channels  # torch: see the module docstring
        ctx.cache[key] = shuffle_channels(model, mode=shuffle, generator=ctx.generator(100 + shuffle))
    return ctx.cache[key]


#: ``options.layers.relu_conventions`` values (YAML ``true`` reads as the boolean: both mean "true").
RELU_CONVENTIONS = ("true", "inplace")


def relu_conventions(cfg) -> list[str]:
    """The ReLU conventions the ``layers`` measurement reports (``options.layers.relu_conventions``,
    default ``["true"]``): ``"true"`` every node's own value, ``"inplace"`` the original code's (post-ReLU
    values at nodes an in-place ReLU overwrites; ``stabkit.stability.measure(relu_convention=...)``)."""
    return _layers_options(_options(cfg, "layers"))


def _layers_options(o: dict) -> list[str]:
    """``options.layers`` -> the ReLU conventions (see :func:`relu_conventions`)."""
    o = dict(o)
    vals = o.pop("relu_conventions", ["true"])
    if o:
        raise ValueError(f"options.layers: unknown key(s) {sorted(o)}; accepted: relu_conventions")
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


def _stability(model, ctx, shuffle: int, probes: str | None = None, relu: str = "true") -> pd.DataFrame:
    """Layer-by-layer table of ``stability.measure`` for (state, shuffle, probe set, ReLU convention),
    computed once per run. ``probes``: "corrupted" / "clean" (default: the paper's, ``tasks.probe_kinds``)."""
    probes = ctx.probe_kinds()[0] if probes is None else probes
    key = ("stability", ctx.state, shuffle, probes, relu)
    if key not in ctx.cache:
        import torch

        from ..stability import measure  # torch: see the module docstring
        m = _shuffled(model, ctx, shuffle)
        ctx.cache[key] = measure(m, ctx.probes(probes), layers=ctx.cfg.layers, batch_stats=ctx.batch_stats,
                                 dtype=getattr(torch, ctx.cfg.measure_dtype), relu_convention=relu)
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
                if "relu_conventions" in _options(cfg, "layers"):
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


# --------------------------------------------------------------------- option values (no coercion)
def _opt_int(where: str, v: Any, minimum: int = 1) -> int:
    """An integer option (an integral float such as ``4.0`` is accepted, a bool or ``0.5`` is not)."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {v!r}")
    return v


def _opt_bool(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{where} must be true or false, got {v!r}")
    return v


def _opt_list(where: str, v: Any, one: Callable[[str, Any], Any]) -> list:
    """A non-empty list whose items ``one(where, item)`` accepts (a single value counts as a list of it)."""
    items = list(v) if isinstance(v, (list, tuple)) else [v]
    if not items:
        raise ValueError(f"{where} must be a non-empty list, got {v!r}")
    return [one(where, x) for x in items]


def _opt_real(where: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{where} must be a finite number, got {v!r}")
    return float(v)


def _opt_mapping(where: str, v: Any) -> dict:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ValueError(f"{where} must be a mapping, got {v!r}")
    return dict(v)


def _opt_unknown(where: str, o: dict, accepted: tuple[str, ...]) -> None:
    if o:
        raise ValueError(f"{where}: unknown key(s) {sorted(o)}; accepted: {', '.join(accepted)}")


def _accuracy_options(o: dict) -> dict:
    """``options.accuracy`` -> ``{families: {probe: (family, magnitudes | None, per_class, family options)},
    n: int | None, seeds: [int], batch_size: int}`` (see the ``accuracy`` measurement)."""
    from ..robustness import FAMILIES, family_options  # torch: see the module docstring
    o = dict(o)
    fams = _opt_mapping("options.accuracy.families", o.pop("families", {"rotate": {"per_class": True}}))
    if not fams:
        raise ValueError("options.accuracy.families must name at least one probe")
    n = o.pop("n", None)
    out = {"n": None if n is None else _opt_int("options.accuracy.n", n),
           "seeds": _opt_list("options.accuracy.seeds", o.pop("seeds", [0]), lambda w, x: _opt_int(w, x, 0)),
           "batch_size": _opt_int("options.accuracy.batch_size", o.pop("batch_size", 256)), "families": {}}
    _opt_unknown("options.accuracy", o, ("families", "n", "seeds", "batch_size"))
    for probe, fo in fams.items():
        where = f"options.accuracy.families.{probe}"
        fo = _opt_mapping(where, fo)
        fam = fo.pop("family", probe)
        if fam not in FAMILIES:
            raise ValueError(f"{where}.family must be one of {FAMILIES} (or the probe's name one of them), "
                             f"got {fam!r}")
        mags = fo.pop("magnitudes", None)
        mags = None if mags is None else _opt_list(f"{where}.magnitudes", mags, _opt_real)
        pc = _opt_bool(f"{where}.per_class", fo.pop("per_class", False))
        try:
            family_options(fam, **fo)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        out["families"][probe] = (fam, mags, pc, fo)
    return out


def _invariance_options(o: dict) -> dict:
    """``options.invariance`` -> ``{angles: [float] | None, n_angles, n, stratify: [bool], aggregate, stat,
    batch_size, per_activation}`` (see the ``invariance`` measurement)."""
    o = dict(o)
    angles = o.pop("angles", None)
    out = {"angles": None if angles is None else _opt_list("options.invariance.angles", angles, _opt_real),
           "n_angles": _opt_int("options.invariance.n_angles", o.pop("n_angles", 16), 2),
           "n": _opt_int("options.invariance.n", o.pop("n", 256)),
           "stratify": _opt_list("options.invariance.stratify", o.pop("stratify", [False]), _opt_bool),
           "aggregate": o.pop("aggregate", "mean"), "stat": o.pop("stat", "std"),
           "batch_size": _opt_int("options.invariance.batch_size", o.pop("batch_size", 64)),
           "per_activation": _opt_bool("options.invariance.per_activation", o.pop("per_activation", True))}
    _opt_unknown("options.invariance", o, ("angles", "n_angles", "n", "stratify", "aggregate", "stat", "batch_size",
                                           "per_activation"))
    if out["angles"] is not None and len(out["angles"]) < 2:
        raise ValueError(f"options.invariance.angles must hold at least 2 angles, got {angles!r}")
    from ..invariance import AGGREGATIONS, STATS  # torch: see the module docstring
    for k, choices in (("aggregate", AGGREGATIONS), ("stat", STATS)):
        if out[k] not in choices:
            raise ValueError(f"options.invariance.{k} must be one of {choices}, got {out[k]!r}")
    return out


def _resolution_options(o: dict) -> dict:
    """``options.resolution`` -> ``{targets: [int], n: int | None, batch_size: int}``."""
    from ..robustness import MAGNITUDES  # torch: see the module docstring
    o = dict(o)
    n = o.pop("n", None)
    out = {"targets": _opt_list("options.resolution.targets", o.pop("targets", list(MAGNITUDES["resize"])), _opt_int),
           "n": None if n is None else _opt_int("options.resolution.n", n),
           "batch_size": _opt_int("options.resolution.batch_size", o.pop("batch_size", 256))}
    _opt_unknown("options.resolution", o, ("targets", "n", "batch_size"))
    return out


# ------------------------------------------------------------------------------- related probes
def eval_subset(ctx, n: int | None):
    """``n`` test images (raw, as the task stores them) and labels drawn at random with a fixed seed (the
    same for every net of a sweep; the test set may be ordered by class), or all of them."""
    import torch
    x, y = ctx.data.test_x, torch.as_tensor(ctx.data.test_y)
    if n is not None and int(n) < len(y):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(20190101))[:int(n)]
        x, y = x[idx], y[idx]
    return x, y


def _rotate(x, generator=None):
    from ..robustness import rotate_augment  # torch: see the module docstring
    return rotate_augment(x, generator)


register_augmentation("rotate")(_rotate)
_rotate.__doc__ = """``rotate``: :func:`stabkit.robustness.rotate_augment` (one uniform angle per image,
bilinear, zero padding), on pixel-space training batches."""


@register_measurement("accuracy", tables=["accuracy"], options=_accuracy_options)
def _measure_accuracy(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``accuracy``: :func:`stabkit.robustness.accuracy_under` rows for every probe of
    ``options.accuracy.families`` (``{probe: {family: <default: the probe name>, magnitudes: [...],
    per_class: bool, <family options>}}``; column ``probe`` holds the key, e.g. ``mask_saliency``), on
    ``options.accuracy.n`` test images (default all), transform seeds ``options.accuracy.seeds``."""
    from ..robustness import accuracy_under  # torch: see the module docstring
    o = _accuracy_options(_options(cfg, "accuracy"))
    x, y = eval_subset(ctx, o["n"])
    tabs = []
    for probe, (fam, mags, pc, fo) in o["families"].items():
        t = accuracy_under(model, x, y, fam, mags, seeds=o["seeds"], mean=ctx.data.mean, std=ctx.data.std,
                           batch_size=o["batch_size"], device=ctx.device, per_class=pc, **fo)
        t.insert(0, "probe", probe)
        tabs.append(t)
    return {"accuracy": pd.concat(tabs, ignore_index=True)}


@register_measurement("invariance", tables=["invariance"], optional_tables=["invariance_act"],
                      options=_invariance_options)
def _measure_invariance(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``invariance`` (per layer) and ``invariance_act`` (per activation, if ``per_activation``):
    rotation TV / SV / NV of :func:`stabkit.invariance.invariance`. ``options.invariance``: ``angles``
    (list, degrees) or ``n_angles`` (16), ``n`` test samples (256), ``aggregate`` ("mean"), ``stat``
    ("std"), ``stratify`` (list of bools, [false]), ``per_activation`` (true), ``batch_size`` (64)."""
    from ..invariance import invariance, rotations  # torch: see the module docstring
    o = _invariance_options(_options(cfg, "invariance"))
    tr = rotations(o["angles"], n=o["n_angles"])
    x, y = eval_subset(ctx, o["n"])
    strat = o["stratify"]
    kw = dict(aggregate=o["aggregate"], stat=o["stat"], batch_size=o["batch_size"],
              per_activation=o["per_activation"])
    lay, act = [], []
    for st in strat:
        res = invariance(model, x, tr, y, stratify=bool(st), mean=ctx.data.mean, std=ctx.data.std,
                         device=ctx.device, **kw)
        lay.append(res["layers"])
        if "activations" in res:
            act.append(res["activations"].assign(stratified=bool(st)))
    out = {"invariance": pd.concat(lay, ignore_index=True)}
    if act:
        out["invariance_act"] = pd.concat(act, ignore_index=True)
    return out


def _resolution_of(model, ctx) -> tuple[Any, int, dict]:
    """(bare net, source size, resampling options) of a net trained at a source resolution (a
    ``LowRes-*`` net: ``net``, ``source_size`` and ``resampling()``), else of a plain net."""
    from ..robustness import family_options  # torch: see the module docstring
    if hasattr(model, "source_size") and hasattr(model, "resampling"):
        return model.net, int(model.source_size), dict(model.resampling())
    return model, int(ctx.data.input_size), dict(family_options("resize"))


@register_measurement("resolution", tables=["resolution"], options=_resolution_options)
def _measure_resolution(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``resolution``: accuracy at the source size (the size the net was trained at: ``source_size``
    of a ``LowRes-*`` net, else the data's) and out of the box at every size of
    ``options.resolution.targets`` (default 8, 16, 24, 32), on ``options.resolution.n`` test images;
    one row per target with ``source, target, acc_source, acc_ootb, delta`` (points) and the resampling
    options of the evaluation (the same as training's), from :func:`stabkit.robustness.resolution_transfer`."""
    from ..robustness import accuracy_under, resolution_transfer  # torch: see the module docstring
    o = _resolution_options(_options(cfg, "resolution"))
    targets = o["targets"]
    x, y = eval_subset(ctx, o["n"])
    bs = o["batch_size"]
    net, source, rs = _resolution_of(model, ctx)
    sizes = sorted(set(targets) | {source})
    acc = accuracy_under(net, x, y, "resize", sizes, mean=ctx.data.mean, std=ctx.data.std, batch_size=bs,
                         device=ctx.device, **rs)
    tab = resolution_transfer(acc, source, targets)
    for k, v in rs.items():
        tab[k] = v
    return {"resolution": tab.drop(columns="options")}


# ------------------------------------------------------------------ batch-norm recalibrated shuffle
#: Training images whose batch-norm statistics the ``recalibrated`` measurement re-estimates (default).
RECALIBRATION_IMAGES = 10_000


def _recalibrated_options(o: dict) -> dict:
    """``options.recalibrated`` -> ``{"images": int}`` (training images for the statistics, default 10,000)."""
    o = dict(o)
    images = _opt_int("options.recalibrated.images", o.pop("images", RECALIBRATION_IMAGES), minimum=2)
    _opt_unknown("options.recalibrated", o, ("images",))
    return {"images": images}


@register_measurement("recalibrated", tables=["recalibrated"], grad=False, probes=True,
                      options=_recalibrated_options)
def _measure_recalibrated(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``recalibrated``: the channel-shuffle control with batch-norm running statistics re-estimated
    (``book/methods.md``, "Channel shuffling"). For every shuffle of ``cfg.shuffles``, the shuffled network's
    batch-norm statistics are re-estimated on ``options.recalibrated.images`` training images (a fixed random
    subset, :func:`stabkit.batchnorm.recalibrate_batchnorm`), then it is measured layer by layer with those
    running statistics, in every state: at "init" this is the sensitivity check of the paper's batch-statistics
    convention. Rows as ``layers`` (the paper's probe set) plus ``test_err`` of that network and
    ``batchnorm`` (whether the net has any; without batch norm nothing is recalibrated and the rows are those
    of ``layers``, reused)."""
    from ..batchnorm import has_batchnorm, recalibrate_batchnorm  # torch: see the module docstring

    n = _recalibrated_options(_options(cfg, "recalibrated"))["images"]
    kind = ctx.probe_kinds()[0]
    bn = has_batchnorm(model)
    tabs = []
    if bn:
        import torch

        from ..stability import measure  # torch: see the module docstring
        train_x = ctx.data.train_x
        idx = torch.randperm(len(train_x), generator=ctx.generator(200))[:min(n, len(train_x))]
        images = ctx.normalize(train_x[idx])
    for sh in cfg.shuffles:
        shuffled = _shuffled(model, ctx, sh)
        if bn:
            net = recalibrate_batchnorm(shuffled, images)
            tab = measure(net, ctx.probes(kind), layers=cfg.layers, batch_stats=False,
                          dtype=getattr(torch, cfg.measure_dtype))
        else:
            net, tab = shuffled, _stability(model, ctx, sh, kind)
        tabs.append(tab.assign(shuffle=sh, probes=kind, test_err=ctx.evaluate(net)[1], batchnorm=bn,
                               images=n if bn else 0))
    return {"recalibrated": pd.concat(tabs, ignore_index=True)}
