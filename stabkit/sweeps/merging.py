"""Runs merged into the committed results store (:mod:`stabkit.sweeps.resultstore`, its layout):
:func:`~stabkit.sweeps.export` from run folders, and :func:`merge_runs`, which ``import_runs()``
(:mod:`stabkit.sweeps.archives`) also uses for a campaign's ``runs.tar``:

* by run key, never dropping a run: a key the store lacks is added; a key it has is kept or replaced by
  one rule, the same whatever the order of the merges (so merging A then B equals B then A): **the copy
  with the latest ``finished`` date wins, ties broken by the larger device name, then host name, then
  ``run_version``, then the provenance record**;
* a run whose configuration differs from the committed one under the same key, a store file that is
  not a valid table of the store, or an incoming column whose type contradicts the committed one
  (numbers against text) is a ``ValueError`` naming the file;
* atomic: every file is replaced with :mod:`stabkit.atomic`, tables first (holding the rows of both the
  old and the new index), ``runs.parquet`` last, then the rows no index lists are dropped; as readers trust
  only the index, a kill at any moment loses nothing;
* one merge at a time per store (``flock`` on its folder).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_write_json, atomic_write_table
from ..runs.folder import read_config, run_state, verify_run
from ..runs.paths import default_runs_root
from ..runs.provenance import git_state, provenance
from .collection import config_columns, status
from .resultstore import (INDEX, INDEX_COLUMNS, KEY, PROVENANCE, VERSION, concat_frames, read_index, read_store_table,
                          restore_run_rows, run_schema, split_by_run, store_dir)
from .sweepfile import Sweep, as_sweep

__all__ = ["STORE_FORMAT", "export", "merge_runs", "read_run"]

#: Format of a store, written in its ``provenance.json``.
STORE_FORMAT = 1


# ------------------------------------------------------------------------------------- incoming runs
@dataclass
class _Incoming:
    key: str
    folder: Path
    config: dict
    row: dict                        # the index row (without schema / tables)
    tables: dict[str, pd.DataFrame]  # collected rows (run columns + configuration columns)


def _iso(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    with contextlib.suppress(TypeError, ValueError):
        t = _dt.datetime.fromisoformat(str(value))
        return (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)).astimezone(_dt.timezone.utc).isoformat()
    return str(value)


def read_run(folder: Path, fallback: Mapping[str, Any]) -> _Incoming:
    """One finished run folder as an incoming run; ``fallback``: provenance the run did not record."""
    problems = verify_run(folder) if (folder / "done").exists() else [f"{folder / 'done'}: missing (not finished)"]
    if problems:
        raise ValueError("; ".join(problems))
    cfg = read_config(folder)
    key = str(cfg.get("key"))
    try:
        st = json.loads((folder / "status.json").read_text())
    except (OSError, ValueError):
        st = {}
    summ = read_store_table(folder / "summary.parquet").iloc[0].to_dict() if (folder / "summary.parquet").is_file() else {}
    get = lambda k: st.get(k, summ.get(k))  # noqa: E731
    git = st.get("git") if isinstance(st.get("git"), Mapping) else {}
    commit = get("code_commit") or git.get("commit") or st.get("commit")
    row = {"key": key, "config": json.dumps(cfg, sort_keys=True), "device": get("device"),
           "device_name": get("device_name"), "host": get("host"), "torch": get("torch"),
           "python": get("python") or fallback.get("python"), "finished": _iso(get("finished")),
           "wall_seconds": get("wall_seconds"), "epochs_run": get("epochs_run"),
           "best_test_err": get("best_test_err"), "status": json.dumps(st, sort_keys=True, default=str)}
    if commit:
        dirty = get("code_dirty")
        row.update(code_commit=commit, code_dirty=git.get("dirty") if dirty is None else bool(dirty),
                   commit_source="run")
    else:
        row.update(code_commit=fallback.get("commit"), code_dirty=fallback.get("dirty"),
                   commit_source=fallback.get("source"))
    for k in ("wall_seconds", "best_test_err"):
        row[k] = None if row[k] is None else float(row[k])
    row["epochs_run"] = None if row["epochs_run"] is None else int(row["epochs_run"])
    row["run_version"] = hashlib.sha256(f"{key}|{row['host']}|{row['finished']}|{row['wall_seconds']}".encode()
                                        ).hexdigest()[:12]
    cols = config_columns(cfg)
    cols["run"] = cols.pop("key", key)
    tables = {}
    for f in sorted(folder.glob("*.parquet")):
        df = read_store_table(f)
        extra = {k: [v] * len(df) for k, v in cols.items() if k not in df.columns}
        tables[f.stem] = pd.concat([df, pd.DataFrame(extra, index=df.index)], axis=1) if extra else df
    return _Incoming(key, folder, cfg, row, tables)


# ------------------------------------------------------------------------------------------- merging
def _norm(row: Mapping) -> dict[str, Any]:
    """An index row in plain Python types (a row read back from parquet equals the row written)."""
    out = {}
    for c in INDEX_COLUMNS:
        v = row.get(c)
        v = v.item() if hasattr(v, "item") and getattr(v, "shape", None) == () else v
        if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
            v = None
        elif c in ("wall_seconds", "best_test_err"):
            v = float(v)
        elif c == "epochs_run":
            v = int(v)
        elif c == "code_dirty":
            v = bool(v)
        else:
            v = str(v)
        out[c] = v
    return out


def _rank(row: Mapping) -> tuple:
    prov = json.dumps({k: row.get(k) for k in INDEX_COLUMNS if k not in ("schema", "tables")}, sort_keys=True,
                      default=str)
    return (row.get("finished") or "", str(row.get("device_name") or ""), str(row.get("host") or ""),
            row.get("run_version") or "", prov)


def _kind(s: pd.Series) -> str | None:
    s = s.dropna()
    if s.empty:
        return None
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return "number"
    return "text" if all(isinstance(v, str) for v in s) else None


def _check_schema(stored: pd.DataFrame, f: Path, inc: pd.DataFrame, src: Path) -> None:
    for c in inc.columns:
        if c in stored.columns:
            a, b = _kind(stored[c]), _kind(inc[c])
            if a and b and a != b:
                held = sorted({str(k) for k in stored.loc[stored[c].notna(), KEY]}) if KEY in stored.columns else []
                raise ValueError(f"{src}: column {c!r} holds {b} values, but the committed table {f} holds "
                                 f"{a} values there (wrong schema; committed by run(s) {held[:5]})")


@contextlib.contextmanager
def _merge_lock(d: Path) -> Iterator[None]:
    d.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: one merger at a time is the user's business
        yield
        return
    fd = os.open(d, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_index(d: Path, rows: list[dict]) -> None:
    idx = pd.DataFrame(sorted(rows, key=lambda r: r["key"]), columns=list(INDEX_COLUMNS))
    atomic_write_table(d / INDEX, idx)


def _write_tables(d: Path, names: list[str], frames: dict[str, dict], keep: set, old_files: dict) -> None:
    for t in names:
        parts = {p: fr.assign(**{VERSION: p[1]}) for p, fr in frames[t].items() if p in keep}
        if set(parts) == old_files.get(t):
            continue  # this file already holds exactly these rows
        if parts:
            atomic_write_table(d / f"{t}.parquet", concat_frames([parts[p] for p in sorted(parts)]))
        else:
            (d / f"{t}.parquet").unlink(missing_ok=True)
        old_files[t] = set(parts)


def _damage(d: Path, rows: list[dict]) -> dict[str, list[str]]:
    """The committed runs (index ``rows``) whose rows in the store folder ``d`` are not as the index
    records them: table file missing or unreadable, the run's rows absent, a column of its schema missing
    or of another type. ``{key: [problem naming the file, ...]}``; empty for a sound store."""
    out: dict[str, list[str]] = {}
    for t in sorted({t for r in rows for t in run_schema(r)}):
        want = {(r["key"], r["run_version"]): run_schema(r)[t] for r in rows if t in run_schema(r)}
        f = d / f"{t}.parquet"
        try:
            parts = split_by_run(read_store_table(f), f) if f.is_file() else None
        except ValueError as exc:
            parts, why = None, str(exc)
        else:
            why = f"{f}: missing"
        for p, cols in want.items():
            if parts is None:
                out.setdefault(p[0], []).append(why)
            elif p not in parts:
                out.setdefault(p[0], []).append(f"{f}: no rows of run {p[0]}")
            else:
                got = restore_run_rows(parts[p].reindex(columns=[c for c, _ in cols]), cols)
                bad = [c for c, dt in cols if c not in parts[p].columns or str(got[c].dtype) != dt]
                if bad:
                    out.setdefault(p[0], []).append(f"{f}: run {p[0]}: column(s) {bad} missing or not of the "
                                                    f"recorded type")
    return out


def merge_runs(d: str | Path, incoming: list[_Incoming], *, sweep: str | None = None, scale: str | None = None,
               extra: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Merge incoming runs into the store folder ``d`` (see the module docstring for the rule and the order
    of the writes). Returns one row per incoming run: key, action (added | replaced | kept | repaired),
    run_version.

    The store is checked first (``_damage``: a table missing, a run's rows dropped, a column retyped):
    a damaged run is repaired by an incoming copy of it that would win or tie the merge rule (its rows
    are written again, action ``repaired``); with none, the merge is refused with a ``ValueError``
    naming the files and runs (export or import those runs again to repair the store)."""
    d = Path(d)
    with _merge_lock(d):
        old = {r["key"]: _norm(r) for r in read_index(d).to_dict("records")}
        damaged = _damage(d, list(old.values())) if old else {}
        new = dict(old)
        report, chosen = [], {}
        for inc in sorted(incoming, key=lambda i: (i.key, _rank(i.row))):
            cur = new.get(inc.key)
            if cur is not None and json.loads(cur["config"]) != inc.config:
                diff = sorted(k for k in set(inc.config) | set(json.loads(cur["config"]))
                              if inc.config.get(k) != json.loads(cur["config"]).get(k))
                where = "an incoming run" if inc.key in chosen else d / INDEX
                raise ValueError(f"{inc.folder / 'config.json'}: run {inc.key} has another configuration than "
                                 f"the one committed under this key in {where} (fields {diff})")
            schema = {t: [[c, str(df[c].dtype)] for c in df.columns] for t, df in inc.tables.items()}
            row = _norm({**inc.row, "tables": ",".join(sorted(inc.tables)), "schema": json.dumps(schema, sort_keys=True)})
            if cur is None or _rank(row) > _rank(cur) or (inc.key in damaged and _rank(row) == _rank(cur)):
                action = "added" if inc.key not in old else ("kept" if old[inc.key] == row else "replaced")
                action = "repaired" if inc.key in damaged and old.get(inc.key) == row else action
                new[inc.key], chosen[inc.key] = row, inc
            else:
                action = "kept"
            report.append({"key": inc.key, "action": action, "run_version": new[inc.key]["run_version"]})
        left = {k: v for k, v in damaged.items() if k not in chosen}
        if left:
            raise ValueError(f"the results store {d} is damaged; nothing merged: "
                             + "; ".join(p for k in sorted(left) for p in left[k][:2])
                             + f" (run(s) {sorted(left)}: export or import them again to repair it)")
        # every table: stored per-run frames of the old and new index, plus the incoming winners
        names = sorted({t for r in [*old.values(), *new.values()] for t in run_schema(r)})
        frames, old_files = {}, {}
        for t in names:
            f = d / f"{t}.parquet"
            try:
                stored = read_store_table(f) if f.is_file() else None
            except ValueError:
                stored = None  # unreadable: every run listing it is damaged, and repaired now (else refused above)
            parts = {}
            if stored is not None:
                raw = split_by_run(stored, f)
                old_files[t] = set(raw) if not damaged else None  # a repair rewrites the file whatever it lists
                sound = [p for p in raw if p[0] not in damaged]
                stored = concat_frames([raw[p] for p in sound]) if len(sound) < len(raw) else stored
                for r in [*old.values(), *new.values()]:
                    p = (r["key"], r["run_version"])
                    if t in run_schema(r) and p in raw and p not in parts and r["key"] not in damaged:
                        parts[p] = restore_run_rows(raw[p], run_schema(r)[t])
            for k, inc in chosen.items():
                if t in inc.tables:
                    if stored is not None and len(stored):
                        _check_schema(stored, f, inc.tables[t], inc.folder / f"{t}.parquet")
                    parts.setdefault((k, new[k]["run_version"]), inc.tables[t])
            frames[t] = parts
        both = {(r["key"], r["run_version"]) for r in [*old.values(), *new.values()]}
        live = {(r["key"], r["run_version"]) for r in new.values()}
        changed = new != old or bool(damaged)
        if changed:
            _write_tables(d, names, frames, both, old_files)  # 1. tables: rows of the old and the new index
            _write_index(d, list(new.values()))               # 2. the commit point
        if changed or not (d / PROVENANCE).is_file():  # a summary for people; readers use the index
            _write_provenance(d, list(new.values()), sweep, scale, extra)
        _write_tables(d, names, frames, live, old_files)      # 3. drop the rows no index lists any more
    return pd.DataFrame(report, columns=["key", "action", "run_version"])


