"""Glue: a number, a string or a figure stored under a name for the page's text (``{glue:text}`name:.3g```
in markdown): :func:`~stabkit.report.page.glue` (through myst-nb where it is importable, else the same mime
bundle, :func:`~stabkit.report.page.glue_bundle`), and what it prints in JupyterLab, which leaves MyST's
roles raw (:func:`~stabkit.report.page.show_glue`).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .records import ENV_PROVENANCE, python_scalar


#: Environment variable: 1 makes :func:`~stabkit.report.page.glue` print what it glues, 0 never (default:
#: :func:`~stabkit.report.page.show_glue`).
ENV_SHOW_GLUE = "STABKIT_SHOW_GLUE"


GLUE_PREFIX = "application/papermill.record/"


def glue_bundle(name: str, value: Any, display: bool = False) -> tuple[dict, dict]:
    """The mime bundle and metadata that myst-nb's ``glue`` displays for ``value`` under ``name``.

    Returns ``(data, metadata)``: with ``display=False`` every mime type of ``data`` is prefixed with
    ``application/papermill.record/`` (hidden on the page, available to ``{glue:...}``), and
    ``metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}``. Numpy and torch scalars are
    converted to Python numbers first (their ``repr`` would not parse as a number).
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or ":" in name:
        raise ValueError(f"name must be a non-empty string without spaces or ':', got {name!r}")
    value = python_scalar(value)
    try:
        from IPython.core.formatters import format_display_data

        data, metadata = format_display_data(value)
    except ImportError:  # no IPython: plain text only
        data, metadata = {"text/plain": repr(value)}, {}
    prefix = "" if display else GLUE_PREFIX
    metadata = dict(metadata)
    metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}
    return {prefix + k: v for k, v in data.items()}, metadata


#: Non-empty while :func:`glue_claim` glues a claim's parts: it prints one line for the claim instead.
_QUIET: list[str] = []


@contextmanager
def quiet_glue(name: str) -> Iterator[None]:
    """While it lasts, :func:`stabkit.report.page.glue` prints nothing where
    :func:`stabkit.report.page.show_glue` would have it print: :func:`stabkit.report.page.glue_claim` glues the
    parts of the claim ``name`` under it and prints one line for the claim instead."""
    _QUIET.append(name)
    try:
        yield
    finally:
        _QUIET.pop()


def show_glue() -> bool:
    """Whether :func:`glue` also prints what it glues (``name: value``): ``$STABKIT_SHOW_GLUE`` = 1 / 0 decides;
    unset, only in an interactive kernel (JupyterLab, ``make lab``) that no book runner records
    (``$STABKIT_PROVENANCE`` unset). JupyterLab does not render MyST's ``{glue:text}`` roles: without this, a
    page opened there shows the placeholders and never its numbers."""
    env = os.environ.get(ENV_SHOW_GLUE, "").strip().lower()
    if env:
        return env in {"1", "true", "yes", "on"}
    if os.environ.get(ENV_PROVENANCE):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"  # a Jupyter kernel


def echo(name: str, value: Any) -> None:
    """Print ``name: value`` for a string, number, bool or ``None`` (cut at 400 characters), nothing for any
    other value: what :func:`stabkit.report.page.glue` prints where :func:`stabkit.report.page.show_glue`
    says so."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = str(value)
        print(f"{name}: {text if len(text) <= 400 else text[:400] + ' [...]'}")


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the book's text (``{glue:text}`name:.3g``` in markdown).

    Wraps ``myst_nb.glue`` when myst-nb is importable; otherwise displays the same glue-compatible mime
    bundle (see :func:`glue_bundle`). Numpy / torch scalars become Python numbers. Figures work too
    (``{glue:figure}`name```). Returns nothing, so that a glue call ending a cell prints nothing; prints
    ``name: value`` as well where :func:`show_glue` says so (JupyterLab).
    """
    plain = python_scalar(value)
    try:
        from myst_nb import glue as _myst_glue
    except ImportError:
        _myst_glue = None
    if _myst_glue is not None:
        glue_bundle(name, plain, display)  # validates the name
        _myst_glue(name, plain, display=display)
    else:
        data, metadata = glue_bundle(name, plain, display)
        try:
            from IPython.display import display as _display
        except ImportError:
            _display = None
        if _display is not None:
            _display(data, raw=True, metadata=metadata)
    if not display and not _QUIET and show_glue():  # a displayed value shows itself
        echo(name, plain)
    return None

