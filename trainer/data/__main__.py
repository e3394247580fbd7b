"""Prepare a dataset ahead of time (generate or download, convert through ogb, cache).

    python -m trainer.data prepare dataset=medium
    python -m trainer.data prepare dataset=ogbl_citation2 data_root=/data   # needs internet

Workers do the same on first use; doing it ahead keeps the preparation out of trial times.
"""

from __future__ import annotations

import sys
import time

from trainer.config import ConfigError, compose, fail, take_verbose_flag, validate_trainer
from trainer.data.dataset import DatasetError, dataset_root, load_graph


def main(argv: list[str]) -> None:
    argv = take_verbose_flag(argv)
    if not argv or argv[0] != "prepare":
        fail("usage: python -m trainer.data prepare [dataset=<preset>] [data_root=<dir>]")
    try:
        cfg = compose(argv[1:])
        validate_trainer(cfg)
    except ConfigError as exc:
        fail(str(exc))
    started = time.perf_counter()
    try:
        graph = load_graph(cfg.dataset, cfg.data_root)
    except DatasetError as exc:
        fail(str(exc), code=3)
    print(
        f"{cfg.dataset.name}: {graph.num_nodes:,} nodes, {graph.num_train_edges:,} training edges, "
        f"{graph.split['valid']['source_node'].numel():,} validation sources; ready in "
        f"{time.perf_counter() - started:.1f} s at {dataset_root(cfg.dataset, cfg.data_root)}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
