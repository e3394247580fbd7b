"""Benchmark 1 (issue 7): training throughput, ours against PyG's stock pipeline.

    python -m benchmarks.throughput [--steps N] [--stock-steps M] [--dataset medium]

One worker, torch threads = all cores for both. Ours is the trainer's own step
(``trainer.train.Trainer.train_step``: our sampler, per-hop trimmed SAGE, BCE, Adam) on the
batches ``train_epoch`` would give it; the reference is ``benchmarks.stock`` (PyG's
``LinkNeighborLoader`` with torch-sparse, SAGEConv on the whole sampled subgraph, the same
predictor, loss, optimiser, batch size and fan-outs). Warm-up steps are excluded. Prints
training positive edges per second, seconds per step, the node-rows that went through the
SAGE layers' weights in one (unmeasured warm-up) step, forward and backward, counted the same
way for both (``benchmarks.stock.LayerRows``), and ours / reference (target >= 10x). Needs the optional extra (``bash benchmarks/install_stock.sh``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from benchmarks.common import line, ratio, save, trainer_config


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="measured steps of ours (default 30)")
    p.add_argument("--stock-steps", type=int, default=5,
                   help="measured steps of the stock pipeline (default 5; ~8 s each here)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps before each (default 2, at least 1)")
    p.add_argument("--dataset", default="medium", help="dataset preset (default medium)")
    p.add_argument("--data-root", default=None, help="data_root (default: the trainer's)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads for both (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if min(args.steps, args.stock_steps) < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--steps and --stock-steps must be >= 1, --warmup >= 0, --threads >= 1")
    return args


def _summary(step_s: list[float], edges: list[int]) -> dict[str, float]:
    total = sum(step_s)
    return {
        "steps": len(step_s),
        "edges_per_s": sum(edges) / total,
        "s_per_step": total / len(step_s),
        "s_per_step_median": statistics.median(step_s),
        "s_per_step_min": min(step_s),
        "s_per_step_max": max(step_s),
    }


def measure_ours(cfg, steps: int, warmup: int) -> tuple[dict[str, float], object]:
    """Our trainer's train_step on the batches of epoch 1, as train_epoch builds them."""

    from benchmarks.common import one_worker_trainer
    from benchmarks.stock import LayerRows

    trainer, setup_s = one_worker_trainer(cfg)
    graph = trainer.graph
    warmup = max(warmup, 1)  # the first (unmeasured) step counts the layers' rows
    steps_of_epoch = trainer.epoch_steps(1, steps_cap=warmup + steps)
    gen = steps_of_epoch.gen
    trainer.model.train()
    step_s, edges, losses = [], [], []
    for i, batch in enumerate(steps_of_epoch):
        if i == 0:
            with LayerRows(trainer.model.encoder) as rows:
                trainer.train_step(batch, gen)
            continue
        started = time.perf_counter()
        loss = trainer.train_step(batch, gen)
        seconds = time.perf_counter() - started
        if i >= warmup:
            step_s.append(seconds)
            edges.append(batch.src.numel())
            losses.append(loss)
    trainer.close()
    out = _summary(step_s, edges)
    out.update(layer_rows_first_step=rows.rows, layer_rows_per_step=rows.total, setup_s=setup_s,
               loss_first=losses[0], loss_last=losses[-1])
    return out, graph


def measure_stock(graph, cfg, steps: int, warmup: int, init_state) -> dict[str, float]:
    from benchmarks.stock import LayerRows, StockTrainer

    setup_started = time.perf_counter()
    stock = StockTrainer(graph, cfg.model, cfg.train, int(cfg.seed), init_state)
    setup_s = time.perf_counter() - setup_started
    warmup = max(warmup, 1)  # the first (unmeasured) step counts the layers' rows
    step_s, edges, losses = [], [], []
    for i in range(warmup + steps):
        started = time.perf_counter()
        if i == 0:
            with LayerRows(stock.model.encoder) as rows:
                loss, positives = stock.train_step()
        else:
            loss, positives = stock.train_step()
        seconds = time.perf_counter() - started
        if i >= warmup:
            step_s.append(seconds)
            edges.append(positives)
            losses.append(loss)
        print(f"    stock step {i + 1}/{warmup + steps}: {seconds:.2f} s"
              + ("  (warm-up)" if i < warmup else ""), flush=True)
    out = _summary(step_s, edges)
    out.update(layer_rows_first_step=rows.rows, layer_rows_per_step=rows.total, setup_s=setup_s,
               loader_setup_s=stock.loader_setup_s, loss_first=losses[0], loss_last=losses[-1])
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    from benchmarks.stock import require_stock

    require_stock()  # before minutes of work, not after
    import torch

    from trainer.model import LinkModel

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as run_dir:
        cfg = trainer_config(args.dataset, run_dir, args.seed, args.threads, args.data_root)
        print(f"throughput on {args.dataset}: batch {cfg.train.batch_size}, fan-outs "
              f"{list(cfg.model.fanouts)}, {cfg.model.num_layers} layers x {cfg.model.hidden}, "
              f"predictor {cfg.model.predictor}, {args.threads} threads, one worker", flush=True)
        print(f"  ours: {args.warmup} warm-up + {args.steps} steps", flush=True)
        ours, graph = measure_ours(cfg, args.steps, args.warmup)
        # The reference starts from the same initial weights as ours (same seed).
        torch.manual_seed(args.seed)
        init_state = LinkModel(graph.x.shape[1], cfg.model).state_dict()
        print(f"  stock: {args.warmup} warm-up + {args.stock_steps} steps", flush=True)
        stock = measure_stock(graph, cfg, args.stock_steps, args.warmup, init_state)

    print(f"results ({graph.num_nodes:,} nodes, {graph.num_train_edges:,} training edges):")
    for name, fig in (("ours", ours), ("stock (LinkNeighborLoader + full-layer SAGEConv)", stock)):
        print(f"  {name}")
        line("    training positive edges/s", fig["edges_per_s"], "edges/s")
        line("    seconds per step (mean)", fig["s_per_step"], "s")
        line("    seconds per step (median / min / max)",
             f"{fig['s_per_step_median']:.3g} / {fig['s_per_step_min']:.3g} / "
             f"{fig['s_per_step_max']:.3g}", "s")
        line("    node-rows through the SAGE layers (1st step)", f"{fig['layer_rows_per_step']:,}")
        line("    measured steps", fig["steps"])
    r = ratio("ours / stock (positive edges per second)", ours["edges_per_s"],
              stock["edges_per_s"], target=10)
    rows = stock["layer_rows_per_step"] / ours["layer_rows_per_step"]
    line("  stock / ours node-rows through the SAGE layers", f"{rows:.3g}x")
    figures = {
        "dataset": args.dataset, "num_nodes": graph.num_nodes,
        "batch_size": int(cfg.train.batch_size), "fanouts": list(cfg.model.fanouts),
        "num_layers": int(cfg.model.num_layers), "hidden": int(cfg.model.hidden),
        "predictor": str(cfg.model.predictor),
        "exclude_target_edges": bool(cfg.train.exclude_target_edges),
        "threads": args.threads, "warmup_steps": max(args.warmup, 1),
        "ours": ours, "stock": stock, "ratio": r, "node_rows_ratio": rows,
    }
    save("throughput", figures)
    return figures


if __name__ == "__main__":
    main()
