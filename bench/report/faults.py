"""Fault tolerance: what injected faults (``fault.*``, bench/faults.py) cost each trial.

One row per trial that had faults, compared with its *twin*: the fault-free trial of the same
sweep with the same workers, epochs, seed, dataset and model (succeeded), when there is one.

- ``recovery_s``: mean seconds from a fault to the first training progress after it;
- ``epochs_redone`` / ``work_lost_s``: training thrown away by all faults of the trial;
- ``overhead_s`` / ``overhead_pct``: time taken minus the twin's (and relative to it);
- ``val_mrr_diff`` / ``val_accuracy_diff``: the trial's minus the twin's (0 when resume is exact).

Written as ``faults.md`` and ``faults.csv`` with the plot ``plots/faults.png`` by ``write_report``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from bench.report.plots import new_figure, save_figure
from rundir import atomic_write_text

TWIN_KEYS = ("workers", "epochs", "seed", "dataset", "model")
COLUMNS = {
    "trial_id": "Trial",
    "workers": "No. of workers",
    "epochs": "Epochs",
    "seed": "Seed",
    "status": "Status",
    "faults": "Faults",
    "restarts": "Restarts",
    "fault_epochs": "After epochs",
    "recovery_s": "Recovery (s)",
    "epochs_redone": "Epochs redone",
    "work_lost_s": "Work lost (s)",
    "time_total_s": "Time taken (s)",
    "twin_time_s": "Twin time (s)",
    "overhead_s": "Overhead (s)",
    "overhead_pct": "Overhead (%)",
    "val_mrr": "Val MRR",
    "val_mrr_diff": "Val MRR diff",
    "val_accuracy_diff": "Accuracy diff",
    "twin": "Twin",
}


def _faults(row: pd.Series) -> list[dict[str, Any]]:
    value = row.get("faults")
    return value if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _sum(values: list[Any]) -> float | None:
    numbers = [v for v in map(_num, values) if v is not None]
    return sum(numbers) if numbers else None


def _diff(a: Any, b: Any) -> float | None:
    a, b = _num(a), _num(b)
    return None if a is None or b is None else a - b


def fault_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial with faults (empty frame when the sweep had none)."""
    if "faults" not in df.columns:
        return pd.DataFrame(columns=list(COLUMNS))
    has_faults = df.apply(lambda r: bool(_faults(r)), axis=1)
    twins = df[~has_faults & (df["status"] == "succeeded")]
    rows = []
    for _, trial in df[has_faults].iterrows():
        faults = _faults(trial)
        match = twins
        for key in TWIN_KEYS:
            if key in df.columns:
                match = match[match[key] == trial[key]]
        twin = match.iloc[0] if not match.empty else None
        recoveries = [v for v in (_num(f.get("recovery_s")) for f in faults) if v is not None]
        twin_time = _num(twin["time_total_s"]) if twin is not None else None
        overhead = _diff(trial.get("time_total_s"), twin_time)
        rows.append({
            "trial_id": trial["trial_id"],
            "workers": trial["workers"],
            "epochs": trial["epochs"],
            "seed": trial["seed"],
            "status": trial["status"],
            "faults": len(faults),
            "restarts": None if _num(trial.get("restarts")) is None else int(trial["restarts"]),
            "fault_epochs": ",".join(str(f.get("epoch")) for f in faults),
            "recovery_s": sum(recoveries) / len(recoveries) if recoveries else None,
            "epochs_redone": _sum([f.get("epochs_redone") for f in faults]),
            "work_lost_s": _sum([f.get("work_lost_s") for f in faults]),
            "time_total_s": _num(trial.get("time_total_s")),
            "twin_time_s": twin_time,
            "overhead_s": overhead,
            "overhead_pct": 100 * overhead / twin_time if overhead is not None and twin_time else None,
            "val_mrr": _num(trial.get("val_mrr")),
            "val_mrr_diff": _diff(trial.get("val_mrr"), twin["val_mrr"]) if twin is not None else None,
            "val_accuracy_diff": (_diff(trial.get("val_accuracy"), twin["val_accuracy"])
                                  if twin is not None else None),
            "twin": twin["trial_id"] if twin is not None else None,
        })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        digits = 4 if column.startswith("val_") else 1 if column.endswith(("_s", "_pct")) else 2
        return f"{value:+.{digits}f}" if column.endswith("_diff") else f"{value:.{digits}f}"
    return str(value)


def faults_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(COLUMNS.values()) + " |"
    lines = [header, "|" + "---|" * len(COLUMNS)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[c], c) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def plot_faults(table: pd.DataFrame) -> Figure:
    """Time taken with faults against the twin's, and the recovery time, per trial."""
    fig, (ax,) = new_figure(width=7.0)
    labels = [f"w{r.workers} e{r.epochs} s{r.seed}\n{r.faults} fault(s)" for r in table.itertuples()]
    x = list(range(len(table)))
    twin = [v if v is not None else 0.0 for v in table["twin_time_s"]]
    total = [v if v is not None else 0.0 for v in table["time_total_s"]]
    recovery = [(r.recovery_s or 0.0) * r.faults for r in table.itertuples()]
    ax.bar([i - 0.2 for i in x], twin, width=0.4, label="fault-free twin", color="tab:blue")
    ax.bar([i + 0.2 for i in x], total, width=0.4, label="with faults", color="tab:orange")
    ax.bar([i + 0.2 for i in x], recovery, width=0.4, label="of which recovery",
           color="none", edgecolor="black", hatch="//")
    ax.set_xticks(x, labels)
    ax.set_ylabel("time taken (s)")
    ax.set_title("Fault tolerance: time with injected faults vs the fault-free twin")
    ax.legend()
    return fig


def write_fault_report(df: pd.DataFrame, out: Path, formats: tuple[str, ...]) -> list[Path]:
    """faults.md, faults.csv and plots/faults.* when the sweep had faults; [] otherwise."""
    table = fault_table(df)
    if table.empty:
        return []
    md, csv = out / "faults.md", out / "faults.csv"
    atomic_write_text(md, faults_markdown(table))
    atomic_write_text(csv, table.to_csv(index=False))
    return [md, csv, *save_figure(plot_faults(table), out / "plots" / "faults", formats)]
