"""The backends: where a trial's workers run.

Each backend is a package here with a ``config`` module that registers its typed config under
``backend/<name>`` (see :mod:`bench.backends.base`); adding one is a new package and its name
in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.backends.base import Backend, BackendConfig

BACKENDS = ("local", "k8s", "trainjob", "container")


def register_backend_configs() -> None:
    """Import every backend's config module (light: dataclasses only), which registers it."""
    for name in BACKENDS:
        importlib.import_module(f"bench.backends.{name}.config")


def backend_for(config: BackendConfig) -> Backend:
    """The backend a config names (its ``_target_``), built from that config; heavy imports
    (the Kubernetes client, psutil) happen here, when a trial is about to run."""
    module, _, cls = config._target_.rpartition(".")
    return getattr(importlib.import_module(module), cls)(config)
