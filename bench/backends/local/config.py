"""``backend=local``: the local backend's keys, registered as ``backend/local``."""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from bench.backends.base import BackendConfig
from trainer.config import ConfigError, positive


@dataclass
class LocalConfig(BackendConfig):
    """A torchrun process group per trial on this machine (see bench/backends/local/)."""

    _target_: str = "bench.backends.local.LocalBackend"
    name: str = "local"
    cores: int | None = None  # cores the trial may use (None: all of this machine)
    monitor_interval_s: float = 0.5  # how often torchrun checks its workers (--monitor-interval)
    # Run a trial even when admission (bench/backends/local/admission.py) finds that its memory
    # or disk estimate exceeds what this machine has free.
    allow_overcommit: bool = False

    def validate(self) -> None:
        super().validate()
        positive("backend.cores", self.cores, "or leave it null", allow_none=True)
        if self.monitor_interval_s <= 0:
            raise ConfigError(f"backend.monitor_interval_s={self.monitor_interval_s} is invalid: "
                              "it must be > 0 (e.g. backend.monitor_interval_s=0.5)")


ConfigStore.instance().store(group="backend", name="local", node=LocalConfig)
