"""Random diffeomorphisms of square images: max-entropy sinusoidal displacement fields.

See ``book/methods.md``, section "Random diffeomorphisms". Conventions:

* image side ``n``; pixel ``p`` sits at ``p / (n - 1)`` in ``[0, 1]`` (end pixels exactly at 0 and 1);
* modes ``i, j = 1..cut`` kept iff ``sqrt(i^2 + j^2) < cut + 0.5``;
* ``u(y, x) = sum_ij C_ij sin(pi i x) sin(pi j y)`` with ``C_ij ~ N(0, 1 / (i^2 + j^2))`` (variance);
* displacement in pixels ``dx = sqrt(T) * n * u``, ``dy = sqrt(T) * n * v`` (``v`` independent of ``u``);
* pull-back: output pixel ``(y, x)`` takes the input at ``(y - dy, x - dx)``, source positions clamped to
  the image (replicate border).

Random draws: for a batch of ``B`` images the coefficients are one ``torch.randn(B, 2, cut, cut)`` float64
tensor drawn from ``generator`` on the generator's device (the global CPU generator when ``generator`` is
``None``; :func:`stabkit.transforms.draws.randn`), then moved to the images' device.  Entry
``[b, 0, i-1, j-1]`` is ``C_ij`` of the x-displacement field of image ``b`` (before the ``1/sqrt(i^2+j^2)``
scaling and the mode mask), ``[b, 1]`` the y field. So the fields depend only on the generator state and
on ``(B, cut)``, not on the device or dtype of the images.
"""
from __future__ import annotations

import math
import numbers

import torch

from ..checks import check_choice, check_float, check_int
from .draws import randn

__all__ = ["temperature_range", "typical_temperature", "typical_displacement", "deform", "diffeo_batch"]

#: Width (in pixels) of the Gaussian interpolation kernel, ``exp(-d^2 / (2 * GAUSSIAN_SIGMA^2))``.
GAUSSIAN_SIGMA = 0.4715

INTERPOLATIONS = ("bilinear", "nearest", "gaussian")


# --------------------------------------------------------------------------------------------- checks


def _check_cut(cut, *, need_log: bool) -> int:
    """The mode cut-off as an int; ``need_log`` when a formula divides by ``ln(cut)`` (cut >= 2)."""
    if need_log and not isinstance(cut, bool) and isinstance(cut, numbers.Integral) and cut == 1:
        raise ValueError("cut must be an integer >= 2 (the temperature formulas divide by ln(cut), which is 0 "
                         "for cut = 1); got 1")
    return check_int("cut", cut, minimum=2 if need_log else 1)


def _check_n(n) -> int:
    return check_int("n (image side in pixels)", n, minimum=2)


def _check_nonneg(value, name: str):
    """Accept a finite number >= 0 or a real tensor of such numbers; return it unchanged (numbers as float)."""
    if isinstance(value, torch.Tensor):
        if not (value.dtype.is_floating_point or value.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"{name} must be a real number or a real tensor; got dtype {value.dtype}")
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0; got {value}")
        return value
    return check_float(name, value, minimum=0.0)


def _sqrt(value):
    return value.sqrt() if isinstance(value, torch.Tensor) else math.sqrt(value)


# ------------------------------------------------------------------------------- temperature formulas
def temperature_range(n: int, cut: int) -> tuple[float, float]:
    """Range of useful temperatures for ``n x n`` images and mode cut-off ``cut``.

    Returns ``(T_min, T_max)`` with ``T_min = 1 / (pi n^2 ln cut)`` (typical displacement of half a pixel)
    and ``T_max = 4 / (pi^3 cut^2 ln cut)`` (largest temperature without overhangs, i.e. the map stays
    injective).  Dimensionless.  ``cut`` must be an integer >= 2 (``ln 1 = 0``).
    """
    n = _check_n(n)
    cut = _check_cut(cut, need_log=True)
    log_c = math.log(cut)
    return 1.0 / (math.pi * n**2 * log_c), 4.0 / (math.pi**3 * cut**2 * log_c)


def typical_temperature(delta, cut: int, n: int):
    """Temperature whose typical displacement is ``delta`` pixels: ``4 delta^2 / (pi n^2 ln cut)``.

    ``delta`` (pixels, >= 0) may be a number or a tensor (the result then is a tensor of the same shape).
    Inverse of :func:`typical_displacement`.
    """
    delta = _check_nonneg(delta, "delta")
    cut = _check_cut(cut, need_log=True)
    n = _check_n(n)
    return 4.0 * delta**2 / (math.pi * n**2 * math.log(cut))


