"""How a worker gives up: its exception sorted into an exit code and one ``error:`` line.

The codes and the rule that says which a restart can fix are the run-directory contract's
(:mod:`rundir`: 1-127 permanent, 128-255 retryable, as Kubeflow's ``restartPolicy: ExitCode``):

====  ============  ===============================================================
code  kind          what
====  ============  ===============================================================
2     config        a bad configuration value (ConfigError)
3     data          a missing or damaged dataset or checkpoint
4     environment   no space left, a read-only or forbidden path, out of memory
1     error         anything else: a bug, which a restart would meet again
200   distributed   the process group failed (a peer died, a collective or the
                    rendezvous broke or timed out): restarting the group can fix it
====  ============  ===============================================================

A worker killed by a signal never gets here; it reports 128 + the signal, retryable too.
:func:`give_up` writes the :class:`rundir.FailureRecord` first (where ``GNN_BENCH_FAILURE_FILE``
says: it must survive a full disk), then prints the line.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass

import rundir
from trainer.config import ConfigError, verbose

# Words of the errors torch.distributed raises when the group breaks (gloo's TCP transport, the
# TCPStore, NCCL): a peer SIGKILLed makes the survivor's collective raise a plain RuntimeError
# saying "Connection reset by peer" (measured with torch 2.13 and gloo); others say "closed by
# peer", "Broken pipe", or time out.
_GROUP_WORDS = ("connection reset", "connection closed", "connection refused", "broken pipe",
                "timed out", "timeout", "gloo", "nccl", "tcpstore", "socket", "rendezvous",
                "connectfullmesh", "processgroup", "peer")

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_ALLOWED = (errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass(frozen=True)
class Failure:
    code: int
    message: str  # the one line, without "error: "
    traceback: bool = False  # print the traceback too (an unexpected error)

    @property
    def kind(self) -> str:
        return rundir.KINDS.get(self.code, "error")


def classify(exc: BaseException, run_dir: str) -> Failure:
    """The exit code and line of the exception that stopped a worker writing to ``run_dir``."""
    from trainer.data.dataset import DatasetError
    from trainer.train import CheckpointError

    if isinstance(exc, KeyboardInterrupt):  # SIGINT: 128 + 2, as the shell reports it
        return Failure(128 + 2, "interrupted (SIGINT)")
    if isinstance(exc, ConfigError):
        return Failure(rundir.EXIT_CONFIG, str(exc))
    if isinstance(exc, DatasetError | CheckpointError):
        return Failure(rundir.EXIT_DATA, str(exc))
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return Failure(rundir.EXIT_ENVIRONMENT, f"out of memory ({_first_line(exc)}): use fewer "
                       "workers, a smaller dataset or a machine with more memory")
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE + _NOT_ALLOWED:
        where = exc.filename or f"under {run_dir} (or the log)"
        if exc.errno in _NO_SPACE:
            return Failure(rundir.EXIT_ENVIRONMENT, f"no space left on device writing {where}: "
                           "free space there, or set run_dir (results_dir in a sweep) to a "
                           "folder on a larger disk")
        return Failure(rundir.EXIT_ENVIRONMENT, f"cannot write {where} ({exc.strerror}): set "
                       "run_dir (results_dir in a sweep) to a writable folder")
    if _group_broke(exc):
        return Failure(rundir.EXIT_RETRY, f"the process group failed ({_first_line(exc)}): "
                       "restarting the job resumes it from its checkpoint")
    return Failure(rundir.EXIT_ERROR, f"{type(exc).__name__}: {_first_line(exc)}", traceback=True)


def _group_broke(exc: BaseException) -> bool:
    """An error of the process group itself, not of this worker's own work."""
    try:
        from torch.distributed import DistError
    except ImportError:  # a torch built without distributed
        DistError = ()  # noqa: N806
    if isinstance(exc, DistError | ConnectionError | TimeoutError):
        return True
    if type(exc) is not RuntimeError:  # torch raises plain RuntimeErrors for these
        return False
    text = str(exc).lower()
    return any(word in text for word in _GROUP_WORDS)


def _first_line(exc: BaseException) -> str:
    """The message's first sentence, without the source location gloo puts in front."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", lines[0]) if lines else ""
    text = text.split(". ", 1)[0].rstrip(".")
    return (text or type(exc).__name__)[:300]


def give_up(failure: Failure, rank: int) -> int:
    """Leave the failure record, print the line (and the traceback when it helps); returns the
    exit code. The record comes first: with the disk full, printing to the log may fail too."""
    path = rundir.failure_path(rank)
    if path is not None:
        record = rundir.FailureRecord(failure.code, failure.kind, failure.message, rank,
                                      time.time())
        try:
            record.write(path)
        except OSError:
            pass  # the exit code still says it
    try:
        if failure.traceback or verbose():
            traceback.print_exc()
        print(f"error: {failure.message}", file=sys.stderr, flush=True)
    except OSError:
        pass
    return failure.code


def exit_now(code: int) -> None:
    """End the worker process with ``code`` without the interpreter's teardown (see
    trainer/__main__.py for why)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    os._exit(code)
