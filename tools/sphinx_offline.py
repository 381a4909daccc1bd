"""Sphinx extension (``_config.yml``: ``sphinx.local_extensions``) that makes the built book work offline.

- **MathJax from the site.** MathJax 3 comes from the PyPI package ``django-static-mathjax`` (a plain
  copy of the official MathJax distribution, importable as ``mathjax``; in the ``[book]`` extra). Its
  ``es5/`` folder is copied to ``_build/html/_static/mathjax/`` and ``mathjax_path`` must point there
  (``mathjax/tex-chtml.js``, relative to ``_static``). The build **fails** (``ConfigError``) when the
  package is missing or ``mathjax_path`` is a URL: no silent fallback to a CDN.
- **No external asset.** When the HTML build has finished, every page is checked with
  ``tools/check_site.py``'s static checker; an external script, stylesheet, image or font fails the build.
- **No thebe.** Jupyter Book always loads sphinx-thebe, whose inline script (a CDN address, declared
  twice) raises a SyntaxError on every page; launch buttons are off, so its assets are dropped.
- **Generated pages.** Before the sources are read, ``tools/dashboard.py`` writes the claims dashboard
  ``book/claims.md`` and the landing-page figure include ``book/_landing.md`` from the executed
  notebooks in ``book/executed/``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ConfigError, ExtensionError
from sphinx.util import logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_site  # noqa: E402  (a sibling script, not a package)
import dashboard  # noqa: E402

logger = logging.getLogger(__name__)

MATHJAX_ENTRY = "tex-chtml.js"
STATIC_SUBDIR = "mathjax"


def mathjax_dir() -> Path:
    """The ``es5`` folder of the installed MathJax 3 distribution; ``ConfigError`` when it is missing."""
    try:
        import mathjax  # django-static-mathjax
    except ImportError as exc:
        raise ConfigError(
            "MathJax is not installed, so the book would need a CDN: install the book's dependencies "
            "(pip install -e '.[book]', package django-static-mathjax)") from exc
    es5 = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5"
    if not (es5 / MATHJAX_ENTRY).is_file():
        raise ConfigError(f"MathJax package found at {es5.parent} but {MATHJAX_ENTRY} is missing: "
                          "reinstall django-static-mathjax")
    return es5


def _config_inited(app: Sphinx, config) -> None:  # noqa: ANN001 - sphinx Config
    path = str(config.mathjax_path)
    if check_site.is_external(path) or path.startswith("/"):
        raise ConfigError(f"mathjax_path must be relative to _static (e.g. {STATIC_SUBDIR}/{MATHJAX_ENTRY}) "
                          f"so that the book works offline, got {path!r}")
    if not path.startswith(STATIC_SUBDIR + "/"):
        raise ConfigError(f"mathjax_path must start with {STATIC_SUBDIR}/ (copied from the MathJax "
                          f"package), got {path!r}")
    entry = mathjax_dir() / path[len(STATIC_SUBDIR) + 1:]
    if not entry.is_file():
        raise ConfigError(f"mathjax_path {path!r}: {entry} does not exist in the MathJax package")
    book = Path(app.srcdir) / "book"
    if book.is_dir():
        dashboard.write_pages(book)


def _build_finished(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    out = Path(app.outdir) / "_static" / STATIC_SUBDIR
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(mathjax_dir(), out)
    logger.info(f"MathJax copied to {out}")
    problems = check_site.check_static(app.outdir)
    if problems:
        lines = [f"  {page}: {p}" for page, ps in problems.items() for p in ps]
        raise ExtensionError("the built book references external assets (it would not work offline):\n"
                             + "\n".join(lines))


def _is_thebe(asset) -> bool:  # noqa: ANN001 - sphinx _JavaScript / _CascadingStyleSheet
    body = (getattr(asset, "attributes", None) or {}).get("body", "") or ""
    return "thebe" in str(getattr(asset, "filename", None) or asset) or "THEBE_JS_URL" in body


def _drop_thebe(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:  # noqa: ANN001
    # Jupyter Book always loads sphinx-thebe, which declares `const THEBE_JS_URL` (a CDN address) twice
    # per page: a SyntaxError in every reader's console. Launch buttons and thebe are off: drop its assets.
    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [a for a in context[key] if not _is_thebe(a)]


def setup(app: Sphinx) -> dict:
    app.setup_extension("sphinx.ext.mathjax")
    # MathJax on every page, not only on pages with maths: the navigation holds maths in page titles.
    app.set_html_assets_policy("always")
    app.connect("html-page-context", _drop_thebe, priority=900)
    app.connect("config-inited", _config_inited, priority=100)  # before the toc is read (900)
    app.connect("build-finished", _build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
