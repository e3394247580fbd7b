"""Benchmark 6: what the harness itself costs while it runs a local sweep.

    python -m benchmarks.harness_overhead [--dataset tiny] [--workers 1,2] [--epochs 2]
                                          [--sample-interval 1.0] [--poll-interval 0.5]

Runs ``python -m bench.sweep dataset=tiny workers=1,2 epochs=2 -m results_dir=<tmp>`` in a child
process that wraps the sweep (``--inner``): before the sweep starts it instruments, in that
process only, the sampler's tick (``Sampler.sample_once``), the backend's
``LocalHandle.poll`` and the wait loop, with ``time.thread_time`` (CPU of the calling thread)
and ``resource.getrusage(RUSAGE_SELF)`` (CPU of the whole harness process, all its threads, not
its torchrun children), and writes the totals when the process exits.

Figures:

* ``harness_cpu_fraction``: the harness process's CPU seconds (start-up imports, preflight,
  following the trials, reading their events, writing the report) over the sweep's wall time.
  Target <= 0.02.
* ``follow_cpu_fraction``: the harness's CPU while it follows running trials (the wait loops,
  the sampler thread included) over those loops' wall time: the part that grows with trial
  length, i.e. the overhead of a long sweep at these intervals.
* ``sampler_core_fraction``: the sampler thread's CPU over the time it was sampling, as a
  fraction of one core. Target < 0.01.
* ``wall_beyond_trials_s``: sweep wall time minus the sum of the trials' ``time_total_s``
  (submission to finish): start-up, between-trial work and the final report;
  ``wall_beyond_trials_fraction`` the same over the sweep's wall time. Target < 0.05 on a
  4-trial tiny sweep (``--workers 1,2 --epochs 2,3``).
"""

from __future__ import annotations

import argparse
import atexit
import json
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, line, ratio, save


