"""The JobSet controller v0.12.0 (kubernetes-sigs/jobset), rebuilt from its source.

One :meth:`JobSetController.reconcile` per JobSet and tick. Sources (tag v0.12.0):

=====================================================  ==================================================
behaviour                                              where JobSet does it
=====================================================  ==================================================
defaults: successPolicy All, startupPolicy AnyOrder,   pkg/webhooks/jobset_webhook.go Default
completionMode Indexed, pod restartPolicy
OnFailure, network.enableDNSHostnames and
publishNotReadyAddresses true, rule names
``failurePolicyRule<i>``
child Job ``<jobset>-<replicatedJob>-<index>``, on     pkg/util/placement GenJobName;
it and its pod template the labels and annotations     controllers/jobset_controller.go
jobset-name, jobset-uid, replicatedjob-name,           labelAndAnnotateObject, constructJob
restart-attempt (= status.restarts), replicas,
global-replicas, job-index, job-key (sha1 of
``<ns>/<job>``), job-global-index, group-name,
group-replicas, job-group-index; ``subdomain`` =
network.subdomain or the JobSet's name
a headless Service named after the subdomain,          jobset_controller.go createHeadlessSvcIfNecessary
selecting ``jobset-name``, publishNotReadyAddresses
children = Jobs whose controller is the JobSet; one    jobset_controller.go getChildJobs
whose restart-attempt label is below
status.restarts is "previous" and deleted with
Foreground propagation
a finished JobSet deletes its active Jobs              jobset_controller.go reconcile
Recreate: a Job is created again once its previous     jobset_types.go (JobSetRestartStrategy);
iteration is gone; BlockingRecreate: no Job while      jobset_controller.go constructJobsFromTemplate,
any previous one remains                               shouldCreateJob
a failed child Job: no failurePolicy -> Failed,        controllers/failure_policy.go
``FailedJobs``; else the first rule (in order)         executeFailurePolicy,
matching a failed Job by onJobFailureReasons,          findFirstFailedPolicyRuleAndJob,
onJobFailureMessagePatterns (regex) and                ruleIsApplicable, restartJobSetActionApplier,
targetReplicatedJobs applies its action, none          failJobSetActionApplier
matching -> RestartJobSet; RestartJobSet with
restartsCountTowardsMax >= maxRestarts -> Failed
``ReachedMaxRestarts`` "jobset failed due to
reaching max number of restarts (first failed job:
<job>)", else restarts + 1 (and
restartsCountTowardsMax + 1) and ``Restarting``
True, reason ``FailurePolicy_<rule>`` or
``DefaultFailurePolicy``; RestartJobSetAndIgnore-
MaxRestarts does not count; FailJobSet -> Failed
``FailJobSetFailurePolicyAction``; one action per
reconcile, whatever the number of failed Jobs
all Jobs ready -> ``Restarting`` False (JobsReady)     jobset_controller.go reconcile, allJobsReady
successPolicy All/Any -> ``Completed``                 controllers/success_policy.go,
(``AllJobsCompleted``), terminalState                  setJobSetCompletedCondition
conditions: a new status replaces the old one and      jobset_controller.go updateCondition
its transition time; same status, other reason:
replaced, time kept
suspend: children suspended, ``Suspended`` True        jobset_controller.go suspendJobs,
(``SuspendedJobs``), on resume False (``ResumeJobs``)  resumeJobsIfNecessary
status.replicatedJobsStatus ready (succeeded +         jobset_controller.go
ready >= min(parallelism, completions)), succeeded,    calculateReplicatedJobStatuses
failed, active, suspended
ttlSecondsAfterFinished deletes the finished JobSet    controllers/ttl_after_finished.go
(Foreground)
a Job that cannot be created (a name still held):      jobset_controller.go createJobs, reconcile
event ``JobCreationFailed``, retried next reconcile
=====================================================  ==================================================

Not modelled: startupPolicy InOrder, dependsOn, coordinator, volumeClaimPolicies, exclusive
placement, the RestartJob actions and InPlaceRestart (feature gates off by default), managedBy.
"""

from __future__ import annotations

import copy
import hashlib
import re
import time
from typing import Any

from .jobs import finished as job_finished
from .kinds import JOBS, JOBSETS, SERVICES
from .store import ApiError, now_rfc3339, parse_rfc3339

PREFIX = "jobset.sigs.k8s.io/"
NAME, UID, RJOB = PREFIX + "jobset-name", PREFIX + "jobset-uid", PREFIX + "replicatedjob-name"
RESTARTS = PREFIX + "restart-attempt"
JOB_INDEX = PREFIX + "job-index"
MAX_RESTARTS_MESSAGE = "jobset failed due to reaching max number of restarts"


