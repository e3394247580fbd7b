"""Tests for the local backend's psutil readings (bench/backends/local/processes.py), with real
processes and with injected readings: CPU, memory of process trees, torchrun layout."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.backends.local.processes import ProcessReading, ProcessTrees, torchrun_workers
from bench.backends.local.processes import process_sampler as ResourceSampler

# Allocates ~200 MiB (filled, so the pages are resident), then keeps one core busy for 3 s.
_BUSY_SCRIPT = """
import time
data = b"x" * (200 * 2**20)
print("ready", flush=True)
end = time.monotonic() + 3.0
while time.monotonic() < end:
    pass
"""

# A parent that only waits, with a child that holds 100 MiB and sleeps.
_TREE_CHILD = """
import time
data = b"x" * (100 * 2**20)
print("ready", flush=True)
time.sleep(60)
"""
_TREE_PARENT = f"""
import subprocess, sys
subprocess.Popen([sys.executable, "-c", {_TREE_CHILD!r}]).wait()
"""

# A parent that, shortly after it starts, spawns a child that keeps one core busy.
_LATE_CHILD_PARENT = """
import subprocess, sys, time
time.sleep(0.1)
subprocess.Popen([sys.executable, "-c", "while True: pass"]).wait()
"""

# Like a torchrun agent: a parent without RANK starts two workers with RANK/LOCAL_RANK set,
# and each worker starts a grandchild (think data-loader worker) that inherits its environment.
_GRANDCHILD = "import time; time.sleep(60)"
_WORKER = f"""
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {_GRANDCHILD!r}])
# One write of under PIPE_BUF bytes is atomic, so the two workers' lines never interleave
# on the shared pipe (print() makes one write per piece when PYTHONUNBUFFERED is set).
os.write(1, f"worker {{os.environ['RANK']}} {{os.getpid()}}\\n".encode())
time.sleep(60)
"""
_AGENT = f"""
import os, subprocess, sys
workers = [
    subprocess.Popen([sys.executable, "-c", {_WORKER!r}],
                     env={{**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank)}})
    for rank in (0, 1)
]
for worker in workers:
    worker.wait()
