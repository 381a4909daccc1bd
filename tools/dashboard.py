"""Claims dashboard and landing figure of the book, generated from the executed notebooks.

Every figure page glues its claims with ``stabkit.report.glue.glue_claim(prefix, claim)``: a variable
named ``<prefix>_claim`` holding a JSON string (glued with ``display=False``, so hidden on the page)::

    {"id": "rf_falls", "statement": "R_f falls by at least a decade with training",
     "figure": "Fig. 1", "scale": "small", "value": -1.4, "ci_low": -1.9,
     "ci_high": -0.8, "verdict": "holds"}

(``page`` may replace or complement ``figure``; ``anchor`` names a section of the page to link to;
other keys are ignored.) This module reads myst-nb's glue outputs (display outputs whose metadata holds
``scrapbook = {name, mime_prefix}``, data under ``application/papermill.record/<mime>`` when hidden)
from ``book/executed/*.ipynb`` and writes:

- ``book/claims.md``: one table row per claim (claim, figure, scale, value with its interval, verdict,
  link to the page), pages in table-of-contents order;
- ``book/_generated/landing.md`` (+ ``landing.png``): the landing page's figure, included by
  ``book/intro.md`` (its paths are relative to ``book/``). It is the figure glued as ``landing_figure``
  (caption ``landing_caption``) by any page; otherwise, on the first page (in toc order) whose claims all
  hold, the figure its claims are about (the last figure before the page's first claim; illustrations of
  the task come earlier); otherwise a sentence saying that no page qualifies.

The Sphinx extension ``tools/sphinx_offline.py`` calls :func:`write_pages` at every build; by hand::

    .venv/bin/python tools/dashboard.py [--executed book/executed] [--book book] [--toc _toc.yml]
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["GLUE_PREFIX", "CLAIM_SUFFIX", "Claim", "glued", "parse_glued", "claims_of", "collect",
           "render_claims", "landing", "write_pages", "main"]

GLUE_PREFIX = "application/papermill.record/"
CLAIM_SUFFIX = "_claim"
LANDING_KEY, LANDING_CAPTION = "landing_figure", "landing_caption"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Claim:
    """One glued claim of one page (``page`` is the notebook's name, ``key`` the glue name)."""

    page: str
    key: str
    id: str
    statement: str
    figure: str
    scale: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str
    anchor: str = ""


# ------------------------------------------------------------------------------------------ reading
def glued(nb: dict) -> dict[str, dict]:
    """``{name: data}`` for every glue output of notebook ``nb`` (a parsed .ipynb dict).

    ``data`` is the mime bundle with the hidden-glue prefix removed (``{"text/plain": ...}``...). A name
    glued twice keeps its last value, as myst-nb does.
    """
    out: dict[str, dict] = {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            meta = output.get("metadata") or {}
            sb = meta.get("scrapbook") if isinstance(meta, dict) else None
            if not isinstance(sb, dict) or "name" not in sb:
                continue
            n = len(sb.get("mime_prefix", "") or "")
            out[sb["name"]] = {k[n:] if k.startswith(GLUE_PREFIX) else k: v
                               for k, v in (output.get("data") or {}).items()}
    return out


def _text(v: Any) -> str:
    return "".join(v) if isinstance(v, list) else str(v)


def parse_glued(data: dict) -> Any:
    """The Python value of a glued bundle: ``application/json`` if present, else ``text/plain`` read as a
    Python literal (the ``repr`` IPython displays), a JSON string inside it decoded as well."""
    if "application/json" in data:
        value = data["application/json"]
        if isinstance(value, str):
            value = json.loads(value)
    elif "text/plain" in data:
        text = _text(data["text/plain"]).strip()
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
    else:
        raise ValueError(f"glued value has no text/plain or application/json data (mime types: {sorted(data)})")
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("{"):
            value = json.loads(s)
    return value


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def claims_of(nb: dict, page: str) -> list[Claim]:
    """The claims glued in notebook ``nb`` (names ending in ``_claim``), in notebook order.

    Raises ``ValueError`` naming the page and key when a claim is not a JSON object with an ``id`` or
    ``statement`` and a ``verdict``.
    """
    claims = []
    for key, data in glued(nb).items():
        if not key.endswith(CLAIM_SUFFIX):
            continue
        try:
            c = parse_glued(data)
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{page}: glued claim {key!r} is not valid JSON: {exc}") from exc
        if not isinstance(c, dict) or "verdict" not in c or not ({"id", "statement"} & set(c)):
            raise ValueError(f"{page}: glued claim {key!r} must be a JSON object with 'id' or 'statement' "
                             f"and 'verdict', got {c!r:.200}")
        cid = str(c.get("id") or key.removesuffix(CLAIM_SUFFIX))
        claims.append(Claim(
            page=page, key=key, id=cid, statement=str(c.get("statement") or cid),
            figure=str(c.get("figure") or c.get("page") or ""), scale=str(c.get("scale") or ""),
            value=_num(c.get("value")), ci_low=_num(c.get("ci_low")), ci_high=_num(c.get("ci_high")),
            verdict=str(c["verdict"]), anchor=str(c.get("anchor") or "")))
    return claims


def toc_order(toc: str | os.PathLike | None) -> list[str]:
    """Notebook names in the order of ``_toc.yml``'s ``book/executed/<name>`` entries ([] if no toc)."""
    if not toc or not Path(toc).is_file():
        return []
    return re.findall(r"book/executed/([A-Za-z0-9_.-]+)", Path(toc).read_text(encoding="utf-8"))


def _notebooks(executed: Path, toc: str | os.PathLike | None) -> list[Path]:
    found = {p.stem: p for p in sorted(executed.glob("*.ipynb"))} if executed.is_dir() else {}
    order = [n for n in toc_order(toc) if n in found]
    return [found[n] for n in order] + [p for n, p in found.items() if n not in order]


def title_of(nb: dict, default: str) -> str:
    """The first ``# `` heading of the notebook's markdown cells, else ``default``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in _text(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return default


def collect(executed: str | os.PathLike, toc: str | os.PathLike | None = None
            ) -> tuple[list[Claim], dict[str, str]]:
    """All claims of the executed notebooks in ``executed`` and ``{page: title}`` of every notebook."""
    claims, titles = [], {}
    for path in _notebooks(Path(executed), toc):
        nb = json.loads(path.read_text(encoding="utf-8"))
        titles[path.stem] = title_of(nb, path.stem)
        claims += claims_of(nb, path.stem)
    return claims, titles


# ------------------------------------------------------------------------------------------ writing
def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def _cell(s: str) -> str:
    return " ".join(s.split()).replace("|", "\\|")


def render_claims(claims: list[Claim], titles: dict[str, str], *, executed_rel: str = "executed") -> str:
    """The markdown of ``book/claims.md``: a summary line and one table row per claim."""
    lines = ["# Claims dashboard", "",
             "Every claim checked on a page of this book, as the page computed it in this build (generated "
             "by `tools/dashboard.py` from the executed notebooks; the numbers are those of the page's "
             "scale, not the paper's). The interval is the one the page reports (its method is on the page); "
             "*n/a* means the page gives none.", ""]
    if not titles:
        lines += ["No executed notebook was found in `book/executed/` when this page was generated: "
                  "run `make book` to execute the notebooks and fill this table."]
        return "\n".join(lines) + "\n"
    if not claims:
        lines += [f"None of the {len(titles)} executed pages glued a claim (a variable named "
                  f"`<prefix>{CLAIM_SUFFIX}`)."]
        return "\n".join(lines) + "\n"
    counts: dict[str, int] = {}
    for c in claims:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    pages = len({c.page for c in claims})
    lines += [f"**{len(claims)} claims on {pages} pages:** {summary}.", "",
              "| Claim | Figure (link to its page) | Scale | Value [interval] | Verdict |",
              "|---|---|---|---|---|"]
    for c in claims:
        value = _fmt(c.value)
        if c.ci_low is not None or c.ci_high is not None:
            value += f" [{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]"
        # A figure label that is only a slug (glue_claim defaults it to the page or sweep name): use the title.
        label = c.figure if c.figure and not re.fullmatch(r"[\w.-]+", c.figure) else titles.get(c.page, c.page)
        label = _cell(label).replace("[", "\\[").replace("]", "\\]")
        target = f"{executed_rel}/{c.page}.ipynb" + (f"#{c.anchor}" if c.anchor else "")
        verdict = f"**{c.verdict}**" if c.verdict == "holds" else c.verdict
        lines.append(f"| {_cell(c.statement)} | [{label}]({target}) | {_cell(c.scale)} | {value} | {verdict} |")
    return "\n".join(lines) + "\n"


def _result_png(nb: dict) -> str | None:
    """The figure a page's claims are about: the last figure shown before its first glued claim (a page
    shows its task and examples first, then the result, then checks the claims); with no claim before any
    figure, the first figure."""
    first = last = None
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            sb = (output.get("metadata") or {}).get("scrapbook")
            if isinstance(sb, dict) and str(sb.get("name", "")).endswith(CLAIM_SUFFIX):
                if last is not None:
                    return last
                continue
            png = (output.get("data") or {}).get("image/png")
            if png and not sb:
                last = _text(png)
                first = first or last
    return first


def _claims_word(n: int) -> str:
    return "only claim holds" if n == 1 else f"{n} claims all hold"


def landing(executed: str | os.PathLike, toc: str | os.PathLike | None = None
            ) -> tuple[bytes | None, str]:
    """``(png, caption_markdown)`` of the landing figure (see the module docstring); ``png`` None if none."""
    paths = _notebooks(Path(executed), toc)
    nbs = [(p.stem, json.loads(p.read_text(encoding="utf-8"))) for p in paths]
    for name, nb in nbs:  # 1. an explicitly glued landing figure
        g = glued(nb)
        if LANDING_KEY in g and "image/png" in g[LANDING_KEY]:
            cap = parse_glued(g[LANDING_CAPTION]) if LANDING_CAPTION in g else ""
            cap = str(cap) or f"A figure of {title_of(nb, name)}."
            return (base64.b64decode(_text(g[LANDING_KEY]["image/png"])),
                    f"{cap} From [{title_of(nb, name)}](executed/{name}.ipynb).")
    for name, nb in nbs:  # 2. the first page whose claims all hold
        claims = claims_of(nb, name)
        png = _result_png(nb)
        if claims and png and all(c.verdict == "holds" for c in claims):
            scales = sorted({c.scale for c in claims if c.scale})
            return (base64.b64decode(png),
                    f"A figure of [{title_of(nb, name)}](executed/{name}.ipynb), a page whose "
                    f"{_claims_word(len(claims))} in this build (scale {', '.join(scales) or 'as stated there'}).")
    return None, ""


def write_pages(book: str | os.PathLike = REPO / "book", executed: str | os.PathLike | None = None,
                toc: str | os.PathLike | None = None) -> list[Path]:
    """Write ``claims.md`` and ``_generated/landing.md`` (+ png) under ``book``; returns the paths written.

    Files are only rewritten when their content changes (so Sphinx does not rebuild pages needlessly).
    """
    book = Path(book)
    executed = Path(executed) if executed else book / "executed"
    toc = toc if toc is not None else book.parent / "_toc.yml"
    claims, titles = collect(executed, toc)
    gen = book / "_generated"
    gen.mkdir(exist_ok=True)
    png, caption = landing(executed, toc)
    if png is None:
        why = ("no executed notebook was found at build time (run `make book`)" if not titles else
               "no page of this build has a figure whose claims all hold")
        landing_md = (f"*No figure here: {why}. The [claims dashboard](claims.md) lists every claim and "
                      "its verdict.*\n")
    else:
        alt = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", " ".join(caption.split()))  # links -> text
        # An image and a caption paragraph, not a {figure}: Sphinx would number it "Fig. 1", which reads as
        # the paper's Figure 1.
        landing_md = ("```{image} _generated/landing.png\n"
                      f":alt: {alt[:250]}\n"
                      ":width: 100%\n"
                      ":align: center\n```\n\n"
                      f"*{caption}*\n")
    written = []
    for path, content in ((book / "claims.md", render_claims(claims, titles).encode()),
                          (gen / "landing.md", landing_md.encode()),
                          (gen / "landing.png", png)):
        if content is None:
            if path.exists():
                path.unlink()
            continue
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write book/claims.md and the landing figure from executed notebooks.")
    ap.add_argument("--book", default=str(REPO / "book"))
    ap.add_argument("--executed", default=None, help="default: BOOK/executed")
    ap.add_argument("--toc", default=None, help="default: BOOK/../_toc.yml")
    args = ap.parse_args(argv)
    try:
        written = write_pages(args.book, args.executed, args.toc)
    except ValueError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 1
    book = Path(args.book)
    claims, _ = collect(Path(args.executed or book / "executed"), args.toc or book.parent / "_toc.yml")
    print(f"dashboard: {len(claims)} claims; wrote {', '.join(map(str, written)) or 'nothing new'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