def _write_provenance(d: Path, rows: list[dict], sweep: str | None, scale: str | None,
                      extra: Mapping[str, Any] | None) -> None:
    runs = [{k: r.get(k) for k in INDEX_COLUMNS if k not in ("config", "schema", "status")} for r in
            sorted(rows, key=lambda r: r["key"])]
    for r in runs:
        r["run"] = r["key"]
    dates = sorted(r["finished"] for r in runs if r.get("finished"))
    prov = {"store_format": STORE_FORMAT, "sweep": sweep or d.parent.name, "scale": scale or d.name,
            **provenance(), "tables": sorted({t for r in rows for t in run_schema(r)}), "n_runs": len(rows),
            "devices": sorted({str(r["device_name"]) for r in runs if r.get("device_name")}),
            "commits": sorted({str(r["code_commit"]) for r in runs if r.get("code_commit")}),
            "hosts": sorted({str(r["host"]) for r in runs if r.get("host")}),
            "first_finished": dates[0] if dates else None, "last_finished": dates[-1] if dates else None,
            "total_wall_seconds": float(sum(r.get("wall_seconds") or 0 for r in runs)), "runs": runs,
            **dict(extra or {})}
    atomic_write_json(d / PROVENANCE, prov)


def _exporter() -> dict[str, Any]:
    import platform
    g = git_state()
    return {"commit": g["commit"], "dirty": g["dirty"], "source": "export", "python": platform.python_version()}