"""


def _start(script: str) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "LOCAL_RANK")}
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )


def _kill_tree(process: subprocess.Popen[str]) -> None:
    """Kill ``process`` and all its descendants, and reap it."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.kill()
    process.wait(timeout=10)
    psutil.wait_procs(descendants, timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def test_busy_process_uses_one_core_and_its_memory(tmp_path: Path) -> None:
    process = _start(_BUSY_SCRIPT)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        sampler = ResourceSampler(lambda: {"w0": process.pid}, interval_s=0.25)
        with sampler:
            time.sleep(2.0)  # the child stays busy for 3 s, longer than this
        samples = sampler.samples
    finally:
        _kill_tree(process)

    # How much CPU the child got depends on how busy the machine is (the arithmetic is tested
    # with injected readings below); here: real processes, real readings, consistent figures.
    assert {s.worker for s in samples} == {"w0"}
    assert len(samples) >= 2  # the first tick and the one taken by stop(), at least
    assert [s.t for s in samples] == sorted(s.t for s in samples)
    assert math.isnan(samples[0].cpu_cores)  # the first sample has no interval yet
    # (a tick too soon after the previous one, e.g. stop()'s, has no rate either)
    cpu = [s.cpu_cores for s in samples[1:] if not math.isnan(s.cpu_cores)]
    cpu_mean = sum(cpu) / len(cpu)
    assert 0 < cpu_mean <= 1.3  # busy, and never more than one core
    peak_rss = max(s.rss_mib for s in samples)
    assert 190 <= peak_rss <= 320

    summary = sampler.summary()
    assert list(summary) == ["w0"]
    assert summary["w0"]["n_samples"] == len(samples)
    assert math.isclose(summary["w0"]["cpu_mean"], cpu_mean)
    assert summary["w0"]["cpu_peak"] == max(cpu)
    assert summary["w0"]["mem_peak_mib"] == peak_rss
    assert 190 <= summary["w0"]["mem_mean_mib"] <= peak_rss

    csv_path = tmp_path / "out" / "resources.csv"
    sampler.write_csv(csv_path)
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["t", "worker", "cpu_cores", "rss_mib"]
    assert len(rows) == len(samples)
    assert rows[0]["cpu_cores"] == "nan"
    assert float(rows[-1]["rss_mib"]) == samples[-1].rss_mib


def test_process_tree_is_summed_as_one_worker() -> None:
    process = _start(_TREE_PARENT)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"  # printed by the child
        parent_rss_mib = psutil.Process(process.pid).memory_info().rss / 2**20
        sampler = ResourceSampler(lambda: {"tree": process.pid}, interval_s=0.25)
        with sampler:
            time.sleep(1.0)
        summary = sampler.summary()["tree"]
    finally:
        _kill_tree(process)

    assert parent_rss_mib < 50  # so the memory below can only come from the child
    assert summary["mem_peak_mib"] >= 100 + parent_rss_mib * 0.5
    assert summary["n_samples"] >= 2
    assert summary["cpu_mean"] < 0.3  # both only sleep


class FakeMachine:
    """Injected clock and process readings: ``ticks[i]`` is the tree of every worker at tick i
    as (pid, create_time, cpu_seconds, rss_mib) tuples."""

    def __init__(self, ticks: list[dict[str, list[tuple[int, float, float, float]]]],
                 times: list[float]):
        self.ticks, self.times, self.i = ticks, times, -1

    def clock(self) -> tuple[float, float]:
        self.i += 1
        return self.times[self.i], 1000.0 + self.times[self.i]  # monotonic, wall

    def read_tree(self, root: int) -> list[ProcessReading]:
        tree = self.ticks[self.i][f"w{root}"]  # read() takes the clock first
        return [ProcessReading((pid, created), created, cpu, int(rss * 2**20))
                for pid, created, cpu, rss in tree]


CPU_CASES = [
    # name, the worker's tree at each tick, tick times, expected cpu_cores per tick
    ("one busy process: one core", [[(1, 999.0, 5.0, 10)], [(1, 999.0, 6.0, 10)],
                                    [(1, 999.0, 6.5, 10)]], [0.0, 1.0, 2.0], [None, 1.0, 0.5]),
    ("a child created after the previous tick: all its CPU counts",
     [[(1, 999.0, 0.0, 10)], [(1, 999.0, 0.0, 10), (2, 1000.1, 0.85, 5)]], [0.0, 1.0],
     [None, 0.85]),
    ("a child that existed unmeasured: no baseline, nothing counted",
     [[(1, 999.0, 0.0, 10)], [(1, 999.0, 0.0, 10), (2, 999.5, 3.0, 5)]], [0.0, 1.0],
     [None, 0.0]),
    ("a reused pid is another process", [[(1, 999.0, 4.0, 10)], [(1, 1000.5, 0.25, 10)]],
     [0.0, 0.5], [None, 0.5]),
    # (the stop tick right after a regular one: one CPU clock tick in 2 ms would read 5 cores)
    ("a tick too soon after the previous one has no rate, the next one counts from it",
     [[(1, 999.0, 5.0, 10)], [(1, 999.0, 6.0, 10)], [(1, 999.0, 6.01, 10)],
      [(1, 999.0, 6.51, 10)]], [0.0, 1.0, 1.002, 1.502], [None, 1.0, None, 1.0]),
]


@pytest.mark.parametrize(("name", "trees", "times", "expected"), CPU_CASES,
                         ids=[c[0] for c in CPU_CASES])
def test_cpu_cores_are_cpu_seconds_since_the_previous_tick(name, trees, times, expected):
    machine = FakeMachine([{"w1": tree} for tree in trees], times)
    source = ProcessTrees(lambda: {"rank0": 1}, machine.read_tree, machine.clock)
    cores = [source.read(t)[0].cpu_cores for t in times]
    assert [None if math.isnan(c) else pytest.approx(c) for c in cores] == expected


def test_a_tree_is_one_worker_and_its_memory_the_sum():
    machine = FakeMachine([{"w1": [(1, 999.0, 1.0, 30), (2, 999.0, 1.0, 100)],
                            "w2": [(3, 999.0, 0.0, 50)]}], [0.0])
    source = ProcessTrees(lambda: {"rank0": 1, "rank1": 2}, machine.read_tree, machine.clock)
    samples = source.read(0.0)
    assert [(s.worker, s.rss_mib) for s in samples] == [("rank0", 130.0), ("rank1", 50.0)]


def test_vanished_and_failing_workers_are_skipped() -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    sampler = ResourceSampler(lambda: {"gone": finished.pid}, interval_s=0.05)
    with sampler:
        time.sleep(0.15)
    assert sampler.samples == []
    assert sampler.summary() == {}

    def broken_discover() -> dict[str, int]:
        raise RuntimeError("cluster unreachable")

    sampler = ResourceSampler(broken_discover, interval_s=0.05)
    with sampler:
        time.sleep(0.15)
    assert sampler.samples == []


def test_torchrun_workers_finds_top_process_of_each_rank() -> None:
    agent = _start(_AGENT)
    try:
        assert agent.stdout is not None
        worker_pids: dict[str, int] = {}
        for _ in range(2):
            tag, rank, pid = agent.stdout.readline().split()
            assert tag == "worker"
            worker_pids[f"rank{rank}"] = int(pid)
        assert len(psutil.Process(agent.pid).children(recursive=True)) == 4
        found = torchrun_workers(agent.pid)
    finally:
        _kill_tree(agent)

    assert found == {"rank0": worker_pids["rank0"], "rank1": worker_pids["rank1"]}
    assert list(found) == ["rank0", "rank1"]
    assert torchrun_workers(agent.pid) == {}  # the agent is gone
