"""Spatial probes: rotations, patch shuffling, patch masking, resolution changes.

Every function takes ``(B, C, H, W)`` images (``(C, H, W)`` and ``(H, W)`` are accepted too and come back in
the same layout), works on the images' device, is vectorised over the batch, and draws its randomness from
an explicit ``torch.Generator`` (``None``: the global generator) so that a batch can be replayed.
Floating-point images are transformed in their dtype; integer images (e.g. ``uint8``) are transformed in
float32 and rounded back (clamped to the dtype's range).

Apply these transforms *before* normalisation when a fill or padding value is meant to be black (0).

Conventions
-----------
- ``rotate``: degrees, counter-clockwise as displayed (row 0 at the top), about the image centre
  ``((H-1)/2, (W-1)/2)``; multiples of 90 degrees on square images are returned by ``torch.rot90`` exactly.
- ``patch_shuffle``: an axis of length ``n`` cut into ``k`` parts is cut as ``torch.tensor_split`` does:
  the first ``n mod k`` parts are one pixel longer than the others (sizes differ by at most one).
- ``mask_patches``: square tiles of side ``patch`` from the top-left corner, partial tiles at the right and
  bottom edges; ``round(fraction * n_tiles)`` tiles are masked (halves round up).
- ``resize``: ``torch.nn.functional.interpolate`` with ``align_corners=False``; ``"nearest"`` means
  torch's ``"nearest-exact"`` (pixel-centre aligned, as PIL), not torch's legacy ``"nearest"``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["rotate", "patch_shuffle", "mask_patches", "resize", "pixelate", "gaussian_blur"]

ROTATE_INTERP = ("bilinear", "nearest", "bicubic")
ROTATE_PADDING = ("zeros", "border", "reflection")
SHUFFLE_MODES = ("full", "rows_cols")
MASK_FILLS = ("zero", "mean", "noise", "blur")
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


def _float(x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Float view of ``x`` and a function that casts a result back to ``x``'s dtype."""
    if x.is_floating_point():
        return x, lambda y: y
    if x.dtype == torch.bool:
        return x.float(), lambda y: y > 0.5
    info = torch.iinfo(x.dtype)
    dtype = x.dtype
    return x.float(), lambda y: y.round().clamp(info.min, info.max).to(dtype)


def _rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(tuple(shape), generator=generator, device=gdev).to(device)


def _randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=gdev).to(device)


