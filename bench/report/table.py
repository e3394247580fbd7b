"""Table 1: one row per (setting, epochs, workers) with repeats averaged, failed trials apart.

Each numeric cell of a row that holds n succeeded runs is the mean over the runs and, when
n >= 2, the half-width of its Student-t 95% confidence interval (``mean ± half-width``;
``<column>_ci95`` in the CSV). Speedup is the mean time taken at the baseline (the smallest
worker count that succeeded with the same setting and epochs) divided by the mean time taken
at this worker count; efficiency is speedup * baseline workers / workers. Their intervals
propagate the two means' relative half-widths (first-order, ``S * sqrt((h0/T0)^2 + (h/T)^2)``)
and exist only when both rows hold at least two runs.

A trial that did not succeed is a row of its own, with its status and reason.

Quality columns follow the OGB leaderboard: *Best val MRR* is the validation MRR of the best
epoch, *SE* its standard error over validation sources (one run's sampling error, averaged over
the runs; the ± of a cell with repeats is the interval over seeds instead), *Test MRR* the test
MRR of the weights after that epoch. *Time to target* is MLPerf's time to quality: seconds from
submission to the first validation MRR >= the dataset's ``target_mrr``.

Under the table, :func:`baseline_rows` lists parameter-free methods scored on the same sources
and negatives (``trainer/data/baselines.py``), so that a reader sees whether training learned
anything; ``table.attrs["baselines"]`` holds them (records) and ``table.attrs["notes"]`` caveats.
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
    "best_val_mrr",
    "test_mrr",
    "test_mrr_at_best",
    "time_to_target_s",
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
    ("Val MRR (last)", "val_mrr", 4),
    ("Best val MRR", "best_val_mrr", 4),
    ("SE", "best_val_mrr_se", 4),
    ("Best epoch", "best_epoch_text", None),
    ("Test MRR (best)", "test_mrr_at_best", 4),
    ("Time to target (s)", "time_to_target_text", None),
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
    table = table.drop(columns="_order").reset_index(drop=True)
    # Plain records, not a DataFrame: pandas compares attrs when it combines frames.
    table.attrs["baselines"] = baseline_rows(df).to_dict("records")
    table.attrs["notes"] = _notes(df)
    return table


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
    se = group["best_val_mrr_se"].dropna() if "best_val_mrr_se" in group else []
    row["best_val_mrr_se"] = float(np.mean(se)) if len(se) else math.nan
    row["target_mrr"] = _first(group, "target_mrr")
    epochs = sorted({int(e) for e in group.get("best_epoch", pd.Series(dtype=float)).dropna()})
    row["best_epoch_text"] = ",".join(str(e) for e in epochs) if epochs else "-"
    row["time_to_target_text"] = _time_to_target_text(group, row)
    return row


def _first(group: pd.DataFrame, column: str) -> float:
    values = group[column].dropna() if column in group else []
    return float(values.iloc[0]) if len(values) else math.nan


def _time_to_target_text(group: pd.DataFrame, row: dict) -> str:
    """Mean seconds to the target over the runs that reached it; "not reached" when none did
    (or no target is set: "-"); "(k/n runs)" when only some did."""
    if math.isnan(row["target_mrr"]):
        return "-"
    reached = group["time_to_target_s"].notna().sum() if "time_to_target_s" in group else 0
    if reached == 0:
        return "not reached"
    text = format_cell(row["time_to_target_s"], row["time_to_target_s_ci95"], 1)
    return text if reached == len(group) else f"{text} ({reached}/{len(group)} runs)"


def baseline_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The reference rows: for each setting (dataset) and method, the baseline's validation and
    test MRR ± standard error on the sources the trials evaluated, from their result files."""
    from trainer.data.baselines import LABELS

    rows, seen = [], set()
    ok = df[df["status"] == "succeeded"] if "status" in df else df
    for _, trial in ok.iterrows():
        found = trial.get("baselines")
        if not isinstance(found, dict) or not found:
            continue
        dataset = trial.get("dataset") or ""
        for method, figures in found.items():
            key = (dataset, method, figures.get("val_sources"), figures.get("test_sources"))
            if key in seen:
                continue
            seen.add(key)
            rows.append({"dataset": dataset, "method": method,
                         "label": LABELS.get(method, method), **figures})
    return pd.DataFrame(rows)


def _notes(df: pd.DataFrame) -> list[str]:
    notes = []
    datasets = set(df["dataset"].dropna()) if "dataset" in df else set()
    if "tiny" in datasets:
        notes.append(
            "`tiny` (2,000 papers) is for tests: its 1,000 negatives per source are half of all "
            "papers, so its MRRs are not on ogbl-citation2's scale."
        )
    targets = sorted({float(t) for t in df.get("target_mrr", pd.Series(dtype=float)).dropna()})
    if targets:
        notes.append("Target validation MRR (time to target): "
                     + ", ".join(f"{t:g}" for t in targets) + ".")
    return notes


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
                format_cell(row.get(key), row.get(f"{key}_ci95", math.nan), decimals, pm)
                for _, key, decimals in columns
            ]
        )
    return headers, rows


def to_markdown(table: pd.DataFrame) -> str:
    """table.md: a GitHub-flavoured Markdown table, then the baseline rows and notes."""
    headers, rows = display_rows(table)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    baselines = pd.DataFrame(table.attrs.get("baselines") or [])
    if not baselines.empty:
        lines += ["", baselines_markdown(baselines).rstrip("\n")]
    notes = table.attrs.get("notes") or []
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def baselines_markdown(baselines: pd.DataFrame) -> str:
    """The reference rows as a Markdown table (same sources and negatives as the trials)."""
    several = baselines["dataset"].nunique() > 1
    lines = [
        "Reference rows: parameter-free methods on the same validation/test sources and "
        "negatives (MRR ± standard error over sources; no training):",
        "",
        "| Method | Val MRR | Test MRR | Sources (val/test) |" + (" Dataset |" if several else ""),
        "|---|---|---|---|" + ("---|" if several else ""),
    ]
    for _, row in baselines.iterrows():
        cells = [
            str(row["label"]),
            format_cell(row["val_mrr"], row["val_mrr_se"], 4),
            format_cell(row["test_mrr"], row["test_mrr_se"], 4),
            f"{int(row['val_sources']):,}/{int(row['test_sources']):,}",
        ]
        if several:
            cells.append(str(row["dataset"]))
        lines.append("| " + " | ".join(cells) + " |")
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
    baselines = pd.DataFrame(table.attrs.get("baselines") or [])
    if not baselines.empty:
        paths["baselines"] = out / "baselines.csv"
        atomic_write_text(paths["baselines"], baselines.to_csv(index=False))
    return paths
