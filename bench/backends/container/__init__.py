"""Container backend: each worker of a trial is a container of the trainer image (podman, or
docker), on a network the trial creates and removes.

* :mod:`.config` its keys (``backend=container``);
* :mod:`.commands` pure builders (trial spec -> the network's and each container's arguments,
  names, labels), flag by flag the PyTorchJob replicas' pod spec;
* :mod:`.engine` the engine's command line and what its ``inspect`` says;
* :mod:`.follow` the trial's state from its containers, and the exit-code rule (pure);
* :mod:`.cgroups` CPU and memory of each container from its cgroup;
* :mod:`.handle` the :class:`~bench.backends.base.TrialHandle` and the backend.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ContainerBackend", "ContainerConfig", "ContainerHandle"]


def __getattr__(name: str) -> Any:
    """The backend's classes, imported on first use (registering ``backend/container`` imports
    only :mod:`.config`)."""
    if name == "ContainerConfig":
        from bench.backends.container.config import ContainerConfig

        return ContainerConfig
    if name in ("ContainerBackend", "ContainerHandle"):
        from bench.backends.container import handle

        return getattr(handle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
