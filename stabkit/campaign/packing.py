"""The finished runs of a campaign, packed after every run into parts ``runs.tar.gz``, ``runs-2.tar.gz``,
... of at most ``PART_LIMIT`` bytes (a lent GPU returns few, small files); ``stabkit.sweeps.import_runs``
reads them back.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..runs.provenance import git_state

__all__ = ["MANIFEST_FORMAT", "PART_LIMIT", "MAX_PARTS", "part_name", "pack_runs", "Packer"]

#: Format of ``manifest.json`` in the packed runs.
MANIFEST_FORMAT = 1
#: The files of a run folder that travel besides its ``*.parquet`` tables (never checkpoints).
_TABLE_FILES = ("config.json", "status.json", "done")
#: A part of the packed runs is closed before it passes this size: a lent GPU returns files of at most
#: 16 MiB, and at most 8 files (the campaign writes 4 others, the prepared call one more).
PART_LIMIT = 14 * 2**20
#: Parts the device returns beside the campaign's other files (a warning beyond).
MAX_PARTS = 3


def part_name(i: int) -> str:
    """File name of part ``i`` (1-based) of the packed runs: ``runs.tar.gz``, ``runs-2.tar.gz``, ..."""
    return "runs.tar.gz" if i == 1 else f"runs-{i}.tar.gz"


def pack_runs(out: str | Path, runs_root: str | Path, keys: Sequence[str],
              members: dict[str, list[tuple[str, str]]], device: str, code: dict[str, Any] | None = None) -> Path:
    """Write ``out`` (a ``.tar``, or a gzip-compressed ``.tar.gz``) atomically: ``manifest.json`` and, per
    finished run of ``keys``, the folder ``<key>/`` with ``config.json``, ``status.json``, ``done`` and
    ``*.parquet`` (never ``*.pt``). ``code``: the code state (``{"commit", "dirty"}``) recorded in the
    manifest (``stabkit.runs.git_state``, which falls back on ``$STABKIT_CODE_COMMIT``)."""
    runs_root = Path(runs_root)
    finished = [k for k in keys if (runs_root / k / "done").exists()]
    manifest = {"format": MANIFEST_FORMAT,
                "runs": {k: [list(m) for m in members.get(k, [])] for k in finished},
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "device": device,
                "git": dict(code if code is not None else git_state())}

    def write(tmp: Path) -> None:
        gz = str(out).endswith(".gz")
        with tarfile.open(tmp, "w:gz" if gz else "w", **({"compresslevel": 6} if gz else {})) as tar:
            blob = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mtime = len(blob), int(time.time())
            tar.addfile(info, io.BytesIO(blob))
            for k in finished:
                d = runs_root / k
                for f in sorted(d.iterdir()):
                    if f.is_file() and (f.name in _TABLE_FILES or f.suffix == ".parquet"):
                        tar.add(f, arcname=f"{k}/{f.name}", recursive=False)
    return atomic_write(out, write)


class Packer:
    """The finished runs, packed into ``DIR/runs.tar.gz``, ``DIR/runs-2.tar.gz``, ... after every run.

    Only the last part is rewritten when a run is added; once adding a run would take it past ``limit``
    bytes, it is left as it was and the run starts the next part (a single run larger than ``limit`` gets
    a part of its own, with a warning). Each part is a complete archive with its own manifest, so any
    subset of the parts imports (``stabkit.sweeps.import_runs(DIR)`` imports them all)."""

    def __init__(self, out: str | Path, runs_root: str | Path, members: dict[str, list[tuple[str, str]]],
                 device: str, limit: int = PART_LIMIT, log: Callable[[str], None] | None = None):
        self.out, self.runs_root, self.members, self.device = Path(out), Path(runs_root), members, device
        self.limit, self.log = int(limit), log or (lambda text: None)
        self.parts: list[list[str]] = []
        self.code = git_state()  # once: a subprocess per run would cost seconds over a campaign

    def paths(self) -> list[Path]:
        return [self.out / part_name(i + 1) for i in range(len(self.parts))]

    def pack(self, keys: Sequence[str]) -> list[Path]:
        """Add the finished runs of ``keys`` not packed yet; the paths of every part."""
        packed = {k for part in self.parts for k in part}
        for k in keys:
            if k in packed or not (self.runs_root / k / "done").exists():
                continue
            packed.add(k)
            if not self.parts:
                self.parts.append([])
            last = self.parts[-1]
            path = self.out / part_name(len(self.parts))
            size = self._write(path, [*last, k]).stat().st_size
            if size > self.limit and last:
                self._write(path, last)  # as it was: closed
                self.parts.append([k])
                path = self.out / part_name(len(self.parts))
                size = self._write(path, [k]).stat().st_size
                if len(self.parts) > MAX_PARTS:
                    self.log(f"WARNING: {len(self.parts)} parts of packed runs: a lent GPU returns at most 8 "
                             f"files, {MAX_PARTS} of them parts")
            else:
                last.append(k)
            if size > self.limit:
                self.log(f"WARNING: {path.name} holds one run of {size / 2**20:.1f} MiB, over the "
                         f"{self.limit / 2**20:.0f} MiB limit")
        return self.paths()

    def _write(self, path: Path, keys: Sequence[str]) -> Path:
        return pack_runs(path, self.runs_root, keys, self.members, self.device, self.code)
