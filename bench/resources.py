"""Per-worker CPU and memory sampling with psutil.

This is the local counterpart of the Kubernetes ``metrics.k8s.io`` PodMetrics: every interval
each worker's process tree (its root process and all descendants) is measured, giving the CPU
cores in use and the resident memory.

Notes on the numbers:

* ``cpu_cores`` is the CPU time (user + system) the live processes of the tree used since the
  previous tick, divided by the wall time elapsed. CPU used by a process that exits between two
  ticks is not seen. A worker's first sample has no previous tick to compare with, so its
  ``cpu_cores`` is NaN; ``summary`` leaves such samples out of the CPU statistics.
* ``rss_mib`` sums the RSS of the processes of the tree, so pages shared between them (e.g. by
  forked data-loader workers) are counted once per process.
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
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import psutil

from bench.store import atomic_write_text

logger = logging.getLogger(__name__)

_MIB = 2**20
_PROCESS_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)

# A process is identified by its pid and creation time, so that a reused pid is not mistaken
# for the process that had it before.
_ProcessKey = tuple[int, float]


@dataclass
class ResourceSample:
    """One measurement of one worker.

    ``t`` is in seconds since the sampler started, ``cpu_cores`` is 1.0 for one fully busy core
    (NaN for the worker's first sample) and ``rss_mib`` is in MiB (2**20 bytes).
    """

    t: float
    worker: str
    cpu_cores: float
    rss_mib: float


@dataclass
class _ProcessReading:
    key: _ProcessKey
    create_time: float
    cpu_seconds: float
    rss_bytes: int


def _read_process(process: psutil.Process) -> _ProcessReading | None:
    """CPU time, RSS and identity of one process, or None if it vanished or is unreadable."""
    try:
        with process.oneshot():
            create_time = process.create_time()
            times = process.cpu_times()
            rss = process.memory_info().rss
    except _PROCESS_GONE:
        return None
    return _ProcessReading(
        key=(process.pid, create_time),
        create_time=create_time,
        cpu_seconds=times.user + times.system,
        rss_bytes=rss,
    )


def _read_tree(root_pid: int) -> list[_ProcessReading]:
    """Readings for the process ``root_pid`` and all its descendants (empty if it is gone)."""
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except _PROCESS_GONE:
        return []
    readings = [_read_process(process) for process in processes]
    return [reading for reading in readings if reading is not None]


class ResourceSampler:
    """Samples CPU and memory of a set of workers in a background thread.

    ``discover`` returns the current mapping of worker name to root pid; it is called on every
    tick because workers can be restarted with new pids. Use as a context manager, or call
    ``start()`` and ``stop()``.
    """

    def __init__(self, discover: Callable[[], dict[str, int]], interval_s: float = 1.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._discover = discover
        self._interval_s = interval_s
        self._samples: list[ResourceSample] = []
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_monotonic = 0.0
        # State of the previous tick: its time and the CPU seconds of every process seen.
        self._prev_tick_monotonic: float | None = None
        self._prev_tick_wall = 0.0
        self._prev_cpu: dict[_ProcessKey, float] = {}
        self._workers_seen: set[str] = set()

    @property
    def samples(self) -> list[ResourceSample]:
        """A copy of the samples taken so far, in time order."""
        with self._lock:
            return list(self._samples)

    def start(self) -> None:
        """Take a first sample and keep sampling every ``interval_s`` in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("ResourceSampler is already running")
        self._start_monotonic = time.monotonic()
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name="ResourceSampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampling thread, wait for it, and take one last sample."""
        if self._thread is None:
            return
        self._stop_event.set()
        self._thread.join()
        self._thread = None
        self._sample_once()

    def __enter__(self) -> ResourceSampler:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while True:
            self._sample_once()
            next_tick += self._interval_s
            if self._stop_event.wait(max(0.0, next_tick - time.monotonic())):
                return

    def _sample_once(self) -> None:
        """Measure every worker once and append one sample per live worker."""
        try:
            workers = self._discover()
        except Exception:
            logger.warning("worker discovery failed; skipping this tick", exc_info=True)
            return
        now_monotonic = time.monotonic()
        now_wall = time.time()
        elapsed = (
            now_monotonic - self._prev_tick_monotonic
            if self._prev_tick_monotonic is not None
            else 0.0
        )
        new_cpu: dict[_ProcessKey, float] = {}
        new_samples: list[ResourceSample] = []
        for worker, root_pid in workers.items():
            readings = _read_tree(root_pid)
            if not readings:
                continue
            cpu_seconds = sum(self._cpu_since_previous_tick(reading) for reading in readings)
            for reading in readings:
                new_cpu[reading.key] = reading.cpu_seconds
            if worker in self._workers_seen and elapsed > 0:
                cpu_cores = cpu_seconds / elapsed
            else:
                cpu_cores = math.nan
            self._workers_seen.add(worker)
            rss_mib = sum(reading.rss_bytes for reading in readings) / _MIB
            new_samples.append(
                ResourceSample(
                    t=now_monotonic - self._start_monotonic,
                    worker=worker,
                    cpu_cores=cpu_cores,
                    rss_mib=rss_mib,
                )
            )
        self._prev_tick_monotonic = now_monotonic
        self._prev_tick_wall = now_wall
        self._prev_cpu = new_cpu
        with self._lock:
            self._samples.extend(new_samples)

    def _cpu_since_previous_tick(self, reading: _ProcessReading) -> float:
        """CPU seconds a process used since the previous tick, as far as it can be known."""
        previous = self._prev_cpu.get(reading.key)
        if previous is not None:
            return max(0.0, reading.cpu_seconds - previous)
        if self._prev_tick_monotonic is not None and reading.create_time >= self._prev_tick_wall:
            return reading.cpu_seconds  # started after the previous tick: all its CPU is new
        return 0.0  # existed before but was not measured: no baseline to compare with

    def summary(self) -> dict[str, dict[str, float]]:
        """Per-worker statistics: cpu_mean, cpu_peak, mem_mean_mib, mem_peak_mib, n_samples.

        ``n_samples`` counts all samples of the worker; the CPU statistics use only samples with
        a CPU value (not the first one) and are NaN when there is none.
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


def _environ(process: psutil.Process) -> dict[str, str] | None:
    try:
        return process.environ()
    except _PROCESS_GONE:
        return None


def torchrun_workers(agent_pid: int) -> dict[str, int]:
    """Find the worker processes started by a torchrun (torch.distributed.run) elastic agent.

    A worker's top process is a descendant of the agent whose environment has ``RANK`` and
    ``LOCAL_RANK``, and whose parent is the agent itself or a process without ``RANK`` (so the
    worker's own children, which inherit its environment, are not counted again; the agent's
    own environment is not looked at, since e.g. a Kubeflow pod sets RANK for it too).
    Returns ``{"rank0": pid, "rank1": pid, ...}`` ordered by rank, or {} if the agent is gone.
    """
    try:
        descendants = psutil.Process(agent_pid).children(recursive=True)
    except _PROCESS_GONE:
        return {}
    environments = {process.pid: _environ(process) for process in descendants}
    workers: dict[int, int] = {}
    for process in descendants:
        env = environments[process.pid]
        if env is None or "RANK" not in env or "LOCAL_RANK" not in env:
            continue
        try:
            parent_pid = process.ppid()
        except _PROCESS_GONE:
            continue
        parent_env = environments.get(parent_pid)
        if parent_pid != agent_pid and (parent_env is None or "RANK" in parent_env):
            continue
        try:
            rank = int(env["RANK"])
        except ValueError:
            continue
        workers.setdefault(rank, process.pid)
    return {f"rank{rank}": pid for rank, pid in sorted(workers.items())}
