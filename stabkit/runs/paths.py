"""Where runs, committed results and sweep files live (torch-free).

Every location can be moved with an environment variable, so that a notebook, the command line and a
cluster job agree on one folder without passing it around.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "in_repo", "default_runs_root", "default_results_root", "sweeps_dir"]

#: The checkout this package was imported from (meaningful only when :func:`in_repo` is true).
REPO_ROOT = Path(__file__).resolve().parents[2]


def in_repo() -> bool:
    """True when the package runs from a source checkout (``pyproject.toml`` and ``sweeps/`` beside it)."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "sweeps").is_dir()


def default_runs_root() -> Path:
    """``$STABKIT_RUNS`` if set, else ``<repo>/runs`` (git-ignored), else ``~/.cache/stabkit/runs``."""
    env = os.environ.get("STABKIT_RUNS")
    if env:
        return Path(env).expanduser()
    return REPO_ROOT / "runs" if in_repo() else Path.home() / ".cache" / "stabkit" / "runs"


def default_results_root() -> Path:
    """``$STABKIT_RESULTS`` if set, else ``<repo>/results`` (committed result tables)."""
    env = os.environ.get("STABKIT_RESULTS")
    if env:
        return Path(env).expanduser()
    return REPO_ROOT / "results" if in_repo() else Path.home() / ".cache" / "stabkit" / "results"


def sweeps_dir() -> Path:
    """``$STABKIT_SWEEPS`` if set, else ``<repo>/sweeps``."""
    return Path(os.environ.get("STABKIT_SWEEPS", REPO_ROOT / "sweeps")).expanduser()
