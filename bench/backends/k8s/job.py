"""The shared part of following one Kubernetes job as a trial: the handle both Kubernetes
backends build on (a PyTorchJob, bench/backends/k8s/handle.py; a TrainJob,
bench/backends/trainjob/handle.py), the dry-run handle, the once-per-cluster preflight.

``start`` creates the job, or follows the job of the same name when a re-run of the sweep
finds one (same spec, not failed); ``poll`` reads it and its pods; ``collect`` saves the pods'
log tails, copies the event files from the shared volume and writes a record of the job
(timestamps, per-pod restarts, problems); ``release`` deletes the job (Foreground) unless
``backend.keep_jobs``. ``sampler`` samples PodMetrics instead of local processes.

The job's pods are its own (by owner uid, never by name or label alone). A trial ends at once
when a worker is OOMKilled, and after ``backend.start_timeout_s`` when its pods are still not
running (image pull, scheduling, admission), with the reason and the fix.
"""

from __future__ import annotations

import re
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import rundir
from bench.backends.base import JobState, JobStatus, TrialSpec
from bench.backends.k8s import fetch, follow
from bench.backends.k8s.client import KubeClient
from bench.backends.k8s.config import ClusterConfig
from bench.backends.k8s.errors import Conflict, K8sError, is_transient
from bench.backends.k8s.manifests import (
    SPEC_HASH_ANNOTATION,
    pod_cores,
    pod_threads,
    to_yaml,
    volume_paths,
)
from bench.backends.k8s.metrics import PodMetrics
from bench.events import read_scalars
from bench.layout import TrialDir
from bench.sampling import Sampler
from rundir import CheckpointInfo, atomic_write_json, atomic_write_text
from trainer.config import ConfigError

# How long the API may stay unreachable while a job runs before the trial is given up.
LOST_CONTACT_S = 300.0
_CLUSTERS_ANSWERED: set[tuple[str, str | None, str | None, str]] = set()


def say(message: str) -> None:
    print(message, flush=True)


_say = say


