"""Benchmark 3: strong and weak scaling of training throughput on one machine.

    python -m benchmarks.scaling [--steps 20] [--dataset medium] [--warmup 2]

(another ``--dataset`` saves ``benchmarks/results/scaling-<dataset>.json``, e.g. a quick
``--dataset tiny --steps 8`` check of the script itself.)

Every configuration is a real ``torchrun --standalone -m trainer`` job (gloo when there are two
workers) on ``dataset=medium``, one epoch of ``--steps`` optimiser steps with step events on
every step (``train.log_every=1``). Throughput is measured from rank 0's step events: the
global positive edges of the steps after the first ``--warmup`` ones, divided by the wall time
between their events, so start-up (imports, data mapping, rendezvous), the first steps and the
evaluation are all excluded. The trainer's own per-epoch ``train/edges_per_s`` (which includes
the first steps but not start-up) is reported beside it.

Definitions (all throughputs are *global* positive edges per second):

* Efficiency is throughput per core relative to the baseline's throughput per core,
  ``E = (thr_N / cores_N) / (thr_1 / cores_1)``. With equal cores it is the speedup; with the
  baseline on one core and N workers on N cores it is the textbook ``thr_N / (N * thr_1)``.
* Strong scaling: the same problem, i.e. the same global batch (1024 edges) and the same number
  of optimiser steps. Two workers take 512 edges each per step (DDP averages their gradients,
  which is the gradient of the 1024-edge batch), one worker takes 1024.
  - ``strong_machine`` (the target): 1 worker x 2 threads vs 2 workers x 1 thread, the threads
    summing to the machine's 2 cores in both, so E is the speedup of processes over threads.
  - ``strong_per_core`` (textbook): 1 worker x 1 thread (1 core) vs 2 workers x 1 thread.
* Weak scaling: 512 edges per worker per step, so the global problem grows with the workers:
  1 worker x 1 thread at batch 512 vs 2 workers x 1 thread at 512 each (E = thr_2 / (2 thr_1)),
  and, for the fixed machine, 1 worker x 2 threads at batch 512.

The machine is shared with others while this runs; the lead reruns it on a quiet machine.
Runs with 2 threads per worker are very sensitive to other load: libgomp's idle threads spin
(OMP_WAIT_POLICY unset), and with a busy machine one thread waits for a descheduled other at
every parallel region (seen: 1 worker x 2 threads 3.5x slower on medium, 9x on tiny, than with
``--omp-wait-policy PASSIVE`` at load average ~8). Both the policy and the load average at the
end are saved with the figures.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, line, ratio, save


@dataclass(frozen=True)
class RunConf:
    name: str
    workers: int
    threads: int
    batch: int  # per worker

    @property
    def cores(self) -> int:
        return self.workers * self.threads

    @property
    def global_batch(self) -> int:
        return self.workers * self.batch


RUNS = (
    RunConf("1w x 2t, batch 1024", 1, 2, 1024),
    RunConf("2w x 1t, batch 512 each", 2, 1, 512),
    RunConf("1w x 1t, batch 1024", 1, 1, 1024),
    RunConf("1w x 1t, batch 512", 1, 1, 512),
    RunConf("1w x 2t, batch 512", 1, 2, 512),
)


# ---------------------------------------------------------------- pure helpers (tested)
def steady_throughput(points: list[tuple[int, float]], global_batch: int,
                      warmup: int = 3) -> float | None:
    """Edges/s from (step, wall_time) points of step events, leaving out the first ``warmup``.

    The event of step s is written when step s has finished, so between the events of steps a
    and b exactly b - a steps ran. None when fewer than two points remain.
    """
    kept = sorted(p for p in points if p[0] >= warmup)
    if len(kept) < 2 or kept[-1][1] <= kept[0][1]:
        return None
    (s0, t0), (s1, t1) = kept[0], kept[-1]
    return (s1 - s0) * global_batch / (t1 - t0)


def efficiency(thr_n: float, cores_n: int, thr_1: float, cores_1: int) -> float:
    """Throughput per core of the N-worker run relative to the baseline's."""
    return (thr_n / cores_n) / (thr_1 / cores_1)


# ---------------------------------------------------------------- running the trainer
def torchrun_command(workers: int, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={workers}", "--max-restarts=0", "--monitor-interval=0.5",
            "-m", "trainer", *overrides]


def launch(workers: int, threads: int, overrides: list[str], log_path: Path) -> subprocess.Popen:
    """A torchrun job in its own session (so that ``stop`` reaches every worker)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "ab")  # noqa: SIM115 (closed with the process by the caller's exit)
    return subprocess.Popen(torchrun_command(workers, overrides), cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the job's process group, SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def step_points(run_dir: Path) -> list[tuple[int, float]]:
    """(step, wall_time) of rank 0's ``train/loss_step`` events."""
    from bench.events import read_scalars

    steps = run_dir / "tb" / "steps"
    if not steps.is_dir():
        return []
    series = read_scalars(steps).series.get("train/loss_step", [])
    return [(p.step, p.wall_time) for p in series]


