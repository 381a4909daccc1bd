"""Related probes of spatial sensitivity: accuracy under a transform family, resolution transfer and
global summaries of rotation invariance (``book/probes.md``).

Families (magnitude axis, default magnitudes in :data:`MAGNITUDES`):

- ``rotate``: angle in degrees (bilinear, black padding); per class with ``per_class=True``.
- ``patch_shuffle``: grid size k (``mode="full"`` or ``"rows_cols"``); k = 1 is the clean image.
- ``mask``: fraction of patches occluded (``patch``, ``fill``, ``order="random" | "saliency"``; the
  saliency order masks the tiles with the largest input-gradient magnitude of the true-class logit first;
  the ``"mean"`` and ``"noise"`` fills use the data set's per-channel mean and std).
- ``pixelate``: box-down / nearest-up factor.
- ``resize``: target side in pixels (the net sees the image at that size: nets with global pooling only,
  e.g. ResNet*, EfficientNetB0); ``interpolation``, ``antialias``, ``blur_sigma`` recorded.

Family options are the arguments of :mod:`stabkit.transforms` of the same names (``interpolation`` for the
resampling of ``rotate`` and ``resize``).

Every transform is applied in pixel space ([0, 1] floats, uint8 images are scaled) *before* the
per-channel normalisation (:func:`stabkit.transforms.normalize`), each (family, magnitude, seed) with its
own seeded generator.

Public API: :func:`apply_family`, :func:`family_options`, :func:`accuracy_under`, :func:`summarize`,
:func:`gradient_saliency`, :func:`resolution_transfer`, :func:`resolution_table`, :func:`transfer_grid`, :func:`rotate_augment`,
:func:`global_nv` (pooled over activations, the reference convention), :func:`layer_mean_nv`,
:func:`example_images`; ``AtResolution`` is :class:`stabkit.nets.AtResolution`. The run
measurements that wrap them live in :mod:`stabkit.runs`.
"""
from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import data
from .checks import check_int
from .data import CLASSES as CIFAR10_CLASSES
from .graph import eval_mode, measurement_device
from .nets import VARIABLE_INPUT_NETS, AtResolution
from .transforms import draws, mask_patches, normalize, patch_shuffle, pixelate, resize, rotate

__all__ = ["FAMILIES", "MAGNITUDES", "CIFAR10_CLASSES", "VARIABLE_INPUT_NETS", "apply_family", "family_options",
           "accuracy_under", "summarize", "gradient_saliency", "resolution_transfer", "resolution_table", "transfer_grid",
           "rotate_augment", "AtResolution", "REFERENCE", "global_nv", "layer_mean_nv", "example_images",
           "GENERATED_EXAMPLES"]