def default(js: dict[str, Any]) -> None:
    """The mutating webhook's defaults (pkg/webhooks/jobset_webhook.go Default)."""
    spec = js.setdefault("spec", {})
    spec.setdefault("successPolicy", {"operator": "All"})
    spec.setdefault("startupPolicy", {"startupPolicyOrder": "AnyOrder"})
    for rjob in spec.get("replicatedJobs") or []:
        rjob.setdefault("replicas", 1)
        rjob.setdefault("groupName", "default")
        job_spec = rjob.setdefault("template", {}).setdefault("spec", {})
        job_spec.setdefault("completionMode", "Indexed")
        pod_spec = job_spec.setdefault("template", {}).setdefault("spec", {})
        pod_spec.setdefault("restartPolicy", "OnFailure")
    network = spec.setdefault("network", {})
    network.setdefault("enableDNSHostnames", True)
    network.setdefault("publishNotReadyAddresses", True)
    policy = spec.get("failurePolicy")
    if policy is not None:
        policy.setdefault("restartStrategy", "Recreate")
        for i, rule in enumerate(policy.get("rules") or []):
            rule.setdefault("name", f"failurePolicyRule{i}")


def subdomain(js: dict[str, Any]) -> str:
    return ((js.get("spec") or {}).get("network") or {}).get("subdomain") or js["metadata"]["name"]


def true(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or []
                 if c["type"] == kind and c["status"] == "True"), None)