def trainer_overrides(dataset: str, run: RunConf, steps: int, run_dir: Path,
                      epochs: int = 1) -> list[str]:
    # The epoch cap counts one worker's steps and is dealt to the workers (trainer/train.py,
    # epoch_edges): so that every worker takes ``steps`` steps, the cap is steps x workers.
    return [f"dataset={dataset}", f"epochs={epochs}", f"train.steps_per_epoch={steps * run.workers}",
            f"train.batch_size={run.batch}", f"train.threads={run.threads}",
            "train.log_every=1", "train.eval_sources=16", "train.test_sources=16",
            f"run_dir={run_dir}"]


def run_one(run: RunConf, dataset: str, steps: int, warmup: int, work: Path,
            timeout_s: float) -> dict[str, Any]:
    import json

    run_dir = work / run.name.replace(" ", "").replace(",", "_")
    run_dir.mkdir(parents=True)
    started = time.perf_counter()
    process = launch(run.workers, run.threads, trainer_overrides(dataset, run, steps, run_dir),
                     run_dir / "log.txt")
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop(process)
        code = None
    wall = time.perf_counter() - started
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    points = step_points(run_dir)
    thr = steady_throughput(points, run.global_batch, warmup)
    out = {
        "workers": run.workers, "threads": run.threads, "batch_per_worker": run.batch,
        "global_batch": run.global_batch, "cores": run.cores, "steps": steps,
        "exit_code": code, "wall_s": wall,
        "edges_per_s_steady": thr,
        "edges_per_s_trainer": (summary.get("edges_per_s") or [None])[0],
        "startup_s": (summary["time_first_step_unix"] - summary["time_start_unix"])
        if summary.get("time_first_step_unix") else None,
        "step_points": len(points),
    }
    if code != 0 or thr is None:
        tail = (run_dir / "log.txt").read_text(errors="replace").splitlines()[-15:]
        out["log_tail"] = tail
        print(f"  {run.name}: FAILED (exit {code}); log tail:\n    " + "\n    ".join(tail),
              flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out")
    parser.add_argument("--dataset", default="medium")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--omp-wait-policy", choices=("PASSIVE", "ACTIVE"), default=None,
                        help="OMP_WAIT_POLICY for the workers (default: as in the environment; "
                        "PASSIVE keeps idle OpenMP threads from spinning on a shared machine)")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup + 1:
        parser.error("--steps must exceed --warmup + 1")
    if args.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # inherited by the jobs

    print(f"scaling: dataset={args.dataset}, {args.steps} steps per run, first {args.warmup} "
          f"left out, {os.cpu_count()} cores", flush=True)
    from benchmarks.common import load_graph

    load_graph(args.dataset)  # prepared once here, not inside the timed jobs
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gnn-bench-scaling-") as tmp:
        for run in RUNS:
            result = run_one(run, args.dataset, args.steps, args.warmup, Path(tmp), args.timeout)
            runs[run.name] = result
            thr = result["edges_per_s_steady"]
            line(f"{run.name}: edges/s (steady)", thr if thr is not None else "n/a")
            line(f"{run.name}: edges/s (trainer's epoch)", result["edges_per_s_trainer"] or "n/a")
            line(f"{run.name}: startup, job wall", f"{result['startup_s'] or float('nan'):.1f} s, "
                 f"{result['wall_s']:.1f} s")

    def thr(i: int) -> float | None:
        return runs[RUNS[i].name]["edges_per_s_steady"]

    figures: dict[str, Any] = {"dataset": args.dataset, "steps": args.steps,
                               "warmup": args.warmup,
                               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                               "load_average_1m": os.getloadavg()[0], "runs": runs}
    comparisons = {
        # name: (N-worker run, baseline run, target)
        "strong_machine": (1, 0, 0.85),   # 2w x 1t vs 1w x 2t, global batch 1024, 2 cores each
        "strong_per_core": (1, 2, 0.85),  # 2w x 1t (2 cores) vs 1w x 1t (1 core), batch 1024
        "weak_per_core": (1, 3, 0.85),    # 512 per worker: 2w x 1t vs 1w x 1t
        "weak_machine": (1, 4, None),     # 512 per worker: 2w x 1t vs 1w x 2t (same 2 cores)
    }
    print("efficiency (throughput per core relative to the baseline's):", flush=True)
    for name, (n, base, target) in comparisons.items():
        if thr(n) is None or thr(base) is None:
            figures[name] = None
            print(f"  {name}: n/a (a run failed)", flush=True)
            continue
        value = efficiency(thr(n), RUNS[n].cores, thr(base), RUNS[base].cores)
        speedup = thr(n) / thr(base)
        label = f"{name}: {RUNS[n].name} vs {RUNS[base].name}"
        verdict = ratio(label, value, 1.0, target)
        figures[name] = {**verdict, "speedup": speedup, "run": RUNS[n].name,
                         "baseline": RUNS[base].name}
    threads = thr(0) / thr(2) if thr(0) and thr(2) else None
    if threads:
        line("intra-op threading: 1w x 2t / 1w x 1t (batch 1024)", threads, "x")
    figures["thread_speedup_1w"] = threads
    save("scaling" if args.dataset == "medium" else f"scaling-{args.dataset}", figures)
    return figures


if __name__ == "__main__":
    main()
