"""What a run measures: the registries and every built-in measurement and augmentation.

A measurement is ``fn(model, cfg, ctx) -> {table name: DataFrame}``, called once per state of
``cfg.states`` by the run's measurement loop (:func:`~stabkit.runs.measure_states`). Built in:

- ``output``, ``layers``: diffeomorphism / noise stabilities (``book/methods.md``, section "Stabilities"),
  with and without channel shuffling (section "Channel shuffling");
- ``spectra``: grid-Laplacian spectra of the filters (section "Grid-Laplacian spectra of filters");
- ``accuracy``, ``invariance``, ``resolution``: the related probes of ``book/probes.md`` (accuracy under a
  transform family, rotation invariance per layer, resolution transfer), wrapping the public functions of
  :mod:`stabkit.robustness` and :mod:`stabkit.invariance`;
- augmentation ``rotate`` (:func:`stabkit.robustness.rotate_augment`); ``crop`` and ``flip`` are done by
  the loader itself.

A user adds one with :func:`~stabkit.runs.register_measurement` / :func:`~stabkit.runs.register_augmentation`, in a
module named in ``$STABKIT_PLUGINS`` (comma-separated) when it must be found by the command line. This module imports
torch only inside the measurements.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import pandas as pd

__all__ = ["MEASUREMENTS", "AUGMENTATIONS", "BUILTIN_AUGMENT", "GRAD_FREE", "RELU_CONVENTIONS", "register_measurement",
           "register_augmentation", "load_plugins", "eval_subset", "relu_conventions"]

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
#: Built-in measurements that need no gradient: the loop runs them under ``torch.no_grad()`` (the
#: others, e.g. ``accuracy`` with gradient saliency, manage gradients themselves).
GRAD_FREE = ("output", "layers", "spectra")
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
    if not isinstance(name, str) or not name or name in BUILTIN_AUGMENT:
        raise ValueError(f"augmentation name must be a non-empty string other than {BUILTIN_AUGMENT}, got {name!r}")
    return _registrar(AUGMENTATIONS, "augmentation", name, overwrite)


def load_plugins() -> None:
    """Import the user modules named in ``$STABKIT_PLUGINS`` (comma-separated), once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for mod in filter(None, (m.strip() for m in os.environ.get("STABKIT_PLUGINS", "").split(","))):
        importlib.import_module(mod)  # user modules registering measurements/augmentations


def _options(cfg, name: str) -> dict:
    return dict((cfg.options or {}).get(name) or {})


# --------------------------------------------------------------------------------------- stabilities
def _shuffled(model, ctx, shuffle: int):
    if shuffle == 0:
        return model
    key = ("model", ctx.state, shuffle)
    if key not in ctx.cache:  # one shuffled copy per state, whatever probe set or convention is measured
        from ..stability import shuffle_channels
        ctx.cache[key] = shuffle_channels(model, mode=shuffle, generator=ctx.generator(100 + shuffle))
    return ctx.cache[key]


#: ``options.layers.relu_conventions`` values (YAML ``true`` reads as the boolean: both mean "true").
RELU_CONVENTIONS = ("true", "inplace")


def relu_conventions(cfg) -> list[str]:
    """The ReLU conventions the ``layers`` measurement reports (``options.layers.relu_conventions``,
    default ``["true"]``): ``"true"`` every node's own value, ``"inplace"`` the original code's (post-ReLU
    values at nodes an in-place ReLU overwrites; ``stabkit.stability.measure(relu_convention=...)``)."""
    o = _options(cfg, "layers")
    vals = o.pop("relu_conventions", ["true"])
    if o:
        raise ValueError(f"options.layers: unknown key(s) {sorted(o)}; accepted: relu_conventions")
    vals = [vals] if isinstance(vals, (str, bool)) else list(vals)
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

        from ..stability import measure
        m = _shuffled(model, ctx, shuffle)
        ctx.cache[key] = measure(m, ctx.probes(probes), layers=ctx.cfg.layers, batch_stats=ctx.batch_stats,
                                 dtype=getattr(torch, ctx.cfg.measure_dtype), relu_convention=relu)
    return ctx.cache[key]


@register_measurement("layers")
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


@register_measurement("output")
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


