"""Claims dashboard and landing figure of the book, generated from the executed notebooks.

Every figure page glues its claims with ``stabkit.report.page.glue_claim(prefix, claim)``: a variable
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
- ``book/_generated/summary.md``: the landing page's first minute, one row per page of the paper's
  figures (scale, test errors, coverage, verdicts of the paper's claims, what does not reproduce and why);
- ``book/_generated/claims.json``: the same claims as data (every field of :class:`Claim`), so that two builds
  can be compared: ``tools/dashboard.py --compare OLD.json`` lists the claims whose verdict changed;
- ``book/_generated/landing.md`` (+ ``landing-<hash>.png``, named by its content): the landing page's figure, included by
  ``book/intro.md`` (its paths are relative to ``book/``). It is the figure glued as ``landing_figure``
  (caption ``landing_caption``) by any page; otherwise, on the first page (in toc order) whose claims all
  hold, the figure its claims are about (the last figure before the page's first claim; illustrations of
  the task come earlier); otherwise a sentence saying that no page qualifies.

The Sphinx extension ``tools/sphinx_offline.py`` calls :func:`write_pages` at every build; by hand::

    .venv/bin/python tools/dashboard.py [--executed book/executed] [--book book] [--toc _toc.yml]
    .venv/bin/python tools/dashboard.py --compare saved/claims.json   # verdicts that changed since then
"""

from __future__ import annotations

import argparse
import ast
import base64
import functools
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["GLUE_PREFIX", "CLAIM_SUFFIX", "Claim", "glued", "parse_glued", "claims_of", "collect",
           "render_claims", "render_summary", "typeset", "source_of", "landing", "write_pages", "claims_json",
           "verdict_changes", "render_changes", "main"]

GLUE_PREFIX = "application/papermill.record/"
CLAIM_SUFFIX = "_claim"
LANDING_KEY, LANDING_CAPTION = "landing_figure", "landing_caption"
DASH = "\u2013"  # an empty table cell
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
    threshold: float | None = None
    n: int | None = None
    n_units: int | None = None
    unit: str = ""
    paper_value: str = ""
    reason: str = ""
    source: str = "paper"
    against: str = ""


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


def _int(v: Any) -> int | None:
    f = _num(v)
    return None if f is None else int(f)


def source_of(page: str, source: str = "", statement: str = "") -> str:
    """Whose statement a claim tests: ``"this project"`` (a hypothesis of this project, not a paper's),
    ``"related"`` (other papers: the probe pages) or ``"paper"``."""
    if "project" in source or "this project's hypothesis" in statement:
        return "this project"
    if source == "related" or page.startswith("probe"):
        return "related"
    return "paper"


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
            verdict=str(c["verdict"]), anchor=str(c.get("anchor") or ""), threshold=_num(c.get("threshold")),
            n=_int(c.get("n")), n_units=_int(c.get("n_units")), unit=str(c.get("unit") or ""),
            paper_value=str(c.get("paper_value") or ""), reason=str(c.get("reason") or ""),
            source=source_of(page, str(c.get("source") or ""), str(c.get("statement") or "")),
            against=str(c.get("against") or "")))
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


@functools.lru_cache(maxsize=64)
def _parsed(path: Path, mtime_ns: int, size: int) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def read_notebook(path: Path) -> dict:
    """An executed notebook, parsed once per build: the claims, the landing figure and the summary all read
    every notebook (a few MB each); a file rewritten since (another mtime or size) is parsed again. Callers
    read it and never change it."""
    st = path.stat()
    return _parsed(path.resolve(), st.st_mtime_ns, st.st_size)


def collect(executed: str | os.PathLike, toc: str | os.PathLike | None = None
            ) -> tuple[list[Claim], dict[str, str]]:
    """All claims of the executed notebooks in ``executed`` and ``{page: title}`` of every notebook."""
    claims, titles = [], {}
    for path in _notebooks(Path(executed), toc):
        nb = read_notebook(path)
        titles[path.stem] = title_of(nb, path.stem)
        claims += claims_of(nb, path.stem)
    return claims, titles


# ------------------------------------------------------------------------------------------ writing
def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def _cell(s: str) -> str:
    return " ".join(s.split()).replace("|", "\\|")


