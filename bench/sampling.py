"""CPU and memory per worker over time: the sampler loop every backend's readings go through.

A backend supplies a :class:`SampleSource` (locally: psutil over each worker's process tree,
``bench/backends/local/processes.py``; on Kubernetes: PodMetrics from ``metrics.k8s.io``,
``bench/backends/k8s/metrics.py``); :class:`Sampler` calls it every interval in a background
thread and keeps the series, so ``summary()``, ``resources.csv`` and ``result.json`` have the
same shape on every backend:

* ``cpu_cores``: 1.0 for one fully busy core (NaN where a source has no value yet, e.g. a
  worker's first psutil reading); ``summary`` leaves NaN samples out of the CPU statistics;
* ``rss_mib``: resident memory in MiB (2**20 bytes); on Kubernetes the container's working set.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import statistics
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from rundir import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class ResourceSample:
    """One measurement of one worker; ``t`` in seconds since the sampler started."""

    t: float
    worker: str
    cpu_cores: float
    rss_mib: float


class SampleSource(Protocol):
    """One backend's readings: what :class:`Sampler` asks for at every tick."""

    # The source's own floor on the sampling period (e.g. metrics-server's window); 0: none.
    min_interval_s: float

    def read(self, t: float) -> list[ResourceSample]:
        """One reading per live worker, stamped ``t``; may raise (the tick is then skipped)."""


class Sampler:
    """Samples a source every ``interval_s`` (or its ``min_interval_s``) in a daemon thread.

    Use as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(self, source: SampleSource, interval_s: float = 1.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.source = source
        self.interval_s = interval_s
        self._samples: list[ResourceSample] = []
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_monotonic = time.monotonic()

    @property
    def samples(self) -> list[ResourceSample]:
        """A copy of the samples taken so far, in time order."""
        with self._lock:
            return list(self._samples)

    def start(self) -> None:
        """Take a first sample and keep sampling in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("Sampler is already running")
        self._start_monotonic = time.monotonic()
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name="Sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampling thread, wait for it, and take one last sample."""
        if self._thread is None:
            return
        self._stop_event.set()
        self._thread.join()
        self._thread = None
        self.sample_once()

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while True:
            self.sample_once()
            next_tick += max(self.interval_s, self.source.min_interval_s)
            if self._stop_event.wait(max(0.0, next_tick - time.monotonic())):
                return

    def sample_once(self) -> None:
        """Read the source once and keep its samples (a failing read skips the tick)."""
        try:
            samples = self.source.read(time.monotonic() - self._start_monotonic)
        except Exception:
            logger.warning("resource reading failed; skipping this tick", exc_info=True)
            return
        with self._lock:
            self._samples.extend(samples)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per-worker statistics: cpu_mean, cpu_peak, mem_mean_mib, mem_peak_mib, n_samples.

        ``n_samples`` counts all samples of the worker; the CPU statistics use only samples with
        a CPU value and are NaN when there is none.
        """
        by_worker: dict[str, list[ResourceSample]] = {}
        for sample in self.samples:
            by_worker.setdefault(sample.worker, []).append(sample)
        result: dict[str, dict[str, float]] = {}
        for worker, samples in by_worker.items():
            cpu = [s.cpu_cores for s in samples if not math.isnan(s.cpu_cores)]
            rss = [s.rss_mib for s in samples]
            result[worker] = {
                "cpu_mean": statistics.fmean(cpu) if cpu else math.nan,
                "cpu_peak": max(cpu) if cpu else math.nan,
                "mem_mean_mib": statistics.fmean(rss),
                "mem_peak_mib": max(rss),
                "n_samples": len(samples),
            }
        return result

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the samples as CSV with columns t,worker,cpu_cores,rss_mib (NaN as "nan")."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["t", "worker", "cpu_cores", "rss_mib"])
        for sample in self.samples:
            writer.writerow([sample.t, sample.worker, sample.cpu_cores, sample.rss_mib])
        atomic_write_text(path, buffer.getvalue())
