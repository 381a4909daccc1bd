"""Network zoo of the paper (CIFAR variants), written from the methods specification (section 5).

One registry maps a name to a builder function; :func:`build` looks the name up, checks the options
against the builder's signature and returns an ``nn.Module``. The variants are generated from tables
(VGG configurations, ResNet block type + stage sizes, EfficientNet stages), never copy-pasted.

Every network is traceable by ``torch.fx.symbolic_trace`` (no data-dependent Python control flow in any
``forward``), so that the stability measurements can name and extract every node of its graph.

Common arguments of every builder:

- ``in_channels``: input channels (3 for CIFAR-10, 1 for scale detection).
- ``num_classes``: output units (10 for CIFAR-10; 1 for the hinge loss of the scale-detection tasks).
- ``width_factor``: multiplies every hidden width (channels, hidden units); ``0.25`` gives cheap CPU
  networks with the same depth and graph. Widths are rounded and at least 1.
- ``input_size`` (option, images only): side of the square input, default 32. VGG and AlexNet zero-pad
  smaller inputs to 32 (28 -> 32 for scale detection, as in the paper); LeNet takes its input unpadded
  (16*4*4 first FC at 28, 16*5*5 at 32); ResNet and EfficientNet end with a global average pooling and
  take any size; the FCNs flatten ``in_channels * input_size**2`` inputs.

Initialisation: PyTorch's defaults for the CNNs (as in the paper); the FCNs (``DenseNetL*``) and the 1-D
scale-detection CNN (``CNN1D``) use N(0, 1) weights with explicit scaling in the forward pass.
"""
from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NAMES", "build", "register", "complexity", "model_table",
    "VGG", "ResNet", "BasicBlock", "Bottleneck", "AlexNet", "LeNet", "EfficientNet", "FCN", "CNN1D", "Scale",
]

_BUILDERS: "OrderedDict[str, Callable[..., nn.Module]]" = OrderedDict()
_DEFAULT_INPUT: dict[str, tuple[int, ...]] = {}


def register(name: str, default_input: tuple[int, ...] | None = None) -> Callable:
    """Decorator registering ``builder(in_channels, num_classes, width_factor, **options) -> nn.Module``.

    ``default_input`` is the per-sample input shape (without the channel) used by :func:`complexity`
    when no size is given; ``(32, 32)`` for images.
    """
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"network name {name!r} is already registered")
        _BUILDERS[name] = fn
        _DEFAULT_INPUT[name] = tuple(default_input) if default_input is not None else (32, 32)
        return fn
    return deco


def _w(channels: int, width_factor: float) -> int:
    """Scaled width, rounded, at least 1."""
    return max(1, int(round(channels * width_factor)))


def _check_image_size(name: str, input_size: int, pad_to: int | None = None) -> None:
    if not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    if pad_to is not None and input_size > pad_to:
        raise ValueError(
            f"{name}: input_size must be <= {pad_to} (smaller inputs are zero-padded to {pad_to}), "
            f"got {input_size}")


def _pad_to(input_size: int, target: int = 32) -> nn.Module | None:
    """Zero padding that brings a square ``input_size`` image to ``target`` (None if nothing to do)."""
    extra = target - input_size
    if extra <= 0:
        return None
    lo = extra // 2
    return nn.ZeroPad2d((lo, extra - lo, lo, extra - lo))


