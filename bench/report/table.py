"""Table 1: one row per (setting, epochs, workers) with repeats averaged, failed trials apart.

Each numeric cell of a row that holds n succeeded runs is the mean over the runs and, when
n >= 2, the half-width of its Student-t 95% confidence interval (``mean ± half-width``;
``<column>_ci95`` in the CSV). Speedup is the mean time taken at the baseline (the smallest
worker count that succeeded with the same setting and epochs) divided by the mean time taken
at this worker count; efficiency is speedup * baseline workers / workers. Their intervals
propagate the two means' relative half-widths (first-order, ``S * sqrt((h0/T0)^2 + (h/T)^2)``)
and exist only when both rows hold at least two runs.

A trial that did not succeed is a row of its own, with its status and reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from rundir import atomic_write_text

# Mean-with-interval columns of the summary, in the order of the CSV.
METRICS = (
    "time_total_s",
    "val_accuracy",
    "val_mrr",
    "test_mrr",
    "time_startup_s",
    "cpu_cores_mean",
    "memory_mib_mean",
    "memory_mib_peak",
    "edges_per_s",
)
# (header, summary column, decimals) of table.md and table.tex: the study's Table 1 first.
DISPLAY_COLUMNS = (
    ("No. of workers", "workers", None),
    ("Epochs", "epochs", None),
    ("Time taken (s)", "time_total_s", 1),
    ("Accuracy", "val_accuracy", 4),
    ("Val MRR", "val_mrr", 4),
    ("Test MRR", "test_mrr", 4),
    ("Speedup", "speedup", 2),
    ("Efficiency", "efficiency", 2),
    ("Startup (s)", "time_startup_s", 1),
    ("CPU cores/worker", "cpu_cores_mean", 2),
    ("Memory/worker (MiB)", "memory_mib_mean", 0),
    ("Runs", "n", None),
    ("Status", "status_text", None),
)
_REASON_CHARS = 160


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the Student-t interval, n) of the finite values.

    The half-width is NaN when n < 2 (one run gives no interval) and the mean NaN when n == 0.
    """
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, 1
    from scipy.special import stdtrit  # Student's t quantile; scipy.stats costs 1.3 s to import

    t = stdtrit(n - 1, 0.5 + confidence / 2)
    return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(n)), n


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as a DataFrame (see the module docstring), from ``load_sweep``'s trials.

    Columns: setting, workers, epochs, n, seeds, status, reason, status_text, oversubscribed,
    cores, trial_ids, ``<metric>`` and ``<metric>_ci95`` for each of ``METRICS``, speedup,
    speedup_ci95, efficiency, efficiency_ci95, baseline_workers.
    """
    ok = df[df["status"] == "succeeded"]
    rows = [
        _group_row(key, group)
        for key, group in ok.groupby(["setting", "epochs", "workers"], sort=False)
    ]
    rows += [_trial_row(trial) for _, trial in df[df["status"] != "succeeded"].iterrows()]
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    for column in ("workers", "epochs", "n"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    table = _add_speedup(table)
    order = table["status"].map({"succeeded": 0}).fillna(1)
    table = table.assign(_order=order).sort_values(
        ["setting", "epochs", "workers", "_order"], na_position="last"
    )
    return table.drop(columns="_order").reset_index(drop=True)


def _group_row(key: tuple, group: pd.DataFrame) -> dict:
    setting, epochs, workers = key
    over = bool(group["oversubscribed"].any())
    cores = group["cores"].dropna()
    row = {
        "setting": setting,
        "workers": int(workers),
        "epochs": int(epochs),
        "n": len(group),
        "seeds": ",".join(str(s) for s in group["seed"].dropna()),
        "status": "succeeded",
        "reason": None,
        "oversubscribed": over,
        "cores": float(cores.max()) if len(cores) else math.nan,
        "trial_ids": " ".join(group["trial_id"]),
    }
    row["status_text"] = "succeeded (oversubscribed)" if over else "succeeded"
    for metric in METRICS:
        values = group[metric] if metric in group else []
        row[metric], row[f"{metric}_ci95"], _ = mean_ci(values)
    return row


def _trial_row(trial: pd.Series) -> dict:
    """A trial that did not succeed: its identity, status and reason; no figures."""
    reason = " ".join(str(trial.get("reason") or "unknown reason").split())
    short = reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 1] + "…"
    row = {
        "setting": trial["setting"],
        "workers": trial["workers"],
        "epochs": trial["epochs"],
        "n": 1,
        "seeds": "" if pd.isna(trial["seed"]) else str(trial["seed"]),
        "status": trial["status"],
        "reason": reason,
        "status_text": f"{trial['status']}: {short}",
        "oversubscribed": bool(trial["oversubscribed"]),
        "cores": trial["cores"],
        "trial_ids": trial["trial_id"],
    }
    for metric in METRICS:
        row[metric], row[f"{metric}_ci95"] = math.nan, math.nan
    return row


def _add_speedup(table: pd.DataFrame) -> pd.DataFrame:
    """Speedup and efficiency against the smallest succeeded worker count of each budget."""
    for column in ("speedup", "speedup_ci95", "efficiency", "efficiency_ci95", "baseline_workers"):
        table[column] = math.nan
    ok = table["status"] == "succeeded"
    for _, group in table[ok].groupby(["setting", "epochs"], sort=False):
        base = group.loc[group["workers"].idxmin()]
        w0, t0, h0 = base["workers"], base["time_total_s"], base["time_total_s_ci95"]
        for index, row in group.iterrows():
            speedup = t0 / row["time_total_s"]
            relative = math.sqrt(
                (h0 / t0) ** 2 + (row["time_total_s_ci95"] / row["time_total_s"]) ** 2
            )
            ci = math.nan if index == base.name else speedup * relative  # NaN when n < 2
            table.loc[index, ["speedup", "speedup_ci95"]] = speedup, ci
            table.loc[index, ["efficiency", "efficiency_ci95"]] = (
                speedup * w0 / row["workers"],
                ci * w0 / row["workers"],
            )
            table.loc[index, "baseline_workers"] = w0
    return table


def format_cell(value, ci: float = math.nan, decimals: int | None = None, pm: str = "±") -> str:
    """``12.3`` or ``12.3 ± 0.4``; ``-`` for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    if decimals is None:
        return (
            str(int(value))
            if isinstance(value, float | np.floating) and float(value).is_integer()
            else str(value)
        )
    text = f"{value:.{decimals}f}"
    if ci is not None and not math.isnan(ci):
        text += f" {pm} {ci:.{decimals}f}"
    return text


