"""CIFAR ResNet 18/34/50 (``book/methods.md``, "Networks"): block type and stage
sizes from a table."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .layers import check_image_size, scaled_width
from .registry import register

__all__ = ["ResNet", "BasicBlock", "Bottleneck"]


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """1x1 conv + BN when the shape changes, else an empty Sequential (no node in the FX graph)."""
    if stride == 1 and c_in == c_out:
        return nn.Sequential()
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)),
        ("bn", nn.BatchNorm2d(c_out)),
    ]))


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN, identity or 1x1 shortcut, ReLU after the sum. Output channels ``planes``."""
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(c_in, planes, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride), 1x1 expand (x4), each with BN; shortcut; ReLU after the sum."""
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = _shortcut(c_in, out, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem (64, stride 1, no max-pool), four stages 64/128/256/512 with strides
    1, 2, 2, 2, global average pooling (= avg-pool 4 at 32x32 and 28x28 inputs), linear readout.

    Input ``[B, C, s, s]`` (any side); output ``[B, num_classes]``.
    """

    def __init__(self, block: type, layers: Sequence[int], in_channels: int = 3, num_classes: int = 10,
                 width_factor: float = 1.0, input_size: int = 32):
        super().__init__()
        check_image_size("ResNet", input_size)
        c = scaled_width(64, width_factor)
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        stages = []
        for i, (planes, n_blocks, stride) in enumerate(zip((64, 128, 256, 512), layers, (1, 2, 2, 2))):
            p = scaled_width(planes, width_factor)
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(c, p, stride if j == 0 else 1))
                c = p * block.expansion
            stages.append((f"layer{i + 1}", nn.Sequential(*blocks)))
        for name, stage in stages:
            self.add_module(name, stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.flatten(self.pool(out)))


def _resnet_builder(block: type, layers: Sequence[int]) -> Callable[..., nn.Module]:
    def builder(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
                input_size: int = 32) -> nn.Module:
        return ResNet(block, layers, in_channels, num_classes, width_factor, input_size)
    builder.__doc__ = f"CIFAR ResNet with {block.__name__} blocks {list(layers)}."
    return builder


for _name, _block, _layers in (("ResNet18", BasicBlock, (2, 2, 2, 2)), ("ResNet34", BasicBlock, (3, 4, 6, 3)),
                               ("ResNet50", Bottleneck, (3, 4, 6, 3))):
    register(_name, family="ResNet", batch_norm=True, any_input_size=True)(_resnet_builder(_block, _layers))
