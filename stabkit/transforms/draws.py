"""Random draws on the generator's device, so that a seeded draw is the same whatever the data's device.

Every random transform of stabkit draws through these functions: the numbers come from ``generator`` on
*its* device (the global CPU generator when ``generator`` is ``None``, unless ``default_device`` says
otherwise) and only then move to the data's device. A CPU generator therefore gives the same images on
CPU and on a GPU, and a CUDA generator keeps the draws on the GPU (no host round trip).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["draw_device", "rand", "randn"]


def draw_device(generator: torch.Generator | None, default_device: torch.device | str | None = None
                ) -> torch.device:
    """Device a draw from ``generator`` happens on: the generator's own device; with ``generator=None``
    (the global generator of that device) ``default_device``, CPU when not given."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        return generator.device
    return torch.device("cpu") if default_device is None else torch.device(default_device)


def rand(shape: Sequence[int], generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None,
         device: torch.device | str | None = None, default_device: torch.device | str | None = None
         ) -> torch.Tensor:
    """``torch.rand(shape)`` (uniform in [0, 1)) drawn on :func:`draw_device`, then moved to ``device``
    (default: left where it was drawn). ``dtype``: torch's default float dtype when ``None``."""
    out = torch.rand(tuple(shape), generator=generator, dtype=dtype, device=draw_device(generator, default_device))
    return out if device is None else out.to(device)


def randn(shape: Sequence[int], generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None,
          device: torch.device | str | None = None, default_device: torch.device | str | None = None
          ) -> torch.Tensor:
    """``torch.randn(shape)`` (standard normal) drawn on :func:`draw_device`, then moved to ``device``
    (default: left where it was drawn). ``dtype``: torch's default float dtype when ``None``."""
    out = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=draw_device(generator, default_device))
    return out if device is None else out.to(device)
