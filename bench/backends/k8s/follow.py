"""Reading a PyTorchJob's state: conditions, replica pods, timestamps (pure functions).

The training operator reports a job through ``status.conditions`` (``Created``, ``Running``,
``Restarting``, ``Succeeded``, ``Failed``; ``Suspended`` when suspended) and its pods through
their phases and container statuses. These functions turn the API's dicts into the harness's
:class:`~bench.backends.base.JobState` and small dataclasses; the handle does the calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import rundir
from bench.backends.base import JobState
from bench.backends.k8s.kinds import PYTORCHJOB, JobKind

_ACTIVE = {
    "Restarting": JobState.RESTARTING,
    "Running": JobState.RUNNING,
    "Created": JobState.PENDING,
    "Suspended": JobState.PENDING,
}
_PRIORITY = ("Restarting", "Running", "Suspended", "Created")  # among equal transition times


def parse_time(text: str | None) -> float | None:
    """Unix seconds of an RFC 3339 timestamp as the API writes them (``2026-11-28T12:00:05Z``)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def true_conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The job's conditions whose status is True, by type."""
    conditions = (job.get("status") or {}).get("conditions") or []
    return {c.get("type"): c for c in conditions if str(c.get("status")) == "True"}


def job_state(job: dict[str, Any]) -> tuple[JobState, str | None]:
    """The harness's state of a job and, for a failed one, the operator's reason."""
    conditions = true_conditions(job)
    if "Succeeded" in conditions:
        return JobState.SUCCEEDED, None
    if "Failed" in conditions:
        failed = conditions["Failed"]
        text = " ".join(x for x in (failed.get("reason"), failed.get("message")) if x)
        return JobState.FAILED, text or "the PyTorchJob failed"
    active = [t for t in _PRIORITY if t in conditions]
    if not active:
        return JobState.PENDING, None
    latest = max(
        active,
        key=lambda t: (
            parse_time(conditions[t].get("lastTransitionTime")) or 0,
            -_PRIORITY.index(t),
        ),
    )
    return _ACTIVE[latest], None


def condition_time(job: dict[str, Any], kind: str) -> float | None:
    """When the condition ``kind`` last became True (unix seconds), if it is True."""
    condition = true_conditions(job).get(kind)
    return parse_time(condition.get("lastTransitionTime")) if condition else None


def expected_replicas(job: dict[str, Any]) -> int:
    """Pods the job asks for (Master + Workers)."""
    specs = (job.get("spec") or {}).get("pytorchReplicaSpecs") or {}
    return sum(int(s.get("replicas", 1)) for s in specs.values())


@dataclass
class PodInfo:
    """What the harness keeps of one replica pod."""

    name: str
    worker: str | None  # rank<n>
    phase: str
    restarts: int  # of every container and init container (what the operator sums)
    running_since: float | None  # the training container's current start
    exit_code: int | None  # of the last termination, if any
    reason: str | None  # of the last termination, if any (OOMKilled, Error, Completed)
    message: str | None = None  # of the last termination: the kubelet's copy of the trainer's
    # failure record (terminationMessagePath), or the log's tail (FallbackToLogsOnError)
    uid: str = ""
    owner_uid: str | None = None  # the controller's (the PyTorchJob's) uid
    deleting: bool = False
    waiting: str | None = None  # "<container>: <reason>: <message>" of a container not started
    unschedulable: str | None = None  # the scheduler's message while PodScheduled is False
    memory_limit: str | None = None  # of the training container


def _waiting(status: dict[str, Any]) -> str | None:
    """Why a pod's containers have not started: the first init container not done, else the
    first container waiting for more than its creation ("<container>: <reason>: <message>")."""
    for c in status.get("initContainerStatuses") or []:
        state = c.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode") == 0:
            continue
        wait = state.get("waiting") or {}
        if wait.get("reason") not in (None, "", "PodInitializing", "ContainerCreating"):
            message = " ".join(str(wait.get("message") or "").split())
            return f"{c.get('name')}: {wait['reason']}" + (f": {message}" if message else "")
        if state.get("running") or state.get("terminated"):
            return f"{c.get('name')}: the init container has not finished (it waits for the master)"
        return None
    for c in status.get("containerStatuses") or []:
        wait = (c.get("state") or {}).get("waiting") or {}
        if wait.get("reason") not in (None, "", "PodInitializing", "ContainerCreating"):
            message = " ".join(str(wait.get("message") or "").split())
            return f"{c.get('name')}: {wait['reason']}" + (f": {message}" if message else "")
    return None