def typical_displacement(T, cut: int, n: int):
    """Typical displacement in pixels at temperature ``T``: ``(n / 2) sqrt(pi T ln cut)``.

    It is the root-mean-square displacement norm ``sqrt(<dx^2 + dy^2>)`` in the continuum approximation
    ``sum_{kept modes} 1/(i^2+j^2) ~ (pi/2) ln cut`` (for small ``cut`` the exact mode sum is smaller, e.g.
    20 % smaller for ``cut = 3``).  ``T`` may be a number or a tensor.
    """
    T = _check_nonneg(T, "T")
    cut = _check_cut(cut, need_log=True)
    n = _check_n(n)
    return (n / 2.0) * _sqrt(math.pi * T * math.log(cut))


# ------------------------------------------------------------------------------------ image handling
def _as_batch(images: torch.Tensor, name: str = "images") -> tuple[torch.Tensor, tuple]:
    """View ``[B,C,n,n]``, ``[C,n,n]`` or ``[n,n]`` as ``[B,C,n,n]``; return it and the original shape."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [B, C, n, n], [C, n, n] or [n, n]; "
                         f"got {type(images).__name__}")
    if images.ndim not in (2, 3, 4):
        raise ValueError(f"{name} must have 2, 3 or 4 dimensions ([n, n], [C, n, n] or [B, C, n, n]); "
                         f"got shape {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor (any float dtype); got {images.dtype}")
    h, w = images.shape[-2:]
    if h != w:
        raise ValueError(f"{name} must be square (height == width); got {h} x {w}")
    if h < 2:
        raise ValueError(f"{name} must be at least 2 x 2 pixels; got {h} x {w}")
    if images.numel() and not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} must not contain NaN or inf")
    shape = tuple(images.shape)
    while images.ndim < 4:
        images = images.unsqueeze(0)
    return images, shape


def _field_dtype(device: torch.device) -> torch.dtype:
    # Fields are computed in float64 for exactness; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _draw_coefficients(batch: int, cut: int, generator: torch.Generator | None) -> torch.Tensor:
    """Raw N(0, 1) draws ``[B, 2, cut, cut]`` float64 on the generator's device (CPU by default)."""
    return randn((batch, 2, cut, cut), generator, dtype=torch.float64)


def _sine_table(n: int, cut: int, device, dtype) -> torch.Tensor:
    """``s[p, k-1] = sin(pi k p / (n-1))`` for pixels ``p = 0..n-1`` and modes ``k = 1..cut``."""
    p = torch.arange(n, dtype=torch.float64) / (n - 1)
    k = torch.arange(1, cut + 1, dtype=torch.float64)
    s = torch.sin(math.pi * p[:, None] * k[None, :])
    # sin(pi k) is ~1e-16, not 0, in floating point: force the border to be exactly fixed.
    s[0] = 0.0
    s[-1] = 0.0
    return s.to(device=device, dtype=dtype)