#: Plain-text maths of the claims' statements and their typeset form (MathJax renders ``$...$`` in tables),
#: applied in this order to the text outside ``$...$``.
_MATH = [(re.compile(r"eps_t = ([0-9.]+) sqrt\(R_f\)"), r"$\\epsilon_t = \1\\sqrt{R_f}$"),
         (re.compile(r"eps_t = a R_f\^b"), r"$\\epsilon_t = a R_f^b$"),
         (re.compile(r"\bsqrt\(R_f\)"), r"$\\sqrt{R_f}$"),
         (re.compile(r"\bR_f ~ 1\b"), r"$R_f \\sim 1$"),
         (re.compile(r"\bP_train = (\d+)"), r"$P_\\text{train} = \1$"),
         (re.compile(r"\beps_t\b"), r"$\\epsilon_t$"),
         (re.compile(r"\b([RDG])_([fk])\b"), r"$\1_\2$")]
_IN_MATH = re.compile(r"(\$[^$]*\$)")


def typeset(text: str) -> str:
    """``text`` with the plain-text maths of a claim (``R_f``, ``G_f``, ``eps_t = 0.2 sqrt(R_f)``...)
    written as inline TeX, so that a table shows $R_f$, not R_f (text already in ``$...$`` is kept)."""
    for pattern, repl in _MATH:
        text = "".join(p if _IN_MATH.fullmatch(p) else pattern.sub(repl, p) for p in _IN_MATH.split(text))
    return text


def _value(c: Claim) -> str:
    if c.value is None:
        return DASH
    value = _fmt(c.value)
    if c.ci_low is not None and c.ci_high is not None:
        value += f" [{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]"
    return value + (f" {typeset(_cell(c.unit))}" if c.unit else "")


#: A verdict counted: (one, several).
_COUNTED = {"holds": ("holds", "hold"), "does not hold": ("does not hold", "do not hold"),
            "cannot be tested at this scale": ("cannot be tested", "cannot be tested")}


