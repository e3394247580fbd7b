"""Benchmark 8: what one local worker costs this machine, for the local backend's admission.

    python -m benchmarks.footprint [--datasets tiny,small,medium] [--workers 2]

For each dataset a real ``torchrun -m trainer`` job (one thread per worker, one short epoch,
then the trial's default evaluation: validation and the full test split) is sampled every
``--interval`` seconds from start to exit. Per worker (its process tree): the peak USS (pages
private to it: interpreter, torch, PyG, gloo, the model, sampling and evaluation buffers); for
the job: the peak PSS sum, whose excess over the USS sum is what the workers share (shared
libraries and the memory-mapped dataset, counted once).

The admission check (``bench/backends/local/admission.py``) estimates a trial's memory as
``workers x (base_mib + scale_mib x cache_mib ** exponent) + shared_mib + cache_mib``: a worker's
own memory grows with the graph (sampled subgraphs, the evaluation's full-graph embeddings), less
than in proportion to the cache. This benchmark fits those constants to what it measured, as an
upper envelope (see :func:`fit`), adding ``dataset=full`` from benchmark 5's saved figures when
they exist, and writes them to ``bench/backends/local/footprint.json``, which the harness reads.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, RESULTS, line, provenance, save
from benchmarks.memory import cache_exists, measure_workers
from benchmarks.scaling import launch, stop

FOOTPRINT = REPO / "bench" / "backends" / "local" / "footprint.json"
_MIB = 2**20


def fit(points: list[dict[str, float]]) -> dict[str, float]:
    """The admission's constants, bounding every point from above.

    * ``base_mib``: a worker with (almost) no data: the largest USS of the points whose cache is
      within 10x of the smallest;
    * the growth beyond it, ``scale_mib x cache_mib ** exponent``: the exponent through the two
      largest caches (1 with only one), the scale the largest growth at that exponent;
    * ``shared_mib``: the largest shared part.
    """
    smallest = min(p["cache_mib"] for p in points)
    small = [p for p in points if p["cache_mib"] <= 10 * smallest]
    base = max(p["worker_uss_peak_mib"] for p in small)
    growth = sorted((p["cache_mib"], p["worker_uss_peak_mib"] - base) for p in points
                    if p["cache_mib"] > 10 * smallest and p["worker_uss_peak_mib"] > base)
    exponent = 1.0
    if len(growth) >= 2:
        (c1, g1), (c2, g2) = growth[-2], growth[-1]
        exponent = round(math.log(g2 / g1) / math.log(c2 / c1), 3)
    scale = max([0.0] + [g / c**exponent for c, g in growth])
    return {"base_mib": math.ceil(base * 10) / 10, "scale_mib": math.ceil(scale * 1000) / 1000,
            "exponent": exponent,
            "shared_mib": math.ceil(max(p["shared_peak_mib"] for p in points) * 10) / 10}


def worker_estimate(constants: dict[str, float], cache_mib: float) -> float:
    return constants["base_mib"] + constants["scale_mib"] * cache_mib ** constants["exponent"]


def scale_full_point(path: Path = RESULTS / "scale_full.json") -> dict[str, float] | None:
    """``dataset=full`` (ogbl-citation2's size) from benchmark 5's saved run, when there is one:
    its peak PSS sum of 2 workers less the shared part and the cache, per worker. (Its cache
    takes ~25 minutes and 13 GiB to generate; this benchmark does not do that.)"""
    try:
        figures = json.loads(path.read_text())["figures"]
        arrays = figures["dataset"]["arrays"]
        sizes = {"x": 4}  # float32 features, int64 everything else
        cache = sum(math.prod(shape) * sizes.get(name, 8) for name, shape in arrays.items())
        pss_sum = figures["memory"]["peak_pss_sum_gib"] * 1024
        workers = int(figures["workers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    cache_mib = cache / _MIB
    return {"cache_mib": cache_mib, "pss_sum_peak_mib": pss_sum, "shared_peak_mib": 0.0,
            "worker_uss_peak_mib": (pss_sum - cache_mib) / workers,
            "from": "benchmarks/results/scale_full.json"}


def measure(dataset: str, workers: int, interval: float, work: Path,
            cache_dir: str, timeout_s: float = 900.0) -> dict[str, Any]:
    run_dir = work / dataset
    run_dir.mkdir(parents=True)
    overrides = [f"dataset={dataset}", "epochs=1", "train.steps_per_epoch=20",
                 "train.threads=1", f"run_dir={run_dir}"]
    process = launch(workers, 1, overrides, run_dir / "log.txt")
    worker_peak = pss_peak = uss_sum_at_pss_peak = dataset_pss_at_peak = 0.0
    samples = 0
    started = time.monotonic()
    try:
        while process.poll() is None and time.monotonic() - started < timeout_s:
            reading = measure_workers(process.pid, workers, cache_dir)
            if reading is not None:
                total, per_worker = reading
                samples += 1
                worker_peak = max(worker_peak, *(w["uss"] / _MIB for w in per_worker))
                if total["pss"] / _MIB > pss_peak:
                    pss_peak = total["pss"] / _MIB
                    uss_sum_at_pss_peak = total["uss"] / _MIB
                    dataset_pss_at_peak = total["dataset_pss"] / _MIB
            time.sleep(interval)
        code = process.poll()
    finally:
        stop(process)
    if code != 0:
        tail = (run_dir / "log.txt").read_text(errors="replace").splitlines()[-10:]
        raise SystemExit(f"error: the {dataset} job exited with {code}:\n" + "\n".join(tail))
    return {"samples": samples, "worker_uss_peak_mib": worker_peak, "pss_sum_peak_mib": pss_peak,
            # shared libraries and the like: what the PSS sum holds beyond the private pages
            # and the dataset's own mappings (which the estimate counts as cache_mib)
            "shared_peak_mib": max(0.0, pss_peak - uss_sum_at_pss_peak - dataset_pss_at_peak),
            "dataset_pss_at_peak_mib": dataset_pss_at_peak}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="tiny,small,medium")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    args = parser.parse_args(argv)
    points: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gnn-bench-footprint-") as tmp:
        for dataset in args.datasets.split(","):
            exists, root = cache_exists(dataset)
            if not exists:
                from benchmarks.common import load_graph

                load_graph(dataset)
            cache_mib = sum(f.stat().st_size for f in (root / "cache").iterdir()) / _MIB
            point = {"cache_mib": cache_mib,
                     **measure(dataset, args.workers, args.interval, Path(tmp),
                               str(root / "cache"))}
            points[dataset] = point
            line(f"{dataset}: cache", cache_mib, "MiB")
            line(f"{dataset}: worker USS peak", point["worker_uss_peak_mib"], "MiB")
            line(f"{dataset}: {args.workers} workers PSS sum peak", point["pss_sum_peak_mib"],
                 "MiB")
            line(f"{dataset}: shared (libraries)", point["shared_peak_mib"], "MiB")
    full = scale_full_point()
    if full is not None and "full" not in points:
        points["full"] = full
        line("full (benchmark 5): cache", full["cache_mib"], "MiB")
        line("full (benchmark 5): per worker", full["worker_uss_peak_mib"], "MiB")
    constants = fit(list(points.values()))
    for key, value in constants.items():
        line(key, value)
    for name, p in points.items():
        workers = 2 if name == "full" else args.workers
        estimate = (workers * worker_estimate(constants, p["cache_mib"])
                    + constants["shared_mib"] + p["cache_mib"])
        p["estimate_over_measured"] = estimate / p["pss_sum_peak_mib"]
        line(f"{name}: estimate / measured PSS sum", p["estimate_over_measured"], "x")
    figures = {"workers": args.workers, "points": points, "constants": constants}
    save("footprint", figures)
    FOOTPRINT.write_text(json.dumps({
        **constants,
        "measured": {k: round(v["worker_uss_peak_mib"], 1) for k, v in points.items()},
        "by": "python -m benchmarks.footprint", "commit": provenance()["commit"],
        "date": time.strftime("%Y-%m-%d"),
    }, indent=2) + "\n")
    print(f"wrote {FOOTPRINT.relative_to(REPO)}", flush=True)
    return figures


if __name__ == "__main__":
    main()
