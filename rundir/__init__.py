"""The run directory: what a trainer writes under ``run_dir``, and how, for anyone to read back.

A leaf module (standard library only) that both sides import and neither owns: the trainer
(``trainer/``) writes these files; the harness's backends (``bench/backends/``) read or copy
them, on this machine or through a cluster's shared volume::

    <run_dir>/
      tb/                    TensorBoard event files: epoch scalars and HParams (rank 0)
      tb/steps/              step scalars (train/loss_step)
      summary.json           the run's final figures, written last
      checkpoints/last.pt    model, optimiser, epoch, RNG and history (torch.save)
      checkpoints/last.json  CheckpointInfo of last.pt, written after it: readable without torch

Paths are relative (POSIX) strings, so that ``Path(run_dir) / EVENTS`` and
``f"{volume_dir}/{EVENTS}"`` name the same file. Every file here is written atomically (see
:func:`atomic_write_bytes`): a reader, or a crash at any moment, sees the previous complete
file or the new complete file, never a partial one.

Also here, because the worker and whoever restarts it must agree on them: the trainer's exit
codes, the rule that says which of them a restart can fix (:func:`retryable`), and the
:class:`FailureRecord` a worker leaves where :data:`FAILURE_FILE_ENV` says before it exits.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

EVENTS = "tb"
STEP_EVENTS = "tb/steps"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoints/last.pt"
CHECKPOINT_INFO = "checkpoints/last.json"


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``checkpoints/last.json`` says of the checkpoint beside it.

    ``epoch`` is the last epoch the checkpoint holds (0: no checkpoint yet), ``saved_at`` unix
    seconds, ``val_mrr`` that epoch's validation MRR. The harness polls it for live progress and
    to time its fault injection. Written after last.pt, so a writer killed between the two
    leaves it one epoch behind the checkpoint the trainer resumes from, never ahead of it.
    """

    epoch: int = 0
    saved_at: float | None = None
    val_mrr: float | None = None

    @classmethod
    def parse(cls, data: bytes | None) -> CheckpointInfo:
        """From the file's bytes; no checkpoint yet when there are none or they do not parse
        (a poll that races the atomic rename just sees no progress yet)."""
        try:
            raw = json.loads(data or b"{}")
            return cls(int(raw.get("epoch", 0)), _number(raw.get("saved_at")),
                       _number(raw.get("val_mrr")))
        except (ValueError, TypeError, AttributeError):
            return cls()

    @classmethod
    def read(cls, run_dir: str | os.PathLike[str]) -> CheckpointInfo:
        """The info of a run directory on this machine."""
        try:
            return cls.parse((Path(run_dir) / CHECKPOINT_INFO).read_bytes())
        except OSError:
            return cls()

    def write(self, run_dir: str | os.PathLike[str]) -> None:
        atomic_write_json(Path(run_dir) / CHECKPOINT_INFO, asdict(self))


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


# ------------------------------------------------------------------ atomic writes

# mkstemp creates files readable by the owner only; results files should be readable by others
# (e.g. a dashboard running as another user), as a plain open() would make them.
_FILE_MODE = 0o644


