"""One owner per trial: the lock a harness holds on a trial folder while it runs the trial.

The lock is an ``fcntl.flock`` on ``<trial>/.lock`` (:attr:`bench.layout.TrialDir.lock`), taken
before anything of the trial is started and held until its result is written. The kernel drops
it when its holder dies, however it dies (SIGKILL included), so a trial left by a dead harness
is taken over by the next one that reaches it; the file also says who holds it (pid, host,
since when) for the notice a second harness prints.

A harness that finds a trial owned by another one **waits** for it (a one-line notice says by
whom) and then reads the trial's result: succeeded, it is skipped as already done; otherwise the
owner stopped before finishing and this harness takes the trial over, resuming it from its
checkpoint. So two harnesses on one sweep run each trial once, one after the other (never two
trials of a benchmark side by side, which would disturb each other's timings), and the second
one finishes whatever the first could not.

The lock is held by the harness process only (never inherited by the trial's processes): a job
that outlives a killed harness is found and stopped by the backend (locally: processes still
writing to the trial's run directory, ``bench/backends/local/handle.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path


def _describe(raw: bytes) -> str:
    try:
        owner = json.loads(raw)
        since = time.strftime("%H:%M:%S", time.localtime(float(owner["since"])))
        return f"pid {owner['pid']} on {owner['host']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


class TrialLock:
    """The lock of one trial folder, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd
        self.waited_for: str | None = None  # who owned it when we arrived (None: nobody)

    @classmethod
    def acquire(cls, path: Path, notice: Callable[[str], None] | None = None) -> TrialLock:
        """Take the lock at ``path`` (its folder is created); if another process holds it, call
        ``notice`` with who that is and wait until it is released (Ctrl-C interrupts)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        lock = cls(path, fd)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.waited_for = _describe(os.pread(fd, 4096, 0))
                if notice is not None:
                    notice(lock.waited_for)
                fcntl.flock(fd, fcntl.LOCK_EX)
            lock._say_who()
        except BaseException:
            os.close(fd)
            raise
        return lock

    def _say_who(self) -> None:
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": time.time()}).encode()
        try:  # in place: the lock belongs to this file (inode), so it is never replaced
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, owner, 0)
        except OSError:  # a full disk: the lock holds all the same, the notice is vaguer
            pass

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing the last descriptor of the file drops the lock
        self._fd = -1

    def __enter__(self) -> TrialLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def held(path: Path) -> bool:
    """Whether some process holds the lock at ``path`` (a check for tests and the chaos soak)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
