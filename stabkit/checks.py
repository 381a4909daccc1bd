"""Argument validators shared by every module: each error names the parameter and what it accepts.

Core modules call these instead of writing their own ``_check_*`` helpers, so that the same mistake gets
the same message everywhere (``ValueError`` for a bad value, ``TypeError`` for a wrong type).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = ["check_choice", "check_int", "check_float", "check_device"]

DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N", "mps")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``, else ``ValueError`` naming ``name`` and the choices."""
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # unhashable or incomparable values are simply not a choice
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python ``int`` (numpy and torch integers accepted; bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # 0-d tensor or array
            try:
                item = value.item()
            except (ValueError, RuntimeError):
                item = None
            if isinstance(item, numbers.Integral) and not isinstance(item, bool):
                value = item
            else:
                raise TypeError(f"{name} must be an integer, got {value!r}")
        else:
            raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(name: str, value: Any, *, minimum: float | None = None, positive: bool = False,
                finite: bool = True) -> float:
    """``value`` as a Python ``float`` (any real number, not a string or a bool); finite unless told."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            try:
                value = value.item()
            except (ValueError, RuntimeError):
                raise TypeError(f"{name} must be a real number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if minimum is not None and not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_device(name: str, device: Any) -> Any:
    """Check the *form* of a device string (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) or accept a
    ``torch.device``; does not import torch or check that CUDA is present (``runs.resolve_device`` does)."""
    if device is None or type(device).__name__ == "device":
        return device
    if isinstance(device, str):
        head, _, index = device.partition(":")
        if head in ("auto", "cpu", "mps") and not index:
            return device
        if head == "cuda" and (not _ or index.isdigit()):
            return device
    raise ValueError(f"{name} must be one of {DEVICE_FORMS} (or a torch.device), got {device!r}")
