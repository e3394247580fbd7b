"""The batch/v1 Job controller of kube-controller-manager, as JobSet's children need it.

One :meth:`JobController.reconcile` per Job and tick. Sources: the Kubernetes documentation
(concepts/workloads/controllers/job, tasks/job/pod-failure-policy, the "Pod Replacement
Policy" post for v1.34), which describes these behaviours of pkg/controller/job:

=====================================================  ==================================================
behaviour                                              where Kubernetes documents it
=====================================================  ==================================================
Indexed completion: one pod per index in               Job, "Completion mode": pods named
``[0, completions)``, at most ``parallelism``          ``$(job-name)-$(index)-$(random-string)``,
active; annotation and label                           index in the annotation and label
``batch.kubernetes.io/job-completion-index`` and       batch.kubernetes.io/job-completion-index and
env ``JOB_COMPLETION_INDEX``; with a ``subdomain``     env JOB_COMPLETION_INDEX; hostname
the pod's hostname is ``$(job-name)-$(index)``         ``$(job-name)-$(index)``
pod labels ``batch.kubernetes.io/job-name``,           Job, "Job labels"
``batch.kubernetes.io/controller-uid`` (and the
legacy ``job-name``, ``controller-uid``); a
controller ownerReference with blockOwnerDeletion
pods carry the finalizer                               Job, "Job tracking with finalizers"
``batch.kubernetes.io/job-tracking``, removed once
the pod is counted (so a force-deleted pod stays
until the controller has seen it end)
a pod counts as failed when its phase is Failed;       Job, "Pod replacement policy" (the default
without a podFailurePolicy also when it is             ``TerminatingOrFailed``, ``Failed`` with a
terminating (deletionTimestamp) and not succeeded      podFailurePolicy)
failures > ``backoffLimit`` (default 6): condition     Job, "Pod backoff failure policy" and "Job
``FailureTarget`` then ``Failed``, reason              termination and cleanup"
``BackoffLimitExceeded``, "Job has reached the
specified backoff limit"; under restartPolicy
OnFailure the sum of the pods' restartCount counts
podFailurePolicy: the first rule whose onExitCodes     tasks/job/pod-failure-policy; the API reference
(container, In/NotIn, exit code 0 never matches)       of PodFailurePolicyRule: FailJob, Ignore, Count
or onPodConditions match a failed pod decides:         (FailJob's reason PodFailurePolicy, message
FailJob fails the Job at once (reason                  "Container <c> for pod <ns>/<pod> failed with
``PodFailurePolicy``), Ignore does not count it,       exit code <n> matching FailJob rule at index
Count counts it; rules only apply with                 <i>")
restartPolicy Never
a failing Job deletes its active pods; ``Failed``      Job, "Job termination and cleanup" (v1.31+:
(and ``Complete``) is added only once no pod of the    the terminal condition waits for the pods)
Job is terminating any more
all indexes succeeded: ``SuccessCriteriaMet`` then     Job, "Job termination and cleanup";
``Complete`` (reason ``CompletionsReached``)           "Success policy"
a failed index's pod is created again after a          Job, "Pod backoff failure policy" (the delay
back-off of 10 s doubling (at most 6 min), times       is the controller's; scaled here as the
the cluster's ``time_scale``                           kubelet's are)
``suspend: true``: active pods deleted, none           Job, "Suspending a Job"
created, condition ``Suspended``
=====================================================  ==================================================

Not modelled: NonIndexed Jobs, backoffLimitPerIndex, successPolicy rules, activeDeadlineSeconds,
ttlSecondsAfterFinished, managedBy (JobSet's children need none of them).
"""

from __future__ import annotations

import copy
import time
from typing import Any

from .kinds import JOBS, PODS
from .store import now_rfc3339

INDEX = "batch.kubernetes.io/job-completion-index"
JOB_NAME = "batch.kubernetes.io/job-name"
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
TRACKING = "batch.kubernetes.io/job-tracking"
DEFAULT_BACKOFF_LIMIT = 6
POD_BACKOFF_S, POD_BACKOFF_MAX_S = 10.0, 360.0


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or []
                 if c["type"] == kind and c["status"] == "True"), None)


def finished(job: dict[str, Any]) -> str | None:
    """``Complete`` or ``Failed`` when the Job has that terminal condition."""
    status = job.get("status") or {}
    return next((k for k in ("Complete", "Failed") if condition(status, k)), None)


def exit_codes(pod: dict[str, Any], container: str | None = None) -> list[tuple[str, int]]:
    out = []
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (c.get("state") or {}).get("terminated")
        if term and (container is None or c.get("name") == container):
            out.append((c["name"], int(term.get("exitCode", 0))))
    return out


