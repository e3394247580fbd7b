"""Submit and follow one trial as a TrainJob: the Kubeflow Trainer v2 :class:`TrialHandle`.

The shared part is :class:`~bench.backends.k8s.job.JobHandle`. A TrainJob says less than a
PyTorchJob: its conditions are ``Complete``, ``Failed`` (copied from its JobSet, reason and
message kept) and ``Suspended``, so the harness reads the JobSet of the same name too (``get``
on jobsets, checked to be owned by this TrainJob's uid):

* the pods are the JobSet's (label ``jobset.sigs.k8s.io/jobset-name``, and
  ``jobset.sigs.k8s.io/jobset-uid`` of this JobSet), of its current restart attempt; a pod's
  worker is its completion index (one process per node);
* ``restarts`` is the JobSet's ``status.restarts``: each restart recreated every node pod,
  and each counts against the runtime's ``failurePolicy.maxRestarts`` (backend.backoff_limit);
* state: RESTARTING while the JobSet's ``Restarting`` is True, RUNNING once every node pod of
  the attempt runs, else PENDING.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.backends.base import JobState, TrialSpec
from bench.backends.k8s import follow
from bench.backends.k8s.client import KubeClient
from bench.backends.k8s.job import DryRunHandle, JobHandle, plan_on_volume, preflight_once
from bench.backends.k8s.kinds import JobKind
from bench.backends.trainjob.config import TrainJobConfig
from bench.backends.trainjob.manifests import (
    GROUP,
    JOBSET_NAME_LABEL,
    JOBSET_UID_LABEL,
    KIND,
    NODE,
    PLURAL,
    RESTART_ATTEMPT_LABEL,
    VERSION,
    trainjob,
    worker_of_pod,
)
from trainer.config import ConfigError

if TYPE_CHECKING:
    from bench.config import Trial

TRAINJOB = JobKind(
    GROUP, VERSION, PLURAL, KIND, NODE, JOBSET_NAME_LABEL,
    "Kubeflow Trainer v2", "kubectl apply --server-side -k k8s/trainer", worker_of_pod,
)
JOBSET = ("jobset.x-k8s.io", "v1alpha2", "jobsets")
PREFLIGHT_JOB = "gnn-bench-preflight"


def true_condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return follow.true_conditions(obj or {}).get(kind)


class TrainJobHandle(JobHandle):
    """One TrainJob (and its JobSet), created or re-found by name."""

    record_name = "trainjob.json"
    controller_check = ("`kubectl -n kubeflow-system get pods`, and the JobSet controller: "
                        "`kubectl -n kubeflow-system get deploy jobset-controller-manager`; "
                        "docs/gke.md, step 3")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.jobset: dict[str, Any] | None = None

    def _jobset(self) -> dict[str, Any] | None:
        """This TrainJob's JobSet (None before the controller made it)."""
        found = self.client.get_object(*JOBSET, self.name)
        owners = ((found or {}).get("metadata") or {}).get("ownerReferences") or []
        if found is None or (self.uid and not any(r.get("uid") == self.uid for r in owners)):
            return None
        self.jobset = found
        return found

    def list_pods(self, job: dict[str, Any]) -> list[follow.PodInfo]:
        jobset = self._jobset()
        if jobset is None:
            return []
        attempt = str((jobset.get("status") or {}).get("restarts", 0))
        pods = self.client.list_pods(self.name, selector=f"{JOBSET_UID_LABEL}="
                                     f"{jobset['metadata']['uid']},{RESTART_ATTEMPT_LABEL}={attempt}")
        return [follow.pod_info(p, self.name, self.client.kind) for p in pods]

    def job_state(self, job: dict[str, Any],
                  pods: list[follow.PodInfo] | None = None) -> tuple[JobState, str | None]:
        if true_condition(job, "Complete"):
            return JobState.SUCCEEDED, None
        failed = true_condition(job, "Failed")
        if failed:
            reason = " ".join(x for x in (failed.get("reason"), failed.get("message")) if x)
            if failed.get("reason") == "ReachedMaxRestarts":
                reason += (f": the runtime allows backend.backoff_limit={self.opts.backoff_limit} "
                           "restarts (its failurePolicy.maxRestarts); raise both to survive more")
            return JobState.FAILED, reason or "the TrainJob failed"
        if true_condition(job, "Suspended"):
            return JobState.PENDING, None
        if true_condition(self.jobset, "Restarting"):
            return JobState.RESTARTING, None
        if pods is not None and follow.all_running_at(pods, self.expected_replicas(job)):
            return JobState.RUNNING, None
        return JobState.PENDING, None

    def finished_time(self, job: dict[str, Any]) -> float | None:
        return follow.condition_time(job, "Complete") or follow.condition_time(job, "Failed")

    def expected_replicas(self, job: dict[str, Any]) -> int:
        return int(((job.get("spec") or {}).get("trainer") or {}).get("numNodes") or 1)

    def restarts_of(self, job: dict[str, Any], pods: list[follow.PodInfo],
                    state: JobState) -> int:
        return int(((self.jobset or {}).get("status") or {}).get("restarts", 0))

    def refused_pod_creations(self) -> list[dict[str, Any]]:
        """The Job controller's ``FailedCreate`` events on the node Job."""
        return [e for e in self.client.job_events(f"{self.name}-{NODE}-0", kind="Job")
                if e.get("reason") == "FailedCreate"]

    def _failure_reason(self, operator_reason: str | None) -> str:
        """The trainer's own ``error:`` line, unless the restart budget ran out (that is the
        reason then, naming backend.backoff_limit)."""
        if operator_reason and "ReachedMaxRestarts" in operator_reason:
            self._log_tails = self._read_logs(200)
            return operator_reason
        return super()._failure_reason(operator_reason)


