"""What a notebook page calls: load its tables, glue numbers and claims into the text, record provenance.

A page imports this module, the figure module of its concern and the claims module of its concern.

* :func:`page` applies the book's plot style, reads the page's sweep file once (:func:`sweep_document`),
  resolves its scale on it and loads every table from that one grid through ``results()`` (committed
  results first, else the sweep's missing runs are run), records them as the page's inputs and glues the
  standard page facts (:data:`stabkit.report.facts.FACT_KEYS` and ``scale``) for the "This run" paragraph,
  and the page's coverage of its grid and the provenance of its runs (:data:`COVERAGE_KEYS`);
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
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stabkit import sweeps
from stabkit.runs.folder import expected_tables
from stabkit.sweeps.sweepfile import load_yaml

from . import palette, selection
from .facts import FACT_KEYS, page_facts
from .tables import MarkdownText, table_downloads, training_label, with_task_error
from .verdicts import FAILS, HOLDS, UNTESTABLE, Claim

__all__ = [
    "REPO_ROOT", "ENV_PROVENANCE", "ENV_SHOW_GLUE", "GLUE_PREFIX", "progress_enabled", "glue_bundle", "show_glue",
    "glue", "repo_relative", "record_inputs", "record", "recorded", "collect_records", "Page", "COVERAGE_KEYS",
    "current_page", "page", "ROWS", "demo_page", "sweep_document", "claim_record", "glue_claim", "claims_table",
    "verdict_counts", "example_note",
]


REPO_ROOT = Path(__file__).resolve().parents[2]


#: Environment variable naming the file (JSON lines) that :func:`record_inputs` / :func:`record` append to.
ENV_PROVENANCE = "STABKIT_PROVENANCE"


#: Environment variable: 1 makes :func:`glue` print what it glues, 0 never (default: :func:`show_glue`).
ENV_SHOW_GLUE = "STABKIT_SHOW_GLUE"


GLUE_PREFIX = "application/papermill.record/"


def progress_enabled() -> bool:
    """Whether progress bars should be drawn: ``False`` when tqdm's ``TQDM_DISABLE`` is set to a true
    value (the book runner sets it for its kernels)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in {"1", "true", "yes", "on"}


def _plain(value: Any) -> Any:
    """Convert numpy / torch scalars to Python numbers so that ``{glue:text}`key:.2f``` can format them."""
    item = getattr(value, "item", None)
    shape = getattr(value, "shape", None)
    if callable(item) and shape == ():
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value


def glue_bundle(name: str, value: Any, display: bool = False) -> tuple[dict, dict]:
    """The mime bundle and metadata that myst-nb's ``glue`` displays for ``value`` under ``name``.

    Returns ``(data, metadata)``: with ``display=False`` every mime type of ``data`` is prefixed with
    ``application/papermill.record/`` (hidden on the page, available to ``{glue:...}``), and
    ``metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}``. Numpy and torch scalars are
    converted to Python numbers first (their ``repr`` would not parse as a number).
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or ":" in name:
        raise ValueError(f"name must be a non-empty string without spaces or ':', got {name!r}")
    value = _plain(value)
    try:
        from IPython.core.formatters import format_display_data

        data, metadata = format_display_data(value)
    except ImportError:  # no IPython: plain text only
        data, metadata = {"text/plain": repr(value)}, {}
    prefix = "" if display else GLUE_PREFIX
    metadata = dict(metadata)
    metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}
    return {prefix + k: v for k, v in data.items()}, metadata


#: Non-empty while :func:`glue_claim` glues a claim's parts: it prints one line for the claim instead.
_QUIET: list[str] = []


def show_glue() -> bool:
    """Whether :func:`glue` also prints what it glues (``name: value``): ``$STABKIT_SHOW_GLUE`` = 1 / 0 decides;
    unset, only in an interactive kernel (JupyterLab, ``make lab``) that no book runner records
    (``$STABKIT_PROVENANCE`` unset). JupyterLab does not render MyST's ``{glue:text}`` roles: without this, a
    page opened there shows the placeholders and never its numbers."""
    env = os.environ.get(ENV_SHOW_GLUE, "").strip().lower()
    if env:
        return env in {"1", "true", "yes", "on"}
    if os.environ.get(ENV_PROVENANCE):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"  # a Jupyter kernel


def _echo(name: str, value: Any) -> None:
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = str(value)
        print(f"{name}: {text if len(text) <= 400 else text[:400] + ' [...]'}")


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the book's text (``{glue:text}`name:.3g``` in markdown).

    Wraps ``myst_nb.glue`` when myst-nb is importable; otherwise displays the same glue-compatible mime
    bundle (see :func:`glue_bundle`). Numpy / torch scalars become Python numbers. Figures work too
    (``{glue:figure}`name```). Returns nothing, so that a glue call ending a cell prints nothing; prints
    ``name: value`` as well where :func:`show_glue` says so (JupyterLab).
    """
    plain = _plain(value)
    try:
        from myst_nb import glue as _myst_glue
    except ImportError:
        _myst_glue = None
    if _myst_glue is not None:
        glue_bundle(name, plain, display)  # validates the name
        _myst_glue(name, plain, display=display)
    else:
        data, metadata = glue_bundle(name, plain, display)
        try:
            from IPython.display import display as _display
        except ImportError:
            _display = None
        if _display is not None:
            _display(data, raw=True, metadata=metadata)
    if not display and not _QUIET and show_glue():  # a displayed value shows itself
        _echo(name, plain)
    return None


