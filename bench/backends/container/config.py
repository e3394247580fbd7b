"""``backend=container``: the container backend's keys, registered as ``backend/container``.

Each worker of a trial is a container of the trainer image with ``--cpus`` and ``--memory``
limits, so ``backend.cpus=2 backend.memory=8g workers=3`` is the study's cluster of three
2-core, 8 GiB nodes (the limits cap, they do not reserve: the containers share this machine).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from bench.backends.base import BackendConfig
from trainer.config import ConfigError, positive

ENGINES = ("podman", "docker")
# The engines' own size syntax (docker/podman --memory, --shm-size): a number and an optional
# unit b, k, m or g, powers of 1024.
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
_USER = re.compile(r"^\d+(:\d+)?$")


def size_bytes(value: str) -> int:
    """Bytes of an engine size (``512m``, ``8g``, ``1.5g``); ValueError if it is not one."""
    match = _SIZE.match(str(value).strip())
    if not match:
        raise ValueError(value)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass
class ContainerConfig(BackendConfig):
    """Each worker a container of the trainer image on a network of the trial's own (see
    bench/backends/container/)."""

    _target_: str = "bench.backends.container.ContainerBackend"
    name: str = "container"
    poll_interval_s: float = 1.0  # one `inspect` of the trial's containers per poll
    engine: str = "podman"  # podman | docker (the same CLI; podman is what is tested here)
    # the trainer image (docker/trainer.Dockerfile, `make images`): $GNN_BENCH_IMAGE if set
    image: str = field(default_factory=lambda: os.environ.get("GNN_BENCH_IMAGE",
                                                              "gnn-bench/trainer:latest"))
    cpus: float = 1.0  # --cpus of every worker container; its threads are the whole cores
    memory: str = "2g"  # --memory (and --memory-swap: no swap, as a pod) of every worker
    shm_size: str = "1g"  # --shm-size (/dev/shm), as the pods' memory-backed emptyDir
    mount_path: str = "/mnt/bench"  # where the containers see datasets/ and runs/, as the pods
    user: str = "1000:1000"  # uid:gid the trainer runs as (the image's user, the pods' runAsUser)
    master_port: int = 23456  # rank 0's rendezvous port (the training operator's default)
    subnet: str | None = None  # the trial network's subnet (None: the engine picks a free one)
    # podman's containers.conf (CONTAINERS_CONF); None: the environment's, or the project's
    # docker/podman-containers.conf when podman's defaults cannot start a container here
    containers_conf: str | None = None
    stop_timeout_s: int = 5  # cancel: SIGTERM, then SIGKILL after this many seconds
    keep_containers: bool = False  # keep the finished containers and network after collection
    log_tail_lines: int = 200  # lines of each container's log kept in logs/

    def validate(self) -> None:
        super().validate()
        if self.engine not in ENGINES:
            raise ConfigError(f"backend.engine={self.engine} is invalid: use one of "
                              + ", ".join(ENGINES))
        if not self.image:
            raise ConfigError("backend.image is empty: set the trainer image, e.g. "
                              "backend.image=gnn-bench/trainer:latest (make images builds it)")
        if not self.cpus or self.cpus <= 0:
            raise ConfigError(f"backend.cpus={self.cpus} is invalid: it must be > 0 "
                              "(e.g. backend.cpus=2)")
        for key in ("memory", "shm_size"):
            try:
                ok = size_bytes(getattr(self, key)) >= 6 * 2**20  # the engines' floor: 6 MiB
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"backend.{key}={getattr(self, key)} is not a size of at "
                                  "least 6m (a number and b, k, m or g: e.g. 512m, 8g)")
        if not str(self.mount_path).startswith("/"):
            raise ConfigError(f"backend.mount_path={self.mount_path} must be an absolute path")
        if not _USER.match(str(self.user)) or str(self.user).split(":")[0] == "0":
            raise ConfigError(f"backend.user={self.user} is invalid: a non-root uid[:gid], "
                              "e.g. backend.user=1000:1000")
        if not 1 <= self.master_port <= 65535:
            raise ConfigError(f"backend.master_port={self.master_port} is not a port (1-65535)")
        if self.stop_timeout_s < 0:
            raise ConfigError(f"backend.stop_timeout_s={self.stop_timeout_s} must be >= 0 "
                              "(0: SIGKILL at once)")
        positive("backend.log_tail_lines", self.log_tail_lines, "e.g. 200")


ConfigStore.instance().store(group="backend", name="container", node=ContainerConfig)
