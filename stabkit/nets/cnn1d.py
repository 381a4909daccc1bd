"""The 1-D CNN of the 1-D scale-detection appendix (``book/methods.md``, "Networks")."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from ..checks import check_int
from .layers import Scale, normal_init_, scaled_width
from .registry import register

__all__ = ["CNN1D"]


class CNN1D(nn.Module):
    """Simple 1-D CNN of the 1-D scale-detection appendix: ``depth`` blocks of circularly padded conv
    (filter F, stride s, H channels, weights N(0,1) scaled by 1/sqrt(fan_in)) with ``sqrt(F) * ReLU``
    outputs, global average pooling over positions, linear readout ``h W / H`` (N(0,1), no bias).

    Layout of block i: ``scale{i}`` (input times ``g / sqrt(C_in F)``), ``pad{i}`` (circular,
    ``max(F - s, 0)`` in total, left ``p // 2``; absent when 0), ``conv{i}`` (N(0,1) weights), ``relu{i}``.
    The output gain ``g = sqrt(F)`` of each ReLU is applied by the next layer's scale (``g relu(h) =
    relu(g h)`` and the conv is linear), so the network computes exactly the specified function while
    every node is a plain module; the ``relu{i}`` nodes differ from ``sqrt(F) relu`` by the constant
    ``sqrt(F)`` (no effect on normalised stabilities). Length goes from ``L`` to ``ceil(L / s)`` per block.

    Input ``[B, C, L]`` (``L = length``); output ``[B, num_classes]``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1, filter_size: int = 2, stride: int = 2,
                 depth: int = 7, width: int = 1000, length: int = 128, bias: bool = False):
        super().__init__()
        for arg, val in (("filter_size", filter_size), ("stride", stride), ("depth", depth),
                         ("width", width), ("length", length)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"CNN1D: {arg} must be an int >= 1, got {val!r}")
        self.length = length
        gain = math.sqrt(filter_size)
        total = max(filter_size - stride, 0)
        layers: list[tuple[str, nn.Module]] = []
        c, n, g = in_channels, length, 1.0
        for i in range(1, depth + 1):
            n = (n + total - filter_size) // stride + 1
            if n < 1:
                raise ValueError(f"CNN1D: length {length} is too short for depth {depth}, filter_size "
                                 f"{filter_size}, stride {stride} (layer {i} would have no output)")
            layers.append((f"scale{i}", Scale(g / math.sqrt(c * filter_size))))
            if total:
                layers.append((f"pad{i}", nn.CircularPad1d((total // 2, total - total // 2))))
            layers.append((f"conv{i}", normal_init_(nn.Conv1d(c, width, filter_size, stride=stride, bias=bias))))
            layers.append((f"relu{i}", nn.ReLU()))
            c, g = width, gain
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten(1)
        self.scale = Scale(g / c)
        self.readout = normal_init_(nn.Linear(c, num_classes, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.scale(self.flatten(self.pool(self.features(x)))))


@register("CNN1D", default_input=(128,), family="CNN1D", kind="cnn1d")
def _cnn1d(in_channels: int = 1, num_classes: int = 1, width_factor: float = 1.0, filter_size: int = 2,
           stride: int = 2, depth: int = 7, width: int = 1000, length: int = 128, bias: bool = False,
           H: int | None = None, L: int | None = None, input_size: int | None = None) -> nn.Module:
    """1-D scale-detection CNN. ``H``/``L`` are aliases of ``width``/``length``; ``input_size`` also sets
    the length. The paper's setting is the default: F = 2, s = 2, 7 layers, H = 1000, L = 128."""
    width = H if H is not None else width
    length = L if L is not None else (input_size if input_size is not None else length)
    width, length = check_int("width", width, minimum=1), check_int("length", length, minimum=1)
    return CNN1D(in_channels, num_classes, filter_size, stride, depth, scaled_width(width, width_factor), length,
                 bias)