_RECORDS: list[dict] = []


def _emit(rec: dict) -> dict:
    _RECORDS.append(rec)
    target = os.environ.get(ENV_PROVENANCE)
    if target:
        with open(target, "a", encoding="utf8") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")
    return rec


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_frame(df: Any) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in df.columns]).encode())
    try:
        h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    except TypeError:  # unhashable cells (lists, dicts)
        h.update(df.to_json(orient="split", index=False, default_handler=str).encode())
    return h.hexdigest()


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it (provenance records), else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _describe(obj: Any, label: str | None) -> list[dict]:
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in {".parquet", ".json", ".csv"})
            if not files:
                raise ValueError(f"record_inputs: directory {path} holds no .parquet/.json/.csv file")
            return [r for f in files for r in _describe(f, label)]
        if not path.is_file():
            raise ValueError(f"record_inputs: path {path} does not exist")
        return [{"kind": "file", "label": label or path.name, "path": repo_relative(path),
                 "sha256": _sha256_file(path), "bytes": path.stat().st_size}]
    if isinstance(obj, pd.DataFrame):
        attrs_src = obj.attrs.get("source") if hasattr(obj, "attrs") else None
        rec = {"kind": "table", "label": label or attrs_src or "table", "sha256": _hash_frame(obj),
               "rows": int(len(obj)), "columns": int(obj.shape[1])}
        return [rec]
    if isinstance(obj, dict):
        return [r for k, v in obj.items() for r in _describe(v, f"{label}:{k}" if label else str(k))]
    if isinstance(obj, (list, tuple)):
        return [r for v in obj for r in _describe(v, label)]
    raise ValueError(f"record_inputs: expected paths, DataFrames, or lists/dicts of them, got {type(obj).__name__}")


def record_inputs(*objs: Any, label: str | None = None) -> list[dict]:
    """Register the result tables or files a notebook used; their hashes appear in the page's provenance.

    Parameters
    ----------
    *objs : str | os.PathLike | pandas.DataFrame | list | dict
        Files (hashed by content), directories (every ``.parquet``/``.json``/``.csv`` below, recursively),
        DataFrames (hashed by values and column names; ``df.attrs["source"]`` names it), or lists / dicts
        of these (dict keys become labels).
    label : str, optional
        A name shown on the page (defaults to the file name or ``"table"``).

    Returns the records (``kind``, ``label``, ``sha256``, ``path`` or ``rows``). Inside
    ``python tools/book.py run`` the records are written to the file named by ``STABKIT_PROVENANCE``;
    interactively they are only kept in memory (:func:`recorded`).
    """
    out = []
    for obj in objs:
        for rec in _describe(obj, label):
            out.append(_emit({"type": "input", **rec}))
    return out


def record(**facts: Any) -> dict:
    """Record free provenance facts (e.g. ``device="cpu"``, ``seeds=[0, 1]``, ``data="CIFAR-10 JPEG"``).

    The runner shows them in the page's provenance box; the last value of a key wins.
    """
    facts = {k: _plain(v) for k, v in facts.items()}
    return _emit({"type": "fact", "facts": facts})


