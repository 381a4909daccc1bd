"""CIFAR EfficientNet-B0 (``book/methods.md``, "Networks"): stages from a table."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from .layers import check_image_size, scaled_width
from .registry import register

__all__ = ["EfficientNet", "MBConv", "SqueezeExcite", "EFFICIENTNET_B0"]

#: Stages of B0, one tuple ``(expansion, out channels, kernel, stride of the first block, blocks)`` each.
EFFICIENTNET_B0 = (
    (1, 16, 3, 1, 1), (6, 24, 3, 2, 2), (6, 40, 5, 2, 2), (6, 80, 3, 2, 3),
    (6, 112, 5, 1, 3), (6, 192, 5, 2, 4), (6, 320, 3, 1, 1),
)


class SqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(W2 swish(W1 mean_hw(x)))`` (1x1 convs with bias)."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand + BN + swish] (if expansion > 1), depthwise kxk (stride) + BN +
    swish, squeeze-excite (ratio 0.25 of the block input), 1x1 project + BN, identity skip when the shape
    is kept. Drop-connect is 0 (as the original effectively ran)."""

    def __init__(self, c_in: int, c_out: int, expansion: int, kernel: int, stride: int, se_ratio: float = 0.25):
        super().__init__()
        mid = c_in * expansion
        layers: list[tuple[str, nn.Module]] = []
        if expansion != 1:
            layers += [("expand", nn.Conv2d(c_in, mid, 1, bias=False)), ("bn0", nn.BatchNorm2d(mid)),
                       ("act0", nn.SiLU())]
        layers += [
            ("depthwise", nn.Conv2d(mid, mid, kernel, stride=stride, padding=(kernel - 1) // 2, groups=mid,
                                    bias=False)),
            ("bn1", nn.BatchNorm2d(mid)), ("act1", nn.SiLU()),
            ("se", SqueezeExcite(mid, max(1, int(c_in * se_ratio)))),
            ("project", nn.Conv2d(mid, c_out, 1, bias=False)), ("bn2", nn.BatchNorm2d(c_out)),
        ]
        self.body = nn.Sequential(OrderedDict(layers))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.residual:  # fixed at construction: not data dependent, FX-traceable
            out = out + x
        return out


class EfficientNet(nn.Module):
    """CIFAR EfficientNet-B0: 3x3 stem 32 (stride 1) + BN + swish, seven MBConv stages, global average
    pooling, dropout 0.2, linear readout (no 1280-wide head conv).

    Input ``[B, C, s, s]`` (any side); output ``[B, num_classes]``.
    """

    def __init__(self, stages: Sequence[tuple] = EFFICIENTNET_B0, in_channels: int = 3, num_classes: int = 10,
                 width_factor: float = 1.0, input_size: int = 32, dropout: float = 0.2):
        super().__init__()
        check_image_size("EfficientNet", input_size)
        c = scaled_width(32, width_factor)
        self.stem = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(in_channels, c, 3, padding=1, bias=False)), ("bn", nn.BatchNorm2d(c)),
            ("act", nn.SiLU()),
        ]))
        blocks = []
        for expansion, out, kernel, stride, n in stages:
            out = scaled_width(out, width_factor)
            for j in range(n):
                blocks.append(MBConv(c, out, expansion, kernel, stride if j == 0 else 1))
                c = out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        return self.linear(self.dropout(self.flatten(self.pool(out))))


@register("EfficientNetB0", family="EfficientNet", batch_norm=True, any_input_size=True)
def _efficientnet_b0(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
                     input_size: int = 32, dropout: float = 0.2) -> nn.Module:
    """CIFAR EfficientNet-B0."""
    return EfficientNet(EFFICIENTNET_B0, in_channels, num_classes, width_factor, input_size, dropout)