# ----------------------------------------------------------------------------------------------------
# VGG
# ----------------------------------------------------------------------------------------------------
_VGG_CFG: dict[int, list] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """CIFAR VGG: 3x3 convs (pad 1, bias) [+BN] + ReLU, max-pool 2 at each ``"M"``, one linear layer.

    Input ``[B, C, s, s]`` with ``s <= 32`` (zero-padded to 32); output ``[B, num_classes]``.
    """

    def __init__(self, cfg: Sequence, in_channels: int = 3, num_classes: int = 10, batch_norm: bool = False,
                 width_factor: float = 1.0, input_size: int = 32):
        super().__init__()
        _check_image_size("VGG", input_size, 32)
        layers: list[tuple[str, nn.Module]] = []
        pad = _pad_to(input_size)
        if pad is not None:
            layers.append(("pad", pad))
        c, n_conv, n_pool = in_channels, 0, 0
        for v in cfg:
            if v == "M":
                n_pool += 1
                layers.append((f"pool{n_pool}", nn.MaxPool2d(2)))
                continue
            n_conv += 1
            out = _w(v, width_factor)
            layers.append((f"conv{n_conv}", nn.Conv2d(c, out, 3, padding=1, bias=True)))
            if batch_norm:
                layers.append((f"bn{n_conv}", nn.BatchNorm2d(out)))
            layers.append((f"relu{n_conv}", nn.ReLU()))
            c = out
        self.features = nn.Sequential(OrderedDict(layers))
        side = 32 >> n_pool
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(c * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def _vgg_builder(depth: int, batch_norm: bool) -> Callable[..., nn.Module]:
    def builder(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
                input_size: int = 32) -> nn.Module:
        return VGG(_VGG_CFG[depth], in_channels, num_classes, batch_norm, width_factor, input_size)
    builder.__doc__ = f"VGG{depth}{' with batch norm' if batch_norm else ''} (CIFAR variant)."
    return builder


for _depth in _VGG_CFG:
    for _bn in (False, True):
        register(f"VGG{_depth}{'bn' if _bn else ''}")(_vgg_builder(_depth, _bn))


# ----------------------------------------------------------------------------------------------------
# ResNet
# ----------------------------------------------------------------------------------------------------
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
    1, 2, 2, 2, global average pooling (= avg-pool 4 at 32x32 and 28x28 inputs), linear readout."""

    def __init__(self, block: type, layers: Sequence[int], in_channels: int = 3, num_classes: int = 10,
                 width_factor: float = 1.0, input_size: int = 32):
        super().__init__()
        _check_image_size("ResNet", input_size)
        c = _w(64, width_factor)
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        stages = []
        for i, (planes, n_blocks, stride) in enumerate(zip((64, 128, 256, 512), layers, (1, 2, 2, 2))):
            p = _w(planes, width_factor)
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
    register(_name)(_resnet_builder(_block, _layers))


# ----------------------------------------------------------------------------------------------------
# AlexNet, LeNet
# ----------------------------------------------------------------------------------------------------
class AlexNet(nn.Module):
    """CIFAR AlexNet: conv3x3/2 64 + ReLU + pool, conv 192 + pool, conv 384, conv 256, conv 256 + pool
    (3x3, pad 1), then dropout, FC 256*2*2 -> 4096, dropout, 4096 -> 4096, -> classes."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
                 input_size: int = 32, dropout: float = 0.5):
        super().__init__()
        _check_image_size("AlexNet", input_size, 32)
        layers: list[tuple[str, nn.Module]] = []
        pad = _pad_to(input_size)
        if pad is not None:
            layers.append(("pad", pad))
        c = in_channels
        # (out channels, stride, pool after)
        spec = ((64, 2, True), (192, 1, True), (384, 1, False), (256, 1, False), (256, 1, True))
        n_pool = 0
        for i, (out, stride, pool) in enumerate(spec, start=1):
            out = _w(out, width_factor)
            layers.append((f"conv{i}", nn.Conv2d(c, out, 3, stride=stride, padding=1)))
            layers.append((f"relu{i}", nn.ReLU()))
            if pool:
                n_pool += 1
                layers.append((f"pool{n_pool}", nn.MaxPool2d(2)))
            c = out
        self.features = nn.Sequential(OrderedDict(layers))
        self.flatten = nn.Flatten(1)
        hidden = _w(4096, width_factor)
        self.classifier = nn.Sequential(OrderedDict([
            ("drop1", nn.Dropout(dropout)),
            ("fc1", nn.Linear(c * 2 * 2, hidden)),
            ("relu1", nn.ReLU()),
            ("drop2", nn.Dropout(dropout)),
            ("fc2", nn.Linear(hidden, hidden)),
            ("relu2", nn.ReLU()),
            ("fc3", nn.Linear(hidden, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


class LeNet(nn.Module):
    """LeNet-5 (CIFAR variant): conv5x5 6 + ReLU + pool, conv5x5 16 + ReLU + pool, FC 120, 84, classes.

    No padding: the first FC is ``16*5*5`` wide at 32x32 and ``16*4*4`` at 28x28.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
                 input_size: int = 32):
        super().__init__()
        _check_image_size("LeNet", input_size)
        side = ((input_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet: input_size must be >= 12, got {input_size}")
        c1, c2, h1, h2 = (_w(v, width_factor) for v in (6, 16, 120, 84))
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


@register("AlexNet")
def _alexnet(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0, input_size: int = 32,
             dropout: float = 0.5) -> nn.Module:
    """CIFAR AlexNet."""
    return AlexNet(in_channels, num_classes, width_factor, input_size, dropout)


@register("LeNet")
def _lenet(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
           input_size: int = 32) -> nn.Module:
    """LeNet-5 (CIFAR variant)."""
    return LeNet(in_channels, num_classes, width_factor, input_size)


# ----------------------------------------------------------------------------------------------------
# EfficientNet-B0 (CIFAR)
# ----------------------------------------------------------------------------------------------------
# (expansion, out channels, kernel, stride of the first block, blocks)
_EFFICIENTNET_B0 = (
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
    pooling, dropout 0.2, linear readout (no 1280-wide head conv)."""

    def __init__(self, stages: Sequence[tuple] = _EFFICIENTNET_B0, in_channels: int = 3, num_classes: int = 10,
                 width_factor: float = 1.0, input_size: int = 32, dropout: float = 0.2):
        super().__init__()
        _check_image_size("EfficientNet", input_size)
        c = _w(32, width_factor)
        self.stem = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(in_channels, c, 3, padding=1, bias=False)), ("bn", nn.BatchNorm2d(c)),
            ("act", nn.SiLU()),
        ]))
        blocks = []
        for expansion, out, kernel, stride, n in stages:
            out = _w(out, width_factor)
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


@register("EfficientNetB0")
def _efficientnet_b0(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
                     input_size: int = 32, dropout: float = 0.2) -> nn.Module:
    """CIFAR EfficientNet-B0."""
    return EfficientNet(_EFFICIENTNET_B0, in_channels, num_classes, width_factor, input_size, dropout)


# ----------------------------------------------------------------------------------------------------
# Fully-connected networks ("DenseNetL2/L4/L6" in the paper's figures) and the 1-D scale-detection CNN
# ----------------------------------------------------------------------------------------------------
class Scale(nn.Module):
    """Multiplies its input by a constant ``factor`` (explicit-scaling parametrisations)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.6g}"


def _normal_init_(module: nn.Module) -> nn.Module:
    """N(0, 1) weights and biases (in place); returns the module."""
    nn.init.normal_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.normal_(module.bias)
    return module


class FCN(nn.Module):
    """Fully-connected net: ``hidden`` layers ``relu(x W / sqrt(d_in) + b)`` of width ``width``, then
    ``x W / d_in`` without bias; W, b ~ N(0, 1). Input ``[B, C, H, W]`` is flattened.

    Each layer is a :class:`Scale` (``1/sqrt(d_in)``, or ``1/d_in`` for the last) followed by a plain
    ``nn.Linear`` with N(0, 1) weights: ``(x s) W + b = s x W + b``, the same function and the same
    gradients as the scaled parametrisation, with ordinary ``weight``/``bias`` parameters and no
    parameter nodes in the FX graph.
    """

    def __init__(self, d_in: int, hidden: int, width: int = 64, num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten(1)
        layers: list[tuple[str, nn.Module]] = []
        d = d_in
        for i in range(1, hidden + 1):
            layers.append((f"scale{i}", Scale(1.0 / math.sqrt(d))))
            layers.append((f"fc{i}", _normal_init_(nn.Linear(d, width, bias=True))))
            layers.append((f"relu{i}", nn.ReLU()))
            d = width
        layers.append((f"scale{hidden + 1}", Scale(1.0 / d)))
        layers.append((f"fc{hidden + 1}", _normal_init_(nn.Linear(d, num_classes, bias=False))))
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.flatten(x))


def _fcn_builder(n_layers: int) -> Callable[..., nn.Module]:
    def builder(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0, input_size: int = 32,
                width: int = 64) -> nn.Module:
        _check_image_size(f"DenseNetL{n_layers}", input_size)
        return FCN(in_channels * input_size * input_size, n_layers - 1, _w(width, width_factor), num_classes)
    builder.__doc__ = f"Fully-connected net with {n_layers} weight layers ({n_layers - 1} hidden), width 64."
    return builder


for _n in (2, 4, 6):
    register(f"DenseNetL{_n}")(_fcn_builder(_n))


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

    Input ``[B, C, L]``; output ``[B, num_classes]``.
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
            layers.append((f"conv{i}", _normal_init_(nn.Conv1d(c, width, filter_size, stride=stride, bias=bias))))
            layers.append((f"relu{i}", nn.ReLU()))
            c, g = width, gain
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten(1)
        self.scale = Scale(g / c)
        self.readout = _normal_init_(nn.Linear(c, num_classes, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.scale(self.flatten(self.pool(self.features(x)))))


@register("CNN1D", default_input=(128,))
def _cnn1d(in_channels: int = 1, num_classes: int = 1, width_factor: float = 1.0, filter_size: int = 2,
           stride: int = 2, depth: int = 7, width: int = 1000, length: int = 128, bias: bool = False,
           H: int | None = None, L: int | None = None, input_size: int | None = None) -> nn.Module:
    """1-D scale-detection CNN. ``H``/``L`` are aliases of ``width``/``length``; ``input_size`` also sets
    the length. The paper's setting is the default: F = 2, s = 2, 7 layers, H = 1000, L = 128."""
    width = H if H is not None else width
    length = L if L is not None else (input_size if input_size is not None else length)
    return CNN1D(in_channels, num_classes, filter_size, stride, depth, _w(width, width_factor), length, bias)


NAMES: tuple[str, ...] = tuple(_BUILDERS)
"""Every registered network name, in registry order."""


# ----------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------
def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, one of {list(_BUILDERS)}; got {name!r}")
    if name in _BUILDERS:
        return name
    key = name.lower().replace("_", "").replace("-", "")
    for n in _BUILDERS:
        if n.lower() == key:
            return n
    raise ValueError(f"unknown network name {name!r}; accepted names (NAMES): {', '.join(_BUILDERS)}")


def build(name: str, in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
          **options) -> nn.Module:
    """Build network ``name`` (one of :data:`NAMES`, case-insensitive) with fresh initial weights.

    Args:
        name: network name, e.g. ``"VGG11bn"``, ``"ResNet18"``, ``"DenseNetL4"``, ``"CNN1D"``.
        in_channels: input channels.
        num_classes: output units (1 for the hinge loss).
        width_factor: multiplies every hidden width (> 0).
        **options: builder-specific options, e.g. ``input_size=28`` (images), ``dropout``, or for
            ``CNN1D`` ``filter_size, stride, depth, width (H), length (L), bias``.

    Returns:
        An ``nn.Module`` mapping ``[B, in_channels, s, s]`` (``[B, in_channels, L]`` for CNN1D) to
        ``[B, num_classes]``, with attributes ``name`` (canonical name) and ``input_shape`` (per-sample
        input shape it was built for).

    Raises:
        ValueError: unknown name (the message lists NAMES), unknown option, or bad value.
    """
    canonical = _canonical(name)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (1 for the hinge loss), got {num_classes!r}")
    if not isinstance(width_factor, (int, float)) or not width_factor > 0:
        raise ValueError(f"width_factor must be a positive number, got {width_factor!r}")
    builder = _BUILDERS[canonical]
    accepted = [p for p in inspect.signature(builder).parameters
                if p not in ("in_channels", "num_classes", "width_factor")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{canonical}: unknown option(s) {unknown}; accepted options: {accepted}")
    model = builder(in_channels=in_channels, num_classes=num_classes, width_factor=float(width_factor),
                    **options)
    model.name = canonical
    if isinstance(model, CNN1D):
        model.input_shape = (in_channels, model.length)
    else:
        size = int(options.get("input_size", 32))
        model.input_shape = (in_channels, size, size)
    return model


def complexity(name_or_model: str | nn.Module, in_channels: int = 3, input_size: int | None = None,
               num_classes: int = 10) -> dict[str, int]:
    """Parameter count and multiply-accumulate count of one forward pass of one sample.

    ``macs`` counts the multiplications of the convolution and linear layers only:
    ``out.numel() * (C_in / groups) * prod(kernel)`` per conv (any dimension, grouped and depthwise
    included), ``out.numel() * in_features`` per linear, for a batch of one. Biases, batch-norm,
    activations, pooling, the squeeze-excite gating product, residual sums and the :class:`Scale` layers
    are not counted. It is measured by a forward pass with hooks (eval mode, zero input).

    Args:
        name_or_model: a name of :data:`NAMES` (built with ``in_channels``, ``num_classes`` and, for image
            nets, ``input_size``) or an ``nn.Module``.
        in_channels: input channels (for a name; for a module without ``input_shape``).
        input_size: image side (length for 1-D nets); None = the network's default (32, 128 for CNN1D,
            or a module's ``input_shape``).
        num_classes: output units (for a name).

    Returns:
        ``{"params": int, "macs": int}``.
    """
    if isinstance(name_or_model, nn.Module):
        model = name_or_model
        shape = getattr(model, "input_shape", None)
        if input_size is not None or shape is None:
            side = 32 if input_size is None else int(input_size)
            c = shape[0] if (shape is not None and input_size is not None) else in_channels
            shape = (c, side) if (shape is not None and len(shape) == 2) else (c, side, side)
    else:
        canonical = _canonical(name_or_model)
        opts = {} if input_size is None else {"input_size": int(input_size)}
        model = build(canonical, in_channels=in_channels, num_classes=num_classes, **opts)
        shape = model.input_shape
    params = sum(p.numel() for p in model.parameters())
    macs = [0]

    def hook(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.modules.conv._ConvNd):
            k = math.prod(module.kernel_size)
            macs[0] += output.numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            macs[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters(), None)
        x = torch.zeros((1, *shape), device=p.device if p is not None else "cpu",
                        dtype=p.dtype if p is not None else torch.float32)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {"params": int(params), "macs": int(macs[0])}


def model_table(names: Sequence[str] | None = None, in_channels: int = 3, num_classes: int = 10):
    """DataFrame with one row per network: ``name, input, params, macs`` (computed by :func:`complexity`;
    3x32x32 inputs for the image nets, the default 1x128 input and one output for CNN1D)."""
    import pandas as pd

    rows = []
    for name in (NAMES if names is None else names):
        canonical = _canonical(name)
        if canonical == "CNN1D":
            model = build(canonical, in_channels=1, num_classes=1)
        else:
            model = build(canonical, in_channels=in_channels, num_classes=num_classes)
        c = complexity(model)
        rows.append({"name": canonical, "input": "x".join(map(str, model.input_shape)),
                     "params": c["params"], "macs": c["macs"]})
    return pd.DataFrame(rows)
