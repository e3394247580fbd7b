"""The pure helpers of benchmarks/scaling.py, memory.py and harness_overhead.py (fast)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest

from benchmarks.harness_overhead import overhead_figures
from benchmarks.memory import peak_and_mean, process_tree, read_memory, sum_memory
from benchmarks.scaling import RunConf, efficiency, steady_throughput, trainer_overrides


def test_steady_throughput_leaves_out_warmup_and_counts_steps_between_events() -> None:
    # Steps 0-1 are slow (warm-up); from step 2 on each step takes 0.5 s.
    points = [(0, 100.0), (1, 105.0), (2, 106.0), (3, 106.5), (4, 107.0), (5, 107.5)]
    # Steps 3, 4 and 5 ran between the events of steps 2 and 5: 3 x 1024 edges in 1.5 s.
    assert steady_throughput(points, 1024, warmup=2) == pytest.approx(3 * 1024 / 1.5)
    assert steady_throughput(list(reversed(points)), 1024, warmup=2) == pytest.approx(2048)


def test_steady_throughput_needs_two_points() -> None:
    assert steady_throughput([(0, 1.0), (1, 2.0), (5, 3.0)], 512, warmup=5) is None
    assert steady_throughput([], 512) is None


def test_efficiency_is_throughput_per_core_relative_to_the_baseline() -> None:
    # Same cores (2 workers x 1 thread vs 1 worker x 2 threads): efficiency is the speedup.
    assert efficiency(180.0, 2, 200.0, 2) == pytest.approx(0.9)
    # Textbook strong scaling: thr_N / (N * thr_1).
    assert efficiency(180.0, 2, 100.0, 1) == pytest.approx(0.9)


def test_run_conf_and_overrides() -> None:
    run = RunConf("x", workers=2, threads=1, batch=512)
    assert (run.cores, run.global_batch) == (2, 1024)
    overrides = trainer_overrides("medium", run, 20, "/tmp/r")  # type: ignore[arg-type]
    # 20 steps for each of the 2 workers: the epoch cap counts one worker's steps in all.
    assert "train.batch_size=512" in overrides and "train.steps_per_epoch=40" in overrides
    assert "train.threads=1" in overrides and "run_dir=/tmp/r" in overrides


def test_sum_memory_and_peak() -> None:
    total = sum_memory([{"pss": 10, "rss": 20, "uss": 5}, {"pss": 1, "rss": 2, "uss": 1}])
    assert total == {"pss": 11, "rss": 22, "uss": 6, "dataset_pss": 0, "dataset_rss": 0}
    mib = 2**20
    stats = peak_and_mean([{"pss": mib, "rss": 3 * mib, "uss": 0},
                           {"pss": 3 * mib, "rss": 3 * mib, "uss": 0}])
    assert stats["pss_peak_mib"] == 3 and stats["pss_mean_mib"] == 2 and stats["rss_peak_mib"] == 3
    assert math.isnan(peak_and_mean([])["pss_peak_mib"])


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup") and not os.path.exists(
    "/proc/self/smaps"), reason="PSS needs Linux /proc")
def test_pss_of_a_process_tree_counts_the_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(os.getpid())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        readings = [read_memory(p) for p in process_tree(os.getpid())]
        total = sum_memory(r for r in readings if r is not None)
        assert 0 < total["pss"] <= total["rss"]
    finally:
        child.kill()
        child.wait()


def test_overhead_figures() -> None:
    counters = {"cpu_user_s": 1.5, "cpu_system_s": 0.5, "follow_cpu_s": 0.4,
                "follow_wall_s": 80.0, "sampler_cpu_s": 0.2, "sampler_ticks": 80,
                "poll_cpu_s": 0.1, "polls": 160}
    f = overhead_figures(100.0, counters, [40.0, 45.0])
    assert f["harness_cpu_fraction"] == pytest.approx(0.02)
    assert f["follow_cpu_fraction"] == pytest.approx(0.005)
    assert f["sampler_core_fraction"] == pytest.approx(0.0025)
    assert f["sampler_ms_per_tick"] == pytest.approx(2.5)
    assert f["wall_beyond_trials_s"] == pytest.approx(15.0)
    assert f["outside_follow_cpu_s"] == pytest.approx(1.6)


def test_mapped_file_memory_sums_only_the_dataset_mappings() -> None:
    from benchmarks.memory import mapped_file_memory

    smaps = """\
7f0000000000-7f0000100000 r--s 00000000 08:01 123  /data/medium/cache/x.npy
Size:               1024 kB
Rss:                 800 kB
Pss:                 400 kB
Private_Clean:         0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                 300 kB
Pss:                 300 kB
7f0000400000-7f0000500000 r--s 00000000 08:01 124  /data/medium/cache/indices.npy
Rss:                 100 kB
Pss:                  50 kB
"""
    assert mapped_file_memory(smaps, "/data/medium/cache") == (450 * 1024, 900 * 1024)
    assert mapped_file_memory(smaps, "/elsewhere") == (0, 0)
