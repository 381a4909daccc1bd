"""Check that the built book works offline: no external asset, typeset maths, images that load.

Two checks over every page of a built Jupyter Book (``_build/html``):

``static``
    Parses each HTML file (standard library only) and reports every *external* script, stylesheet,
    image, font, frame or media source: anything a browser would fetch from another host when the page
    opens. Hyperlinks (``<a href>``) are not assets and are allowed. Fast, needs no browser; the Sphinx
    extension ``tools/sphinx_offline.py`` runs it at the end of every build, and ``tests/test_site.py``
    runs it on the built site.

``browser``
    Opens each page from ``file://`` (what a reader does with ``_build/html/index.html``) in headless
    Chromium, driven by Playwright (``pip install -e ".[book]"``; the browser is Debian's ``chromium``,
    no browser download). Every request that is not ``file:``/``data:``/``blob:`` is blocked and
    reported. Per page it reports raw TeX left in the rendered text (``\\(``, ``\\)``, ``\\[``, ``\\]``,
    ``$$`` or a ``\\command`` outside code), MathJax errors, broken images, external or failed requests,
    console errors and uncaught exceptions, and saves a screenshot. Images without a real alt text (none,
    or a file name) are listed as *notes*: reported, not failures.

Usage::

    .venv/bin/python tools/check_site.py [static|browser|all] [SITE] [--shots DIR] [--only PAGE ...]

Exit status: 0 when every page is clean, 1 when a page has a problem, 2 on bad usage (no site, no
browser). ``make check-book`` runs ``all``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["Asset", "external_assets", "is_external", "raw_tex", "site_pages", "check_static", "check_tables", "table_problems",
           "check_browser", "main", "CHROMIUM_FLAGS"]

# Schemes a page may load from without a network.
LOCAL_SCHEMES = frozenset({"", "file", "data", "blob", "about", "javascript", "mailto"})

# Flags for a headless Chromium on a machine without network: no background traffic, fresh profile.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")

# What counts as raw TeX in rendered text (code blocks excluded).
_RAW_TEX = re.compile(r"\\[()\[\]]|\$\$|\\[A-Za-z]{2,}")


def is_external(url: str) -> bool:
    """True when a browser would fetch ``url`` from another host (``http(s)://...`` or ``//host/...``).

    Relative paths, ``file:``, ``data:``, ``blob:`` and fragment-only URLs are local.
    """
    url = url.strip()
    if not url or url.startswith("#"):
        return False
    if url.startswith("//"):
        return True
    return urlsplit(url).scheme.lower() not in LOCAL_SCHEMES


@dataclass(frozen=True)
class Asset:
    """One resource a page loads: ``tag`` (``script``, ``link[stylesheet]``, ``img``, ``css url()``...),
    ``url`` and the 1-based ``line`` of the HTML file it appears on."""

    tag: str
    url: str
    line: int


# <link rel=...> values that make the browser fetch the target when the page opens.
_FETCHING_RELS = frozenset({"stylesheet", "preload", "modulepreload", "prefetch", "icon", "shortcut",
                            "apple-touch-icon", "manifest", "import"})
_SRC_TAGS = frozenset({"script", "img", "iframe", "embed", "audio", "video", "source", "track", "input"})
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)""")
_CSS_IMPORT = re.compile(r"""@import\s+['"]([^'"]+)['"]""")


class _AssetParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.assets: list[Asset] = []
        self._in_style = False

    def _add(self, tag: str, url: str | None) -> None:
        if url:
            self.assets.append(Asset(tag, url.strip(), self.getpos()[0]))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "link":
            rels = set(a.get("rel", "").lower().split())
            if rels & _FETCHING_RELS:
                self._add(f"link[{' '.join(sorted(rels))}]", a.get("href"))
        elif tag in _SRC_TAGS:
            self._add(tag, a.get("src"))
            if tag == "img" and a.get("srcset"):
                for part in a["srcset"].split(","):
                    self._add("img[srcset]", part.strip().split(" ")[0])
        elif tag == "object":
            self._add("object", a.get("data"))
        if tag == "video":
            self._add("video[poster]", a.get("poster"))
        if "style" in a:
            for url in _CSS_URL.findall(a["style"]):
                self._add(f"{tag}[style]", url)
        if tag == "style":
            self._in_style = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            for url in _CSS_URL.findall(data) + _CSS_IMPORT.findall(data):
                self._add("style", url)


def external_assets(html: str) -> list[Asset]:
    """Every external resource that ``html`` makes a browser fetch on opening (not hyperlinks)."""
    parser = _AssetParser()
    parser.feed(html)
    parser.close()
    return [a for a in parser.assets if is_external(a.url)]


