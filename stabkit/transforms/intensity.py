"""Per-channel normalisation of pixel images: the one ``(x - mean) / std`` of the package.

The data loaders, the run contexts, :mod:`stabkit.robustness` and :mod:`stabkit.invariance` all turn
pixel images in [0, 1] into network inputs with :func:`~stabkit.transforms.normalize`, so that a change of
convention happens in one place (``book/methods.md``, "Tasks, networks and training", gives the CIFAR-10 values).
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

__all__ = ["normalize"]

Stat = float | Sequence[float] | torch.Tensor | None


def _stat(name: str, value, x: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor of ``x``'s dtype and device, shaped to broadcast over the channel axis 1."""
    if isinstance(value, (str, bytes, bool)) or not (isinstance(value, (numbers.Real, torch.Tensor))
                                                     or hasattr(value, "__len__")):
        raise TypeError(f"{name} must be a number, a sequence of per-channel numbers or a tensor, got {value!r}")
    try:
        t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a number, a sequence of per-channel numbers or a tensor, "
                        f"got {value!r}") from err
    if t.dim() == 0:
        return t
    C = x.shape[1]
    if t.numel() not in (1, C):
        raise ValueError(f"{name} must have 1 or {C} (channels) values, got shape {tuple(t.shape)}")
    return t.reshape((1, -1) + (1,) * (x.dim() - 2))


def normalize(x: torch.Tensor, mean: Stat, std: Stat) -> torch.Tensor:
    """``(x - mean) / std`` per channel.

    Args:
        x: float images ``[B, C, H, W]`` in [0, 1] (any ``[B, C, ...]`` layout: channels on axis 1).
        mean, std: a number, ``C`` per-channel values (sequence or tensor) or ``None`` (no shift / no
            scaling; both ``None`` returns ``x`` itself). Converted to ``x``'s dtype and device: pass
            tensors already there to avoid a copy per call (no host synchronisation either way).

    Returns:
        Tensor shaped like ``x``, same dtype and device.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor [B, C, H, W] (divide uint8 images by 255 "
                        f"first), got {x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dim() < 2 and (mean is not None or std is not None):
        raise ValueError(f"x must have a channel axis ([B, C, H, W]), got shape {tuple(x.shape)}")
    if mean is not None:
        x = x - _stat("mean", mean, x)
    if std is not None:
        x = x / _stat("std", std, x)
    return x