def failure_rule(job: dict[str, Any], pod: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """The first podFailurePolicy rule that matches a failed pod (index, rule)."""
    rules = ((job.get("spec") or {}).get("podFailurePolicy") or {}).get("rules") or []
    for i, rule in enumerate(rules):
        codes = rule.get("onExitCodes")
        if codes is not None:
            values = {int(v) for v in codes.get("values") or []}
            for _, code in exit_codes(pod, codes.get("containerName")):
                if code == 0:
                    continue
                if (code in values) == (codes.get("operator", "In") == "In"):
                    return i, {**rule, "_code": code}
        for pattern in rule.get("onPodConditions") or []:
            if any(c["type"] == pattern.get("type")
                   and c["status"] == pattern.get("status", "True")
                   for c in (pod.get("status") or {}).get("conditions") or []):
                return i, rule
    return None


class JobController:
    """Indexed batch/v1 Jobs through the cluster's API (admission applies to their pods)."""

    resources = (JOBS,)

    def __init__(self, cluster: Any):
        self.cluster, self.store = cluster, cluster.store
        self._next_create: dict[tuple[str, int], float] = {}  # (job uid, index) -> not before
        self._failures: dict[tuple[str, int], int] = {}

    def reconcile_all(self) -> None:
        for job in list(self.store.items(JOBS)):
            self.reconcile(job)

    def _pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid = job["metadata"]["uid"]
        return [p for p in self.store.items(PODS, job["metadata"]["namespace"])
                if any(r.get("controller") and r.get("uid") == uid
                       for r in p["metadata"].get("ownerReferences") or [])]

    def _event(self, job: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.cluster.record_event(job, type_, reason, message, "job-controller")

    def _set(self, status: dict[str, Any], kind: str, reason: str, message: str) -> None:
        conditions = status.setdefault("conditions", [])
        if any(c["type"] == kind for c in conditions):
            return
        stamp = now_rfc3339()
        conditions.append({"type": kind, "status": "True", "reason": reason, "message": message,
                           "lastProbeTime": stamp, "lastTransitionTime": stamp})

    def reconcile(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        if meta.get("deletionTimestamp"):
            for pod in self._pods(job):  # the garbage collector deletes them; count them off
                self._release(pod)
            return
        old = copy.deepcopy(job.get("status") or {})
        status = copy.deepcopy(old)
        pods = self._pods(job)
        completions = int(spec.get("completions") or spec.get("parallelism") or 1)
        parallelism = int(spec.get("parallelism", 1))
        policy = (spec.get("template") or {}).get("spec", {}).get("restartPolicy", "Never")
        limit = int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT))
        has_pfp = bool((spec.get("podFailurePolicy") or {}).get("rules"))
        status.setdefault("failed", 0)
        succeeded_idx = {int(i) for i in _indexes(status.get("completedIndexes"))}
        target = condition(status, "FailureTarget") or condition(status, "SuccessCriteriaMet")
        # count the pods that ended since the last pass (the finalizer says which are uncounted)
        for pod in pods:
            if TRACKING not in (pod["metadata"].get("finalizers") or []):
                continue
            phase = (pod.get("status") or {}).get("phase")
            terminating = bool(pod["metadata"].get("deletionTimestamp"))
            if phase == "Succeeded":
                succeeded_idx.add(int(pod["metadata"]["annotations"][INDEX]))
                self._release(pod)
            elif phase == "Failed" or (terminating and not has_pfp):
                index = int(pod["metadata"]["annotations"][INDEX])
                rule = failure_rule(job, pod) if phase == "Failed" and policy == "Never" else None
                if rule is not None and rule[1]["action"] == "Ignore":
                    pass
                elif rule is not None and rule[1]["action"] == "FailJob" and target is None:
                    code = rule[1].get("_code")
                    container = rule[1].get("onExitCodes", {}).get("containerName") or \
                        exit_codes(pod)[0][0]
                    self._set(status, "FailureTarget", "PodFailurePolicy",
                              f"Container {container} for pod {meta['namespace']}/"
                              f"{pod['metadata']['name']} failed with exit code {code} matching "
                              f"FailJob rule at index {rule[0]}")
                    status["failed"] += 1
                else:
                    status["failed"] += 1
                key = (meta["uid"], index)
                self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(POD_BACKOFF_MAX_S, POD_BACKOFF_S * 2 ** (self._failures[key] - 1))
                self._next_create[key] = time.monotonic() + delay * self.cluster.time_scale
                self._release(pod)
        status["completedIndexes"] = _ranges(sorted(succeeded_idx))
        status["succeeded"] = len(succeeded_idx)
        if condition(status, "FailureTarget") is None and condition(status, "SuccessCriteriaMet") \
                is None:
            restarts = sum(int(c.get("restartCount", 0)) for p in pods
                           for c in (p.get("status") or {}).get("containerStatuses") or [])
            if status["failed"] > limit or (policy == "OnFailure" and limit and restarts >= limit):
                self._set(status, "FailureTarget", "BackoffLimitExceeded",
                          "Job has reached the specified backoff limit")
            elif len(succeeded_idx) >= completions:
                self._set(status, "SuccessCriteriaMet", "CompletionsReached",
                          "Reached expected number of succeeded pods")
        live = [p for p in self._pods(job) if not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        ending = condition(status, "FailureTarget") or condition(status, "SuccessCriteriaMet")
        suspended = bool(spec.get("suspend"))
        if ending or suspended:
            for pod in live:
                self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
                self._event(job, "Normal", "SuccessfulDelete",
                            f"Deleted pod: {pod['metadata']['name']}")
            live = []
        elif not finished(job):
            if status.get("startTime") is None:
                status["startTime"] = now_rfc3339()
            # a terminating pod is replaced at once, or (podReplacementPolicy Failed, the
            # default with a podFailurePolicy) only once it has failed
            present = {int(p["metadata"]["annotations"][INDEX]) for p in self._pods(job)
                       if (p.get("status") or {}).get("phase") != "Failed"
                       and (has_pfp or not p["metadata"].get("deletionTimestamp"))}
            for index in range(completions):
                if len(live) >= parallelism:
                    break
                if index in succeeded_idx or index in present:
                    continue
                if time.monotonic() < self._next_create.get((meta["uid"], index), 0.0):
                    continue
                live.append(self._create_pod(job, index))
        terminating = [p for p in self._pods(job) if p["metadata"].get("deletionTimestamp")
                       or (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                       and ending]
        status["active"] = len([p for p in self._pods(job)
                                if not p["metadata"].get("deletionTimestamp")
                                and (p.get("status") or {}).get("phase")
                                not in ("Succeeded", "Failed")])
        status["ready"] = sum(1 for p in self._pods(job) if _ready(p))
        status["terminating"] = len([p for p in self._pods(job)
                                     if p["metadata"].get("deletionTimestamp")])
        if ending and not terminating and not finished({"status": status}):
            kind = "Failed" if ending["type"] == "FailureTarget" else "Complete"
            self._set(status, kind, ending["reason"], ending["message"])
            if kind == "Complete":
                status["completionTime"] = now_rfc3339()
            if kind == "Failed":
                self._event(job, "Warning", ending["reason"], ending["message"])
            else:
                self._event(job, "Normal", "Completed", "Job completed")
        if suspended and not condition(status, "Suspended"):
            self._set(status, "Suspended", "JobSuspended", "Job suspended")
        elif not suspended and condition(status, "Suspended"):
            status["conditions"] = [c for c in status["conditions"] if c["type"] != "Suspended"]
        if status != old:
            job["status"] = status
            self.store.update(JOBS, job)

    def _release(self, pod: dict[str, Any]) -> None:
        finalizers = pod["metadata"].get("finalizers") or []
        if TRACKING in finalizers:
            pod["metadata"]["finalizers"] = [f for f in finalizers if f != TRACKING]
            self.store.update(PODS, pod)

    def _create_pod(self, job: dict[str, Any], index: int) -> dict[str, Any]:
        meta = job["metadata"]
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        pod_meta = template.get("metadata") or {}
        labels = {**(pod_meta.get("labels") or {}), JOB_NAME: meta["name"],
                  CONTROLLER_UID: meta["uid"], "job-name": meta["name"],
                  "controller-uid": meta["uid"], INDEX: str(index)}
        annotations = {**(pod_meta.get("annotations") or {}), INDEX: str(index)}
        spec = template.get("spec") or {}
        if spec.get("subdomain"):
            spec["hostname"] = f"{meta['name']}-{index}"
        for container in spec.get("containers") or []:
            env = container.setdefault("env", [])
            if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                env.insert(0, {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                    "fieldPath": f"metadata.annotations['{INDEX}']"}}})
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": f"{meta['name']}-{index}-", "labels": labels,
                             "annotations": annotations, "finalizers": [TRACKING],
                             "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                                  "name": meta["name"], "uid": meta["uid"],
                                                  "controller": True,
                                                  "blockOwnerDeletion": True}]},
                "spec": spec}
        try:
            pod = self.cluster.api_create(PODS, meta["namespace"], body)
        except Exception as exc:  # noqa: BLE001 - admission: the event, then a later try
            message = getattr(exc, "message", str(exc))
            self._event(job, "Warning", "FailedCreate", f"Error creating: {message}")
            key = (meta["uid"], index)
            self._next_create[key] = time.monotonic() + POD_BACKOFF_S * self.cluster.time_scale
            return {}
        self._event(job, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        return pod


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or []) and \
        not pod["metadata"].get("deletionTimestamp")


def _indexes(text: str | None) -> list[int]:
    out: list[int] = []
    for part in filter(None, (text or "").split(",")):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def _ranges(indexes: list[int]) -> str:
    """``completedIndexes`` as the API writes it (``0-2,4``)."""
    parts, start = [], None
    for i, value in enumerate(indexes):
        if start is None:
            start = value
        if i + 1 == len(indexes) or indexes[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)
