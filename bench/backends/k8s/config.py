"""``backend=k8s``: the Kubernetes backend's keys, registered as ``backend/k8s``.

Set up the cluster with docs/gke.md. Resources are per worker pod.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from bench.backends.base import BackendConfig
from trainer.config import ConfigError, positive

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass
class ClusterConfig(BackendConfig):
    """The keys every Kubernetes backend has (``backend=k8s``, ``backend=trainjob``): where the
    cluster is, what each worker pod gets, how the harness follows it. Resources are per pod."""

    sample_interval_s: float = 15.0  # metrics.k8s.io; never faster than the API's own window
    poll_interval_s: float = 5.0
    timeout_s: float = 7200.0
    # A trial whose pods are not all running this long (image pull, scheduling, admission) fails
    # with the waiting reason and its fix.
    start_timeout_s: float = 600.0
    namespace: str = "gnn-bench"  # where the jobs run (k8s/ creates it)
    context: str | None = None  # kubeconfig context (None: the current one)
    kubeconfig: str | None = None  # None: $KUBECONFIG or ~/.kube/config; in a pod: in-cluster
    # the trainer image (docker/trainer.Dockerfile): $GNN_BENCH_IMAGE when the config is made
    image: str = field(default_factory=lambda: os.environ.get("GNN_BENCH_IMAGE",
                                                              "gnn-bench/trainer:latest"))
    cpu: str = "2"  # CPU request (a quantity: 1, 500m); threads per worker = its whole cores
    memory: str = "4Gi"  # memory request
    cpu_limit: str | None = None  # None: the request
    memory_limit: str | None = None  # None: the request
    gpus: int = 0  # nvidia.com/gpu per pod
    node_selector: dict[str, str] = field(default_factory=dict)  # e.g. a GKE node pool
    volume_claim: str = "gnn-bench-data"  # the RWX PVC holding datasets/ and runs/ (k8s/, NFS)
    mount_path: str = "/mnt/bench"  # where every pod mounts it
    shm_size: str = "1Gi"  # /dev/shm (memory-backed emptyDir) for PyTorch
    files_service: str = "gnn-bench-files"  # read-only file server on the volume (k8s/base)
    files_namespace: str = "gnn-bench-infra"  # its namespace (apart from the jobs': k8s/base)
    dry_run: bool = False  # write results/<sweep>/manifests/<trial>.yaml, contact no cluster
    keep_jobs: bool = False  # keep finished jobs (and their pods) after collection
    active_deadline_s: int | None = None  # the job's activeDeadlineSeconds (None: timeout_s)
    log_tail_lines: int = 200  # lines of each pod's log kept in logs/
    api_retries: int = 5  # attempts for transient API errors (429, 5xx, connection resets)
    api_backoff_s: float = 1.0  # first retry delay; doubles each attempt
    request_timeout_s: float = 30.0  # per API request

    def validate(self) -> None:
        """Checks of the Kubernetes fields, so that a typo fails before any job is submitted."""
        super().validate()
        from kubernetes.utils.quantity import parse_quantity

        if not _DNS_LABEL.match(self.namespace or ""):
            raise ConfigError(f"backend.namespace={self.namespace} is not a valid namespace name "
                              "(lowercase letters, digits and '-')")
        if not self.image:
            raise ConfigError("backend.image is empty: set the trainer image, e.g. backend.image="
                              "europe-west1-docker.pkg.dev/<project>/gnn-bench/trainer:0.1")
        for key in ("cpu", "memory", "cpu_limit", "memory_limit", "shm_size"):
            value = getattr(self, key)
            if value is None and key.endswith("_limit"):
                continue
            try:
                ok = parse_quantity(value) > 0
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise ConfigError(f"backend.{key}={value} is not a positive Kubernetes quantity "
                                  "(e.g. 2, 500m, 4Gi)")
        if self.gpus < 0:
            raise ConfigError(f"backend.gpus={self.gpus} must be >= 0")
        if not str(self.mount_path).startswith("/"):
            raise ConfigError(f"backend.mount_path={self.mount_path} must be an absolute path")
        if not _DNS_LABEL.match(self.files_namespace or ""):
            raise ConfigError(f"backend.files_namespace={self.files_namespace} is not a valid "
                              "namespace name (lowercase letters, digits and '-')")
        if self.start_timeout_s <= 0:
            raise ConfigError(f"backend.start_timeout_s={self.start_timeout_s} is invalid: it "
                              "must be > 0 (e.g. backend.start_timeout_s=600)")
        positive("backend.api_retries", self.api_retries, "e.g. backend.api_retries=5")
        positive("backend.active_deadline_s", self.active_deadline_s, "or null", allow_none=True)


@dataclass
class K8sConfig(ClusterConfig):
    """Each trial a kubeflow.org/v1 PyTorchJob (1 Master + workers-1 Workers), submitted and
    followed with the official client (see bench/backends/k8s/)."""

    _target_: str = "bench.backends.k8s.K8sBackend"
    name: str = "k8s"
    # runPolicy.backoffLimit: the operator fails the job once the restarts of all its Running pods
    # add up to it (kubeflow/trainer v1.9, pkg/core/job.go PastBackoffLimit), and one lost pod
    # costs workers - 1 of them (every other replica fails its collective and restarts once), so
    # 10 lets the study's demo (one deleted pod at 2, 4 or 6 workers) and a spare failure through.
    backoff_limit: int = 10
    image_pull_policy: str = "IfNotPresent"  # Always | IfNotPresent | Never
    clean_pod_policy: str = "None"  # runPolicy.cleanPodPolicy: None | Running | All
    ttl_after_finished_s: int | None = 86400  # runPolicy.ttlSecondsAfterFinished (None: never)

    def validate(self) -> None:
        super().validate()
        choices = {"image_pull_policy": ("Always", "IfNotPresent", "Never"),
                   "clean_pod_policy": ("None", "Running", "All")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"backend.{key}={getattr(self, key)} is invalid: use one of "
                                  + ", ".join(allowed))
        if self.ttl_after_finished_s is not None and self.ttl_after_finished_s < 0:
            raise ConfigError("backend.ttl_after_finished_s must be >= 0 (or null)")

    def check_fault_plan(self, workers: int, count: int) -> None:
        """A planned fault demo the PyTorchJob's backoffLimit cannot survive is refused up front:
        the operator fails the job once the sum of its Running pods' restarts reaches the limit
        (a limit of 0 fails at the first), and each lost pod costs :func:`fault_cost`."""
        cost = fault_cost(workers, count)
        if cost >= max(1, self.backoff_limit):
            raise ConfigError(
                f"fault.count={count} at workers={workers} costs {cost} restarts, which the "
                f"training operator counts against backend.backoff_limit={self.backoff_limit} "
                f"(the job fails when they reach it): set backend.backoff_limit={cost + 1} or more")


def fault_cost(workers: int, count: int) -> int:
    """Restarts the training operator counts for ``count`` lost pods of a ``workers``-replica
    PyTorchJob: each loss fails every other replica's collective, and the kubelet restarts each
    of them in place once (the recreated pod starts with no restarts)."""
    return count * (workers - 1)


ConfigStore.instance().store(group="backend", name="k8s", node=K8sConfig)
