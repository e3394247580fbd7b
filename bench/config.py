"""The harness's configuration, and the one split of a composed job into its two parts.

``python -m bench.sweep`` composes ``conf/config.yaml``: :class:`SweepConfig`, which extends
the trainer's :class:`~trainer.config.TrainerConfig` (so a trial's trainer keys are spelt as
``python -m trainer`` spells them) with the sweep's own keys, the fault plan and the
``backend`` group, where each backend registers its own typed config
(``bench/backends/<name>/config.py``).

Which key belongs to whom is declared here once:

* the trainer's slice is every field of ``TrainerConfig``;
* the harness's part is every field :class:`SweepConfig` adds;
* :data:`~bench.store.WHERE_AND_HOW` are the harness keys that say where results go and how a
  trial is run, not what it computes: a trial's identity (:func:`identity`) and the report's
  "setting" of a trial leave them out, and of the backend only its name counts.

:func:`split` makes a :class:`Trial` of a composed job: its identity, computed once, the typed
backend config, the fault plan and the trainer's slice.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from bench.backends import BACKENDS, register_backend_configs
from bench.backends.base import BackendConfig
from bench.store import WHERE_AND_HOW, config_key
from trainer.config import (
    ConfigError,
    TrainerConfig,
    compose_tree,
    positive,
    resolve_plain,
    trainer_keys,
    validate_trainer,
)
from trainer.config import register_configs as register_trainer_configs


@dataclass
class FaultConfig:
    """Fault injection by the harness (bench/faults.py); the defaults mean "no fault"."""

    kill_at_epoch: int | None = None  # SIGKILL (pod delete on k8s) once this epoch is checkpointed
    rank: int = 0  # the worker killed
    count: int = 1  # faults in all: the i-th (from 0) once epoch kill_at_epoch + i is checkpointed

    def validate(self, workers: int, epochs: int) -> None:
        """A fault must hit a worker that exists, at an epoch boundary before the last epoch."""
        if self.kill_at_epoch is None:
            return
        if not 1 <= self.kill_at_epoch < epochs:
            raise ConfigError(f"fault.kill_at_epoch={self.kill_at_epoch} is invalid: it must be "
                              f">= 1 and < epochs={epochs}")
        if not 0 <= self.rank < workers:
            raise ConfigError(f"fault.rank={self.rank} is invalid: it must be >= 0 and < "
                              f"workers={workers}")
        positive("fault.count", self.count, "e.g. fault.count=1")
        last = self.kill_at_epoch + self.count - 1
        if last >= epochs:
            raise ConfigError(f"fault.count={self.count} is too many: the last fault would follow "
                              f"epoch {last}, which must be < epochs={epochs} (one fault per epoch)")


@dataclass
class SweepConfig(TrainerConfig):
    """A trial as the harness sees it: the trainer's keys plus how and where it runs."""

    workers: int = 2  # total processes (1 Master + workers-1 Worker replicas on Kubernetes)
    experiment: str = "default"
    sweep_name: str = MISSING  # the folder under results_dir (conf/config.yaml: <experiment>-<date>)
    results_dir: str = "results"
    redo: bool = False  # re-run trials whose result already succeeded
    progress: bool | None = None  # live progress line (None: only when stdout is a terminal)
    backend: BackendConfig = MISSING  # backend=local | k8s: see bench/backends/<name>/config.py
    fault: FaultConfig = field(default_factory=FaultConfig)


@functools.cache  # a store converts the dataclass to a config each time: once is enough
def register_configs() -> None:
    """Register both schemas and every backend's config, so that ``conf/`` can name them."""
    register_trainer_configs()
    ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)
    register_backend_configs()


def compose(overrides: list[str] | None = None, return_hydra_config: bool = False) -> DictConfig:
    """Compose the harness's tree (``conf/config.yaml``) as ``bench.sweep`` does (tests too)."""
    register_configs()
    return compose_tree("config", overrides, return_hydra_config,
                        "`python -m bench.sweep --cfg job` prints every key")


def validate(cfg: DictConfig) -> None:
    """Range and consistency checks that typing alone cannot express. Raises ConfigError."""
    positive("workers", cfg.workers, "e.g. workers=2")
    validate_trainer(cfg)
    name = str(cfg.sweep_name)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"sweep_name={name} is invalid: it must be one folder name, without '/' "
                          "(e.g. sweep_name=table1)")
    backend = backend_config(cfg)
    backend.validate()
    fault = fault_config(cfg)
    fault.validate(cfg.workers, cfg.epochs)
    if fault.kill_at_epoch is not None:
        backend.check_fault_plan(cfg.workers, fault.count)


def backend_config(cfg: DictConfig) -> BackendConfig:
    """The typed config of the job's backend (its dataclass, interpolations resolved)."""
    if cfg.backend.name not in BACKENDS:  # a backend/<name>.yaml without a registered schema
        raise ConfigError(f"backend={cfg.backend.name} is unknown: use one of "
                          + ", ".join(BACKENDS))
    return OmegaConf.to_object(cfg.backend)  # type: ignore[return-value]


def fault_config(cfg: DictConfig) -> FaultConfig:
    return OmegaConf.to_object(cfg.fault)  # type: ignore[return-value]


def identity(plain: dict[str, Any]) -> dict[str, Any]:
    """What defines a trial's numbers, from its resolved config: all but :data:`WHERE_AND_HOW`,
    of the backend its name, and the fault plan only when there is one."""
    defining = {k: v for k, v in plain.items() if k not in WHERE_AND_HOW}
    defining["backend"] = (plain.get("backend") or {}).get("name")
    if (plain.get("fault") or {}).get("kill_at_epoch") is None:
        defining.pop("fault", None)  # no fault: the key of results from before fault injection
    return defining


@dataclass
class Trial:
    """One composed job, split into the harness's part and the trainer's slice."""

    trial_id: str  # w<workers>-e<epochs>-s<seed>-<dataset>-<key[:8]>
    config_key: str  # hash of identity(): what defines the trial's numbers
    workers: int
    epochs: int
    sweep_name: str
    results_dir: str
    redo: bool
    progress: bool | None
    backend: BackendConfig
    fault: FaultConfig
    resolved: dict[str, Any]  # the whole resolved config (config.yaml, result.json)
    trainer: dict[str, Any]  # the trainer's slice of it, resolved

    @property
    def trial_dir(self) -> Path:
        return Path(self.results_dir) / self.sweep_name / self.trial_id

    @property
    def data_root(self) -> str:
        return str(self.trainer["data_root"])

    def trainer_slice(self, run_dir: str, data_root: str, threads: int) -> dict[str, Any]:
        """The trainer's slice placed by a backend: where this run writes and reads, and with
        how many threads each worker runs."""
        placed = copy.deepcopy(self.trainer)
        placed.update(run_dir=run_dir, data_root=data_root)
        placed["train"]["threads"] = threads
        return placed


def split(cfg: DictConfig) -> Trial:
    """The :class:`Trial` of a composed (and validated) job."""
    plain = resolve_plain(cfg)
    key = config_key(identity(plain))
    return Trial(
        trial_id=f"w{cfg.workers}-e{cfg.epochs}-s{cfg.seed}-{cfg.dataset.name}-{key[:8]}",
        config_key=key,
        workers=int(cfg.workers),
        epochs=int(cfg.epochs),
        sweep_name=str(cfg.sweep_name),
        results_dir=str(cfg.results_dir),
        redo=bool(cfg.redo),
        progress=cfg.progress,
        backend=backend_config(cfg),
        fault=fault_config(cfg),
        resolved=plain,
        trainer={name: plain[name] for name in trainer_keys()},
    )