class JobHandle(ABC):
    """One job (of ``client.kind``), created or re-found by name; a subclass says how its kind
    reports state, pods and restarts."""

    record_name = "k8s.json"  # what collect() writes about the job

    def __init__(
        self, spec: TrialSpec, opts: ClusterConfig, client: KubeClient, manifest: dict[str, Any]
    ):
        self.spec, self.opts, self.client, self.manifest = spec, opts, client, manifest
        self.name: str = manifest["metadata"]["name"]
        self.reattached = False
        self.submitted_at: float | None = None
        self.finished_at: float | None = None
        self.timestamps: dict[str, float | None] = {
            "submitted": None,
            "created": None,
            "all_running": None,
            "first_step": None,
            "first_epoch": None,
            "finished": None,
        }
        self.problems: list[str] = []
        self.pods: list[follow.PodInfo] = []
        self._last = JobStatus(JobState.PENDING)
        self._cancel_reason: str | None = None
        self._failing_since: float | None = None
        self._deleted = False
        self._log_tails: dict[str, str] | None = None  # kept once the pods may be gone
        self._metrics: PodMetrics | None = None
        self.uid: str | None = None  # the job's, once created or found
        self._restarts = 0  # the largest restart count seen (see restarts_of)
        self._pending_since: float | None = None  # since when not all pods are running

    # -- submission
    def start(self) -> None:
        """Create the job, or follow the existing one of the same name."""
        existing = self.client.get_job(self.name)
        if existing is not None:
            why_not = self._why_not_follow(existing)
            if why_not is None:
                return self._attach(existing)
            _say(
                f"{self.spec.trial_id}: replacing {self.client.kind.kind} "
                f"{self.opts.namespace}/{self.name}: {why_not}"
            )
            self.client.delete_job(self.name)
            self.client.wait_deleted(self.name)
        self.submitted_at = time.time()
        try:
            created = self.client.create_job(self.manifest)
        except Conflict:  # created meanwhile (e.g. a create retried after a lost answer)
            found = self.client.get_job(self.name)
            if found is None:
                raise
            return self._attach(found, submitted_here=True)
        self.timestamps["submitted"] = self.submitted_at
        self.timestamps["created"] = follow.parse_time(created["metadata"].get("creationTimestamp"))
        self.uid = created["metadata"].get("uid")

    def _why_not_follow(self, job: dict[str, Any]) -> str | None:
        """Why an existing job of this name must be replaced rather than followed (None: follow)."""
        metadata = job.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            return "it is being deleted"
        if self.spec.redo:
            return "redo=true"
        theirs = (metadata.get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
        ours = self.manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        if theirs != ours:
            return "its spec differs from this trial's (image, resources or command changed)"
        if self.job_state(job)[0] is JobState.FAILED:
            return "it failed before, and a failed trial runs again from scratch"
        return None

    def _attach(self, job: dict[str, Any], submitted_here: bool = False) -> None:
        created = follow.parse_time((job.get("metadata") or {}).get("creationTimestamp"))
        self.uid = (job.get("metadata") or {}).get("uid")
        self.reattached = not submitted_here
        self.submitted_at = self.submitted_at if submitted_here else (created or time.time())
        self.timestamps.update(submitted=self.submitted_at, created=created)
        state, _ = self.job_state(job)
        if state.finished:  # it finished while nobody watched: its own clock says when
            self.finished_at = self.finished_time(job)
        if not submitted_here:
            _say(
                f"{self.spec.trial_id}: following the existing {self.client.kind.kind} "
                f"{self.opts.namespace}/{self.name} ({state.value}) instead of submitting it again"
            )

    # -- what a kind says differently (a subclass overrides these)
    controller_check = "`kubectl -n kubeflow get pods`; docs/gke.md, step 3"

    @abstractmethod
    def job_state(self, job: dict[str, Any],
                  pods: list[follow.PodInfo] | None = None) -> tuple[JobState, str | None]:
        """The harness's state of the job and, for a failed one, its controller's reason."""

    @abstractmethod
    def finished_time(self, job: dict[str, Any]) -> float | None:
        """When the job finished, by its own conditions."""

    @abstractmethod
    def expected_replicas(self, job: dict[str, Any]) -> int:
        """How many pods the job runs when all are up."""

    def list_pods(self, job: dict[str, Any]) -> list[follow.PodInfo]:
        """The job's own pods now (never an earlier job's of the same name)."""
        return [follow.pod_info(p, self.name, self.client.kind)
                for p in self.client.list_pods(self.name, self.uid)]

    @abstractmethod
    def restarts_of(self, job: dict[str, Any], pods: list[follow.PodInfo],
                    state: JobState) -> int:
        """The restarts the job's controller counts against its budget."""

    @abstractmethod
    def refused_pod_creations(self) -> list[dict[str, Any]]:
        """Events saying the cluster refused to create the job's pods."""

    def pod_security_fix(self) -> str:
        return ("make the pods pass the namespace's Pod Security level (its label "
                "pod-security.kubernetes.io/enforce)")

    # -- TrialHandle
    def poll(self) -> JobStatus:
        if self._cancel_reason is not None:
            return JobStatus(
                JobState.CANCELLED,
                self._last.restarts,
                self._cancel_reason,
                self.submitted_at,
                self.finished_at,
            )
        if self._last.state.finished:
            return self._last
        try:
            job = self.client.get_job(self.name)
            same = job is not None and (not self.uid
                                        or (job.get("metadata") or {}).get("uid") == self.uid)
            pods = self.list_pods(job) if same else []
        except K8sError as exc:
            return self._on_poll_error(exc)
        self._failing_since = None
        if not same:
            return self._finish(JobState.FAILED,
                                f"the {self.client.kind.kind} was deleted outside the harness")
        self.pods = pods or self.pods
        if self.timestamps["all_running"] is None:
            self.timestamps["all_running"] = follow.all_running_at(
                pods, self.expected_replicas(job)
            )
        state, reason = self.job_state(job, pods)
        self._restarts = max(self._restarts, self.restarts_of(job, pods, state))
        self._last = JobStatus(state, self._restarts, None, self.submitted_at)
        if not state.finished:
            stuck = self._cannot_run(job, pods)
            if stuck is not None:
                self._log_tails = self._read_logs(self.opts.log_tail_lines)
                self._delete()
                return self._finish(JobState.FAILED, stuck)
        if state.finished:
            if state is JobState.FAILED:
                permanent = follow.permanent_failure(pods)
                reason = permanent[1] if permanent is not None else self._failure_reason(reason)
            return self._finish(state, reason, self.finished_time(job))
        return self._last

    def _cannot_run(self, job: dict[str, Any], pods: list[follow.PodInfo]) -> str | None:
        """Why the trial must end now: a worker failed permanently (Kubeflow's ExitCode rule,
        applied by the harness: a PyTorchJob's pods run with restartPolicy OnFailure, see
        k8s/manifests.py; a TrainJob's runtime fails the JobSet by itself, and the harness gets
        there first or as well), a worker OOMKilled, or pods not running for longer than
        ``backend.start_timeout_s`` (None: let it go on)."""
        permanent = follow.permanent_failure(pods)
        if permanent is not None:
            return permanent[1]
        oom = follow.oom_killed(pods)
        if oom is not None:
            limit = oom.memory_limit or self.opts.memory_limit or self.opts.memory
            return (f"{oom.worker or oom.name} (pod {oom.name}) was OOMKilled: its working set "
                    f"(/dev/shm included) passed the memory limit of {limit}: raise "
                    "backend.memory (and backend.memory_limit if set), e.g. "
                    f"backend.memory={_doubled(limit)}")
        waiting = follow.not_started(pods, self.expected_replicas(job))
        now = time.monotonic()
        if waiting is None:
            self._pending_since = None
            return None
        self._pending_since = self._pending_since or now
        waited = now - self._pending_since
        if waited < self.opts.start_timeout_s:
            return None
        within = f"for {waited:.0f} s (backend.start_timeout_s={self.opts.start_timeout_s:g})"
        for pod in waiting:
            if pod.unschedulable:
                return (f"pod {pod.name} could not be scheduled {within}: {pod.unschedulable}: "
                        "lower backend.cpu, backend.memory or backend.gpus, or add node "
                        "capacity (a larger node pool, or cluster autoscaling)")
        for pod in waiting:
            if pod.waiting and any(r in pod.waiting for r in
                                   ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                                    "ErrImageNeverPull")):
                return (f"pod {pod.name} cannot pull its image {within} ({pod.waiting}): push "
                        f"the trainer image and set backend.image=<registry>/<image>:<tag> "
                        f"(now {self.opts.image}; docs/gke.md, step 4)")
        for pod in waiting:
            if pod.waiting:
                return (f"pod {pod.name} has not started {within}: {pod.waiting}: see "
                        f"`kubectl -n {self.opts.namespace} describe pod {pod.name}`")
        try:
            refused = self.refused_pod_creations()
        except K8sError as exc:
            refused, self.problems = [], self.problems + [f"could not read events: {exc}"]
        if refused:
            message = " ".join(str(refused[-1].get("message") or "").split())
            fix = (self.pod_security_fix() if "PodSecurity" in message else
                   f"see `kubectl -n {self.opts.namespace} describe "
                   f"{self.client.kind.kind.lower()} {self.name}`")
            return f"the cluster refused to create the job's pods {within}: {message}: {fix}"
        missing = self.expected_replicas(job) - len(pods)
        return (f"{missing} of the job's pods were never created {within}: is "
                f"{self.client.kind.controller} running? ({self.controller_check})")

    def _on_poll_error(self, exc: K8sError) -> JobStatus:
        """A transient API failure keeps the last state for a while; others end the trial."""
        if not is_transient(exc.__cause__ or exc):
            return self._finish(JobState.FAILED, str(exc))
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        if now - self._failing_since > LOST_CONTACT_S:
            return self._finish(JobState.FAILED, f"lost contact with the cluster: {exc}")
        return self._last

    def _finish(
        self, state: JobState, reason: str | None, cluster_time: float | None = None
    ) -> JobStatus:
        if self.finished_at is None:  # seen finishing now; an already-finished job keeps its own
            self.finished_at = time.time()
        self.timestamps["finished"] = cluster_time or self.finished_at
        self._last = JobStatus(
            state, self._last.restarts, reason, self.submitted_at, self.finished_at
        )
        return self._last

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)  # the job's end time is the operator's condition (finished_time)

    def sampler(self, interval_s: float) -> Sampler:
        """The sampler of this trial's CPU and memory (PodMetrics of its pods)."""
        self._metrics = PodMetrics(self.client, self.name)
        return Sampler(self._metrics, interval_s)

    def progress(self) -> CheckpointInfo:
        """``checkpoints/last.json`` on the volume, through the file server."""
        run_dir = fetch.volume_path(self.spec.run_dir, self.opts.mount_path)
        try:
            return CheckpointInfo.parse(self.client.proxy_get(f"{run_dir}/{rundir.CHECKPOINT_INFO}"))
        except K8sError:
            return CheckpointInfo()  # no progress seen at this poll; the next one asks again

    def collect(self, dest: Path) -> None:
        """Logs, event files, summary.json and k8s.json into ``dest``."""
        trial = TrialDir(dest)
        self._save_logs(trial.logs)
        run_dir = fetch.volume_path(self.spec.run_dir, self.opts.mount_path)
        try:
            if not fetch.fetch_tree(self.client, f"{run_dir}/{rundir.EVENTS}", trial.events):
                self.problems.append(
                    f"no event files at {self.spec.run_dir}/{rundir.EVENTS} on the volume")
            fetch.fetch_file(self.client, f"{run_dir}/{rundir.SUMMARY}", trial.summary)
        except (K8sError, ValueError) as exc:
            self.problems.append(f"could not fetch the event files: {exc}")
            print(
                f"warning: {self.spec.trial_id}: could not fetch the event files: {exc}",
                file=sys.stderr,
                flush=True,
            )
        scalars = read_scalars(trial.events)
        self.timestamps["first_step"] = scalars.first_wall_time("train/loss_step")
        self.timestamps["first_epoch"] = scalars.first_wall_time("time/epoch_s")
        self._write_record(dest / self.record_name)

    def release(self) -> None:
        """Delete the job and its pods, unless ``backend.keep_jobs``."""
        if not self.opts.keep_jobs:
            self._delete()

    def logs(self, tail_lines: int = 50) -> str:
        tails = self._log_tails if self._log_tails is not None else self._read_logs(tail_lines)
        per_pod = max(1, tail_lines // max(1, len(tails)))
        return "\n".join(
            f"[{pod}] {line}"
            for pod, text in tails.items()
            for line in text.splitlines()[-per_pod:]
        )

    def cancel(self, reason: str) -> None:
        if self._last.state.finished or self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        self._log_tails = self._read_logs(self.opts.log_tail_lines)
        self._delete()
        self.finished_at = time.time()

    # -- fault injection
    def kill_worker(self, rank: int) -> bool:
        """Delete rank ``rank``'s pod (no grace period); False if it is not running now."""
        if self._cancel_reason is not None or self._last.state.finished:
            return False
        pod = next((p for p in self.pods if p.worker == f"rank{rank}"), None)
        if pod is None or pod.phase != "Running" or pod.deleting:
            return False
        try:
            deleted = self.client.delete_pod(pod.name, pod.uid or None)
        except K8sError as exc:
            problem = f"could not delete pod {pod.name} to inject a fault: {exc}"
            if problem not in self.problems:  # the injector tries again at every poll
                self.problems.append(problem)
            return False
        if deleted:
            _say(f"{self.spec.trial_id}: fault injected: deleted pod {pod.name} (rank {rank})")
        return deleted

    # -- helpers
    def _delete(self) -> None:
        if self._deleted:
            return
        try:
            self.client.delete_job(self.name)
            self._deleted = True
        except K8sError as exc:
            self.problems.append(f"could not delete the {self.client.kind.kind}: {exc}")
            print(
                f"warning: {self.spec.trial_id}: could not delete {self.client.kind.kind} "
                f"{self.name}: {exc}",
                file=sys.stderr,
                flush=True,
            )

    def _read_logs(self, tail_lines: int) -> dict[str, str]:
        """Each replica pod's log tail (and its previous container's, after a restart)."""
        tails: dict[str, str] = {}
        try:
            job = self.client.get_job(self.name)
            pods = self.list_pods(job) if job is not None else []
            for pod in sorted(pods, key=lambda p: int((p.worker or "rank0")[4:])):
                if pod.restarts:
                    tails[f"{pod.name}.previous"] = self.client.pod_log(pod.name, tail_lines, True)
                tails[pod.name] = self.client.pod_log(pod.name, tail_lines)
        except K8sError as exc:
            self.problems.append(f"could not read the pods' logs: {exc}")
        return tails

    def _save_logs(self, logs_dir: Path) -> None:
        if self._log_tails is None:
            self._log_tails = self._read_logs(self.opts.log_tail_lines)
        for pod, text in self._log_tails.items():
            atomic_write_text(logs_dir / f"{pod}.log", text)
        atomic_write_text(
            logs_dir / "workers.log",
            self.logs(self.opts.log_tail_lines * max(1, len(self._log_tails))) + "\n",
        )

    def _failure_reason(self, operator_reason: str | None) -> str:
        """The trainer's own ``error:`` line when a pod printed one, else the operator's reason."""
        tails = self._read_logs(200)
        self._log_tails = tails
        for text in tails.values():
            for line in reversed(text.splitlines()):
                if "error:" in line:
                    return line.split("error:", 1)[1].strip()
        return operator_reason or f"the {self.client.kind.kind} failed"

    def _write_record(self, path: Path) -> None:
        """k8s.json: where the trial ran and what the cluster said about it."""
        atomic_write_json(
            path,
            {
                "job": self.name,
                "uid": self.uid,
                "namespace": self.opts.namespace,
                "restarts": self._restarts,
                "api_server": self.client.host,
                "image": self.opts.image,
                "reattached": self.reattached,
                "timestamps": self.timestamps,
                "pods": {
                    p.name: {
                        "worker": p.worker,
                        "phase": p.phase,
                        "restarts": p.restarts,
                        "exit_code": p.exit_code,
                        "reason": p.reason,
                    }
                    for p in self.pods
                },
                "metrics_window_s": self._metrics.window_s if self._metrics else None,
                "problems": self.problems
                + ([self._metrics.problem] if self._metrics and self._metrics.problem else []),
            },
        )


def _doubled(quantity: str) -> str:
    """A memory quantity twice as large, for the OOM message's example (``4Gi`` -> ``8Gi``)."""
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(quantity))
    return f"{int(match.group(1)) * 2}{match.group(2)}" if match else str(quantity)


