"""The report's figures, as matplotlib ``Figure`` objects (no pyplot, no global backend).

Each ``plot_*`` function returns a Figure, so a notebook can show it and ``save_figure`` can
write it as PNG (Agg) and SVG. Error bars are the 95% confidence intervals of ``summarize``
(none for a single run). Oversubscribed points (more workers than cores) are drawn hollow.

Figures have fixed margins (:data:`MARGINS_IN`, in inches) rather than a layout engine: the
axes text these figures hold (short tick labels, one line of title and of axis label) always
fits them, and matplotlib's constrained layout, which measures every text before drawing, was
40% of a report's rendering time.
"""

from __future__ import annotations

import io
import math
import os
import struct
import sys
import textwrap
import threading
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.report.load import load_resources
from bench.report.scaling import ScalingFit
from rundir import atomic_write_bytes

FORMATS = ("png", "svg")


# Around the grid of axes (left: tick labels and y label; bottom: tick labels and x label; top:
# the title), and between two panels (the right one's y tick labels and label), in inches.
MARGINS_IN = {"left": 0.8, "right": 0.2, "bottom": 0.6, "top": 0.4, "between": 0.85}


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.2):
    """A figure of ``ncols`` x ``nrows`` panels of ``width`` x ``height`` inches each."""
    fig = Figure(figsize=(width * ncols, height * nrows))
    FigureCanvasAgg(fig)
    m, w, h = MARGINS_IN, width * ncols, height * nrows
    # the axes' own size; wspace and hspace are fractions of it
    axes_w = (w - m["left"] - m["right"] - (ncols - 1) * m["between"]) / ncols
    axes_h = h / nrows - m["top"] - m["bottom"]  # rows apart by a title and an x label
    # A title at a fixed height: placed automatically, it is moved above whatever is drawn over
    # the axes (none of these figures has anything there), which measures every tick label.
    with rc_context({"axes.titley": 1.0}):
        axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={
            "left": m["left"] / w, "right": 1 - m["right"] / w,
            "bottom": m["bottom"] / h, "top": 1 - m["top"] / h,
            "wspace": m["between"] / axes_w, "hspace": (m["top"] + m["bottom"]) / axes_h,
        })
    return fig, axes.ravel()


# PNG: zlib's fastest level, 13% larger files (~55 KB a figure) for 13% less CPU a figure (its
# encoding was a sixth of the drawing). SVG: no date, so that a rebuilt report differs only
# where its figures do.
_SAVE_OPTIONS = {"png": {"pil_kwargs": {"compress_level": 1}}, "svg": {"metadata": {"Date": None}}}


def save_figure(
    fig: Figure, stem: str | os.PathLike[str], formats: Iterable[str] = FORMATS
) -> list[Path]:
    """Write ``fig`` to ``<stem>.png`` / ``<stem>.svg`` (atomically); return the paths."""
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=120, **_SAVE_OPTIONS.get(fmt, {}))
        path = Path(f"{stem}.{fmt}")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


# A figure to draw: a function that makes it, and the path of its files less the extension.
FigureJob = tuple[Callable[[], Figure], Path]
_INDEX = struct.Struct("I")  # one job of the queue save_figures forks around


def save_figures(jobs: list[FigureJob], formats: Iterable[str] = FORMATS) -> list[Path]:
    """Make and save every (figure maker, stem) on every core of the machine: drawing is
    nearly all of a report's time, and figures are independent. This process draws too, beside
    one forked renderer per other core, which inherits what the makers draw from; they take the
    jobs in order from a pipe holding their indices (a read of one index is atomic), so put the
    costliest first. A process with other threads running (a fork could copy a held lock) draws
    them one after another, as does a platform without ``fork``. (A multiprocessing pool cost
    20-70 ms more a report: its workers and threads, and results sent back; here the paths are
    known.)"""
    formats = tuple(formats)
    helpers = min(len(jobs), os.cpu_count() or 1) - 1
    if helpers < 1 or threading.active_count() > 1 or not hasattr(os, "fork"):
        return [path for make, stem in jobs for path in save_figure(make(), stem, formats)]
    queue, filler = os.pipe()
    os.write(filler, b"".join(_INDEX.pack(i) for i in range(len(jobs))))
    os.close(filler)
    pids = []
    try:
        for _ in range(helpers):
            pid = os.fork()
            if pid == 0:  # a renderer: it leaves by os._exit, never through the caller's code
                code = 1
                try:
                    _draw_queued(queue, jobs, formats)
                    code = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stderr.flush()
                    os._exit(code)
            pids.append(pid)
        _draw_queued(queue, jobs, formats)
    finally:
        os.close(queue)
        failed = [code for code in (os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                                    for pid in pids) if code != 0]
    if failed:
        raise RuntimeError(f"a figure renderer exited with code {failed[0]} (its error is above)")
    return [Path(f"{stem}.{fmt}") for _, stem in jobs for fmt in formats]


