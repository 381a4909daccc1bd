"""``make lab`` (issue 25): JupyterLab starts as root and as a user, and a page opened there shows its numbers
(JupyterLab leaves MyST's ``{glue:text}`` roles raw: :func:`stabkit.report.page.glue` prints them too)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stabkit.report import page as book
from stabkit.report.verdicts import Claim

REPO = Path(__file__).resolve().parents[1]


def _lab_command(tmp_path, uid: int) -> str:
    """The command ``make lab`` would run for a user of id ``uid`` (``make -n``: nothing runs)."""
    fake = tmp_path / f"bin{uid}"
    fake.mkdir()
    (fake / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (fake / "id").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    res = subprocess.run(["make", "-n", "-s", "-o", ".venv/.stabkit-installed", "lab"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    line = [ln for ln in res.stdout.splitlines() if "jupyter lab" in ln][-1]
    # make -n prints the recipe with the shell substitution unexpanded: run that part with the fake id
    return subprocess.run(["bash", "-c", f"echo {line.split('jupyter lab', 1)[1]}"], env=env, capture_output=True,
                          text=True, timeout=60).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_allows_root_only_as_root(tmp_path):
    assert "--allow-root" in _lab_command(tmp_path, 0)
    assert "--allow-root" not in _lab_command(tmp_path, 1000)


def test_glue_prints_the_values_where_the_text_cannot_show_them(monkeypatch, capsys):
    claim = Claim("c", True, 1.7, 1.0, rule="ci_low > 1", statement="R_f falls", ci_low=1.2, ci_high=2.2)
    monkeypatch.delenv(book.ENV_SHOW_GLUE, raising=False)
    monkeypatch.setenv(book.ENV_PROVENANCE, "/dev/null")  # the book runner: the page text shows them
    book.glue("n_runs", 3)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv(book.ENV_SHOW_GLUE, "1")              # JupyterLab
    book.glue("n_runs", 3)
    book.glue("coverage", "all 4 configurations")
    book.glue_claim("rf", claim)
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["n_runs: 3", "coverage: all 4 configurations"]
    assert len(out) == 3, out  # one line per claim, not one per glued name
    assert out[2] == "rf: R_f falls: holds (value 1.7; rule: ci_low > 1); 95 % interval [1.2, 2.2]"
    monkeypatch.setenv(book.ENV_SHOW_GLUE, "0")
    book.glue("n_runs", 3)
    assert capsys.readouterr().out == ""


def test_show_glue_default_follows_the_kernel(monkeypatch):
    monkeypatch.delenv(book.ENV_SHOW_GLUE, raising=False)
    monkeypatch.delenv(book.ENV_PROVENANCE, raising=False)
    assert book.show_glue() is False  # plain Python (no Jupyter kernel)

    class ZMQInteractiveShell:  # what IPython.get_ipython() returns in a Jupyter kernel
        pass

    import IPython
    monkeypatch.setattr(IPython, "get_ipython", lambda: ZMQInteractiveShell())
    assert book.show_glue() is True
    monkeypatch.setenv(book.ENV_PROVENANCE, "/tmp/records.jsonl")  # run by tools/book.py or the tests
    assert book.show_glue() is False
