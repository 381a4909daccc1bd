"""The book: the runner (tools/book.py) refuses to publish failed notebooks and records provenance (the
notebooks' side, stabkit.report.page, is tests/test_page.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


REPO = Path(__file__).resolve().parents[1]


def _load_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stabkit_book_tool", REPO / "tools" / "book.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


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
        "import os, sys\nimport pandas as pd\nfrom stabkit.report import page as book\n"
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