def _per_image(value, batch: int, name: str, fn: str, device: torch.device) -> torch.Tensor:
    """A scalar or a [B] tensor/sequence -> float64 tensor [B] on ``device``."""
    t = torch.as_tensor(value, dtype=torch.float64).to(device)
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
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"gaussian_blur: sigma must be a finite number >= 0, got {sigma!r}")
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
def rotate(images: torch.Tensor, degrees, interp: str = "bilinear", padding: str = "zeros") -> torch.Tensor:
    """Rotate each image by its own angle.

    Args:
        images: (B, C, H, W) (or (C, H, W), (H, W)).
        degrees: angle in **degrees**, counter-clockwise as displayed; a scalar or a [B] tensor (one angle
            per image). Multiples of 90 on square images are exactly ``torch.rot90`` (no interpolation).
        interp: ``"bilinear"`` (default) | ``"nearest"`` | ``"bicubic"`` (``grid_sample`` modes).
        padding: value of the pixels rotated in from outside: ``"zeros"`` (default, black before
            normalisation) | ``"border"`` (replicate) | ``"reflection"``.

    Returns: rotated images, same shape and dtype. The rotation is about the image centre in pixel units
    (non-square images are not stretched).
    """
    if interp not in ROTATE_INTERP:
        raise ValueError(f"rotate: interp must be one of {ROTATE_INTERP}, got {interp!r}")
    if padding not in ROTATE_PADDING:
        raise ValueError(f"rotate: padding must be one of {ROTATE_PADDING}, got {padding!r}")
    x4, back = _to4d(images, "rotate")
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
        out[idx] = F.grid_sample(x[idx], grid, mode=interp, padding_mode=padding, align_corners=True)
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
        k: grid size, ``1 <= k <= min(H, W)``; ``k = 1`` is the identity.
        mode: ``"full"``: a uniformly random permutation of the k^2 patches (Zhang & Zhu 2019);
            ``"rows_cols"``: permute the k horizontal strips, then independently the k vertical strips
            ((k!)^2 layouts).
        generator: seeds the permutations.
        return_index: also return the [B, H*W] source pixel index of every output pixel.

    Uneven division: each axis is cut as ``torch.tensor_split`` does (the first ``n mod k`` parts are one
    pixel longer). In ``rows_cols`` strips of unequal size simply move with their size. In ``full`` a patch
    can only take the place of a patch of the same shape (otherwise the grid would not tile); when k divides
    H and W (k in {1, 2, 4, 8} for 32 px) all patches share one shape and the permutation is uniform over
    all k^2 patches. Either way the output is a permutation of each image's pixels (all channels alike).

    Returns: shuffled images (same shape/dtype) [, index].
    """
    if mode not in SHUFFLE_MODES:
        raise ValueError(f"patch_shuffle: mode must be one of {SHUFFLE_MODES}, got {mode!r}")
    x, back = _to4d(images, "patch_shuffle")
    B, C, H, W = x.shape
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k > min(H, W):
        raise ValueError(f"patch_shuffle: k must be an integer in [1, min(H, W)] = [1, {min(H, W)}], got {k!r}")
    dev = x.device
    hs, ws = _splits(H, k), _splits(W, k)
    if mode == "rows_cols":
        pr = torch.argsort(_rand((B, k), generator, dev), dim=1)
        pc = torch.argsort(_rand((B, k), generator, dev), dim=1)
        rows, cols = _strip_map(hs, pr), _strip_map(ws, pc)  # [B, H], [B, W]
    else:
        # patch slots in row-major order; shape class of each slot
        ri, ci = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
        ri, ci = ri.reshape(-1).to(dev), ci.reshape(-1).to(dev)
        hs_d, ws_d = hs.to(dev), ws.to(dev)
        cls = (hs_d[ri] - hs_d.min()) * 2 + (ws_d[ci] - ws_d.min())  # 0..3
        slots = torch.argsort(cls, stable=True)  # slots grouped by class
        keys = cls.to(torch.float64)[None, :] * 2 + _rand((B, k * k), generator, dev).to(torch.float64)
        shuffled = torch.argsort(keys, dim=1)  # same grouping, random within each class
        src_slot = torch.empty((B, k * k), dtype=torch.long, device=dev)
        src_slot[:, slots] = shuffled  # output slot -> source slot
        rstart, cstart = torch.cumsum(hs_d, 0) - hs_d, torch.cumsum(ws_d, 0) - ws_d
        row_part = torch.repeat_interleave(torch.arange(k, device=dev), hs_d)  # [H]
        col_part = torch.repeat_interleave(torch.arange(k, device=dev), ws_d)  # [W]
        out_slot = row_part[:, None] * k + col_part[None, :]  # [H, W]
        src = src_slot[:, out_slot]  # [B, H, W]
        dy = torch.arange(H, device=dev) - rstart[row_part]
        dx = torch.arange(W, device=dev) - cstart[col_part]
        rows = rstart[ri[src]] + dy[None, :, None]  # [B, H, W]
        cols = cstart[ci[src]] + dx[None, None, :]
        index = (rows * W + cols).reshape(B, H * W)
        out = torch.gather(x.reshape(B, C, H * W), 2, index[:, None, :].expand(B, C, H * W)).reshape(B, C, H, W)
        return (back(out), index) if return_index else back(out)
    index = (rows[:, :, None] * W + cols[:, None, :]).reshape(B, H * W)
    out = torch.gather(x.reshape(B, C, H * W), 2, index[:, None, :].expand(B, C, H * W)).reshape(B, C, H, W)
    return (back(out), index) if return_index else back(out)


# ---------------------------------------------------------------------------------------- mask patches
def mask_patches(images: torch.Tensor, patch: int, fraction, fill="zero", order: str = "random",
                 saliency: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 blur_sigma: float | None = None, return_mask: bool = False):
    """Occlude a fraction of square patches of every image.

    Args:
        images: (B, C, H, W) (or (C, H, W), (H, W)).
        patch: tile side q in pixels (tiles from the top-left corner; partial tiles at the right and bottom
            edges count as tiles). ``n_tiles = ceil(H/q) * ceil(W/q)``.
        fraction: share of tiles masked, in [0, 1]; scalar or [B]. ``round(fraction * n_tiles)`` tiles are
            masked (halves round up), so the masked pixel share is exactly ``fraction`` when ``q`` divides
            H and W and ``fraction * n_tiles`` is an integer.
        fill: ``"zero"`` | ``"mean"`` (per-channel mean of the batch, a stand-in for the data-set mean) |
            ``"noise"`` (Gaussian with the batch's per-channel mean and std) | ``"blur"`` (the image blurred
            with a Gaussian of ``blur_sigma``, default ``q/2``) | a number or a [C] tensor (e.g. the exact
            data-set mean).
        order: ``"random"`` (uniform random tiles per image) | ``"saliency"`` (tiles with the largest mean
            ``saliency`` first, ties by tile index).
        saliency: [B, H, W], [B, 1, H, W] or per-tile [B, n_rows, n_cols]; required by ``order="saliency"``.
        generator: seeds the random order and the noise fill.
        return_mask: also return the boolean mask [B, 1, H, W] (True = masked).

    Returns: masked images (same shape/dtype) [, mask].
    """
    if order not in MASK_ORDERS:
        raise ValueError(f"mask_patches: order must be one of {MASK_ORDERS}, got {order!r}")
    if isinstance(fill, str) and fill not in MASK_FILLS:
        raise ValueError(f"mask_patches: fill must be one of {MASK_FILLS} or a number / [C] tensor, got {fill!r}")
    x4, back = _to4d(images, "mask_patches")
    B, C, H, W = x4.shape
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1 or patch > max(H, W):
        raise ValueError(f"mask_patches: patch must be an integer in [1, max(H, W)] = [1, {max(H, W)}], got {patch!r}")
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
        rank = torch.argsort(_rand((B, n), generator, dev), dim=1)
    n_mask = torch.floor(frac * n + 0.5).long().clamp(0, n)  # [B]
    pos = torch.empty_like(rank)
    pos.scatter_(1, rank, torch.arange(n, device=dev).expand(B, n).contiguous())  # rank position of tile
    tile_mask = (pos < n_mask[:, None]).reshape(B, 1, nr, nc)
    mask = tile_mask.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[:, :, :H, :W]
    x, cast = _float(x4)
    if isinstance(fill, str):
        if fill == "zero":
            filler = torch.zeros((), dtype=x.dtype, device=dev)
        elif fill == "mean":
            filler = x.mean(dim=(0, 2, 3), keepdim=True)
        elif fill == "noise":
            mu = x.mean(dim=(0, 2, 3), keepdim=True)
            sd = x.std(dim=(0, 2, 3), keepdim=True) if x.numel() // C > 1 else torch.zeros_like(mu)
            filler = mu + sd * _randn(x.shape, generator, dev).to(x.dtype)
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


# ---------------------------------------------------------------------------------------------- resize
def _size2(size, fn: str) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
        ok = all(isinstance(s, int) and not isinstance(s, bool) for s in size) and h >= 1 and w >= 1 \
            and len(tuple(size)) == 2
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{fn}: size must be a positive int or a pair (height, width) of positive ints, got {size!r}")
    return h, w


def resize(images: torch.Tensor, size, interp: str = "bilinear", antialias: bool = True,
           blur_sigma: float = 0.0) -> torch.Tensor:
    """Resample images to ``size`` with explicit, recordable options.

    Args:
        images: (B, C, H, W) (or (C, H, W), (H, W)).
        size: int (square) or (height, width).
        interp: ``"bilinear"`` (default) | ``"nearest"`` (torch ``nearest-exact``) | ``"area"`` |
            ``"bicubic"``.
        antialias: low-pass when downsampling (bilinear / bicubic only: ``area`` always averages and
            ``nearest`` never does, so it is ignored for them). Without it, downsampling aliases.
        blur_sigma: optional Gaussian pre-blur (pixels of the input), kernel ``2*ceil(3 sigma)+1``.

    Returns: (B, C, h, w) images of the same dtype. The same size with ``blur_sigma = 0`` returns an exact
    copy. Bicubic can overshoot the input range (not clamped, except for integer dtypes).
    """
    if interp not in RESIZE_INTERP:
        raise ValueError(f"resize: interp must be one of {RESIZE_INTERP}, got {interp!r}")
    if not isinstance(antialias, bool):
        raise ValueError(f"resize: antialias must be True or False, got {antialias!r}")
    if not (isinstance(blur_sigma, (int, float)) and math.isfinite(blur_sigma) and blur_sigma >= 0):
        raise ValueError(f"resize: blur_sigma must be a finite number >= 0, got {blur_sigma!r}")
    x4, back = _to4d(images, "resize")
    h, w = _size2(size, "resize")
    x, cast = _float(x4)
    if blur_sigma > 0:
        x = gaussian_blur(x, float(blur_sigma))
    if (h, w) == tuple(x.shape[-2:]):
        return back(cast(x.clone()))
    if interp in ("bilinear", "bicubic"):
        y = F.interpolate(x, size=(h, w), mode=interp, align_corners=False, antialias=antialias)
    elif interp == "nearest":
        y = F.interpolate(x, size=(h, w), mode="nearest-exact")
    else:
        y = F.interpolate(x, size=(h, w), mode="area")
    return back(cast(y))


def pixelate(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Resolution-loss corruption: box-average down by ``factor`` (to ``ceil(H/factor) x ceil(W/factor)``,
    ``area`` interpolation; exact block means when ``factor`` divides the side) then nearest (exact) back
    up to (H, W). ``factor = 1`` is the identity. (B, C, H, W) -> same shape and dtype."""
    x4, back = _to4d(images, "pixelate")
    H, W = x4.shape[-2:]
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 or factor > max(H, W):
        raise ValueError(f"pixelate: factor must be an integer in [1, max(H, W)] = [1, {max(H, W)}], got {factor!r}")
    if factor == 1:
        return images.clone()
    x, cast = _float(x4)
    small = F.interpolate(x, size=(-(-H // factor), -(-W // factor)), mode="area")
    return back(cast(F.interpolate(small, size=(H, W), mode="nearest-exact")))