def recorded() -> dict:
    """What this process recorded so far: ``{"inputs": [...], "facts": {...}}``."""
    return collect_records(_RECORDS)


def collect_records(records: Iterable[dict]) -> dict:
    """Merge provenance records (as written by :func:`record_inputs` and :func:`record`): unique inputs
    in order, facts with the last value of a key winning. Returns ``{"inputs": [...], "facts": {...}}``."""
    inputs, facts, seen = [], {}, set()
    for rec in records:
        if rec.get("type") == "input":
            key = (rec.get("label"), rec.get("sha256"), rec.get("path"))
            if key not in seen:
                seen.add(key)
                inputs.append({k: v for k, v in rec.items() if k != "type"})
        elif rec.get("type") == "fact":
            facts.update(rec.get("facts", {}))
    return {"inputs": inputs, "facts": facts}


@dataclass
class Page:
    """The tables and facts of one page (returned by :func:`page`).

    ``name``: the page (notebook) name; ``sweep``, ``scale``; ``tables``: table name -> DataFrame in the
    order asked (``summary`` always present), shaped as ``page(...)`` asked and with the rows it shows
    (``rows=``); ``all_rows``: the same tables with every row (what :meth:`downloads` writes; ``tables``
    itself when ``page(...)`` kept every row); ``facts``: :func:`stabkit.report.facts.page_facts`.
    Iterating yields the asked tables in order, so ``output, summary = page(...)`` works; ``page["output"]``
    is ``page.tables["output"]``. ``convergence``: :func:`stabkit.report.selection.convergence` of the
    runs (``page(..., convergence=True)``), else ``None``. ``notes``: for each optional table that no run
    of the page has (``page(..., optional=...)``; the page holds an empty frame for it), why, in one sentence.
    ``controls``: the run keys of the control runs (:func:`stabkit.report.selection.control_runs`), which the
    page's counts leave out.
    """

    name: str
    sweep: str
    scale: str
    tables: dict[str, Any]
    facts: dict[str, Any]
    asked: tuple[str, ...] = field(default=())
    convergence: Any = None
    all_rows: dict[str, Any] | None = None
    notes: dict[str, str] = field(default_factory=dict)
    controls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.all_rows is None:
            self.all_rows = self.tables

    def __iter__(self) -> Iterator[Any]:
        return iter([self.tables[t] for t in self.asked])

    def __getitem__(self, table: str) -> Any:
        return self.tables[table]

    def downloads(self, *tables: str) -> MarkdownText:
        """Write the page's ``tables`` (default: those asked, in order) with every row (:attr:`all_rows`:
        every probe set and ReLU convention, the raw ``D``, ``G``, ``deno`` columns, every configuration
        column) as CSV files and return the markdown list of their links
        (:func:`stabkit.report.tables.table_downloads` under the page's name); glue it as ``downloads``
        and render it with ``{glue:md}`` and ``:format: myst``. An optional table that no run has
        (:attr:`notes`) has no file: it is left out."""
        names = tables or self.asked
        unknown = [t for t in names if t not in self.all_rows]
        if unknown:
            raise ValueError(f"tables must be tables of the page ({sorted(self.all_rows)}), got {unknown}")
        return table_downloads(self.name, {t: self.all_rows[t] for t in names if t not in self.notes})

    def _convergence(self) -> Any:
        if self.convergence is None:
            raise ValueError(f"page {self.name!r} was loaded without convergence: call page(..., convergence=True)")
        return self.convergence

    def glue_convergence(self) -> Any:
        """The runs that are not well trained (:data:`stabkit.report.selection.CONVERGENCE_RULE`), for the
        page's list: glues ``convergence_rule`` (the rule in words), ``n_not_well_trained`` and ``n_conv``
        (the number of runs, as text) and returns the table of those runs
        (:func:`stabkit.report.selection.collapsed_runs`), or ``"every run is well trained"``. Needs
        ``page(..., convergence=True)``. The control runs (:attr:`controls`) are not listed: each measures a
        network that another run of the page trained (its metrics are that run's)."""
        conv = self._convergence()
        conv = conv[~conv["run"].astype(str).isin(self.controls)] if self.controls else conv
        bad = selection.collapsed_runs(conv)
        glue("convergence_rule", selection.CONVERGENCE_RULE)
        glue("n_not_well_trained", str(len(bad)))
        glue("n_conv", str(len(conv)))
        return bad if len(bad) else "every run is well trained"

    def early_fits(self, threshold: float = 0.1) -> str:
        """The page's runs that stopped at zero training loss with a test error above ``threshold``, in one
        sentence (:func:`stabkit.report.selection.early_fits` of its ``metrics`` table)."""
        if "metrics" not in self.tables:
            raise ValueError(f"page {self.name!r} has no metrics table: ask page(..., 'metrics')")
        metrics = self.tables["metrics"]
        if self.controls and "run" in metrics.columns:  # a control's metrics are its network's: listed once
            metrics = metrics[~metrics["run"].astype(str).isin(self.controls)]
        return selection.early_fits(metrics, threshold)