class DryRunHandle:
    """``backend.dry_run=true``: the manifest is written for review or GitOps, nothing runs."""

    def __init__(self, spec: TrialSpec, manifest: dict[str, Any]):
        self.spec = spec
        self.path = TrialDir(spec.trial_dir).manifest
        atomic_write_text(self.path, to_yaml(manifest))
        self.submitted_at = time.time()
        _say(f"{spec.trial_id}: dry run, wrote {self.path}")

    def poll(self) -> JobStatus:
        return JobStatus(
            JobState.CANCELLED,
            0,
            f"dry run (backend.dry_run=true): wrote {self.path}; no cluster contacted",
            self.submitted_at,
            self.submitted_at,
        )

    def pause(self, seconds: float) -> None:
        pass  # its poll says it is over at once

    def sampler(self, interval_s: float) -> Sampler:
        return Sampler(_NoReadings(), interval_s)

    def progress(self) -> CheckpointInfo:
        return CheckpointInfo()

    # Nothing ran, so there is nothing to collect, release, read, cancel or kill.
    def collect(self, dest: Path) -> None:
        return None

    def release(self) -> None:
        return None

    def logs(self, tail_lines: int = 50) -> str:
        return ""

    def cancel(self, reason: str) -> None:
        return None

    def kill_worker(self, rank: int) -> bool:
        return False