def _draw_queued(queue: int, jobs: list[FigureJob], formats: tuple[str, ...]) -> None:
    while len(taken := os.read(queue, _INDEX.size)) == _INDEX.size:
        make, stem = jobs[_INDEX.unpack(taken)[0]]
        save_figure(make(), stem, formats)


def _succeeded(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "succeeded"] if not table.empty else table


def _series(table: pd.DataFrame):
    """(label, rows sorted by workers) per epoch budget (and setting) of the succeeded rows."""
    ok = _succeeded(table)
    for (setting, epochs), group in ok.groupby(["setting", "epochs"], sort=True):
        label = f"{epochs} epochs" + (f" ({setting})" if setting else "")
        yield label, group.sort_values("workers")


def _errorbar(ax, x, y, err, over, color, label, marker="o"):
    """A line with error bars; oversubscribed points hollow."""
    x, y, err = (np.asarray(v, dtype=float) for v in (x, y, err))
    over = np.asarray(over, dtype=bool)
    yerr = np.where(np.isfinite(err), err, 0.0)
    ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=color, capsize=4)
    ax.plot(x, y, color=color, label=label)
    ax.plot(x[~over], y[~over], marker, color=color, markersize=7, linestyle="none")
    ax.plot(
        x[over],
        y[over],
        marker,
        color=color,
        markersize=7,
        linestyle="none",
        markerfacecolor="white",
    )


def _shade_oversubscribed(ax, table: pd.DataFrame) -> None:
    """Grey out worker counts above the cores the trials (failed ones too) ran on."""
    if table.empty:
        return
    cores = table["cores"].dropna()
    if cores.empty or not table["oversubscribed"].any():
        return
    limit = float(cores.min())
    right = max(float(table["workers"].max()) + 0.5, limit + 1)
    ax.axvspan(limit + 0.5, right, color="0.9", zorder=0)
    ax.text(
        limit + 0.6,
        0.98,
        f"oversubscribed\n(> {limit:g} cores)",
        transform=ax.get_xaxis_transform(),
        va="top",
        ha="left",
        fontsize=8,
        color="0.35",
    )


def _worker_ticks(ax, table: pd.DataFrame) -> None:
    workers = sorted({int(w) for w in table["workers"].dropna()}) if not table.empty else []
    if workers:
        ax.set_xticks(workers)
    ax.set_xlabel("workers")
    ax.grid(alpha=0.3)


def _colors(count: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(count)]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_time(table: pd.DataFrame) -> Figure:
    """Time taken against workers, one line per epoch budget, with 95% CI error bars."""
    fig, (ax,) = new_figure()
    series = list(_series(table))
    for (label, rows), color in zip(series, _colors(len(series)), strict=True):
        _errorbar(
            ax,
            rows["workers"],
            rows["time_total_s"],
            rows["time_total_s_ci95"],
            rows["oversubscribed"],
            color,
            label,
        )
    failed = (
        table[(table["status"] != "succeeded") & table["workers"].notna()]
        if not table.empty
        else table
    )
    if not failed.empty:
        ax.plot(
            failed["workers"].astype(float),
            [0.0] * len(failed),
            "x",
            color="tab:red",
            markersize=9,
            clip_on=False,
            label="did not succeed (see table)",
        )
    if not series:
        _empty(ax, "no succeeded trial")
    _shade_oversubscribed(ax, table)
    _worker_ticks(ax, table)
    ax.set_ylabel("time taken (s)")
    ax.set_ylim(bottom=0)
    ax.set_title("Time taken against workers")
    if series or not failed.empty:
        ax.legend(title="budget")
    return fig


def plot_speedup(table: pd.DataFrame) -> Figure:
    """Speedup and parallel efficiency against workers, with the ideal lines."""
    fig, (ax_s, ax_e) = new_figure(ncols=2, width=5.4)
    series = list(_series(table))
    for (label, rows), color in zip(series, _colors(len(series)), strict=True):
        _errorbar(
            ax_s,
            rows["workers"],
            rows["speedup"],
            rows["speedup_ci95"],
            rows["oversubscribed"],
            color,
            label,
        )
        _errorbar(
            ax_e,
            rows["workers"],
            rows["efficiency"],
            rows["efficiency_ci95"],
            rows["oversubscribed"],
            color,
            label,
        )
    ok = _succeeded(table)
    if series:
        workers = np.array(sorted({int(w) for w in ok["workers"]}), dtype=float)
        w0 = float(ok["baseline_workers"].min())
        ax_s.plot(workers, workers / w0, "k--", linewidth=1, label="ideal (linear)")
        ax_e.axhline(1.0, color="k", linestyle="--", linewidth=1, label="ideal")
        ax_s.set_ylabel(f"speedup over {w0:g} worker{'s' if w0 != 1 else ''}")
        ax_e.set_ylabel("parallel efficiency")
        ax_s.legend(title="budget", fontsize=8)
        ax_e.legend(title="budget", fontsize=8)
    for ax, title in ((ax_s, "Speedup"), (ax_e, "Parallel efficiency")):
        if not series:
            _empty(ax, "no succeeded trial")
        _shade_oversubscribed(ax, table)
        _worker_ticks(ax, table)
        ax.set_ylim(bottom=0)
        ax.set_title(title)
    if series:
        top = np.nanmax((ok["efficiency"] + ok["efficiency_ci95"].fillna(0)).to_numpy(float))
        ax_e.set_ylim(0, max(1.2, top * 1.1))
    return fig


