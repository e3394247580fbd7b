"""Benchmark 4: memory of 1, 2 and 4 local workers, with the dataset shared through mmap.

    python -m benchmarks.memory [--datasets medium,full] [--workers 1,2,4] [--seconds 20]

Each configuration is a real ``torchrun --standalone -m trainer`` job (threads: the machine's
cores split between the workers, at least one each). Once rank 0 has logged its first training
step, the worker processes (each rank's top process and its descendants; not the torchrun
agent) are measured every ``--interval`` seconds for ``--seconds`` seconds of training, then the
job is stopped (before its evaluation, whose full-graph activations are not what this measures).

* PSS (proportional set size, ``memory_full_info().pss``) splits every shared page between the
  processes that map it, so the sum over the workers counts the memory-mapped dataset (and the
  shared libraries) once: it is the machine's real cost of the job.
* RSS counts shared pages once per process, so its sum over-counts what is shared.
* USS (pages private to one process) shows what each worker adds.
* ``dataset_pss``/``dataset_rss``: the same, restricted to the mappings of the dataset's cache
  files (from ``/proc/<pid>/smaps``): a PSS sum that stays put while the RSS sum grows with the
  workers shows that the dataset is mapped once, not copied per worker.

Target: peak PSS sum of 4 workers <= 1.3 x that of 1 worker. The ``full`` dataset (ogbl-citation2
size) is measured only when its cache already exists; preparing it takes ~11 min and ~9 GB.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import line, ratio, save
from benchmarks.scaling import RunConf, launch, step_points, stop, trainer_overrides

_MIB = 2**20
_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)
FIELDS = ("pss", "rss", "uss", "dataset_pss", "dataset_rss")


# ---------------------------------------------------------------- pure helpers (tested)
def sum_memory(readings: Iterable[dict[str, int]]) -> dict[str, int]:
    """Field-wise sums (pss, rss, uss) of per-process readings."""
    total = dict.fromkeys(FIELDS, 0)
    for reading in readings:
        for key in FIELDS:
            total[key] += int(reading.get(key, 0))
    return total


def mapped_file_memory(smaps: str, prefix: str) -> tuple[int, int]:
    """(PSS, RSS) in bytes of the mappings in ``/proc/<pid>/smaps`` text whose file path
    starts with ``prefix`` (here: the dataset's cache folder)."""
    pss = rss = 0
    inside = False
    for row in smaps.splitlines():
        first = row.split(None, 1)[0] if row.strip() else ""
        if first and not first.endswith(":"):  # a mapping's header: "start-end perms ... path"
            parts = row.split(None, 5)
            inside = len(parts) == 6 and parts[5].startswith(prefix)
        elif inside and first == "Pss:":
            pss += int(row.split()[1]) * 1024
        elif inside and first == "Rss:":
            rss += int(row.split()[1]) * 1024
    return pss, rss


def peak_and_mean(samples: list[dict[str, int]]) -> dict[str, float]:
    """``<field>_peak_mib`` and ``<field>_mean_mib`` over summed samples."""
    out: dict[str, float] = {}
    for key in FIELDS:
        values = [s.get(key, 0) for s in samples]
        out[f"{key}_peak_mib"] = max(values) / _MIB if values else float("nan")
        out[f"{key}_mean_mib"] = sum(values) / len(values) / _MIB if values else float("nan")
    return out


# ---------------------------------------------------------------- measuring
def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except _GONE:
        return []


def read_memory(process: psutil.Process, dataset_dir: str | None = None) -> dict[str, int] | None:
    """PSS, RSS and USS of one process, and (with ``dataset_dir``) those of its mappings of
    the dataset's files."""
    try:
        info = process.memory_full_info()
    except _GONE:
        return None
    out = {"pss": info.pss, "rss": info.rss, "uss": info.uss}
    if dataset_dir is not None:
        try:
            smaps = Path(f"/proc/{process.pid}/smaps").read_text()
        except OSError:
            smaps = ""
        out["dataset_pss"], out["dataset_rss"] = mapped_file_memory(smaps, dataset_dir)
    return out


def measure_workers(agent_pid: int, workers: int, dataset_dir: str | None = None,
                    ) -> tuple[dict[str, int], list[dict[str, int]]] | None:
    """Summed and per-worker memory of the job's workers, or None unless all of them run."""
    from bench.backends.local.processes import torchrun_workers

    found = torchrun_workers(agent_pid)
    if len(found) < workers:
        return None
    per_worker = []
    for pid in found.values():
        readings = [r for r in (read_memory(p, dataset_dir) for p in process_tree(pid))
                    if r is not None]
        if not readings:
            return None
        per_worker.append(sum_memory(readings))
    return sum_memory(per_worker), per_worker


def measure(dataset: str, workers: int, seconds: float, interval: float, work: Path,
            dataset_dir: str | None = None, timeout_s: float = 600.0) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    run = RunConf(f"{dataset}-{workers}w", workers, max(1, cores // workers), 512)
    run_dir = work / run.name
    run_dir.mkdir(parents=True)
    overrides = trainer_overrides(dataset, run, 1_000_000, run_dir)
    started = time.monotonic()
    process = launch(run.workers, run.threads, overrides, run_dir / "log.txt")
    samples: list[dict[str, int]] = []
    per_worker_peak: list[dict[str, int]] = []
    training_since: float | None = None
    try:
        while process.poll() is None and time.monotonic() - started < timeout_s:
            time.sleep(interval)
            now = time.monotonic()
            if training_since is None:
                if step_points(run_dir):  # rank 0's first step events are on disk
                    training_since = now
                continue
            if now - training_since > seconds:
                break
            reading = measure_workers(process.pid, workers, dataset_dir)
            if reading is None:
                continue
            total, per_worker = reading
            samples.append(total)
            if not per_worker_peak or total["pss"] >= sum(w["pss"] for w in per_worker_peak):
                per_worker_peak = per_worker
    finally:
        code = process.poll()
        stop(process)
    out: dict[str, Any] = {"workers": workers, "threads": run.threads, "samples": len(samples),
                           **peak_and_mean(samples),
                           "per_worker_at_peak_mib": [{k: v / _MIB for k, v in w.items()}
                                                      for w in per_worker_peak]}
    if not samples:
        tail = (run_dir / "log.txt").read_text(errors="replace").splitlines()[-15:]
        out["error"] = f"no samples (exit code {code})"
        out["log_tail"] = tail
        print(f"  {run.name}: no samples (exit {code}); log tail:\n    " + "\n    ".join(tail),
              flush=True)
    return out


def cache_exists(dataset: str) -> tuple[bool, Path]:
    from trainer.config import compose
    from trainer.data.dataset import dataset_root

    cfg = compose([f"dataset={dataset}"])
    root = dataset_root(cfg.dataset, cfg.data_root)
    return (root / "cache" / "meta.json").exists(), root


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="medium,full")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=20.0, help="training seconds sampled")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    args = parser.parse_args(argv)
    worker_counts = [int(w) for w in args.workers.split(",")]

    figures: dict[str, Any] = {"seconds": args.seconds, "interval_s": args.interval}
    with tempfile.TemporaryDirectory(prefix="gnn-bench-memory-") as tmp:
        for dataset in args.datasets.split(","):
            exists, root = cache_exists(dataset)
            if not exists and dataset == "full":
                message = (f"skipped: no cache at {root}; generate it with "
                           "`python -m trainer.data prepare dataset=full` (~11 min, ~9 GB disk)")
                print(f"{dataset}: {message}", flush=True)
                figures[dataset] = {"skipped": message}
                continue
            if not exists:
                from benchmarks.common import load_graph

                load_graph(dataset)
            cache_mib = sum(f.stat().st_size for f in (root / "cache").glob("*.npy")) / _MIB
            print(f"{dataset}: cache {cache_mib:,.0f} MiB at {root}", flush=True)
            results: dict[str, Any] = {"cache_mib": cache_mib, "by_workers": {}}
            for n in worker_counts:
                r = measure(dataset, n, args.seconds, args.interval, Path(tmp) / dataset,
                            str(root / "cache"))
                results["by_workers"][str(n)] = r
                line(f"{dataset} {n}w: PSS sum peak / mean", f"{r['pss_peak_mib']:,.0f} / "
                     f"{r['pss_mean_mib']:,.0f}", "MiB")
                line(f"{dataset} {n}w: RSS sum peak / USS sum peak",
                     f"{r['rss_peak_mib']:,.0f} / {r['uss_peak_mib']:,.0f}", "MiB")
                line(f"{dataset} {n}w: dataset mappings PSS / RSS sum peak",
                     f"{r['dataset_pss_peak_mib']:,.0f} / {r['dataset_rss_peak_mib']:,.0f}",
                     "MiB")
            base = results["by_workers"].get("1")
            for n in worker_counts:
                if n == 1 or base is None:
                    continue
                r = results["by_workers"][str(n)]
                target = 1.3 if n == 4 else None
                results[f"pss_{n}w_over_1w"] = ratio(f"{dataset} PSS {n}w / 1w", r["pss_peak_mib"],
                                                     base["pss_peak_mib"], target, False)
                results[f"rss_{n}w_over_1w"] = ratio(f"{dataset} RSS {n}w / 1w", r["rss_peak_mib"],
                                                     base["rss_peak_mib"])
            figures[dataset] = results
    save("memory", figures)
    return figures


if __name__ == "__main__":
    main()
