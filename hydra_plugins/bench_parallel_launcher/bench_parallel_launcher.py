"""Hydra launcher ``bench_parallel``: run a sweep's trials side by side, at most N at once.

    python -m bench.sweep backend=k8s workers=2,4,6 epochs=10,30 -m \\
        hydra/launcher=bench_parallel backend.max_parallel=3

Each trial runs in its own process (a process pool of ``max_parallel``), so a six-trial sweep
on a cluster takes about its longest trials instead of their sum. With ``max_parallel: 1`` it
is Hydra's basic launcher: trials one after another in this process (the default behaviour).

As Hydra's own launcher plugins do: the config dataclass and a thin ``Launcher`` here, the work
in ``_core`` (imported only when trials run in parallel, so plugin discovery stays fast).
"""

# No `from __future__ import annotations`: Hydra loads plugin modules without registering them
# in sys.modules, and dataclasses then cannot resolve string annotations.
from collections.abc import Sequence
from dataclasses import dataclass, field

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn


@dataclass
class ParallelLauncherConf:
    _target_: str = "hydra_plugins.bench_parallel_launcher.bench_parallel_launcher.ParallelLauncher"
    # Trials at once; follows the backend's setting unless set here.
    max_parallel: int = "${backend.max_parallel}"  # type: ignore[assignment]
    # Added to every job run in parallel: one live progress line per trial would interleave.
    extra_overrides: list[str] = field(default_factory=lambda: ["progress=false"])


ConfigStore.instance().store(
    group="hydra/launcher", name="bench_parallel", node=ParallelLauncherConf, provider="gnn-bench"
)


class ParallelLauncher(BasicLauncher):
    def __init__(self, max_parallel: int = 1, extra_overrides: Sequence[str] = ()) -> None:
        super().__init__()
        self.max_parallel = int(max_parallel)
        self.extra_overrides = list(extra_overrides)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        if self.max_parallel <= 1 or len(job_overrides) <= 1:
            return super().launch(job_overrides, initial_job_idx)
        from hydra_plugins.bench_parallel_launcher._core import launch_parallel

        return launch_parallel(self, job_overrides, initial_job_idx)