#: Transform families of :func:`accuracy_under` (see the module docstring).
FAMILIES = ("rotate", "patch_shuffle", "mask", "pixelate", "resize")
#: The fixed default magnitudes (x axis) of each family.
MAGNITUDES: dict[str, tuple] = {
    "rotate": tuple(22.5 * i for i in range(16)),          # degrees, 0..337.5 (the 2019 paper's 16 angles)
    "patch_shuffle": (1, 2, 4, 8),                          # grid k (divides 32)
    "mask": (0.0, 0.1, 0.25, 0.5, 0.75, 0.9),               # fraction of patches
    "pixelate": (1, 2, 4, 8),                               # factor
    "resize": (8, 16, 24, 32),                              # target side (px)
}
_OPTIONS: dict[str, dict[str, Any]] = {
    "rotate": dict(interpolation="bilinear", padding="zeros"),
    "patch_shuffle": dict(mode="full"),
    "mask": dict(patch=4, fill="zeros", order="random"),
    "pixelate": dict(),
    "resize": dict(interpolation="bilinear", antialias=True, blur_sigma=0.0),
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def family_options(family: str, **options) -> dict[str, Any]:
    """Defaults of ``family`` updated by ``options`` (unknown names raise ``ValueError``)."""
    _check_family(family)
    opts = dict(_OPTIONS[family])
    unknown = sorted(set(options) - set(opts))
    if unknown:
        raise ValueError(f"{family}: unknown option(s) {unknown}; accepted: {sorted(opts)}")
    opts.update(options)
    return opts


def _whole(name: str, value) -> int:
    """An integer magnitude or option; whole floats (``4.0``, e.g. read from a table) are accepted."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return check_int(name, value)


def apply_family(family: str, images: torch.Tensor, magnitude, generator: torch.Generator | None = None,
                 saliency: torch.Tensor | None = None, *, mean=None, std=None, **options) -> torch.Tensor:
    """Transform pixel-space images ``[B, C, H, W]`` by ``family`` at ``magnitude`` (see module doc).

    ``saliency`` is used by ``mask`` with ``order="saliency"``; ``mean``, ``std``: the data set's
    per-channel pixel mean and std, used by the ``mask`` fills ``"mean"`` and ``"noise"`` (default: the
    CIFAR-10 values for 3 channels, see :func:`stabkit.transforms.mask_patches`). Returns a new tensor
    (``resize`` changes H, W)."""
    opts = family_options(family, **options)
    if family == "rotate":
        return rotate(images, magnitude, opts["interpolation"], opts["padding"])
    if family == "patch_shuffle":
        return patch_shuffle(images, _whole("magnitude (grid k)", magnitude), mode=opts["mode"],
                             generator=generator)
    if family == "mask":
        return mask_patches(images, _whole("patch", opts["patch"]), float(magnitude), fill=opts["fill"], order=opts["order"],
                            saliency=saliency if opts["order"] == "saliency" else None, generator=generator,
                            mean=mean, std=std)
    if family == "pixelate":
        return pixelate(images, _whole("magnitude (factor)", magnitude))
    return resize(images, _whole("magnitude (side)", magnitude), opts["interpolation"], bool(opts["antialias"]),
                  float(opts["blur_sigma"]))


def _pixels(x: torch.Tensor, device) -> torch.Tensor:
    x = x.to(device)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def gradient_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``|d logit_y / d x|`` summed over channels: ``[B, H, W]`` (x is the network input)."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        out = model(x)
        out.gather(1, y.view(-1, 1)).sum().backward()
    return x.grad.abs().sum(1).detach()


def accuracy_under(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, family: str,
                   magnitudes: Sequence | None = None, *, seeds: Sequence[int] = (0,), mean=None, std=None,
                   batch_size: int = 256, device: str | torch.device | None = None, per_class: bool = False,
                   **options) -> pd.DataFrame:
    """Top-1 accuracy of ``model`` on transformed images against the magnitude of ``family``.

    Args:
        model: a classifier ``[B, C, H, W] -> [B, classes]``; evaluated in eval mode (every module's own
            mode restored after).
        images: [N, C, H, W] pixel-space images (uint8 or floats in [0, 1]); labels [N].
        family: one of :data:`FAMILIES`; ``magnitudes``: its x axis (default :data:`MAGNITUDES`).
        seeds: transform seeds (each (magnitude, seed) draws its own permutations / masks).
            Deterministic families (rotate, pixelate, resize) are evaluated once (seed 0).
        mean, std: the data set's per-channel pixel mean and std: the normalisation applied after the
            transform (:func:`stabkit.transforms.normalize`), and the ``mask`` fills ``"mean"`` /
            ``"noise"``.
        batch_size: images per forward pass.
        device: ``None`` or ``"auto"`` (the model's device), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        per_class: also one row per class.
        **options: family options (see :func:`family_options`), recorded in the ``options`` column.

    Returns:
        Tidy DataFrame, one row per (magnitude, seed, label): ``family, magnitude, seed, label (-1 = all
        classes), accuracy (fraction), n_correct, n_samples, options (JSON)``.
    """
    opts = family_options(family, **options)
    if magnitudes is None:
        magnitudes = MAGNITUDES[family]
    magnitudes = list(magnitudes)
    if not magnitudes:
        raise ValueError("magnitudes must not be empty")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("images must be a tensor [N, C, H, W]")
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must have shape [N] = [{images.shape[0]}], got {tuple(labels.shape)}")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    random_family = family == "patch_shuffle" or (family == "mask" and (opts["order"] == "random"
                                                                       or opts["fill"] == "noise"))
    seeds = [check_int("seeds", s) for s in seeds] if random_family else [0]
    if not seeds:
        raise ValueError("seeds must not be empty")
    device = measurement_device(model, device)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return normalize(x, mean, std)

    n_cls = int(labels.max()) + 1 if labels.numel() else 0
    rows = []
    with eval_mode(model):
        for mi, mag in enumerate(magnitudes):
            for seed in seeds:
                gen = torch.Generator().manual_seed(1_000_003 * seed + 7919 * mi + 17)
                correct = torch.zeros(n_cls, dtype=torch.long)
                count = torch.zeros(n_cls, dtype=torch.long)
                for start in range(0, images.shape[0], batch_size):
                    x = _pixels(images[start:start + batch_size], device)
                    y = labels[start:start + batch_size].to(device)
                    sal = None
                    if family == "mask" and opts["order"] == "saliency":
                        sal = gradient_saliency(model, norm(x), y)
                    xt = apply_family(family, x, mag, generator=gen, saliency=sal, mean=mean, std=std, **opts)
                    with torch.no_grad():
                        pred = model(norm(xt)).argmax(1)
                    ok = (pred == y).long().cpu()
                    yc = y.cpu()
                    correct += torch.bincount(yc, weights=ok, minlength=n_cls).long()
                    count += torch.bincount(yc, minlength=n_cls)
                base = dict(family=family, magnitude=float(mag), seed=seed)
                rows.append(dict(base, label=-1, accuracy=float(correct.sum()) / max(int(count.sum()), 1),
                                 n_correct=int(correct.sum()), n_samples=int(count.sum())))
                if per_class:
                    for c in range(n_cls):
                        if count[c] > 0:
                            rows.append(dict(base, label=c, accuracy=float(correct[c]) / int(count[c]),
                                             n_correct=int(correct[c]), n_samples=int(count[c])))
    df = pd.DataFrame(rows)
    df["options"] = json.dumps(opts, sort_keys=True)
    return df


def summarize(df: pd.DataFrame, by: Sequence[str] = ("family", "magnitude", "label"),
              value: str = "accuracy") -> pd.DataFrame:
    """Mean, sample sd (ddof = 1; 0 for a single value) and count of ``value`` over the rows of each
    group ``by`` (e.g. over transform seeds and training seeds): columns ``by + [mean, sd, n]``."""
    missing = [c for c in list(by) + [value] if c not in df.columns]
    if missing:
        raise ValueError(f"summarize: columns {missing} not in the table (columns: {list(df.columns)})")
    g = df.groupby(list(by), sort=True)[value]
    out = g.agg(mean="mean", sd=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n="count")
    return out.reset_index()


# ------------------------------------------------------------------------------------ resolution transfer
def resolution_transfer(acc: pd.DataFrame, source: int, targets: Sequence[int] | None = None) -> pd.DataFrame:
    """Resolution-transfer rows from a ``resize`` accuracy table of a net trained at ``source`` px.

    ``acc``: :func:`accuracy_under` rows of family ``resize`` (all classes, label -1), evaluated at the
    source size and the targets. Returns one row per target: ``source, target, acc_source, acc_ootb,
    delta`` (``acc_ootb - acc_source`` in percentage points; accuracies in %) plus ``options``.
    """
    a = acc[(acc["family"] == "resize") & (acc["label"] == -1)]
    by_mag = a.groupby("magnitude")["accuracy"].mean()
    if float(source) not in by_mag.index:
        raise ValueError(f"resolution_transfer: the table has no accuracy at the source size {source} "
                         f"(sizes: {sorted(by_mag.index)})")
    acc_src = 100.0 * float(by_mag[float(source)])
    targets = sorted(by_mag.index) if targets is None else [float(t) for t in targets]
    opts = a["options"].iloc[0] if "options" in a.columns and len(a) else "{}"
    rows = []
    for t in targets:
        if t not in by_mag.index:
            raise ValueError(f"resolution_transfer: no accuracy at target size {t}")
        ootb = 100.0 * float(by_mag[t])
        rows.append(dict(source=int(source), target=int(t), acc_source=acc_src, acc_ootb=ootb,
                         delta=ootb - acc_src, options=opts))
    return pd.DataFrame(rows)


def resolution_table(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targets: Sequence[int], *,
                     input_size: int, mean=None, std=None, batch_size: int = 256,
                     device: str | torch.device | None = None) -> pd.DataFrame:
    """Resolution transfer of ``model``: accuracy (%) at its source size and out of the box at each size of
    ``targets`` (px), images ``[N, C, H, W]`` and labels ``[N]`` as in :func:`accuracy_under`.

    The source size is the size the net was trained at: ``source_size`` of a net fed at a lower resolution
    (:class:`stabkit.nets.AtResolution`: its bare ``net`` is evaluated, with the resampling options it was
    trained with), else ``input_size`` (with :func:`family_options` of ``resize``). Returns the rows of
    :func:`resolution_transfer` (``source, target, acc_source, acc_ootb, delta``), one per target, with the
    resampling options of the evaluation as columns.
    """
    if hasattr(model, "source_size") and hasattr(model, "resampling"):
        net, source, resampling = model.net, int(model.source_size), dict(model.resampling())
    else:
        net, source, resampling = model, int(input_size), dict(family_options("resize"))
    sizes = sorted(set(targets) | {source})
    acc = accuracy_under(net, images, labels, "resize", sizes, mean=mean, std=std, batch_size=batch_size,
                         device=device, **resampling)
    tab = resolution_transfer(acc, source, targets)
    for k, v in resampling.items():
        tab[k] = v
    return tab.drop(columns="options")


def transfer_grid(df: pd.DataFrame, by: Sequence[str] = ("source", "target")) -> pd.DataFrame:
    """Mean +- sample sd over seeds (rows) of ``acc_source``, ``acc_ootb`` and ``delta`` per
    (source, target) (+ any extra ``by`` columns such as ``net``)."""
    parts = [summarize(df, by, v).rename(columns={"mean": f"{v}_mean", "sd": f"{v}_sd", "n": "n"})
             for v in ("acc_source", "acc_ootb", "delta")]
    out = parts[0]
    for p in parts[1:]:
        out = out.merge(p.drop(columns="n"), on=list(by))
    return out


# ----------------------------------------------------------------------------------------- augmentation
def rotate_augment(x: torch.Tensor, generator: torch.Generator | None = None,
                   max_degrees: float = 180.0) -> torch.Tensor:
    """Random-rotation augmentation (the run augmentation ``"rotate"``): one angle per image, uniform in
    ``[-max_degrees, max_degrees)`` degrees (default: every angle), bilinear, zero (black) padding.
    Applied to pixel-space batches ``[B, C, H, W]`` in [0, 1] after crop/flip, before normalisation; the
    angles are drawn (float64) on the generator's device."""
    u = draws.rand((x.shape[0],), generator, dtype=torch.float64, device=x.device)
    return rotate(x, (2 * u - 1) * max_degrees, "bilinear", "zeros")


# --------------------------------------------------------------------------------- global rotation NV
#: Reference values quoted in ``book/probes.md`` (for the book's checks).
REFERENCE = {
    # Quiroga et al. 2019, global NV on CIFAR-10 (channel-mean aggregation, pooled over every finite
    # activation of every layer: global_nv), unrotated / rotated training
    "nv_unrotated": {"SimpleConv": 0.83, "AllConvolutional": 0.77, "ResNet": 0.68},
    "nv_rotated": {"SimpleConv": 0.54, "AllConvolutional": 0.47, "ResNet": 0.36},
    # Zhang & Zhu 2019: a CIFAR-10 ResNet at about 93 % -> about 71 % at k = 2, 23-25 % by k = 10
    "shuffle_clean": 93.0, "shuffle_k2": 71.0, "shuffle_k10": (23.0, 25.0),
    # FlexConv (Romero et al. 2022), CIFAR-10 16 -> 32 px out of the box, in points
    "transfer_delta": {"ResNet-44": -31.6, "small 3x3 convs": -21.0, "FlexNet (anti-aliased)": -3.5},
}

_GLOBAL_BY = ("net", "augment", "seed", "stratified")
# Tables written before the ``reshape`` column existed: torchvision's names of reshape function/method nodes
_RESHAPE_NAME = re.compile(r"^(view|view_as|reshape|reshape_as|flatten|unflatten|contiguous|squeeze|unsqueeze|"
                           r"permute|transpose|t|movedim)(_\d+)?$")


def _check_columns(inv: pd.DataFrame, needed: Sequence[str], fn: str) -> None:
    missing = [c for c in needed if c not in inv.columns]
    if missing:
        raise ValueError(f"{fn}: inv must be an invariance layer table (stabkit.invariance.invariance()"
                         f"['layers']); columns {missing} are missing")


def global_nv(inv: pd.DataFrame, by: Sequence[str] = _GLOBAL_BY) -> pd.DataFrame:
    """Global NV of each net: the mean NV over every finite activation of every layer, pooled (the
    convention of the 2019 rotation paper's reference numbers, :data:`REFERENCE`).

    Reshape nodes (``view``, ``flatten``, ...: rows with ``reshape`` True) are left out: they repeat the
    layer before them. A layer weighs by its number of finite-NV activations (``n_finite``), so wide layers
    weigh more than in :func:`layer_mean_nv`. Tables written before the ``reshape``/``n_finite`` columns
    existed are read with ``n_activations - n_inf`` and reshape nodes recognised by their names (with a
    warning: an ``nn.Flatten`` module is not recognised by name).

    Args:
        inv: invariance layer table(s) (:func:`stabkit.invariance.invariance` ``["layers"]``, or the
            collected ``invariance`` table of runs).
        by: the columns that identify a net (those present are kept): one row per group.

    Returns:
        ``by`` columns + ``global_NV``, ``n_finite`` (activations pooled).
    """
    _check_columns(inv, ("mean_NV", "n_activations", "n_inf"), "global_nv")
    t = inv.copy()
    if "reshape" not in t.columns:
        warnings.warn("global_nv: the table has no 'reshape' column (measured before it existed): reshape nodes "
                      "are recognised by their names; measure again for an exact selection", stacklevel=2)
        t["reshape"] = t["layer"].astype(str).str.match(_RESHAPE_NAME)
    if "n_finite" not in t.columns:
        t["n_finite"] = t["n_activations"] - t["n_inf"]
    t = t[~t["reshape"].astype(bool) & (t["n_finite"] > 0)]
    t = t.assign(_sum=t["mean_NV"] * t["n_finite"])
    by = [c for c in by if c in t.columns]
    if by:
        g = t.groupby(by, as_index=False)[["_sum", "n_finite"]].sum()
    else:
        g = pd.DataFrame({"_sum": [t["_sum"].sum()], "n_finite": [t["n_finite"].sum()]})
    g["global_NV"] = g["_sum"] / g["n_finite"]
    return g[by + ["global_NV", "n_finite"]]


def layer_mean_nv(inv: pd.DataFrame, by: Sequence[str] = _GLOBAL_BY) -> pd.DataFrame:
    """Mean over layers of the per-layer mean NV (``mean_NV``), every row of the table counted once
    (reshape nodes included): the summary stabkit showed before :func:`global_nv` followed the reference
    convention. It weighs a 10-unit readout like a 4096-unit layer. Returns ``by`` columns +
    ``layer_mean_NV``."""
    _check_columns(inv, ("mean_NV",), "layer_mean_nv")
    by = [c for c in by if c in inv.columns]
    if not by:
        return pd.DataFrame({"layer_mean_NV": [inv["mean_NV"].mean()]})
    return inv.groupby(by, as_index=False)["mean_NV"].mean().rename(columns={"mean_NV": "layer_mean_NV"})


# ---------------------------------------------------------------------------------------------- examples
#: The source :func:`example_images` names when CIFAR-10 is not found and it draws generated patterns.
GENERATED_EXAMPLES = "generated patterns (CIFAR-10 not found)"


def example_images(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``n`` CIFAR-10 test images of different classes (float [n, 3, 32, 32] in [0, 1]) for the book's
    example grids, and where they come from; generated colour patterns when CIFAR-10 cannot be found
    without downloading (:func:`stabkit.data.cifar10_tensors` search path)."""
    try:
        x, y = data.cifar10_tensors(train=False)
        g = torch.Generator().manual_seed(seed)
        idx = [int(torch.nonzero(y == c).squeeze(1)[torch.randint(int((y == c).sum()), (1,), generator=g)])
               for c in range(min(n, 10))]
        return x[idx].float() / 255.0, "CIFAR-10 test images"
    except (FileNotFoundError, ValueError):
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
        out = []
        for _ in range(n):
            r = torch.rand(9, generator=g)
            img = torch.stack([torch.sin(6 * r[i] * xx + 6 * r[i + 3] * yy + 3 * r[i + 6]) for i in range(3)])
            img = img + torch.exp(-((xx - r[0]) ** 2 + (yy - r[1]) ** 2) / 0.02)[None]
            out.append((img - img.min()) / (img.max() - img.min()))
        return torch.stack(out), GENERATED_EXAMPLES
