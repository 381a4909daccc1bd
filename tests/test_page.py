"""The notebooks' side of the book (stabkit.report.page): glue in myst-nb's format, provenance records, and
page(), which reads its sweep file once and loads every table from that one grid."""
from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from stabkit.report import page as book
from stabkit.report import palette
from stabkit.report.page import claim_display, loading
from stabkit.report.verdicts import Claim


# ----------------------------------------------------------------------------------------- glue helper
def test_glue_bundle_hidden_format():
    data, meta = book.glue_bundle("answer", 0.25)
    assert data == {"application/papermill.record/text/plain": "0.25"}
    assert meta["scrapbook"] == {"name": "answer", "mime_prefix": "application/papermill.record/"}


def test_glue_bundle_displayed_and_scalars():
    data, meta = book.glue_bundle("n", np.int64(3), display=True)
    assert data == {"text/plain": "3"}
    assert meta["scrapbook"] == {"name": "n", "mime_prefix": ""}
    # numpy and torch scalars become Python numbers, so that {glue:text}`key:.2f` can format them
    import torch

    assert book.glue_bundle("x", np.float64(0.5))[0]["application/papermill.record/text/plain"] == "0.5"
    assert book.glue_bundle("x", torch.tensor(2.0))[0]["application/papermill.record/text/plain"] == "2.0"


@pytest.mark.parametrize("bad", ["", "two words", "a:b", 3])
def test_glue_bundle_rejects_bad_names(bad):
    with pytest.raises(ValueError, match="name"):
        book.glue_bundle(bad, 1)


def _capture_display(monkeypatch, target, attr):
    calls = []
    monkeypatch.setattr(target, attr, lambda obj, raw=False, metadata=None: calls.append((obj, raw, metadata)))
    return calls


def test_glue_with_and_without_myst_nb_emit_the_same(monkeypatch):
    import IPython.display
    import myst_nb.ext.glue as myst_glue

    with_myst = _capture_display(monkeypatch, myst_glue, "ipy_display")
    book.glue("k", np.float32(1.5))
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import myst_nb now fails: fallback path
    fallback = _capture_display(monkeypatch, IPython.display, "display")
    book.glue("k", np.float32(1.5))
    assert len(with_myst) == 1 and len(fallback) == 1
    assert with_myst[0] == fallback[0]
    obj, raw, meta = fallback[0]
    assert raw is True and obj == {"application/papermill.record/text/plain": "1.5"}
    assert meta["scrapbook"]["name"] == "k"


# ----------------------------------------------------------------------------------- recorded inputs
def test_record_inputs_hashes_files_and_frames(tmp_path, monkeypatch):
    log = tmp_path / "records.jsonl"
    monkeypatch.setenv(book.ENV_PROVENANCE, str(log))
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.1, 0.2, 0.3]})
    f = tmp_path / "results" / "output.parquet"
    f.parent.mkdir()
    df.to_parquet(f)
    recs = book.record_inputs(f, df, label="fig")
    assert [r["kind"] for r in recs] == ["file", "table"]
    assert all(len(r["sha256"]) == 64 for r in recs)
    assert recs[1]["rows"] == 3
    # same content, same hash; different content, different hash
    assert book.record_inputs(df.copy())[0]["sha256"] == recs[1]["sha256"]
    assert book.record_inputs(df.assign(b=[0.1, 0.2, 0.4]))[0]["sha256"] != recs[1]["sha256"]
    # a directory hashes every table below it
    assert [r["path"] for r in book.record_inputs(f.parent)] == [str(f.resolve())]
    book.record(device="cpu", seeds=[0, 1])
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert sum(x["type"] == "input" for x in lines) == 5 and lines[-1]["facts"]["device"] == "cpu"


def test_record_inputs_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        book.record_inputs(tmp_path / "nothing.parquet")
    with pytest.raises(ValueError, match="expected paths, DataFrames"):
        book.record_inputs(3.0)


