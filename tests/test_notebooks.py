"""Every notebook of the book (_toc.yml) runs at scale="tiny", draws its figures and glues its numbers.

Notebooks execute through papermill with the repository root as working directory (as in
``python tools/book.py run``), into a temporary folder, with progress bars off. Runs of sweeps go to a
temporary runs root shared by the session (``$STABKIT_RUNS``), so nothing cached from an earlier version of
the code is reused. Per-notebook limit: 120 s.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

from stabkit.report.page import ENV_PROVENANCE
from stabkit.report.tables import ENV_PAGE_TABLES

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("stabkit_book_tool", REPO / "tools" / "book.py")
book = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
if not hasattr(book, "toc_notebooks"):
    _spec.loader.exec_module(book)
ENTRIES = book.toc_notebooks(REPO / "_toc.yml")
#: What a notebook's code cells may not contain any more (issue 11: thin notebooks).
FORBIDDEN = {"def table(": "a copied table() helper (use stabkit.report.page.page)",
             "json.loads": "a JSON parser of config columns (use stabkit.report.tables.config_values)",
             "np.polyfit": "a re-implemented fit (use stabkit.theory.fit_exponents / report.fits)",
             ".verdict(": "an inline verdict (write a claim_* function in a stabkit.report.*_claims module)",
             "stabkit.probes": "the old module name (stabkit.robustness)", "import seaborn": "seaborn (use report.figures)",
             "from stabkit import book": "the old stabkit.book (stabkit.report.page)"}
TIMEOUT_S = 120
#: A page of a sweep calls page(...); a demonstration page (no sweep) demo_page(...).
SWEEP_PAGE = re.compile(r"(?<![\w.])page\(")

# {glue}`key`, {glue:text}`key:.2f`, {glue:md}`key` ... and ```{glue:figure} key / :::{glue} key
ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`([^`]+)`")
DIRECTIVE = re.compile(r"^(?:```+|:::+)\{glue(?::[a-z]+)?\}\s+(\S+)", re.M)


def glue_keys(nb) -> set[str]:
    """Keys glued into this notebook's own markdown (``path::key`` references to other pages excluded)."""
    keys = set()
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for ref in ROLE.findall(cell.source):
            if "::" in ref:
                continue
            key, _, spec = ref.rpartition(":")
            keys.add(key if key and spec else ref)
        keys.update(k for k in DIRECTIVE.findall(cell.source) if "::" not in k)
    return keys


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def test_toc_lists_notebooks():
    assert ENTRIES, "_toc.yml lists no book/executed/<name> notebook"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_headings_never_skip_a_level(entry):
    """The book builds with -W: a heading two levels below the last one (H1 then H3) fails `make book`,
    which CI does not run."""
    nb = nbformat.read(entry.source, as_version=4)
    last, fence = 0, False
    for c in nb.cells:
        if c.cell_type != "markdown":
            continue
        for line in c.source.splitlines():
            if line.lstrip().startswith("```"):
                fence = not fence
            m = re.match(r"(#{1,6}) ", line)
            if m and not fence:
                level = len(m.group(1))
                assert level <= last + 1, f"{entry.name}: heading {line!r} (H{level}) follows an H{last}"
                last = level


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_notebook_conventions(entry):
    """Committed without outputs; a title; first code cell tagged parameters with scale and device."""
    assert entry.source.is_file(), (f"_toc.yml lists book/executed/{entry.name} but its source "
                                    f"notebooks/{entry.name}.ipynb is missing")
    nb = nbformat.read(entry.source, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("# "), \
        "the first cell must be a markdown title '# ...'"
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        assert not c.outputs and c.execution_count is None, "committed notebooks carry no outputs"
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    params = {}
    for node in ast.parse(code[0].source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            params[node.target.id] = ast.literal_eval(node.value)
    assert params.get("scale") == "auto", "parameters must be typed (name: type = value), scale default 'auto'"
    assert params.get("device") == "auto", "parameter device must default to 'auto'"
    sweep_page = any(SWEEP_PAGE.search(c.source) for c in code)  # pages of a sweep (not the demonstration pages)
    for c in code[1:]:
        for text, why in FORBIDDEN.items():
            assert text not in c.source, f"{entry.name}: a code cell holds {why}"
        if sweep_page:
            n = len(c.source.splitlines())
            assert n <= 16, f"{entry.name}: a code cell of {n} lines (keep parameters, a call, plots, prose)"
        if "plt.show()" in c.source:  # a figure: caption, label and alt text (issue 13)
            meta = c.metadata.get("mystnb", {})
            fig, img = meta.get("figure", {}), meta.get("image", {})
            assert fig.get("caption") and fig.get("name") and img.get("alt"), (
                f"{entry.name}: a figure cell needs metadata mystnb.figure.caption/name and mystnb.image.alt")
            assert "display(" not in c.source, f"{entry.name}: a figure cell also displays a table (it would " \
                "be captioned as the figure): display it in its own cell"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    if sweep_page:  # issue 13 items 5, 7 and issue 16: the differences as a table, coverage, downloads
        assert "{glue:text}`differences`" not in text, "show the differences as a table (differences_md)"
        for key in ("differences_md", "downloads"):
            assert re.search(r"\{glue:md\}\s+" + key + r"\s*\n:format: myst", text), \
                f"{entry.name}: render {key} with a glue:md directive and ':format: myst'"
        for key in ("coverage", "sources"):
            assert f"{{glue:text}}`{key}`" in text, f"{entry.name}: the 'This run' paragraph must state {key}"
    names = [c.metadata["mystnb"]["figure"]["name"] for c in nb.cells if "figure" in c.metadata.get("mystnb", {})]
    assert len(names) == len(set(names)), f"{entry.name}: figure names must be unique"


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S)
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_notebook_runs_tiny(entry, tmp_path, runs_root, monkeypatch):
    import papermill

    assert entry.source.is_file(), f"notebook source notebooks/{entry.name}.ipynb is missing"
    monkeypatch.setenv("STABKIT_RUNS", str(runs_root))
    for key, value in book.kernel_environment().items():  # as the runner: no progress bars, offline data
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(ENV_PROVENANCE, str(tmp_path / "records.jsonl"))
    monkeypatch.setenv(ENV_PAGE_TABLES, str(tmp_path / "tables"))  # not into the book's own folder
    out = tmp_path / f"{entry.name.replace('/', '_')}.ipynb"
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(str(entry.source), str(out), parameters={"scale": "tiny"},
                                   kernel_name="python3", cwd=str(REPO), progress_bar=False,
                                   request_save_on_cell_execute=False, execution_timeout=TIMEOUT_S)
    except papermill.PapermillExecutionError as exc:
        pytest.fail(f"{entry.name} failed at scale=tiny: {exc.ename}: {exc.evalue}")
    seconds = time.perf_counter() - t0
    nb = nbformat.read(out, as_version=4)
    assert not nb.metadata.get("papermill", {}).get("exception")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{entry.name} drew no figure"
    glued = {o["metadata"]["scrapbook"]["name"] for o in outputs if "scrapbook" in o.get("metadata", {})}
    missing = glue_keys(nb) - glued
    assert not missing, f"{entry.name}: the text uses glue keys that the notebook never glued: {sorted(missing)}"
    # a glued string's text/plain is its repr: literal_eval, then the JSON record (as the dashboard reads it)
    claims = [json.loads(ast.literal_eval(o["data"]["application/papermill.record/text/plain"]))
              for o in outputs if o.get("metadata", {}).get("scrapbook", {}).get("name", "").endswith("_claim")]
    for rec in claims:
        assert {"id", "statement", "page", "scale", "value", "verdict"} <= set(rec), rec
    statements = [rec["statement"] for rec in claims]  # the dashboard lists them: each row must say which
    assert len(set(statements)) == len(statements), f"{entry.name}: claims share a statement: {statements}"
    for c in nb.cells:  # a captioned figure cell shows the figure only (hidden glue outputs aside)
        if c.cell_type == "code" and "figure" in c.metadata.get("mystnb", {}):
            shown = [o for o in c.get("outputs", []) if o.get("output_type") in ("display_data", "execute_result")
                     and "scrapbook" not in o.get("metadata", {})]
            assert shown and all("image/png" in o["data"] for o in shown), \
                f"{entry.name}: a captioned cell shows no figure or something besides its figure"
    tables = sorted((tmp_path / "tables").rglob("*.csv"))
    if any(SWEEP_PAGE.search(c.source) for c in nb.cells if c.cell_type == "code"):
        assert tables, f"{entry.name}: wrote no table for download"
    for path in tables:
        head = path.read_text().splitlines()[0].split(",")
        if {"D_f", "G_f", "R_f"} <= set(head):
            assert {"D", "G", "deno"} <= set(head), f"{path.name}: the raw D, G and deno columns are missing"
    print(f"{entry.name}: {seconds:.1f} s at scale=tiny, {len(claims)} claims")


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_parameter_is_listed_by_papermill_help(entry, capfd):
    """``papermill --help-notebook`` must list every parameter: a comment containing '=' made papermill
    skip the line ("Unable to parse line ...")."""
    import papermill

    nb = nbformat.read(entry.source, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    declared = {m.group(1) for m in re.finditer(r"^(\w+)\s*:\s*\w+\s*=", cell.source, re.M)}
    listed = set(papermill.inspect_notebook(str(entry.source)))
    assert declared and declared <= listed, sorted(declared - listed)
    assert "Unable to parse" not in capfd.readouterr().err
