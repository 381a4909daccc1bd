"""Issue 26: the dashboard separates the paper's claims from related papers' and this project's, gives
unit, threshold, n and reason, typesets maths; the landing page's one-minute summary; check-book fails on
a literal NaN or plain-text maths in a table."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

check_site = importlib.import_module("check_site")
dashboard = importlib.import_module("dashboard")


def test_table_problems_flag_nan_and_plain_maths_in_tables_only():
    html = """<html><body><p>R_f in prose and nan in prose are not tables</p>
    <table class="docutils"><tr><th>Statement</th><th>Value</th></tr>
    <tr><td>R_f falls by decades</td><td>nan</td></tr>
    <tr><td><span class="math notranslate">\\(R_f\\)</span> falls</td><td>1.2</td></tr>
    <tr><td>eps_t = 0.2 sqrt(R_f)</td><td><code>R_f</code></td></tr></table>
    <table class="dataframe"><tr><th>R_f</th><th>G_f</th></tr><tr><td>0.1</td><td>NaN</td></tr></table>
    </body></html>"""
    problems = check_site.table_problems(html)
    assert sum("NaN in a table cell" in p for p in problems) == 2  # the book's table and the DataFrame
    maths = [p for p in problems if "plain-text maths" in p]
    assert len(maths) == 2 and "'R_f'" in maths[0] and "'eps_t'" in maths[1]  # not the typeset / code / header


def test_check_book_reports_table_problems(tmp_path, capsys):
    (tmp_path / "index.html").write_text("<html><body><table><tr><td>NaN</td></tr></table></body></html>")
    assert "index.html" in check_site.check_tables(tmp_path)
    assert check_site.main(["static", str(tmp_path), "--shots", ""]) == 1  # make check-book fails
    assert "NaN in a table cell" in capsys.readouterr().out


def test_typeset_writes_claim_maths_as_tex():
    assert dashboard.typeset("The test error follows eps_t = 0.2 sqrt(R_f) (2021 paper)") == \
        "The test error follows $\\epsilon_t = 0.2\\sqrt{R_f}$ (2021 paper)"
    assert dashboard.typeset("G_f grows; $R_f$ kept (P_train = 1024)") == \
        "$G_f$ grows; $R_f$ kept ($P_\\text{train} = 1024$)"


def test_dashboard_separates_sources_and_shows_unit_threshold_n_reason():
    C = dashboard.Claim
    claims = [C("fig1", "k", "a", "R_f falls by decades", "Fig. 1", "cpu", -0.09, -0.3, 0.1,
                "cannot be tested at this scale", threshold=-1.0, n=18, n_units=6, unit="decades",
                reason="the best network has 19.0 % test error"),
              C("fig1", "k2", "b", "Training on larger noise lowers G_f (this project's hypothesis, not the paper's)",
                "Fig. 1", "cpu", -0.5, None, None, "holds",
                source=dashboard.source_of("fig1", "this project's hypothesis")),
              C("probe_masking", "k3", "c", "Masking lowers accuracy", "", "cpu", 0.2, None, None, "holds",
                source=dashboard.source_of("probe_masking"))]
    md = dashboard.render_claims(claims, {"fig1": "Fig. 1", "probe_masking": "Masking"})
    paper, project, related = (md.index(h) for h in ("## The paper's claims", "## This project's hypotheses",
                                                     "## Claims of related papers"))
    assert paper < md.index("falls by decades") < project < md.index("larger noise") < related < md.index("Masking")
    assert ("| $R_f$ falls by decades ([Fig. 1](executed/fig1.ipynb), cpu) | – | -0.09 [-0.3, 0.1] decades; "
            "n = 18 (6 arch.) | -1 | cannot be tested at this scale (the best network has 19.0 % test error) |") in md
    assert md.startswith("---\nhtml_theme.sidebar_secondary.remove: true\n---\n")  # the table gets the width
    assert "nan" not in md.lower().replace("nance", "")


def _nb(title: str, glues: dict) -> dict:
    outs = [{"output_type": "display_data", "metadata": {"scrapbook": {"name": k, "mime_prefix":
             "application/papermill.record/"}}, "data": {"application/papermill.record/text/plain": repr(v)}}
            for k, v in glues.items()]
    return {"cells": [{"cell_type": "markdown", "source": f"# {title}\n"},
                      {"cell_type": "code", "source": "", "outputs": outs}], "metadata": {}, "nbformat": 4,
            "nbformat_minor": 5}


def test_landing_summary_has_one_row_per_paper_page(tmp_path):
    rec = {"id": "fig1:rf_falls", "statement": "R_f falls by decades", "figure": "Fig. 1", "scale": "cpu",
           "value": -0.09, "verdict": "cannot be tested at this scale", "reason": "19 % error"}
    ok = dict(rec, id="fig1:init", statement="At initialisation R_f is of order one", verdict="holds", reason=None)
    pages = {"fig1_noise": _nb("Figure 1: noise", {"scale": "cpu", "coverage": "18 of 18 configurations",
                                                   "error_range": "best 19.0-33.0 %, last epoch 20.0-35.0 %",
                                                   "rf_falls_claim": json.dumps(rec), "init_claim": json.dumps(ok)}),
             "probe_masking": _nb("Masking", {"scale": "cpu"})}
    for name, nb in pages.items():
        (tmp_path / f"{name}.ipynb").write_text(json.dumps(nb))
    md = dashboard.render_summary(tmp_path)
    assert "reduced scale (cpu" in md and "Masking" not in md
    assert ("| [Figure 1: noise](executed/fig1_noise.ipynb) | cpu | best 19.0-33.0 %, last epoch 20.0-35.0 % | "
            "18 of 18 configurations | 1 cannot be tested, 1 holds | $R_f$ falls by decades: cannot be tested "
            "(19 % error) |") in md


def test_landing_coverage_gives_the_papers_grid_and_the_scales_not_the_missing_list():
    cov = ("7 of the paper's 511 configurations (net, seed, noise_std), at this scale's protocol; 7 of 18 "
           "configurations of the cpu grid (committed); missing: VGG16bn; ResNet18")
    assert dashboard._coverage_cell(cov) == ("7 of the paper's 511 configurations (net, seed, noise_std), at this "
                                             "scale's protocol; 7 of 18 configurations of the cpu grid (committed)")
    assert dashboard._coverage_cell("2 of 3 configurations of the small grid (computed); missing: seed 2") == (
        "2 of 3 configurations of the small grid (computed)")


def test_shortened_reasons_end_at_a_word_not_inside_a_number():
    reason = "0 runs satisfy the precondition (need 3): the best network here has 14.65 % test error"
    short = dashboard._short(reason, 70)
    assert len(short) <= 70 and short.endswith("…")
    assert not short[:-1].rstrip().endswith("1") and "has 1…" not in short
    assert reason.startswith(short[:-1])
    assert dashboard._short("short enough", 70) == "short enough"


def test_compare_lists_the_claims_whose_verdict_changed(tmp_path, capsys):
    """Each build writes _generated/claims.json; --compare OLD.json names the claims whose verdict changed
    (matched by page and glue name), those that appeared or went, and refuses a file that is not one."""
    C = dashboard.Claim
    old = [C("fig1", "a_claim", "a", "R_f falls", "Fig. 1", "cpu", -0.1, None, None, "cannot be tested at this scale"),
           C("fig1", "b_claim", "b", "G_f grows", "Fig. 1", "cpu", 0.3, None, None, "does not hold"),
           C("fig3", "c_claim", "c", "gone", "Fig. 3", "cpu", float("inf"), None, None, "holds")]
    saved = json.loads(dashboard.claims_json(old))
    assert saved[2]["value"] is None  # JSON has no infinity
    new = [C("fig1", "a_claim", "a", "R_f falls", "Fig. 1", "cpu", -1.4, -2.0, -1.1, "holds"), old[1],
           C("fig5", "d_claim", "d", "new one", "Fig. 5", "cpu", 1.0, None, None, "holds")]
    changes = dashboard.verdict_changes(saved, new)
    assert [(c["page"], c["before"], c["after"]) for c in changes] == [
        ("fig1", "cannot be tested at this scale", "holds"), ("fig5", "(absent)", "holds"), ("fig3", "holds", "(absent)")]
    md = dashboard.render_changes(changes)
    assert "| Fig. 1 | cpu | R_f falls | cannot be tested at this scale | holds | -0.1 | -1.4 |" in md
    assert dashboard.render_changes([]) == "No claim changed its verdict.\n"
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    assert dashboard.main(["--compare", str(bad), "--book", str(tmp_path), "--executed", str(tmp_path)]) == 2
    assert "--compare" in capsys.readouterr().err
