"""What a notebook page calls: load its tables, glue numbers and claims into the text, record provenance.

A page imports this package, the figure module of its concern and the claims module of its concern.

* :func:`page` applies the book's plot style, reads the page's sweep file once (:func:`sweep_document`),
  resolves its scale on it and loads every table from that one grid through ``results()`` (committed
  results first, else the sweep's missing runs are run), records them as the page's inputs and glues the
  standard page facts (:data:`stabkit.report.facts.FACT_KEYS` and ``scale``) for the "This run" paragraph,
  and the page's coverage of its grid and the provenance of its runs (:data:`~stabkit.report.page.loading.COVERAGE_KEYS`);
  ``scale="auto"`` shows the largest committed scale. It hands the notebook its tables shaped:
  ``convergence=True`` joins which runs are well trained, ``task_error=True`` adds the error of the task a
  net was trained for, ``training=True`` the probe pages' training label, ``rows="paper"`` keeps the rows
  measured as the figure shows them (every row stays in ``Page.all_rows``, what :meth:`Page.downloads`
  writes). :meth:`Page.glue_convergence` lists the runs that are not well trained. A table that only some
  runs write (a control, ``optional=``) is an empty frame where no run has it, with a note that says why;
  the control runs (:func:`~stabkit.report.selection.control_runs`) are left out of the page's counts.
* :func:`demo_page` starts a demonstration page (one that computes what it shows, from no sweep).
* :func:`claims_table` and :func:`verdict_counts` show a page's claims; :func:`example_note` is the note
  under a page's example images.
* :func:`glue` stores a number, a string or a figure for the text (``{glue:text}`name:.3g``` in markdown).
* :func:`glue_claim` glues a :class:`~stabkit.report.verdicts.Claim` under standard names and as one JSON
  record ``<prefix>_claim`` (hidden), which the book's claims dashboard collects from every executed page.
* :func:`record_inputs` and :func:`record` report the tables a page read and free facts (device, seeds)
  to the book runner (``tools/book.py``), which writes them into the page's provenance box.

Progress bars follow tqdm's own switch: the book runner sets ``TQDM_DISABLE=1`` for its kernels.

The names below live in one submodule per concept, each importing only those above it:

- :mod:`~stabkit.report.page.records`: provenance records (``record_inputs``, ``record``, ``recorded``,
  ``collect_records``, ``repo_relative``, ``ENV_PROVENANCE``);
- :mod:`~stabkit.report.page.glued`: ``glue``, ``glue_bundle``, ``show_glue``;
- :mod:`~stabkit.report.page.loading`: ``Page``, ``page``, ``demo_page``, ``current_page``,
  ``sweep_document``, the coverage facts;
- :mod:`~stabkit.report.page.claim_display`: ``claim_record``, ``glue_claim``, ``claims_table``,
  ``verdict_counts``, ``example_note``.
"""
from __future__ import annotations

from .claim_display import claim_record, claims_table, example_note, glue_claim, verdict_counts
from .glued import ENV_SHOW_GLUE, GLUE_PREFIX, glue, glue_bundle, show_glue
from .loading import COVERAGE_KEYS, ROWS, Page, current_page, demo_page, page, progress_enabled, sweep_document
from .records import ENV_PROVENANCE, REPO_ROOT, collect_records, record, record_inputs, recorded, repo_relative

__all__ = [
    "REPO_ROOT", "ENV_PROVENANCE", "ENV_SHOW_GLUE", "GLUE_PREFIX", "progress_enabled", "glue_bundle", "show_glue",
    "glue", "repo_relative", "record_inputs", "record", "recorded", "collect_records", "Page", "COVERAGE_KEYS",
    "current_page", "page", "ROWS", "demo_page", "sweep_document", "claim_record", "glue_claim", "claims_table",
    "verdict_counts", "example_note",
]