def _fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` durable by fsyncing the directory itself."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot sync a directory; the rename itself has still happened.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


_TMP_SUFFIX = ".tmp"  # of the hidden file an atomic write fills before renaming it


def remove_partial_writes(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete what atomic writes into ``folder`` left of files they never finished: the hidden
    temporary files of a process killed mid-write (SIGKILL runs no clean-up). Only for a folder
    no one else is writing to (a trial's, by the harness that holds its lock)."""
    removed = []
    for path in Path(folder).glob(f".*{_TMP_SUFFIX}"):  # _atomic_write's: .<name>.<random>.tmp
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace ``path`` atomically with the bytes that ``write`` puts into a file.

    The bytes go to a hidden temporary file in the target's directory, are flushed and fsynced,
    and the file is renamed onto the target with ``os.replace``. On any exception the temporary
    file is removed, the target is left untouched, and the exception is re-raised; an OSError
    with an errno that names no file (a write to a full disk) is given the target's path.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TMP_SUFFIX,
                                        dir=target.parent)
    except OSError as exc:
        if exc.errno is not None and exc.filename is None:
            exc.filename = str(target)
        raise
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            write(tmp_file)
            tmp_file.flush()
            os.fchmod(tmp_file.fileno(), _FILE_MODE)
            os.fsync(tmp_file.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            exc.filename = str(target)  # a full disk's ENOSPC names no file of its own
        raise
    _fsync_directory(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically create or replace ``path`` with ``data``; parent directories are created."""
    _atomic_write(path, lambda tmp_file: tmp_file.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Atomically create or replace ``path`` with ``text`` (no newline translation)."""
    atomic_write_bytes(path, text.encode(encoding))


def _replace_non_finite(obj: Any) -> Any:
    """Return a copy of ``obj`` with float NaN/inf (in dicts, lists, tuples) replaced by None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _replace_non_finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_replace_non_finite(item) for item in obj]
    return obj


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as strict JSON (indent 2, keys in insertion order).

    Float NaN and +/-inf, which strict JSON cannot represent, are written as ``null``.
    """
    text = json.dumps(_replace_non_finite(obj), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy the contents of file ``src`` to ``dst`` atomically (``dst`` is whole or untouched)."""
    with open(src, "rb") as src_file:
        _atomic_write(dst, lambda tmp_file: shutil.copyfileobj(src_file, tmp_file))


# ------------------------------------------------------------------ exit codes and failures

# The trainer's exit codes. Kubeflow's rule for `restartPolicy: ExitCode` (training-operator
# v1.9, pkg/apis/kubeflow.org/v1/common_types.go and pkg/util/train IsRetryableExitCode): 1-127
# are permanent (the pod is not restarted, the job fails), 128-255 retryable (128 + n is what a
# process killed by signal n reports, e.g. SIGKILL 137). Every backend applies the same rule.
EXIT_ERROR = 1  # an unexpected error (a bug): a restart runs into it again
EXIT_CONFIG = 2  # a bad configuration value
EXIT_DATA = 3  # a missing or damaged dataset or checkpoint
EXIT_ENVIRONMENT = 4  # the machine: no space left, a read-only or forbidden path, out of memory
EXIT_RETRY = 200  # the job's communication failed (a peer died, the rendezvous did not answer)

KINDS = {EXIT_ERROR: "error", EXIT_CONFIG: "config", EXIT_DATA: "data",
         EXIT_ENVIRONMENT: "environment", EXIT_RETRY: "distributed"}


def retryable(code: int) -> bool:
    """Whether restarting can fix a worker that exited with ``code`` (0: it did not fail).

    Kubeflow's ExitCode rule; a negative code is how Python's ``Popen`` reports death by a
    signal (-9: SIGKILL), which a container runtime reports as 128 + 9.
    """
    return code >= 128 or code < 0


# Where a worker writes its FailureRecord before it exits: a path in which "{rank}" stands for
# the worker's rank. The local backend gives each attempt a folder of its own; on Kubernetes it
# is the container's terminationMessagePath (/dev/termination-log), which the kubelet copies
# into the pod's status (state.terminated.message), readable even when the volume is full.
FAILURE_FILE_ENV = "GNN_BENCH_FAILURE_FILE"
# Bytes reserved for a record (the kubelet keeps at most 4096 of a termination message).
FAILURE_RECORD_BYTES = 4096


@dataclass(frozen=True)
class FailureRecord:
    """Why a worker gave up: its exit code, the kind of problem, its one ``error:`` line."""

    code: int
    kind: str  # KINDS[code]: config | data | environment | error | distributed
    error: str  # the line the worker printed after "error: ", naming the problem and the fix
    rank: int = 0
    at: float = 0.0  # unix seconds

    @property
    def retryable(self) -> bool:
        return retryable(self.code)

    def to_bytes(self) -> bytes:
        """One line of JSON, never longer than FAILURE_RECORD_BYTES (the error is shortened)."""
        record = asdict(self)
        data = json.dumps(record).encode()
        if len(data) > FAILURE_RECORD_BYTES:
            keep = len(self.error.encode()) - (len(data) - FAILURE_RECORD_BYTES) - 16
            record["error"] = self.error.encode()[:max(0, keep)].decode(errors="ignore") + " ..."
            data = json.dumps(record).encode()
        return data

    @classmethod
    def parse(cls, data: bytes | str | None) -> FailureRecord | None:
        """From a record's bytes; None when there is none (an empty or reserved file, or text
        that is not a record, such as a termination message the kubelet took from the log)."""
        try:
            raw = json.loads(data or b"null")
            return cls(int(raw["code"]), str(raw["kind"]), str(raw["error"]),
                       int(raw.get("rank", 0)), float(raw.get("at", 0.0)))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> FailureRecord | None:
        try:
            return cls.parse(Path(path).read_bytes())
        except OSError:
            return None

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the record over ``path`` in place, within the bytes :func:`reserve_record`
        set aside there, so that it needs no new space: a worker that failed because its disk
        is full can still say so. Not atomic: it is read once the worker has exited."""
        data = self.to_bytes()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, _FILE_MODE)  # no O_TRUNC: keep the blocks
        try:
            size = os.fstat(fd).st_size
            os.pwrite(fd, data.ljust(size, b" "), 0)  # JSON ignores the padding
            if size > len(data):
                os.ftruncate(fd, len(data))
        finally:
            os.close(fd)


def failure_path(rank: int, environ: dict[str, str] | None = None) -> Path | None:
    """Where the worker of ``rank`` writes its record (None: nobody asked for one)."""
    template = (os.environ if environ is None else environ).get(FAILURE_FILE_ENV)
    return Path(template.replace("{rank}", str(rank))) if template else None


def reserve_record(path: str | os.PathLike[str]) -> None:
    """Create ``path`` with FAILURE_RECORD_BYTES of blank space allocated on its disk (where
    the filesystem can allocate ahead; elsewhere just the file)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    try:
        os.write(fd, b" " * FAILURE_RECORD_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