_CURRENT: list[Page] = []


#: Coverage and provenance facts :func:`page` glues besides :data:`stabkit.report.facts.FACT_KEYS`.
COVERAGE_KEYS = ("coverage", "n_configs", "n_grid", "missing", "sources")


def _short_list(items: Any, n: int = 5) -> str:
    items = list(items or [])
    if not items:
        return "none"
    return "; ".join(map(str, items[:n])) + (f"; and {len(items) - n} more" if len(items) > n else "")


def _coverage(summary: Any, facts: dict[str, Any]) -> dict[str, Any]:
    """The coverage facts of a page from its summary table's ``attrs["results"]``
    (:func:`stabkit.sweeps.lookup.coverage_facts`), or plain counts when the table carries none."""
    info = dict(getattr(summary, "attrs", {}).get("results") or {})
    if not info:
        n = facts.get("n_runs", len(summary))
        info = {"coverage": f"{n} runs (grid coverage unknown)", "n_configs": n, "n_grid": "n/a", "missing": [],
                "sources": "unknown"}
    return {k: info.get(k) for k in COVERAGE_KEYS} | {"coverage_source": info.get("source", "unknown"),
                                                     "sources_list": info.get("sources_list", [])}


def current_page() -> Page | None:
    """The page of the last :func:`page` call in this process (``None`` before any)."""
    return _CURRENT[-1] if _CURRENT else None


def sweep_document(sweep: str) -> dict[str, Any]:
    """The parsed sweep file of ``sweep`` (a name under ``sweeps/`` or a path), named as its file is
    (``name:`` or the file stem): what :func:`page` resolves the scale on and expands, so that a page reads
    its sweep file once (the files of its ``include:`` list are read where they are expanded)."""
    path = sweeps.sweep_path(sweep)
    doc = load_yaml(path, "sweep file") or {}
    if not isinstance(doc, Mapping):
        raise ValueError(f"sweep file {path}: the top level must be a mapping (name, base, grid, scales...), got "
                         f"{type(doc).__name__}")
    return {**doc, "name": doc.get("name") or path.stem}


#: What ``page(..., rows=...)`` keeps of the run tables: ``None`` every row; ``"paper"`` the rows measured as the
#: paper's figure shows them, ``"clean"`` / ``"corrupted"`` one probe set (:func:`stabkit.report.selection.paper_rows`).
ROWS = (None, "paper", "clean", "corrupted")


def _run_tables(loaded: dict[str, Any]) -> list[str]:
    """The run tables of a page: every table but ``summary`` and ``metrics`` (one row per run, per epoch)."""
    return [t for t in loaded if t not in ("summary", "metrics")]


def _missing_note(sw: Any, table: str, exc: BaseException) -> str:
    """Why no run of a page has the optional ``table``, in one sentence: no run of the grid measures it, or
    those that do are not committed (``results()`` found committed runs without it), have not finished, or
    failed."""
    n = sum(table in expected_tables(c.to_dict()) for c in sw.configs)
    head = f"No run of this page has the {table} table"
    if not n:
        return f"{head}: no run of the {sw.scale} grid measures it."
    runs = f"{n} run{'s' if n != 1 else ''} of the {sw.scale} grid measure{'s' if n == 1 else ''} it"
    one = n == 1
    if isinstance(exc, sweeps.RunsFailedError):
        state = "has failed" if one else "have failed"
    elif isinstance(exc, ValueError):  # committed runs of the grid, none with the table
        state = "is not committed yet" if one else "are not committed yet"
    else:
        state = "has not finished yet" if one else "have not finished yet"
    return f"{head}: {runs}, and {'it' if one else 'they'} {state}."