@register_measurement("spectra")
def _measure_spectra(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``spectra``: laplacian.filter_spectra rows (channel shuffling leaves them unchanged)."""
    from ..laplacian import filter_spectra
    return {"spectra": filter_spectra(model)}


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
    from ..robustness import rotate_augment
    return rotate_augment(x, generator)


register_augmentation("rotate")(_rotate)
_rotate.__doc__ = """``rotate``: :func:`stabkit.robustness.rotate_augment` (one uniform angle per image,
bilinear, zero padding), on pixel-space training batches."""


@register_measurement("accuracy")
def _measure_accuracy(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``accuracy``: :func:`stabkit.robustness.accuracy_under` rows for every probe of
    ``options.accuracy.families`` (``{probe: {family: <default: the probe name>, magnitudes: [...],
    per_class: bool, <family options>}}``; column ``probe`` holds the key, e.g. ``mask_saliency``), on
    ``options.accuracy.n`` test images (default all), transform seeds ``options.accuracy.seeds``."""
    from ..robustness import accuracy_under
    o = _options(cfg, "accuracy")
    fams = o.pop("families", {"rotate": {"per_class": True}})
    x, y = eval_subset(ctx, o.pop("n", None))
    seeds = o.pop("seeds", [0])
    bs = int(o.pop("batch_size", 256))
    if o:
        raise ValueError(f"options.accuracy: unknown key(s) {sorted(o)}; accepted: families, n, seeds, batch_size")
    tabs = []
    for probe, fo in fams.items():
        fo = dict(fo or {})
        fam = fo.pop("family", probe)
        mags = fo.pop("magnitudes", None)
        pc = bool(fo.pop("per_class", False))
        t = accuracy_under(model, x, y, fam, mags, seeds=seeds, mean=ctx.data.mean, std=ctx.data.std,
                           batch_size=bs, device=ctx.device, per_class=pc, **fo)
        t.insert(0, "probe", probe)
        tabs.append(t)
    return {"accuracy": pd.concat(tabs, ignore_index=True)}


@register_measurement("invariance")
def _measure_invariance(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``invariance`` (per layer) and ``invariance_act`` (per activation, if ``per_activation``):
    rotation TV / SV / NV of :func:`stabkit.invariance.invariance`. ``options.invariance``: ``angles``
    (list, degrees) or ``n_angles`` (16), ``n`` test samples (256), ``aggregate`` ("mean"), ``stat``
    ("std"), ``stratify`` (list of bools, [false]), ``per_activation`` (true), ``batch_size`` (64)."""
    from ..invariance import invariance, rotations
    o = _options(cfg, "invariance")
    tr = rotations(o.pop("angles", None), n=int(o.pop("n_angles", 16)))
    x, y = eval_subset(ctx, o.pop("n", 256))
    strat = o.pop("stratify", [False])
    strat = [strat] if isinstance(strat, bool) else list(strat)
    kw = dict(aggregate=o.pop("aggregate", "mean"), stat=o.pop("stat", "std"),
              batch_size=int(o.pop("batch_size", 64)), per_activation=bool(o.pop("per_activation", True)))
    if o:
        raise ValueError(f"options.invariance: unknown key(s) {sorted(o)}")
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
    from ..robustness import family_options
    if hasattr(model, "source_size") and hasattr(model, "resampling"):
        return model.net, int(model.source_size), dict(model.resampling())
    return model, int(ctx.data.input_size), dict(family_options("resize"))


@register_measurement("resolution")
def _measure_resolution(model, cfg, ctx) -> dict[str, pd.DataFrame]:
    """``resolution``: accuracy at the source size (the size the net was trained at: ``source_size``
    of a ``LowRes-*`` net, else the data's) and out of the box at every size of
    ``options.resolution.targets`` (default 8, 16, 24, 32), on ``options.resolution.n`` test images;
    one row per target with ``source, target, acc_source, acc_ootb, delta`` (points) and the resampling
    options of the evaluation (the same as training's), from :func:`stabkit.robustness.resolution_transfer`."""
    from ..robustness import MAGNITUDES, accuracy_under, resolution_transfer
    o = _options(cfg, "resolution")
    targets = [int(t) for t in o.pop("targets", MAGNITUDES["resize"])]
    x, y = eval_subset(ctx, o.pop("n", None))
    bs = int(o.pop("batch_size", 256))
    if o:
        raise ValueError(f"options.resolution: unknown key(s) {sorted(o)}")
    net, source, rs = _resolution_of(model, ctx)
    sizes = sorted(set(targets) | {source})
    acc = accuracy_under(net, x, y, "resize", sizes, mean=ctx.data.mean, std=ctx.data.std, batch_size=bs,
                         device=ctx.device, **rs)
    tab = resolution_transfer(acc, source, targets)
    for k, v in rs.items():
        tab[k] = v
    return {"resolution": tab.drop(columns="options")}
