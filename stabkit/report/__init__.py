"""Notebook support: what the book's pages call (imports :mod:`stabkit.runs` and the core, never the
other way round). A page imports three of these modules: :mod:`~stabkit.report.page`, the figure module of
its concern and the claims module of its concern. One concept per module, in this order from the bottom up:

- :mod:`~stabkit.report.tables`: tidy run tables shaped for a page (rows, run columns, configuration
  fields, derived columns, markdown tables, CSV downloads); a table that one concern alone shows lives
  with the claims of that concern.
- :mod:`~stabkit.report.stats`: small-n inference (bootstrap and t / Fisher intervals over architectures,
  the "cannot be tested at this scale" rules); :mod:`~stabkit.report.fits`: fits, exponents and ratios
  that the claims of several concerns share.
- :mod:`~stabkit.report.selection`: which rows a page shows and a claim tests (the paper's probes, the
  CNNs that train well, the runs that converged or stopped early, the control runs a page does not count).
- :mod:`~stabkit.report.differences`: the paper's protocol and the "different from the paper" table;
  :mod:`~stabkit.report.facts`: what a page states about its runs; :mod:`~stabkit.report.narrative`: how a
  change is said (direction and factor).
- :mod:`~stabkit.report.verdicts`: :class:`~stabkit.report.verdicts.Claim` (with its text: brief, per
  architecture, a detail's change) and the verdict words; the claims by concern, each with the tables and
  sentences behind them: :mod:`~stabkit.report.stability_claims` (output stabilities against training and
  the error, the story of their change and its parts D, G, deno, G_f against the training noise: Fig. 1,
  Fig. 5), :mod:`~stabkit.report.layer_claims` (layer by layer: Fig. 2, 3, 6, the shuffling gaps and the
  batch-norm control's words and table, NV against R_k),
  :mod:`~stabkit.report.robustness_claims` (the probes' accuracy and NV tables and their claims),
  :mod:`~stabkit.report.theory_claims` (the constant-filter depth laws, their exponents and the 1-D
  appendix's block profile and runs by task: the theory page and the appendix).
- :mod:`~stabkit.report.palette`: one colour and marker per architecture, the plot style; the figures by
  concern: :mod:`~stabkit.report.figures` (stabilities against the error, layer profiles, training
  curves, scale-detection examples), :mod:`~stabkit.report.spectra_figures` (Fig. 2's filter spectra),
  :mod:`~stabkit.report.probe_figures` (the probe pages), :mod:`~stabkit.report.perturbation_figures`
  (the diffeomorphisms and noise of every stability measurement),
  :mod:`~stabkit.report.theory_figures` (the constant-filter theory).
- :mod:`~stabkit.report.page`: ``page(sweep, scale, *tables)`` applies the plot style, loads a page's
  sweep once and its tables shaped (convergence, task error, training label, the paper's rows; an optional
  table no run has: empty, with a note), glues its facts (each network once: not its control runs); ``Page.downloads``, ``Page.glue_convergence``; ``demo_page`` (a page with no sweep); ``glue``,
  ``glue_claim``, ``claims_table``, ``verdict_counts``, ``example_note``; ``record_inputs``, ``record``
  (provenance).

Submodules are imported on first use (``from stabkit.report import layer_claims``).
"""
from __future__ import annotations

import importlib

__all__ = ["differences", "facts", "figures", "fits", "layer_claims", "narrative", "page", "palette",
           "perturbation_figures", "probe_figures", "robustness_claims", "selection", "spectra_figures",
           "stability_claims", "stats", "tables", "theory_claims", "theory_figures", "verdicts"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
