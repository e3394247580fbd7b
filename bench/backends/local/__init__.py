"""Local backend: a trial is a torchrun process group on this machine.

* :mod:`.config` its keys (``backend=local``);
* :mod:`.handle` the backend (plan and submit) and the :class:`~bench.backends.base.TrialHandle`
  of a running process group;
* :mod:`.processes` CPU and memory of each worker's process tree (psutil), the local
  counterpart of metrics.k8s.io.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalBackend", "LocalConfig", "LocalHandle", "threads_per_worker"]


def __getattr__(name: str) -> Any:
    """The backend's classes, imported on first use (registering ``backend/local`` imports only
    :mod:`.config`)."""
    if name == "LocalConfig":
        from bench.backends.local.config import LocalConfig

        return LocalConfig
    if name in ("LocalBackend", "LocalHandle", "threads_per_worker"):
        from bench.backends.local import handle

        return getattr(handle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