class TrainJobBackend:
    """Trials as Kubeflow Trainer v2 TrainJobs, configured by ``backend=trainjob``."""

    def __init__(self, config: TrainJobConfig):
        self.config = config

    def plan(self, trial: Trial) -> TrialSpec:
        return plan_on_volume(trial, self.config)

    def preflight(self, trial: Trial) -> None:
        """Trainer v2 is installed, the runtime exists and its restart budget is
        backend.backoff_limit; once per cluster and namespace, nothing for a dry run."""
        preflight_once(self.config, "trainjobs", self._check_runtime)

    def _check_runtime(self) -> None:
        opts = self.config
        client = KubeClient(opts, kind=TRAINJOB)
        client.get_job(PREFLIGHT_JOB)  # Trainer's CRD is served, the Role may get TrainJobs
        cluster_wide = opts.runtime_kind == "ClusterTrainingRuntime"
        plural = "clustertrainingruntimes" if cluster_wide else "trainingruntimes"
        runtime = client.get_object(GROUP, VERSION, plural, opts.runtime,
                                    namespaced=not cluster_wide)
        where = "" if cluster_wide else f" in namespace {opts.namespace}"
        if runtime is None:
            raise ConfigError(f"the {opts.runtime_kind} {opts.runtime!r} does not exist{where}: "
                              "apply the project's runtime with `kubectl apply -k "
                              "k8s/trainer/runtime` (docs/gke.md), or set backend.runtime")
        policy = (((runtime.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
            "failurePolicy") or {}
        budget = int(policy.get("maxRestarts", 0)) if policy else None
        if budget != opts.backoff_limit:
            have = "no failurePolicy (no restart at all)" if budget is None else \
                f"failurePolicy.maxRestarts={budget}"
            raise ConfigError(
                f"backend.backoff_limit={opts.backoff_limit} but the {opts.runtime_kind} "
                f"{opts.runtime}{where} has {have}: a TrainJob cannot change its runtime's "
                f"restart budget, so set backend.backoff_limit={budget or 0} or change "
                "maxRestarts in k8s/trainer/runtime/gnn-bench-torch.yaml and apply it")

    def submit(self, spec: TrialSpec) -> TrainJobHandle | DryRunHandle:
        manifest = trainjob(spec)
        if self.config.dry_run:
            return DryRunHandle(spec, manifest)
        handle = TrainJobHandle(spec, self.config, KubeClient(self.config, kind=TRAINJOB),
                                manifest)
        handle.start()
        return handle
