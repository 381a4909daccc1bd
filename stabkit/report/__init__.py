"""Notebook support: what the book's pages call (imports :mod:`stabkit.runs` and the core, never the
other way round).

- :mod:`~stabkit.report.glue`: ``page(sweep, scale, *tables)`` loads a page's tables and glues its facts;
  ``glue``, ``glue_claim``, ``record_inputs``, ``record``.
- :mod:`~stabkit.report.analysis`: table analysis (fits, ratios, exponents, probe tables).
- :mod:`~stabkit.report.claims`: :class:`~stabkit.report.claims.Claim` and every ``claim_*`` check.
- :mod:`~stabkit.report.prose`: page facts and "different from the paper" as text and table.
- :mod:`~stabkit.report.figures`, :mod:`~stabkit.report.probe_figures`: the figures;
  :mod:`~stabkit.report.palette`: one colour and marker per architecture.

Submodules are imported on first use (``from stabkit.report import claims``).
"""
from __future__ import annotations

import importlib

__all__ = ["analysis", "claims", "figures", "glue", "palette", "probe_figures", "prose"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
