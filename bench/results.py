"""Result files: what one trial's ``result.json`` holds, loading a sweep, and Table 1.

Schema of ``results/<sweep>/<trial>/result.json`` (documented in the README too):
status, reason, trial_id, config_key, sweep_name, backend, workers, epochs, seed, dataset,
model, threads_per_worker, cores, oversubscribed, time_total_s, time_startup_s,
epoch_times_s, val_mrr, val_accuracy, val_hits@10, test_mrr, test_accuracy, train_loss,
edges_per_s, cpu_cores {worker: {mean, peak}}, memory_mib {worker: {mean, peak}},
cpu_cores_mean, memory_mib_mean (per worker, averaged over workers), restarts, curves
{tag: [[step, value], ...]}, event_problems, log_tail, submitted_at, finished_at, config
(the resolved config), env (versions, host, cores), schema_version.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import socket
from pathlib import Path
from typing import Any

from bench.store import atomic_write_text, read_json

SCHEMA_VERSION = 1
CURVE_TAGS = ("train/loss", "val/mrr", "val/accuracy", "val/hits@10", "time/epoch_s", "train/edges_per_s")
TABLE_COLUMNS = (
    ("No. of workers", "workers"),
    ("Epochs", "epochs"),
    ("Seed", "seed"),
    ("Time taken (s)", "time_total_s"),
    ("Accuracy", "val_accuracy"),
    ("Val MRR", "val_mrr"),
    ("Test MRR", "test_mrr"),
    ("Startup (s)", "time_startup_s"),
    ("CPU cores/worker", "cpu_cores_mean"),
    ("Memory/worker (MiB)", "memory_mib_mean"),
    ("Status", "status"),
)


def env_info() -> dict[str, Any]:
    """Versions and hardware stored beside every number."""
    import hydra
    import ogb
    import torch
    import torch_geometric

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "ogb": ogb.__version__,
        "hydra": hydra.__version__,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def load_results(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every readable ``result.json`` of a sweep, sorted by workers, epochs, seed."""
    rows = [r for p in sorted(Path(sweep_dir).glob("*/result.json")) if (r := read_json(p))]
    return sorted(rows, key=lambda r: (r.get("epochs", 0), r.get("workers", 0), r.get("seed", 0)))


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if key.startswith(("time", "memory")) else f"{value:.4f}" if "mrr" in key or "accuracy" in key else f"{value:.2f}"
    return str(value)


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        row = [_fmt(r.get(key), key) for _, key in TABLE_COLUMNS]
        if r.get("status") != "succeeded":
            row[-1] = f"{r.get('status')}: {r.get('reason') or '?'}"
        elif r.get("oversubscribed"):
            row[-1] = "succeeded (oversubscribed)"
        rows.append(row)
    return rows


def write_table(sweep_dir: str | os.PathLike) -> str:
    """Write ``table.md`` and ``table.csv`` (Table 1 of the study, plus MRR) and return the md."""
    sweep_dir = Path(sweep_dir)
    results = load_results(sweep_dir)
    if not results:
        raise FileNotFoundError(f"no result.json under {sweep_dir}: run a sweep into it first")
    headers = [h for h, _ in TABLE_COLUMNS]
    rows = table_rows(results)
    md = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(md) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([key for _, key in TABLE_COLUMNS] + ["reason", "trial_id"])
    for r in results:
        writer.writerow([r.get(key) for _, key in TABLE_COLUMNS] + [r.get("reason"), r.get("trial_id")])
    atomic_write_text(sweep_dir / "table.md", text)
    atomic_write_text(sweep_dir / "table.csv", buf.getvalue())
    return text