def _displacements(batch: int, n: int, T, cut: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Displacement fields ``(dx, dy)`` in pixels, each ``[B, n, n]`` indexed ``[b, y, x]``."""
    dtype = _field_dtype(device)
    coef = _draw_coefficients(batch, cut, generator).to(device=device, dtype=dtype)
    k = torch.arange(1, cut + 1, dtype=torch.float64)
    r = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)  # r[i-1, j-1] = sqrt(i^2 + j^2)
    scale = torch.where(r < cut + 0.5, 1.0 / r, torch.zeros_like(r)).to(device=device, dtype=dtype)
    coef = coef * scale  # C_ij ~ N(0, 1/(i^2+j^2)) on kept modes, 0 elsewhere
    s = _sine_table(n, cut, device, dtype)
    # u[b, y, x] = sum_ij C[b, i, j] sin(pi i x) sin(pi j y): mode i goes with x, mode j with y.
    fields = torch.einsum("bfij,xi,yj->bfyx", coef, s, s)
    if isinstance(T, torch.Tensor):
        amp = torch.sqrt(T.to(device=device, dtype=dtype)).reshape(-1, 1, 1, 1) * n
    else:
        amp = math.sqrt(T) * n
    fields = fields * amp
    return fields[:, 0], fields[:, 1]


def _sample(images: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, interpolation: str) -> torch.Tensor:
    """Sample ``images [B,C,n,n]`` at source positions ``sx, sy [B,n,n]`` (pixels, already clamped)."""
    B, C, n, _ = images.shape
    work = torch.promote_types(images.dtype, torch.float32)  # float16/bfloat16 interpolate in float32
    flat = images.reshape(B, C, n * n)

    def gather(iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
        idx = (iy * n + ix).reshape(B, 1, n * n).expand(B, C, n * n)
        return torch.gather(flat, 2, idx).to(work)

    if interpolation == "nearest":
        out = gather(sy.round().long(), sx.round().long())
    elif interpolation == "bilinear":
        # x0 <= n-2 so that x0 + 1 is in range; at sx = n-1 the weight of x0 is then exactly 0.
        x0 = sx.floor().clamp(max=n - 2)
        y0 = sy.floor().clamp(max=n - 2)
        fx = (sx - x0).to(work).reshape(B, 1, n * n)
        fy = (sy - y0).to(work).reshape(B, 1, n * n)
        x0, y0 = x0.long(), y0.long()
        top = gather(y0, x0) * (1 - fx) + gather(y0, x0 + 1) * fx
        bottom = gather(y0 + 1, x0) * (1 - fx) + gather(y0 + 1, x0 + 1) * fx
        out = top * (1 - fy) + bottom * fy
    else:  # gaussian: weights over all pixels, separable, normalised
        q = torch.arange(n, device=images.device, dtype=sx.dtype)
        wx = torch.exp(-((sx.reshape(B, n * n, 1) - q) ** 2) / (2 * GAUSSIAN_SIGMA**2))
        wy = torch.exp(-((sy.reshape(B, n * n, 1) - q) ** 2) / (2 * GAUSSIAN_SIGMA**2))
        wx = (wx / wx.sum(-1, keepdim=True)).to(work)  # [B, p, qx]
        wy = (wy / wy.sum(-1, keepdim=True)).to(work)  # [B, p, qy]
        # rows[b, c*n + qy, p] = sum_qx img[b, c, qy, qx] wx[b, p, qx]
        rows = torch.bmm(images.to(work).reshape(B, C * n, n), wx.transpose(1, 2))
        out = (rows.reshape(B, C, n, n * n) * wy.transpose(1, 2).unsqueeze(1)).sum(2)
    return out.reshape(B, C, n, n).to(images.dtype)


# ------------------------------------------------------------------------------------------ public
def deform(images: torch.Tensor, T, cut: int, interpolation: str = "bilinear",
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply one random diffeomorphism per image at temperature ``T``.

    Args:
        images: ``[B, C, n, n]``, ``[C, n, n]`` (one image) or ``[n, n]`` (one single-channel image); any
            floating dtype, any device.  Images must be square.
        T: temperature (dimensionless, >= 0), a number or a tensor of shape ``[B]`` (one per image).
        cut: mode cut-off (integer >= 1); modes ``(i, j)`` with ``sqrt(i^2+j^2) < cut + 0.5`` are used.
        interpolation: ``"bilinear"`` (exact on linear ramps), ``"nearest"`` or ``"gaussian"`` (kernel
            ``exp(-d^2 / (2 * 0.4715^2))`` over all pixels, normalised; note that it blurs, so ``T = 0``
            is *not* the identity for it: compare with ``deform(images, 0, cut, "gaussian")``).
        generator: source of the random coefficients (see the module docstring for the draw layout).

    Returns:
        Tensor of the same shape, dtype and device as ``images``.  Every image of the batch gets its own
        independent field; all channels of an image share it.  The displacement vanishes on the border.
    """
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    cut = _check_cut(cut, need_log=False)
    T = _check_nonneg(T, "T")
    x, shape = _as_batch(images)
    B, _, n, _ = x.shape
    if isinstance(T, torch.Tensor):
        if T.ndim == 0:
            T = float(T)
        elif T.shape != (B,):
            raise ValueError(f"T as a tensor must have shape [B] = [{B}] (one temperature per image); "
                             f"got {tuple(T.shape)}")
    device = x.device
    dx, dy = _displacements(B, n, T, cut, generator, device)
    pos = torch.arange(n, device=device, dtype=dx.dtype)
    # Pull-back with clamped (replicate-border) source positions.
    sx = (pos.reshape(1, 1, n) - dx).clamp(0, n - 1)
    sy = (pos.reshape(1, n, 1) - dy).clamp(0, n - 1)
    return _sample(x, sx, sy, interpolation).reshape(shape)


def diffeo_batch(images: torch.Tensor, delta: float = 1.0, cut: int = 3, interpolation: str = "bilinear",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Deform every image at the temperature of typical displacement ``delta`` pixels.

    Same as ``deform(images, typical_temperature(delta, cut, n), cut, interpolation, generator)`` with
    ``n`` the image side.  Defaults are the paper's: ``delta = 1`` pixel, ``cut = 3``, bilinear.
    """
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    x, _ = _as_batch(images)
    T = typical_temperature(delta, cut, x.shape[-1])
    return deform(images, T, cut, interpolation, generator)
