"""The book site: works offline (MathJax from the site, no external asset), claims dashboard, browser check.

Fast unit tests of ``tools/check_site.py``, ``tools/dashboard.py`` and ``tools/sphinx_offline.py`` on
synthetic HTML and notebooks; a check of the built site when ``_build/html`` exists (skipped otherwise);
a real headless-Chromium run on a two-page synthetic site when Chromium and playwright are installed.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

check_site = importlib.import_module("check_site")
dashboard = importlib.import_module("dashboard")

SITE = REPO / "_build" / "html"

# A 1x1 PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
                       "AAAABJRU5ErkJggg==")


# ------------------------------------------------------------------------------------ static checker
@pytest.mark.parametrize("url, external", [
    ("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js", True),
    ("http://example.org/a.css", True),
    ("//unpkg.com/thebe", True),
    ("_static/mathjax/tex-chtml.js", False),
    ("../_static/x.css?v=1", False),
    ("data:image/png;base64,AAAA", False),
    ("file:///tmp/x.html", False),
    ("#section", False),
    ("", False),
])
def test_is_external(url, external):
    assert check_site.is_external(url) is external


def test_external_assets_flags_scripts_styles_images_fonts_not_links():
    html = """<html><head>
    <script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>
    <script src="_static/local.js"></script>
    <script>const THEBE = "https://unpkg.com/thebe";</script>
    <link rel="stylesheet" href="https://fonts.example.com/css">
    <link rel="stylesheet" href="_static/theme.css">
    <link rel="canonical" href="https://example.org/page.html">
    <style>@import "https://fonts.example.com/x.css"; .a { background: url('https://img.example.com/b.png'); }</style>
    </head><body>
    <a href="https://arxiv.org/abs/2210.01506">paper</a>
    <img src="https://img.example.com/c.png"><img src="_images/ok.png">
    <img src="data:image/png;base64,AAAA">
    <iframe src="//player.example.com/v"></iframe>
    <div style="background-image: url(https://img.example.com/d.png)"></div>
    </body></html>"""
    found = check_site.external_assets(html)
    urls = {a.url for a in found}
    assert urls == {"https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js", "https://fonts.example.com/css",
                    "https://fonts.example.com/x.css", "https://img.example.com/b.png", "https://img.example.com/c.png",
                    "//player.example.com/v", "https://img.example.com/d.png"}
    script = next(a for a in found if a.tag == "script")
    assert script.line == 2


def _site(tmp_path: Path, pages: dict[str, str]) -> Path:
    for name, html in pages.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(html, encoding="utf-8")
    return tmp_path


def test_check_static_reports_pages_and_stylesheets(tmp_path):
    site = _site(tmp_path, {
        "index.html": '<script src="_static/mathjax/tex-chtml.js"></script>',
        "book/methods.html": ('<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js">'
                              '</script>'),
        "_static/theme.css": "@font-face { src: url(https://fonts.gstatic.com/x.woff2); }",
        "_static/ignored.html": '<script src="https://cdn.example.com/x.js"></script>',
    })
    problems = check_site.check_static(site)
    assert set(problems) == {"book/methods.html", "_static/theme.css"}
    assert "cdn.jsdelivr.net" in problems["book/methods.html"][0]
    assert check_site.site_pages(site) == [site / "book/methods.html", site / "index.html"]


def test_check_static_cli_exit_codes(tmp_path, capsys):
    assert check_site.main(["static", str(tmp_path / "missing")]) == 2
    clean = _site(tmp_path / "clean", {"index.html": "<p>hello</p>"})
    assert check_site.main(["static", str(clean)]) == 0
    dirty = _site(tmp_path / "dirty", {"index.html": '<link rel="stylesheet" href="https://x.org/a.css">'})
    assert check_site.main(["static", str(dirty)]) == 1
    assert "https://x.org/a.css" in capsys.readouterr().out


@pytest.mark.parametrize("text, n", [
    ("the relative stability R_f falls", 0),
    ("the relative stability \\(R_f\\) falls", 2),
    ("display $$D = 1$$ here", 2),
    ("\\[ x \\]", 2),
    ("a \\frac{1}{2} half", 1),
    ("costs $5 and $6", 0),
])
def test_raw_tex(text, n):
    assert len(check_site.raw_tex(text)) == n


# ------------------------------------------------------------------------------------- configuration
def test_config_serves_mathjax_from_the_site():
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    sphinx = cfg["sphinx"]
    assert sphinx["local_extensions"] == {"sphinx_offline": "tools/"}
    conf = sphinx["config"]
    assert not check_site.is_external(conf["mathjax_path"])
    assert conf["mathjax_path"].startswith("mathjax/")
    assert conf["nb_ipywidgets_js"] == {}
    toc = (REPO / "_toc.yml").read_text()
    assert "file: book/claims" in toc


def test_sphinx_extension_fails_loudly_without_mathjax(monkeypatch):
    pytest.importorskip("sphinx")
    ext = importlib.import_module("sphinx_offline")
    from sphinx.errors import ConfigError

    monkeypatch.setitem(sys.modules, "mathjax", None)  # import mathjax -> ImportError
    with pytest.raises(ConfigError, match="MathJax is not installed"):
        ext.mathjax_dir()

    class Cfg:
        mathjax_path = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"

    with pytest.raises(ConfigError, match="mathjax_path must be relative"):
        ext._config_inited(None, Cfg())


@pytest.mark.parametrize("line, split", [
    ("Kinds of network: image CNNs, fully-connected nets", True),
    ("Environment variable: a true value recomputes", True),
    ("Kinds of network (``cnn`` image CNNs)", False),
    ("name -> ``fn(x: int)`` applied to each batch", False),
    ("see :data:`SCALES` for the order", False),
    ("ends with a colon:", False),
])
def test_data_docstring_first_line_stays_prose(line, split):
    pytest.importorskip("sphinx")
    ext = importlib.import_module("sphinx_offline")
    assert ext.napoleon_would_split(line) is split
    for what, restored in (("data", split), ("attribute", split), ("function", False)):
        lines = [line, "more text"]
        ext._save_data_docstring(None, what, "m.X", None, {}, lines)
        lines[:] = ["", ":type: napoleon's reading"]
        ext._restore_data_docstring(None, what, "m.X", None, {}, lines)
        assert lines == ([line, "more text"] if restored else ["", ":type: napoleon's reading"])


def test_mathjax_package_has_the_entry_point():
    pytest.importorskip("mathjax", reason="django-static-mathjax ([book] extra) not installed")
    ext = importlib.import_module("sphinx_offline")
    assert (ext.mathjax_dir() / "tex-chtml.js").is_file()
    assert (ext.mathjax_dir() / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_api_reference_documents_every_module():
    """book/api.md has an ``automodule`` for every module of the package (a new module needs a line there)."""
    api = (REPO / "book" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. automodule:: ([\w.]+)", api, flags=re.M))
    pkg = REPO / "stabkit"
    modules = set()
    for f in pkg.rglob("*.py"):
        parts = f.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__main__" or any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert sorted(modules - documented) == []
    assert sorted(documented - modules) == []


# ------------------------------------------------------------------------------------ committed results
def _store(root: Path, sweep: str, scale: str, rows: list[dict] | None) -> Path:
    d = root / sweep / scale
    d.mkdir(parents=True)
    (d / "output.parquet").write_bytes(b"")
    if rows is not None:
        pd = pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")
        pd.DataFrame(rows).to_parquet(d / "runs.parquet")
    return d


def test_committed_results_lists_stores_largest_scale_first(tmp_path):
    ext = importlib.import_module("sphinx_offline")
    assert ext.committed_results(tmp_path / "missing") == []
    assert "No results are committed" in ext.results_markdown([])
    run = {"key": "a", "device_name": "NVIDIA H200", "finished": "2026-11-30T10:00:00+00:00"}
    _store(tmp_path, "fig5_scale_detection", "cpu", [run, {**run, "key": "b", "device_name": "x86_64",
                                                               "finished": "2026-12-01T09:00:00+00:00"}])
    _store(tmp_path, "fig5_scale_detection", "gpu", [run])
    _store(tmp_path, "fig1_noise_corrupted_cifar", "cpu", None)  # no index: nothing committed
    (tmp_path / "fig2_laplacian_spectra" / "small").mkdir(parents=True)
    (tmp_path / "fig2_laplacian_spectra" / "small" / "runs.parquet").write_text("not parquet")
    recs = ext.committed_results(tmp_path)
    assert [(r["sweep"], r["scale"], r["runs"]) for r in recs] == [
        ("fig2_laplacian_spectra", "small", None), ("fig5_scale_detection", "gpu", 1),
        ("fig5_scale_detection", "cpu", 2)]
    assert recs[2]["devices"] == ["NVIDIA H200", "x86_64"] and recs[2]["last"] == "2026-12-01"
    assert recs[0]["error"]
    md = ext.results_markdown(recs)
    assert "3 stores of 2 sweeps" in md
    assert "| `fig5_scale_detection` | `cpu` | 2 | NVIDIA H200, x86_64 | 2026-12-01 |" in md
    assert "index unreadable" in md
    book = tmp_path / "book"
    assert ext.write_results_page(book, tmp_path) is True
    assert ext.write_results_page(book, tmp_path) is False  # unchanged: not rewritten
    assert (book / "_generated" / "results.md").read_text() == md


def test_landing_page_includes_the_generated_pages():
    intro = (REPO / "book" / "intro.md").read_text(encoding="utf-8")
    assert "```{include} _generated/results.md" in intro
    assert "```{include} _generated/landing.md" in intro


# ------------------------------------------------------------------------------------------- built site
@pytest.mark.skipif(not (SITE / "index.html").is_file(), reason="book not built (make book)")
def test_built_site_has_no_external_asset_and_serves_mathjax():
    assert check_site.check_static(SITE) == {}
    assert (SITE / "_static" / "mathjax" / "tex-chtml.js").is_file()
    methods = (SITE / "book" / "methods.html").read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml.js" in methods
    assert "THEBE_JS_URL" not in methods


# ------------------------------------------------------------------------------------------- dashboard
def _glue_output(name: str, value, display: bool = False) -> dict:
    """A glue output as myst-nb's ``glue`` writes it (IPython's display formatting when available)."""
    try:
        from IPython.core.formatters import format_display_data

        data, _ = format_display_data(value)
    except ImportError:
        data = {"text/plain": repr(value)}
    prefix = "" if display else dashboard.GLUE_PREFIX
    return {"output_type": "display_data", "data": {prefix + k: v for k, v in data.items()},
            "metadata": {"scrapbook": {"name": name, "mime_prefix": prefix}}}


def _notebook(title: str, outputs: list[dict]) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"cell_type": "markdown", "metadata": {}, "source": [f"# {title}\n", "\n", "text\n"]},
                      {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": "",
                       "outputs": outputs}]}


def _claim(**kw) -> str:
    base = {"id": "rf_falls", "statement": "$R_f$ falls by a decade", "figure": "Fig. 1", "scale": "small",
            "value": -1.42, "ci_low": -1.9, "ci_high": -0.8, "verdict": "holds"}
    base.update(kw)
    return json.dumps(base)


def _figure_output() -> dict:
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(PNG).decode(), "text/plain": "<Figure>"}}


def test_glued_and_claims_of_parse_myst_nb_outputs():
    nb = _notebook("Fig. 1: noise", [
        _glue_output("scale", "small"),
        _glue_output("rf_falls_claim", _claim()),
        _glue_output("gf_claim", _claim(id="gf_grows", statement="G_f | grows", value=float("nan"),
                                        ci_low=None, ci_high=None, verdict="does not hold")),
        _glue_output("shown_claim", _claim(id="shown"), display=True),
        _figure_output(),
    ])
    g = dashboard.glued(nb)
    assert set(g) == {"scale", "rf_falls_claim", "gf_claim", "shown_claim"}
    assert dashboard.parse_glued(g["scale"]) == "small"
    claims = dashboard.claims_of(nb, "fig1_noise_corrupted_cifar")
    assert [c.id for c in claims] == ["rf_falls", "gf_grows", "shown"]
    c = claims[0]
    assert (c.page, c.figure, c.scale, c.value, c.ci_low, c.ci_high, c.verdict) == (
        "fig1_noise_corrupted_cifar", "Fig. 1", "small", -1.42, -1.9, -0.8, "holds")
    assert claims[1].value is None and claims[1].ci_low is None


def test_claim_record_of_glue_claim_format():
    # The record stabkit.report.page.glue_claim writes (claim_record): figure defaults to the page name.
    rec = {"id": "fig3_layers_cifar:spatial", "key": "spatial", "page": "fig3_layers_cifar",
           "figure": "fig3_layers_cifar", "scale": "small", "statement": "Spatial pooling happens early",
           "value": 0.41, "ci_low": None, "ci_high": None, "threshold": 0.3, "verdict": "holds",
           "rule": "x >= 0.3", "claim": "spatial_pooling_first_half"}
    nb = _notebook("Fig. 3: layers of CIFAR-10 nets", [_glue_output("spatial_claim", json.dumps(rec))])
    (c,) = dashboard.claims_of(nb, "fig3_layers_cifar")
    assert (c.id, c.statement, c.value, c.ci_low, c.verdict) == (
        "fig3_layers_cifar:spatial", "Spatial pooling happens early", 0.41, None, "holds")
    md = dashboard.render_claims([c], {"fig3_layers_cifar": "Fig. 3: layers of CIFAR-10 nets"})
    assert ("| Spatial pooling happens early ([Fig. 3: layers of CIFAR-10 nets](executed/fig3_layers_cifar.ipynb), "
            "small) | – | 0.41 | 0.3 | **holds** |") in md


def test_claims_of_rejects_a_malformed_claim():
    nb = _notebook("x", [_glue_output("bad_claim", "not json {")])
    with pytest.raises(ValueError, match="bad_claim"):
        dashboard.claims_of(nb, "page")
    nb = _notebook("x", [_glue_output("bad_claim", json.dumps({"id": "x"}))])
    with pytest.raises(ValueError, match="verdict"):
        dashboard.claims_of(nb, "page")


def test_render_claims_table():
    claims = [dashboard.Claim("fig1", "a_claim", "a", "$R_f$ falls | a lot", "Fig. 1", "small", -1.42, -1.9,
                              -0.8, "holds"),
              dashboard.Claim("fig5", "b_claim", "b", "G_f grows", "", "tiny", 0.5, None, None, "does not hold",
                              anchor="claims")]
    md = dashboard.render_claims(claims, {"fig1": "Fig. 1 [noise]", "fig5": "Fig. 5: scale detection"})
    assert "**2 claims on 2 pages.**" in md and "2 claims: 1 holds, 1 does not hold." in md
    assert "| $R_f$ falls \\| a lot ([Fig. 1](executed/fig1.ipynb), small) | – | -1.42 [-1.9, -0.8] | – | **holds** |" in md
    assert "| $G_f$ grows ([Fig. 5: scale detection](executed/fig5.ipynb#claims), tiny) | – | 0.5 | – | does not hold |" in md
    assert "run `make book`" in dashboard.render_claims([], {})
    assert "None of the 1 executed pages" in dashboard.render_claims([], {"x": "X"})


def test_landing_figure_is_the_one_the_claims_are_about():
    examples, result = base64.b64encode(b"examples").decode(), base64.b64encode(b"result").decode()
    png = lambda b64: {"output_type": "display_data", "metadata": {}, "data": {"image/png": b64}}  # noqa: E731
    nb = _notebook("Fig. 5", [png(examples), png(result), _glue_output("a_claim", _claim()), png(examples)])
    assert dashboard._result_png(nb) == result
    assert dashboard._result_png(_notebook("Theory", [png(examples), png(result)])) == examples


def test_write_pages_from_executed_notebooks(tmp_path):
    book = tmp_path / "book"
    executed = book / "executed"
    executed.mkdir(parents=True)
    (tmp_path / "_toc.yml").write_text("root: book/intro\nchapters:\n- file: book/executed/fig5\n"
                                       "- file: book/executed/fig1\n")
    fig1 = _notebook("Fig. 1", [_glue_output("a_claim", _claim(verdict="does not hold")), _figure_output()])
    fig5 = _notebook("Fig. 5", [_glue_output("b_claim", _claim(id="b", figure="Fig. 5")), _figure_output()])
    (executed / "fig1.ipynb").write_text(json.dumps(fig1))
    (executed / "fig5.ipynb").write_text(json.dumps(fig5))
    written = dashboard.write_pages(book)
    png_name = f"landing-{hashlib.sha1(PNG).hexdigest()[:10]}.png"  # named by content: a rebuild never collides
    assert {p.name for p in written} == {"claims.md", "claims.json", "landing.md", png_name, "summary.md"}
    saved = json.loads((book / "_generated" / "claims.json").read_text())  # the build's claims as data
    assert [(c["page"], c["verdict"]) for c in saved] == [("fig5", "holds"), ("fig1", "does not hold")]
    md = (book / "claims.md").read_text()
    assert md.index("executed/fig5.ipynb") < md.index("executed/fig1.ipynb")  # toc order
    landing = (book / "_generated" / "landing.md").read_text()
    assert f"```{{image}} _generated/{png_name}" in landing and "(executed/fig5.ipynb)" in landing
    assert ":alt: A figure of Fig. 5," in landing
    assert (book / "_generated" / png_name).read_bytes() == PNG
    assert dashboard.write_pages(book) == []  # unchanged content is not rewritten

    # An explicitly glued landing figure wins; with no qualifying page, the include says why.
    fig1["cells"][1]["outputs"] += [_glue_output("landing_caption", "Caption."),
                                    {**_figure_output(), "metadata": {"scrapbook": {"name": "landing_figure",
                                                                                    "mime_prefix": ""}}}]
    (executed / "fig1.ipynb").write_text(json.dumps(fig1))
    dashboard.write_pages(book)
    assert "Caption. From [Fig. 1](executed/fig1.ipynb)." in (book / "_generated" / "landing.md").read_text()
    shutil.rmtree(executed)
    dashboard.write_pages(book)
    assert "no executed notebook" in (book / "_generated" / "landing.md").read_text()
    assert not list((book / "_generated").glob("landing*.png"))


# ------------------------------------------------------------------------------------ headless browser
def _browser_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    try:
        check_site.find_chromium()
    except FileNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _browser_available(), reason="needs Chromium and playwright (make check-book)")
@pytest.mark.timeout(120)
def test_browser_check_on_a_synthetic_site(tmp_path):
    (tmp_path / "ok.png").write_bytes(PNG)
    site = _site(tmp_path, {
        "index.html": ("<html><body><p>All good.</p><img src='ok.png' alt='A dot.'><img src='ok.png' alt='ok.png'>"
                       "<pre>\\(code\\)</pre></body></html>"),
        "bad.html": ("<html><body><p>Raw \\(R_f\\) here.</p><img src='missing.png'>"
                     "<script src='https://cdn.example.org/x.js'></script>"
                     "<script>console.error('boom')</script></body></html>"),
    })
    reports = {r.page: r for r in check_site.check_browser(site, shots=tmp_path / "shots")}
    assert reports["index.html"].problems == []
    assert reports["index.html"].images == 2
    assert reports["index.html"].notes == ["image without alt text: ok.png"]  # a file name is no alt text
    bad = "\n".join(reports["bad.html"].problems)
    for expected in ("raw TeX", "broken image: missing.png", "external request blocked: https://cdn.example.org/x.js",
                     "console error: boom"):
        assert expected in bad
    assert (tmp_path / "shots" / "bad.png").is_file()


def test_page_tables_show_no_nan_and_pass_the_table_check():
    """The tables the pages display (probe curves with a magnitude a mode lacks; the D, G, deno parts
    with a missing number) pass check_site's table check: an en dash for a missing number, the parts'
    CSV column names (D_f) in a table marked as a DataFrame."""
    import numpy as np
    import pandas as pd

    from stabkit.report import robustness_claims, stability_claims

    curves = pd.DataFrame({"net": ["A"] * 3, "mode": ["full", "full", "rows_cols"], "magnitude": [1.0, 3.0, 1.0],
                           "mean": [80.0, 40.0, 80.0]})
    raw = curves.pivot_table(index=["net", "mode"], columns="magnitude", values="mean").to_html()
    assert any("NaN" in p for p in check_site.table_problems(raw))  # what the page showed before
    assert check_site.table_problems(robustness_claims.curves_table(curves, ["net", "mode"]).to_html()) == []
    parts = pd.DataFrame({"": ["init", "trained", "trained / init"], "D": [1.0, 2.0, 2.0], "G": [1.0, 0.5, 0.5],
                          "deno": [1.0, 20.0, 20.0], "D_f": [1.0, 0.1, 0.1], "G_f": [1.0, 0.025, 0.025],
                          "R_f": [1.0, np.nan, np.nan], "n": [2, 2, 2]})
    html = stability_claims.parts_display(parts).to_html()
    assert check_site.table_problems(html) == [] and "\u2013" in html