# Table cells: a literal NaN (a missing number must read as a dash or words) and plain-text maths that
# should be typeset ($R_f$, not R_f; $\epsilon_t$, not eps_t; $\sqrt{R_f}$, not sqrt(R_f)).
_NAN = re.compile(r"(?<![\w.])(?:nan|NaN|NAN)(?![\w])")
_PLAIN_MATHS = re.compile(r"\b[RDG]_[fk]\b|\beps_t\b|\bsqrt\(")
_SKIP_TAGS = frozenset({"code", "pre", "script", "style", "mjx-container", "math"})
_VOID = frozenset({"br", "img", "hr", "input", "meta", "link", "wbr", "col", "source", "area", "base", "embed",
                   "param", "track"})


class _CellParser(HTMLParser):
    """The visible text of every table cell (``td``, ``th``), without code and typeset maths (elements
    with class ``math`` / ``MathJax`` hold TeX source that MathJax renders)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: list[tuple[int, str, bool]] = []  # (line, text, in a pandas DataFrame)
        self._tables: list[bool] = []
        self._cell: list[str] | None = None
        self._line = 0
        self._stack: list[bool] = []  # per open element: does it hide its text?

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        cls = " ".join(v or "" for k, v in attrs if k == "class").split()
        if tag == "table":
            self._tables.append("dataframe" in cls)
        self._stack.append(tag in _SKIP_TAGS or "math" in cls or "MathJax" in cls or "mjx" in " ".join(cls))
        if tag in ("td", "th"):
            self._cell, self._line = [], self.getpos()[0]

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append((self._line, " ".join("".join(self._cell).split()), bool(self._tables and
                                                                                      self._tables[-1])))
            self._cell = None
        if tag == "table" and self._tables:
            self._tables.pop()
        if self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not any(self._stack):
            self._cell.append(data)


def table_problems(html: str) -> list[str]:
    """Table cells of ``html`` that show a literal NaN (any table) or plain-text maths (``R_f``,
    ``eps_t``, ``sqrt(``) outside typeset maths and code (the book's own tables: a pandas DataFrame's
    column names are the CSV's column names, code), one problem per cell with its line."""
    parser = _CellParser()
    parser.feed(html)
    parser.close()
    out = []
    for line, text, dataframe in parser.cells:
        if _NAN.search(text):
            out.append(f"NaN in a table cell (line {line}): {text[:80]}")
        m = None if dataframe else _PLAIN_MATHS.search(text)
        if m:
            out.append(f"plain-text maths {m.group(0)!r} in a table cell (line {line}): {text[:80]}")
    return out


def check_tables(site: str | os.PathLike) -> dict[str, list[str]]:
    """``{page: [problem, ...]}`` for pages of ``site`` whose tables show a literal NaN or plain-text
    maths (:func:`table_problems`; empty if none). Part of ``check_site.py static`` (``make check-book``),
    not of the build's own offline check."""
    root = Path(site)
    problems: dict[str, list[str]] = {}
    for page in site_pages(root):
        found = table_problems(page.read_text(encoding="utf-8", errors="replace"))
        if found:
            problems[page.relative_to(root).as_posix()] = found
    return problems


def raw_tex(text: str) -> list[str]:
    """Raw TeX fragments in rendered page text (``\\(``, ``\\[``, ``$$``, ``\\frac``...), with context.

    ``text`` is the page's visible text with code blocks and typeset maths removed.
    """
    found = []
    for m in _RAW_TEX.finditer(text):
        a, b = max(m.start() - 30, 0), min(m.end() + 30, len(text))
        found.append(" ".join(text[a:b].split()))
    return found


def site_pages(site: str | os.PathLike) -> list[Path]:
    """The HTML pages of a built site, sorted; files under ``_static``, ``_sources`` etc. are skipped."""
    root = Path(site)
    if not (root / "index.html").is_file():
        raise FileNotFoundError(f"site {root} has no index.html: build the book first (make book)")
    return sorted(p for p in root.rglob("*.html")
                  if not any(part.startswith("_") for part in p.relative_to(root).parts[:-1]))


def check_static(site: str | os.PathLike) -> dict[str, list[str]]:
    """``{page: [problem, ...]}`` for pages of ``site`` that reference external assets (empty if none)."""
    root = Path(site)
    problems: dict[str, list[str]] = {}
    for page in site_pages(root):
        html = page.read_text(encoding="utf-8", errors="replace")
        found = [f"external {a.tag} (line {a.line}): {a.url}" for a in external_assets(html)]
        if found:
            problems[page.relative_to(root).as_posix()] = found
    # Stylesheets can pull fonts and imports from other hosts too.
    for css in sorted(root.rglob("*.css")):
        text = css.read_text(encoding="utf-8", errors="replace")
        urls = [u for u in _CSS_URL.findall(text) + _CSS_IMPORT.findall(text) if is_external(u)]
        if urls:
            problems[css.relative_to(root).as_posix()] = [f"external url in stylesheet: {u}" for u in urls]
    return problems


# ------------------------------------------------------------------------------------------ browser
@dataclass
class PageReport:
    page: str
    problems: list[str] = field(default_factory=list)
    maths: int = 0
    images: int = 0
    screenshot: str | None = None
    notes: list[str] = field(default_factory=list)


# Visible text without code, scripts and typeset maths; MathJax errors and broken images counted.
_PAGE_PROBE_JS = r"""() => {
  const clone = document.body.cloneNode(true);
  // Code is code (API signatures included: a constant's value may hold TeX strings).
  clone.querySelectorAll('pre, code, script, style, noscript, textarea, mjx-container, .MathJax, '
      + '.highlight, .search, #searchbox, dt.sig').forEach(e => e.remove());
  const imgs = Array.from(document.images);
  return {
    text: clone.textContent,
    maths: document.querySelectorAll('mjx-container').length,
    mathSources: document.querySelectorAll('.math').length,
    texErrors: Array.from(document.querySelectorAll('mjx-merror'))
        .map(e => e.getAttribute('data-mjx-error') || e.textContent).slice(0, 5),
    images: imgs.length,
    broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src')),
    noAlt: imgs.filter(i => { const a = (i.getAttribute('alt') || '').trim();
        return !a || /^[^\s]*\.(png|jpe?g|svg|gif|webp)$/i.test(a); }).map(i => i.getAttribute('src')),
    mathjax: typeof window.MathJax === 'object' && !!window.MathJax.startup,
  };
}"""

_WAIT_MATHJAX_JS = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  return true;
}"""


def find_chromium(explicit: str | None = None) -> str:
    """Path of the Chromium binary: ``explicit``, ``$CHROMIUM``, or ``chromium`` on the PATH."""
    for cand in (explicit, os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and Path(cand).is_file():
            return cand
    raise FileNotFoundError("no Chromium found: install Debian's `chromium` (apt-get install chromium) "
                            "or pass --chromium PATH / set CHROMIUM")


def _settle(page, timeout_ms: int) -> dict:  # noqa: ANN001 - playwright Page
    """Wait for load and MathJax, then probe the page; a redirect (meta refresh) restarts the wait."""
    from playwright.sync_api import Error as PlaywrightError

    for _ in range(5):
        try:
            page.wait_for_load_state("load", timeout=timeout_ms)
            page.evaluate(_WAIT_MATHJAX_JS)
            page.wait_for_timeout(200)  # late requests (fonts, lazy MathJax components)
            return page.evaluate(_PAGE_PROBE_JS)
        except PlaywrightError as exc:
            if "context was destroyed" not in str(exc) and "navigat" not in str(exc):
                raise
            page.wait_for_timeout(300)
    raise RuntimeError(f"page {page.url} kept navigating")


def check_browser(site: str | os.PathLike, *, shots: str | os.PathLike | None = None,
                  only: list[str] | None = None, chromium: str | None = None,
                  full_page: bool = False, timeout_ms: int = 30_000) -> list[PageReport]:
    """Open every page of ``site`` from ``file://`` in headless Chromium and report its problems.

    Requests other than ``file:``/``data:``/``blob:`` are aborted (so a page can never wait on the
    network) and reported. ``shots``: folder for one PNG screenshot per page (viewport, or the whole
    page with ``full_page``). ``only``: page paths relative to the site (``index.html``...).
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the browser check needs playwright: pip install -e '.[book]'") from exc
    import tempfile

    root = Path(site).resolve()
    pages = site_pages(root)
    if only:
        wanted = {o.removesuffix(".html") for o in only}
        pages = [p for p in pages if p.relative_to(root).as_posix().removesuffix(".html") in wanted]
        if not pages:
            raise ValueError(f"only: no page of {root} matches {only}")
    shot_dir = Path(shots) if shots else None
    if shot_dir:
        shot_dir.mkdir(parents=True, exist_ok=True)
    exe = find_chromium(chromium)
    reports: list[PageReport] = []
    with tempfile.TemporaryDirectory(prefix="stabkit-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=exe, headless=True, args=list(CHROMIUM_FLAGS[1:]),
            viewport={"width": 1280, "height": 900})
        current: dict[str, PageReport] = {}

        def on_route(route):  # noqa: ANN001 - playwright object
            url = route.request.url
            if is_external(url) and not url.startswith(("data:", "blob:")):
                current["r"].problems.append(f"external request blocked: {url}")
                route.abort()
            else:
                route.continue_()

        ctx.route("**/*", on_route)
        page = ctx.new_page()
        page.on("console", lambda m: m.type == "error" and current["r"].problems.append(
            f"console error: {m.text}"))
        page.on("pageerror", lambda e: current["r"].problems.append(f"uncaught exception: {e}"))
        page.on("requestfailed", lambda r: not is_external(r.url) and current["r"].problems.append(
            f"failed request: {r.url} ({r.failure})"))
        for path in pages:
            rel = path.relative_to(root).as_posix()
            rep = current["r"] = PageReport(rel)
            page.goto(path.as_uri(), wait_until="load", timeout=timeout_ms)
            info = _settle(page, timeout_ms)
            if page.url != path.as_uri():  # index.html redirects to the root page
                rep.problems += [] if page.url.startswith(root.as_uri()) else [f"left the site: {page.url}"]
            rep.maths, rep.images = info["maths"], info["images"]
            if info["mathSources"] and not info["mathjax"]:
                rep.problems.append(f"MathJax did not load ({info['mathSources']} maths elements)")
            rep.problems += [f"raw TeX: ...{t}..." for t in raw_tex(info["text"])]
            rep.problems += [f"TeX error: {t}" for t in info["texErrors"]]
            rep.problems += [f"broken image: {src}" for src in info["broken"]]
            rep.notes += [f"image without alt text: {src}" for src in info["noAlt"]]
            if shot_dir:
                out = shot_dir / (rel.replace("/", "__").removesuffix(".html") + ".png")
                page.screenshot(path=str(out), full_page=full_page)
                rep.screenshot = str(out)
            reports.append(rep)
        ctx.close()
    return reports


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("check", nargs="?", choices=("static", "browser", "all"), default="all")
    ap.add_argument("site", nargs="?", default="_build/html", help="built site (default _build/html)")
    ap.add_argument("--shots", default="_build/site-check", help="screenshot folder ('' for none)")
    ap.add_argument("--full-page", action="store_true", help="screenshot whole pages, not the viewport")
    ap.add_argument("--only", nargs="+", metavar="PAGE", help="pages to open, e.g. index book/methods")
    ap.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM or chromium on the PATH)")
    ap.add_argument("--json", help="also write the per-page report as JSON to this file")
    args = ap.parse_args(argv)
    site = Path(args.site)
    try:
        site_pages(site)
    except FileNotFoundError as exc:
        print(f"check_site: {exc}", file=sys.stderr)
        return 2
    bad = 0
    report: dict[str, dict] = {}
    if args.check in ("static", "all"):
        static = check_static(site)
        tables = check_tables(site)
        for found in (static, tables):
            for page, problems in found.items():
                report.setdefault(page, {"problems": []})["problems"] += problems
        bad += len(set(static) | set(tables))
        print(f"static: {len(site_pages(site))} pages, {len(static)} with external assets, {len(tables)} with NaN "
              f"or plain-text maths in a table")
    if args.check in ("browser", "all"):
        try:
            reps = check_browser(site, shots=args.shots or None, only=args.only, chromium=args.chromium,
                                 full_page=args.full_page)
        except (FileNotFoundError, ImportError) as exc:
            print(f"check_site: {exc}", file=sys.stderr)
            return 2
        for r in reps:
            entry = report.setdefault(r.page, {"problems": []})
            entry.update(maths=r.maths, images=r.images, screenshot=r.screenshot, notes=r.notes)
            entry["problems"] += r.problems
        bad += sum(1 for r in reps if r.problems)
        print(f"browser: {len(reps)} pages opened, {sum(1 for r in reps if r.problems)} with problems, "
              f"{sum(r.maths for r in reps)} formulas typeset, {sum(r.images for r in reps)} images")
    for page, entry in sorted(report.items()):
        status = "FAIL" if entry["problems"] else "ok"
        extra = f" ({entry['maths']} maths, {entry['images']} images)" if "maths" in entry else ""
        print(f"  {status:4} {page}{extra}")
        for p in entry["problems"][:20]:
            print(f"         {p}")
        if len(entry["problems"]) > 20:
            print(f"         ... and {len(entry['problems']) - 20} more")
        notes = entry.get("notes") or []
        for n in notes[:5]:
            print(f"         note: {n}")
        if len(notes) > 5:
            print(f"         note: ... and {len(notes) - 5} more")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, sort_keys=True), encoding="utf-8")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
