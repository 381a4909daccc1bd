"""Issue 15.3: four sweeps on one runs folder at once compute every run exactly once, with no false
failure (before the flock lock: 14-23 of 300 runs computed twice, 3-13 reported failed)."""
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from stabkit import sweeps

REPO = Path(__file__).resolve().parents[1]
N_PROC, N_RUNS = 4, 16
_PLUGIN = '''
import os
import pandas as pd
from stabkit.runs import register_measurement

@register_measurement("test_count")
def count(model, cfg, ctx):
    with open(os.environ["TEST_COUNT_LOG"], "a") as fh:  # one short O_APPEND write per computed run
        fh.write(f"{cfg.key} {os.getpid()}\\n")
    return {"count": pd.DataFrame({"pid": [os.getpid()]})}
'''


@pytest.mark.slow
def test_four_sweeps_on_one_runs_folder_compute_every_run_once(tmp_path):
    (tmp_path / "countplug.py").write_text(_PLUGIN)
    import yaml
    spec = {"name": "stress", "scales": {"tiny": {}}, "grid": {"seed": list(range(N_RUNS))},
            "base": {"task": "twopoints", "net": "LeNet", "ptr": 16, "test_size": 16, "epochs": 1, "P": 4,
                     "width_factor": 0.125, "batch_size": 16, "measure": ["test_count"], "states": ["trained"],
                     "task_options": {"d": 16, "xi": 8.0}}}
    (tmp_path / "stress.yaml").write_text(yaml.safe_dump(spec))
    root, log = tmp_path / "runs", tmp_path / "computed.log"
    env = dict(os.environ, STABKIT_PLUGINS="countplug", TEST_COUNT_LOG=str(log), OMP_NUM_THREADS="1",
               STABKIT_THREADS="1", STABKIT_RESULTS=str(tmp_path / "results"), PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    cmd = [sys.executable, "-m", "stabkit", "sweep", str(tmp_path / "stress.yaml"), "--scale", "tiny", "--root",
           str(root), "--device", "cpu", "--quiet"]
    t0 = time.time()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(N_PROC)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    wall = time.time() - t0
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]  # no false failure, nothing left unfinished
        assert f"done {N_RUNS}, committed 0, failed 0, running 0, pending 0" in out, out[-3000:]
    keys = sweeps.load_sweep(tmp_path / "stress.yaml", "tiny").keys
    computed = Counter(line.split()[0] for line in log.read_text().splitlines())
    dup = {k: n for k, n in computed.items() if n > 1}
    assert not dup, f"computed more than once: {dup}"
    assert set(computed) == set(keys) and len(computed) == N_RUNS
    assert sweeps.status(root, tmp_path / "stress.yaml", "tiny")["done"] == N_RUNS
    assert not list(root.rglob("lock")) and not list(root.rglob(".*.tmp-*"))
    workers = {line.split()[1] for line in log.read_text().splitlines()}
    print(f"{N_PROC} sweeps, {N_RUNS} runs, {len(workers)} processes computed runs, {wall:.0f} s")
