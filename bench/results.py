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

import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.store import read_json

SCHEMA_VERSION = 1
CURVE_TAGS = ("train/loss", "val/mrr", "val/accuracy", "val/hits@10", "time/epoch_s", "train/edges_per_s")


def env_info() -> dict[str, Any]:
    """Versions and hardware stored beside every number.

    Versions come from the installed packages' metadata: importing torch, PyG and ogb only to
    read ``__version__`` cost the harness seconds of CPU and ~350 MB (benchmarks/harness_overhead).
    """
    return {
        "python": platform.python_version(),
        **{key: _version(dist) for key, dist in (("torch", "torch"),
                                                 ("torch_geometric", "torch-geometric"),
                                                 ("ogb", "ogb"), ("hydra", "hydra-core"))},
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def load_results(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every readable ``result.json`` of a sweep, sorted by workers, epochs, seed."""
    rows = [r for p in sorted(Path(sweep_dir).glob("*/result.json")) if (r := read_json(p))]
    return sorted(rows, key=lambda r: (r.get("epochs", 0), r.get("workers", 0), r.get("seed", 0)))


def write_table(sweep_dir: str | os.PathLike) -> str:
    """Write ``table.md``, ``table.csv`` and ``table.tex`` (Table 1: repeats averaged with 95%
    intervals, speedup and efficiency, failed trials as rows; see ``bench.report.table``) and
    return the Markdown. Raises ``FileNotFoundError`` when the sweep has no trial."""
    from bench.report import load_sweep, summarize, to_markdown, write_tables

    table = summarize(load_sweep(sweep_dir))
    write_tables(table, sweep_dir)
    return to_markdown(table)
