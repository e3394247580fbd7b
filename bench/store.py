"""Helpers for the results store: config keys, tolerant JSON reads, usable folders.

The crash-safe writes every store file goes through live in :mod:`rundir` (the trainer uses
them too).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

# Harness keys that say where results go and how a trial is run, not what it computes: what a
# trial's config key (bench.config.identity) and the report's "setting" of a trial leave out.
# (data_root is not one of them: another folder may hold other data.) Here, in a module of the
# standard library only, so that the report process reads it without importing Hydra.
WHERE_AND_HOW = ("sweep_name", "results_dir", "run_dir", "redo", "progress", "experiment")


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
