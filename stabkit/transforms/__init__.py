"""Input transformations: random diffeomorphisms, matched noise, spatial probes, normalisation.

All functions act on ``(B, C, H, W)`` tensors (most also accept ``(C, H, W)`` and ``(H, W)``) and take an
explicit ``generator`` so that every draw can be replayed; draws happen on the generator's device
(:mod:`stabkit.transforms.draws`). Interpolation modes are spelled ``"bilinear"``, ``"nearest"``, ...;
zero fills and paddings ``"zeros"``. See ``book/methods.md`` (diffeomorphisms, noise) and
``book/probes.md`` (spatial probes).
"""
from . import draws
from .diffeo import deform, diffeo_batch, temperature_range, typical_displacement, typical_temperature
from .intensity import normalize
from .noise import GaussianNoiseCorruption, noisy_batch
from .spatial import gaussian_blur, mask_patches, patch_shuffle, pixelate, resize, rotate

__all__ = [
    "temperature_range", "typical_temperature", "typical_displacement", "deform", "diffeo_batch",
    "noisy_batch", "GaussianNoiseCorruption",
    "rotate", "patch_shuffle", "mask_patches", "resize", "pixelate", "gaussian_blur",
    "normalize", "draws",
]