def export(sweep: str | Path | Mapping | Sweep, scale: str = "small", runs_root: str | Path | None = None,
           results_root: str | Path | None = None, *, out_dir: str | Path | None = None) -> Path:
    """Merge the finished runs of ``sweep`` at ``scale`` (run folders under ``runs_root``) into the store
    ``<results_root>/<sweep>/<scale>`` (or ``out_dir``); returns the store folder. A finished run that
    fails :func:`~stabkit.runs.verify_run` is skipped with a warning naming the file; no finished run
    at all is a ``ValueError``."""
    sw = as_sweep(sweep, scale)
    root = Path(runs_root or default_runs_root())
    d = Path(out_dir) if out_dir else store_dir(sw.name, sw.scale, results_root)
    fallback, incoming = _exporter(), []
    for k in sw.keys:
        if run_state(root / k) != "done":
            continue
        try:
            incoming.append(read_run(root / k, fallback))
        except ValueError as exc:
            warnings.warn(f"run {k} not exported: {exc}", stacklevel=2)
    if not incoming:
        raise ValueError(f"no finished run of sweep {sw.name!r} at scale {sw.scale!r} under {root}")
    merge_runs(d, incoming, sweep=sw.name, scale=sw.scale, extra={"counts": status(root, sw)})
    return d
