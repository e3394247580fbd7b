"""Hydra sweeper ``bench`` (conf/config.yaml selects it): the basic sweeper, whose jobs are all
composed and checked before the first one runs (bench/preflight.py), each composed once at most.

The basic sweeper composes each batch's jobs to see that they compose
(``validate_batch_is_legal``), then its launcher composes each job again to run it, about
0.13 s of CPU a composition here. This one composes every job of the sweep, with the loader and
master config the launcher uses, before the basic sweeper writes anything (its
``multirun.yaml``); checks each one as ``bench.preflight.check_job`` does (ranges, folders, the
cluster); and hands the launcher those compositions through a loader that returns each one
once. A launcher that composes in other processes (``bench_parallel``) composes there as before.

A job that differs from one composed before only in the values of plain keys (``workers=2``
where that one has ``workers=1``) is not composed again: its config is that one's with those
values set (:class:`SetValues`), which is what Hydra's composition would give, since Hydra sets
a command line's values on the config it composed from the defaults list, after composing it
(tests/test_sweeper.py compares the two for every job of several sweeps). The master config
(the sweep's own composition, which leaves the swept keys out) is such a composition too, of
the jobs that sweep plain keys only. So a grid of workers and epochs composes no job at all
instead of one a job, about 0.06-0.1 s less each.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering them
# in sys.modules, and dataclasses then cannot resolve string annotations.
import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

# Hydra's own rule for hydra.job.override_dirname; no public function computes it.
from hydra._internal.config_loader_impl import get_overrides_dirname

# Hydra has no public basic sweeper to extend; its launcher plugins subclass these the same way.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


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


class SetValues:
    """A loader for the preflight that composes a job (with the loader it wraps) only when no
    job composed before differs from it in plain values alone, and otherwise derives it.

    Why a derived config is the composition: Hydra composes the defaults list (which the values
    of plain keys cannot change: its interpolations name config groups, not values), puts the
    root in struct mode and then applies the command line's value overrides one after another
    with ``OmegaConf.update(cfg, key, value, merge=True)``
    (``ConfigLoaderImpl._load_configuration_impl`` and ``_apply_overrides_to_config``, Hydra
    1.3), and records the overrides in ``hydra.overrides.task`` and
    ``hydra.job.override_dirname``. So a job whose overrides are another's, key for key, but for
    the values of some plain keys is that one's config with those values updated the same way
    and those two fields recomputed. "Plain" is kept narrow: a changed value (``key=value``, not
    ``+``/``~``/``@package``) of a key that is not a config group nor under ``hydra``, a scalar
    (a list or dict would merge into what it replaces) on a key no other override of the job
    lies above or below (their order would matter). Anything else, and any value OmegaConf
    refuses (e.g. ``workers=abc``: Hydra's composition then says so in its own words), is
    composed.

    The first job needs no composition either when it differs from the master config only in
    plain swept keys: Hydra composes the master from the command line with its sweeps left out
    (``Overrides`` in ``hydra._internal.defaults_list`` skips them), in the same way as a job
    but for two things. It runs in multirun mode, which skips a config group left ``???``
    (where a job's composition fails), so a master with a ``???`` among its
    ``hydra.runtime.choices`` is no base; and ``hydra.overrides.task`` holds the sweeps, which
    a derived job's recomputation replaces."""

    def __init__(self, loader: Any, parser: OverridesParser):
        self.loader, self.parser = loader, parser
        self.composed: list[tuple[list[Override], DictConfig]] = []
        self.groups: set[str] | None = None  # the top-level config groups, listed once
        self.master: list[tuple[list[Override], DictConfig]] | None = None  # its base, once

    def load_sweep_config(self, master_config: DictConfig,
                          sweep_overrides: list[str]) -> DictConfig:
        job = self.parser.parse_overrides(list(sweep_overrides))
        for base, config in [*self._master(master_config), *self.composed]:
            changed = self._changed_values(base, job)
            derived = None if changed is None else self._set(config, job, changed)
            if derived is not None:
                return derived
        config = self.loader.load_sweep_config(master_config, list(sweep_overrides))
        self.composed.append((job, config))
        return config

    def _master(self, master_config: DictConfig) -> list[tuple[list[Override], DictConfig]]:
        """The master config as a base (its overrides, the sweeps among them, and itself),
        where it is one; read at the first job (a sweep's jobs share one master)."""
        if self.master is None:
            choices = master_config.hydra.runtime.choices
            missing = any(OmegaConf.is_missing(choices, group) for group in choices)
            self.master = [] if missing else [
                (self.parser.parse_overrides(list(master_config.hydra.overrides.task)),
                 master_config)]
        return self.master

    def _changed_values(self, base: list[Override], job: list[Override]) -> list[Override] | None:
        """The overrides of ``job`` whose values differ from ``base``'s, when all it differs in
        is plain values (the master's sweeps of plain keys among them); None otherwise."""
        if len(base) != len(job):
            return None
        changed = []
        for old, new in zip(base, job, strict=True):
            if (old.key_or_group, old.type, old.package) != (new.key_or_group, new.type,
                                                             new.package):
                return None
            if old.input_line != new.input_line:
                if not ((old.is_sweep_override() or self._plain(old)) and self._plain(new)):
                    return None
                changed.append(new)
        keys = [o.key_or_group for o in job]
        for override in changed:
            key = override.key_or_group
            if any(other.startswith(f"{key}.") or key.startswith(f"{other}.") for other in keys):
                return None
        return changed

    def _plain(self, override: Override) -> bool:
        key = override.key_or_group
        return (override.type is OverrideType.CHANGE and override.package is None
                and override.value_type is ValueType.ELEMENT and not override.is_hydra_override()
                and isinstance(override.value(), str | int | float | bool | type(None))
                and not self._is_group(key))

    def _is_group(self, key: str) -> bool:
        # One listing for every key: each of Hydra's listings builds a config repository
        # (about 12 ms), and a key of a nested group is spelt with "/".
        if self.groups is None:
            self.groups = set(self.loader.list_groups(""))
        return "/" in key or key in self.groups

    @staticmethod
    def _set(config: DictConfig, job: list[Override],
             changed: list[Override]) -> DictConfig | None:
        derived = copy.deepcopy(config)
        try:
            for override in changed:
                OmegaConf.update(derived, override.key_or_group, override.value(), merge=True)
        except OmegaConfBaseException:
            return None
        task = [o for o in job if not o.is_hydra_override()]
        derived.hydra.overrides.task = [o.input_line for o in task]
        names = derived.hydra.job.config.override_dirname
        derived.hydra.job.override_dirname = get_overrides_dirname(
            overrides=task, kv_sep=names.kv_sep, item_sep=names.item_sep,
            exclude_keys=names.exclude_keys)
        return derived

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


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
        derive = SetValues(self.composed.loader, parser)
        self.composed.keep(jobs, check_jobs(derive, self.config, jobs))
        os.environ[TOTAL_TRIALS_ENV] = str(len(jobs))
        return super().sweep(arguments)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Done already for every batch, with more checks, by ``sweep``."""
