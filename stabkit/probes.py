"""Related probes of spatial sensitivity: accuracy under a transform family, resolution transfer,
rotation invariance of activations, as run measurements (PROBES.md).

Families (magnitude axis, default magnitudes in :data:`MAGNITUDES`):

- ``rotate``: angle in degrees (bilinear, black padding); per class with ``per_class=True``.
- ``patch_shuffle``: grid size k (``mode="full"`` or ``"rows_cols"``); k = 1 is the clean image.
- ``mask``: fraction of patches occluded (``patch``, ``fill``, ``order="random" | "saliency"``; the
  saliency order masks the tiles with the largest input-gradient magnitude of the true-class logit first).
- ``pixelate``: box-down / nearest-up factor.
- ``resize``: target side in pixels (the net sees the image at that size: nets with global pooling only,
  e.g. ResNet*, EfficientNetB0); ``interp``, ``antialias``, ``blur_sigma`` recorded.

Every transform is applied in pixel space ([0, 1] floats, uint8 images are scaled) *before* the
per-channel normalisation, each (family, magnitude, seed) with its own seeded generator.

Public API: :func:`apply_family`, :func:`accuracy_under`, :func:`summarize`, :func:`gradient_saliency`,
:func:`resolution_transfer`, :func:`rotate_augment`; run measurements ``"accuracy"``, ``"invariance"``
and ``"resolution"`` and the augmentation ``"rotate"`` registered in :mod:`stabkit.runs`.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .transforms.spatial import mask_patches, patch_shuffle, pixelate, resize, rotate

__all__ = ["FAMILIES", "MAGNITUDES", "CIFAR10_CLASSES", "VARIABLE_INPUT_NETS", "apply_family", "family_options",
           "accuracy_under", "summarize", "gradient_saliency", "resolution_transfer", "transfer_grid",
           "rotate_augment", "AtResolution", "REFERENCE", "global_nv", "nv_strip_image", "plot_nv_strips",
           "example_images", "plot_examples"]

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
    "rotate": dict(interp="bilinear", padding="zeros"),
    "patch_shuffle": dict(mode="full"),
    "mask": dict(patch=4, fill="zero", order="random"),
    "pixelate": dict(),
    "resize": dict(interp="bilinear", antialias=True, blur_sigma=0.0),
}
#: CIFAR-10 class names in label order (for per-class tables and plots).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: Networks of ``stabkit.nets`` that accept any input side (global average pooling before the
#: readout): the only ones usable for resolution transfer. VGG/AlexNet zero-pad smaller inputs to the
#: size they were built for and LeNet/the FCNs have a fixed flatten size.
VARIABLE_INPUT_NETS = ("ResNet18", "ResNet34", "ResNet50", "EfficientNetB0")


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


def apply_family(family: str, images: torch.Tensor, magnitude, generator: torch.Generator | None = None,
                 saliency: torch.Tensor | None = None, **options) -> torch.Tensor:
    """Transform pixel-space images ``[B, C, H, W]`` by ``family`` at ``magnitude`` (see module doc).
    ``saliency`` is used by ``mask`` with ``order="saliency"``. Returns a new tensor (``resize`` changes
    H, W)."""
    opts = family_options(family, **options)
    if family == "rotate":
        return rotate(images, magnitude, **opts)
    if family == "patch_shuffle":
        return patch_shuffle(images, int(magnitude), mode=opts["mode"], generator=generator)
    if family == "mask":
        return mask_patches(images, int(opts["patch"]), float(magnitude), fill=opts["fill"], order=opts["order"],
                            saliency=saliency if opts["order"] == "saliency" else None, generator=generator)
    if family == "pixelate":
        return pixelate(images, int(magnitude))
    return resize(images, int(magnitude), interp=opts["interp"], antialias=bool(opts["antialias"]),
                  blur_sigma=float(opts["blur_sigma"]))


def _pixels(x: torch.Tensor, device) -> torch.Tensor:
    x = x.to(device)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def _normaliser(mean, std, device) -> Callable[[torch.Tensor], torch.Tensor]:
    if mean is None and std is None:
        return lambda x: x
    m = torch.as_tensor(0.0 if mean is None else mean, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
    s = torch.as_tensor(1.0 if std is None else std, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
    return lambda x: (x - m) / s


def gradient_saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``|d logit_y / d x|`` summed over channels: ``[B, H, W]`` (x is the network input)."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        out = model(x)
        out.gather(1, y.view(-1, 1)).sum().backward()
    return x.grad.abs().sum(1).detach()


def _model_device(model: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def accuracy_under(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, family: str,
                   magnitudes: Sequence | None = None, *, seeds: Sequence[int] = (0,), mean=None, std=None,
                   batch_size: int = 256, device=None, per_class: bool = False,
                   **options) -> pd.DataFrame:
    """Top-1 accuracy of ``model`` on transformed images against the magnitude of ``family``.

    Args:
        model: a classifier ``[B, C, H, W] -> [B, classes]``; evaluated in eval mode (restored after).
        images: [N, C, H, W] pixel-space images (uint8 or floats in [0, 1]); labels [N].
        family: one of :data:`FAMILIES`; ``magnitudes``: its x axis (default :data:`MAGNITUDES`).
        seeds: transform seeds (each (magnitude, seed) draws its own permutations / masks).
            Deterministic families (rotate, pixelate, resize) are evaluated once (seed 0).
        mean, std: per-channel normalisation applied after the transform.
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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    random_family = family == "patch_shuffle" or (family == "mask" and (opts["order"] == "random"
                                                                       or opts["fill"] == "noise"))
    seeds = [int(s) for s in seeds] if random_family else [0]
    if not seeds:
        raise ValueError("seeds must not be empty")
    device = _model_device(model, device)
    norm = _normaliser(mean, std, device)
    n_cls = int(labels.max()) + 1 if labels.numel() else 0
    was_training = model.training
    model.eval()
    rows = []
    try:
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
                    xt = apply_family(family, x, mag, generator=gen, saliency=sal, **opts)
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
    finally:
        model.train(was_training)
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
    """Random-rotation augmentation (registered as ``"rotate"`` in ``runs.AUGMENTATIONS``): one angle per
    image, uniform in ``[-max_degrees, max_degrees)`` degrees (default: every angle), bilinear, zero
    (black) padding. Applied to pixel-space batches in [0, 1] after crop/flip, before normalisation."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(x.shape[0], generator=generator, device=gdev, dtype=torch.float64).to(x.device)
    return rotate(x, (2 * u - 1) * max_degrees, interp="bilinear", padding="zeros")


# ------------------------------------------------------------------------- nets trained at a lower resolution
def _resample(x: torch.Tensor, size: int, interp: str, antialias: bool, blur_sigma: float) -> torch.Tensor:
    return resize(x, size, interp=interp, antialias=antialias, blur_sigma=blur_sigma)


torch.fx.wrap("_resample")  # a leaf of the FX graph (resize has shape-dependent Python branches)


class AtResolution(nn.Module):
    """``net`` fed at ``source_size`` px: ``forward(x) = net(resize(x, source_size, ...))``.

    This is how a run trains "at a source resolution" with the ordinary 32 px data pipeline: the images
    (cropped/flipped at 32 px, then normalised) are resampled to ``source_size`` inside the model, with
    the recorded options; training, test error and model selection therefore happen at the source size.
    ``model.net`` is the bare network, to be evaluated out of the box at other sizes. Registered in
    ``stabkit.nets`` as ``LowRes-<net>`` for the nets of :data:`VARIABLE_INPUT_NETS` (option
    ``source_size``, default 16, plus ``interp``, ``antialias``, ``blur_sigma``).
    """

    def __init__(self, net: nn.Module, source_size: int = 16, interp: str = "bilinear", antialias: bool = True,
                 blur_sigma: float = 0.0):
        super().__init__()
        resize(torch.zeros(1, 1, 2, 2), int(source_size), interp=interp, antialias=antialias,
               blur_sigma=float(blur_sigma))  # validates the options (clear ValueError)
        self.net = net
        self.source_size, self.interp = int(source_size), interp
        self.antialias, self.blur_sigma = bool(antialias), float(blur_sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_resample(x, self.source_size, self.interp, self.antialias, self.blur_sigma))

    def resampling(self) -> dict[str, Any]:
        return dict(interp=self.interp, antialias=self.antialias, blur_sigma=self.blur_sigma)


def _register_lowres_nets() -> None:
    from . import nets

    for base in VARIABLE_INPUT_NETS:
        name = f"LowRes-{base}"
        if name in nets._BUILDERS:  # re-import (e.g. importlib.reload)
            continue

        def builder(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0, input_size: int = 32,
                    source_size: int = 16, interp: str = "bilinear", antialias: bool = True,
                    blur_sigma: float = 0.0, base=base) -> nn.Module:
            if isinstance(source_size, bool) or not isinstance(source_size, int) or source_size < 1:
                raise ValueError(f"LowRes-{base}: source_size must be a positive int, got {source_size!r}")
            inner = nets.build(base, in_channels=in_channels, num_classes=num_classes, width_factor=width_factor)
            inner.input_shape = (in_channels, source_size, source_size)
            return AtResolution(inner, source_size, interp, antialias, blur_sigma)
        builder.__doc__ = f"{base} trained at ``source_size`` px (inputs resampled inside the model)."
        nets.register(name)(builder)


_register_lowres_nets()


# ------------------------------------------------------------------------------------ run measurements
def _opts(cfg, name: str) -> dict:
    return dict((cfg.options or {}).get(name) or {})


def _test_subset(ctx, n: int | None):
    """``n`` test images drawn at random with a fixed seed (the same for every net of a sweep; the test
    set may be ordered by class), or all of them."""
    x, y = ctx.data.test_x, torch.as_tensor(ctx.data.test_y)
    if n is not None and int(n) < len(y):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(20190101))[:int(n)]
        x, y = x[idx], y[idx]
    return x, y


def _register_runs() -> None:
    from . import runs

    runs.register_augmentation("rotate", overwrite=True)(rotate_augment)

    @runs.register_measurement("accuracy", overwrite=True)
    def _measure_accuracy(model, cfg, ctx) -> dict[str, pd.DataFrame]:
        """``accuracy``: :func:`accuracy_under` rows for every probe of ``options.accuracy.families``
        (``{probe: {family: <default: the probe name>, magnitudes: [...], per_class: bool, <family
        options>}}``; column ``probe`` holds the key, e.g. ``mask_saliency``), on the first
        ``options.accuracy.n`` test images (default all), transform seeds ``options.accuracy.seeds``."""
        o = _opts(cfg, "accuracy")
        fams = o.pop("families", {"rotate": {"per_class": True}})
        x, y = _test_subset(ctx, o.pop("n", None))
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

    @runs.register_measurement("invariance", overwrite=True)
    def _measure_invariance(model, cfg, ctx) -> dict[str, pd.DataFrame]:
        """``invariance`` (per layer) and ``invariance_act`` (per activation, if ``per_activation``):
        rotation TV / SV / NV. ``options.invariance``: ``angles`` (list, degrees) or ``n_angles`` (16),
        ``n`` test samples (256), ``aggregate`` ("mean"), ``stat`` ("std"), ``stratify`` (list of bools,
        [false]), ``per_activation`` (true), ``batch_size`` (64)."""
        from .invariance import invariance, rotations
        o = _opts(cfg, "invariance")
        tr = rotations(o.pop("angles", None), n=int(o.pop("n_angles", 16)))
        x, y = _test_subset(ctx, o.pop("n", 256))
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

    @runs.register_measurement("resolution", overwrite=True)
    def _measure_resolution(model, cfg, ctx) -> dict[str, pd.DataFrame]:
        """``resolution``: accuracy at the source size (the size the net was trained at: ``source_size``
        of a ``LowRes-*`` net, else the data's) and out of the box at every size of
        ``options.resolution.targets`` (default 8, 16, 24, 32), on ``options.resolution.n`` test images;
        one row per target with ``source, target, acc_source, acc_ootb, delta`` (points) and the resampling
        options (``interp``, ``antialias``, ``blur_sigma`` of the evaluation, same as training's)."""
        o = _opts(cfg, "resolution")
        targets = [int(t) for t in o.pop("targets", MAGNITUDES["resize"])]
        x, y = _test_subset(ctx, o.pop("n", None))
        bs = int(o.pop("batch_size", 256))
        if o:
            raise ValueError(f"options.resolution: unknown key(s) {sorted(o)}")
        if isinstance(model, AtResolution):
            net, source, rs = model.net, model.source_size, model.resampling()
        else:
            net, source, rs = model, int(ctx.data.input_size), dict(_OPTIONS["resize"])
        sizes = sorted(set(targets) | {source})
        acc = accuracy_under(net, x, y, "resize", sizes, mean=ctx.data.mean, std=ctx.data.std, batch_size=bs,
                             device=ctx.device, **rs)
        tab = resolution_transfer(acc, source, targets)
        for k, v in rs.items():
            tab[k] = v
        return {"resolution": tab.drop(columns="options")}


_register_runs()


# ---------------------------------------------------------------------------------------------- figures
#: Reference values quoted in PROBES.md (for the book's checks).
REFERENCE = {
    # Quiroga et al. 2019, global mean NV on CIFAR-10 (channel-mean aggregation), unrotated / rotated training
    "nv_unrotated": {"SimpleConv": 0.83, "AllConvolutional": 0.77, "ResNet": 0.68},
    "nv_rotated": {"SimpleConv": 0.54, "AllConvolutional": 0.47, "ResNet": 0.36},
    # Zhang & Zhu 2019: a CIFAR-10 ResNet at about 93 % -> about 71 % at k = 2, 23-25 % by k = 10
    "shuffle_clean": 93.0, "shuffle_k2": 71.0, "shuffle_k10": (23.0, 25.0),
    # FlexConv (Romero et al. 2022), CIFAR-10 16 -> 32 px out of the box, in points
    "transfer_delta": {"ResNet-44": -31.6, "small 3x3 convs": -21.0, "FlexNet (anti-aliased)": -3.5},
}


def nv_strip_image(values: np.ndarray, width: int = 200) -> np.ndarray:
    """Sorted NV values of one layer resampled to ``width`` columns (nearest rank), ``inf`` kept."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return np.full(width, np.nan)
    idx = np.minimum((np.arange(width) + 0.5) / width * v.size, v.size - 1).astype(int)
    return v[idx]


def plot_nv_strips(acts: pd.DataFrame, vmax: float = 1.5, width: int = 200, title: str = "", ax=None,
                   labels: bool = True):
    """Per-layer strip heatmap of per-activation NV of one net: one row per layer (execution order, top =
    input side), the layer's activations sorted by NV along x (resampled to ``width`` columns, so every
    layer spans the full width); ``inferno`` from 0 to ``vmax`` (larger finite values saturate),
    ``inf`` (SV = 0 < TV) in cyan, ``0/0 = 1`` shown as 1; ``labels``: layer names on the y axis.
    Returns the image artist."""
    import matplotlib.pyplot as plt

    layers = acts.drop_duplicates("layer").sort_values("depth")["layer"].tolist()
    img = np.stack([nv_strip_image(acts.loc[acts.layer == name, "NV"].to_numpy(), width) for name in layers])
    shown = np.where(np.isinf(img), np.inf, np.minimum(img, vmax * (1 - 1e-9)))
    cmap = plt.get_cmap("inferno").copy()
    cmap.set_over("cyan")
    cmap.set_bad("lightgrey")
    ax = ax if ax is not None else plt.gca()
    art = ax.imshow(np.ma.masked_invalid(np.where(np.isinf(shown), vmax * 10, shown)), aspect="auto",
                    cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.grid(False)
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels(layers if labels else [], fontsize=5)
    ax.set_xticks([0, width / 2, width - 1], ["0", "50", "100"])
    ax.set_xlabel("units sorted by NV (%)", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return art


def global_nv(inv: pd.DataFrame, by: Sequence[str] = ("net", "augment", "seed", "stratified")) -> pd.DataFrame:
    """Global mean NV per run (mean over layers of the per-layer mean NV), as the 2019 paper summarises a
    net; ``by`` columns kept (those present)."""
    by = [c for c in by if c in inv.columns]
    return inv.groupby(by, as_index=False)["mean_NV"].mean().rename(columns={"mean_NV": "global_NV"})


def example_images(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``n`` CIFAR-10 test images of different classes (float [n, 3, 32, 32] in [0, 1]) for the book's
    example grids, and where they come from; generated colour patterns when CIFAR-10 cannot be found
    without downloading (``stabkit.data.cifar10_tensors`` search path)."""
    from . import data

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
        return torch.stack(out), "generated patterns (CIFAR-10 not found)"


def plot_examples(images: torch.Tensor, family: str, magnitudes: Sequence, seed: int = 0, **options):
    """Grid of examples: one row per image, one column per magnitude of ``family`` (pixel space)."""
    import matplotlib.pyplot as plt

    n, m = len(images), len(magnitudes)
    fig, axes = plt.subplots(n, m, figsize=(1.3 * m + 0.4, 1.35 * n + 0.3), squeeze=False)
    for j, mag in enumerate(magnitudes):
        out = apply_family(family, images, mag, generator=torch.Generator().manual_seed(seed), **options)
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(out[i].clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([]); ax.set_yticks([]); ax.grid(False)
            if i == 0:
                ax.set_title(f"{mag:g}", fontsize=9)
    fig.tight_layout()
    return fig
