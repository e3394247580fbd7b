"""Helpers for the results store: crash-safe file writes, config keys and tolerant JSON reads.

Every write goes to a hidden temporary file in the target's directory, is flushed and fsynced,
and is then renamed onto the target with ``os.replace``. A reader (or a crash at any moment)
therefore sees either the previous complete file, or the new complete file, never a partial one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

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

    On any exception the temporary file is removed, the target is left untouched, and the
    exception is re-raised.
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


def config_key(cfg: dict[str, Any]) -> str:
    """Return a short stable key for a plain (JSON-serialisable) config dict.

    The key is the first 12 hex digits of the SHA-256 of the canonical JSON form (keys sorted
    at every level, no whitespace), so it does not depend on the order keys were inserted.
    """
    canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read a JSON object from ``path``.

    Returns None when the file does not exist, is not valid UTF-8 JSON (e.g. truncated by a
    crash), or does not hold a JSON object at the top level. Other I/O errors (such as a
    permission error) are raised.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def unusable_folder(path: Path) -> str | None:
    """Why ``path`` cannot be used (or created) as a writable folder; None when it can."""
    path = path.absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None
