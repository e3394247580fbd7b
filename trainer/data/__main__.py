"""Datasets ahead of time: prepare them, their baselines, their calibration statistics.

    python -m trainer.data prepare dataset=medium
    python -m trainer.data prepare dataset=ogbl_citation2 data_root=/data   # needs internet
    python -m trainer.data baselines dataset=small                         # reference MRRs
    python -m trainer.data stats dataset=small [--in-memory] [--trained] [--json FILE]

Workers do ``prepare`` (which includes the baselines) themselves on first use; doing it ahead
keeps the preparation out of trial times. ``baselines`` prints the parameter-free methods' MRR
(± standard error over sources) on the sources the trainer evaluates (``train.eval_sources``
validation sources, ``train.test_sources`` test sources). ``stats`` prints every calibration
statistic beside ogbl-citation2's published figure; ``--in-memory`` computes it straight from
the generator without writing the dataset (for ``full``, whose OGB files take minutes);
``--trained`` adds the OGB example's feature-only MLP, trained on the spot (not cached).
"""

from __future__ import annotations

import json
import sys
import time

from trainer.config import ConfigError, compose, fail, take_verbose_flag, validate_trainer
from trainer.data.dataset import DatasetError, dataset_root, load_graph

USAGE = ("usage: python -m trainer.data prepare|baselines|stats [dataset=<preset>] "
         "[data_root=<dir>] [--in-memory] [--trained] [--json FILE]")


def _flag_value(argv: list[str], flag: str) -> tuple[list[str], str | None]:
    if flag not in argv:
        return argv, None
    i = argv.index(flag)
    if i + 1 >= len(argv):
        fail(f"{flag} needs a value: {USAGE}")
    return argv[:i] + argv[i + 2:], argv[i + 1]


def main(argv: list[str]) -> None:
    argv = take_verbose_flag(argv)
    if not argv or argv[0] not in ("prepare", "baselines", "stats"):
        fail(USAGE)
    command, rest = argv[0], argv[1:]
    in_memory, trained = "--in-memory" in rest, "--trained" in rest
    rest = [a for a in rest if a not in ("--in-memory", "--trained")]
    rest, json_path = _flag_value(rest, "--json")
    try:
        cfg = compose(rest)
        validate_trainer(cfg)
        if in_memory and not cfg.dataset.synthetic:
            raise ConfigError(f"--in-memory needs a synthetic dataset, not {cfg.dataset.name}")
    except ConfigError as exc:
        fail(str(exc))
    started = time.perf_counter()
    try:
        graph = _in_memory(cfg.dataset) if in_memory else load_graph(cfg.dataset, cfg.data_root)
    except DatasetError as exc:
        fail(str(exc), code=3)
    if command == "prepare":
        print(
            f"{cfg.dataset.name}: {graph.num_nodes:,} nodes, {graph.num_train_edges:,} training edges, "
            f"{graph.split['valid']['source_node'].numel():,} validation sources; ready in "
            f"{time.perf_counter() - started:.1f} s at {dataset_root(cfg.dataset, cfg.data_root)}"
        )
        return
    from trainer.data import baselines

    if in_memory:
        rr = baselines.compute(graph)
    else:
        from trainer.data.dataset import baselines as cached_baselines

        rr = cached_baselines(cfg.dataset, cfg.data_root, graph)
    if trained:  # the OGB example's feature-only MLP, trained here (not cached)
        rr = {**rr, "feature_mlp": baselines.feature_mlp(graph)}
    summary = baselines.summarize(rr, cfg.train.eval_sources, cfg.train.test_sources)
    report: dict = {"dataset": cfg.dataset.name, "baselines": summary}
    if command == "baselines":
        first = next(iter(summary.values()))
        print(f"{cfg.dataset.name}: baselines on the first {first['val_sources']:,} validation and "
              f"{first['test_sources']:,} test sources (MRR ± standard error over sources)")
        print(baselines.format_table(summary))
    else:
        from trainer.data import stats

        figures = stats.compute(graph)
        split = {name: (graph.split[name]["source_node"].numpy(),
                        graph.split[name]["target_node"].numpy(),
                        graph.split[name]["target_node_neg"].numpy()) for name in ("valid", "test")}
        train = graph.split["train"]
        problems = stats.check_negatives(
            graph.num_nodes, (train["source_node"].numpy(), train["target_node"].numpy()), split)
        report |= {"statistics": figures, "negative_violations": problems}
        print(f"| statistic | {cfg.dataset.name} | ogbl-citation2 |")
        print("| --- | --- | --- |")
        for key, value in figures.items():
            print(f"| {key} | {stats.format_value(value)} | "
                  f"{stats.format_value(stats.CITATION2.get(key))} |")
        for method, row in summary.items():
            label = baselines.LABELS.get(method) or baselines.TRAINED_LABELS[method]
            print(f"| test MRR: {label} | {row['test_mrr']:.4f} ± {row['test_mrr_se']:.4f} | "
                  f"{stats.format_value(stats.CITATION2_TEST_MRR.get(method))} |")
        bad = {k: v for k, v in problems.items() if v}
        print("negatives: all rows valid by OGB's definition" if not bad
              else "negatives: INVALID rows: " + json.dumps(bad))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)


def _in_memory(dataset_cfg):
    from trainer.data.dataset import GENERATOR_KEYS, in_memory_graph
    from trainer.data.synthetic import generate

    return in_memory_graph(generate(**{k: dataset_cfg[k] for k in GENERATOR_KEYS}))


if __name__ == "__main__":
    main(sys.argv[1:])
