"""The related probes of ``book/probes.md`` as measurements of a run: accuracy under a transform family
(``accuracy``), rotation invariance per layer (``invariance``), resolution transfer (``resolution``), and the
training augmentation ``rotate``. Each wraps the public functions of :mod:`stabkit.robustness` and
:mod:`stabkit.invariance`, and parses its ``options.<name>`` with the function :mod:`~stabkit.runs.measurements`
registers as its option check (so a bad value fails when the configuration is validated, before training).

Like the registry, this module is read while a sweep loads, without torch: the core modules the measurements
call import torch, so each is imported in the function that uses it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from .config import RunConfig, refuse_unknown_keys, strict_bool, strict_int, strict_list, strict_mapping, strict_real

__all__ = ["eval_subset", "rotate", "accuracy_options", "invariance_options", "resolution_options",
           "measure_accuracy", "measure_invariance", "measure_resolution"]


def eval_subset(ctx: Any, n: int | None) -> tuple[Any, Any]:
    """``n`` test images (raw, as the task stores them) and labels drawn at random with a fixed seed (the
    same for every net of a sweep; the test set may be ordered by class), or all of them."""
    import torch
    x, y = ctx.data.test_x, torch.as_tensor(ctx.data.test_y)
    if n is not None and int(n) < len(y):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(20190101))[:int(n)]
        x, y = x[idx], y[idx]
    return x, y


def rotate(x: Any, generator: Any = None) -> Any:
    """``rotate``: :func:`stabkit.robustness.rotate_augment` (one uniform angle per image, bilinear, zero
    padding), on pixel-space training batches ``[B, C, H, W]``."""
    from ..robustness import rotate_augment  # torch: see the module docstring
    return rotate_augment(x, generator)


def measure_accuracy(model: Any, cfg: RunConfig, ctx: Any) -> dict[str, pd.DataFrame]:
    """``accuracy``: :func:`stabkit.robustness.accuracy_under` rows for every probe of
    ``options.accuracy.families`` (``{probe: {family: <default: the probe name>, magnitudes: [...],
    per_class: bool, <family options>}}``; column ``probe`` holds the key, e.g. ``mask_saliency``), on
    ``options.accuracy.n`` test images (default all), transform seeds ``options.accuracy.seeds``."""
    from ..robustness import accuracy_under  # torch: see the module docstring
    o = accuracy_options(cfg.options_of("accuracy"))
    x, y = eval_subset(ctx, o["n"])
    tabs = []
    for probe, (fam, mags, pc, fo) in o["families"].items():
        t = accuracy_under(model, x, y, fam, mags, seeds=o["seeds"], mean=ctx.data.mean, std=ctx.data.std,
                           batch_size=o["batch_size"], device=ctx.device, per_class=pc, **fo)
        t.insert(0, "probe", probe)
        tabs.append(t)
    return {"accuracy": pd.concat(tabs, ignore_index=True)}


def measure_invariance(model: Any, cfg: RunConfig, ctx: Any) -> dict[str, pd.DataFrame]:
    """``invariance`` (per layer) and ``invariance_act`` (per activation, if ``per_activation``):
    rotation TV / SV / NV of :func:`stabkit.invariance.invariance`. ``options.invariance``: ``angles``
    (list, degrees) or ``n_angles`` (16), ``n`` test samples (256), ``aggregate`` ("mean"), ``stat``
    ("std"), ``stratify`` (list of bools, [false]), ``per_activation`` (true), ``batch_size`` (64)."""
    from ..invariance import invariance, rotations  # torch: see the module docstring
    o = invariance_options(cfg.options_of("invariance"))
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


def measure_resolution(model: Any, cfg: RunConfig, ctx: Any) -> dict[str, pd.DataFrame]:
    """``resolution``: accuracy at the source size (the size the net was trained at: ``source_size``
    of a ``LowRes-*`` net, else the data's) and out of the box at every size of
    ``options.resolution.targets`` (default 8, 16, 24, 32), on ``options.resolution.n`` test images;
    one row per target with ``source, target, acc_source, acc_ootb, delta`` (points) and the resampling
    options of the evaluation (the same as training's), from :func:`stabkit.robustness.resolution_table`."""
    from ..robustness import resolution_table  # torch: see the module docstring
    o = resolution_options(cfg.options_of("resolution"))
    x, y = eval_subset(ctx, o["n"])
    return {"resolution": resolution_table(model, x, y, o["targets"], input_size=ctx.data.input_size,
                                           mean=ctx.data.mean, std=ctx.data.std, batch_size=o["batch_size"],
                                           device=ctx.device)}


def accuracy_options(o: Mapping[str, Any]) -> dict:
    """``options.accuracy`` -> ``{families: {probe: (family, magnitudes | None, per_class, family options)},
    n: int | None, seeds: [int], batch_size: int}`` (see the ``accuracy`` measurement)."""
    from ..robustness import FAMILIES, family_options  # torch: see the module docstring
    o = dict(o)
    fams = strict_mapping("options.accuracy.families", o.pop("families", {"rotate": {"per_class": True}}))
    if not fams:
        raise ValueError("options.accuracy.families must name at least one probe")
    n = o.pop("n", None)
    out = {"n": None if n is None else strict_int("options.accuracy.n", n),
           "seeds": strict_list("options.accuracy.seeds", o.pop("seeds", [0]), lambda w, x: strict_int(w, x, 0)),
           "batch_size": strict_int("options.accuracy.batch_size", o.pop("batch_size", 256)), "families": {}}
    refuse_unknown_keys("options.accuracy", o, ("families", "n", "seeds", "batch_size"))
    for probe, fo in fams.items():
        where = f"options.accuracy.families.{probe}"
        fo = strict_mapping(where, fo)
        fam = fo.pop("family", probe)
        if fam not in FAMILIES:
            raise ValueError(f"{where}.family must be one of {FAMILIES} (or the probe's name one of them), "
                             f"got {fam!r}")
        mags = fo.pop("magnitudes", None)
        mags = None if mags is None else strict_list(f"{where}.magnitudes", mags, strict_real)
        pc = strict_bool(f"{where}.per_class", fo.pop("per_class", False))
        try:
            family_options(fam, **fo)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        out["families"][probe] = (fam, mags, pc, fo)
    return out


def invariance_options(o: Mapping[str, Any]) -> dict:
    """``options.invariance`` -> ``{angles: [float] | None, n_angles, n, stratify: [bool], aggregate, stat,
    batch_size, per_activation}`` (see the ``invariance`` measurement)."""
    o = dict(o)
    angles = o.pop("angles", None)
    out = {"angles": None if angles is None else strict_list("options.invariance.angles", angles, strict_real),
           "n_angles": strict_int("options.invariance.n_angles", o.pop("n_angles", 16), 2),
           "n": strict_int("options.invariance.n", o.pop("n", 256)),
           "stratify": strict_list("options.invariance.stratify", o.pop("stratify", [False]), strict_bool),
           "aggregate": o.pop("aggregate", "mean"), "stat": o.pop("stat", "std"),
           "batch_size": strict_int("options.invariance.batch_size", o.pop("batch_size", 64)),
           "per_activation": strict_bool("options.invariance.per_activation", o.pop("per_activation", True))}
    refuse_unknown_keys("options.invariance", o, ("angles", "n_angles", "n", "stratify", "aggregate", "stat",
                                                  "batch_size", "per_activation"))
    if out["angles"] is not None and len(out["angles"]) < 2:
        raise ValueError(f"options.invariance.angles must hold at least 2 angles, got {angles!r}")
    from ..invariance import AGGREGATIONS, STATS  # torch: see the module docstring
    for k, choices in (("aggregate", AGGREGATIONS), ("stat", STATS)):
        if out[k] not in choices:
            raise ValueError(f"options.invariance.{k} must be one of {choices}, got {out[k]!r}")
    return out


def resolution_options(o: Mapping[str, Any]) -> dict:
    """``options.resolution`` -> ``{targets: [int], n: int | None, batch_size: int}``."""
    from ..robustness import MAGNITUDES  # torch: see the module docstring
    o = dict(o)
    n = o.pop("n", None)
    out = {"targets": strict_list("options.resolution.targets", o.pop("targets", list(MAGNITUDES["resize"])),
                                  strict_int),
           "n": None if n is None else strict_int("options.resolution.n", n),
           "batch_size": strict_int("options.resolution.batch_size", o.pop("batch_size", 256))}
    refuse_unknown_keys("options.resolution", o, ("targets", "n", "batch_size"))
    return out
