"""The benchmark results behind ``RESULTS.md``, kept per case so that one case can be measured again alone.

``make bench`` stays under 10 minutes by skipping the slow cases (``step``, ``precision``) once its budget is
spent; ``python -m benchmarks --only step,precision`` measures them later, on a quiet machine. Each run
replaces the record of the cases it ran in ``RESULTS.json`` (beside ``RESULTS.md``) and keeps the others,
and ``RESULTS.md`` is written again from every record, with when and where each case was measured.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from pathlib import Path

from .common import Result

_FIELDS = {f.name for f in fields(Result)}


def records_path(results_md: Path) -> Path:
    """``RESULTS.json`` beside ``RESULTS.md`` (any ``--output`` name: ``X.md`` -> ``X.json``)."""
    return Path(results_md).with_suffix(".json")


def _plain(value):
    """JSON has no numpy scalars and no NaN: floats as floats, NaN as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return None if math.isnan(f) else f


def load(path: Path) -> dict[str, dict]:
    """Records by case key (``measure``, ``step``, ...); ``{}`` when the file is absent.

    Raises:
        ValueError: the file is not a records file (names it).
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to start the records afresh") from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "results" in v for v in data.values()):
        raise ValueError(f"{path} is not a benchmark records file (case -> {{results, machine, ...}})")
    return data


def merge(path: Path, runs: dict[str, dict]) -> dict[str, dict]:
    """Replace the records of the cases in ``runs`` (case -> ``{"results": [Result], "date", "machine",
    "versions", "wall_s"}``), keep every other case's record, write the file; return all records."""
    records = load(path)
    for case, run in runs.items():
        entry = {k: v for k, v in run.items() if k != "results"}
        entry["results"] = [asdict(r) for r in run["results"]]
        records[case] = _plain(entry)
    path.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    return records


def results_of(record: dict) -> list[Result]:
    """The :class:`Result` rows of one case's record (unknown keys of a newer writer are ignored)."""
    return [Result(**{k: v for k, v in row.items() if k in _FIELDS}) for row in record["results"]]
