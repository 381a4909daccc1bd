"""Gaussian noise: matched to a diffeomorphism and as a training-time corruption (Fig. 1).

See ``book/methods.md``, sections "Noise matched to the diffeomorphism" and "Tasks, networks and
training" (the Fig. 1 corruption).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import check_float
from .draws import randn

__all__ = ["noisy_batch", "GaussianNoiseCorruption"]


def _check_tensor(t, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor (any float dtype); got {t.dtype}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must not contain NaN or inf")
    return t


def noisy_batch(images: torch.Tensor, perturbed: torch.Tensor | None, sigma: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Add to every image isotropic Gaussian noise of a prescribed norm.

    Args:
        images: ``[B, ...]`` clean images (the first axis is the batch; e.g. ``[B, C, n, n]``), float.
        perturbed: ``[B, ...]`` the same images after another perturbation (typically
            ``diffeo_batch(images)``); image ``i`` gets noise of norm ``||perturbed_i - images_i||`` (2-norm
            over all non-batch axes).  Ignored (may be ``None``) when ``sigma`` is given.
        sigma: if given (>= 0), every image gets noise of exactly this norm instead.
        generator: source of the draws.  The noise directions are ``torch.randn`` of shape ``images.shape``,
            float64, drawn on the generator's device (the global CPU generator when ``None``), so they do
            not depend on the images' device or dtype.

    Returns:
        ``images + eta`` with ``||eta_i||`` equal to the target norm (up to rounding in ``images.dtype``),
        same shape, dtype and device as ``images``.  No clamping.  One independent direction per image.
        An empty batch (``B = 0``) comes back as an empty copy.
    """
    _check_tensor(images, "images")
    if images.ndim < 2:
        raise ValueError(f"images must have a batch axis and at least one more ([B, ...]); "
                         f"got shape {tuple(images.shape)}")
    B = images.shape[0]
    if sigma is None:
        if perturbed is None:
            raise ValueError("perturbed must be a tensor shaped like images when sigma is None")
        _check_tensor(perturbed, "perturbed")
        if perturbed.shape != images.shape:
            raise ValueError(f"perturbed must have the shape of images {tuple(images.shape)}; "
                             f"got {tuple(perturbed.shape)}")
        # flatten(1), not reshape(B, -1): the latter cannot infer -1 for an empty batch
        target = (perturbed.to(torch.float64) - images.to(torch.float64)).flatten(1).norm(dim=1)
    else:
        sigma = check_float("sigma (the noise norm)", sigma, minimum=0.0)
        target = torch.full((B,), sigma, dtype=torch.float64, device=images.device)
    eta = randn(images.shape, generator, dtype=torch.float64, device=images.device).flatten(1)
    # The norm of a non-degenerate Gaussian draw is > 0 with probability 1; guard anyway.
    eta = eta * (target / eta.norm(dim=1).clamp_min(torch.finfo(torch.float64).tiny)).unsqueeze(1)
    return (images.to(torch.float64) + eta.reshape(images.shape)).to(images.dtype)


class GaussianNoiseCorruption(nn.Module):
    """Additive Gaussian corruption ``x + std * z / sqrt(C*H*W)``, ``z ~ N(0, I)``, fresh at every call.

    So that ``E ||noise||^2 = std^2`` per image (Fig. 1; applied after normalisation; paper values
    ``std in {0, 0.01, 0.1, 1, 10, 30, 100}``, normalised CIFAR images have norm ~55).

    Works as a torchvision transform on one image ``[C, H, W]`` (or ``[H, W]``) and on a batch
    ``[B, C, H, W]`` (independent noise per image; ``C*H*W`` is the size of one image).  Any float dtype
    and device; the noise is drawn in the input's dtype on ``generator``'s device (on the input's device
    with the global generator when ``generator`` is ``None``, which keeps the training loop on the GPU).

    Args:
        std: noise norm scale (>= 0).  ``std = 0`` returns the input unchanged.
        generator: optional ``torch.Generator`` for reproducible draws.
    """

    def __init__(self, std: float, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.std = check_float("std", std, minimum=0.0)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise ValueError("x must be a floating-point torch.Tensor [C, H, W], [H, W] or [B, C, H, W] "
                             "(convert images with ToTensor / ToDtype first)")
        if x.ndim not in (2, 3, 4):
            raise ValueError(f"x must have 2, 3 or 4 dimensions ([H, W], [C, H, W] or [B, C, H, W]); "
                             f"got shape {tuple(x.shape)}")
        if self.std == 0:
            return x
        per_image = x[0].numel() if x.ndim == 4 else x.numel()
        # without a generator, draw with the global generator of x's device: no host round trip in training
        z = randn(x.shape, self.generator, dtype=x.dtype, device=x.device, default_device=x.device)
        return x + z * (self.std / math.sqrt(per_image))

    def extra_repr(self) -> str:
        return f"std={self.std}"