def trial_label(trial: pd.Series) -> str:
    """Short name of a trial in legends: ``w2 e10 s0`` (plus its setting when one varies)."""
    label = f"w{trial['workers']} e{trial['epochs']} s{trial['seed']}"
    return label + (f" {trial['setting']}" if trial.get("setting") else "")


def plot_curves(df: pd.DataFrame, tags: tuple[str, ...] = ("val/mrr", "val/accuracy")) -> Figure:
    """Validation MRR and accuracy against epoch, one line per trial (from the event files).

    Lines are coloured by worker count; up to 12 trials each get a legend entry, more share
    one entry per worker count. Trials that did not succeed are dashed. The MRR panel also
    draws the baselines of the trials' datasets as grey horizontal lines.
    """
    fig, axes = new_figure(ncols=len(tags), width=5.4)
    trials = df[df["curves"].map(lambda c: any(c.get(tag) for tag in tags))]
    workers = sorted({int(w) for w in trials["workers"].dropna()})
    color_of = dict(zip(workers, _colors(len(workers)), strict=True))
    per_trial = len(trials) <= 12
    for ax, tag in zip(axes, tags, strict=True):
        labelled = set()
        for _, trial in trials.iterrows():
            points = trial["curves"].get(tag) or []
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            failed = "" if trial["status"] == "succeeded" else f" ({trial['status']})"
            label = (
                trial_label(trial) + failed
                if per_trial
                else f"{trial['workers']} worker{'s' if trial['workers'] != 1 else ''}"
            )
            ax.plot(
                steps,
                values,
                "--" if trial["status"] != "succeeded" else "-",
                color=color_of.get(trial["workers"], "k"),
                marker="o" if len(steps) < 15 else None,
                markersize=3,
                alpha=1.0 if per_trial else 0.6,
                label=None if label in labelled else label,
            )
            labelled.add(label)
        if tag == "val/mrr":
            _draw_baselines(ax, df)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(tag)
        ax.set_title(
            {"val/mrr": "Validation MRR", "val/accuracy": "Validation accuracy"}.get(tag, tag)
        )
        ax.grid(alpha=0.3)
        if trials.empty:
            _empty(ax, "no per-epoch series in the result files")
        else:
            ax.legend(fontsize=7)
    return fig


def _draw_baselines(ax, df: pd.DataFrame) -> None:
    """The reference rows (parameter-free methods on the same sources and negatives) as grey
    horizontal lines, labelled at the right edge, so that the curves read against them."""
    from bench.report.table import baseline_rows

    rows = baseline_rows(df)
    if rows.empty:
        return
    several = rows["dataset"].nunique() > 1
    styles = ["-", "--", ":", "-."]
    for i, (_, row) in enumerate(rows.sort_values("val_mrr", ascending=False).iterrows()):
        label = f"{row['label']} ({row['dataset']})" if several else str(row["label"])
        ax.axhline(row["val_mrr"], color="0.45", linewidth=0.9, linestyle=styles[i % len(styles)],
                   label=f"baseline: {label} {row['val_mrr']:.3f}")


def choose_trial(df: pd.DataFrame) -> pd.Series | None:
    """The default trial of the usage figures: the succeeded one with the most workers (then
    the most epochs, the lowest seed); None when no trial succeeded."""
    ok = df[df["status"] == "succeeded"]
    if ok.empty:
        return None
    ranked = ok.assign(_w=-ok["workers"], _e=-ok["epochs"]).sort_values(["_w", "_e", "seed"])
    return df.loc[ranked.index[0]]


