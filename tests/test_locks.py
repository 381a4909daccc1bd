"""stabkit.locks: the run lock cannot race (flock held for the run), a dead holder never blocks
(SIGKILL, PID reuse), release never removes a lock another process owns now (issue 15, items 2-3)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from stabkit import runs
from stabkit.locks import hold_lock

REPO = Path(__file__).resolve().parents[1]


def _legacy_lock(path: Path, pid: int, age_s: float = 0.0) -> Path:
    """A lock file as the code before the flock lock wrote it (JSON host/pid, heartbeat = mtime)."""
    path.mkdir(parents=True, exist_ok=True)
    lock = path / "lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "since": time.time() - age_s}))
    t = time.time() - age_s
    os.utime(lock, (t, t))
    return lock


def test_a_held_lock_excludes_others_and_is_gone_after_release(tmp_path):
    with hold_lock(tmp_path) as beat:
        assert beat is not None and runs.run_state(tmp_path) == "running"
        with hold_lock(tmp_path) as other:  # another open file description: the flock excludes it
            assert other is None
        info = json.loads((tmp_path / "lock").read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["nonce"]
        old = time.time() - 1000
        os.utime(tmp_path / "lock", (old, old))
        beat()  # the heartbeat touches the lock file
        assert time.time() - (tmp_path / "lock").stat().st_mtime < 100
    assert not (tmp_path / "lock").exists() and runs.run_state(tmp_path) == "interrupted"


def test_the_holder_holds_whatever_the_lock_file_says(tmp_path):
    """The old lock was the file's content: an empty (being written) or unreadable file was taken over."""
    with hold_lock(tmp_path) as beat:
        assert beat is not None
        (tmp_path / "lock").write_text("")  # e.g. the moment between create and JSON write
        assert runs.run_state(tmp_path) == "running"
        with hold_lock(tmp_path) as other:
            assert other is None
        (tmp_path / "lock").write_text("{not json")
        assert runs.run_state(tmp_path) == "running"


def test_release_never_removes_a_lock_another_process_owns_now(tmp_path):
    lock = tmp_path / "lock"
    ca = hold_lock(tmp_path)
    assert ca.__enter__() is not None
    lock.unlink()  # the file is gone (removed by hand, or a release in between): someone else takes the run
    cb = hold_lock(tmp_path)
    assert cb.__enter__() is not None
    ino = lock.stat().st_ino
    ca.__exit__(None, None, None)  # the first holder lets go: it must not delete the second's lock
    assert lock.exists() and lock.stat().st_ino == ino and runs.run_state(tmp_path) == "running"
    cb.__exit__(None, None, None)
    assert not lock.exists()


def test_a_killed_holder_never_blocks(tmp_path):
    code = ("import sys, time; from stabkit.runs import RunLock; lk = RunLock(sys.argv[1]); "
            "assert lk.acquire(); print('held', flush=True); time.sleep(300)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert runs.run_state(tmp_path) == "running"
        with hold_lock(tmp_path) as other:
            assert other is None
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    assert (tmp_path / "lock").exists() and runs.run_state(tmp_path) == "interrupted"  # file left, lock free
    with hold_lock(tmp_path) as beat:
        assert beat is not None


def test_legacy_locks_count_only_while_their_pid_is_alive_and_their_heartbeat_young(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _legacy_lock(tmp_path / "dead", dead.pid)
    assert runs.run_state(tmp_path / "dead") == "interrupted"
    _legacy_lock(tmp_path / "live", os.getpid())  # a live process of the old code: honoured
    assert runs.run_state(tmp_path / "live") == "running"
    with hold_lock(tmp_path / "live") as other:
        assert other is None
    assert (tmp_path / "live" / "lock").exists()  # not ours: left alone
    # PID reuse: the pid now belongs to an unrelated live process, the heartbeat stopped hours ago
    _legacy_lock(tmp_path / "reused", os.getpid(), age_s=7 * 3600)
    assert runs.run_state(tmp_path / "reused") == "interrupted"
    with hold_lock(tmp_path / "reused") as beat:
        assert beat is not None


def test_a_stale_lock_of_a_done_run_is_cleared_by_the_next_sweep(tmp_path):
    """Issue 28.9: a kill just after the ``done`` marker left the lock file behind."""
    import json

    from stabkit import sweeps
    spec = {"name": "stale", "base": dict(task="twopoints", net="LeNet", ptr=64, test_size=64, epochs=1, P=8,
                                          width_factor=0.25, batch_size=32, measure=["output"]),
            "scales": {"tiny": {}}}
    cfg = sweeps.load_sweep(spec, "tiny").configs[0]
    d = tmp_path / cfg.key
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"key": cfg.key, **cfg.to_dict()}))
    (d / "done").touch()
    (d / "lock").write_text(json.dumps({"host": "h", "pid": 1, "since": 0, "nonce": "n"}))  # its holder died
    rep = sweeps.sweep(spec, "tiny", tmp_path, device="cpu", progress=False)
    assert list(rep.status) == ["done"] and not (d / "lock").exists()
    held = tmp_path / "held"
    held.mkdir()
    from stabkit.locks import clear_stale_lock, hold_lock
    with hold_lock(held):  # a live holder's lock is never removed
        assert clear_stale_lock(held) is False and (held / "lock").exists()
