"""Networks trained at a lower resolution: ``LowRes-<net>`` is ``<net>`` fed at ``source_size`` pixels
(``book/probes.md``, "Resolution").

:class:`AtResolution` resamples its input to ``source_size`` inside the model, so a run trains "at a
source resolution" with the ordinary 32 px data pipeline. Registered for the networks that take any
input side (:data:`~stabkit.nets.lowres.VARIABLE_INPUT_NETS`, the ones with a global pooling before the
readout).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..checks import check_int
from ..transforms import resize
from .registry import build, model_info, register

__all__ = ["AtResolution", "VARIABLE_INPUT_NETS"]

#: Networks that accept any input side (global average pooling before the readout), the only ones usable
#: for resolution transfer. VGG/AlexNet zero-pad smaller inputs to the size they were built for and
#: LeNet/the FCNs have a fixed flatten size.
VARIABLE_INPUT_NETS = ("ResNet18", "ResNet34", "ResNet50", "EfficientNetB0")


def _resample(x: torch.Tensor, size: int, interpolation: str, antialias: bool, blur_sigma: float) -> torch.Tensor:
    return resize(x, size, interpolation, antialias, blur_sigma)


torch.fx.wrap("_resample")  # a leaf of the FX graph (resize has shape-dependent Python branches)


class AtResolution(nn.Module):
    """``net`` fed at ``source_size`` px: ``forward(x) = net(resize(x, source_size, ...))``.

    The images (cropped/flipped at 32 px, then normalised) are resampled to ``source_size`` inside the
    model, with the recorded options; training, test error and model selection therefore happen at the
    source size. ``model.net`` is the bare network, to be evaluated out of the box at other sizes.

    Args:
        net: the bare network (any input side).
        source_size: side (pixels) the network sees.
        interpolation: resampling of :func:`stabkit.transforms.resize` (``"bilinear"``, ``"nearest"``, ...).
        antialias: low-pass when downsampling.
        blur_sigma: optional Gaussian pre-blur (pixels).

    Input ``[B, C, H, W]``; output ``net``'s output for ``[B, C, source_size, source_size]``.
    """

    def __init__(self, net: nn.Module, source_size: int = 16, interpolation: str = "bilinear",
                 antialias: bool = True, blur_sigma: float = 0.0):
        super().__init__()
        _resample(torch.zeros(1, 1, 2, 2), int(source_size), interpolation, antialias,
                  float(blur_sigma))  # validates the options (clear ValueError)
        self.net = net
        self.source_size, self.interpolation = int(source_size), interpolation
        self.antialias, self.blur_sigma = bool(antialias), float(blur_sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_resample(x, self.source_size, self.interpolation, self.antialias, self.blur_sigma))

    def resampling(self) -> dict[str, Any]:
        """The resampling options: ``{"interpolation", "antialias", "blur_sigma"}``."""
        return dict(interpolation=self.interpolation, antialias=self.antialias, blur_sigma=self.blur_sigma)


def _lowres_builder(base: str) -> Callable[..., nn.Module]:
    def builder(in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0, input_size: int = 32,
                source_size: int = 16, interpolation: str = "bilinear", antialias: bool = True,
                blur_sigma: float = 0.0) -> nn.Module:
        if isinstance(source_size, bool):
            raise ValueError(f"LowRes-{base}: source_size must be a positive int, got {source_size!r}")
        try:
            source_size = check_int("source_size", source_size, minimum=1)
        except (TypeError, ValueError):
            raise ValueError(f"LowRes-{base}: source_size must be a positive int, got {source_size!r}") from None
        inner = build(base, in_channels=in_channels, num_classes=num_classes, width_factor=width_factor)
        return AtResolution(inner, source_size, interpolation, antialias, blur_sigma)
    builder.__doc__ = f"{base} trained at ``source_size`` px (inputs resampled inside the model)."
    return builder


for _base in VARIABLE_INPUT_NETS:
    _info = model_info(_base)
    register(f"LowRes-{_base}", family=_info["family"], batch_norm=_info["batch_norm"], any_input_size=True,
             base=_base)(_lowres_builder(_base))
