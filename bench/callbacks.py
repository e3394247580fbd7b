"""Hydra callbacks of the sweep (``hydra.callbacks`` in conf/config.yaml)."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bench import report_process


class ReportCallback(Callback):
    """Writes the report of a multirun when it ends, and prints its Table 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = f"{config.results_dir}/{config.sweep_name}"
        running = report_process.REPORT_PROCESS
        if running is None or not running.write(sweep_dir):
            report_process.write_sweep_report(sweep_dir)