class _NoReadings:
    """The sampler's source for a dry run: no pods, so no readings."""

    min_interval_s = 0.0

    def read(self, t: float) -> list:
        return []


def plan_on_volume(trial, config: ClusterConfig) -> TrialSpec:
    """The spec of a trial on a Kubernetes backend: each pod (a worker) gets its own cores and
    threads, the workers write to ``<mount_path>/runs/<sweep>/<trial>/<run id>`` and read
    ``<mount_path>/datasets`` on the shared volume."""
    run_dir, data_root = volume_paths(config.mount_path, trial.sweep_name, trial.trial_id,
                                      TrialDir(trial.trial_dir).run_id())
    return TrialSpec.build(trial, config, run_dir=run_dir, data_root=data_root,
                           threads=pod_threads(config.cpu, config.cpu_limit),
                           cores=pod_cores(trial.workers, config))


def preflight_once(opts: ClusterConfig, check: str, probe) -> None:
    """Run ``probe()`` (a GET the harness's Role allows) once per cluster, namespace and
    ``check``, turning its K8sError into a ConfigError; nothing for a dry run."""
    cluster = (check, opts.kubeconfig, opts.context, opts.namespace)
    if opts.dry_run or cluster in _CLUSTERS_ANSWERED:
        return
    try:
        probe()
    except K8sError as exc:
        raise ConfigError(str(exc)) from exc
    _CLUSTERS_ANSWERED.add(cluster)
