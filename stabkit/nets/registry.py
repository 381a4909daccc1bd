"""The network registry: names -> builders with metadata, and the functions that read it.

A builder is ``fn(in_channels, num_classes, width_factor, **options) -> nn.Module``;
:func:`~stabkit.nets.register` stores it with its metadata (family, kind, batch norm, default input, ...),
:func:`~stabkit.nets.build` checks the arguments and calls it, :func:`~stabkit.nets.model_info` returns
the metadata as a plain dict (nothing is patched onto the modules), :func:`~stabkit.nets.complexity`
counts parameters and multiply-accumulates with ``torch.utils.flop_counter.FlopCounterMode``. The
families register themselves when :mod:`stabkit.nets` is imported, so the registry is complete on import.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..checks import check_choice, check_float, check_int
from ..protocol import is_fully_connected

__all__ = ["KINDS", "register", "list_models", "model_info", "canonical_name", "build", "complexity",
           "model_table"]

#: Kinds of network (``cnn`` image CNNs, ``fcn`` fully-connected nets on flattened images, ``cnn1d`` 1-D CNNs
#: on signals).
KINDS = ("cnn", "fcn", "cnn1d")
_COMMON = ("in_channels", "num_classes", "width_factor")

_BUILDERS: OrderedDict[str, Callable[..., nn.Module]] = OrderedDict()
_INFO: dict[str, dict[str, Any]] = {}


def register(name: str, default_input: Sequence[int] | None = None, *, family: str | None = None,
             kind: str = "cnn", batch_norm: bool = False, any_input_size: bool = False,
             max_input_size: int | None = None, base: str | None = None) -> Callable:
    """Decorator registering ``builder(in_channels, num_classes, width_factor, **options) -> nn.Module``.

    Args:
        name: the network name (unique; :func:`build` also accepts it case-insensitively).
        default_input: per-sample input shape without the channel, used by :func:`complexity` and
            :func:`model_table` (default ``(32, 32)``; ``(128,)`` for a 1-D net of length 128).
        family: architecture family shown in tables and figures (default: ``name``).
        kind: ``"cnn"`` (images), ``"fcn"`` (fully connected on flattened images) or ``"cnn1d"``.
        batch_norm: whether the network has batch-norm layers.
        any_input_size: the network ends with a global pooling and takes any image side.
        max_input_size: images larger than this are refused (smaller ones are zero-padded to it).
        base: for a network derived from another registered one (e.g. ``LowRes-ResNet18``), that name.
    """
    check_choice("kind", kind, KINDS)
    if (kind == "fcn") != is_fully_connected(name):
        # the paper's training defaults (Adam for FCNs) are chosen torch-free, from the name, while a sweep
        # loads (stabkit.protocol): a registration must agree with that rule
        raise ValueError(f"kind {kind!r} of network {name!r} disagrees with stabkit.protocol.is_fully_connected "
                         f"({is_fully_connected(name)}): fully-connected nets (kind 'fcn') are named DenseNetL*")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"network name {name!r} is already registered")
        params = inspect.signature(fn).parameters
        _BUILDERS[name] = fn
        _INFO[name] = {
            "name": name, "family": family or name, "kind": kind, "batch_norm": bool(batch_norm),
            "default_input": tuple(default_input) if default_input is not None else (32, 32),
            "any_input_size": bool(any_input_size), "max_input_size": max_input_size, "base": base,
            "options": {k: p.default for k, p in params.items() if k not in _COMMON},
            "description": (inspect.getdoc(fn) or "").split("\n")[0],
        }
        return fn
    return deco


def list_models(*, kind: str | None = None, family: str | None = None) -> list[str]:
    """Every registered network name, in registry order (optionally only one ``kind`` or ``family``)."""
    if kind is not None:
        check_choice("kind", kind, KINDS)
    return [n for n, info in _INFO.items()
            if (kind is None or info["kind"] == kind) and (family is None or info["family"] == family)]


def canonical_name(name: str) -> str:
    """The registered spelling of ``name`` (case, ``-`` and ``_`` ignored); ValueError listing the names."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, one of {list(_BUILDERS)}; got {name!r}")
    if name in _BUILDERS:
        return name
    key = name.lower().replace("_", "").replace("-", "")
    for n in _BUILDERS:
        if n.lower().replace("_", "").replace("-", "") == key:
            return n
    raise ValueError(f"unknown network name {name!r}; accepted names (list_models()): {', '.join(_BUILDERS)}")


def model_info(name: str) -> dict[str, Any]:
    """Metadata of network ``name`` as a new dict.

    Keys: ``name`` (canonical), ``family``, ``kind`` (``"cnn"``, ``"fcn"`` or ``"cnn1d"``), ``batch_norm``,
    ``default_input`` (per-sample shape without the channel: ``(32, 32)``, ``(128,)`` for CNN1D),
    ``any_input_size`` (global pooling: any image side), ``max_input_size`` (VGG and AlexNet zero-pad to
    32, None otherwise), ``base`` (the network a derived one wraps, else None), ``options`` (builder
    options and their defaults), ``description`` (first docstring line of the builder).
    """
    info = _INFO[canonical_name(name)]
    return {**info, "options": dict(info["options"])}


