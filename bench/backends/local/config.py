"""``backend=local``: the local backend's keys, registered as ``backend/local``."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from bench.backends.base import BackendConfig
from trainer.config import positive


@dataclass
class LocalConfig(BackendConfig):
    """A torchrun process group per trial on this machine (see bench/backends/local/)."""

    _target_: str = "bench.backends.local.LocalBackend"
    name: str = "local"
    cores: int | None = None  # cores the trial may use (None: all of this machine)

    def validate(self) -> None:
        super().validate()
        positive("backend.cores", self.cores, "or leave it null", allow_none=True)


ConfigStore.instance().store(group="backend", name="local", node=LocalConfig)
