"""Benchmark 5: ogbl-citation2 scale (``dataset=full``: 2.93M nodes, ~30M edges, 128-d features).

    python -m benchmarks.scale_full [--steps N] [--eval-sources S] [--workers W]

1. Generation (only when the dataset is not cached): ``python -m trainer.data prepare
   dataset=full`` as a child process, timed, its peak RSS from ``getrusage(RUSAGE_CHILDREN)``
   and from psutil sampling, and the dataset's size on disk. The figures are also kept in
   ``benchmarks/results/scale_full_generation.json`` so that later runs on the cached dataset
   still report them (marked as measured earlier). ``--import-time FILE`` records a generation
   measured outside the benchmark by ``/usr/bin/time -v``.
2. Training: ``torchrun --standalone --nproc-per-node W -m trainer dataset=full epochs=1
   train.steps_per_epoch=N*W`` with one thread per worker (N steps each); the trainer's summary.json gives the
   dataset load time, the training throughput (positive edges/s over all workers) and the time
   of the evaluation, which at this size is layer-wise full-graph inference over every node
   (trainer/evaluate.py) followed by scoring ``S`` validation and ``S`` test sources against
   their 1000 negatives. The workers' memory is sampled every 0.5 s: the peak of the sum over
   workers of RSS (counts the memory-mapped dataset once per worker) and of PSS (shares it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.common import REPO, RESULTS, line, ratio, save

GEN_RECORD = RESULTS / "scale_full_generation.json"
BUDGET_S = 15 * 60  # the benchmark must fit in 15 minutes with the dataset cached
MACHINE_GIB = 24


class Sampler(threading.Thread):
    """Samples the memory of a process tree: peak of the summed RSS/PSS of its python leaves."""

    def __init__(self, pid: int, interval: float = 0.5, pss: bool = True):
        super().__init__(daemon=True)
        self.root, self.interval, self.pss = pid, interval, pss
        self.peak_rss = self.peak_pss = 0
        self.peak_workers = 0
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.root)
        except psutil.NoSuchProcess:
            return
        while not self.stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            workers = [p for p in procs if _is_worker(p)] or procs
            rss = pss = 0
            for proc in workers:
                try:
                    if self.pss:
                        info = proc.memory_full_info()
                        rss, pss = rss + info.rss, pss + info.pss
                    else:
                        rss += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.peak_workers = max(self.peak_workers, len(workers))
            self.stop.wait(self.interval)


def _is_worker(proc: psutil.Process) -> bool:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "-m" in cmd and cmd[cmd.index("-m") + 1 : cmd.index("-m") + 2] in (["trainer"],
                                                                             ["trainer.data"])


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def generate(root: Path) -> dict:
    """Run the preparation as a child and measure it."""
    print(f"generating dataset=full into {root} (about 11 minutes on 2 idle cores) ...",
          flush=True)
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.Popen([sys.executable, "-m", "trainer.data", "prepare", "dataset=full"],
                             cwd=REPO)
    sampler = Sampler(child.pid, interval=1.0, pss=False)
    sampler.start()
    code = child.wait()
    sampler.stop.set()
    sampler.join()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"generation failed with exit code {code}")
    return {
        "seconds": seconds,
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_gib": max(after.ru_maxrss * 1024, sampler.peak_rss) / 2**30,  # ru_maxrss: KiB
        "disk_gib": _du(root) / 2**30,
        "how": "measured by benchmarks.scale_full",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def import_time_file(path: Path, root: Path) -> dict:
    """A generation measured by ``/usr/bin/time -v python -m trainer.data prepare dataset=full``."""
    text = path.read_text()

    def field(pattern: str) -> str:
        match = re.search(pattern, text)
        if not match:
            raise SystemExit(f"{path}: no '{pattern}' (is it /usr/bin/time -v output?)")
        return match.group(1)

    wall = field(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)")
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    return {
        "seconds": seconds,
        "cpu_seconds": float(field(r"User time \(seconds\): ([\d.]+)"))
        + float(field(r"System time \(seconds\): ([\d.]+)")),
        "peak_rss_gib": int(field(r"Maximum resident set size \(kbytes\): (\d+)")) * 1024 / 2**30,
        "disk_gib": _du(root) / 2**30,
        "how": f"/usr/bin/time -v, imported from {path}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(path.stat().st_mtime)),
    }


def train(args: argparse.Namespace, run_dir: Path) -> tuple[dict, dict, float]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={args.workers}", "--max-restarts=0", "-m", "trainer",
        # steps x workers: the epoch cap is dealt to the workers (trainer/train.py, epoch_edges)
        "dataset=full", "epochs=1", f"train.steps_per_epoch={args.steps * args.workers}",
        f"train.eval_sources={args.eval_sources}", f"train.test_sources={args.eval_sources}",
        f"train.threads={args.threads}", f"run_dir={run_dir}",
    ]
    print("running: " + " ".join(cmd[2:]), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    started = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=REPO, env=env)
    sampler = Sampler(child.pid)
    sampler.start()
    try:
        code = child.wait(timeout=BUDGET_S)
    except subprocess.TimeoutExpired:
        child.terminate()
        child.wait()
        raise SystemExit(f"the run took more than {BUDGET_S} s; use fewer --steps") from None
    finally:
        sampler.stop.set()
        sampler.join()
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"the training run failed with exit code {code}")
    summary = json.loads((run_dir / "summary.json").read_text())
    memory = {"peak_rss_sum_gib": sampler.peak_rss / 2**30,
              "peak_pss_sum_gib": sampler.peak_pss / 2**30,
              "workers_sampled": sampler.peak_workers}
    return summary, memory, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps per worker")
    parser.add_argument("--eval-sources", type=int, default=1000,
                        help="validation and test sources scored (each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--import-time", type=Path, default=None,
                        help="record a /usr/bin/time -v log of a generation and exit")
    args = parser.parse_args()

    from trainer.config import compose
    from trainer.data.dataset import dataset_root

    cfg = compose(["dataset=full"])
    root = dataset_root(cfg.dataset, cfg.data_root)
    cached = (root / "cache" / "meta.json").exists()
    if args.import_time:
        if not cached:
            raise SystemExit(f"{root} has no complete cache yet")
        record = import_time_file(args.import_time, root)
        RESULTS.mkdir(parents=True, exist_ok=True)
        GEN_RECORD.write_text(json.dumps(record, indent=2) + "\n")
        print(f"recorded {GEN_RECORD.relative_to(REPO)}: {record}")
        return

    print(f"scale_full: dataset=full at {root}", flush=True)
    if cached:
        generation = json.loads(GEN_RECORD.read_text()) if GEN_RECORD.exists() else None
        measured_now = False
    else:
        generation = generate(root)
        RESULTS.mkdir(parents=True, exist_ok=True)
        GEN_RECORD.write_text(json.dumps(generation, indent=2) + "\n")
        measured_now = True
    meta = json.loads((root / "cache" / "meta.json").read_text())

    run_dir = Path(tempfile.mkdtemp(prefix="gnn-bench-scale-full-"))
    try:
        summary, memory, wall = train(args, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    edges_per_s = summary["edges_per_s"][0]
    eval_s = summary["eval_times_s"][0]
    train_s = summary["train_times_s"][0]
    print("dataset:", flush=True)
    line("nodes", meta["num_nodes"])
    line("directed edges (citations)", meta["num_directed_edges"])
    line("CSR entries (undirected)", meta["nnz"])
    line("feature dim", meta["feat_dim"])
    print("generation" + (" (this run):" if measured_now else " (measured earlier):"),
          flush=True)
    if generation:
        line("time", generation["seconds"] / 60, "min")
        line("CPU time", generation["cpu_seconds"] / 60, "min")
        line("peak RSS", generation["peak_rss_gib"], "GiB")
        line("size on disk", generation["disk_gib"], "GiB")
    else:
        print("  not measured (cached before this benchmark; see --import-time)", flush=True)
    print(f"training ({args.workers} workers x {args.threads} thread, {args.steps} steps):",
          flush=True)
    line("dataset load (rank 0, memory-map)", summary["load_s"], "s")
    line("start to first step", summary["time_first_step_unix"] - summary["time_start_unix"], "s")
    line("training time", train_s, "s")
    line("throughput, positive edges/s (all workers)", edges_per_s)
    line("evaluation: full-graph inference + scoring", eval_s, "s")
    line("test evaluation (same inference again)", summary["test_eval_s"], "s")
    line("whole run (torchrun wall time)", wall, "s")
    line("peak memory, sum of worker RSS", memory["peak_rss_sum_gib"], "GiB")
    line("peak memory, sum of worker PSS", memory["peak_pss_sum_gib"], "GiB")
    fits = ratio("peak PSS / machine memory (24 GiB)", memory["peak_pss_sum_gib"], MACHINE_GIB,
                 1.0, higher_is_better=False)
    in_budget = ratio("run wall time / 15 min budget", wall, BUDGET_S, 1.0,
                      higher_is_better=False)
    save("scale_full", {
        "dataset": meta,
        "generation": generation,
        "generation_measured_in_this_run": measured_now,
        "workers": args.workers,
        "threads_per_worker": args.threads,
        "steps": args.steps,
        "eval_sources": args.eval_sources,
        "load_s": summary["load_s"],
        "start_to_first_step_s": summary["time_first_step_unix"] - summary["time_start_unix"],
        "train_s": train_s,
        "edges_per_s": edges_per_s,
        "eval_s": eval_s,
        "test_eval_s": summary["test_eval_s"],
        "run_wall_s": wall,
        "memory": memory,
        "fits_in_memory": fits,
        "within_15_min": in_budget,
        "val_mrr": summary.get("val_mrr"),
        "test_mrr": summary.get("test_mrr"),
    })


if __name__ == "__main__":
    main()
