"""CIFAR AlexNet and LeNet-5 (``book/methods.md``, "Networks")."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .layers import check_image_size, scaled_width, zero_pad_to
from .registry import register

__all__ = ["AlexNet", "LeNet"]


class AlexNet(nn.Module):
    """CIFAR AlexNet: conv3x3/2 64 + ReLU + pool, conv 192 + pool, conv 384, conv 256, conv 256 + pool
    (3x3, pad 1), then dropout, FC 256*2*2 -> 4096, dropout, 4096 -> 4096, -> classes.

    The ReLUs are in place (``nn.ReLU(inplace=True)``, as in the original code); measurements report
    every node's own value unless ``relu_convention="inplace"`` is asked for (``book/methods.md``,
    "Parity with the original code").

    Input ``[B, C, s, s]`` with ``s <= 32`` (zero-padded to 32); output ``[B, num_classes]``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
                 input_size: int = 32, dropout: float = 0.5):
        super().__init__()
        input_size = check_image_size("AlexNet", input_size, 32)
        layers: list[tuple[str, nn.Module]] = []
        pad = zero_pad_to(input_size)
        if pad is not None:
            layers.append(("pad", pad))
        c = in_channels
        # (out channels, stride, pool after)
        spec = ((64, 2, True), (192, 1, True), (384, 1, False), (256, 1, False), (256, 1, True))
        n_pool = 0
        for i, (out, stride, pool) in enumerate(spec, start=1):
            out = scaled_width(out, width_factor)
            layers.append((f"conv{i}", nn.Conv2d(c, out, 3, stride=stride, padding=1)))
            layers.append((f"relu{i}", nn.ReLU(inplace=True)))  # in place, as the original code
            if pool:
                n_pool += 1
                layers.append((f"pool{n_pool}", nn.MaxPool2d(2)))
            c = out
        self.features = nn.Sequential(OrderedDict(layers))
        self.flatten = nn.Flatten(1)
        hidden = scaled_width(4096, width_factor)
        self.classifier = nn.Sequential(OrderedDict([
            ("drop1", nn.Dropout(dropout)),
            ("fc1", nn.Linear(c * 2 * 2, hidden)),
            ("relu1", nn.ReLU(inplace=True)),
            ("drop2", nn.Dropout(dropout)),
            ("fc2", nn.Linear(hidden, hidden)),
            ("relu2", nn.ReLU(inplace=True)),
            ("fc3", nn.Linear(hidden, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


class LeNet(nn.Module):
    """LeNet-5 (CIFAR variant): conv5x5 6 + ReLU + pool, conv5x5 16 + ReLU + pool, FC 120, 84, classes.

    No padding: the first FC is ``16*5*5`` wide at 32x32 and ``16*4*4`` at 28x28 (built for one
    ``input_size``). Input ``[B, C, s, s]``; output ``[B, num_classes]``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
                 input_size: int = 32):
        super().__init__()
        input_size = check_image_size("LeNet", input_size)
        side = ((input_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet: input_size must be >= 16 (two 5x5 convolutions and two 2x2 pools), got {input_size}")
        c1, c2, h1, h2 = (scaled_width(v, width_factor) for v in (6, 16, 120, 84))
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, c1, 5)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(c1, c2, 5)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ]))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(c2 * side * side, h1)), ("relu1", nn.ReLU()),
            ("fc2", nn.Linear(h1, h2)), ("relu2", nn.ReLU()),
            ("fc3", nn.Linear(h2, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


@register("AlexNet", family="AlexNet", max_input_size=32)
def _alexnet(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0, input_size: int = 32,
             dropout: float = 0.5) -> nn.Module:
    """CIFAR AlexNet."""
    return AlexNet(in_channels, num_classes, width_factor, input_size, dropout)


@register("LeNet", family="LeNet")
def _lenet(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
           input_size: int = 32) -> nn.Module:
    """LeNet-5 (CIFAR variant)."""
    return LeNet(in_channels, num_classes, width_factor, input_size)
