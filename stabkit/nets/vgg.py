"""CIFAR VGG 11/13/16/19, with and without batch norm (``book/methods.md``, "Networks"). The variants are
generated from the configuration tables, never copy-pasted."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .layers import check_image_size, scaled_width, zero_pad_to
from .registry import register

__all__ = ["VGG", "VGG_CONFIGS"]

#: Output channels of each 3x3 convolution, ``"M"`` for a 2x2 max-pool, per depth.
VGG_CONFIGS: dict[int, list] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """CIFAR VGG: 3x3 convs (pad 1, bias) [+BN] + ReLU, max-pool 2 at each ``"M"``, one linear layer.

    The ReLUs are in place (``nn.ReLU(inplace=True)``, as in the original code; ``book/methods.md``,
    "Parity with the original code"): stabkit's measurements report every node's own value unless
    ``relu_convention="inplace"`` is asked for.

    Input ``[B, C, s, s]`` with ``s <= 32`` (zero-padded to 32); output ``[B, num_classes]``.
    """

    def __init__(self, cfg: Sequence, in_channels: int = 3, num_classes: int = 10, batch_norm: bool = False,
                 width_factor: float = 1.0, input_size: int = 32):
        super().__init__()
        input_size = check_image_size("VGG", input_size, 32)
        layers: list[tuple[str, nn.Module]] = []
        pad = zero_pad_to(input_size)
        if pad is not None:
            layers.append(("pad", pad))
        c, n_conv, n_pool = in_channels, 0, 0
        for v in cfg:
            if v == "M":
                n_pool += 1
                layers.append((f"pool{n_pool}", nn.MaxPool2d(2)))
                continue
            n_conv += 1
            out = scaled_width(v, width_factor)
            layers.append((f"conv{n_conv}", nn.Conv2d(c, out, 3, padding=1, bias=True)))
            if batch_norm:
                layers.append((f"bn{n_conv}", nn.BatchNorm2d(out)))
            # in place, as the original code: the node names and the values are the same, and
            # measure(..., relu_convention="inplace") then reproduces the original's feature extraction
            layers.append((f"relu{n_conv}", nn.ReLU(inplace=True)))
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
        return VGG(VGG_CONFIGS[depth], in_channels, num_classes, batch_norm, width_factor, input_size)
    builder.__doc__ = f"VGG{depth}{' with batch norm' if batch_norm else ''} (CIFAR variant)."
    return builder


for _depth in VGG_CONFIGS:
    for _bn in (False, True):
        register(f"VGG{_depth}{'bn' if _bn else ''}", family="VGG", batch_norm=_bn, max_input_size=32)(
            _vgg_builder(_depth, _bn))
