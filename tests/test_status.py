"""``python -m stabkit status`` tells committed, finished, running, failed and pending runs apart (issue 25:
committed runs were listed as pending)."""
import json

import yaml

from stabkit import runs, sweeps
from stabkit.__main__ import main

TINY = dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8, width_factor=0.25, batch_size=32,
            measure=["output"])


def test_status_counts_every_state(tmp_path, capsys):
    spec = tmp_path / "states.yaml"
    spec.write_text(yaml.safe_dump({"name": "states", "base": TINY, "grid": {"seed": [0, 1, 2, 3, 4, 5]},
                                    "scales": {"tiny": {}}}))
    sw = sweeps.load_sweep(spec, "tiny")
    by_seed = {c.seed: c for c in sw.configs}
    root, res = tmp_path / "runs", tmp_path / "results"
    for s in (0, 1):
        runs.run(by_seed[s], root, device="cpu", progress=False)
    sweeps.export(sw, "tiny", root, res)                    # seeds 0, 1: committed
    (root / by_seed[1].key / "done").unlink()              # committed, whatever its folder here says
    runs.run(by_seed[2], root, device="cpu", progress=False)  # seed 2: finished here, not committed
    failed = root / by_seed[3].key                          # seed 3: failed
    failed.mkdir(parents=True)
    (failed / "config.json").write_text(json.dumps({"key": failed.name, **by_seed[3].to_dict()}))
    (failed / "status.json").write_text(json.dumps({"status": "failed", "error": "ValueError: boom"}))
    lock = runs.RunLock(root / by_seed[4].key)              # seed 4: running (its lock held); seed 5: pending
    (root / by_seed[4].key).mkdir(parents=True)
    assert lock.acquire()
    try:
        committed = sweeps.committed_keys("states", "tiny", res)
        assert sweeps.status(root, sw, committed=committed) == dict(total=6, committed=2, done=1, pending=1, failed=1,
                                                                  running=1)
        assert sweeps.status(root, sw) == dict(total=6, done=2, pending=2, failed=1, running=1)  # without the store
        assert main(["status", str(spec), "--scale", "tiny", "--root", str(root), "--results-root", str(res)]) == 0
    finally:
        lock.release()
    out = capsys.readouterr().out.splitlines()
    head = out[0].split()
    assert head == ["sweep", "scale", "total", "committed", "finished", "running", "failed", "pending"]
    line = [ln for ln in out if ln.startswith("states ")][0].split()
    assert dict(zip(head[2:], line[2:8])) == {"total": "6", "committed": "2", "finished": "1", "running": "1",
                                              "failed": "1", "pending": "1"}


def test_a_running_run_is_listed_once_whatever_the_sweeps_including_it(tmp_path, capsys):
    """Issue 24: a run of a sweep that other sweeps include (Fig. 6 in Fig. 5) was printed under each of them."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"name": "base", "base": TINY, "grid": {"seed": [0, 1]}, "scales": {"tiny": {}}}))
    (tmp_path / "whole.yaml").write_text(yaml.safe_dump({"name": "whole", "include": ["base"], "base": TINY,
                                                         "grid": {"seed": [0, 1, 2]}, "scales": {"tiny": {}}}))
    key = sweeps.load_sweep(base, "tiny").configs[0].key
    root = tmp_path / "runs"
    (root / key).mkdir(parents=True)
    lock = runs.RunLock(root / key)
    assert lock.acquire()
    try:
        assert main(["status", str(base), str(tmp_path / "whole.yaml"), "--scale", "tiny", "--root", str(root),
                     "--results-root", str(tmp_path / "results")]) == 0
    finally:
        lock.release()
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[5] for ln in out[1:] if ln.startswith(("base ", "whole "))] == ["1", "1"]  # counted in both
    assert sum(ln.strip().startswith(f"running {key}") for ln in out) == 1, out  # listed once