def display_rows(table: pd.DataFrame, pm: str = "±") -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of table.md / table.tex (a Setting column when it varies)."""
    columns = list(DISPLAY_COLUMNS)
    if table["setting"].astype(bool).any():
        columns.append(("Setting", "setting", None))
    headers = [header for header, _, _ in columns]
    rows = []
    for _, row in table.iterrows():
        rows.append(
            [
                format_cell(row[key], row.get(f"{key}_ci95", math.nan), decimals, pm)
                for _, key, decimals in columns
            ]
        )
    return headers, rows


def to_markdown(table: pd.DataFrame) -> str:
    """table.md: a GitHub-flavoured Markdown table."""
    headers, rows = display_rows(table)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
}


def _tex(text: str) -> str:
    escaped = "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)
    return escaped.replace("PLUSMINUS", r"$\pm$").replace("…", r"\ldots{}")


def to_latex(table: pd.DataFrame) -> str:
    """table.tex: a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
    headers, rows = display_rows(table, pm="PLUSMINUS")
    align = "r" * (len(headers) - 1) + "l"
    if headers[-1] == "Setting":
        align = "r" * (len(headers) - 2) + "ll"
    lines = [
        f"\\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(_tex(h) for h in headers) + r" \\",
        r"\midrule",
        *(" & ".join(_tex(cell) for cell in row) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return "\n".join(lines) + "\n"


def to_csv(table: pd.DataFrame) -> str:
    """table.csv: every column of ``summarize`` (means, half-widths, ids), unformatted."""
    return table.to_csv(index=False)


def write_tables(table: pd.DataFrame, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write table.md, table.csv and table.tex into ``out_dir`` (atomically); return their paths."""
    out = Path(out_dir)
    paths = {"md": out / "table.md", "csv": out / "table.csv", "tex": out / "table.tex"}
    atomic_write_text(paths["md"], to_markdown(table))
    atomic_write_text(paths["csv"], to_csv(table))
    atomic_write_text(paths["tex"], to_latex(table))
    return paths