def page(sweep: str, scale: str = "auto", *tables: str, name: str | None = None, runs_root: str | None = None,
         results_root: str | None = None, device: str = "auto", jobs: int = 1, data_root: str | None = None,
         glue_facts: bool = True, convergence: bool = False, task_error: bool = False,
         training: bool | Sequence[str] = False, rows: str | None = None, font_scale: float = 1.0,
         optional: Sequence[str] = ()) -> Page:
    """Apply the book's plot style, load a page's run tables and glue its standard facts.

    ``sweep``: the sweep whose tables the page shows; ``scale``: ``tiny | small | cpu | gpu | paper`` or
    ``"auto"`` (default: the largest scale with committed results of the sweep's grid, else ``small``
    computed on the spot; ``resolve_scale()``; ``$STABKIT_RECOMPUTE=1`` computes ``small``);
    ``tables``: table names (``"output"``, ``"layers"``...; ``"summary"`` is always loaded for the facts).
    ``name``: the page (default: ``sweep``), used by :func:`glue_claim`. ``runs_root``, ``results_root``,
    ``device``, ``jobs``: passed to ``results()`` (empty strings mean "default", as in the
    notebooks' parameters). ``data_root``: a CIFAR-10 folder or archive, exported as ``$STABKIT_DATA``
    (worker processes inherit it; run keys do not depend on it). The sweep file is read once
    (:func:`sweep_document`): the scale is resolved on it and every table comes from its grid at that scale.

    ``convergence=True``: the asked run tables (all but ``summary`` and ``metrics``) come with the columns
    of :func:`~stabkit.report.selection.convergence` joined by run (``well_trained``, ``collapsed``...:
    :func:`~stabkit.report.selection.with_convergence`; ``metrics`` is loaded for it), and
    ``Page.convergence`` holds the per-run table; the claims leave out the runs that are not well trained.
    ``task_error=True``: the run tables with a ``test_err`` column get ``task_err``, the error on the task a
    net was trained for (:func:`~stabkit.report.tables.with_task_error`: the corrupted test set for a
    noise-trained net). ``training=True``: the run tables get the probe pages' ``training`` column
    (``"rotated"`` / ``"unrotated"``: :func:`~stabkit.report.tables.training_label`); a sequence of table
    names: those tables only. ``rows`` (one of
    :data:`ROWS`): ``"paper"`` keeps the rows of the run tables measured as the figure shows them
    (:func:`~stabkit.report.selection.paper_rows`: a noise-trained net on its own corrupted images, the true
    ReLU values), what the figures and the claims then get (the claims select the same rows themselves:
    selecting them twice changes nothing); ``Page.all_rows`` keeps every row for the downloads. The run
    tables are the asked tables but ``summary`` and ``metrics``. ``font_scale``: of the plot style
    (:func:`stabkit.report.palette.set_style`).

    ``optional``: asked run tables that only some runs write (a control such as ``"recalibrated"``, measured
    by runs of their own: ``book/methods.md``, "Channel shuffling"). Where no run of the page has one (none
    of the grid measures it, or those that do are not committed, not finished or failed), the page gets an
    empty DataFrame for it (shaped by nothing above), ``Page.notes[table]`` says why in one sentence, glued
    as ``<table>_note`` (an empty string when the table is there), and :meth:`Page.downloads` leaves it out.
    An asked table that is not optional and that no run has raises, as ``results()`` does.

    The control runs (:func:`~stabkit.report.selection.control_runs`: they measure again, as a control, a
    network that another run of the page measures) stay in the tables, but the page's facts count each
    network once: ``n_runs``, ``test_errors``, ``error_range``... come from the ``summary`` rows of the
    other runs, and :meth:`Page.glue_convergence` and :meth:`Page.early_fits` leave them out (the coverage
    facts count configurations of the grid: a control run is one).

    Records every table (but an optional one no run has) as an input of the page and glues ``scale`` (the
    resolved one) and each of
    :data:`stabkit.report.facts.FACT_KEYS` (``seeds``, ``nets``, ``epochs``, ``P``, ``ptr``, ``device``,
    ``data``, ``differences``, ``n_runs``, ``n_failed``) and of :data:`COVERAGE_KEYS`: ``coverage`` (one
    sentence: "41 of 66 configurations of the gpu grid (committed); missing: ..."), ``n_configs``,
    ``n_grid``, ``missing`` (a short list, or "none"), ``sources`` (devices, code commits and dates of
    the runs) unless ``glue_facts=False``. Returns a :class:`Page` (the coverage facts are in
    ``Page.facts`` too, ``missing`` there as a list); iterating it yields the asked tables in order.
    """
    if not isinstance(sweep, str) or not sweep:
        raise ValueError(f"sweep must be a sweep name such as 'fig1_noise_corrupted_cifar', got {sweep!r}")
    bad = [t for t in tables if not isinstance(t, str) or not t]
    if bad:
        raise ValueError(f"tables must be table names such as 'output' or 'layers', got {bad!r}")
    for arg, v in (("convergence", convergence), ("task_error", task_error)):
        if not isinstance(v, bool):
            raise TypeError(f"{arg} must be True or False, got {v!r}")
    if not isinstance(training, bool) and (isinstance(training, str) or not isinstance(training, Sequence)
                                           or not set(training) <= set(tables) - {"summary", "metrics"}):
        raise TypeError(f"training must be True, False or names of the asked run tables "
                        f"{[t for t in tables if t not in ('summary', 'metrics')]}, got {training!r}")
    if rows not in ROWS:
        raise ValueError(f"rows must be one of {ROWS}, got {rows!r}")
    run_asked = [t for t in tables if t not in ("summary", "metrics")]
    if isinstance(optional, str) or not isinstance(optional, Sequence) or not set(optional) <= set(run_asked):
        raise ValueError(f"optional must be names of the asked run tables {run_asked}, got {optional!r}")
    palette.set_style(font_scale)
    if data_root:
        os.environ["STABKIT_DATA"] = str(data_root)
    spec = sweep_document(sweep)  # the one read of the sweep file: scale and tables come from it
    scale = sweeps.resolve_scale(spec, scale, results_root or None)
    sw = replace(sweeps.load_sweep(spec, scale), path=sweeps.sweep_path(sweep))
    loaded: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for t in dict.fromkeys([*tables, "summary", *(["metrics"] if convergence else [])]):
        try:
            loaded[t] = sweeps.results(sw, sw.scale, t, runs_root=runs_root or None,
                                     results_root=results_root or None, device=device, jobs=jobs,
                                     progress=progress_enabled())
        except (ValueError, RuntimeError) as exc:  # sweeps.RunsFailedError is a RuntimeError
            if t not in optional:
                raise
            loaded[t], notes[t] = pd.DataFrame(), _missing_note(sw, t, exc)
    record_inputs({t: df for t, df in loaded.items() if t not in notes})  # a table no run has is no input
    summary = loaded["summary"]
    controls = selection.control_runs(summary)
    # the control runs measure again networks that other runs of the page measure: the facts count each
    # network once (n_runs, test errors, error range), from the summary rows of the other runs
    counted = summary[~summary["run"].astype(str).isin(controls)] if controls else summary
    facts = page_facts(counted, spec, sw.scale)
    facts.update(_coverage(summary, facts))
    if glue_facts:
        glue("scale", sw.scale)
        for key in FACT_KEYS:
            glue(key, facts[key])
        for key in COVERAGE_KEYS:
            glue(key, _short_list(facts[key]) if key == "missing" else facts[key])
        for t in optional:
            glue(f"{t}_note", notes.get(t, ""))
    record(scale=sw.scale, device=facts["device"], seeds=facts["seeds"], data=facts["data"],
           coverage=facts["coverage"], sources=facts["sources"])
    conv = None
    # after record_inputs (the provenance hashes the tables as loaded); a missing optional table stays empty
    run_tables = [t for t in _run_tables(loaded) if t not in notes]
    if convergence:
        conv = selection.convergence(loaded["summary"], loaded["metrics"])
        loaded.update({t: selection.with_convergence(loaded[t], conv) for t in run_tables})
    if task_error:
        loaded.update({t: with_task_error(loaded[t]) for t in run_tables if "test_err" in loaded[t].columns})
    labelled = run_tables if training is True else list(training or ())
    loaded.update({t: loaded[t].assign(training=training_label(loaded[t])) for t in labelled})
    shown = loaded if rows is None else {t: selection.paper_rows(df, rows) if t in run_tables else df
                                         for t, df in loaded.items()}
    pg = Page(name or sweep, sweep, sw.scale, shown, facts, tuple(tables), conv, loaded, notes, tuple(controls))
    _CURRENT.append(pg)
    return pg