def plot_usage(trial: pd.Series, kind: str) -> Figure:
    """CPU cores (``kind="cpu"``) or memory (``"memory"``) of each worker of one trial over time."""
    column, ylabel, title = {
        "cpu": ("cpu_cores", "CPU (cores)", "CPU usage per worker"),
        "memory": ("rss_mib", "memory RSS (MiB)", "Memory usage per worker"),
    }[kind]
    fig, (ax,) = new_figure(width=7.0)
    samples = load_resources(trial["trial_dir"]).dropna(subset=[column])
    workers = sorted(samples["worker"].unique(), key=_worker_order)
    for worker, color in zip(workers, _colors(len(workers)), strict=True):
        rows = samples[samples["worker"] == worker]
        ax.plot(rows["t"], rows[column], color=color, label=str(worker), linewidth=1.2)
    if samples.empty:
        _empty(ax, f"no resources.csv samples for {trial['trial_id']}")
    else:
        startup = trial.get("time_startup_s")
        if startup is not None and np.isfinite(startup):
            ax.axvline(
                startup, color="0.4", linestyle=":", linewidth=1, label="first training step"
            )
        if kind == "cpu" and np.isfinite(trial.get("threads_per_worker", math.nan)):
            ax.axhline(
                trial["threads_per_worker"],
                color="0.6",
                linestyle="--",
                linewidth=1,
                label=f"threads per worker ({trial['threads_per_worker']:g})",
            )
        ax.legend(fontsize=8, ncols=2 if len(workers) > 4 else 1)
    ax.set_xlabel("time since submission (s)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    over = " (oversubscribed)" if trial.get("oversubscribed") else ""
    ax.set_title(f"{title}: {trial['trial_id']}{over}")
    return fig


def _worker_order(name: str):
    digits = "".join(ch for ch in str(name) if ch.isdigit())
    return (int(digits) if digits else math.inf, str(name))


def plot_scaling(fits: list[ScalingFit]) -> Figure:
    """Measured mean time against workers with the fitted Amdahl and USL curves, per budget.

    Solid curves are the reported fits; dotted ones the same models on the other point set
    (with/without oversubscribed points). A star marks the USL's best worker count.
    """
    fig, axes = new_figure(ncols=max(1, len(fits)), width=5.6)
    if not fits:
        _empty(axes[0], "no succeeded trial: nothing to fit")
        return fig
    for ax, fit in zip(axes, fits, strict=True):
        _draw_fit(ax, fit)
    return fig


def _draw_fit(ax, fit: ScalingFit) -> None:
    p = fit.points.astype({"workers": float, "time_total_s": float, "time_total_s_ci95": float})
    over = p["oversubscribed"].to_numpy(bool)
    err = np.where(np.isfinite(p["time_total_s_ci95"]), p["time_total_s_ci95"], 0.0)
    ax.errorbar(p["workers"], p["time_total_s"], yerr=err, fmt="none", ecolor="k", capsize=4)
    ax.plot(p["workers"][~over], p["time_total_s"][~over], "ko", label="measured")
    if over.any():
        ax.plot(
            p["workers"][over],
            p["time_total_s"][over],
            "ko",
            markerfacecolor="white",
            label="measured, oversubscribed",
        )
    top = max(float(p["workers"].max()) * 1.5, 2.0)
    if fit.usl.fitted and fit.usl.best_workers is not None:
        top = max(top, min(fit.usl.best_n * 1.3, float(p["workers"].max()) * 4))
    n = np.linspace(1, top, 200)
    notes = []
    for model, color in ((fit.amdahl, "tab:blue"), (fit.usl, "tab:red")):
        name = "Amdahl" if model.model == "amdahl" else "USL"
        if model.fitted:
            used = ",".join(str(w) for w in model.workers)
            ax.plot(n, model.predict(n), color=color, label=f"{name} fit (w={used})")
        else:
            notes.append(f"{name}: {model.message}")
    for model in fit.alternatives:
        if model.fitted:
            color = "tab:blue" if model.model == "amdahl" else "tab:red"
            name = "Amdahl" if model.model == "amdahl" else "USL"
            ax.plot(
                n,
                model.predict(n),
                color=color,
                linestyle=":",
                linewidth=1,
                label=f"{name}, {model.points}",
            )
    if fit.usl.fitted and fit.usl.best_workers is not None:
        ax.plot(
            [fit.usl.best_workers],
            [fit.usl.best_time_s],
            "*",
            color="tab:red",
            markersize=14,
            label=f"USL best: {fit.usl.best_workers} workers, {fit.usl.best_time_s:.0f} s",
        )
    if notes:
        text = "\n".join(textwrap.fill(note, 60) for note in notes)
        ax.text(
            0.03,
            0.03,
            text,
            transform=ax.transAxes,
            fontsize=7,
            va="bottom",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
        )
    ax.set_xlabel("workers")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("time taken (s)")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0.5)
    ax.grid(alpha=0.3)
    ax.set_title(f"Scaling model: {fit.label}")
    ax.legend(fontsize=7)
