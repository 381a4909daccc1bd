"""Loading a page: :func:`~stabkit.report.page.page` reads the page's sweep file once
(:func:`~stabkit.report.page.sweep_document`), loads its tables shaped for the page into a
:class:`~stabkit.report.page.Page`, records them as its inputs and glues its facts and its coverage of the
grid (:data:`~stabkit.report.page.loading.COVERAGE_KEYS`); :func:`~stabkit.report.page.demo_page` starts a
page that computes what it shows; :func:`~stabkit.report.page.current_page` is the last one started.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from stabkit import sweeps
from stabkit.runs.folder import expected_tables
from stabkit.sweeps.sweepfile import load_yaml

from .. import palette, selection
from ..facts import FACT_KEYS, page_facts
from ..tables import MarkdownText, table_downloads, training_label, training_runs, with_task_error
from .glued import glue
from .records import record, record_inputs


def progress_enabled() -> bool:
    """Whether progress bars should be drawn: ``False`` when tqdm's ``TQDM_DISABLE`` is set to a true
    value (the book runner sets it for its kernels)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in {"1", "true", "yes", "on"}


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
    page's counts leave out. ``results_root``: the results store the page read (None: the default).
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
    results_root: str | None = None

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

    def training_runs(self) -> pd.DataFrame:
        """One row per network the page shows, indexed by net (:func:`stabkit.report.tables.training_runs`:
        width, noise, epochs, optimizer, precision, best / last test error, training time), the control runs
        left out (their networks are other runs')."""
        return training_runs(self.tables["summary"], exclude=self.controls).set_index("net")

    def training_history(self) -> pd.DataFrame:
        """:func:`stabkit.report.tables.training_runs` of every run committed for the page's sweep at its
        scale, the runs of earlier grids included (the results store keeps them), control runs left out:
        what each width and length of training bought on that scale's machines
        (:func:`stabkit.report.figures.training_cost`). Where nothing is committed at that scale (a page that
        computed its runs), the page's own networks (:meth:`training_runs`)."""
        try:
            summary = sweeps.load(self.sweep, self.scale, "summary", self.results_root)
        except ValueError:  # a damaged store says so on the page's other tables; here: the page's runs
            summary = pd.DataFrame()
        if summary.empty:
            summary = self.tables["summary"]
        return training_runs(summary, exclude=selection.control_runs(summary))

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


#: Coverage and provenance facts :func:`~stabkit.report.page.page` glues besides :data:`stabkit.report.facts.FACT_KEYS`.
COVERAGE_KEYS = ("coverage", "n_configs", "n_grid", "missing", "sources")


def _short_list(items: Any, n: int = 5) -> str:
    items = list(items or [])
    if not items:
        return "none"
    return "; ".join(map(str, items[:n])) + (f"; and {len(items) - n} more" if len(items) > n else "")


def _without_runs(df: pd.DataFrame, runs: Mapping[str, str]) -> pd.DataFrame:
    """``df`` less the rows of ``runs`` (a table without a ``run`` column as it is; ``attrs`` kept)."""
    if "run" not in df.columns:
        return df
    out = df[~df["run"].astype(str).isin(list(runs))].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out


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
    :data:`~stabkit.report.page.loading.ROWS`): ``"paper"`` keeps the rows of the run tables measured as the figure shows them
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

    A run whose network the grid also holds wider or trained for more epochs
    (:func:`~stabkit.report.selection.superseded_runs`) leaves every table of the page: the widest, then
    longest, training stands for its network. ``Page.facts["superseded"]`` maps each to its successor and the
    coverage sentence ends with which runs are not shown.

    Records every table (but an optional one no run has) as an input of the page and glues ``scale`` (the
    resolved one) and each of
    :data:`stabkit.report.facts.FACT_KEYS` (``seeds``, ``nets``, ``epochs``, ``P``, ``ptr``, ``device``,
    ``data``, ``differences``, ``n_runs``, ``n_failed``) and of :data:`~stabkit.report.page.loading.COVERAGE_KEYS`: ``coverage`` (one
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
    # a network trained wider or longer stands for its cheaper runs (one network is not counted twice); the
    # coverage still counts both (configurations of the grid) and says which runs are not shown
    superseded = selection.superseded_runs(summary)
    superseded_note = selection.superseded_text(summary, superseded)
    if superseded:
        loaded = {t: _without_runs(df, superseded) for t, df in loaded.items()}
    controls = selection.control_runs(loaded["summary"])
    # the control runs measure again networks that other runs of the page measure: the facts count each
    # network once (n_runs, test errors, error range), from the summary rows of the other runs
    shown_summary = loaded["summary"]
    counted = shown_summary[~shown_summary["run"].astype(str).isin(controls)] if controls else shown_summary
    facts = page_facts(counted, spec, sw.scale)
    facts.update(_coverage(summary, facts))
    facts["superseded"] = superseded
    if superseded_note:
        facts["coverage"] = f"{facts['coverage']}; {superseded_note}"
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
    pg = Page(name or sweep, sweep, sw.scale, shown, facts, tuple(tables), conv, loaded, notes, tuple(controls),
              results_root or None)
    _CURRENT.append(pg)
    return pg


def demo_page(name: str, scale: str, settings: Mapping[str, Any], *, font_scale: float = 1.0) -> tuple[str, Any]:
    """Start a demonstration page: one that computes what it shows (no sweep, nothing committed).

    ``scale``: a key of ``settings`` (the page's settings per scale), or ``"auto"``, which is ``small``.
    Applies the book's plot style (``font_scale``: :func:`stabkit.report.palette.set_style`), glues
    ``scale`` and makes the page current (:func:`current_page`: :func:`glue_claim` takes the page's name
    and scale from it). Returns ``(scale, settings[scale])``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"name must be a page name such as 'theory_constant_filters', got {name!r}")
    resolved = "small" if scale == "auto" else scale
    if resolved not in settings:
        raise ValueError(f"scale must be one of {sorted(settings)}, got {resolved!r}")
    palette.set_style(font_scale)
    glue("scale", resolved)
    _CURRENT.append(Page(name, "", resolved, {}, {}))
    return resolved, settings[resolved]


#: What a page name (:func:`stabkit.report.page.demo_page`) and a claim prefix
#: (:func:`stabkit.report.page.glue_claim`) may be: letters, digits, ``_``, ``.`` and ``-``.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")

