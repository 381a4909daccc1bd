"""Package faces that load on first use: ``from stabkit.sweeps import load_sweep`` imports the sweep grammar
and nothing else, so reading a sweep file stays torch-free while the modules behind the same face (a run,
an executor) import torch at their top.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_face"]


def lazy_face(package: str, names: Mapping[str, str],
              submodules: tuple[str, ...] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a public name of ``names`` (name -> submodule that defines
    it) is imported from its submodule on first access, a name of ``submodules`` is that submodule."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*names, *submodules, "__all__"})

    return __getattr__, __dir__