# ---------------------------------------------------------------- inside the sweep process
def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_children() -> float:
    """CPU of the children reaped so far: the report process (bench/report_process.py), its import
    made while the sweep started, and its forked renderers."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _instrument(out_path: Path) -> None:
    """Wrap the sampler tick, poll and wait with CPU counters; dump them at exit."""
    import bench.trial
    from bench.backends.local.handle import LocalHandle
    from bench.callbacks import ReportCallback
    from bench.sampling import Sampler

    counters: dict[str, float] = {"sampler_cpu_s": 0.0, "sampler_ticks": 0, "poll_cpu_s": 0.0,
                                  "polls": 0, "follow_cpu_s": 0.0, "follow_wall_s": 0.0,
                                  "trials_followed": 0, "startup_cpu_s": 0.0,
                                  "report_cpu_s": 0.0, "report_wall_s": 0.0}
    sample_once, poll, wait = Sampler.sample_once, LocalHandle.poll, bench.trial.wait
    report = ReportCallback.on_multirun_end

    def timed_sample_once(self: Sampler) -> None:
        start = time.thread_time()
        try:
            sample_once(self)
        finally:
            counters["sampler_cpu_s"] += time.thread_time() - start
            counters["sampler_ticks"] += 1

    def timed_poll(self: LocalHandle):
        start = time.thread_time()
        try:
            return poll(self)
        finally:
            counters["poll_cpu_s"] += time.thread_time() - start
            counters["polls"] += 1

    def timed_wait(*args: Any, **kwargs: Any):
        cpu, wall = _cpu_self(), time.monotonic()
        if not counters["trials_followed"]:
            counters["startup_cpu_s"] = cpu  # imports, preflight, the first trial's setup
        try:
            return wait(*args, **kwargs)
        finally:
            counters["follow_cpu_s"] += _cpu_self() - cpu
            counters["follow_wall_s"] += time.monotonic() - wall
            counters["trials_followed"] += 1

    def timed_report(*args: Any, **kwargs: Any):
        cpu, children, wall = _cpu_self(), _cpu_children(), time.monotonic()
        try:
            return report(*args, **kwargs)
        finally:
            counters["report_cpu_s"] += _cpu_self() - cpu
            counters["report_renderers_cpu_s"] = _cpu_children() - children
            counters["report_wall_s"] += time.monotonic() - wall

    Sampler.sample_once = timed_sample_once  # type: ignore[method-assign]
    LocalHandle.poll = timed_poll  # type: ignore[method-assign]
    bench.trial.wait = timed_wait
    ReportCallback.on_multirun_end = timed_report  # type: ignore[method-assign]

    def dump() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out_path.write_text(json.dumps({**counters, "cpu_user_s": usage.ru_utime,
                                        "cpu_system_s": usage.ru_stime,
                                        "max_rss_kib": usage.ru_maxrss}))

    atexit.register(dump)


def inner(out_path: str, sweep_args: list[str]) -> None:
    # The counters go in once the sweep has forked its report process (bench/report_process.py):
    # the modules they wrap are imported then, not before the fork, which would delay it and so
    # the first trial (that waits for the report process's import).
    from bench import report_process

    start = report_process.ReportProcess.start

    def start_then_instrument() -> report_process.ReportProcess | None:
        started = start()
        _instrument(Path(out_path))
        return started

    report_process.ReportProcess.start = start_then_instrument  # type: ignore[method-assign]
    sys.argv = ["bench.sweep", *sweep_args]
    runpy.run_module("bench.sweep", run_name="__main__", alter_sys=True)


# ---------------------------------------------------------------- pure helpers (tested)
def overhead_figures(wall_s: float, counters: dict[str, float],
                     trial_times_s: list[float]) -> dict[str, float]:
    """The fractions reported, from the sweep's wall time, the counters and the trials' times."""
    cpu = counters["cpu_user_s"] + counters["cpu_system_s"]
    follow_wall = counters["follow_wall_s"] or float("nan")
    return {
        "sweep_wall_s": wall_s,
        "harness_cpu_s": cpu,
        "harness_cpu_fraction": cpu / wall_s,
        "follow_cpu_s": counters["follow_cpu_s"],
        "follow_wall_s": counters["follow_wall_s"],
        "follow_cpu_fraction": counters["follow_cpu_s"] / follow_wall,
        "outside_follow_cpu_s": cpu - counters["follow_cpu_s"],
        "startup_cpu_s": counters.get("startup_cpu_s", float("nan")),
        "report_cpu_s": counters.get("report_cpu_s", float("nan")),
        "report_renderers_cpu_s": counters.get("report_renderers_cpu_s", 0.0),
        "report_wall_s": counters.get("report_wall_s", float("nan")),
        "between_trials_cpu_s": cpu - counters["follow_cpu_s"]
        - counters.get("startup_cpu_s", 0.0) - counters.get("report_cpu_s", 0.0),
        "sampler_cpu_s": counters["sampler_cpu_s"],
        "sampler_ticks": counters["sampler_ticks"],
        "sampler_ms_per_tick": 1000 * counters["sampler_cpu_s"] / max(1, counters["sampler_ticks"]),
        "sampler_core_fraction": counters["sampler_cpu_s"] / follow_wall,
        "poll_cpu_s": counters["poll_cpu_s"],
        "polls": counters["polls"],
        "poll_ms_per_call": 1000 * counters["poll_cpu_s"] / max(1, counters["polls"]),
        "trials_time_total_s": sum(trial_times_s),
        "wall_beyond_trials_s": wall_s - sum(trial_times_s),
        "wall_beyond_trials_fraction": (wall_s - sum(trial_times_s)) / wall_s,
    }


# ---------------------------------------------------------------- the benchmark
def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--inner"]:
        inner(argv[1], argv[2:])
        return {}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="tiny")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--epochs", default="2")
    parser.add_argument("--sample-interval", type=float, default=1.0)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args(argv)

    from benchmarks.common import load_graph

    load_graph(args.dataset)  # prepared here, not inside the measured sweep
    with tempfile.TemporaryDirectory(prefix="gnn-bench-overhead-") as tmp:
        counters_path = Path(tmp) / "counters.json"
        sweep_args = [f"dataset={args.dataset}", f"workers={args.workers}",
                      f"epochs={args.epochs}", f"results_dir={tmp}/results",
                      "sweep_name=overhead", "progress=false",
                      f"backend.sample_interval_s={args.sample_interval}",
                      f"backend.poll_interval_s={args.poll_interval}", "-m"]
        command = [sys.executable, "-m", "benchmarks.harness_overhead", "--inner",
                   str(counters_path), *sweep_args]
        print("sweep: python -m bench.sweep " + " ".join(sweep_args), flush=True)
        started = time.monotonic()
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.monotonic() - started
        if proc.returncode != 0 or not counters_path.exists():
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            raise SystemExit(f"the sweep failed (exit {proc.returncode})")
        counters = json.loads(counters_path.read_text())
        results = [json.loads(p.read_text())
                   for p in sorted(Path(tmp, "results", "overhead").glob("*/result.json"))]
    statuses = [r["status"] for r in results]
    figures = overhead_figures(wall, counters, [r["time_total_s"] or 0.0 for r in results])
    figures.update({"trials": len(results), "statuses": statuses,
                    "sample_interval_s": args.sample_interval,
                    "poll_interval_s": args.poll_interval})
    line("trials (statuses)", f"{len(results)} ({', '.join(statuses)})")
    line("sweep wall time", figures["sweep_wall_s"], "s")
    line("sum of trials' time_total_s", figures["trials_time_total_s"], "s")
    line("wall beyond the trials", figures["wall_beyond_trials_s"], "s")
    line("harness CPU (RUSAGE_SELF, no children)", figures["harness_cpu_s"], "s")
    line("  of which while following trials", figures["follow_cpu_s"], "s")
    line("  of which outside (imports, report, ...)", figures["outside_follow_cpu_s"], "s")
    line("    start-up (imports, preflight, 1st setup)", figures["startup_cpu_s"], "s")
    line("    between trials (collect, next setup)", figures["between_trials_cpu_s"], "s")
    line("    report (table, plots, fits)", f"{figures['report_cpu_s']:.2f} s CPU "
         f"(+{figures['report_renderers_cpu_s']:.2f} s in the report process and its "
         f"renderers, import included), {figures['report_wall_s']:.2f} s wall")
    line("sampler CPU / ticks", f"{figures['sampler_cpu_s']:.3f} s / "
         f"{figures['sampler_ticks']} ({figures['sampler_ms_per_tick']:.2f} ms each)")
    line("poll CPU / calls", f"{figures['poll_cpu_s']:.3f} s / {figures['polls']} "
         f"({figures['poll_ms_per_call']:.2f} ms each)")
    figures["outside_trials_target"] = ratio("sweep wall outside the trials / sweep wall",
                                             figures["wall_beyond_trials_fraction"], 1.0, 0.05,
                                             higher_is_better=False)
    figures["harness_cpu_target"] = ratio("harness CPU / sweep wall", figures["harness_cpu_fraction"],
                                          1.0, 0.02, higher_is_better=False)
    figures["follow_cpu_target"] = ratio("harness CPU / wall while following trials",
                                         figures["follow_cpu_fraction"], 1.0, 0.02,
                                         higher_is_better=False)
    figures["sampler_target"] = ratio("sampler CPU / sampling time (cores)",
                                      figures["sampler_core_fraction"], 1.0, 0.01,
                                      higher_is_better=False)
    save("harness_overhead", figures)
    return figures


if __name__ == "__main__":
    main()