def build(name: str, in_channels: int = 3, num_classes: int = 10, width_factor: float = 1.0,
          **options: Any) -> nn.Module:
    """Build network ``name`` (one of :func:`list_models`, case-insensitive) with fresh initial weights.

    Args:
        name: network name, e.g. ``"VGG11bn"``, ``"ResNet18"``, ``"DenseNetL4"``, ``"CNN1D"``,
            ``"LowRes-ResNet18"``.
        in_channels: input channels (3 for CIFAR-10, 1 for scale detection).
        num_classes: output units (1 for the hinge loss).
        width_factor: multiplies every hidden width (finite, > 0).
        **options: builder-specific options (:func:`model_info` lists them), e.g. ``input_size=28``
            (images), ``dropout``, or for ``CNN1D`` ``filter_size, stride, depth, width (H), length (L),
            bias``.

    Returns:
        An ``nn.Module`` mapping ``[B, in_channels, s, s]`` (``[B, in_channels, L]`` for CNN1D) to
        ``[B, num_classes]``. Its metadata comes from :func:`model_info`, not from attributes.

    Raises:
        ValueError: unknown name (the message lists the names), unknown option, or bad value;
        TypeError: a non-integer ``in_channels`` / ``num_classes`` or a non-numeric ``width_factor``.
    """
    canonical = canonical_name(name)
    in_channels = check_int("in_channels", in_channels, minimum=1)
    num_classes = check_int("num_classes", num_classes, minimum=1)  # 1 for the hinge loss
    width_factor = check_float("width_factor", width_factor, positive=True)  # finite: inf has no width
    builder = _BUILDERS[canonical]
    accepted = list(_INFO[canonical]["options"])
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{canonical}: unknown option(s) {unknown}; accepted options: {accepted}")
    return builder(in_channels=in_channels, num_classes=num_classes, width_factor=width_factor, **options)


def _first_in_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return None


def complexity(name_or_model: str | nn.Module, in_channels: int | None = None, input_size: int | None = None,
               num_classes: int = 10) -> dict[str, int]:
    """Parameter count and multiply-accumulate count (MACs) of one forward pass of one sample.

    MACs are half the FLOPs that ``torch.utils.flop_counter.FlopCounterMode`` counts for a batch of one in
    eval mode: the convolutions (any dimension, grouped and depthwise included) and matrix products
    (linear layers, without their biases). Batch norm, activations, pooling, the squeeze-excite gating
    product, residual sums, :class:`~stabkit.nets.layers.Scale` layers and resampling are not counted.

    Args:
        name_or_model: a name of :func:`list_models` (built with ``in_channels``, ``num_classes`` and,
            for image nets, ``input_size``) or an ``nn.Module``.
        in_channels: input channels; None: 3 for a name, a module's first convolution's (else 3).
        input_size: image side (length for 1-D nets); None: the network's default input (32; the
            length of a CNN1D).
        num_classes: output units (for a name).

    Returns:
        ``{"params": int, "macs": int}``.
    """
    if isinstance(name_or_model, nn.Module):
        model = name_or_model
        c = in_channels if in_channels is not None else (_first_in_channels(model) or 3)
        length = getattr(model, "length", None) if isinstance(getattr(model, "length", None), int) else None
        if length is not None:  # a 1-D net that knows its length (CNN1D)
            shape = (c, length if input_size is None else int(input_size))
        else:
            side = 32 if input_size is None else int(input_size)
            shape = (c, side, side)
    else:
        canonical = canonical_name(name_or_model)
        c = 3 if in_channels is None else in_channels
        opts = {} if input_size is None else {"input_size": int(input_size)}
        model = build(canonical, in_channels=c, num_classes=num_classes, **opts)
        default = _INFO[canonical]["default_input"]
        if input_size is not None:
            default = (int(input_size),) * len(default)
        shape = (c, *default)
    params = sum(p.numel() for p in model.parameters())
    p = next(model.parameters(), None)
    x = torch.zeros((1, *shape), device=p.device if p is not None else "cpu",
                    dtype=p.dtype if p is not None else torch.float32)
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return {"params": int(params), "macs": int(counter.get_total_flops()) // 2}


def model_table(names: Sequence[str] | None = None, in_channels: int = 3, num_classes: int = 10):
    """DataFrame with one row per network: ``name, family, kind, input, params, macs`` (from
    :func:`complexity`; ``in_channels`` x 32 x 32 inputs for the image nets, the default 1 x 128 input and
    one output for the 1-D nets). ``names`` defaults to :func:`list_models`."""
    import pandas as pd

    rows = []
    for name in (list_models() if names is None else names):
        info = model_info(name)
        c, k = (1, 1) if info["kind"] == "cnn1d" else (in_channels, num_classes)
        cx = complexity(info["name"], in_channels=c, num_classes=k)
        rows.append({"name": info["name"], "family": info["family"], "kind": info["kind"],
                     "input": "x".join(map(str, (c, *info["default_input"]))),
                     "params": cx["params"], "macs": cx["macs"]})
    return pd.DataFrame(rows)
