"""Network zoo of the paper (CIFAR variants), one module per family (``book/methods.md``, "Networks").

One registry maps a name to a builder: :func:`build` looks the name up, checks the options against the
builder's signature and returns an ``nn.Module``; :func:`list_models` lists the names and
:func:`model_info` returns a network's metadata (family, kind, batch norm, default input, options).
Every family registers itself on ``import stabkit.nets``, so every name a sweep uses builds right away.
The variants are generated from tables (VGG configurations, ResNet block type + stage sizes, EfficientNet
stages), never copy-pasted.

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

Modules: :mod:`~stabkit.nets.registry` (registry, build, metadata, complexity), :mod:`~stabkit.nets.layers`
(shared blocks), one per family: :mod:`~stabkit.nets.vgg`, :mod:`~stabkit.nets.resnet`,
:mod:`~stabkit.nets.alexnet_lenet`, :mod:`~stabkit.nets.efficientnet`, :mod:`~stabkit.nets.fcn`,
:mod:`~stabkit.nets.cnn1d`, :mod:`~stabkit.nets.lowres` (``LowRes-<net>``, registered last).
"""
from __future__ import annotations

# the order of these imports is the registry order (list_models())
from .vgg import VGG, VGG_CONFIGS
from .resnet import BasicBlock, Bottleneck, ResNet
from .alexnet_lenet import AlexNet, LeNet
from .efficientnet import EFFICIENTNET_B0, EfficientNet, MBConv, SqueezeExcite
from .fcn import FCN
from .cnn1d import CNN1D
from .lowres import VARIABLE_INPUT_NETS, AtResolution
from .layers import Scale
from .registry import KINDS, build, canonical_name, complexity, list_models, model_info, model_table, register

__all__ = [
    "build", "register", "list_models", "model_info", "canonical_name", "complexity", "model_table", "KINDS",
    "VGG", "VGG_CONFIGS", "ResNet", "BasicBlock", "Bottleneck", "AlexNet", "LeNet", "EfficientNet", "MBConv",
    "SqueezeExcite", "EFFICIENTNET_B0", "FCN", "CNN1D", "Scale", "AtResolution", "VARIABLE_INPUT_NETS",
]
