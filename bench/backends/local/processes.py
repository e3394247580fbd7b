"""Per-worker CPU and memory with psutil, and the worker processes of a torchrun agent.

The local counterpart of the Kubernetes ``metrics.k8s.io`` PodMetrics: at every tick of the
shared :class:`~bench.sampling.Sampler` each worker's process tree (its root process and all
descendants) is measured, giving the CPU cores in use and the resident memory.

Notes on the numbers:

* ``cpu_cores`` is the CPU time (user + system) the live processes of the tree used since the
  previous tick, divided by the wall time elapsed. CPU used by a process that exits between two
  ticks is not seen. A worker's first sample has no previous tick to compare with, so its
  ``cpu_cores`` is NaN; ``summary`` leaves such samples out of the CPU statistics. So is that
  of a tick less than :data:`MIN_RATE_INTERVAL_S` after the previous one (the sampler's last
  tick, taken when it stops, can follow a regular one by a millisecond): Linux counts a
  process's CPU in ticks of its clock (``SC_CLK_TCK``, 100 Hz: proc(5), ``/proc/<pid>/stat``),
  so over 1 ms one tick more or less reads as 10 cores.
* ``rss_mib`` sums the RSS of the processes of the tree, so pages shared between them (e.g. by
  forked data-loader workers) are counted once per process.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from bench.sampling import ResourceSample, Sampler

_MIB = 2**20
# Ten ticks of the kernel's CPU clock: over such an interval, CPU time read to one tick is a
# rate within about 10%.
MIN_RATE_INTERVAL_S = 10 / os.sysconf("SC_CLK_TCK")
_PROCESS_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)

# A process is identified by its pid and creation time, so that a reused pid is not mistaken
# for the process that had it before.
_ProcessKey = tuple[int, float]


@dataclass
class ProcessReading:
    """One process at one tick: identity, creation time (unix s), CPU seconds used, RSS."""

    key: _ProcessKey
    create_time: float
    cpu_seconds: float
    rss_bytes: int


def _read_process(process: psutil.Process) -> ProcessReading | None:
    """CPU time, RSS and identity of one process, or None if it vanished or is unreadable."""
    try:
        with process.oneshot():
            create_time = process.create_time()
            times = process.cpu_times()
            rss = process.memory_info().rss
    except _PROCESS_GONE:
        return None
    return ProcessReading(
        key=(process.pid, create_time),
        create_time=create_time,
        cpu_seconds=times.user + times.system,
        rss_bytes=rss,
    )


def _read_tree(root_pid: int) -> list[ProcessReading]:
    """Readings for the process ``root_pid`` and all its descendants (empty if it is gone)."""
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except _PROCESS_GONE:
        return []
    readings = [_read_process(process) for process in processes]
    return [reading for reading in readings if reading is not None]


class ProcessTrees:
    """The :class:`~bench.sampling.SampleSource` of local workers.

    ``discover`` returns the current mapping of worker name to root pid; it is called at every
    tick because workers can be restarted with new pids. ``read_tree`` (the readings of a root
    pid's tree) and ``clock`` (monotonic and wall seconds) are this machine's unless a test
    passes its own.
    """

    min_interval_s = 0.0

    def __init__(self, discover: Callable[[], dict[str, int]],
                 read_tree: Callable[[int], list[ProcessReading]] | None = None,
                 clock: Callable[[], tuple[float, float]] | None = None) -> None:
        self._discover = discover
        self._read_tree = read_tree or _read_tree
        self._clock = clock or (lambda: (time.monotonic(), time.time()))
        # State of the previous tick: its time and the CPU seconds of every process seen.
        self._prev_tick_monotonic: float | None = None
        self._prev_tick_wall = 0.0
        self._prev_cpu: dict[_ProcessKey, float] = {}
        self._workers_seen: set[str] = set()

    def read(self, t: float) -> list[ResourceSample]:
        """Measure every worker once: one sample per live worker."""
        workers = self._discover()
        now_monotonic, now_wall = self._clock()
        elapsed = (
            now_monotonic - self._prev_tick_monotonic
            if self._prev_tick_monotonic is not None
            else 0.0
        )
        new_cpu: dict[_ProcessKey, float] = {}
        samples: list[ResourceSample] = []
        for worker, root_pid in workers.items():
            readings = self._read_tree(root_pid)
            if not readings:
                continue
            cpu_seconds = sum(self._cpu_since_previous_tick(reading) for reading in readings)
            for reading in readings:
                new_cpu[reading.key] = reading.cpu_seconds
            if worker in self._workers_seen and elapsed >= MIN_RATE_INTERVAL_S:
                cpu_cores = cpu_seconds / elapsed
            else:
                cpu_cores = math.nan
            self._workers_seen.add(worker)
            rss_mib = sum(reading.rss_bytes for reading in readings) / _MIB
            samples.append(ResourceSample(t=t, worker=worker, cpu_cores=cpu_cores, rss_mib=rss_mib))
        self._prev_tick_monotonic = now_monotonic
        self._prev_tick_wall = now_wall
        self._prev_cpu = new_cpu
        return samples

    def _cpu_since_previous_tick(self, reading: ProcessReading) -> float:
        """CPU seconds a process used since the previous tick, as far as it can be known."""
        previous = self._prev_cpu.get(reading.key)
        if previous is not None:
            return max(0.0, reading.cpu_seconds - previous)
        if self._prev_tick_monotonic is not None and reading.create_time >= self._prev_tick_wall:
            return reading.cpu_seconds  # started after the previous tick: all its CPU is new
        return 0.0  # existed before but was not measured: no baseline to compare with


def process_sampler(discover: Callable[[], dict[str, int]], interval_s: float = 1.0) -> Sampler:
    """A sampler of the process trees of ``discover()``'s workers."""
    return Sampler(ProcessTrees(discover), interval_s)


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


def processes_with_argument(argument: str) -> list[psutil.Process]:
    """The processes of this machine (but this one) with ``argument`` on their command line,
    e.g. ``run_dir=<path>``: a trial's torchrun agent and its workers."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.pid != os.getpid() and argument in (process.info["cmdline"] or ()):
                found.append(process)
        except _PROCESS_GONE:
            continue
    return found


def stop_processes(processes: list[psutil.Process], grace_s: float) -> int:
    """Wait up to ``grace_s`` for ``processes`` to exit, then kill those left; returns how many
    there were. psutil checks each one's identity, so a reused pid is never signalled."""
    if not processes:
        return 0
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except _PROCESS_GONE:
            pass
    psutil.wait_procs(alive, timeout=10)
    return len(processes)