def test_progress_enabled(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not book.progress_enabled()
    monkeypatch.setenv("TQDM_DISABLE", "")
    assert book.progress_enabled()


# ---------------------------------------------------------------------------------- pages and claims
def _glued(monkeypatch) -> dict:
    out = {}
    # where glue is looked up: page(), demo_page() and Page.glue_convergence in loading, glue_claim in
    # claim_display (the package's own `glue` is only the face the notebooks import)
    for module in (loading, claim_display):
        monkeypatch.setattr(module, "glue", lambda name, value, display=False: out.__setitem__(name, (value, display)))
    return out


def test_glue_claim_standard_names_and_dashboard_record(monkeypatch):
    glued = _glued(monkeypatch)
    c = Claim("R_f_falls", True, -1.5, -1.0, {"n": 4, "geomean": 0.03, "VGG11:first": 1.0}, rule="r",
              statement="R_f falls", ci_low=-2.0, ci_high=-1.1)
    rec = book.glue_claim("rf_falls", c, page="fig1", figure="Fig. 1", scale="tiny")
    assert glued["rf_falls_value"][0] == -1.5 and glued["rf_falls_verdict"][0] == "holds"
    assert glued["rf_falls_n"][0] == 4 and glued["rf_falls_geomean"][0] == 0.03
    assert "rf_falls_VGG11:first" not in glued  # not a plain name: not glued
    assert glued["rf_falls_ci"][0] == "[-2, -1.1]" and "holds" in glued["rf_falls_text"][0]
    assert glued["rf_falls_why"][0] == ""  # no reason in the details
    book.glue_claim("why", Claim("w", False, float("nan"), 1.0, {"reason": "one seed"}, testable=False))
    assert glued["why_why"][0] == " (one seed)"
    text, display = glued["rf_falls_claim"]
    assert display is False
    parsed = json.loads(text)
    assert parsed == rec
    for key in ("id", "statement", "figure", "page", "scale", "value", "ci_low", "ci_high", "verdict"):
        assert key in parsed, key
    assert parsed["figure"] == "Fig. 1" and parsed["scale"] == "tiny" and parsed["id"] == "fig1:rf_falls"
    nan_claim = Claim("x", False, float("nan"), 1.0, testable=False)
    assert json.loads(book.glue_claim("x", nan_claim)["claim"] and glued["x_claim"][0])["value"] is None
    with pytest.raises(ValueError, match="prefix"):
        book.glue_claim("two words", c)
    with pytest.raises(TypeError, match="claim"):
        book.glue_claim("ok", 3.0)


def test_glue_claim_condition_makes_each_dashboard_statement_distinct(monkeypatch):
    # one claim checked on two subsets of a page must give two distinguishable dashboard rows
    glued = _glued(monkeypatch)
    c = Claim("corr", True, 0.8, 0.5, rule="r", statement="R_f correlates with the test error")
    a = book.glue_claim("corr_noise1", c, page="fig1", condition="training noise std 1")
    b = book.glue_claim("corr_noise30", c, page="fig1", condition="training noise std 30")
    assert a["statement"] == "R_f correlates with the test error (training noise std 1)"
    assert a["statement"] != b["statement"]
    assert json.loads(glued["corr_noise30_claim"][0])["statement"].endswith("(training noise std 30)")
    assert book.glue_claim("plain", c, page="fig1")["statement"] == "R_f correlates with the test error"
    with pytest.raises(ValueError, match="condition"):
        book.glue_claim("bad", c, page="fig1", condition="  ")


def test_page_loads_tables_glues_facts_and_sets_context(monkeypatch):
    from stabkit import sweeps

    summary = pd.DataFrame({"run": ["a", "b"], "net": ["LeNet", "VGG11"], "seed": [0, 1], "epochs": 2, "P": 50,
                            "status": "done", "device": "cpu", "task": "twopoints", "ptr": 1024})
    output = pd.DataFrame({"run": ["a", "b"], "R_f": [0.1, 0.2]})
    calls = []

    def fake_results(sweep, scale, table, **kw):
        calls.append((sweep, scale, table, kw))
        return {"summary": summary, "output": output}[table].copy()

    monkeypatch.setattr(sweeps, "results", fake_results)
    glued = _glued(monkeypatch)
    monkeypatch.delenv(book.ENV_PROVENANCE, raising=False)
    pg = book.page("fig5_scale_detection", "tiny", "output", name="fig5", runs_root="", device="cpu")
    (out,) = pg
    assert list(out["R_f"]) == [0.1, 0.2] and pg["summary"] is pg.tables["summary"]
    assert [c[2] for c in calls] == ["output", "summary"]
    assert calls[0][3]["runs_root"] is None and calls[0][3]["device"] == "cpu"
    assert glued["scale"][0] == "tiny" and glued["nets"][0] == "LeNet, VGG11" and glued["ptr"][0] == "1024"
    from stabkit.report.facts import FACT_KEYS
    assert set(FACT_KEYS) <= set(glued)
    assert book.current_page().name == "fig5"
    rec = book.glue_claim("c", Claim("c", True, 1.0, 0.0))
    assert rec["page"] == "fig5" and rec["scale"] == "tiny"
    with pytest.raises(ValueError, match="tables"):
        book.page("fig5_scale_detection", "tiny", "")


def _count_yaml_reads(monkeypatch) -> list[str]:
    """Every YAML document parsed from now on (its ``name:`` line), whichever module reads it."""
    reads: list[str] = []
    for fn in ("load", "safe_load"):
        orig = getattr(yaml, fn)

        def counted(stream, *a, _orig=orig, **k):
            text = stream if isinstance(stream, str) else getattr(stream, "name", "")
            reads.append(next((x for x in str(text).splitlines() if x.startswith("name:")), "?"))
            return _orig(stream, *a, **k)

        monkeypatch.setattr(yaml, fn, counted)
    return reads


@pytest.mark.parametrize("scale", ["auto", "tiny"])
def test_page_reads_its_sweep_file_once(monkeypatch, scale):
    """Issue 24 item 7: page() resolves the scale and loads every table from one read of its sweep file
    (before: 1 + 2 x the scales tried + the tables + 1 reads, 10 for Fig. 1 at scale auto)."""
    from stabkit import sweeps

    seen = []

    def fake_results(sweep, scale, table, **kw):  # what lookup.results gets: the loaded Sweep
        seen.append((sweep, scale))
        return pd.DataFrame({"run": ["a"], "net": ["LeNet"], "seed": [0], "status": ["done"]})

    monkeypatch.setattr(sweeps, "results", fake_results)
    monkeypatch.delenv(book.ENV_PROVENANCE, raising=False)
    reads = _count_yaml_reads(monkeypatch)
    pg = book.page("fig1_noise_corrupted_cifar", scale, "output", "metrics", glue_facts=False)
    assert reads == ["name: fig1_noise_corrupted_cifar"]
    assert len(seen) == 3 and all(isinstance(s, sweeps.Sweep) and s.scale == pg.scale for s, _ in seen)
    assert seen[0][0].keys == sweeps.load_sweep("fig1_noise_corrupted_cifar", pg.scale).keys


def test_page_joins_convergence_to_the_asked_tables(monkeypatch):
    """page(..., convergence=True): the run tables carry the well-trained columns, summary and metrics as
    loaded, Page.convergence the per-run table (selection.convergence, selection.with_convergence)."""
    from stabkit import sweeps
    from stabkit.report import selection

    summary = pd.DataFrame({"run": ["a", "b"], "net": ["LeNet", "VGG11"], "seed": [0, 0], "status": "done",
                            "task": "twopoints", "best_test_err": [0.01, 0.05], "last_test_err": [0.01, 0.5]})
    metrics = pd.DataFrame({"run": ["a", "a", "b", "b"], "epoch": [0, 1, 0, 1], "train_err": [0.3, 0.0, 0.4, 0.3]})
    output = pd.DataFrame({"run": ["a", "b"], "R_f": [0.1, 0.2]})
    tables = {"summary": summary, "metrics": metrics, "output": output}
    monkeypatch.setattr(sweeps, "results", lambda sweep, scale, table, **kw: tables[table].copy())
    monkeypatch.delenv(book.ENV_PROVENANCE, raising=False)
    pg = book.page("fig5_scale_detection", "tiny", "output", "metrics", glue_facts=False, convergence=True)
    out, met = pg
    conv = selection.convergence(summary, metrics)
    pd.testing.assert_frame_equal(pg.convergence, conv)
    pd.testing.assert_frame_equal(out, selection.with_convergence(output, conv))
    pd.testing.assert_frame_equal(met, metrics)
    pd.testing.assert_frame_equal(pg["summary"], summary)
    assert list(out["well_trained"]) == [True, False]
    assert book.page("fig5_scale_detection", "tiny", "output", glue_facts=False).convergence is None
    with pytest.raises(TypeError, match="convergence"):
        book.page("fig5_scale_detection", "tiny", "output", convergence="yes")


def test_page_shapes_its_tables_and_keeps_every_row_for_the_downloads(monkeypatch, tmp_path):
    """Issue 24 item 7: page() hands the notebook its rows already selected (rows="paper": a noise-trained net
    on its corrupted probes, the true ReLU values), with task_err and the training label; Page.all_rows keeps
    every row, what Page.downloads writes."""
    from stabkit import sweeps
    from stabkit.report import selection, tables as report_tables

    summary = pd.DataFrame({"run": ["a", "b"], "net": ["VGG11", "VGG11"], "seed": [0, 0], "status": "done",
                            "task": "cifar10", "augment": ['["crop"]', '["crop", "rotate"]']})
    output = pd.DataFrame({"run": ["a", "a", "b", "b", "b"], "net": "VGG11", "noise_std": [0.0, 0.0, 1.0, 1.0, 1.0],
                           "probes": ["clean", "clean", "clean", "corrupted", "corrupted"],
                           "relu_convention": ["true", "inplace", "true", "true", "inplace"],
                           "augment": ['["crop"]', '["crop"]', '["crop", "rotate"]', '["crop", "rotate"]',
                                       '["crop", "rotate"]'],
                           "test_err": [0.1, 0.1, 0.2, 0.2, 0.2], "test_err_corrupted": [None, None, 0.3, 0.3, 0.3],
                           "R_f": [0.1, 0.2, 0.3, 0.4, 0.5]})
    tabs = {"summary": summary, "output": output}
    monkeypatch.setattr(sweeps, "results", lambda sweep, scale, table, **kw: tabs[table].copy())
    monkeypatch.delenv(book.ENV_PROVENANCE, raising=False)
    monkeypatch.setenv(report_tables.ENV_PAGE_TABLES, str(tmp_path / "tables"))
    styles = []
    monkeypatch.setattr(palette, "set_style", lambda font_scale=1.0: styles.append(font_scale))
    pg = book.page("fig1_noise_corrupted_cifar", "tiny", "output", name="fig1", glue_facts=False, task_error=True,
                   training=True, rows="paper", font_scale=0.9)
    (out,) = pg
    assert styles == [0.9]  # the house style, applied by page()
    full = report_tables.with_task_error(output).assign(training=["unrotated", "unrotated", "rotated", "rotated",
                                                                  "rotated"])
    pd.testing.assert_frame_equal(pg.all_rows["output"], full)
    pd.testing.assert_frame_equal(out, selection.paper_rows(full))
    assert list(out["R_f"]) == [0.1, 0.4] and pg["output"] is out
    assert pg["summary"] is pg.all_rows["summary"] and "training" not in pg["summary"]  # summary as loaded
    md = pg.downloads("output")
    assert "output.csv" in md and "5 rows" in md  # every row, not only those shown
    assert len(pd.read_csv(tmp_path / "tables" / "fig1" / "output.csv")) == 5
    with pytest.raises(ValueError, match="tables"):
        pg.downloads("layers")
    plain = book.page("fig1_noise_corrupted_cifar", "tiny", "output", glue_facts=False)
    assert plain.all_rows is plain.tables and list(plain["output"].columns) == list(output.columns)
    with pytest.raises(ValueError, match="rows"):
        book.page("fig1_noise_corrupted_cifar", "tiny", "output", rows="all")
    with pytest.raises(TypeError, match="training"):
        book.page("fig1_noise_corrupted_cifar", "tiny", "output", training="yes")
    with pytest.raises(TypeError, match="training"):
        book.page("fig1_noise_corrupted_cifar", "tiny", "output", training=["summary"])
    both = book.page("fig1_noise_corrupted_cifar", "tiny", "output", glue_facts=False, training=["output"])
    assert "training" in both["output"] and "training" not in both["summary"]


def test_page_glues_its_convergence_listing(monkeypatch):
    """Page.glue_convergence: the rule, the number of runs not well trained, and their list for display;
    Page.early_fits: the runs that stopped at zero training loss with a high test error."""
    from stabkit import sweeps
    from stabkit.report import selection

    summary = pd.DataFrame({"run": ["a", "b"], "net": ["LeNet", "VGG11"], "seed": [0, 0], "status": "done",
                            "task": "twopoints", "best_test_err": [0.01, 0.05], "last_test_err": [0.01, 0.5]})
    metrics = pd.DataFrame({"run": ["a", "a", "b", "b"], "net": ["LeNet", "LeNet", "VGG11", "VGG11"], "seed": 0,
                            "epoch": [1, 2, 1, 2], "train_err": [0.3, 0.0, 0.4, 0.3], "train_loss": [0.5, 0.0, 1, 1],
                            "test_err": [0.3, 0.2, 0.4, 0.5], "test_loss": [1.0, 2.0, 1.0, 1.0]})
    tabs = {"summary": summary, "metrics": metrics, "output": pd.DataFrame({"run": ["a", "b"], "R_f": [0.1, 0.2]})}
    monkeypatch.setattr(sweeps, "results", lambda sweep, scale, table, **kw: tabs[table].copy())
    monkeypatch.delenv(book.ENV_PROVENANCE, raising=False)
    pg = book.page("fig5_scale_detection", "tiny", "output", "metrics", glue_facts=False, convergence=True)
    glued = _glued(monkeypatch)
    shown = pg.glue_convergence()
    pd.testing.assert_frame_equal(shown, selection.collapsed_runs(pg.convergence))
    assert glued["convergence_rule"][0] == selection.CONVERGENCE_RULE
    assert glued["n_not_well_trained"][0] == "1" and glued["n_conv"][0] == "2"
    assert pg.early_fits() == selection.early_fits(metrics) and "LeNet seed 0 at epoch 2" in pg.early_fits()
    without = book.page("fig5_scale_detection", "tiny", "output", glue_facts=False)
    with pytest.raises(ValueError, match="convergence"):
        without.glue_convergence()
    with pytest.raises(ValueError, match="metrics"):
        without.early_fits()


def test_demo_page_resolves_the_scale_and_is_the_current_page(monkeypatch):
    """A demonstration page (no sweep): "auto" is small, a scale it does not define is refused, the style
    is applied, scale glued, and glue_claim takes the page's name and scale."""
    glued = _glued(monkeypatch)
    styles = []
    monkeypatch.setattr(palette, "set_style", lambda font_scale=1.0: styles.append(font_scale))
    settings = {"tiny": {"n": 1}, "small": {"n": 2}}
    assert book.demo_page("theory_constant_filters", "auto", settings, font_scale=0.95) == ("small", {"n": 2})
    assert styles == [0.95] and glued["scale"][0] == "small"
    rec = book.glue_claim("law", Claim("law", True, 1.0, 0.0))
    assert rec["page"] == "theory_constant_filters" and rec["scale"] == "small" and rec["figure"] == rec["page"]
    assert book.demo_page("diffeomorphisms", "tiny", settings)[1] == {"n": 1}
    with pytest.raises(ValueError, match="scale"):
        book.demo_page("diffeomorphisms", "gpu", settings)


def _control_tables():
    """A page of two networks and the control run of one (``measure: recalibrated``, the same network)."""
    summary = pd.DataFrame({"run": ["a", "b", "c"], "net": ["VGG11", "VGG11bn", "VGG11bn"], "seed": 0,
                            "status": "done", "task": "twopoints", "measure": ["output,layers", "output,layers",
                                                                             "recalibrated"],
                            "trained_by": ["", "", "b"], "best_test_err": [0.02, 0.01, 0.01],
                            "last_test_err": [0.02, 0.5, 0.5]})
    metrics = pd.DataFrame({"run": ["a", "a", "b", "b", "c", "c"], "net": ["VGG11"] * 2 + ["VGG11bn"] * 4,
                            "seed": 0, "epoch": [1, 2] * 3, "train_err": [0.3, 0.0, 0.4, 0.3, 0.4, 0.3],
                            "train_loss": [0.5, 0.0, 1, 0.0, 1, 0.0], "test_err": [0.3, 0.2, 0.4, 0.5, 0.4, 0.5],
                            "test_loss": [1.0, 2.0, 1.0, 1.0, 1.0, 1.0]})
    layers = pd.DataFrame({"run": ["a", "b"], "layer": "l0", "R_f": [0.1, 0.2]})
    return {"summary": summary, "metrics": metrics, "layers": layers}


@pytest.mark.parametrize("error, words", [
    (ValueError("no committed table 'recalibrated' in results/x; committed tables: ['layers']"),
     "and it is not committed yet"),
    (RuntimeError("no 'recalibrated' table for sweep x at scale tiny"), "and it has not finished yet"),
    ("failed", "and it has failed"),
])
def test_page_gives_an_empty_frame_and_a_note_for_an_optional_table_no_run_has(monkeypatch, tmp_path, error, words):
    """A control's table (written by control runs only) that no run has: an empty frame, a note that says why
    (glued as <table>_note), no download; a table that is not optional still raises."""
    from stabkit import sweeps
    from stabkit.report import tables as report_tables

    tabs = _control_tables()
    exc = sweeps.RunsFailedError("1 of 3 run(s) failed") if error == "failed" else error

    def fake_results(sweep, scale, table, **kw):
        if table == "recalibrated":
            raise exc
        return tabs[table].copy()

    monkeypatch.setattr(sweeps, "results", fake_results)
    monkeypatch.delenv(book.ENV_PROVENANCE, raising=False)
    monkeypatch.setenv(report_tables.ENV_PAGE_TABLES, str(tmp_path / "tables"))
    glued = _glued(monkeypatch)
    inputs = []
    monkeypatch.setattr(loading, "record_inputs", lambda *objs, label=None: inputs.append(objs))  # page()'s
    pg = book.page("fig6_layers_scale_detection", "tiny", "layers", "recalibrated", "summary", "metrics",
                   name="fig6", convergence=True, rows="paper", optional=("recalibrated",))
    layers, recalibrated, _, _ = pg
    assert recalibrated.empty and "well_trained" in layers.columns  # the other tables shaped as asked
    n = sum(c.measure == ("recalibrated",) for c in sweeps.load_sweep("fig6_layers_scale_detection", "tiny").configs)
    assert n == 1  # the tiny grid's VGG11bn control
    assert pg.notes == {"recalibrated": f"No run of this page has the recalibrated table: 1 run of the tiny grid "
                                        f"measures it, {words}."}
    assert glued["recalibrated_note"][0] == pg.notes["recalibrated"]
    assert set(inputs[-1][0]) == {"layers", "summary", "metrics"}  # the table no run has is no input of the page
    md = pg.downloads("layers", "recalibrated")
    assert "layers.csv" in md and "recalibrated" not in md
    assert not (tmp_path / "tables" / "fig6" / "recalibrated.csv").exists()
    with pytest.raises(type(exc)):
        book.page("fig6_layers_scale_detection", "tiny", "layers", "recalibrated", glue_facts=False)
    with pytest.raises(ValueError, match="optional"):
        book.page("fig6_layers_scale_detection", "tiny", "layers", optional=("recalibrated",))


def test_page_notes_a_table_that_no_run_of_the_grid_measures_and_glues_an_empty_note_when_it_is_there(monkeypatch):
    from stabkit import sweeps

    tabs = _control_tables()
    tabs["recalibrated"] = pd.DataFrame({"run": ["c"], "layer": "l0", "R_f": [0.3], "batchnorm": True})

    def fake_results(sweep, scale, table, **kw):
        if table == "accuracy":
            raise RuntimeError("no 'accuracy' table")
        return tabs[table].copy()

    monkeypatch.setattr(sweeps, "results", fake_results)
    monkeypatch.delenv(book.ENV_PROVENANCE, raising=False)
    glued = _glued(monkeypatch)
    pg = book.page("fig6_layers_scale_detection", "tiny", "recalibrated", "accuracy",
                   optional=("recalibrated", "accuracy"))
    assert pg.notes == {"accuracy": "No run of this page has the accuracy table: no run of the tiny grid measures it."}
    assert len(pg["recalibrated"]) == 1 and glued["recalibrated_note"][0] == "" and pg["accuracy"].empty


def test_page_counts_each_network_once_without_its_control_runs(monkeypatch):
    """The control runs (selection.control_runs: measure recalibrated only) measure a network another run of
    the page trained: the facts, the convergence listing and the early fits leave them out; the tables keep
    them."""
    from stabkit import sweeps
    from stabkit.report import selection

    tabs = _control_tables()
    tabs["recalibrated"] = pd.DataFrame({"run": ["c"], "layer": "l0", "R_f": [0.3], "batchnorm": True})
    monkeypatch.setattr(sweeps, "results", lambda sweep, scale, table, **kw: tabs[table].copy())
    monkeypatch.delenv(book.ENV_PROVENANCE, raising=False)
    glued = _glued(monkeypatch)
    pg = book.page("fig6_layers_scale_detection", "tiny", "layers", "recalibrated", "metrics", convergence=True,
                   optional=("recalibrated",))
    assert pg.controls == ("c",) and selection.control_runs(tabs["summary"]) == ["c"]
    assert glued["n_runs"][0] == 2 and glued["test_errors"][0] == "VGG11 2.0 %; VGG11bn 1.0 %"
    assert len(pg["summary"]) == 3 and pg["recalibrated"]["well_trained"].tolist() == [False]  # joined by run
    assert len(pg.convergence) == 3
    shown = pg.glue_convergence()
    assert list(shown["net"]) == ["VGG11bn"] and glued["n_conv"][0] == "2" and glued["n_not_well_trained"][0] == "1"
    assert pg.early_fits().count("VGG11bn") == 1


def test_page_shows_the_longest_training_of_a_configuration(monkeypatch):
    """Run b trained the configuration of run a for longer: a leaves every table and the facts, the
    coverage sentence says so."""
    from stabkit import sweeps

    summary = pd.DataFrame({"run": ["a", "b", "c"], "net": ["VGG11bn", "VGG11bn", "VGG11"], "seed": 0,
                            "epochs": [20, 60, 20], "status": "done", "task": "cifar10",
                            "measure": "output,layers", "best_test_err": [0.15, 0.09, 0.19],
                            "last_test_err": [0.15, 0.09, 0.19]})
    summary.attrs["results"] = {"coverage": "3 of 3 configurations of the tiny grid", "n_configs": 3,
                                "n_grid": 3, "missing": [], "sources": "x"}
    tabs = {"summary": summary, "layers": pd.DataFrame({"run": ["a", "b", "c"], "layer": "l0", "R_f": [1, 2, 3]})}

    def fake(sweep, scale, table, **kw):
        df = tabs[table].copy()
        df.attrs = dict(tabs[table].attrs)
        return df

    monkeypatch.setattr(sweeps, "results", fake)
    monkeypatch.delenv(book.ENV_PROVENANCE, raising=False)
    glued = _glued(monkeypatch)
    pg = book.page("fig1_noise_corrupted_cifar", "tiny", "layers")
    assert list(pg["layers"].run) == ["b", "c"] and list(pg.all_rows["summary"].run) == ["b", "c"]
    assert pg.facts["superseded"] == {"a": "b"} and glued["n_runs"][0] == 2
    assert glued["coverage"][0] == ("3 of 3 configurations of the tiny grid; not shown: VGG11bn seed 0 at 20 "
                                    "epochs (its 60-epoch run is)")


def test_training_history_reads_every_committed_run_of_the_scale(monkeypatch):
    """The runs of earlier grids are in the store, not on the page: the history reads the store at the page's
    scale, leaves the control runs out, and is the page's own networks where nothing is committed."""
    from stabkit import sweeps
    from stabkit.report.page import Page

    summary = pd.DataFrame({"run": ["old", "new", "ctl"], "net": "VGG11bn", "seed": 0, "width_factor": [0.25, 0.5, 0.5],
                            "epochs": [15, 20, 20], "measure": ["output", "output", "recalibrated"],
                            "best_test_err": [0.2, 0.15, 0.15], "last_test_err": [0.2, 0.15, 0.15],
                            "train_seconds": [3600.0, 7200.0, 7200.0], "threads": 1, "device": "cpu"})
    asked = []

    def fake_load(sweep, scale, table, results_root=None):
        asked.append((sweep, scale, table, results_root))
        return summary

    monkeypatch.setattr(sweeps, "load", fake_load)
    pg = Page("fig1", "fig1_noise_corrupted_cifar", "cpu", {"summary": summary.iloc[1:2]}, {}, controls=(),
              results_root="/x")
    hist = pg.training_history()
    assert list(hist["core-hours"]) == [1.0, 2.0] and asked == [("fig1_noise_corrupted_cifar", "cpu", "summary", "/x")]
    monkeypatch.setattr(sweeps, "load", lambda *a, **k: pd.DataFrame())  # nothing committed: the page's own runs
    assert list(pg.training_history()["core-hours"]) == [2.0]
    monkeypatch.setattr(sweeps, "load", lambda *a, **k: (_ for _ in ()).throw(ValueError("damaged")))
    assert list(pg.training_history()["core-hours"]) == [2.0]
