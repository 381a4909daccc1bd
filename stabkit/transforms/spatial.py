"""Spatial probes: rotations, patch shuffling, patch masking, resolution changes (``book/probes.md``).

Every function takes ``(B, C, H, W)`` images (``(C, H, W)`` and ``(H, W)`` are accepted too and come back in
the same layout), works on the images' device, is vectorised over the batch, and draws its randomness from
an explicit ``torch.Generator`` (``None``: the global CPU generator), drawn on the generator's device
(:mod:`stabkit.transforms.draws`), so that a batch can be replayed on any device.
Floating-point images are transformed in their dtype; integer images (e.g. ``uint8``) are transformed in
float32 and rounded back (clamped to the dtype's range).

Apply these transforms *before* normalisation when a fill or padding value is meant to be black (0).

Conventions
-----------
- ``rotate``: degrees, counter-clockwise as displayed (row 0 at the top), about the image centre
  ``((H-1)/2, (W-1)/2)``; multiples of 90 degrees on square images are returned by ``torch.rot90`` exactly.
- ``patch_shuffle``: mode ``"full"`` cuts each axis of length ``n`` into ``k`` equal parts of
  ``floor(n / k)`` pixels from the top-left corner; the remainder band (the last ``n mod k`` rows and
  columns) stays in place and all ``k^2`` patches are permuted uniformly. Mode ``"rows_cols"`` cuts an axis
  as ``torch.tensor_split`` does (the first ``n mod k`` strips are one pixel longer) and the strips move
  with their size.
- ``mask_patches``: square tiles of side ``patch`` from the top-left corner, partial tiles at the right and
  bottom edges; ``round(fraction * n_tiles)`` tiles are masked (halves round up). Fills ``"mean"`` and
  ``"noise"`` use the data set's per-channel mean (and std), never the batch's, so an image gets the same
  fill whatever batch it is in.
- Fill and padding modes are spelled as torch spells them: ``"zeros"`` (``"zero"`` is accepted by
  ``mask_patches`` as an alias). Interpolation modes: ``"bilinear"``, ``"nearest"``, ``"bicubic"``,
  ``"area"``.
- ``resize``: ``torch.nn.functional.interpolate`` with ``align_corners=False``; ``"nearest"`` means
  torch's ``"nearest-exact"`` (pixel-centre aligned, as PIL), not torch's legacy ``"nearest"``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..checks import check_choice, check_float, check_int
from ..protocol import CIFAR10_MEAN, CIFAR10_STD
from .draws import rand, randn

__all__ = ["rotate", "patch_shuffle", "mask_patches", "resize", "pixelate", "gaussian_blur"]

ROTATE_INTERP = ("bilinear", "nearest", "bicubic")
ROTATE_PADDING = ("zeros", "border", "reflection")
SHUFFLE_MODES = ("full", "rows_cols")
MASK_FILLS = ("zeros", "mean", "noise", "blur")
#: Other accepted spellings of the mask fills (``"zero"``: the spelling of existing sweep files).
MASK_FILL_ALIASES = {"zero": "zeros"}
MASK_ORDERS = ("random", "saliency")
RESIZE_INTERP = ("bilinear", "nearest", "area", "bicubic")


# --------------------------------------------------------------------------------------------- helpers
def _to4d(images: torch.Tensor, fn: str) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{fn}: images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if images.dim() == 4:
        return images, lambda y: y
    if images.dim() == 3:
        return images.unsqueeze(0), lambda y: y.squeeze(0)
    if images.dim() == 2:
        return images[None, None], lambda y: y[0, 0]
    raise ValueError(f"{fn}: images must have shape (B, C, H, W), (C, H, W) or (H, W), got {tuple(images.shape)}")


def _finite(x: torch.Tensor, fn: str) -> None:
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{fn}: images must be finite (no NaN or inf)")


def _float(x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Float view of ``x`` and a function that casts a result back to ``x``'s dtype."""
    if x.is_floating_point():
        return x, lambda y: y
    if x.dtype == torch.bool:
        return x.float(), lambda y: y > 0.5
    info = torch.iinfo(x.dtype)
    dtype = x.dtype
    return x.float(), lambda y: y.round().clamp(info.min, info.max).to(dtype)


