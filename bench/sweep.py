"""The main job: a Hydra sweep where one job is one trial.

    python -m bench.sweep workers=2,4,6 epochs=10,30 -m     # the study's Table 1 grid
    python -m bench.sweep experiment=table1 -m              # the same grid, from a preset
    python -m bench.sweep workers=2 epochs=3                # one trial

Before Hydra runs anything, every job of the sweep is composed and validated, so a bad value
anywhere in the grid (workers=0, epochs=-1, workers=abc, backend=nope, dataset=nope) stops the
command with one line and nothing written; so does a results_dir or data_root that cannot be
written, or (backend=k8s) a kubeconfig that is missing or a cluster that does not answer.
``--verbose`` (``-v``) adds the traceback to such errors, here and in the trainers. At the end of a multirun the sweep's Table 1 is
written to results/<sweep>/table.md and table.csv and printed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from bench.results import write_table
from bench.store import unusable_folder
from bench.trial import run_trial
from trainer.config import (
    ConfigError,
    compose,
    fail,
    one_line,
    register_configs,
    take_verbose_flag,
    validate,
)

_TOTAL_TRIALS = 1
PREFLIGHT_JOB = "gnn-bench-preflight"  # looked up (never created) to check that a cluster answers
# The count also reaches trials run in other processes (hydra/launcher=bench_parallel).
TOTAL_TRIALS_ENV = "GNN_BENCH_SWEEP_TRIALS"


def expand_jobs(argv: list[str]) -> list[list[str]]:
    """The override list of every job the command would run, as Hydra's basic sweeper expands it."""
    overrides = [a for a in argv if not a.startswith("-")]
    if not any(a in ("-m", "--multirun") for a in argv):
        return [overrides]
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
        base = [o.input_line for o in parsed if not o.is_sweep_override()]
        params = compose(base, return_hydra_config=True).hydra.sweeper.params or {}
        grid = [f"{k}={v}" for k, v in params.items()] + overrides
        batches = BasicSweeper.split_arguments(parser.parse_overrides(grid), None)
    except ConfigError:
        raise
    except Exception as exc:  # override syntax errors
        raise ConfigError(one_line(exc)) from exc
    return [job for batch in batches for job in batch]


def preflight(argv: list[str]) -> int:
    """Compose and validate every job, check its folders and, once per cluster, that the cluster
    answers; returns how many trials will run. Nothing is written."""
    check_options(argv)
    jobs = expand_jobs(argv)
    clusters_checked: set[tuple] = set()
    for job in jobs:
        try:
            cfg = compose(job)
            validate(cfg)
            check_folders(cfg)
            if cfg.backend.name == "k8s" and not cfg.backend.dry_run:
                cluster = (cfg.backend.kubeconfig, cfg.backend.context, cfg.backend.namespace)
                if cluster not in clusters_checked:
                    check_cluster(cfg)
                    clusters_checked.add(cluster)
        except ConfigError as exc:
            label = f" (trial {' '.join(job)})" if len(jobs) > 1 else ""
            raise ConfigError(f"{exc}{label}") from exc
    return len(jobs)


def check_options(argv: list[str]) -> None:
    """Options (``-x``, ``--xyz``) Hydra does not know give one line, not argparse's usage."""
    from hydra._internal.utils import get_args_parser

    _, unknown = get_args_parser().parse_known_args(argv)
    flags = [a for a in unknown if a.startswith("-")]
    if flags:
        raise ConfigError(f"unknown option {flags[0]}: the options are --multirun (-m), "
                          "--verbose (-v), --cfg job and Hydra's others (--help lists them); "
                          "settings are key=value")


def check_folders(cfg: DictConfig) -> None:
    """results/<sweep> must be writable; locally, data_root must be (or become) a folder."""
    problem = unusable_folder(Path(cfg.results_dir) / cfg.sweep_name)
    if problem:
        raise ConfigError(f"results_dir={cfg.results_dir} cannot hold results ({problem}): "
                          "set results_dir=<a writable folder>")
    data_root = Path(cfg.data_root)
    if cfg.backend.name == "local" and not data_root.is_dir():
        problem = unusable_folder(data_root)
        if problem:
            raise ConfigError(f"data_root={cfg.data_root} cannot hold datasets ({problem}): set "
                              "data_root=<a writable folder> or GNN_BENCH_DATA")


def check_cluster(cfg: DictConfig) -> None:
    """The kubeconfig loads, the API server answers and the training operator is installed
    (one GET of a PyTorchJob, a verb the harness's Role has)."""
    from bench.backends.k8s.client import K8sError, KubeClient
    from bench.backends.k8s.manifests import K8sOptions
    from trainer.config import resolve_plain

    try:
        KubeClient(K8sOptions.from_mapping(resolve_plain(cfg.backend))).get_job(PREFLIGHT_JOB)
    except K8sError as exc:
        raise ConfigError(str(exc)) from exc


class TableCallback(Callback):
    """Writes and prints Table 1 when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The full report (tables, plots, scaling fits, report.md); Table 1 printed."""
        from bench.report import write_report  # matplotlib and scipy only when a sweep ends

        sweep_dir = f"{config.results_dir}/{config.sweep_name}"
        try:
            table = write_report(sweep_dir).table_md
        except FileNotFoundError as exc:  # NoResultsError: no trial ran
            print(f"no table: {exc}", file=sys.stderr)
            return
        except Exception as exc:  # a broken plot must not hide the sweep's numbers
            print(f"report incomplete ({type(exc).__name__}: {exc}); writing the table only",
                  file=sys.stderr)
            try:
                table = write_table(sweep_dir)
            except Exception as again:  # the results stay on disk for python -m bench.report
                print(f"no table: {type(again).__name__}: {again}", file=sys.stderr)
                return
        print(f"\nTable 1 ({sweep_dir}/table.md):\n\n{table}", flush=True)
        print(f"Report: {sweep_dir}/report.md (python -m bench.report {sweep_dir} rebuilds it)",
              flush=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _trial(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    index = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else 0
    run_trial(cfg, index, int(os.environ.get(TOTAL_TRIALS_ENV, _TOTAL_TRIALS)))


def main() -> None:
    global _TOTAL_TRIALS
    register_configs()
    sys.argv[1:] = take_verbose_flag(sys.argv[1:])  # Hydra parses sys.argv itself
    try:
        _TOTAL_TRIALS = preflight(sys.argv[1:])
    except ConfigError as exc:
        fail(str(exc))
    os.environ[TOTAL_TRIALS_ENV] = str(_TOTAL_TRIALS)
    try:
        _trial()
    except KeyboardInterrupt:
        fail("interrupted: the running trial was stopped and recorded as cancelled; run the "
             "same command again to finish the sweep", code=130)


if __name__ == "__main__":
    main()
