"""Benchmark 2 (issue 7): time to quality, ours against PyG's stock pipeline.

    python -m benchmarks.time_to_quality [--target-mrr X] [--budget-s S] [--eval-every N]

Wall seconds from the start of training (model, optimiser and sampler/loader construction
included; the memory-mapped dataset is loaded once beforehand for both) until validation MRR
first reaches ``--target-mrr``, evaluation time included. Both train from the same initial
weights with the same batch size, fan-outs, loss and optimiser, and both are evaluated every
``--eval-every`` steps by the same evaluation: the trainer's (``trainer.evaluate``: layer-wise
full-graph inference, the first ``--eval-sources`` validation sources, each ranked against its
1,000 negatives by ``ogb``'s Evaluator); the stock model's weights are copied into a LinkModel
for it (same architecture, same parameter names).

The reference (``benchmarks.stock``: LinkNeighborLoader + SAGEConv on the whole sampled
subgraph) takes seconds per step, so it gets a time budget (``--budget-s``). When it does not
reach the target within it, the ratio printed is a *lower bound*: its time to target is more
than the time it had run when it stopped (right after an evaluation below the target).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

from benchmarks.common import line, load_graph, ratio, save, trainer_config

# On `medium` (seed 0) ours passes 0.15 at step 10 on an early transient peak (0.171; then
# 0.087, 0.078 at steps 20-30) and again, for good, from step ~50 (0.152, 0.161, 0.169 at steps
# 50-70): under a minute here either way. `--hold 2` asks for two evaluations in a row.
DEFAULT_TARGET = 0.15


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.time_to_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target-mrr", type=float, default=DEFAULT_TARGET,
                   help=f"validation MRR to reach (default {DEFAULT_TARGET})")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="wall-time budget of the reference (default 540)")
    p.add_argument("--ours-budget-s", type=float, default=240.0,
                   help="wall-time budget of ours (default 240)")
    p.add_argument("--eval-every", type=int, default=10,
                   help="training steps between validations, for both (default 10)")
    p.add_argument("--hold", type=int, default=1,
                   help="evaluations in a row at or above the target (default 1: the first "
                        "one counts); the time is that of the last of them")
    p.add_argument("--eval-sources", type=int, default=None,
                   help="validation sources scored (default: train.eval_sources, 1000)")
    p.add_argument("--dataset", default="medium", help="dataset preset (default medium)")
    p.add_argument("--data-root", default=None, help="data_root (default: the trainer's)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads for both (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-reference", action="store_true",
                   help="run ours only (to choose a target); prints no ratio")
    args = p.parse_args(argv)
    if args.target_mrr <= 0 or args.budget_s <= 0 or args.ours_budget_s <= 0:
        p.error("--target-mrr, --budget-s and --ours-budget-s must be > 0")
    if min(args.eval_every, args.threads, args.hold) < 1:
        p.error("--eval-every, --threads and --hold must be >= 1")
    return args


def race(name: str, started: float, step: Callable[[], int], validate: Callable[[], float],
         target: float, budget_s: float, eval_every: int, hold: int = 1) -> dict:
    """Train ``eval_every`` steps, validate, repeat until the target or the budget.

    Stops before a round that would end past the budget (predicted from the last round).
    """
    history, steps, edges, train_s, eval_s = [], 0, 0, 0.0, 0.0
    reached_s, streak = None, 0
    while True:
        t0 = time.perf_counter()
        for _ in range(eval_every):
            edges += step()
            steps += 1
        t1 = time.perf_counter()
        mrr = validate()
        t2 = time.perf_counter()
        train_s += t1 - t0
        eval_s += t2 - t1
        elapsed = t2 - started
        history.append({"step": steps, "elapsed_s": elapsed, "mrr": mrr, "eval_s": t2 - t1})
        print(f"    {name}: step {steps:5d}  {elapsed:7.1f} s  val MRR {mrr:.4f}  "
              f"(round: train {t1 - t0:.1f} s, eval {t2 - t1:.1f} s)", flush=True)
        streak = streak + 1 if mrr >= target else 0
        if streak >= hold:
            reached_s = elapsed
            break
        if elapsed + (t2 - t0) > budget_s:
            break
    return {
        "reached": reached_s is not None,
        "time_to_target_s": reached_s,
        "elapsed_s": history[-1]["elapsed_s"],
        "steps": steps,
        "positive_edges": edges,
        "train_s": train_s,
        "eval_s": eval_s,
        "evaluations": len(history),
        "best_mrr": max(h["mrr"] for h in history),
        "history": history,
    }


def run_ours(cfg, args) -> dict:
    """The trainer's own setup, train_step and evaluate, on train_epoch's batches."""
    from benchmarks.common import one_worker_trainer

    started = time.perf_counter()
    trainer, _ = one_worker_trainer(cfg)
    state = {"epoch": 0, "steps": None, "batches": iter(())}

    def step() -> int:
        batch = next(state["batches"], None)
        if batch is None:  # a new epoch, as train_epoch starts it
            state["epoch"] += 1
            state["steps"] = trainer.epoch_steps(state["epoch"], steps_cap=None)
            state["batches"] = iter(state["steps"])
            trainer.model.train()
            batch = next(state["batches"])
        trainer.train_step(batch, state["steps"].gen)
        return batch.src.numel()

    def validate() -> float:
        return trainer.evaluate("valid", args.eval_sources)["val/mrr"]

    try:
        return race("ours", started, step, validate, args.target_mrr, args.ours_budget_s,
                    args.eval_every, args.hold)
    finally:
        trainer.close()


def run_stock(graph, cfg, args, init_state) -> dict:
    from benchmarks.stock import StockTrainer
    from trainer.evaluate import evaluate
    from trainer.model import LinkModel

    started = time.perf_counter()
    stock = StockTrainer(graph, cfg.model, cfg.train, int(cfg.seed), init_state)
    scorer = LinkModel(graph.x.shape[1], cfg.model)

    def step() -> int:
        return stock.train_step()[1]

    def validate() -> float:
        scorer.load_state_dict(stock.model.state_dict())
        return evaluate(scorer, graph, "valid", args.eval_sources,
                        cfg.train.eval_batch_nodes)["mrr"]

    out = race("stock", started, step, validate, args.target_mrr, args.budget_s,
               args.eval_every, args.hold)
    out["loader_setup_s"] = stock.loader_setup_s
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if not args.skip_reference:
        from benchmarks.stock import require_stock

        require_stock()  # before minutes of work, not after
    import torch

    from trainer.model import LinkModel

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-ttq-") as run_dir:
        cfg = trainer_config(args.dataset, run_dir, args.seed, args.threads, args.data_root)
        if args.eval_sources is None:
            args.eval_sources = cfg.train.eval_sources
        graph = load_graph(args.dataset, args.data_root)  # shared, outside both clocks
        print(f"time to validation MRR >= {args.target_mrr} on {args.dataset} "
              f"({graph.num_nodes:,} nodes): batch {cfg.train.batch_size}, fan-outs "
              f"{list(cfg.model.fanouts)}, predictor {cfg.model.predictor}, lr {cfg.train.lr}, "
              f"{args.threads} threads; validation every {args.eval_every} steps on "
              f"{args.eval_sources} sources (evaluation time included)", flush=True)
        print(f"  ours (budget {args.ours_budget_s:g} s)", flush=True)
        ours = run_ours(cfg, args)
        stock = None
        if not args.skip_reference:
            torch.manual_seed(args.seed)  # the same initial weights as ours (same seed)
            init_state = LinkModel(graph.x.shape[1], cfg.model).state_dict()
            print(f"  stock (budget {args.budget_s:g} s)", flush=True)
            stock = run_stock(graph, cfg, args, init_state)

    print("results:")
    for name, fig in (("ours", ours), ("stock", stock)):
        if fig is None:
            continue
        when = (f"{fig['time_to_target_s']:.1f} s" if fig["reached"]
                else f"not reached in {fig['elapsed_s']:.1f} s (best {fig['best_mrr']:.4f})")
        line(f"  {name}: time to MRR {args.target_mrr}", when)
        line(f"  {name}: steps, evaluations",
             f"{fig['steps']} steps, {fig['evaluations']} evaluations")
        line(f"  {name}: train / eval seconds", f"{fig['train_s']:.1f} / {fig['eval_s']:.1f}")
    figures = {
        "dataset": args.dataset, "target_mrr": args.target_mrr, "eval_every": args.eval_every,
        "eval_sources": args.eval_sources, "hold": args.hold, "budget_s": args.budget_s,
        "ours_budget_s": args.ours_budget_s, "threads": args.threads,
        "batch_size": int(cfg.train.batch_size), "fanouts": list(cfg.model.fanouts),
        "predictor": str(cfg.model.predictor), "ours": ours, "stock": stock,
    }
    if stock is not None:
        figures["same_steps"] = same_steps(ours, stock)
        figures["ratio"] = report_ratio(ours, stock)
    save("time_to_quality", figures)
    return figures


def same_steps(ours: dict, stock: dict) -> list[dict]:
    """Validation MRR of both after the same number of steps: same model, loss and batches
    of the same size, so the curves should agree per step; the speed-up is per second."""
    theirs = {h["step"]: h for h in stock["history"]}
    rows = [{"step": h["step"], "ours_mrr": h["mrr"], "stock_mrr": theirs[h["step"]]["mrr"],
             "ours_elapsed_s": h["elapsed_s"], "stock_elapsed_s": theirs[h["step"]]["elapsed_s"]}
            for h in ours["history"] if h["step"] in theirs]
    if rows:
        print("  after the same steps:  step   ours MRR (s)        stock MRR (s)")
        for r in rows:
            print(f"  {'':20}{r['step']:6d}   {r['ours_mrr']:.4f} ({r['ours_elapsed_s']:6.1f})"
                  f"    {r['stock_mrr']:.4f} ({r['stock_elapsed_s']:6.1f})")
    return rows


def report_ratio(ours: dict, stock: dict) -> dict:
    """stock time / ours time (speed-up), exact or a lower bound, or nothing."""
    if not ours["reached"]:
        print("  ours did not reach the target within its budget: no ratio (lower the target)")
        return {"value": None, "kind": "none", "reason": "ours did not reach the target"}
    if stock["reached"]:
        r = ratio("stock time / ours time (speed-up)", stock["time_to_target_s"],
                  ours["time_to_target_s"], target=10)
        return {**r, "kind": "measured"}
    bound = stock["elapsed_s"] / ours["time_to_target_s"]
    met = bound >= 10
    print(f"  {'speed-up (LOWER BOUND)':<48} >= {bound:.3g}x  the reference did not reach the "
          f"target within its budget ({stock['elapsed_s']:.0f} s, best MRR "
          f"{stock['best_mrr']:.4f}); target >= 10: {'MET' if met else 'NOT SHOWN'}", flush=True)
    return {"value": bound, "kind": "lower_bound", "target": 10, "met": True if met else None}


if __name__ == "__main__":
    main()
