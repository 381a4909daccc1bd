"""One-time migration of the committed results: ``interp`` -> ``interpolation`` (issue 24, one vocabulary).

The resampling option of ``stabkit.transforms``, of the ``rotate`` / ``resize`` robustness families and of
the ``LowRes-*`` nets is called ``interpolation`` everywhere since issue 24. Tables written before say
``interp`` in three places, renamed here:

- columns ``interp`` (the ``resolution`` table) and ``net_options.interp`` (the configuration columns);
- the JSON of the ``options`` column (family options of the ``accuracy`` table, e.g. ``rotate``);
- the index ``runs.parquet``: each run's ``config`` (its ``net_options``) and ``schema`` (column names).

Run keys do not change: they hash the old name (``stabkit.runs.config.KEY_SPELLINGS``). Idempotent: a
migrated folder is left as it is. Usage: ``python tools/migrate_interpolation.py [results_root]``
(default ``results/``); prints the files it rewrote.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stabkit.atomic import atomic_write_table  # noqa: E402 - after the repository is on the path

OLD, NEW = "interp", "interpolation"
COLUMNS = {OLD: NEW, f"net_options.{OLD}": f"net_options.{NEW}"}


def _rename_key(obj):
    """``obj`` (parsed JSON) with every mapping key ``interp`` renamed, at any depth."""
    if isinstance(obj, dict):
        return {(NEW if k == OLD else k): _rename_key(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rename_key(v) for v in obj]
    return obj


def _options(text):
    """An ``options`` cell: JSON written with ``json.dumps(sort_keys=True)``, rewritten the same way."""
    if not isinstance(text, str) or f'"{OLD}"' not in text:
        return text
    return json.dumps(_rename_key(json.loads(text)), sort_keys=True)


def _config(text):
    """A ``runs.parquet`` ``config`` cell: only ``net_options`` is renamed (the key is computed elsewhere)."""
    if not isinstance(text, str) or f'"{OLD}"' not in text:
        return text
    cfg = json.loads(text)
    if isinstance(cfg.get("net_options"), dict):
        cfg["net_options"] = _rename_key(cfg["net_options"])
    return json.dumps(cfg, sort_keys=True)


def _schema(text):
    """A ``runs.parquet`` ``schema`` cell: ``{table: [[column, dtype], ...]}``."""
    if not isinstance(text, str) or OLD not in text:
        return text
    schema = json.loads(text)
    out = {t: [[COLUMNS.get(c, c), d] for c, d in cols] for t, cols in schema.items()}
    return json.dumps(out, sort_keys=True)


def migrate_file(path: Path) -> bool:
    """Rewrite one parquet table if it holds the old name; True when it was rewritten."""
    df = pd.read_parquet(path)
    new = df.rename(columns=COLUMNS)
    cells = {"options": _options}
    if path.name == "runs.parquet":
        cells = {"config": _config, "schema": _schema}
    for col, fn in cells.items():
        if col in new.columns:
            new[col] = new[col].map(fn).astype(df[col].dtype)
    if list(new.columns) == list(df.columns) and new.equals(df):
        return False
    atomic_write_table(path, new)
    return True


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else REPO / "results"
    for path in sorted(root.glob("*/*/*.parquet")):
        if migrate_file(path):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
