"""Before a sweep runs anything: every job composed, validated and checked, nothing written.

A bad value anywhere in a sweep's grid (workers=0, epochs=-1, workers=abc, backend=nope,
dataset=nope) stops the command with one line; so does a results_dir that cannot be written,
or what a backend checks of its own (locally a data_root that cannot be a folder; with
backend=k8s a kubeconfig that is missing or a cluster that does not answer).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from bench.backends import backend_for
from bench.config import compose, split, validate
from bench.store import unusable_folder
from trainer.config import ConfigError, compose_session, one_line, overrides_for


def expand_jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job the command would run, in the order Hydra's basic sweeper
    runs them: the product of every sweep (``key=a,b``), the experiment's
    ``hydra.sweeper.params`` first, a key given again later replacing it in place."""
    if not multirun:
        return [overrides]
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
        base = [o.input_line for o in parsed if not o.is_sweep_override()]
        # Sweep parameters come from an experiment preset (or a hydra.sweeper override); the
        # tree has none of its own, so without either there is nothing to compose for them.
        presets = any(o.get_key_element().split("/")[0].split(".")[0] in ("experiment", "hydra")
                      for o in parsed)
        params = (compose(base, return_hydra_config=True).hydra.sweeper.params or {}
                  if presets else {})
        choices: dict[str, list[str]] = {}
        for override in parser.parse_overrides([f"{k}={v}" for k, v in params.items()]
                                               + overrides):
            key = override.get_key_element()
            if override.is_sweep_override():
                choices[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
            else:
                choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    except ConfigError:
        raise
    except Exception as exc:  # override syntax errors, unsupported sweeps (intervals)
        raise ConfigError(one_line(exc)) from exc
    jobs: list[list[str]] = [[]]
    for options in choices.values():
        jobs = [job + [option] for job in jobs for option in options]
    return jobs


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


def preflight(argv: list[str]) -> int:
    """Compose and validate every job, check its results folder and what its backend needs;
    returns how many trials will run (0 when the command only prints: --cfg, --help, --info)."""
    args = parse_command_line(argv)
    if args.cfg or args.help or args.hydra_help or args.info or args.shell_completion:
        return 0
    with compose_session():
        jobs = expand_jobs(args.overrides, args.multirun)
        for job in jobs:
            check_job(job, len(jobs))
    return len(jobs)


def check_job(job: list[str], of: int) -> None:
    """One job of ``of``: composed, validated, its results folder and backend checked, and
    the trainer's arguments made once (which primes the composition they need)."""
    try:
        cfg = compose(job)
        validate(cfg)
        trial = split(cfg)
        problem = unusable_folder(Path(trial.results_dir) / trial.sweep_name)
        if problem:
            raise ConfigError(f"results_dir={trial.results_dir} cannot hold results "
                              f"({problem}): set results_dir=<a writable folder>")
        backend_for(trial.backend).preflight(trial)
        overrides_for(trial.trainer)
    except ConfigError as exc:
        label = f" (trial {' '.join(job)})" if of > 1 else ""
        raise ConfigError(f"{exc}{label}") from exc
