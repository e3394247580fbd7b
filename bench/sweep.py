"""The main job: a Hydra sweep where one job is one trial.

    python -m bench.sweep workers=2,4,6 epochs=10,30 -m     # the study's Table 1 grid
    python -m bench.sweep experiment=table1 -m              # the same grid, from a preset
    python -m bench.sweep workers=2 epochs=3                # one trial

1. preflight (bench/preflight.py): every job of the sweep composed, validated and checked
   before anything runs, so a bad value anywhere stops the command with one line;
2. Hydra runs the jobs (one after another, or hydra/launcher=bench_parallel), each one trial
   (bench/trial.py);
3. at the end of a multirun, the report (bench/callbacks.py): Table 1 printed, plots written.

``--verbose`` (``-v``) adds the traceback to one-line errors, here and in the trainers.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bench.config import register_configs
from bench.preflight import preflight
from trainer.config import ConfigError, fail, take_verbose_flag

# How many trials the sweep runs, for "[i/N]"; it also reaches trials run in other processes
# (hydra/launcher=bench_parallel).
TOTAL_TRIALS_ENV = "GNN_BENCH_SWEEP_TRIALS"


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _trial(cfg: DictConfig) -> None:
    from bench.trial import run_trial  # after the preflight: a refused sweep never loads it

    hydra_cfg = HydraConfig.get()
    index = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else 0
    run_trial(cfg, index, int(os.environ.get(TOTAL_TRIALS_ENV, 1)))


def main() -> None:
    register_configs()
    sys.argv[1:] = take_verbose_flag(sys.argv[1:])  # Hydra parses sys.argv itself
    try:
        os.environ[TOTAL_TRIALS_ENV] = str(preflight(sys.argv[1:]))
    except ConfigError as exc:
        fail(str(exc))
    try:
        _trial()
    except KeyboardInterrupt:
        fail("interrupted: the running trial was stopped and recorded as cancelled; run the "
             "same command again to finish the sweep", code=130)


if __name__ == "__main__":
    main()
