"""A page's provenance: the result tables and files it read
(:func:`~stabkit.report.page.record_inputs`, hashed) and free facts such as its device and seeds
(:func:`~stabkit.report.page.record`), appended as JSON lines to the file that ``$STABKIT_PROVENANCE`` names,
which the book runner (``tools/book.py``) merges (:func:`~stabkit.report.page.collect_records`) into the
page's provenance box; paths in the records are relative to the repository
(:func:`~stabkit.report.page.repo_relative`).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd


#: The repository root, which provenance records name files relative to (this file is
#: ``stabkit/report/page/records.py``).
REPO_ROOT = Path(__file__).resolve().parents[3]


#: Environment variable naming the file (JSON lines) that :func:`~stabkit.report.page.record_inputs` /
#: :func:`~stabkit.report.page.record` append to.
ENV_PROVENANCE = "STABKIT_PROVENANCE"


def python_scalar(value: Any) -> Any:
    """Convert numpy / torch scalars to Python numbers so that ``{glue:text}`key:.2f``` can format them (what
    :func:`stabkit.report.page.glue` glues and :func:`stabkit.report.page.record` records); anything else is
    returned as it is."""
    item = getattr(value, "item", None)
    shape = getattr(value, "shape", None)
    if callable(item) and shape == ():
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value


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
    facts = {k: python_scalar(v) for k, v in facts.items()}
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