def demo_page(name: str, scale: str, settings: Mapping[str, Any], *, font_scale: float = 1.0) -> tuple[str, Any]:
    """Start a demonstration page: one that computes what it shows (no sweep, nothing committed).

    ``scale``: a key of ``settings`` (the page's settings per scale), or ``"auto"``, which is ``small``.
    Applies the book's plot style (``font_scale``: :func:`stabkit.report.palette.set_style`), glues
    ``scale`` and makes the page current (:func:`current_page`: :func:`glue_claim` takes the page's name
    and scale from it). Returns ``(scale, settings[scale])``."""
    if not isinstance(name, str) or not _NAME_OK.match(name):
        raise ValueError(f"name must be a page name such as 'theory_constant_filters', got {name!r}")
    resolved = "small" if scale == "auto" else scale
    if resolved not in settings:
        raise ValueError(f"scale must be one of {sorted(settings)}, got {resolved!r}")
    palette.set_style(font_scale)
    glue("scale", resolved)
    _CURRENT.append(Page(name, "", resolved, {}, {}))
    return resolved, settings[resolved]


_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]+$")


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def claim_record(prefix: str, claim: Any, *, page: str | None = None, figure: str | None = None,
                 scale: str | None = None, condition: str | None = None) -> dict[str, Any]:
    """The dashboard record of a claim: ``id``, ``key`` (``prefix``), ``page``, ``figure``, ``scale``,
    ``statement``, ``value``, ``ci_low``, ``ci_high``, ``threshold``, ``verdict``, ``rule`` (``None`` for
    a missing number), and from the claim's details where it has them: ``n`` (networks), ``n_units``
    (architectures), ``reason``, ``unit``, ``source`` (``"paper"``, ``"related"`` or ``"this project"``),
    ``paper_value``, ``against`` (architectures that go the other way). ``page`` and ``scale`` default to
    those of the last :func:`page` call.

    ``condition`` (e.g. ``"training noise std 30"``) is appended to the statement in parentheses: a page
    that checks one claim on several subsets (noise levels, tasks, training-set sizes) gives each row of
    the dashboard a statement of its own."""
    if condition is not None and (not isinstance(condition, str) or not condition.strip()):
        raise ValueError(f"condition must be a non-empty string or None, got {condition!r}")
    current = current_page()
    rec = claim.to_record()
    details = rec.pop("details", None) or {}
    # what the dashboard shows beside the value: the sample, the reason of an untestable verdict, the
    # per-architecture verdicts, where the statement comes from and the unit of the value
    for k in ("n", "n_units", "reason", "unit", "source", "paper_value", "against"):
        if details.get(k) not in (None, ""):
            rec[k] = details[k]
    if condition:
        rec["statement"] = f"{rec.get('statement') or rec['id']} ({condition.strip()})"
    pg = page or (current.name if current else None)
    return {"id": f"{pg}:{prefix}" if pg else prefix, "key": prefix, "page": pg, "figure": figure or pg,
            "scale": scale or (current.scale if current else None), **{k: v for k, v in rec.items() if k != "id"},
            "claim": rec["id"]}


