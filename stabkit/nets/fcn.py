"""Fully-connected networks ("DenseNetL2/L4/L6" in the paper's figures) with N(0, 1) weights and explicit
scaling (``book/methods.md``, "Networks")."""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from .layers import Scale, check_image_size, normal_init_, scaled_width
from .registry import register

__all__ = ["FCN"]


class FCN(nn.Module):
    """Fully-connected net: ``hidden`` layers ``relu(x W / sqrt(d_in) + b)`` of width ``width``, then
    ``x W / d_in`` without bias; W, b ~ N(0, 1). Input ``[B, C, H, W]`` is flattened; output
    ``[B, num_classes]``.

    Each layer is a :class:`~stabkit.nets.layers.Scale` (``1/sqrt(d_in)``, or ``1/d_in`` for the last)
    followed by a plain ``nn.Linear`` with N(0, 1) weights: ``(x s) W + b = s x W + b``, the same function
    and the same gradients as the scaled parametrisation, with ordinary ``weight``/``bias`` parameters and
    no parameter nodes in the FX graph.
    """

    def __init__(self, d_in: int, hidden: int, width: int = 64, num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten(1)
        layers: list[tuple[str, nn.Module]] = []
        d = d_in
        for i in range(1, hidden + 1):
            layers.append((f"scale{i}", Scale(1.0 / math.sqrt(d))))
            layers.append((f"fc{i}", normal_init_(nn.Linear(d, width, bias=True))))
            layers.append((f"relu{i}", nn.ReLU()))
            d = width
        layers.append((f"scale{hidden + 1}", Scale(1.0 / d)))
        layers.append((f"fc{hidden + 1}", normal_init_(nn.Linear(d, num_classes, bias=False))))
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.flatten(x))


def _fcn_builder(n_layers: int) -> Callable[..., nn.Module]:
    def builder(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0, input_size: int = 32,
                width: int = 64) -> nn.Module:
        size = check_image_size(f"DenseNetL{n_layers}", input_size)
        return FCN(in_channels * size * size, n_layers - 1, scaled_width(width, width_factor), num_classes)
    builder.__doc__ = f"Fully-connected net with {n_layers} weight layers ({n_layers - 1} hidden), width 64."
    return builder


for _n in (2, 4, 6):
    register(f"DenseNetL{_n}", family="FCN", kind="fcn")(_fcn_builder(_n))
