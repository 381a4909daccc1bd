"""Notebook support: what the book's pages call (imports :mod:`stabkit.runs` and the core, never the
other way round).

- :mod:`~stabkit.report.glue`: ``page(sweep, scale, *tables)`` loads a page's tables and glues its facts;
  ``glue``, ``glue_claim``, ``record_inputs``, ``record``.
- :mod:`~stabkit.report.analysis`: table analysis (fits, ratios, exponents, probe tables).
- :mod:`~stabkit.report.claims`: every ``claim_*`` check of the figure pages (re-exports the others);
  :mod:`~stabkit.report.probe_claims`: the probe pages' claims; :mod:`~stabkit.report.verdicts`:
  :class:`~stabkit.report.verdicts.Claim` and the verdict words; :mod:`~stabkit.report.stats`:
  correlations and fits with bootstrap intervals and the "cannot be tested at this scale" rules.
- :mod:`~stabkit.report.fidelity`: the paper's protocol (networks, seeds, epochs, probe rows) that pages
  compare with; :mod:`~stabkit.report.narrative`: sentences that say what the data show.
- :mod:`~stabkit.report.prose`: page facts, "different from the paper" as a table, D/G/deno tables, CSV
  downloads.
- :mod:`~stabkit.report.figures`, :mod:`~stabkit.report.probe_figures`: the figures;
  :mod:`~stabkit.report.palette`: one colour and marker per architecture.

Submodules are imported on first use (``from stabkit.report import claims``).
"""
from __future__ import annotations

import importlib

__all__ = ["analysis", "claims", "fidelity", "figures", "glue", "narrative", "palette", "probe_claims",
           "probe_figures", "prose", "stats", "verdicts"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
