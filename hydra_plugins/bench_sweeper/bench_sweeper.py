"""Hydra sweeper ``bench`` (conf/config.yaml selects it): the basic sweeper without the check
it makes before launching a batch, that every job composes (``validate_batch_is_legal``).

``python -m bench.sweep`` composes and validates every job itself before Hydra starts
(bench/preflight.py), with checks Hydra does not have (ranges, folders, the cluster), so that
check would compose each job a second time for nothing: about 0.13 s of CPU a job here.
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering them
# in sys.modules, and dataclasses then cannot resolve string annotations.
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

# Hydra has no public basic sweeper to extend; its launcher plugins subclass these the same way.
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class BenchSweeperConf:
    _target_: str = "hydra_plugins.bench_sweeper.bench_sweeper.BenchSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045 (Hydra's own conf spells it so)
    params: Optional[dict[str, str]] = None  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="bench", node=BenchSweeperConf, provider="gnn-bench"
)


class BenchSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Done already, with more checks, by bench.sweep's preflight."""
