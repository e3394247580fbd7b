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
    to time its fault injection.
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


def _atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace ``path`` atomically with the bytes that ``write`` puts into a file.

    The bytes go to a hidden temporary file in the target's directory, are flushed and fsynced,
    and the file is renamed onto the target with ``os.replace``. On any exception the temporary
    file is removed, the target is left untouched, and the exception is re-raised.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            write(tmp_file)
            tmp_file.flush()
            os.fchmod(tmp_file.fileno(), _FILE_MODE)
            os.fsync(tmp_file.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
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
