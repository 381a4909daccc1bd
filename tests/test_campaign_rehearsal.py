"""The README's campaign rehearsal finishes at least one tiny run on this machine, loaded or not (issue 25:
``--deadline 20`` finished none on a loaded 2-core machine)."""
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python -m stabkit campaign --scale tiny --device cpu --deadline (\d+) --out (\S+)")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_rehearsal_finishes_a_run(tmp_path, monkeypatch):
    found = COMMAND.search((REPO / "README.md").read_text())
    assert found, "the README shows no campaign rehearsal (python -m stabkit campaign --scale tiny --device cpu ...)"
    deadline = int(found.group(1))
    assert deadline <= 300, f"a rehearsal of {deadline} s is no rehearsal"
    monkeypatch.setenv("STABKIT_RUNS", str(tmp_path / "runs"))
    res = subprocess.run([sys.executable, "-m", "stabkit", "campaign", "--scale", "tiny", "--device", "cpu",
                          "--deadline", str(deadline), "--out", str(tmp_path / "out"),
                          "--results-root", str(tmp_path / "results")],  # nothing committed: every run is due
                         cwd=REPO, capture_output=True, text=True, timeout=deadline + 240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = set()
    for part in sorted((tmp_path / "out").glob("runs*.tar*")):  # runs.tar.gz, runs-2.tar.gz, ... (gzip parts)
        with tarfile.open(part) as tar:
            runs |= {m.name.split("/")[0] for m in tar.getmembers() if "/" in m.name}
    assert runs, f"the rehearsal (--deadline {deadline}) finished no run:\n{res.stdout[-3000:]}"
