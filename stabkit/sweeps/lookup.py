"""The notebooks' entry point: ``results()`` loads a sweep's table at a scale, committed results first
(:mod:`stabkit.sweeps.resultstore`), else runs the sweep; ``scale="auto"`` is the largest scale with committed
runs of the sweep's grid (``SCALE_ORDER``), else ``small`` computed on the
spot; ``coverage_facts()`` says how much of the grid a table covers and where its runs came from.
``STABKIT_RECOMPUTE=1`` (``RECOMPUTE_ENV``) ignores the store: everything is computed, ``auto``
meaning ``small``.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs.config import DERIVED_FIELDS, MEASUREMENT_FIELDS
from ..runs.folder import error_line, run_state
from ..runs.paths import default_runs_root
from .collection import collect
from .executors import failure_summary
from .executors import sweep as run_sweep
from .resultstore import (KEY, SCALE_ORDER, MissingTableError, committed_keys, committed_runs, committed_scales, load,
                          store_dir)
from .sweepfile import Sweep, as_sweep, load_sweep, load_yaml, sweep_path, sweep_scales

__all__ = ["RECOMPUTE_ENV", "RunsFailedError", "recompute_requested", "scale_choice", "resolve_scale",
           "coverage_facts", "results"]

#: Environment variable: a true value (1, true, yes, on) ignores committed results (``make book``
#: recomputes every page at ``small``).
RECOMPUTE_ENV = "STABKIT_RECOMPUTE"


class RunsFailedError(RuntimeError):
    """The runs a table needs did not finish; the message lists them with their own errors (e.g. the data
    set not found: the folders searched and how to provide the data)."""


def recompute_requested() -> bool:
    """Whether ``$STABKIT_RECOMPUTE`` asks to ignore committed results."""
    return os.environ.get(RECOMPUTE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _sweep_name(spec: str | Path | Mapping | Sweep) -> str:
    if isinstance(spec, Sweep):
        return spec.name
    if isinstance(spec, Mapping):
        return str(spec.get("name") or "sweep")
    path = sweep_path(spec)
    doc = load_yaml(path, "sweep file") or {}
    return str(doc.get("name") or path.stem) if isinstance(doc, Mapping) else path.stem


def _available(name: str, results_root: str | Path | None) -> dict[str, list[str]]:
    """Committed run keys of sweep ``name`` at any scale -> the scales that hold them (largest first). A key
    hashes the whole configuration, so a run committed at one scale is the same run in every grid listing it."""
    where: dict[str, list[str]] = {}
    for sc in committed_scales(name, results_root):
        for k in committed_keys(name, sc, results_root):
            where.setdefault(k, []).append(sc)
    return where


def scale_choice(sweep: str | Path | Mapping | Sweep, results_root: str | Path | None = None) -> dict[str, Any]:
    """The scale ``"auto"`` shows and why: ``{"scale", "reason", "covered"}`` (``covered``: scale -> number of
    its grid's configurations committed at any scale of the sweep).

    Going from the smallest scale up, a larger scale replaces the one chosen so far only when it covers at
    least as many configurations, or as many networks (architectures: what a page compares) with at least
    half as many configurations; so a single committed run of a larger grid does not replace a well-covered
    smaller one, while a larger grid that trains as many architectures better does (the ``cpu`` CIFAR-10
    grid against the ``small`` one, whose nets are partly trained); ``"small"`` (computed on the spot) when
    nothing of any grid is committed."""
    name = _sweep_name(sweep)
    where = _available(name, results_root)
    if not where:
        return {"scale": "small", "reason": "nothing committed: computed at the small scale", "covered": {}}
    covered: dict[str, int] = {}
    nets: dict[str, set[str]] = {}
    for sc in reversed(SCALE_ORDER):  # smallest first
        try:
            cfgs = load_sweep(sweep, sc).configs
        except ValueError:  # the sweep file does not define this scale
            continue
        have = [c for c in cfgs if c.key in where]
        if have:
            covered[sc], nets[sc] = len(have), {c.net for c in have}
    if not covered:
        return {"scale": "small", "reason": "no committed run is in any of the sweep's grids: computed at the "
                                            "small scale", "covered": {}}
    chosen, passed = None, []
    for sc in covered:
        if chosen is None or covered[sc] >= covered[chosen] or (
                len(nets[sc]) >= len(nets[chosen]) and 2 * covered[sc] >= covered[chosen]):
            chosen = sc
        else:
            passed.append(sc)
    reason = f"the {chosen} grid: {covered[chosen]} committed configuration(s)"
    if passed:
        reason += "; not " + ", ".join(
            f"{sc} ({covered[sc]} configuration(s), {', '.join(sorted(nets[chosen] - nets[sc])) or 'fewer'} "
            f"missing there)" if nets[chosen] - nets[sc] else f"{sc} ({covered[sc]} configuration(s))"
            for sc in passed)
    return {"scale": chosen, "reason": reason, "covered": covered}


def resolve_scale(sweep: str | Path | Mapping | Sweep, scale: str = "auto", results_root: str | Path | None = None) -> str:
    """``scale`` itself unless ``"auto"``: then ``scale_choice()`` (the largest scale whose grid's committed
    configurations, at any scale, cover at least what a smaller scale shows), else ``"small"`` (always
    ``"small"`` when ``$STABKIT_RECOMPUTE`` is set)."""
    if scale != "auto":
        return scale
    if isinstance(sweep, Sweep):
        return sweep.scale
    if recompute_requested():
        return "small"
    return scale_choice(sweep, results_root)["scale"]


def _describe(configs: list, keys: list[str]) -> list[str]:
    """Short names of the configurations ``keys``: the fields that vary across ``configs``."""
    dicts = {c.key: c.to_dict() for c in configs}
    val = lambda d, f: json.dumps(d.get(f), sort_keys=True, default=str)  # noqa: E731
    vary = [f for f in next(iter(dicts.values()), {}) if len({val(d, f) for d in dicts.values()}) > 1]
    vary.sort(key=lambda f: (f != "net", f in DERIVED_FIELDS, f))
    kept: list[str] = []
    for f in vary:  # a field the kept ones determine (data_seed = seed) adds nothing
        seen: dict[tuple, set] = {}
        for d in dicts.values():
            seen.setdefault(tuple(val(d, g) for g in kept), set()).add(val(d, f))
        if any(len(v) > 1 for v in seen.values()):
            kept.append(f)
    # what is measured names a run only where it differs from the usual (a control that measures the same
    # network again): "VGG11bn seed 3 (measures recalibrated)", not the measure list of every run
    measured = [f for f in kept if f in MEASUREMENT_FIELDS]
    vary = [f for f in kept if f not in MEASUREMENT_FIELDS]
    usual = {f: max({val(d, f) for d in dicts.values()}, key=[val(d, f) for d in dicts.values()].count)
             for f in measured}
    out = []
    for k in keys:
        d = dicts.get(k, {})
        parts = [str(d[f]) if f == "net" else f"{f} {json.dumps(d[f], default=str)}" for f in vary if f in d]
        odd = []
        for f in measured:
            if f in d and val(d, f) != usual[f]:
                v = ", ".join(map(str, d[f])) if isinstance(d[f], (list, tuple)) else str(d[f])
                odd.append(f"measures {v}" if f == "measure" else f"{f} {v}")
        out.append((" ".join(parts) or k) + (f" ({'; '.join(odd)})" if odd else ""))
    return out


def _sources_text(rows: list[Mapping]) -> tuple[str, list[dict]]:
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        c = r.get("code_commit")
        code = "unknown code" if not c else f"code {str(c)[:7]}{' + local changes' if r.get('code_dirty') else ''}"
        groups.setdefault((str(r.get("device_name") or r.get("device") or "unknown device"), code), []).append(r)
    out, parts = [], []
    for (dev, code), rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        dates = sorted(str(r["finished"])[:10] for r in rs if r.get("finished"))
        span = "" if not dates else dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
        out.append({"device": dev, "code": code, "n_runs": len(rs), "dates": span,
                    "hosts": sorted({str(r.get("host")) for r in rs if r.get("host")})})
        parts.append(f"{len(rs)} run{'s' * (len(rs) != 1)} on {dev} ({code}{', ' + span if span else ''})")
    return ("; ".join(parts) or "none"), out


def paper_grid_coverage(sw: Sweep, done: list[str]) -> dict[str, Any]:
    """How many cells of the paper's grid the finished runs ``done`` of ``sw`` stand for: a cell is one
    combination of the fields that vary over the sweep's ``paper`` scale (network, seed, noise, training-set
    size, ...; what is measured is no cell), whatever the protocol it was run with (the page's "different
    from the paper" table says how it differs). ``{"paper_cells": n here, "n_paper_cells": n in the paper's
    grid, "cell_fields": [...]}``; empty when the sweep has no ``paper`` scale."""
    try:
        if "paper" not in sweep_scales(sw.path if sw.path is not None else sw.name):
            return {}
        paper = sw if sw.scale == "paper" else load_sweep(sw.path if sw.path is not None else sw.name, "paper")
    except (OSError, ValueError):  # a sweep given as a mapping, or a file that moved: no paper grid to count
        return {}
    rows = [c.to_dict() for c in paper.configs]
    fields = [f for f in rows[0] if f not in MEASUREMENT_FIELDS
              and len({json.dumps(r.get(f), sort_keys=True) for r in rows}) > 1]

    def cell(d: Mapping) -> tuple:
        return tuple(json.dumps(d.get(f), sort_keys=True) for f in fields)

    n = len({cell(r) for r in rows})
    # a field the others decide (data_seed by seed, the optimizer by the network) names no cell of its own
    for f in sorted(fields, key=lambda f: (f not in DERIVED_FIELDS, -fields.index(f))):
        rest = [g for g in fields if g != f]
        if len({tuple(json.dumps(r.get(g), sort_keys=True) for g in rest) for r in rows}) == n:
            fields = rest
    cells = {cell(r) for r in rows}
    have = set(done)
    here = {cell(c.to_dict()) for c in sw.configs if c.key in have} & cells
    return {"paper_cells": len(here), "n_paper_cells": len(cells), "cell_fields": fields}


def coverage_facts(sw: Sweep, done: list[str], source: str, rows: list[Mapping], notes: Mapping[str, str] | None = None,
                   outside: int = 0, borrowed: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """The coverage and provenance facts of a table of ``sw``: ``scale``, ``source`` (committed |
    computed), ``n_configs`` (of the grid, available), ``n_grid``, ``missing`` (short names, with the
    reason when known), ``missing_keys``, ``coverage`` (one sentence), ``sources`` (devices, code and
    dates, one sentence) and ``sources_list``, ``outside_grid`` (committed runs not in the grid)."""
    keys, have = sw.keys, set(done)
    missing_keys = [k for k in keys if k not in have]
    names = _describe(sw.configs, missing_keys)
    missing = [f"{n} ({notes[k]})" if notes and notes.get(k) else n for n, k in zip(names, missing_keys)]
    n, total = len(keys) - len(missing_keys), len(keys)
    how = "committed" if source == "committed" else "computed on this machine"
    if not missing_keys:
        sentence = f"all {total} configurations of the {sw.scale} grid ({how})"
    else:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        sentence = f"{n} of {total} configurations of the {sw.scale} grid ({how}); missing: {shown}"
    if borrowed:  # say where they come from: the page shows runs committed under another scale's name
        sentence += " (" + "; ".join(f"{len(ks)} of them committed at the {sc} scale, same configuration"
                                     for sc, ks in borrowed.items()) + ")"
    paper = paper_grid_coverage(sw, done)
    if paper and sw.scale != "paper":  # the paper's grid first: a reduced scale covers part of it
        sentence = (f"{paper['paper_cells']} of the paper's {paper['n_paper_cells']} configurations "
                    f"({', '.join(paper['cell_fields'])}), at this scale's protocol; " + sentence)
    text, groups = _sources_text(rows)
    return {"scale": sw.scale, "source": source, "n_configs": n, "n_grid": total, "missing": missing, **paper,
            "missing_keys": missing_keys, "coverage": sentence, "sources": text, "sources_list": groups,
            "outside_grid": outside, "complete": not missing_keys,
            "borrowed": {sc: list(ks) for sc, ks in (borrowed or {}).items()}}


def results(sweep: str | Path | Mapping | Sweep, scale: str = "small", table: str = "output", *,
            runs_root: str | Path | None = None, results_root: str | Path | None = None,
            run_missing: bool = True, device: str = "auto", jobs: int = 1, progress: bool = True) -> pd.DataFrame:
    """The notebooks' entry point: the tidy ``table`` of ``sweep`` at ``scale`` (``"auto"``: see
    :func:`resolve_scale`).

    1. The committed table (``load()``) restricted to the sweep's grid, if some of the grid
       is committed (not when ``$STABKIT_RECOMPUTE`` is set); else
    2. run the sweep's missing and failed runs (if ``run_missing``) under ``runs_root`` and collect them.

    ``df.attrs["results"]`` holds ``coverage_facts()``; when the table covers only part of the grid
    (runs not committed, failed or not finished) a warning says which. ``RuntimeError`` when nothing is
    available; :class:`RunsFailedError` (a ``RuntimeError``) when runs failed, listing them with their errors.
    """
    sc = resolve_scale(sweep, scale, results_root)
    sw = as_sweep(sweep, sc)
    grid = set(sw.keys)
    if not recompute_requested():
        idx = committed_runs(sw.name, sw.scale, results_root)
        rows = [r for r in idx.to_dict("records") if r["key"] in grid]
        # the grid's runs committed at another scale of the sweep (same key: same configuration)
        borrowed: dict[str, list[str]] = {}
        for sc in committed_scales(sw.name, results_root):
            if sc == sw.scale:
                continue
            have = {r["key"] for r in rows}
            extra = [r for r in committed_runs(sw.name, sc, results_root).to_dict("records")
                     if r["key"] in grid and r["key"] not in have]
            if extra:
                borrowed[sc] = [r["key"] for r in extra]
                rows += extra
        if rows:
            # a store without the table (its runs do not measure it) adds nothing; only when no store of
            # the grid's runs has it does the error (which lists the tables they have) reach the caller
            frames, missing = [], []
            for sc, ks in [(sw.scale, None)] * bool(len(idx)) + list(borrowed.items()):
                try:
                    d = load(sw.name, sc, table, results_root)
                except MissingTableError as err:
                    missing.append(err)
                    continue
                frames.append(d[d[KEY].isin(ks)] if ks is not None and len(d) else d)
            frames = [f for f in frames if len(f)]
            if not frames and missing:
                raise missing[0]
            df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (frames[0] if frames else pd.DataFrame())
            df = df[df[KEY].isin(grid)].reset_index(drop=True) if len(df) else df
            info = coverage_facts(sw, [r["key"] for r in rows], "committed", rows, outside=len(idx) - sum(
                r["key"] in grid for r in idx.to_dict("records")), borrowed=borrowed)
            return _finish(df, info, sw)
        if len(idx):
            warnings.warn(f"{len(idx)} committed run(s) of {sw.name}/{sw.scale} are not in the sweep's grid: "
                          "computing the grid", stacklevel=2)
    rep = None
    if run_missing:
        rep = run_sweep(sw, sw.scale, runs_root, jobs=jobs, device=device, progress=progress, retry_failed=True)
    df = collect(runs_root, table, sw)
    root = Path(runs_root or default_runs_root())
    state = dict(zip(rep.key, rep.status)) if rep is not None else {k: run_state(root / k) for k in sw.keys}
    errors = dict(zip(rep.key, rep.error)) if rep is not None else {}
    done = [k for k in sw.keys if state.get(k) == "done"]
    notes = {k: f"{state.get(k)}{': ' + str(errors[k])[:120] if errors.get(k) else ''}" for k in sw.keys if k not in done}
    summ = collect(runs_root, "summary", sw) if done else pd.DataFrame()
    rows = [] if summ.empty else [r for r in summ.to_dict("records") if r.get("status", "done") == "done"]
    info = coverage_facts(sw, done, "computed", rows, notes)
    if df.empty:
        where = (f"no {table!r} table for sweep {sw.name!r} at scale {sw.scale!r}: not committed under "
                 f"{store_dir(sw.name, sw.scale, results_root)} and no finished run under {root}"
                 + ("" if run_missing else " (run_missing=False)"))
        if rep is None:  # the runs' own state: their status.json keeps the error of a failed run
            rep = pd.DataFrame([{"key": k, "net": c.net, "status": state.get(k) or "pending",
                                 "error": error_line(root / k) if state.get(k) == "failed" else "",
                                 "run_dir": str(root / k)} for c in sw.configs for k in [c.key]])
        failed = rep[rep["status"] == "failed"]
        if len(failed):
            raise RunsFailedError(f"{where}. {len(failed)} of {len(rep)} run(s) failed:\n{failure_summary(rep)}")
        raise RuntimeError(where)
    return _finish(df, info, sw)


def _finish(df: pd.DataFrame, info: dict, sw: Sweep) -> pd.DataFrame:
    if not info["complete"]:
        warnings.warn(f"{sw.name}/{sw.scale}: {info['coverage']}", stacklevel=3)
    df.attrs["results"] = info
    return df
