"""Benchmark 7: efficiency of the training step against this machine's dense matmul rate.

    python -m benchmarks.efficiency [--steps N] [--dataset medium] [--threads T]

One worker (no DDP: nothing to all-reduce), the OGB setting (3 SAGEConv layers, 256 hidden,
fan-out 15/10/5, 512 positive edges a step, one negative each), ``threads`` = all cores. For each
timed step it counts the FLOPs the step does, analytically from the sizes of that step's
sampled subgraph (after the batch's own edges are dropped):

- SAGEConv layer i reads ``n_src`` nodes and writes ``n_dst``; ``lin_l`` and ``lin_r`` are each a
  (n_dst x f_in) @ (f_in x f_out) matmul: 2 n_dst f_in f_out FLOPs forward. Backward computes
  the weight gradient (the same again) and, for layers > 0, the input gradient (the same again);
  layer 0's input is the raw features, which need no gradient, so its matmuls cost 2x, not 3x.
- Mean aggregation over the e edges of the layer: 2 e f_in forward (one multiply-add per edge
  and feature, the spmm convention), the same backward for layers > 0.
- The dot predictor: 2 x 2b x hidden forward, twice that backward.

FLOPs over the measured step time is the achieved rate; it is compared with the rate of dense
fp32 ``torch.mm`` measured in the same run (4096^2, and matmuls of the step's own shapes). The
time is broken down by phase (timers inside ``Trainer.train_step``) and, inside forward and
backward, by operator class (``torch.profiler``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from itertools import islice

from benchmarks.common import line, ratio, save

PHASES = ("seeds", "sample", "drop_edges", "gather", "forward", "backward", "optimizer")
TARGET_FRACTION = 0.25
STOCK_PYG_EDGES_PER_S = 68.0  # PyG LinkNeighborLoader pipeline, medium, 2 threads (earlier probe)


def step_flops(cum_nodes: list[int], cum_edges: list[int], dims: list[int], batch: int,
               num_neg: int) -> dict[str, float]:
    """FLOPs of one training step (forward + backward) of the dot-predictor GraphSAGE."""
    layers = len(dims) - 1
    matmul = agg = 0.0
    for i in range(layers):
        n_dst, e = cum_nodes[layers - i - 1], cum_edges[layers - i]
        f_in, f_out = dims[i], dims[i + 1]
        fwd_mm = 2 * (2.0 * n_dst * f_in * f_out)  # lin_l and lin_r
        matmul += fwd_mm * (3 if i > 0 else 2)
        agg += 2.0 * e * f_in * (2 if i > 0 else 1)
    pairs = batch + num_neg
    predictor = 3 * 2.0 * pairs * dims[-1]
    return {"matmul": matmul, "aggregation": agg, "predictor": predictor,
            "total": matmul + agg + predictor}


CLOCK = time.perf_counter  # --clock cpu: time.thread_time (one thread: robust to other load)


def mm_rate(n: int, k: int, m: int, min_seconds: float = 0.5) -> float:
    """FLOP/s of a dense fp32 (n x k) @ (k x m) matmul (best of several timed repeats)."""
    import torch

    a, b = torch.randn(n, k), torch.randn(k, m)
    out = torch.empty(n, m)
    torch.mm(a, b, out=out)
    best, spent = float("inf"), 0.0
    reps = max(1, int(2e8 / (2.0 * n * k * m)))
    while spent < min_seconds:
        start = CLOCK()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        seconds = (CLOCK() - start) / reps
        best, spent = min(best, seconds), spent + seconds * reps
    return 2.0 * n * k * m / best


OP_CLASSES = (  # (class, substrings of aten op names); first match wins
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")),
    ("aggregation (spmm)", ("sparse_mm_reduce", "sparse.mm", "_sparse_csr", "sparse_csr",
                            "aten::_to_sparse", "spmm")),
    ("sort/unique", ("unique", "sort", "isin")),
    ("index/gather", ("index", "gather", "take", "embedding")),
    ("optimizer (Adam)", ("_foreach", "adam", "Optimizer")),
    ("elementwise", ("add", "mul", "div", "relu", "sum", "copy", "fill", "zero", "sigmoid",
                     "binary_cross", "threshold", "where", "exp", "log", "clamp", "sub", "neg")),
)


def classify(name: str) -> str:
    lowered = name.lower()
    for cls, keys in OP_CLASSES:
        if any(k.lower() in lowered for k in keys):
            return cls
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile-steps", type=int, default=5, help="steps under torch.profiler")
    parser.add_argument("--dataset", default="medium")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-thp", action="store_true",
                        help="THP_MEM_ALLOC_ENABLE=0: no transparent huge pages for torch's large "
                        "CPU allocations (the trainer turns them on; this shows what they save)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: time steps and matmuls by this thread's CPU time (needs "
                        "--threads 1); on a shared machine it discounts the time other jobs "
                        "take the core, which wall time cannot")
    args = parser.parse_args()
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu needs --threads 1 (other threads' CPU time is not counted)")
        global CLOCK
        CLOCK = time.thread_time
    if args.no_thp:  # read once by torch's CPU allocator, at its first allocation: set it first
        os.environ["THP_MEM_ALLOC_ENABLE"] = "0"
    import resource

    import torch

    from benchmarks.common import one_worker_trainer
    from trainer.config import compose
    from trainer.train import StepProfile

    torch.set_num_threads(args.threads)
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"  # trainer.train sets it by default
    run_dir = tempfile.mkdtemp(prefix="gnn-bench-efficiency-")
    cfg = compose([f"dataset={args.dataset}", f"train.threads={args.threads}",
                   f"run_dir={run_dir}"])
    trainer, setup_s = one_worker_trainer(cfg)
    graph = trainer.graph
    dims = [graph.x.shape[1]] + [int(cfg.model.hidden)] * int(cfg.model.num_layers)
    batch_size = int(cfg.train.batch_size)
    epoch = trainer.epoch_steps(1, steps_cap=args.warmup + args.steps + args.profile_steps)
    batches = iter(epoch)  # each batch's negatives drawn as it is reached, as in training

    def step(batch) -> None:
        trainer.train_step(batch, epoch.gen)

    print(f"efficiency: dataset={args.dataset} threads={torch.get_num_threads()} "
          f"layers={cfg.model.num_layers} hidden={cfg.model.hidden} "
          f"fanouts={list(cfg.model.fanouts)} batch={batch_size}", flush=True)
    for batch in islice(batches, args.warmup):
        step(batch)

    # -- timed steps: phases and FLOPs of each step
    trainer.profile = profile = StepProfile()
    step_s, flops, sizes = [], defaultdict(float), defaultdict(list)
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for batch in islice(batches, args.steps):
        before = sum(profile.seconds.values())
        start = CLOCK()
        step(batch)
        step_s.append(CLOCK() - start)
        assert sum(profile.seconds.values()) >= before
        sub = profile.subgraph
        for key, value in step_flops(sub.cum_nodes, sub.cum_edges, dims, batch.src.numel(),
                                     batch.src.numel()).items():
            flops[key] += value
        for h, n in enumerate(sub.cum_nodes):
            sizes[f"nodes_within_{h}_hops"].append(n)
        sizes["edges"].append(sub.cum_edges[-1])
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / len(step_s)
    phases = dict(profile.seconds)
    trainer.profile = None
    steps = len(step_s)
    seconds = sum(step_s)
    per_step = {k: v / steps for k, v in flops.items()}
    achieved = flops["total"] / seconds
    achieved_mm = flops["matmul"] / seconds
    edges_per_s = steps * batch_size / seconds

    # -- operator classes inside the step (relative shares; the profiler adds overhead)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            step(batch)
    by_class: dict[str, float] = defaultdict(float)
    top = []
    for evt in prof.key_averages():
        if evt.key.startswith("aten::") or "Optimizer" in evt.key:
            by_class[classify(evt.key)] += evt.self_cpu_time_total / 1e6
            top.append((evt.self_cpu_time_total / 1e6, evt.key))
    top.sort(reverse=True)

    # -- the machine's dense matmul rate, now, on the same threads
    mean_nodes = [statistics.mean(sizes[f"nodes_within_{h}_hops"]) for h in range(len(dims))]
    n_first = int(mean_nodes[-2])  # rows of layer 0's matmuls
    peaks = {
        "mm_4096x4096x4096": mm_rate(4096, 4096, 4096),
        f"mm_{n_first}x128x256 (layer 0 shape)": mm_rate(n_first, 128, 256),
        f"mm_{int(mean_nodes[1])}x256x256 (layer 1 shape)": mm_rate(int(mean_nodes[1]), 256, 256),
    }
    peak = peaks["mm_4096x4096x4096"]
    best_peak = max(peaks.values())

    print("step (one worker, no all-reduce):", flush=True)
    line("timed steps", steps)
    line("mean step time", seconds / steps * 1e3, "ms")
    line("positive edges/s", edges_per_s)
    line("page faults per step (fresh buffers)", faults)
    line("transparent huge pages (THP_MEM_ALLOC_ENABLE)", str(thp))
    line("clock", args.clock)
    for h, n in enumerate(mean_nodes):
        line(f"mean nodes within {h} hops", n)
    line("mean sampled edges (after drop)", statistics.mean(sizes["edges"]))
    print("FLOPs per step (analytic, from each step's subgraph):", flush=True)
    for key in ("matmul", "aggregation", "predictor", "total"):
        line(f"  {key}", per_step[key] / 1e9, "GFLOP")
    print("rates:", flush=True)
    line("achieved, all FLOPs", achieved / 1e9, "GFLOP/s")
    line("achieved, matmul FLOPs only", achieved_mm / 1e9, "GFLOP/s")
    for name, value in peaks.items():
        line(f"dense {name}", value / 1e9, "GFLOP/s")
    fraction = ratio("achieved / dense 4096^2 matmul rate", achieved, peak, TARGET_FRACTION)
    fraction_best = ratio("achieved / best dense matmul rate measured", achieved, best_peak,
                          TARGET_FRACTION)
    speedup = ratio("edges/s over stock PyG LinkNeighborLoader (68/s)", edges_per_s,
                    STOCK_PYG_EDGES_PER_S, 10)
    print("where the step's time goes (phase timers in Trainer.train_step, wall clock):",
          flush=True)
    phase_total = sum(phases.values()) or 1.0
    phase_share = {k: phases.get(k, 0.0) / phase_total for k in PHASES}
    for k in PHASES:
        line(f"  {k}", f"{phases.get(k, 0.0) / steps * 1e3:7.2f} ms  {phase_share[k]:6.1%}")
    prof_total = sum(by_class.values())
    print(f"operator classes over {args.profile_steps} profiled steps (self CPU time):", flush=True)
    class_share = {k: v / prof_total for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])}
    for k, v in class_share.items():
        line(f"  {k}", f"{v:6.1%}")
    print("top operators:", flush=True)
    for t, name in top[:12]:
        line(f"  {name[:46]}", f"{t / max(1, args.profile_steps) * 1e3:7.2f} ms/step")
    # Time the matmuls would take at the dense 4096^2 rate, against the step time.
    mm_ideal = per_step["matmul"] / peak
    line("matmul time at the dense rate / step time", mm_ideal / (seconds / steps))

    save("efficiency", {
        "dataset": args.dataset,
        "threads": torch.get_num_threads(),
        "model": {"layers": int(cfg.model.num_layers), "hidden": int(cfg.model.hidden),
                  "fanouts": list(cfg.model.fanouts), "batch_size": batch_size},
        "setup_s": setup_s,
        "steps": steps,
        "step_ms": seconds / steps * 1e3,
        "step_ms_median": statistics.median(step_s) * 1e3,
        "edges_per_s": edges_per_s,
        "page_faults_per_step": faults,
        "thp": thp,
        "clock": args.clock,
        "mean_nodes_per_hop": mean_nodes,
        "mean_edges": statistics.mean(sizes["edges"]),
        "flops_per_step": per_step,
        "achieved_gflops": achieved / 1e9,
        "achieved_matmul_gflops": achieved_mm / 1e9,
        "dense_mm_gflops": {k: v / 1e9 for k, v in peaks.items()},
        "fraction_of_dense_4096": fraction,
        "fraction_of_best_dense": fraction_best,
        "vs_stock_pyg": speedup,
        "phase_ms": {k: phases.get(k, 0.0) / steps * 1e3 for k in PHASES},
        "phase_share": phase_share,
        "op_class_share": class_share,
        "top_ops_ms_per_step": [(n, t / max(1, args.profile_steps) * 1e3) for t, n in top[:20]],
        "matmul_time_at_dense_rate_over_step": mm_ideal / (seconds / steps),
    })
    trainer.close()
    shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