def glue_claim(prefix: str, claim: Any, *, page: str | None = None, figure: str | None = None,
               scale: str | None = None, condition: str | None = None) -> dict[str, Any]:
    """Glue a :class:`~stabkit.report.verdicts.Claim` for the page text and the claims dashboard.

    Glued names: ``<prefix>_value``, ``<prefix>_verdict``, ``<prefix>_text`` (one sentence),
    ``<prefix>_rule``, ``<prefix>_threshold``, ``<prefix>_ci`` (``"[low, high]"`` or ``"not computed"``),
    ``<prefix>_why`` (``" (<reason>)"`` when the details give a ``reason``, else empty: it follows the
    verdict in the text), ``<prefix>_<key>`` for every detail whose key is a plain name, and ``<prefix>_claim``: the JSON text
    of :func:`claim_record` (hidden; ``display=False``), whose statement carries ``condition`` when given.
    Returns that record.
    """
    if not isinstance(prefix, str) or not _NAME_OK.match(prefix):
        raise ValueError(f"prefix must be a name of letters, digits, '_', '.' or '-', got {prefix!r}")
    if not all(hasattr(claim, a) for a in ("value", "verdict", "rule", "details", "to_record")):
        raise TypeError(f"claim must be a stabkit.report.verdicts.Claim, got {type(claim).__name__}")
    rec = claim_record(prefix, claim, page=page, figure=figure, scale=scale, condition=condition)
    lo, hi = claim.ci_low, claim.ci_high
    ci = f"[{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) and math.isfinite(hi) else "not computed"
    _QUIET.append(prefix)
    try:
        glue(f"{prefix}_value", claim.value)
        glue(f"{prefix}_verdict", claim.verdict)
        glue(f"{prefix}_text", claim.text)
        glue(f"{prefix}_rule", claim.rule)
        glue(f"{prefix}_threshold", claim.threshold)
        glue(f"{prefix}_ci", ci)
        for key, v in claim.details.items():
            if isinstance(key, str) and key.isidentifier():
                glue(f"{prefix}_{key}", v)
        reason = claim.details.get("reason")
        glue(f"{prefix}_why", f" ({reason})" if reason else "")
        glue(f"{prefix}_claim", json.dumps({k: _finite_or_none(v) for k, v in rec.items()}, default=str))
    finally:
        _QUIET.pop()
    if show_glue():  # one line per claim, not one per glued name
        _echo(prefix, f"{claim.text}; 95 % interval {ci}")
    return rec


