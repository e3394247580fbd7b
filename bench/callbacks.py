"""Hydra callbacks of the sweep (``hydra.callbacks`` in conf/config.yaml)."""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class ReportCallback(Callback):
    """Writes the report of a multirun when it ends, and prints its Table 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The full report (tables, plots, scaling fits, report.md); Table 1 printed."""
        # matplotlib, pandas and scipy only when a sweep ends
        from bench.report import NoResultsError, write_report, write_table

        sweep_dir = f"{config.results_dir}/{config.sweep_name}"
        try:
            table = write_report(sweep_dir).table_md
        except NoResultsError as exc:  # no trial ran
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