def _per_image(value, batch: int, name: str, fn: str, device: torch.device) -> torch.Tensor:
    """A scalar or a [B] tensor/sequence -> float64 tensor [B] on ``device``."""
    what = f"{fn}: {name} must be a real number or a [B] tensor / sequence of real numbers"
    if isinstance(value, (str, bytes, bool)):
        raise TypeError(f"{what}, got {value!r}")
    try:
        t = torch.as_tensor(value, dtype=torch.float64).to(device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{what}, got {value!r}") from err
    if t.dim() == 0:
        t = t.expand(batch)
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(f"{fn}: {name} must be a scalar or have shape [B] = [{batch}], got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{fn}: {name} must be finite")
    return t


def _splits(n: int, k: int) -> torch.Tensor:
    """Sizes of ``k`` parts of an axis of length ``n`` (first ``n mod k`` parts one longer)."""
    q, r = divmod(n, k)
    return torch.tensor([q + 1] * r + [q] * (k - r), dtype=torch.long)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, kernel size ``2*ceil(3 sigma)+1``, reflect padding (replicate when the
    image is too small to reflect). ``sigma = 0`` returns the input unchanged. (B, C, H, W) -> same."""
    sigma = check_float("gaussian_blur: sigma", sigma, minimum=0.0)
    x4, back = _to4d(images, "gaussian_blur")
    if sigma == 0:
        return images.clone()
    x, cast = _float(x4)
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-t**2 / (2 * sigma**2))
    w = (w / w.sum()).to(x.dtype).to(x.device)
    B, C, H, W = x.shape
    y = x.reshape(B * C, 1, H, W)
    mode_h = "reflect" if r < H else "replicate"
    mode_w = "reflect" if r < W else "replicate"
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=mode_h), w.view(1, 1, -1, 1))
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=mode_w), w.view(1, 1, 1, -1))
    return back(cast(y.reshape(B, C, H, W)))


# ---------------------------------------------------------------------------------------------- rotate
def rotate(images: torch.Tensor, degrees, interpolation: str = "bilinear", padding: str = "zeros") -> torch.Tensor:
    """Rotate each image by its own angle.

    Args:
        images: (B, C, H, W) (or (C, H, W), (H, W)).
        degrees: angle in **degrees**, counter-clockwise as displayed; a scalar or a [B] tensor (one angle
            per image). Multiples of 90 on square images are exactly ``torch.rot90`` (no interpolation).
        interpolation: ``"bilinear"`` (default) | ``"nearest"`` | ``"bicubic"`` (``grid_sample`` modes).
        padding: value of the pixels rotated in from outside: ``"zeros"`` (default, black before
            normalisation) | ``"border"`` (replicate) | ``"reflection"``.

    Returns: rotated images, same shape and dtype. The rotation is about the image centre in pixel units
    (non-square images are not stretched). Images with NaN or inf are refused (``ValueError``).
    """
    check_choice("rotate: interpolation", interpolation, ROTATE_INTERP)
    check_choice("rotate: padding", padding, ROTATE_PADDING)
    x4, back = _to4d(images, "rotate")
    _finite(x4, "rotate")
    B, C, H, W = x4.shape
    deg = _per_image(degrees, B, "degrees", "rotate", x4.device)
    quarter = torch.remainder(deg, 360.0) / 90.0
    k = torch.round(quarter)
    is_q = (quarter - k).abs() < 1e-9
    k = k.long() % 4
    if H != W:  # 90 / 270 on non-square images would change the shape: interpolate those
        is_q = is_q & (k % 2 == 0)
    x, cast = _float(x4)
    out = torch.empty_like(x)
    gen = ~is_q
    if gen.any():
        idx = gen.nonzero().squeeze(1)
        th = torch.deg2rad(deg[idx])
        cos, sin = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
        cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
        ys = torch.arange(H, dtype=torch.float64, device=x.device)[None, :, None]
        xs = torch.arange(W, dtype=torch.float64, device=x.device)[None, None, :]
        u, v = xs - cx, -(ys - cy)  # math axes, v up
        us = cos * u + sin * v  # inverse rotation: output pixel pulls from R(-theta)(u, v)
        vs = -sin * u + cos * v
        sx, sy = us + cx, cy - vs
        gx = 2 * sx / max(W - 1, 1) - 1 if W > 1 else torch.zeros_like(sx)
        gy = 2 * sy / max(H - 1, 1) - 1 if H > 1 else torch.zeros_like(sy)
        grid = torch.stack([gx.expand(-1, H, W), gy.expand(-1, H, W)], dim=-1).to(x.dtype)
        out[idx] = F.grid_sample(x[idx], grid, mode=interpolation, padding_mode=padding, align_corners=True)
    for q in range(4):
        sel = is_q & (k == q)
        if sel.any():
            idx = sel.nonzero().squeeze(1)
            out[idx] = torch.rot90(x[idx], q, dims=(-2, -1))
    return back(cast(out))


# --------------------------------------------------------------------------------------- patch shuffle
def _strip_map(sizes: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Source index of every output position when strips of ``sizes`` are laid out in order ``perm``.
    sizes [k], perm [B, k] (output strip j = source strip perm[:, j]) -> [B, n]."""
    B, k = perm.shape
    n = int(sizes.sum())
    dev = perm.device
    sizes = sizes.to(dev)
    start_src = torch.cumsum(sizes, 0) - sizes  # [k]
    out_sizes = sizes[perm]  # [B, k]
    out_start = torch.cumsum(out_sizes, 1) - out_sizes  # start of output slot j
    pos_of = torch.argsort(perm, dim=1)  # output slot of source strip a
    strip = torch.repeat_interleave(torch.arange(k, device=dev), sizes)  # [n] strip of each source pixel
    offset = torch.arange(n, device=dev) - start_src[strip]
    dest = torch.gather(out_start, 1, pos_of[:, strip]) + offset  # [B, n] output position of source pixel
    src = torch.empty((B, n), dtype=torch.long, device=dev)
    src.scatter_(1, dest, torch.arange(n, device=dev).expand(B, n).contiguous())
    return src


def patch_shuffle(images: torch.Tensor, k: int, mode: str = "full", generator: torch.Generator | None = None,
                  return_index: bool = False):
    """Cut each image into a k x k grid of patches and permute the patches (one draw per image).

    Args:
        images: (B, C, H, W) (or (C, H, W), (H, W)); apply before normalisation.
        k: grid size, ``1 <= k <= min(H, W)`` (Python, numpy or torch integer); ``k = 1`` is the identity.
        mode: ``"full"``: a uniformly random permutation of the k^2 patches (Zhang & Zhu 2019);
            ``"rows_cols"``: permute the k horizontal strips, then independently the k vertical strips
            ((k!)^2 layouts).
        generator: seeds the permutations (drawn on the generator's device).
        return_index: also return the [B, H*W] source pixel index of every output pixel.

    Uneven division (k does not divide the side ``n``):

    - ``full``: every patch is ``floor(H/k) x floor(W/k)`` pixels, laid from the top-left corner; the
      remainder band (the last ``H mod k`` rows and ``W mod k`` columns) stays in place. All k^2 patches
      are then alike and the permutation is uniform over all of them, so no patch is pinned (at k = 3 on
      32 px: 10 x 10 patches and a fixed 2-pixel band at the bottom and on the right).
    - ``rows_cols``: each axis is cut as ``torch.tensor_split`` does (the first ``n mod k`` strips are one
      pixel longer) and the strips move with their size.

    When k divides H and W both modes cut the same grid. Either way the output is a permutation of each
    image's pixels (all channels alike).

    Returns: shuffled images (same shape/dtype) [, index].
    """
    check_choice("patch_shuffle: mode", mode, SHUFFLE_MODES)
    x, back = _to4d(images, "patch_shuffle")
    B, C, H, W = x.shape
    k = check_int("patch_shuffle: k", k, minimum=1, maximum=min(H, W))
    dev = x.device
    if mode == "rows_cols":
        pr = torch.argsort(rand((B, k), generator, device=dev), dim=1)
        pc = torch.argsort(rand((B, k), generator, device=dev), dim=1)
        rows, cols = _strip_map(_splits(H, k), pr), _strip_map(_splits(W, k), pc)  # [B, H], [B, W]
        index = (rows[:, :, None] * W + cols[:, None, :]).reshape(B, H * W)
    else:
        qh, qw = H // k, W // k
        # src_slot[b, j]: source patch (row-major) shown in output patch j (float64 keys: the draws of
        # earlier versions, so that grids dividing the image give the same permutations as before)
        src_slot = torch.argsort(rand((B, k * k), generator, device=dev).to(torch.float64), dim=1)
        ys, xs = torch.arange(H, device=dev), torch.arange(W, device=dev)
        pr, pc = (ys // qh).clamp(max=k - 1), (xs // qw).clamp(max=k - 1)  # patch row / column of a pixel
        inside = (ys < k * qh)[:, None] & (xs < k * qw)[None, :]  # [H, W]: False on the remainder band
        src = src_slot[:, pr[:, None] * k + pc[None, :]]  # [B, H, W]
        rows = torch.where(inside, (src // k) * qh + (ys % qh)[None, :, None], ys[None, :, None])
        cols = torch.where(inside, (src % k) * qw + (xs % qw)[None, None, :], xs[None, None, :])
        index = (rows * W + cols).reshape(B, H * W)
    out = torch.gather(x.reshape(B, C, H * W), 2, index[:, None, :].expand(B, C, H * W)).reshape(B, C, H, W)
    return (back(out), index) if return_index else back(out)


# ---------------------------------------------------------------------------------------- mask patches
def mask_patches(images: torch.Tensor, patch: int, fraction, fill="zeros", order: str = "random",
                 saliency: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 blur_sigma: float | None = None, return_mask: bool = False, *,
                 mean: Sequence[float] | torch.Tensor | None = None,
                 std: Sequence[float] | torch.Tensor | None = None):
    """Occlude a fraction of square patches of every image.

    Args:
        images: (B, C, H, W) (or (C, H, W), (H, W)).
        patch: tile side q in pixels (tiles from the top-left corner; partial tiles at the right and bottom
            edges count as tiles). ``n_tiles = ceil(H/q) * ceil(W/q)``. Python, numpy or torch integer.
        fraction: share of tiles masked, in [0, 1]; scalar or [B]. ``round(fraction * n_tiles)`` tiles are
            masked (halves round up), so the masked pixel share is exactly ``fraction`` when ``q`` divides
            H and W and ``fraction * n_tiles`` is an integer.
        fill: ``"zeros"`` (``"zero"`` is an alias) | ``"mean"`` (the data set's per-channel ``mean``) |
            ``"noise"`` (Gaussian with the data set's per-channel ``mean`` and ``std``, clipped to the image
            range [0, 1]) | ``"blur"`` (the image blurred with a Gaussian of ``blur_sigma``, default
            ``q/2``) | a number or a [C] tensor. The fill of an image never depends on the rest of the batch.
        order: ``"random"`` (uniform random tiles per image) | ``"saliency"`` (tiles with the largest mean
            ``saliency`` first, ties by tile index).
        saliency: [B, H, W], [B, 1, H, W] or per-tile [B, n_rows, n_cols]; required by ``order="saliency"``.
        generator: seeds the random order and the noise fill.
        return_mask: also return the boolean mask [B, 1, H, W] (True = masked).
        mean, std: the data set's per-channel pixel mean and std in [0, 1] units (``C`` values; scaled to
            the dtype's range for integer images), used by ``fill="mean"`` / ``"noise"``. Default: the
            CIFAR-10 values of :mod:`stabkit.protocol` for 3-channel images; other channel counts must
            give them.

    Returns: masked images (same shape/dtype) [, mask].
    """
    check_choice("mask_patches: order", order, MASK_ORDERS)
    if isinstance(fill, str):
        fill = MASK_FILL_ALIASES.get(fill, fill)
        if fill not in MASK_FILLS:
            raise ValueError(f"mask_patches: fill must be one of {MASK_FILLS} or a number / [C] tensor, "
                             f"got {fill!r}")
    x4, back = _to4d(images, "mask_patches")
    B, C, H, W = x4.shape
    patch = check_int("mask_patches: patch", patch, minimum=1, maximum=max(H, W))
    frac = _per_image(fraction, B, "fraction", "mask_patches", x4.device)
    if ((frac < 0) | (frac > 1)).any():
        raise ValueError("mask_patches: fraction must lie in [0, 1]")
    nr, nc = -(-H // patch), -(-W // patch)
    n = nr * nc
    dev = x4.device
    if order == "saliency":
        if saliency is None:
            raise ValueError("mask_patches: order='saliency' needs a saliency map (saliency=[B, H, W])")
        s = torch.as_tensor(saliency).to(dev, torch.float64)
        if s.dim() == 4 and s.shape[1] == 1:
            s = s[:, 0]
        if s.dim() != 3 or s.shape[0] != B or tuple(s.shape[1:]) not in ((H, W), (nr, nc)):
            raise ValueError(f"mask_patches: saliency must have shape [B, H, W] = [{B}, {H}, {W}] or per tile "
                             f"[B, {nr}, {nc}], got {tuple(s.shape)}")
        if tuple(s.shape[1:]) == (H, W) and (H, W) != (nr, nc):
            pad = (0, nc * patch - W, 0, nr * patch - H)
            ones = F.pad(torch.ones(1, 1, H, W, dtype=s.dtype, device=dev), pad)
            tot = F.avg_pool2d(F.pad(s[:, None], pad), patch, divisor_override=1)
            cnt = F.avg_pool2d(ones, patch, divisor_override=1)
            s = (tot / cnt)[:, 0]
        score = s.reshape(B, n)
        rank = torch.argsort(-score, dim=1, stable=True)
    else:
        if saliency is not None:
            raise ValueError("mask_patches: saliency is only used with order='saliency'")
        rank = torch.argsort(rand((B, n), generator, device=dev), dim=1)
    n_mask = torch.floor(frac * n + 0.5).long().clamp(0, n)  # [B]
    pos = torch.empty_like(rank)
    pos.scatter_(1, rank, torch.arange(n, device=dev).expand(B, n).contiguous())  # rank position of tile
    tile_mask = (pos < n_mask[:, None]).reshape(B, 1, nr, nc)
    mask = tile_mask.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[:, :, :H, :W]
    x, cast = _float(x4)
    if isinstance(fill, str):
        if fill == "zeros":
            filler = torch.zeros((), dtype=x.dtype, device=dev)
        elif fill == "mean":
            filler = _data_stat("mean", mean, CIFAR10_MEAN, x4)
        elif fill == "noise":
            mu = _data_stat("mean", mean, CIFAR10_MEAN, x4)
            sd = _data_stat("std", std, CIFAR10_STD, x4)
            top = 1.0 if x4.is_floating_point() else float(torch.iinfo(x4.dtype).max)
            filler = (mu + sd * randn(x.shape, generator, device=dev).to(x.dtype)).clamp(0.0, top)
        else:
            sig = patch / 2.0 if blur_sigma is None else blur_sigma
            filler = gaussian_blur(x, float(sig))
    else:
        f = torch.as_tensor(fill, dtype=x.dtype, device=dev)
        if f.dim() == 1 and f.shape[0] == C:
            f = f.view(1, C, 1, 1)
        elif f.dim() != 0:
            raise ValueError(f"mask_patches: a numeric fill must be a scalar or have shape [C] = [{C}]")
        filler = f
    out = torch.where(mask, filler.expand_as(x) if filler.dim() else filler, x)
    out = back(cast(out))
    return (out, back(mask)) if return_mask else out


def _data_stat(name: str, value, default: Sequence[float], images: torch.Tensor) -> torch.Tensor:
    """The data set's per-channel ``mean``/``std`` of ``mask_patches`` as [1, C, 1, 1] in the images' units."""
    C = images.shape[1]
    if value is None:
        if C != len(default):
            raise ValueError(f"mask_patches: {name} (the data set's per-channel {name}) must be given for "
                             f"{C}-channel images: the default is CIFAR-10's {len(default)} values")
        value = default
    dtype = images.dtype if images.is_floating_point() else torch.float32
    t = torch.as_tensor(value, dtype=dtype, device=images.device).reshape(-1)
    if t.numel() not in (1, C) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"mask_patches: {name} must hold 1 or {C} (channels) finite values, got {value!r}")
    if not images.is_floating_point():  # [0, 1] units -> the integer dtype's range (uint8: 0..255)
        t = t * float(torch.iinfo(images.dtype).max)
    return t.view(1, -1, 1, 1)


# ---------------------------------------------------------------------------------------------- resize
def _size2(size, fn: str) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    try:
        pair = tuple(size)
        ok = len(pair) == 2 and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
                                    for s in pair)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{fn}: size must be a positive int or a pair (height, width) of positive ints, got {size!r}")
    return int(pair[0]), int(pair[1])


def resize(images: torch.Tensor, size, interpolation: str = "bilinear", antialias: bool = True,
           blur_sigma: float = 0.0) -> torch.Tensor:
    """Resample images to ``size`` with explicit, recordable options.

    Args:
        images: (B, C, H, W) (or (C, H, W), (H, W)).
        size: int (square) or (height, width).
        interpolation: ``"bilinear"`` (default) | ``"nearest"`` (torch ``nearest-exact``) | ``"area"`` |
            ``"bicubic"``.
        antialias: low-pass when downsampling (bilinear / bicubic only: ``area`` always averages and
            ``nearest`` never does, so it is ignored for them). Without it, downsampling aliases.
        blur_sigma: optional Gaussian pre-blur (pixels of the input), kernel ``2*ceil(3 sigma)+1``.

    Returns: (B, C, h, w) images of the same dtype. The same size with ``blur_sigma = 0`` returns an exact
    copy. Bicubic can overshoot the input range (not clamped, except for integer dtypes).
    """
    check_choice("resize: interpolation", interpolation, RESIZE_INTERP)
    if not isinstance(antialias, bool):
        raise ValueError(f"resize: antialias must be True or False, got {antialias!r}")
    blur_sigma = check_float("resize: blur_sigma", blur_sigma, minimum=0.0)
    x4, back = _to4d(images, "resize")
    h, w = _size2(size, "resize")
    x, cast = _float(x4)
    if blur_sigma > 0:
        x = gaussian_blur(x, float(blur_sigma))
    if (h, w) == tuple(x.shape[-2:]):
        return back(cast(x.clone()))
    if interpolation in ("bilinear", "bicubic"):
        y = F.interpolate(x, size=(h, w), mode=interpolation, align_corners=False, antialias=antialias)
    elif interpolation == "nearest":
        y = F.interpolate(x, size=(h, w), mode="nearest-exact")
    else:
        y = F.interpolate(x, size=(h, w), mode="area")
    return back(cast(y))


def pixelate(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Resolution-loss corruption: box-average down by ``factor`` (to ``ceil(H/factor) x ceil(W/factor)``,
    ``area`` interpolation; exact block means when ``factor`` divides the side) then nearest (exact) back
    up to (H, W). ``factor = 1`` is the identity; ``factor`` may be a Python, numpy or torch integer.
    (B, C, H, W) -> same shape and dtype."""
    x4, back = _to4d(images, "pixelate")
    H, W = x4.shape[-2:]
    factor = check_int("pixelate: factor", factor, minimum=1, maximum=max(H, W))
    if factor == 1:
        return images.clone()
    x, cast = _float(x4)
    small = F.interpolate(x, size=(-(-H // factor), -(-W // factor)), mode="area")
    return back(cast(F.interpolate(small, size=(H, W), mode="nearest-exact")))