def claims_table(items: Sequence[Claim] | Mapping[str, Claim]) -> pd.DataFrame:
    """A page's claims as a table to display: one row per claim, ``claim``, ``value`` (rounded to 3
    decimals; an en dash when missing), ``rule``, ``verdict``.

    ``items``: claims (named by ``Claim.name``) or a mapping ``label -> Claim`` (named by the label).
    """
    pairs = items.items() if isinstance(items, Mapping) else ((c.name, c) for c in items)
    out = []
    for label, c in pairs:
        if not isinstance(c, Claim):
            raise ValueError(f"items must hold Claim objects, got {type(c).__name__} for {label!r}")
        value = float(c.value) if isinstance(c.value, (int, float, np.floating)) else math.nan
        # a missing value reads as a dash, never "NaN" (make check-book fails on NaN in a table)
        out.append({"claim": label, "value": round(value, 3) if math.isfinite(value) else "\u2013",
                    "rule": c.rule, "verdict": c.verdict})
    return pd.DataFrame(out, columns=["claim", "value", "rule", "verdict"])


def verdict_counts(claims: Sequence[Claim] | Mapping[str, Claim]) -> str:
    """The verdicts of ``claims`` counted, in words: ``"2 hold, 1 does not hold, 1 cannot be tested at
    this scale"`` (verdicts with no claim left out; ``"no claim"`` for none)."""
    items = list(claims.values()) if isinstance(claims, Mapping) else list(claims)
    counts = {v: sum(c.verdict == v for c in items) for v in (HOLDS, FAILS, UNTESTABLE)}
    words = {HOLDS: ("holds", "hold"), FAILS: ("does not hold", "do not hold"),
             UNTESTABLE: ("cannot be tested at this scale", "cannot be tested at this scale")}
    parts = [f"{n} {words[v][n != 1]}" for v, n in counts.items() if n]
    return ", ".join(parts) if parts else "no claim"


def example_note(generated: bool, real: str, instead: str) -> MarkdownText:
    """Markdown about a page's example images (render it with a ``{glue:md}`` directive and ``:format: myst``).

    ``real``: what the examples show when they are CIFAR-10 test images. When they are ``generated``
    (CIFAR-10 not found, :data:`stabkit.robustness.GENERATED_EXAMPLES`), a visible warning that they are not
    CIFAR-10 and how to provide the data, then ``instead``: text that claims only what a generated pattern
    can show (no object to recognise, no class)."""
    if not isinstance(generated, bool):
        raise TypeError(f"generated must be True or False, got {generated!r}")
    if not generated:
        return MarkdownText(real)  # text/markdown: what a {glue:md} directive renders
    return MarkdownText("```{warning}\nThese examples are **generated patterns, not CIFAR-10 images**: CIFAR-10 was not "
            "found and nothing is downloaded. They show what the transformation does to the pixels, not what "
            "it does to a photograph. To show CIFAR-10 test images, set `STABKIT_DATA` to a copy (torchvision's "
            "`cifar-10-batches-py` or a class-folder archive) and rebuild the page.\n```\n\n" + instead)
