"""Small building blocks shared by the network families: width scaling, input-size checks, zero padding,
the explicit-scaling layer and the N(0, 1) initialisation of the paper's FCNs and 1-D CNN."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..checks import check_int

__all__ = ["Scale", "normal_init_", "scaled_width", "check_image_size", "zero_pad_to"]


def scaled_width(channels: int, width_factor: float) -> int:
    """``channels * width_factor``, rounded, at least 1 (every hidden width of a network goes through it)."""
    return max(1, int(round(channels * width_factor)))


def check_image_size(net: str, input_size: Any, pad_to: int | None = None) -> int:
    """``input_size`` as an int >= 1 (and <= ``pad_to`` for nets that zero-pad smaller inputs to it)."""
    size = check_int("input_size", input_size, minimum=1)
    if pad_to is not None and size > pad_to:
        raise ValueError(f"{net}: input_size must be <= {pad_to} (smaller inputs are zero-padded to {pad_to}), "
                         f"got {size}")
    return size


def zero_pad_to(input_size: int, target: int = 32) -> nn.Module | None:
    """Zero padding that brings a square ``input_size`` image to ``target`` (None if nothing to do)."""
    extra = target - input_size
    if extra <= 0:
        return None
    lo = extra // 2
    return nn.ZeroPad2d((lo, extra - lo, lo, extra - lo))


class Scale(nn.Module):
    """Multiplies its input by a constant ``factor`` (explicit-scaling parametrisations)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.6g}"


def normal_init_(module: nn.Module) -> nn.Module:
    """N(0, 1) weights and biases (in place); returns the module."""
    nn.init.normal_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.normal_(module.bias)
    return module
