"""Hydra sweeper ``bench`` (conf/config.yaml selects it): the basic sweeper, whose jobs are all
composed and checked before the first one runs (bench/preflight.py), each composed once.

The basic sweeper composes each batch's jobs to see that they compose
(``validate_batch_is_legal``), then its launcher composes each job again to run it, about
0.13 s of CPU a composition here. This one composes every job of the sweep, with the loader and
master config the launcher uses, before the basic sweeper writes anything (its
``multirun.yaml``); checks each one as ``bench.preflight.check_job`` does (ranges, folders, the
cluster); and hands the launcher those compositions through a loader that returns each one
once. A launcher that composes in other processes (``bench_parallel``) composes there as before.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering them
# in sys.modules, and dataclasses then cannot resolve string annotations.
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

# Hydra has no public basic sweeper to extend; its launcher plugins subclass these the same way.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class BenchSweeperConf:
    _target_: str = "hydra_plugins.bench_sweeper.bench_sweeper.BenchSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045 (Hydra's own conf spells it so)
    params: Optional[dict[str, str]] = None  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="bench", node=BenchSweeperConf, provider="gnn-bench"
)


class ComposedJobs:
    """A config loader that returns the compositions it was given, each once, and asks the
    loader it wraps for everything else."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.kept: dict[tuple[str, ...], DictConfig] = {}

    def keep(self, jobs: Sequence[Sequence[str]], composed: list[DictConfig]) -> None:
        self.kept.update(zip((tuple(job) for job in jobs), composed, strict=True))

    def load_sweep_config(self, master_config: DictConfig,
                          sweep_overrides: list[str]) -> DictConfig:
        kept = self.kept.pop(tuple(sweep_overrides), None)
        if kept is not None:
            return kept
        return self.loader.load_sweep_config(master_config, sweep_overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __getstate__(self) -> dict[str, Any]:  # sent to another process: compositions stay
        return {"loader": self.loader, "kept": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:  # not through __getattr__
        self.__dict__.update(state)


class BenchSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.composed = ComposedJobs(hydra_context.config_loader)
        super().setup(hydra_context=dataclasses.replace(hydra_context,
                                                        config_loader=self.composed),
                      task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        # Here, not at the top: Hydra imports every plugin wherever it composes (the trainers
        # too), and they need none of the harness.
        from bench.preflight import TOTAL_TRIALS_ENV, check_jobs

        assert self.config is not None
        parser = OverridesParser.create(config_loader=self.composed)
        given = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        batches = self.split_arguments(parser.parse_overrides(given), self.max_batch_size)
        jobs = [job for batch in batches for job in batch]
        self.composed.keep(jobs, check_jobs(self.composed.loader, self.config, jobs))
        os.environ[TOTAL_TRIALS_ENV] = str(len(jobs))
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Done already for every batch, with more checks, by ``sweep``."""
