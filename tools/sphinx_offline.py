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
  ``book/claims.md`` and the landing-page figure include ``book/_generated/landing.md`` from the executed
  notebooks in ``book/executed/``, and :func:`write_results_page` writes ``book/_generated/results.md``,
  the landing page's list of the results committed under ``results/<sweep>/<scale>/`` (``$STABKIT_RESULTS``
  when set), so that the landing page never claims results this checkout does not have.
"""

from __future__ import annotations

import os
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
# Scales from largest to smallest (stabkit.sweeps.resultstore.SCALE_ORDER; not imported: the tools stay light).
SCALE_ORDER = ("paper", "gpu", "cpu", "small", "tiny")
RESULTS_PAGE = "results.md"


def results_root(repo: str | os.PathLike) -> Path:
    """Where the committed results are: ``$STABKIT_RESULTS`` when set, else ``<repo>/results``."""
    env = os.environ.get("STABKIT_RESULTS")
    return Path(env).expanduser() if env else Path(repo) / "results"


def committed_results(root: str | os.PathLike) -> list[dict]:
    """One record per committed store ``<root>/<sweep>/<scale>/`` (a folder holding ``runs.parquet``, the
    store's index, written last: a folder without it holds nothing committed), sweeps by name, scales
    largest first: ``{sweep, scale, runs, devices, last, error}`` (``runs`` = rows of the index; ``error``
    says why the index could not be read, then ``runs`` is None)."""
    root = Path(root)
    found = []
    if not root.is_dir():
        return found
    rank = {s: i for i, s in enumerate(SCALE_ORDER)}
    for sweep in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        scales = [p for p in sweep.iterdir() if p.is_dir() and (p / "runs.parquet").is_file()]
        for d in sorted(scales, key=lambda p: (rank.get(p.name, len(rank)), p.name)):
            rec = {"sweep": sweep.name, "scale": d.name, "runs": None, "devices": [], "last": "", "error": ""}
            try:
                import pyarrow.parquet as pq

                table = pq.read_table(d / "runs.parquet")
                rec["runs"] = table.num_rows
                cols = set(table.column_names)
                dev = "device_name" if "device_name" in cols else "device" if "device" in cols else None
                if dev:
                    rec["devices"] = sorted({str(v) for v in table.column(dev).to_pylist() if v})
                if "finished" in cols:
                    dates = [str(v) for v in table.column("finished").to_pylist() if v]
                    rec["last"] = max(dates)[:10] if dates else ""
            except Exception as exc:  # noqa: BLE001 - a broken index is reported on the page, not fatal here
                rec["error"] = f"{type(exc).__name__}: {exc}"
            found.append(rec)
    return found


def results_markdown(records: list[dict]) -> str:
    """The landing page's paragraph on committed results (true for this checkout, at build time)."""
    if not records:
        return ("**No results are committed in this checkout** (`results/` holds no `<sweep>/<scale>/` "
                "store): every figure page computed its runs when it was executed, at the scale stated in its "
                "*Provenance* box (`small` unless another was asked for).\n")
    sweeps = sorted({r["sweep"] for r in records})
    lines = [f"**Results committed in this checkout** ({len(records)} store"
             f"{'s' if len(records) != 1 else ''} of {len(sweeps)} sweep{'s' if len(sweeps) != 1 else ''} "
             "under `results/<sweep>/<scale>/`). A figure page shows the largest scale with committed runs of "
             "its sweep's grid, and says how many of that grid's configurations it found; a figure with none "
             "is computed at `small` when the book is built.", "",
             "| Sweep | Scale | Runs | Devices | Last run finished |", "|---|---|---|---|---|"]
    for r in records:
        runs = str(r["runs"]) if r["runs"] is not None else f"index unreadable ({r['error'][:80]})"
        devices = ", ".join(r["devices"]).replace("|", "/") or "not recorded"
        lines.append(f"| `{r['sweep']}` | `{r['scale']}` | {runs} | {devices} | {r['last'] or 'not recorded'} |")
    return "\n".join(lines) + "\n"


def write_results_page(book: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Write ``<book>/_generated/results.md`` from the stores under ``root``; True when it changed."""
    gen = Path(book) / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    path = gen / RESULTS_PAGE
    text = results_markdown(committed_results(root))
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


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
    # Jupyter Book turns numfig on whatever _config.yml says: book-wide numbers ("Fig. 7" on the Fig. 1
    # page) read as the paper's figure numbers, so they are switched off here, after every default.
    config.numfig = False
    book = Path(app.srcdir) / "book"
    if book.is_dir():
        dashboard.write_pages(book)
        write_results_page(book, results_root(app.srcdir))


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


def napoleon_would_split(line: str) -> bool:
    """True when napoleon would read ``line``, the first line of a data docstring, as ``type: description``
    (a single colon outside inline code and roles, with text after it): the same test as napoleon's
    ``GoogleDocstring._partition_field_on_colon``."""
    from sphinx.ext.napoleon.docstring import _single_colon_regex, _xref_or_code_regex

    for i, source in enumerate(_xref_or_code_regex.split(line)):
        m = _single_colon_regex.search(source) if i % 2 == 0 else None
        if m:
            rest = source[m.end():] + "".join(_xref_or_code_regex.split(line)[i + 1:])
            return bool(rest.strip())
    return False


_ORIGINAL_DATA_DOCS: dict[str, list[str]] = {}


def _save_data_docstring(app: Sphinx, what: str, name: str, obj, options, lines: list[str]) -> None:  # noqa: ANN001
    # Before napoleon (priority 400 < 500): keep the lines of a data docstring napoleon would misread.
    if what in ("data", "attribute", "property") and lines and napoleon_would_split(lines[0]):
        _ORIGINAL_DATA_DOCS[name] = list(lines)


def _restore_data_docstring(app: Sphinx, what: str, name: str, obj, options, lines: list[str]) -> None:  # noqa: ANN001
    # After napoleon (priority 600): ``#: Kinds of network: image CNNs...`` became type "Kinds of network" (a
    # broken class reference). stabkit writes no "type: description" data docstrings: put the prose back.
    original = _ORIGINAL_DATA_DOCS.pop(name, None)
    if original is not None:
        lines[:] = original


def setup(app: Sphinx) -> dict:
    app.setup_extension("sphinx.ext.mathjax")
    # MathJax on every page, not only on pages with maths: the navigation holds maths in page titles.
    app.set_html_assets_policy("always")
    app.connect("html-page-context", _drop_thebe, priority=900)
    app.connect("config-inited", _config_inited, priority=100)  # before the toc is read (900)
    app.connect("build-finished", _build_finished)
    app.connect("autodoc-process-docstring", _save_data_docstring, priority=400)
    app.connect("autodoc-process-docstring", _restore_data_docstring, priority=600)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
