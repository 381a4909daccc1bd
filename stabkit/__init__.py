"""stabkit: how deep networks lose spatial information, measured layer by layer.

The public face::

    import stabkit
    generator = torch.Generator().manual_seed(0)
    probes = stabkit.draw_probes(x, delta=1.0, cut=3, generator=generator)
    table = stabkit.measure(model, probes)            # one row per layer: D_f, G_f, R_f, ...
    table = stabkit.measure(stabkit.shuffle_channels(model, 1, generator), probes)

and the submodules (``stabkit.transforms``, ``stabkit.nets``, ``stabkit.stability``, ...).  Everything is
imported on first use, so ``import stabkit`` stays cheap (it does not import torch).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public names of the package root -> the submodule that defines them.
_FUNCTIONS = {"measure": "stability", "draw_probes": "probes", "Probes": "probes", "shuffle_channels": "stability"}

#: Submodules reachable as attributes (``stabkit.nets``), imported on first access.
SUBMODULES = ("checks", "atomic", "checkpoints", "protocol", "locks", "transforms", "graph", "laplacian", "theory",
              "nets", "data", "probes", "stability", "invariance", "batchnorm", "precision", "train", "robustness",
              "runs", "sweeps", "campaign", "report")

__all__ = ["Probes", "draw_probes", "measure", "shuffle_channels"]

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time the names load lazily
    from .probes import Probes, draw_probes
    from .stability import measure, shuffle_channels


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        value = getattr(importlib.import_module(f".{_FUNCTIONS[name]}", __name__), name)
        globals()[name] = value  # later accesses skip this hook
        return value
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FUNCTIONS) | set(SUBMODULES))