def _counts(claims: list[Claim]) -> str:
    counts: dict[str, int] = {}
    for c in claims:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return ", ".join(f"{n} {_COUNTED.get(v, (v, v))[n != 1]}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _sample(c: Claim) -> str:
    if c.n is None:
        return "–"
    return f"{c.n}" + (f" ({c.n_units} arch.)" if c.n_units is not None else "")


_SECTIONS = (("paper", "The paper's claims",
              "Statements of Tomasini et al. (2023), and of Petrini et al. (2021) that it builds on."),
             ("this project", "This project's hypotheses",
              "Not statements of the paper: explanations this project proposes and tests."),
             ("related", "Claims of related papers",
              "Statements of other papers, measured with the related probes."))


def render_claims(claims: list[Claim], titles: dict[str, str], *, executed_rel: str = "executed") -> str:
    """The markdown of ``book/claims.md``: a summary line, then one table per source (the paper, this
    project's hypotheses, related papers) with one row per claim: statement, page, the paper's value,
    this build's value with its interval and unit, threshold, n, verdict and why."""
    # the page's own contents sidebar would take the width its table needs (a seven-column table was cut at
    # the right edge of a 1300-px window): removed on this page
    lines = ["---", "html_theme.sidebar_secondary.remove: true", "---", "", "# Claims dashboard", "",
             "Every claim checked on a page of this book, as the page computed it in this build (generated "
             "by `tools/dashboard.py` from the executed notebooks; the numbers are those of the page's "
             "scale, not the paper's). Intervals are 95 % intervals over architectures; n counts networks "
             "(and architectures); \u2013 means the page gives none. \"Cannot be tested at this scale\" "
             "gives its reason: a precondition of the claim that this build does not meet.", ""]
    if not titles:
        lines += ["No executed notebook was found in `book/executed/` when this page was generated: "
                  "run `make book` to execute the notebooks and fill this table."]
        return "\n".join(lines) + "\n"
    if not claims:
        lines += [f"None of the {len(titles)} executed pages glued a claim (a variable named "
                  f"`<prefix>{CLAIM_SUFFIX}`)."]
        return "\n".join(lines) + "\n"
    pages = len({c.page for c in claims})
    lines += [f"**{len(claims)} claims on {pages} pages.**", ""]
    for source, heading, blurb in _SECTIONS:
        rows = [c for c in claims if c.source == source]
        if not rows:
            continue
        lines += [f"## {heading}", "", f"{blurb} {len(rows)} claims: {_counts(rows)}.", "",
                  "| Statement (page, scale) | Paper | This build [95 % interval]; n | Threshold | Verdict |",
                  "|---|---|---|---|---|"]
        for c in rows:
            # A figure label that is only a slug (glue_claim defaults it to the page or sweep name): the title.
            label = c.figure if c.figure and not re.fullmatch(r"[\w.-]+", c.figure) else titles.get(c.page, c.page)
            label = _cell(label).replace("[", "\\[").replace("]", "\\]")
            target = f"{executed_rel}/{c.page}.ipynb" + (f"#{c.anchor}" if c.anchor else "")
            verdict = f"**{c.verdict}**" if c.verdict == "holds" else c.verdict
            why = "; ".join(x for x in (c.reason, f"goes the other way: {c.against}" if c.against and
                                        c.against not in c.reason else "") if x)
            if why:
                verdict += f" ({typeset(_cell(why))})"
            n = _sample(c)
            lines.append(f"| {typeset(_cell(c.statement))} ([{label}]({target}), {_cell(c.scale)}) | "
                         f"{typeset(_cell(c.paper_value)) or '–'} | {_value(c)}{'' if n == DASH else f'; n = {n}'} | "
                         f"{_fmt(c.threshold)} | {verdict} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


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
    nbs = [(p.stem, read_notebook(p)) for p in paths]
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


def _glued_text(g: dict[str, dict], key: str, default: str = "") -> str:
    if key not in g:
        return default
    try:
        v = parse_glued(g[key])
    except (ValueError, json.JSONDecodeError):
        return default
    return " ".join(str(v).split())


def _short(text: str, limit: int = 140) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, so that a number ("14.65 %") is
    never cut to a wrong one ("1…")."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:(") + "…"


def _coverage_cell(coverage: str) -> str:
    """A page's coverage sentence without its list of missing runs: the paper's grid, then the scale's."""
    parts = coverage.split("; ")
    return "; ".join(parts[:2] if parts[0].split(" (")[0].endswith("configurations") and "paper's" in parts[0]
                     else parts[:1])


def render_summary(executed: str | os.PathLike, toc: str | os.PathLike | None = None) -> str:
    """The landing page's first minute (``_generated/summary.md``): one row per page of the paper's
    figures with its scale, the test errors of its networks, its coverage, how many of the paper's
    claims hold, do not hold or cannot be tested, and which do not reproduce here and why."""
    rows, scales = [], set()
    for path in _notebooks(Path(executed), toc):
        if path.stem.startswith("probe"):
            continue
        nb = read_notebook(path)
        g = glued(nb)
        claims = [c for c in claims_of(nb, path.stem) if c.source == "paper"]
        scale = _glued_text(g, "scale") or ", ".join(sorted({c.scale for c in claims if c.scale}))
        if scale:
            scales.add(scale)
        if not claims and not _glued_text(g, "error_range"):
            continue  # an illustration page (no runs, no claim)
        verdicts = _counts(claims) or "no claim yet"
        # conditions (noise levels, tasks) repeat their claim: one entry per statement
        failing = list(dict.fromkeys(f"{c.statement.split(' (')[0]}: {_COUNTED.get(c.verdict, (c.verdict,))[0]}"
                                     + (f" ({_short(c.reason, 70)})" if c.reason else "")
                                     for c in claims if c.verdict != "holds"))
        more = f"; and {len(failing) - 3} more" if len(failing) > 3 else ""
        missing = typeset(_cell("; ".join(failing[:3]) + more)) or DASH
        rows.append(f"| [{_cell(title_of(nb, path.stem))}](executed/{path.stem}.ipynb) | {_cell(scale) or '–'} | "
                    f"{_cell(_glued_text(g, 'error_range', '–'))} | {_cell(_coverage_cell(_glued_text(g, 'coverage', '–')))} | "
                    f"{verdicts} | {missing} |")
    if not rows:
        return ("*No executed page was found when this page was built: run `make book`; the "
                "[claims dashboard](claims.md) will list every claim.*\n")
    head = ["**This build in one minute.** Every figure below was computed at a reduced scale "
            f"({', '.join(sorted(scales)) or 'see each page'}: fewer networks, seeds, epochs or a narrower "
            "width than the paper; the [Reproduce](reproduce.md) chapter says what each scale changes), so "
            "a verdict is a verdict at that scale. \"Cannot be tested\" means a precondition of the claim "
            "(e.g. networks below 10 % test error for \"$R_f$ falls by decades\") is not met here. One row "
            "per page of the paper; every claim, with its value, interval and n, is on the "
            "[claims dashboard](claims.md).", "",
            "| Page | Scale | Test error (best, last epoch) | Coverage | The paper's claims | Not reproduced here, and why |",
            "|---|---|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


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
    # named by its content: Sphinx refuses (a warning, an error under -W) to copy a changed image over the
    # one a previous build copied under the same name, so a rebuild after new results would fail
    png_name = None if png is None else f"landing-{hashlib.sha1(png).hexdigest()[:10]}.png"
    for old in gen.glob("landing*.png"):
        if old.name != png_name:
            old.unlink()
    if png is None:
        why = ("no executed notebook was found at build time (run `make book`)" if not titles else
               "no page of this build has a figure whose claims all hold")
        landing_md = (f"*No figure here: {why}. The [claims dashboard](claims.md) lists every claim and "
                      "its verdict.*\n")
    else:
        alt = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", " ".join(caption.split()))  # links -> text
        # An image and a caption paragraph, not a {figure}: Sphinx would number it "Fig. 1", which reads as
        # the paper's Figure 1.
        landing_md = (f"```{{image}} _generated/{png_name}\n"
                      f":alt: {alt[:250]}\n"
                      ":width: 100%\n"
                      ":align: center\n```\n\n"
                      f"*{caption}*\n")
    written = []
    for path, content in ((book / "claims.md", render_claims(claims, titles).encode()),
                          (gen / "claims.json", claims_json(claims).encode()),
                          (gen / "landing.md", landing_md.encode()),
                          (gen / "summary.md", render_summary(executed, toc).encode()),
                          *([(gen / png_name, png)] if png_name else [])):
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            written.append(path)
    return written


# ------------------------------------------------------------------------------------- comparing builds
def claims_json(claims: list[Claim]) -> str:
    """The claims as a JSON list of objects (the fields of :class:`Claim`), one build's record."""
    finite = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731 - JSON has no inf
    return json.dumps([{k: finite(v) for k, v in asdict(c).items()} for c in claims], indent=1, default=str) + "\n"


def verdict_changes(old: list[dict], new: list[Claim]) -> list[dict]:
    """Claims whose verdict differs between a saved build (``old``: :func:`claims_json`'s objects) and
    ``new``, matched by page and glue name: ``{page, figure, scale, statement, before, after, value_before,
    value_after}``; a claim present in one build only has ``before`` or ``after`` = ``"(absent)"``."""
    before = {(c["page"], c["key"]): c for c in old}
    after = {(c.page, c.key): asdict(c) for c in new}
    out = []
    for k in [*after, *(k for k in before if k not in after)]:
        b, a = before.get(k), after.get(k)
        if b is not None and a is not None and b["verdict"] == a["verdict"]:
            continue
        ref = a or b
        out.append({"page": k[0], "figure": ref["figure"], "scale": ref["scale"], "statement": ref["statement"],
                    "before": b["verdict"] if b else "(absent)", "after": a["verdict"] if a else "(absent)",
                    "value_before": b.get("value") if b else None, "value_after": a.get("value") if a else None})
    return out


def render_changes(changes: list[dict]) -> str:
    """:func:`verdict_changes` as a Markdown table (a sentence when nothing changed)."""
    if not changes:
        return "No claim changed its verdict.\n"
    lines = ["| page | scale | claim | before | after | value before | value after |", "|---|---|---|---|---|---|---|"]
    for c in changes:
        lines.append(f"| {c['figure'] or c['page']} | {c['scale']} | {_cell(c['statement'])} | {c['before']} | "
                     f"{c['after']} | {_fmt(c['value_before'])} | {_fmt(c['value_after'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write book/claims.md and the landing figure from executed notebooks.")
    ap.add_argument("--book", default=str(REPO / "book"))
    ap.add_argument("--executed", default=None, help="default: BOOK/executed")
    ap.add_argument("--toc", default=None, help="default: BOOK/../_toc.yml")
    ap.add_argument("--compare", metavar="OLD.json", default=None,
                    help="also list the claims whose verdict changed since a saved BOOK/_generated/claims.json")
    args = ap.parse_args(argv)
    old = None
    if args.compare:
        try:
            old = json.loads(Path(args.compare).read_text(encoding="utf-8"))
            if not isinstance(old, list) or not all(isinstance(c, dict) and {"page", "key", "verdict"} <= set(c)
                                                    for c in old):
                raise ValueError("not a list of claims with page, key and verdict")
        except (OSError, ValueError) as exc:
            print(f"dashboard: --compare {args.compare}: {exc} (expected a claims.json that a build wrote)",
                  file=sys.stderr)
            return 2
    try:
        written = write_pages(args.book, args.executed, args.toc)
    except ValueError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        return 1
    book = Path(args.book)
    claims, _ = collect(Path(args.executed or book / "executed"), args.toc or book.parent / "_toc.yml")
    print(f"dashboard: {len(claims)} claims; wrote {', '.join(map(str, written)) or 'nothing new'}")
    if old is not None:
        print(render_changes(verdict_changes(old, claims)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
