"""Input transformations: random diffeomorphisms, matched noise, and spatial probes.

All functions act on ``(B, C, H, W)`` tensors (most also accept ``(C, H, W)`` and ``(H, W)``) and take an
explicit ``generator`` so that every draw can be replayed.
"""
from .diffeo import deform, diffeo_batch, temperature_range, typical_displacement, typical_temperature
from .noise import GaussianNoiseCorruption, noisy_batch
from .spatial import mask_patches, patch_shuffle, pixelate, resize, rotate

__all__ = [
    "temperature_range", "typical_temperature", "typical_displacement", "deform", "diffeo_batch",
    "noisy_batch", "GaussianNoiseCorruption",
    "rotate", "patch_shuffle", "mask_patches", "resize", "pixelate",
]
