"""``backend=trainjob``: the Kubeflow Trainer v2 backend's keys, registered as
``backend/trainjob``.

The cluster keys (where, what each node pod gets, how it is followed) are the PyTorchJob
backend's (:class:`~bench.backends.k8s.config.ClusterConfig`); these are the TrainJob's own.
Set up the cluster with docs/gke.md (Trainer v2.3 from ``k8s/trainer``, the project's runtime
from ``k8s/trainer/runtime``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from bench.backends.k8s.config import ClusterConfig
from trainer.config import ConfigError

RUNTIME_KINDS = ("TrainingRuntime", "ClusterTrainingRuntime")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass
class TrainJobConfig(ClusterConfig):
    """Each trial a trainer.kubeflow.org/v1alpha1 TrainJob of ``workers`` nodes, one process
    each, on the project's training runtime (see bench/backends/trainjob/)."""

    _target_: str = "bench.backends.trainjob.TrainJobBackend"
    name: str = "trainjob"
    # The runtime's restart budget: JobSet's failurePolicy.maxRestarts in the runtime
    # (k8s/trainer/runtime/gnn-bench-torch.yaml: 3). A TrainJob cannot change it (runtimePatches
    # reach only the pod template), so the preflight checks that the cluster's runtime has this
    # value. One lost node pod costs one restart: the JobSet recreates every node pod.
    backoff_limit: int = 3
    runtime: str = "gnn-bench-torch"  # spec.runtimeRef.name
    runtime_kind: str = "TrainingRuntime"  # or ClusterTrainingRuntime (cluster-wide)

    def validate(self) -> None:
        super().validate()
        if self.runtime_kind not in RUNTIME_KINDS:
            raise ConfigError(f"backend.runtime_kind={self.runtime_kind} is invalid: use one of "
                              + ", ".join(RUNTIME_KINDS))
        if not _NAME.match(self.runtime or ""):
            raise ConfigError(f"backend.runtime={self.runtime} is not a valid runtime name "
                              "(lowercase letters, digits, '-' and '.'), e.g. "
                              "backend.runtime=gnn-bench-torch")

    def check_fault_plan(self, workers: int, count: int) -> None:
        """A fault plan the runtime's restart budget cannot survive is refused up front: each
        lost pod fails the node Job, and the JobSet restarts (counting one against
        maxRestarts) or, with the budget spent, fails."""
        if count > self.backoff_limit:
            raise ConfigError(
                f"fault.count={count} costs {count} JobSet restarts, more than "
                f"backend.backoff_limit={self.backoff_limit} (the runtime's "
                f"failurePolicy.maxRestarts) allows: set backend.backoff_limit={count} and the "
                f"runtime's maxRestarts to {count} (k8s/trainer/runtime), or plan fewer faults")


ConfigStore.instance().store(group="backend", name="trainjob", node=TrainJobConfig)
