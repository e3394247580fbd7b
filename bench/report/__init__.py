"""Reports of a sweep: Table 1, scaling curves, fitted scaling models and usage charts.

    python -m bench.report results/<sweep>                      # writes into the sweep folder
    python -m bench.report results/<sweep> --out results/example --trial w2-e10-s0-small-01521ad6

In Python (a notebook, a script)::

    from bench.report import load_sweep, summarize, fit_scaling
    trials = load_sweep("results/table1-2026-11-28")   # one row per trial (pandas)
    table = summarize(trials)                          # Table 1: repeats averaged, 95% CIs
    fits = fit_scaling(table)                          # Amdahl and USL per epoch budget

The end of every multirun (``bench.callbacks.ReportCallback``) calls ``write_report``, in the
process the sweep forked for it (``bench/report_process.py``).
"""

from bench.report.build import Report, write_report, write_table
from bench.report.load import NoResultsError, load_resources, load_sweep
from bench.report.plots import (
    choose_trial,
    plot_curves,
    plot_scaling,
    plot_speedup,
    plot_time,
    plot_usage,
    save_figure,
    save_figures,
)
from bench.report.scaling import (
    ModelFit,
    ScalingFit,
    amdahl_time,
    fit_amdahl,
    fit_scaling,
    fit_usl,
    usl_time,
)
from bench.report.table import mean_ci, summarize, to_latex, to_markdown, write_tables

__all__ = [
    "ModelFit",
    "NoResultsError",
    "Report",
    "ScalingFit",
    "amdahl_time",
    "choose_trial",
    "fit_amdahl",
    "fit_scaling",
    "fit_usl",
    "load_resources",
    "load_sweep",
    "mean_ci",
    "plot_curves",
    "plot_scaling",
    "plot_speedup",
    "plot_time",
    "plot_usage",
    "save_figure",
    "save_figures",
    "summarize",
    "to_latex",
    "to_markdown",
    "usl_time",
    "write_report",
    "write_table",
    "write_tables",
]