def pod_info(pod: dict[str, Any], job: str, kind: JobKind = PYTORCHJOB) -> PodInfo:
    status = pod.get("status") or {}
    container = next(
        (c for c in status.get("containerStatuses") or [] if c.get("name") == kind.container), {}
    )
    state = container.get("state") or {}
    terminated = (
        state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
    )
    metadata = pod.get("metadata") or {}
    name = metadata.get("name", "")
    owner = next((r.get("uid") for r in metadata.get("ownerReferences") or []
                  if r.get("controller")), None)
    scheduled = next((c for c in status.get("conditions") or []
                      if c.get("type") == "PodScheduled"), {})
    spec_container = next((c for c in (pod.get("spec") or {}).get("containers") or []
                           if c.get("name") == kind.container), {})
    return PodInfo(
        name=name,
        worker=kind.worker(metadata, job),
        phase=status.get("phase") or "Unknown",
        restarts=sum(int(c.get("restartCount") or 0) for key in
                     ("initContainerStatuses", "containerStatuses") for c in status.get(key) or []),
        running_since=parse_time((state.get("running") or {}).get("startedAt")),
        exit_code=terminated.get("exitCode"),
        reason=terminated.get("reason"),
        message=terminated.get("message"),
        uid=metadata.get("uid", ""),
        owner_uid=owner,
        deleting=bool(metadata.get("deletionTimestamp")),
        waiting=_waiting(status),
        unschedulable=(" ".join(str(scheduled.get("message") or "").split()) or "unschedulable")
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
        else None,
        memory_limit=((spec_container.get("resources") or {}).get("limits") or {}).get("memory"),
    )


def all_running_at(pods: list[PodInfo], expected: int) -> float | None:
    """When the last of the ``expected`` pods started running, if all of them are running now."""
    running = [p.running_since for p in pods if p.phase == "Running" and p.running_since]
    if expected < 1 or len(running) < expected:
        return None
    return max(running)


def restarts(pods: list[PodInfo]) -> int:
    """Restarts of the job as the training operator counts them against ``backoffLimit``: the
    restartCount of every container and init container, summed over the job's Running pods
    (kubeflow/trainer v1.9, pkg/core/job.go PastBackoffLimit). One lost pod costs about one
    restart of every other replica, so a fault at ``workers`` replicas costs ``workers - 1``."""
    return sum(p.restarts for p in pods if p.phase == "Running")


def oom_killed(pods: list[PodInfo]) -> PodInfo | None:
    """A pod whose training container was killed for passing its memory limit."""
    return next((p for p in pods if p.reason == "OOMKilled"), None)


def permanent_failure(pods: list[PodInfo]) -> tuple[PodInfo, str] | None:
    """A pod whose trainer exited with a code no restart can fix (Kubeflow's ExitCode rule,
    ``rundir.retryable``: 1-127), and the trainer's own ``error:`` line (from its failure
    record in the termination message; else the last line the kubelet kept of its log). An
    OOMKilled container (137) or a killed one is retryable, and a worker whose peer died exits
    200: neither is here."""
    for p in pods:
        if not p.exit_code or rundir.retryable(p.exit_code) or p.reason == "OOMKilled":
            continue
        record = rundir.FailureRecord.parse(p.message)
        if record is not None:
            return p, record.error
        lines = [line.strip() for line in (p.message or "").splitlines() if line.strip()]
        error = next((line[len("error:"):].strip() for line in reversed(lines)
                      if line.startswith("error:")), lines[-1] if lines else "")
        return p, (f"{p.worker or p.name} (pod {p.name}) exited with code {p.exit_code}, which no "
                   f"restart can fix" + (f": {error}" if error else f"; see logs/{p.name}.log"))
    return None


def not_started(pods: list[PodInfo], expected: int) -> list[PodInfo] | None:
    """The pods that keep the job from running (None: all ``expected`` pods are up)."""
    up = [p for p in pods if p.phase in ("Running", "Succeeded") and not p.deleting]
    if len(up) >= expected:
        return None
    return [p for p in pods if p not in up]
