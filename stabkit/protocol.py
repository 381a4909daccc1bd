"""The paper's protocol as plain data (no torch): tasks, training defaults, CIFAR-10 normalisation.

Torch-free on purpose: :class:`stabkit.runs.RunConfig` and the sweep grammar read these tables, and
loading a sweep must not import torch. ``stabkit.train.defaults`` returns the same values.
See ``book/methods.md`` (training) for where each value comes from.
"""
from __future__ import annotations

from typing import Any

from .checks import check_choice

__all__ = ["TASKS", "OPTIMIZERS", "SCHEDULES", "PRECISIONS", "LOSSES", "RELU_CONVENTIONS", "CIFAR10_MEAN", "CIFAR10_STD",
           "training_defaults", "is_fully_connected"]

TASKS = ("cifar10", "twopoints", "scale1d")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "cosine_to_zero", "constant")
#: Training arithmetic: float32 (strict: no TF32 on CUDA), tf32 (float32 with TF32 matmuls and convolutions
#: on CUDA, plain float32 on the CPU), or bfloat16 autocast (CPU with avx512_bf16/AMX, or CUDA);
#: measurement is float64 either way.
PRECISIONS = ("float32", "tf32", "bf16")
LOSSES = ("ce", "hinge")
#: How a layer is read where an in-place ReLU overwrites it (``stability.measure(relu_convention=...)``, a run's
#: ``options.layers.relu_conventions``): ``"true"`` every node's own value; ``"inplace"`` the value after the
#: in-place ReLU, as the original code's feature extraction reported it.
RELU_CONVENTIONS = ("true", "inplace")

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
"""Per-channel mean used for normalisation (images scaled to [0, 1])."""
CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
"""Per-channel std used for normalisation (the values of the paper's code)."""

_CNN = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine", batch_size=128)
_DEFAULTS = {
    "cifar10": dict(_CNN, epochs=250, loss="ce", augment=("crop", "flip"), stop_at_zero_loss=False),
    "twopoints": dict(_CNN, lr=0.05, epochs=300, loss="hinge", augment=(), stop_at_zero_loss=True),
    "scale1d": dict(_CNN, lr=0.05, momentum=0.0, weight_decay=0.0, schedule="constant", epochs=300,
                    loss="hinge", augment=(), stop_at_zero_loss=True),
}
_FCN = dict(optimizer="adam", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant")


def is_fully_connected(net: str) -> bool:
    """True for the paper's fully-connected nets (``DenseNetL2/L4/L6``), which train with Adam.

    Read from the name because a sweep loads without torch (and so without ``stabkit.nets``); the
    registry holds every network to it (``stabkit.nets.register`` refuses kind ``"fcn"`` under another
    name, and another kind under this one), so it agrees with ``model_info(net)["kind"] == "fcn"``."""
    return net.lower().startswith("densenetl")


def training_defaults(task: str, net: str = "") -> dict[str, Any]:
    """The paper's training hyper-parameters for ``task`` (and ``net``: FCNs ``DenseNetL*`` use Adam).

    Returns a new dict with keys ``epochs, optimizer, lr, momentum, weight_decay, schedule, loss,
    batch_size, augment (tuple of names), stop_at_zero_loss``.
    """
    check_choice("task", task, TASKS)
    out = dict(_DEFAULTS[task])
    if is_fully_connected(net):
        out.update(_FCN)
    return out
