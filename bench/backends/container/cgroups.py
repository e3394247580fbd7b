"""CPU and memory of each worker's container, from its cgroup: the :class:`SampleSource` of
the container backend.

The engine puts every container in a cgroup of its own and sets its ``--cpus`` and
``--memory`` there; the kernel's counters for that cgroup are what this reads, as cAdvisor (and
so metrics-server, for the Kubernetes backend) reads a pod's:

* CPU: cumulative CPU time (cgroup v1 ``cpuacct.usage``, ns; v2 ``cpu.stat`` ``usage_usec``),
  differenced between ticks and divided by the wall time: 1.0 is one busy core. A container's
  first reading has nothing to compare with (NaN), as a local worker's first psutil reading.
* memory: the working set, usage minus inactive page cache (v1 ``memory.usage_in_bytes`` minus
  ``memory.stat`` ``total_inactive_file``; v2 ``memory.current`` minus ``inactive_file``),
  the number the kubelet evicts on and ``kubectl top`` shows; the memory-mapped dataset's pages
  count while they are in use.
* OOM kills: v1 ``memory.oom_control`` / v2 ``memory.events`` ``oom_kill``. The cgroup goes
  with the container, so this is the last count seen while it ran (a kill between two ticks
  can be missed).

The cgroup is found from the container's first process (``/proc/<pid>/cgroup``), which works
for either cgroup driver (cgroupfs, systemd) and on v1, v2 and hybrid layouts, and is used only
when its path names the container's id. ``proc`` and
``root`` are this machine's unless a test passes a tree of its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.sampling import ResourceSample

_MIB = 2**20


@dataclass(frozen=True)
class CgroupReading:
    cpu_ns: int
    working_set_bytes: int
    oom_kills: int


def _int(path: Path) -> int:
    return int(path.read_text().split()[0])


def _keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (``memory.stat``, ``cpu.stat``, ``memory.events``)."""
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


class CgroupReader:
    """Reads the cgroup counters of a process's cgroup."""

    def __init__(self, proc: Path = Path("/proc"), root: Path = Path("/sys/fs/cgroup")):
        self.proc, self.root = proc, root

    def paths(self, pid: int) -> dict[str, str]:
        """controller -> cgroup path of ``pid`` ("" for the unified hierarchy)."""
        out: dict[str, str] = {}
        for line in (self.proc / str(pid) / "cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                out[controller] = path.lstrip("/")
        return out

    def read(self, pid: int, container_id: str) -> CgroupReading | None:
        """The counters of ``pid``'s cgroup; None if the process or its cgroup is gone, or if
        that cgroup is not the container's (its path names the container's id, with either
        engine and cgroup driver). The check matters: a process that is exiting shows the
        root cgroup, whose counters are the whole machine's."""
        try:
            paths = self.paths(pid)
            if "memory" in paths and "cpuacct" in paths:
                used = [paths["memory"], paths["cpuacct"]]
                reading = self._v1
            elif "" in paths and (self.root / "cgroup.controllers").exists():
                used = [paths[""]]
                reading = self._v2
            else:
                return None
            # Every path read must be the container's own: while a killed process exits, the
            # kernel moves it controller by controller to the root cgroup (seen here: memory
            # and cpuacct at "/" while name=systemd still named the container).
            if not container_id or not all(container_id in path for path in used):
                return None
            return reading(paths)
        except (OSError, ValueError, IndexError):
            return None

    def _v1_dir(self, controller: str, path: str) -> Path:
        for mount in (controller, "cpu,cpuacct", "cpuacct,cpu"):
            if (self.root / mount / path).is_dir():
                return self.root / mount / path
        raise FileNotFoundError(controller)

    def _v1(self, paths: dict[str, str]) -> CgroupReading:
        cpu = self._v1_dir("cpuacct", paths["cpuacct"])
        memory = self._v1_dir("memory", paths["memory"])
        stat = _keyed(memory / "memory.stat")
        usage = _int(memory / "memory.usage_in_bytes")
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        oom = _keyed(memory / "memory.oom_control").get("oom_kill", 0)
        return CgroupReading(_int(cpu / "cpuacct.usage"), max(0, usage - inactive), oom)

    def _v2(self, paths: dict[str, str]) -> CgroupReading:
        group = self.root / paths[""]
        stat = _keyed(group / "memory.stat")
        usage = _int(group / "memory.current")
        events = _keyed(group / "memory.events") if (group / "memory.events").exists() else {}
        cpu = _keyed(group / "cpu.stat")["usage_usec"] * 1000
        return CgroupReading(cpu, max(0, usage - stat.get("inactive_file", 0)),
                             events.get("oom_kill", 0))


class ContainerCgroups:
    """The sampler's source: ``discover()`` maps each worker to (container id, pid) of its
    running container (it is called at every tick: containers restart with new processes)."""

    min_interval_s = 0.0

    def __init__(self, discover: Callable[[], dict[str, tuple[str, int]]],
                 reader: CgroupReader | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._discover, self._reader, self._clock = discover, reader or CgroupReader(), clock
        self._previous: dict[str, tuple[tuple[str, int], int, float]] = {}  # worker -> (who, ns, t)
        self.oom_kills: dict[str, int] = {}  # container id -> the last count seen

    def read(self, t: float) -> list[ResourceSample]:
        samples = []
        for worker, (cid, pid) in self._discover().items():
            reading = self._reader.read(pid, cid)
            now = self._clock()
            if reading is None:
                continue
            who = (cid, pid)  # a restarted container is a new process with new counters
            before = self._previous.get(worker)
            cpu = math.nan
            if before is not None and before[0] == who and now > before[2] and reading.cpu_ns >= before[1]:
                cpu = (reading.cpu_ns - before[1]) / 1e9 / (now - before[2])
            self._previous[worker] = (who, reading.cpu_ns, now)
            if reading.oom_kills:
                self.oom_kills[cid] = reading.oom_kills
            samples.append(ResourceSample(t=t, worker=worker, cpu_cores=cpu,
                                          rss_mib=reading.working_set_bytes / _MIB))
        return samples
