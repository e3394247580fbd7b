"""The main job: a Hydra sweep where one job is one trial.

    python -m bench.sweep workers=2,4,6 epochs=10,30 -m     # the study's Table 1 grid
    python -m bench.sweep experiment=table1 -m              # the same grid, from a preset
    python -m bench.sweep workers=2 epochs=3                # one trial

1. preflight (bench/preflight.py): every job of the sweep composed, validated and checked
   before anything runs (in the sweeper, hydra_plugins/bench_sweeper, which hands the launcher
   those compositions), so a bad value anywhere stops the command with one line;
2. Hydra runs the jobs (one after another, or hydra/launcher=bench_parallel), each one trial
   (bench/trial.py);
3. at the end of a multirun, the report (bench/callbacks.py): Table 1 printed, plots
   written, by a process forked first thing (bench/report_process.py) that imports the
   report's libraries while step 1 runs (and between trials: it is stopped while one runs).

``--verbose`` (``-v``) adds the traceback to one-line errors, here and in the trainers.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bench import report_process  # the standard library only: see main()

if TYPE_CHECKING:
    from omegaconf import DictConfig


def _trial(cfg: DictConfig) -> None:
    """The task function Hydra calls for each job: one trial."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from bench.preflight import TOTAL_TRIALS_ENV
    from bench.trial import run_trial  # after the preflight: a refused sweep never loads it

    hydra_cfg = HydraConfig.get()
    index = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else 0
    total = int(os.environ.get(TOTAL_TRIALS_ENV, 1))
    report = report_process.REPORT_PROCESS
    if report is None:
        run_trial(cfg, index, total)
        return
    try:  # its import stopped while the trial runs: no trial shares the machine with it
        run_trial(cfg, index, total, before_start=report.pause)
    finally:
        report.resume()


@contextlib.contextmanager
def _no_mode_probe(multirun: bool) -> Iterator[None]:
    """A multirun without Hydra's mode probe: before it runs anything, Hydra 1.3 composes the
    whole config once only to read ``hydra.mode`` (``Hydra.get_mode``, called by
    ``hydra._internal.utils._run_hydra``), and with ``--multirun`` given the answer cannot
    change the mode: ``_run_app`` runs a multirun and, the answer being None (no config here
    sets ``hydra.mode``), adds the override ``hydra.mode=MULTIRUN``. So a multirun answers None
    without composing (0.13 s of its start-up; tests/test_sweeper.py counts the compositions).
    Hydra has no public hook for this: the one patch of its private
    ``hydra._internal.hydra.Hydra``, for the duration of the call only."""
    if not multirun:
        yield
        return
    from hydra._internal.hydra import Hydra

    probe = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None
    try:
        yield
    finally:
        Hydra.get_mode = probe


def main() -> None:
    # First, before Hydra is even imported (0.14-0.2 s): a multirun's report process, so that
    # its import (pandas, matplotlib: 0.5-0.7 s) runs on the other core while the sweep starts
    # (what is left of it when the first trial starts, between trials). Hence the imports
    # below, made after the fork.
    guessed = report_process.asks_for_multirun(sys.argv[1:])
    if guessed:
        report_process.REPORT_PROCESS = report_process.ReportProcess.start()

    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from bench.config import register_configs
    from bench.preflight import TOTAL_TRIALS_ENV, check_single_run, parse_command_line, prints_only
    from trainer.config import ConfigError, fail, one_line, take_verbose_flag

    register_configs()
    sys.argv[1:] = take_verbose_flag(sys.argv[1:])  # Hydra parses sys.argv itself
    try:
        args = parse_command_line(sys.argv[1:])
        runs = not prints_only(args)
        if runs and not args.multirun:
            check_single_run(args.overrides)  # a multirun's jobs: in the sweeper
    except ConfigError as exc:
        fail(str(exc))
    wanted = runs and args.multirun  # Hydra's reading of the command line decides
    if wanted and not guessed:  # e.g. an abbreviation (--multi)
        report_process.REPORT_PROCESS = report_process.ReportProcess.start()
    elif guessed and not wanted and report_process.REPORT_PROCESS is not None:  # e.g. --cf job
        report_process.REPORT_PROCESS.close()
        report_process.REPORT_PROCESS = None
    os.environ[TOTAL_TRIALS_ENV] = "1"  # the sweeper sets a multirun's
    # Hydra then raises the errors it would print (a composition that fails, a preflight
    # check), and they become one line here.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with _no_mode_probe(wanted):
            hydra.main(version_base="1.3", config_path="../conf", config_name="config")(_trial)()
    except ConfigError as exc:
        fail(str(exc))
    except (HydraException, OmegaConfBaseException) as exc:
        fail(one_line(exc))
    except KeyboardInterrupt:
        fail("interrupted: the running trial was stopped and recorded as cancelled; run the "
             "same command again to finish the sweep", code=130)
    # Everything still allocated lives until exit: frozen, the interpreter's last collections
    # skip it (about 0.4 s once pandas and matplotlib are loaded).
    gc.freeze()


if __name__ == "__main__":
    main()