class JobSetController:
    resources = (JOBSETS,)

    def __init__(self, cluster: Any):
        self.cluster, self.store = cluster, cluster.store

    def reconcile_all(self) -> None:
        for js in list(self.store.items(JOBSETS)):
            self.reconcile(js)

    def _event(self, js: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.cluster.record_event(js, type_, reason, message, "jobset-controller")

    def set_condition(self, js: dict[str, Any], status: dict[str, Any], kind: str, value: str,
                      reason: str, message: str, type_: str = "Normal") -> None:
        """updateCondition: a changed status replaces the condition and its time; the same
        status with another reason or message keeps the time; an event for each change."""
        conditions = status.setdefault("conditions", [])
        new = {"type": kind, "status": value, "reason": reason, "message": message,
               "lastTransitionTime": now_rfc3339()}
        for i, current in enumerate(conditions):
            if current["type"] != kind:
                continue
            if current["status"] != value:
                conditions[i] = new
            elif current.get("reason") != reason or current.get("message") != message:
                conditions[i] = {**new, "lastTransitionTime": current["lastTransitionTime"]}
            else:
                return
            self._event(js, type_, reason, message)
            return
        if value == "True":
            conditions.append(new)
            self._event(js, type_, reason, message)

    def _children(self, js: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        uid, restarts = js["metadata"]["uid"], int((js.get("status") or {}).get("restarts", 0))
        out: dict[str, list[dict[str, Any]]] = {"active": [], "successful": [], "failed": [],
                                                "previous": []}
        for job in self.store.items(JOBS, js["metadata"]["namespace"]):
            if not any(r.get("controller") and r.get("uid") == uid
                       for r in job["metadata"].get("ownerReferences") or []):
                continue
            if int((job["metadata"].get("labels") or {}).get(RESTARTS, 0)) < restarts:
                out["previous"].append(job)
                continue
            kind = job_finished(job)
            out[{"Complete": "successful", "Failed": "failed", None: "active"}[kind]].append(job)
        return out

    def reconcile(self, js: dict[str, Any]) -> None:
        if js["metadata"].get("deletionTimestamp"):
            return
        default(js)  # an object created before defaulting (the webhook ran at create time)
        old = copy.deepcopy(js.get("status") or {})
        status = copy.deepcopy(old)
        status.setdefault("restarts", 0)
        js["status"] = status
        jobs = self._children(js)
        status["replicatedJobsStatus"] = self._rjob_statuses(js, jobs)
        spec = js["spec"]
        if status.get("terminalState"):
            self._delete(jobs["active"])
            ttl = spec.get("ttlSecondsAfterFinished")
            done = max((parse_rfc3339(c.get("lastTransitionTime")) or 0)
                       for c in status.get("conditions") or [{}])
            if ttl is not None and time.time() >= done + int(ttl):
                self.store.delete(JOBSETS, js["metadata"]["namespace"], js["metadata"]["name"],
                                  {"propagationPolicy": "Foreground"})
            return self._save(js, old)
        self._delete(jobs["previous"])
        suspended = bool(spec.get("suspend"))
        total = sum(int(r["replicas"]) for r in spec.get("replicatedJobs") or [])
        ready = sum(s["ready"] + s["succeeded"] for s in status["replicatedJobsStatus"])
        if not suspended and ready == total:
            self.set_condition(js, status, "Restarting", "False", "JobsReady",
                               "all jobs are ready")
        if jobs["failed"]:
            self._failure_policy(js, status, jobs["failed"])
            return self._save(js, old)
        if jobs["successful"]:
            policy = spec["successPolicy"]
            targets = policy.get("targetReplicatedJobs") or []
            matching = [j for j in jobs["successful"]
                        if not targets or j["metadata"]["labels"].get(RJOB) in targets]
            expected = 1 if policy["operator"] == "Any" else sum(
                int(r["replicas"]) for r in spec["replicatedJobs"]
                if not targets or r["name"] in targets)
            if len(matching) >= expected:
                self.set_condition(js, status, "Completed", "True", "AllJobsCompleted",
                                   "jobset completed successfully")
                self.set_condition(js, status, "Restarting", "False", "JobSetCompleted",
                                   "jobset completed successfully")
                status["terminalState"] = "Completed"
                return self._save(js, old)
        self._headless_service(js)
        blocking = spec.get("failurePolicy", {}).get("restartStrategy") == "BlockingRecreate"
        if not (blocking and jobs["previous"]):
            names = {j["metadata"]["name"] for group in jobs.values() for j in group}
            for rjob in spec.get("replicatedJobs") or []:
                for index in range(int(rjob["replicas"])):
                    name = f"{js['metadata']['name']}-{rjob['name']}-{index}"
                    if name not in names:
                        self._create_job(js, rjob, index, name)
        for job in jobs["active"]:
            if bool((job.get("spec") or {}).get("suspend")) != suspended:
                job["spec"]["suspend"] = suspended
                self.store.update(JOBS, job, bump_generation=True)
        if suspended:
            self.set_condition(js, status, "Suspended", "True", "SuspendedJobs",
                               "jobset is suspended")
            self.set_condition(js, status, "Restarting", "False", "JobSetSuspended",
                               "jobset is suspended")
        elif any(c["type"] == "Suspended" for c in status.get("conditions") or []):
            self.set_condition(js, status, "Suspended", "False", "ResumeJobs",
                               "jobset is resumed")
        self._save(js, old)

    def _save(self, js: dict[str, Any], old: dict[str, Any]) -> None:
        if js["status"] != old:
            self.store.update(JOBSETS, js)

    def _rjob_statuses(self, js, jobs) -> list[dict[str, Any]]:
        counts = {r["name"]: {"name": r["name"], "ready": 0, "succeeded": 0, "failed": 0,
                              "active": 0, "suspended": 0}
                  for r in js["spec"].get("replicatedJobs") or []}
        for job in jobs["active"]:
            c = counts.get(job["metadata"]["labels"].get(RJOB))
            if c is None:
                continue
            spec, st = job.get("spec") or {}, job.get("status") or {}
            pods = min(int(spec.get("parallelism", 1)),
                       int(spec.get("completions") or spec.get("parallelism", 1)))
            c["ready"] += int(st.get("succeeded", 0)) + int(st.get("ready", 0)) >= pods
            c["active"] += int(st.get("active", 0)) > 0
            c["suspended"] += bool(spec.get("suspend"))
        for key, group in (("succeeded", "successful"), ("failed", "failed")):
            for job in jobs[group]:
                c = counts.get(job["metadata"]["labels"].get(RJOB))
                if c is not None:
                    c[key] += 1
        return list(counts.values())

    def _failure_policy(self, js, status, failed) -> None:
        policy = js["spec"].get("failurePolicy")

        def failed_at(job):
            cond = next(c for c in job["status"]["conditions"]
                        if c["type"] == "Failed" and c["status"] == "True")
            return parse_rfc3339(cond.get("lastTransitionTime")) or 0, cond

        first = min(failed, key=lambda j: failed_at(j)[0])
        if policy is None:
            return self._fail(js, status, "FailedJobs",
                              f"jobset failed due to one or more job failures (first failed "
                              f"job: {first['metadata']['name']})")
        rule, job = None, first
        for candidate in policy.get("rules") or []:
            matching = [j for j in failed if self._applies(candidate, j, failed_at(j)[1])]
            if matching:
                rule, job = candidate, min(matching, key=lambda j: failed_at(j)[0])
                break
        action = rule["action"] if rule else "RestartJobSet"
        name = job["metadata"]["name"]
        if action == "FailJobSet":
            return self._fail(js, status, "FailJobSetFailurePolicyAction",
                              f"applying FailJobSet failure policy action (first failed job: "
                              f"{name})")
        counts = action == "RestartJobSet"
        if counts and int(status.get("restartsCountTowardsMax", 0)) >= \
                int(policy.get("maxRestarts", 0)):
            return self._fail(js, status, "ReachedMaxRestarts",
                              f"{MAX_RESTARTS_MESSAGE} (first failed job: {name})")
        status["restarts"] = int(status.get("restarts", 0)) + 1
        if counts:
            status["restartsCountTowardsMax"] = int(status.get("restartsCountTowardsMax", 0)) + 1
        reason = f"FailurePolicy_{rule['name']}" if rule else "DefaultFailurePolicy"
        what = "RestartJobSet" if counts else "RestartJobSetAndIgnoreMaxRestarts"
        message = f"applying {what} failure policy action (first failed job: {name})"
        self._event(js, "Warning", f"{what}FailurePolicyAction", message)
        self.set_condition(js, status, "Restarting", "True", reason, message, "Warning")

    @staticmethod
    def _applies(rule, job, cond) -> bool:
        reasons = rule.get("onJobFailureReasons") or []
        if reasons and cond.get("reason") not in reasons:
            return False
        patterns = rule.get("onJobFailureMessagePatterns") or []
        if patterns and not any(re.search(p, cond.get("message") or "") for p in patterns):
            return False
        targets = rule.get("targetReplicatedJobs") or []
        parent = (job["metadata"].get("labels") or {}).get(RJOB)
        return bool(parent) and (not targets or parent in targets)

    def _fail(self, js, status, reason: str, message: str) -> None:
        self.set_condition(js, status, "Failed", "True", reason, message, "Warning")
        self.set_condition(js, status, "Restarting", "False", "JobSetFailed", "jobset failed")
        status["terminalState"] = "Failed"

    def _delete(self, jobs: list[dict[str, Any]]) -> None:
        for job in jobs:
            if not job["metadata"].get("deletionTimestamp"):
                self.store.delete(JOBS, job["metadata"]["namespace"], job["metadata"]["name"],
                                  {"propagationPolicy": "Foreground"})

    def _owner(self, js) -> dict[str, Any]:
        return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
                "name": js["metadata"]["name"], "uid": js["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True}

    def _headless_service(self, js) -> None:
        ns, name = js["metadata"]["namespace"], subdomain(js)
        if not js["spec"]["network"].get("enableDNSHostnames") or \
                self.store.peek(SERVICES, ns, name) is not None:
            return
        self.cluster.api_create(SERVICES, ns, {
            "metadata": {"name": name, "ownerReferences": [self._owner(js)]},
            "spec": {"clusterIP": "None", "selector": {NAME: js["metadata"]["name"]},
                     "publishNotReadyAddresses": js["spec"]["network"]["publishNotReadyAddresses"]}})

    def _create_job(self, js, rjob, index: int, name: str) -> None:
        meta, spec = js["metadata"], js["spec"]
        rjobs = spec["replicatedJobs"]
        before = sum(int(r["replicas"]) for r in rjobs[:rjobs.index(rjob)])
        group = [r for r in rjobs if r["groupName"] == rjob["groupName"]]
        in_group = sum(int(r["replicas"]) for r in group[:group.index(rjob)])
        marks = {NAME: meta["name"], UID: meta["uid"], RJOB: rjob["name"],
                 RESTARTS: str(js["status"].get("restarts", 0)),
                 PREFIX + "replicatedjob-replicas": str(rjob["replicas"]),
                 PREFIX + "global-replicas": str(sum(int(r["replicas"]) for r in rjobs)),
                 JOB_INDEX: str(index),
                 PREFIX + "job-key": hashlib.sha1(f"{meta['namespace']}/{name}".encode()).hexdigest(),
                 PREFIX + "job-global-index": str(before + index),
                 PREFIX + "group-name": rjob["groupName"],
                 PREFIX + "group-replicas": str(sum(int(r["replicas"]) for r in group)),
                 PREFIX + "job-group-index": str(in_group + index)}
        template = copy.deepcopy(rjob["template"])
        job_meta = template.get("metadata") or {}
        job_spec = template["spec"]
        pod = job_spec.setdefault("template", {})
        pod_meta = pod.setdefault("metadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **marks}
        pod_meta["annotations"] = {**(pod_meta.get("annotations") or {}), **marks}
        if spec["network"].get("enableDNSHostnames"):
            pod.setdefault("spec", {})["subdomain"] = subdomain(js)
        job_spec["suspend"] = bool(spec.get("suspend"))
        body = {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "labels": {**(job_meta.get("labels") or {}), **marks},
                             "annotations": {**(job_meta.get("annotations") or {}), **marks},
                             "ownerReferences": [self._owner(js)]},
                "spec": job_spec}
        try:
            self.cluster.api_create(JOBS, meta["namespace"], body)
        except ApiError as exc:
            # createJobs: the error becomes a JobCreationFailed event and the reconcile is
            # retried (e.g. the Job of an old JobSet of this name is still being deleted).
            self._event(js, "Warning", "JobCreationFailed",
                        f'job "{name}" creation failed with error: {exc.message}')
