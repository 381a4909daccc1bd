"""The book: the runner (tools/book.py) refuses to publish failed notebooks and records provenance; the
notebooks' side (stabkit.report.glue) glues numbers and claims in myst-nb's format and loads pages."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from stabkit.report import glue as book
from stabkit.report.claims import Claim

REPO = Path(__file__).resolve().parents[1]


def _load_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stabkit_book_tool", REPO / "tools" / "book.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tool = _load_tool()



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


# ---------------------------------------------------------------------------------------- toc parsing
def test_toc_notebooks_maps_executed_entries(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(yaml.safe_dump({
        "format": "jb-book", "root": "book/intro",
        "parts": [{"caption": "A", "chapters": [
            {"file": "book/methods"},
            {"file": "book/executed/one", "sections": [{"file": "book/executed/sub/two.ipynb"}]}]}]}))
    entries = tool.toc_notebooks(toc)
    assert [e.name for e in entries] == ["one", "sub/two"]
    assert entries[1].source == tmp_path / "notebooks" / "sub" / "two.ipynb"
    assert entries[0].target == tmp_path / "book" / "executed" / "one.ipynb"


def test_repository_toc_and_config():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    assert toc["format"] == "jb-book" and toc["root"] == "book/intro"
    captions = [p["caption"] for p in toc["parts"]]
    assert "The paper" in captions and captions[-1] == "Reproduce and reuse"
    for name in ["intro", "methods", "reproduce", "api", "references"]:
        assert (REPO / "book" / f"{name}.md").is_file()
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["only_build_toc_files"] is True
    assert cfg["sphinx"]["config"]["nb_output_stderr"] == "remove"
    assert cfg["launch_buttons"]["thebe"] is False
    assert cfg["sphinx"]["config"]["intersphinx_mapping"] == {}


# ------------------------------------------------------------------------------- runner, end to end
GOOD = [
    new_markdown_cell("# A good page\n\nSome text."),
    new_code_cell('scale: str = "small"  # scale\nseed: int = 0  # seed', metadata={"tags": ["parameters"]}),
    new_code_cell(
        "import os, sys\nimport pandas as pd\nfrom stabkit.report import glue as book\n"
        "df = pd.DataFrame({'x': [1.0, 2.0]})\n"
        "book.record_inputs(df, label='demo table')\n"
        "book.record(device='cpu', seeds=[seed])\n"
        "print('noise on stderr', file=sys.stderr)\n"
        "book.glue('progress', os.environ.get('TQDM_DISABLE'))\n"
        "book.glue('scale_seen', scale)"),
    new_markdown_cell("Scale {glue:text}`scale_seen`."),
]
BAD = [
    new_markdown_cell("# A bad page"),
    new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
    new_code_cell("1 / 0"),
]


def _write_nb(path: Path, cells) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                            "display_name": "Python 3"}})
    nbformat.write(nb, path)


@pytest.fixture()
def tiny_book(tmp_path):
    toc = {"format": "jb-book", "root": "book/intro",
           "chapters": [{"file": "book/executed/good"}, {"file": "book/executed/bad"}]}
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(toc))
    _write_nb(tmp_path / "notebooks" / "good.ipynb", GOOD)
    _write_nb(tmp_path / "notebooks" / "bad.ipynb", BAD)
    stale = tmp_path / "book" / "executed" / "bad.ipynb"  # published by an earlier, successful run
    _write_nb(stale, GOOD)
    return tmp_path


@pytest.mark.timeout(300)
def test_runner_refuses_failed_notebook_and_records_provenance(tiny_book, capsys):
    status = tool.main(["run", "--toc", str(tiny_book / "_toc.yml"), "--scale", "tiny", "--no-progress",
                        "--timeout", "120"])
    err = capsys.readouterr().err
    assert status == 1
    assert "bad" in err and "ZeroDivisionError" in err and "Refusing" in err
    executed = tiny_book / "book" / "executed"
    _write_nb(tiny_book / "expected.ipynb", GOOD)  # the bytes the earlier run published
    assert (executed / "bad.ipynb").read_bytes() == (tiny_book / "expected.ipynb").read_bytes(), \
        "a failure leaves the published page as it was"
    assert "book/executed/bad.ipynb" in err and "is left as it was" in err, "and says so"
    assert (tiny_book / "_build" / "failed" / "bad.ipynb").is_file()

    nb = nbformat.read(executed / "good.ipynb", as_version=4)
    prov = nb.metadata["stabkit"]["provenance"]
    assert prov["parameters"] == {"scale": "tiny", "seed": 0}
    assert prov["wall_seconds"] > 0 and prov["environment"]["torch"]
    assert {"commit", "dirty"} <= set(prov["git"])
    assert prov["recorded"]["facts"]["device"] == "cpu"
    assert [i["label"] for i in prov["recorded"]["inputs"]] == ["demo table"]
    assert len(prov["inputs_sha256"]) == 64
    # provenance cell right after the title, injected parameters hidden, parameters collapsed
    assert nb.cells[0].source.startswith("# A good page")
    assert "stabkit-provenance" in nb.cells[1].metadata["tags"]
    assert "Provenance" in nb.cells[1].source and "`tiny`" in nb.cells[1].source
    tags = {c.source.split("\n")[0]: c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"}
    assert any("injected-parameters" in t and "remove-cell" in t for t in tags.values())
    assert any("parameters" in t and "hide-cell" in t for t in tags.values())
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(o.get("name") == "stderr" for o in outputs), "stderr must be removed"
    glued = {o.metadata["scrapbook"]["name"]: o.data["application/papermill.record/text/plain"]
             for o in outputs if "scrapbook" in o.get("metadata", {})}
    assert glued == {"progress": "'1'", "scale_seen": "'tiny'"}
    manifest = json.loads((executed / "provenance.json").read_text())
    assert set(manifest) == {"good"}


def test_runner_reports_missing_sources_before_running(tmp_path, capsys):
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(
        {"format": "jb-book", "root": "book/intro", "chapters": [{"file": "book/executed/nowhere"}]}))
    assert tool.main(["run", "--toc", str(tmp_path / "_toc.yml"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "missing" in err
    with pytest.raises(tool.BookRunError, match="not in"):
        tool.run_notebooks(["other"], toc=tmp_path / "_toc.yml", progress=False)


def test_kernel_environment(monkeypatch):
    monkeypatch.setenv("STABKIT_DATA", "/somewhere/else")
    env = tool.kernel_environment()
    assert env == {"TQDM_DISABLE": "1"}
    assert "STABKIT_DATA" not in env  # the data location is stabkit.data's business

# ---------------------------------------------------------------------------------- pages and claims
def _glued(monkeypatch) -> dict:
    out = {}
    monkeypatch.setattr(book, "glue", lambda name, value, display=False: out.__setitem__(name, (value, display)))
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
    from stabkit.report.prose import FACT_KEYS
    assert set(FACT_KEYS) <= set(glued)
    assert book.current_page().name == "fig5"
    rec = book.glue_claim("c", Claim("c", True, 1.0, 0.0))
    assert rec["page"] == "fig5" and rec["scale"] == "tiny"
    with pytest.raises(ValueError, match="tables"):
        book.page("fig5_scale_detection", "tiny", "")
