"""A campaign's archives merged into the committed results store (:mod:`stabkit.sweeps.merging`):
``runs.tar`` / ``runs.tar.gz`` parts (``stabkit.campaign.packing``), checked against ``IMPORT_LIMITS``
before anything is extracted, then merged run by run into every (sweep, scale) their manifest lists.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd

from ..runs.paths import default_results_root
from .merging import merge_runs, read_run
from .resultstore import check_store_name, store_dir

__all__ = ["IMPORT_LIMITS", "IMPORT_AREA", "import_runs"]

#: What :func:`~stabkit.sweeps.import_runs` extracts at most from an archive, checked on the member headers before anything
#: is written: members, bytes of one member, bytes in all, and the expansion ratio (total over the
#: archive's size) allowed once the total passes ``ratio_above`` bytes. A campaign's ``runs.tar`` holds
#: parquet tables (already compressed, no checkpoints): far below each.
IMPORT_LIMITS = {"members": 100_000, "member_bytes": 256 * 2**20, "total_bytes": 2**30, "ratio": 100,
                 "ratio_above": 64 * 2**20}
#: Folder of the results root where :func:`~stabkit.sweeps.import_runs` extracts archives (git-ignored); what a killed
#: import left there is removed by the next import.
IMPORT_AREA = ".import-tmp"
_MEMBER = re.compile(r"^(manifest\.json|[A-Za-z0-9]+(/[A-Za-z0-9][A-Za-z0-9_.-]*)?)$")


def _check_members(tar: Path, members: list[tarfile.TarInfo], limits: Mapping[str, int]) -> None:
    """Refuse an archive whose member headers exceed ``limits`` (``IMPORT_LIMITS``), before extracting."""
    if len(members) > limits["members"]:
        raise ValueError(f"{tar}: {len(members)} members, more than the {limits['members']} an import accepts")
    total = 0
    for m in members:
        if m.issparse():  # its header size is not what extraction writes
            raise ValueError(f"{tar}: member {m.name!r} is a sparse file (a campaign archive holds plain files)")
        if m.size > limits["member_bytes"]:
            raise ValueError(f"{tar}: member {m.name!r} holds {m.size} bytes, more than the "
                             f"{limits['member_bytes']} an import accepts per file")
        total += m.size
    if total > limits["total_bytes"]:
        raise ValueError(f"{tar}: {total} bytes once extracted, more than the {limits['total_bytes']} an import "
                         f"accepts")
    size = max(tar.stat().st_size, 1)
    if total > limits["ratio_above"] and total > limits["ratio"] * size:
        raise ValueError(f"{tar}: {total} bytes once extracted from {size} bytes (more than {limits['ratio']} "
                         f"times the archive: a decompression bomb?); refused")


def _extract(tar: Path, dest: Path, limits: Mapping[str, int] | None = None) -> None:
    """Extract a campaign's ``runs.tar``: only ``manifest.json`` and ``<key>/<file>`` regular files, within
    ``limits`` (default ``IMPORT_LIMITS``; checked on the headers before anything is written)."""
    limits = {**IMPORT_LIMITS, **dict(limits or {})}
    try:
        with tarfile.open(tar, "r:*") as tf:
            members = tf.getmembers()
            for m in members:
                if not (m.isfile() or m.isdir()) or not _MEMBER.match(m.name.rstrip("/")):
                    raise ValueError(f"{tar}: unexpected member {m.name!r} (a campaign archive holds manifest.json "
                                     "and <key>/<file> only)")
            _check_members(tar, members, limits)
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(dest, members=members, **kw)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"{tar}: not a readable tar archive ({exc})") from None


@contextlib.contextmanager
def _import_area(results_root: str | Path | None) -> Iterator[Path]:
    """A new extraction folder in the results root's own temporary area (``IMPORT_AREA``: the same file
    system as the store, not the system's temporary folder), held with ``flock`` while the import runs and
    removed after it; the folders of killed imports (their lock free) are removed first."""
    area = Path(results_root or default_results_root()) / IMPORT_AREA
    area.mkdir(parents=True, exist_ok=True)
    for old in area.iterdir():  # leftovers of killed imports: nobody holds their lock
        if old.is_dir() and not _held(old / ".lock"):
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix="import-", dir=area))
    fd = os.open(tmp / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)
        with contextlib.suppress(OSError):
            area.rmdir()  # only when empty: another import may be using it


def _held(lock: Path) -> bool:
    """Whether a live process holds ``flock`` on ``lock`` (a folder without one is being created: held)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        # mkdtemp then open: a fresh folder of a live import has no lock for an instant; an old one is a leftover
        with contextlib.suppress(OSError):
            return _dt.datetime.now().timestamp() - lock.parent.stat().st_mtime < 60
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def import_runs(path: str | Path, results_root: str | Path | None = None, *,
                limits: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Merge a campaign's runs into the store: ``path`` = the campaign folder (with ``runs.tar``, or the parts
    ``runs.tar.gz``, ``runs-2.tar.gz``, ...), one archive itself, or a folder of run folders with a
    ``manifest.json`` (``{"format": 1, "runs": {key: [[sweep, scale], ...]}, "created", "device", ...}``). Each
    run goes into every (sweep, scale) the manifest lists. Returns one row per (sweep, scale, key): action
    (added | replaced | kept | repaired).

    An archive is checked against ``limits`` (``IMPORT_LIMITS``: members, bytes per member and in all,
    expansion ratio) before anything is extracted, and extracted under ``<results root>/.import-tmp``
    (``IMPORT_AREA``), removed afterwards; what a killed import left there goes at the next import."""
    p = Path(path)
    if p.is_dir() and not (p / "manifest.json").is_file():
        parts = sorted(p.glob("runs*.tar.gz")) + ([p / "runs.tar"] if (p / "runs.tar").is_file() else [])
        if len(parts) > 1:  # a campaign's parts (runs.tar.gz, runs-2.tar.gz, ...): each a complete archive
            return pd.concat([import_runs(f, results_root, limits=limits) for f in parts], ignore_index=True)
        if parts:
            p = parts[0]
    if p.is_file():
        with _import_area(results_root) as tmp:
            _extract(p, tmp, limits)
            return _import_folder(tmp, results_root, label=(str(tmp), f"{p}:"))
    if p.is_dir() and (p / "manifest.json").is_file():
        return _import_folder(p, results_root)
    raise ValueError(f"path must be a campaign folder (with runs.tar or runs*.tar.gz), such an archive or a folder "
                     f"with manifest.json, got {path!r}")


def _import_folder(folder: Path, results_root: str | Path | None, label: tuple[str, str] | None = None) -> pd.DataFrame:
    try:
        return _import_checked(folder, results_root)
    except ValueError as exc:  # name the archive member, not the temporary folder it was extracted to
        if label is None:
            raise
        raise ValueError(str(exc).replace(label[0] + os.sep, label[1]).replace(label[0], label[1])) from None


def _import_checked(folder: Path, results_root: str | Path | None) -> pd.DataFrame:
    mf = folder / "manifest.json"
    try:
        man = json.loads(mf.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{mf}: not readable JSON ({exc})") from None
    if not isinstance(man, Mapping) or man.get("format") != 1 or not isinstance(man.get("runs"), Mapping):
        raise ValueError(f"{mf}: not a campaign manifest (format 1 with a 'runs' mapping of key -> [[sweep, scale]])")
    groups: dict[tuple[str, str], list[str]] = {}
    for key, where in man["runs"].items():
        check_store_name("run key", key)
        if not isinstance(where, list) or not all(isinstance(w, (list, tuple)) and len(w) == 2 for w in where):
            raise ValueError(f"{mf}: runs[{key!r}] must be a list of [sweep, scale] pairs, got {where!r}")
        for sw, sc in where:
            groups.setdefault((check_store_name("sweep", sw), check_store_name("scale", sc)), []).append(key)
    git = man.get("git") if isinstance(man.get("git"), Mapping) else {}
    fallback = {"commit": git.get("commit", man.get("commit")), "dirty": git.get("dirty", man.get("dirty")),
                "source": "campaign", "python": man.get("python")}
    read = {k: read_run(folder / k, fallback) for k in sorted({k for ks in groups.values() for k in ks})}
    out = []
    for (sw, sc), keys in sorted(groups.items()):
        rep = merge_runs(store_dir(sw, sc, results_root), [read[k] for k in keys], sweep=sw, scale=sc)
        out.append(rep.assign(sweep=sw, scale=sc))
    cols = ["sweep", "scale", "key", "action", "run_version"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)
