"""Before a sweep runs anything: every job composed, validated and checked, nothing written.

A bad value anywhere in a sweep's grid (workers=0, epochs=-1, workers=abc, backend=nope,
dataset=nope) stops the command with one line; so does a results_dir that cannot be written,
or what a backend checks of its own (locally a data_root that cannot be a folder; with
backend=k8s a kubeconfig that is missing or a cluster that does not answer).

Where it happens: before Hydra starts, the command line's options (``parse_command_line``)
and a single run's job (no ``-m``: ``check_single_run``); the jobs of a multirun in the sweeper
(hydra_plugins/bench_sweeper), which composes each one as the launcher would and keeps the
composition for it, so that a job is composed once, not twice (about 0.13 s of CPU a
composition).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict, read_write

from bench.backends import backend_for
from bench.config import compose, split, validate
from bench.store import unusable_folder
from trainer.config import ConfigError, compose_session, one_line

# How many trials the sweep runs, for "[i/N]"; it also reaches trials run in other processes
# (hydra/launcher=bench_parallel).
TOTAL_TRIALS_ENV = "GNN_BENCH_SWEEP_TRIALS"


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    """Hydra's reading of the command line (its options, and the overrides in ``.overrides``);
    options it does not know give one line, not argparse's usage.

    Hydra has no public API for its command line; this is the one use of its private
    ``hydra._internal.utils.get_args_parser``.
    """
    from hydra._internal.utils import get_args_parser

    args, unknown = get_args_parser().parse_known_args(argv)
    flags = [a for a in unknown if a.startswith("-")]
    if flags:
        raise ConfigError(f"unknown option {flags[0]}: the options are --multirun (-m), "
                          "--verbose (-v), --cfg job and Hydra's others (--help lists them); "
                          "settings are key=value")
    return args


def prints_only(args: argparse.Namespace) -> bool:
    """Whether the command only prints (--cfg, --help, --info, ...) and runs no trial."""
    return bool(args.cfg or args.help or args.hydra_help or args.info or args.shell_completion)


def check_single_run(overrides: list[str]) -> None:
    """The job of a single run, composed as ``bench.sweep`` composes it and checked (here, not
    in the task function, where Hydra would add its own line to the error)."""
    with compose_session():
        check_job(compose(overrides))


def check_jobs(loader: Any, master: DictConfig,
               jobs: Sequence[Sequence[str]]) -> list[DictConfig]:
    """Compose every job of a multirun as the launcher does (``loader.load_sweep_config``, Hydra
    node included) and check it; the compositions, in job order. Raises a ConfigError naming
    the first job that is wrong."""
    composed = []
    for job in jobs:
        label = f" (trial {' '.join(job)})" if len(jobs) > 1 else ""
        try:
            sweep_config = _compose(loader, master, job)
            check_job(task_config(sweep_config))
        except ConfigError as exc:
            raise ConfigError(f"{exc}{label}") from exc
        composed.append(sweep_config)
    return composed


def _compose(loader: Any, master: DictConfig, job: Sequence[str]) -> DictConfig:
    try:
        return loader.load_sweep_config(master, list(job))
    except Exception as exc:  # Hydra and OmegaConf raise several types: all user errors
        raise ConfigError(one_line(exc)) from exc


def task_config(sweep_config: DictConfig) -> DictConfig:
    """A job's config as its task function receives it: without the ``hydra`` node."""
    cfg = copy.deepcopy(sweep_config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def check_job(cfg: DictConfig) -> None:
    """One composed job: validated, and its results folder and backend checked. Raises
    ConfigError."""
    validate(cfg)
    trial = split(cfg)
    problem = unusable_folder(Path(trial.results_dir) / trial.sweep_name)
    if problem:
        raise ConfigError(f"results_dir={trial.results_dir} cannot hold results "
                          f"({problem}): set results_dir=<a writable folder>")
    backend_for(trial.backend).preflight(trial)
