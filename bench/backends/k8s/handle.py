"""Submit and follow one trial as a PyTorchJob: the Kubernetes :class:`TrialHandle`.

The shared part (create or re-find, poll, collect, logs, cancel, faults, dry run) is
:class:`~bench.backends.k8s.job.JobHandle`; this module says how a PyTorchJob reports itself:
its conditions (``Created``, ``Running``, ``Restarting``, ``Succeeded``, ``Failed``), its
replica count, and ``restarts`` as the training operator counts them against ``backoffLimit``
(the sum over the job's Running pods, the largest seen).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.backends.base import JobState, TrialSpec
from bench.backends.k8s import follow
from bench.backends.k8s.client import KubeClient
from bench.backends.k8s.config import K8sConfig
from bench.backends.k8s.job import DryRunHandle, JobHandle, plan_on_volume, preflight_once
from bench.backends.k8s.manifests import pytorchjob

if TYPE_CHECKING:
    from bench.config import Trial

PREFLIGHT_JOB = "gnn-bench-preflight"  # looked up (never created) to check that a cluster answers


class K8sHandle(JobHandle):
    """One PyTorchJob, created or re-found by name."""

    def job_state(self, job: dict[str, Any],
                  pods: list[follow.PodInfo] | None = None) -> tuple[JobState, str | None]:
        return follow.job_state(job)

    def finished_time(self, job: dict[str, Any]) -> float | None:
        return follow.condition_time(job, "Succeeded") or follow.condition_time(job, "Failed")

    def expected_replicas(self, job: dict[str, Any]) -> int:
        return follow.expected_replicas(job)

    def restarts_of(self, job: dict[str, Any], pods: list[follow.PodInfo],
                    state: JobState) -> int:
        return max(follow.restarts(pods), sum(p.restarts for p in pods) if state.finished else 0)

    def refused_pod_creations(self) -> list[dict[str, Any]]:
        return [e for e in self.client.job_events(self.name, self.uid)
                if e.get("reason") == "FailedCreatePod"]

    def pod_security_fix(self) -> str:
        return (super().pod_security_fix() + " and install the operator with the compliant init "
                "container (`kubectl apply --server-side -k k8s/operator`)")


class K8sBackend:
    """Trials as Kubeflow PyTorchJobs, configured by ``backend=k8s`` (K8sConfig)."""

    def __init__(self, config: K8sConfig):
        self.config = config

    def plan(self, trial: Trial) -> TrialSpec:
        return plan_on_volume(trial, self.config)

    def preflight(self, trial: Trial) -> None:
        """The kubeconfig loads, the API server answers and the training operator is installed
        (one GET of a PyTorchJob, a verb the harness's Role has), once per cluster and
        namespace; nothing for a dry run."""
        preflight_once(self.config, "pytorchjobs",
                       lambda: KubeClient(self.config).get_job(PREFLIGHT_JOB))

    def submit(self, spec: TrialSpec) -> K8sHandle | DryRunHandle:
        manifest = pytorchjob(spec)
        if self.config.dry_run:
            return DryRunHandle(spec, manifest)
        handle = K8sHandle(spec, self.config, KubeClient(self.config), manifest)
        handle.start()
        return handle
