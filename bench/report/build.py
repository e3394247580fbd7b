"""``write_report``: every file of a sweep's report, from its result files."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.report.faults import fault_table, faults_markdown, write_fault_report
from bench.report.load import load_sweep
from bench.report.markdown import render_report
from bench.report.plots import (
    FORMATS,
    FigureJob,
    choose_trial,
    plot_curves,
    plot_scaling,
    plot_speedup,
    plot_time,
    plot_usage,
    save_figures,
)
from bench.report.scaling import ScalingFit, fit_scaling
from bench.report.table import summarize, to_markdown, write_tables
from rundir import atomic_write_json, atomic_write_text

PLOTS_DIR = "plots"
PLOT_STEMS = ("time_vs_workers", "speedup_efficiency", "validation_curves", "scaling_model")
FAULT_STEM = "faults"  # plots/faults.*, only when the sweep injected faults


@dataclass
class Report:
    """What ``write_report`` made: the trials, Table 1, the fits and the files written."""

    sweep_dir: Path
    out_dir: Path
    trials: pd.DataFrame
    table: pd.DataFrame
    fits: list[ScalingFit]
    files: list[Path] = field(default_factory=list)

    @property
    def table_md(self) -> str:
        return to_markdown(self.table)


def _pick_trials(df: pd.DataFrame, trial_ids: Iterable[str] | None) -> list[pd.Series]:
    """The trials of the usage figures: those named, or the default choice."""
    trial_ids = list(trial_ids or [])
    if not trial_ids:
        chosen = choose_trial(df)
        return [] if chosen is None else [chosen]
    picked = []
    for trial_id in trial_ids:
        match = df[df["trial_id"] == trial_id]
        if match.empty:
            known = ", ".join(df["trial_id"])
            raise ValueError(f"--trial {trial_id}: no such trial in the sweep (it has: {known})")
        picked.append(match.iloc[0])
    return picked


def write_report(
    sweep_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    trials: Iterable[str] | None = None,
    formats: Iterable[str] = FORMATS,
    policy: str = "auto",
    command: str | None = None,
) -> Report:
    """Load ``sweep_dir`` and write into ``out_dir`` (default: the sweep folder) table.md,
    table.csv, table.tex, scaling.json, report.md and plots/*.png|svg.

    ``trials``: trial ids for the CPU/memory figures (default: the succeeded trial with the most
    workers). ``policy``: how the scaling fit treats oversubscribed points (see ``fit_scaling``).
    Raises ``NoResultsError`` when the sweep has no trial.
    """
    sweep = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep
    formats = tuple(formats)
    if not formats:
        raise ValueError("no plot format: give e.g. --formats png,svg")
    df = load_sweep(sweep)
    chosen = _pick_trials(df, trials)
    table = summarize(df)
    fits = fit_scaling(table, policy)
    report = Report(sweep, out, df, table, fits)
    report.files += write_tables(table, out).values()
    report.files.append(_write_scaling_json(fits, out / "scaling.json"))

    plots = out / PLOTS_DIR
    ext = "png" if "png" in formats else formats[0]
    stems = dict(zip(("time", "speedup", "curves", "scaling"), PLOT_STEMS, strict=True))
    links = {key: f"{PLOTS_DIR}/{stem}.{ext}" for key, stem in stems.items()}
    # What draws each figure, in the order save_figures hands them out: the two-panel ones first.
    makers = {"speedup": lambda: plot_speedup(table), "curves": lambda: plot_curves(df),
              "scaling": lambda: plot_scaling(fits), "time": lambda: plot_time(table)}
    jobs: list[FigureJob] = [(make, plots / stems[key]) for key, make in makers.items()]
    usage = []
    for trial in chosen:
        paths = []
        for kind in ("cpu", "memory"):
            stem = f"{kind}_{trial['trial_id']}"
            jobs.append((functools.partial(plot_usage, trial, kind), plots / stem))
            paths.append(f"{PLOTS_DIR}/{stem}.{ext}")
        usage.append((trial, paths))
    report.files += save_figures(jobs, formats)

    report.files += write_fault_report(df, out, formats)
    _remove_stale_plots(plots, report.files)
    command = command or f"python -m bench.report {sweep}" + (
        f" --out {out}" if out != sweep else ""
    )
    text = render_report(str(sweep), df, table, fits, links, usage, command)
    faults = fault_table(df)
    if not faults.empty:
        text += ("\n## Fault tolerance\n\nInjected faults (`fault.*`) against the fault-free twin "
                 "of each trial (same workers, epochs, seed); `faults.csv` holds the same.\n\n"
                 f"{faults_markdown(faults)}\n![faults]({PLOTS_DIR}/{FAULT_STEM}.{ext})\n")
    atomic_write_text(out / "report.md", text)
    report.files.append(out / "report.md")
    return report


def write_table(sweep_dir: str | os.PathLike[str]) -> str:
    """Only Table 1 (``table.md``, ``table.csv``, ``table.tex``), returned as Markdown: what the
    end of a sweep still writes when the full report fails. Raises ``NoResultsError`` when the
    sweep has no trial."""
    table = summarize(load_sweep(sweep_dir))
    write_tables(table, sweep_dir)
    return to_markdown(table)


def _remove_stale_plots(plots: Path, written: list[Path]) -> None:
    """Drop figures an earlier report left in plots/ (e.g. usage charts of another trial)."""
    keep = {p.resolve() for p in written}
    for path in plots.glob("*"):
        stems = (*PLOT_STEMS, FAULT_STEM)
        ours = path.name.startswith(("cpu_", "memory_", *(f"{s}." for s in stems)))
        if ours and path.suffix in (".png", ".svg") and path.resolve() not in keep:
            path.unlink()


def _write_scaling_json(fits: list[ScalingFit], path: Path) -> Path:
    """The fits, machine-readable (infinities and NaNs as null)."""
    data = [
        {
            "setting": fit.setting,
            "epochs": fit.epochs,
            "points": fit.points.astype(object).where(fit.points.notna(), None).to_dict("records"),
            "amdahl": dataclasses.asdict(fit.amdahl),
            "usl": dataclasses.asdict(fit.usl),
            "alternatives": [dataclasses.asdict(m) for m in fit.alternatives],
        }
        for fit in fits
    ]
    atomic_write_json(path, data)
    return path
