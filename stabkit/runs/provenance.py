"""Where and with what code a result was made: the git state of the checkout (or the state that travelled
with a copy of the tree) and the library versions; recorded by every run and every export.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

from .. import __version__
from .paths import REPO_ROOT

__all__ = ["CODE_COMMIT_ENV", "CODE_STATE_FILE", "git_state", "provenance"]


def _git(root: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


#: Where the code state travels to a copy of the tree without ``.git`` (a lent GPU gets the working tree
#: only): the environment variable (a commit sha; ``STABKIT_CODE_DIRTY`` = 1 or 0 beside it), else this
#: file at the root of the tree (``{"commit": sha, "dirty": bool}``, git-ignored, written before the copy
#: by ``tools/gpu_campaign.sh``'s first step and carried with it).
CODE_COMMIT_ENV = "STABKIT_CODE_COMMIT"
CODE_STATE_FILE = ".code_state.json"
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


def _travelled_state(root: Path) -> dict[str, Any] | None:
    """The code state written before the tree was copied (see :data:`CODE_COMMIT_ENV`), or None."""
    env = os.environ.get(CODE_COMMIT_ENV, "").strip().lower()
    if _SHA.match(env):
        dirty = os.environ.get("STABKIT_CODE_DIRTY", "").strip().lower()
        return {"commit": env, "dirty": {"1": True, "true": True, "0": False, "false": False}.get(dirty)}
    try:
        doc = json.loads((root / CODE_STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    commit = str(doc.get("commit") or "").strip().lower() if isinstance(doc, dict) else ""
    if not _SHA.match(commit):
        return None
    dirty = doc.get("dirty")
    return {"commit": commit, "dirty": dirty if isinstance(dirty, bool) else None}


def git_state(root: str | os.PathLike = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git checkout at ``root``; where the tree has
    no git repository (a copy sent to a lent GPU), the state written before the copy
    (``$STABKIT_CODE_COMMIT``, else ``<root>/.code_state.json``); ``None`` when neither is there. The one
    git schema of every provenance record."""
    root = Path(root)
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        travelled = _travelled_state(root)
        if travelled is not None:
            return travelled
    st = _git(root, "status", "--porcelain", "--untracked-files=normal")
    return {"commit": commit or None, "dirty": None if st is None else bool(st)}


def provenance() -> dict[str, Any]:
    """Where and with what code a result was made: ``created`` (UTC ISO date), ``git``
    (``git_state()``), ``host``, ``python``, ``torch``, ``stabkit`` versions."""
    import torch  # here, not above: a run's git state is read without torch

    return {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(), "git": git_state(),
            "host": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
            "stabkit": __version__}
