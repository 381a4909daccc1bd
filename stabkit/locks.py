"""The lock of a folder in which one process works at a time, and a dead one never blocks it: a run's folder
(:mod:`stabkit.runs`: one process computes a run), or the folder of a network that several runs share
(it is trained once), and the sweeps that wait for such folders read its record and heartbeat.

The lock is ``fcntl.flock`` on the open file ``<run>/lock``, held for the whole run: the kernel releases it
when the process dies (also on SIGKILL), so liveness never depends on a PID (which the system may give to
an unrelated process) or on a clock. The file also holds a JSON record for display (host, pid, since,
nonce, and the progress its holder last reported: ``phase`` training or measuring, the epoch...), written
after the lock is taken and at each report, and its modification time is the run's heartbeat (touched
every epoch and at each measured state).

Why this cannot race:

- taking: open (create if missing), ``flock(LOCK_EX | LOCK_NB)``, then check that the path still names
  the inode we locked (a releasing holder may have unlinked it in between); if not, start again;
- releasing: unlink the path only while we still hold the lock and the path still names our inode, then
  close. No one ever deletes a lock by name without holding it.

A lock file written by the code before this module (``O_EXCL`` create + JSON, no ``flock``) is honoured
when nobody holds the ``flock``: it counts as held while its PID is alive on this host and its heartbeat
is younger than :data:`LEGACY_STALE_S` (a PID reused by an unrelated process then stops blocking after
that age; a lock of another host counts while younger than :data:`FOREIGN_STALE_S`).

``flock`` works on local file systems and on NFS (Linux emulates it with POSIX locks there); a file
system that refuses it raises ``OSError`` with a message naming the lock file.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "LEGACY_STALE_S", "FOREIGN_STALE_S", "RunLock", "hold_lock", "lock_held", "lock_info",
           "heartbeat_age", "clear_stale_lock"]

LOCK_NAME = "lock"
#: A legacy lock (no flock) whose PID is alive on this host stops counting after this many seconds
#: without a heartbeat (the PID may belong to an unrelated process by now).
LEGACY_STALE_S = 6 * 3600
#: A legacy lock of another host stops counting after this many seconds without a heartbeat.
FOREIGN_STALE_S = 2 * 3600
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_info(lock: str | Path) -> dict[str, Any]:
    """The JSON record of a lock file (``{}`` if missing, empty or partly written)."""
    try:
        info = json.loads(Path(lock).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def heartbeat_age(lock: str | Path) -> float | None:
    """Seconds since the lock file was last touched (``None`` if it does not exist)."""
    try:
        return max(0.0, time.time() - Path(lock).stat().st_mtime)
    except OSError:
        return None


def _legacy_alive(lock: Path) -> bool:
    """A lock file of the pre-flock code (JSON with a pid, no ``nonce``): alive by the PID/age rules."""
    info = lock_info(lock)
    if not info or "nonce" in info or "pid" not in info:
        return False
    age = heartbeat_age(lock)
    if age is None:
        return False
    if info.get("host") == socket.gethostname():
        try:
            pid = int(info.get("pid", -1))
        except (TypeError, ValueError):
            return False
        return _pid_alive(pid) and age < LEGACY_STALE_S
    return age < FOREIGN_STALE_S


def _try_flock(fd: int, mode: int, lock: Path) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _BUSY:
            return False
        raise OSError(exc.errno, f"cannot lock {lock} with flock ({exc.strerror}); the runs folder must be "
                                 f"on a file system with file locks") from None
    return True


def lock_held(path: str | Path) -> bool:
    """Whether a live process holds the lock of run folder ``path`` (never takes it for more than an
    instant, and never blocks)."""
    lock = Path(path) / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        if not _try_flock(fd, fcntl.LOCK_SH, lock):
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return _legacy_alive(lock)


def _rewrite(fd: int, info: Mapping[str, Any]) -> None:
    """Replace the record of an open lock file. Not atomic: a reader may see a partial record, which
    :func:`lock_info` reads as ``{}`` (the record is for display; the ``flock`` is the lock)."""
    data = json.dumps(info).encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


class RunLock:
    """The exclusive lock of one run folder. ``acquire()`` -> bool (never blocks for long); ``release()``;
    ``heartbeat()`` touches the file. Also a context manager (``RuntimeError`` if it is held elsewhere)."""

    def __init__(self, path: str | Path, tries: int = 5, retry_s: float = 0.02) -> None:
        self.path = Path(path)
        self.lock = self.path / LOCK_NAME
        self.nonce = uuid.uuid4().hex
        self.tries, self.retry_s = tries, retry_s
        self._fd: int | None = None
        self._info: dict[str, Any] = {}

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock; ``False`` if another live process holds it (a few quick retries first: a
        status reader may hold a shared lock for an instant)."""
        if self._fd is not None:
            return True
        for attempt in range(self.tries):
            fd = os.open(self.lock, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                if not _try_flock(fd, fcntl.LOCK_EX, self.lock):
                    os.close(fd)
                    time.sleep(self.retry_s * (attempt + 1))
                    continue
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.lock).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the previous holder unlinked it after we opened it: start again
                    os.close(fd)
                    continue
                if _legacy_alive(self.lock):  # a live process of the pre-flock code
                    os.close(fd)
                    return False
                self._info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                              "nonce": self.nonce}
                _rewrite(fd, self._info)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return True
        return False

    def heartbeat(self, progress: Mapping[str, Any] | None = None) -> None:
        """Touch the lock file (its modification time is the run's heartbeat); ``progress`` (JSON values,
        e.g. ``{"phase": "training", "epoch": 3, "epochs": 300}``) replaces the progress of its record."""
        if self._fd is None:
            return
        if progress is not None:
            self._info = {**{k: self._info[k] for k in ("host", "pid", "since", "nonce")}, **progress}
            _rewrite(self._fd, self._info)  # rewriting moves the modification time too
        else:
            os.utime(self._fd)

    def release(self) -> None:
        """Remove the lock file if it is still ours, then let go of the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                if os.stat(self.lock).st_ino == os.fstat(fd).st_ino:
                    os.unlink(self.lock)  # we hold the flock: nobody else can hold this inode now
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        if not self.acquire():
            raise RuntimeError(f"run {self.path} is being computed by another live process (lock file)")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def clear_stale_lock(path: str | Path) -> bool:
    """Remove the lock file of run folder ``path`` if no live process holds it (e.g. a process killed after
    the ``done`` marker and before its release), by taking and releasing it, never by name alone.
    Returns whether a file was removed."""
    if not (Path(path) / LOCK_NAME).exists():
        return False
    lk = RunLock(path, tries=1)
    if not lk.acquire():
        return False
    lk.release()
    return True


@contextlib.contextmanager
def hold_lock(path: str | Path) -> Iterator[Callable[..., None] | None]:
    """Hold the lock of run folder ``path`` for the block. Yields a heartbeat function (touches the lock
    file), or ``None`` if another live process holds it."""
    lk = RunLock(path)
    if not lk.acquire():
        yield None
        return
    try:
        yield lk.heartbeat
    finally:
        lk.release()
