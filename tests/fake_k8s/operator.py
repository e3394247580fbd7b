"""The PyTorchJob controller of the Kubeflow training operator v1.9.4, rebuilt from its source.

One :meth:`PyTorchJobController.reconcile` per job and tick, as the operator's ``Reconcile``
does it on every watch event. Sources (kubeflow/trainer, tag v1.9.4 = branch release-1.9):

=====================================================  ==================================================
behaviour                                              where the operator does it
=====================================================  ==================================================
``Created`` condition when the job is first seen       pytorch/pytorchjob_controller.go onOwnerCreateFunc
no reconcile once ``deletionTimestamp`` is set         pytorch/pytorchjob_controller.go Reconcile
defaults: cleanPodPolicy None, replicas 1,             apis/kubeflow.org/v1/pytorch_defaults.go
restartPolicy OnFailure, port ``pytorchjob-port``
23456, nprocPerNode ``auto``
pods: ``<job>-<type>-<index>``, labels job-name,       common/pod.go ReconcilePods, createNewPod;
operator-name ``pytorchjob-controller``,               common/util.go GenGeneralName;
replica-type, replica-index, job-role=master,          common/job_controller.go GenLabels,
controller ownerReference with blockOwnerDeletion      GenOwnerReference
pods of a job = label match AND controller uid         pytorch/pytorchjob_controller.go GetPodsForJob
                                                       (util.JobControlledPodList)
a replica whose pod exists (even terminating) is       core/pod.go GetPodSlices
not created again; a missing one is
env: PYTHONUNBUFFERED=1, MASTER_ADDR/PET_MASTER_ADDR   pytorch/envvar.go setPodEnv; pytorch/master.go
``<job>-master-0``, MASTER_PORT/PET_MASTER_PORT,
WORLD_SIZE, RANK (Worker i: i+1), PET_NODE_RANK,
PET_NPROC_PER_NODE (when set), PET_NNODES
init container ``init-pytorch`` (alpine:3.10, no       pytorch/initcontainer.go setInitContainer,
securityContext, ``nslookup <master>`` every 2 s,      config/config.go; the template file flag
100 tries) on Worker pods only; a template file        ``--pytorch-init-container-template-file``
replaces it
ExitCode restartPolicy: pods get ``Never``; a Failed   core/pod.go SetRestartPolicy; common/pod.go
pod with a retryable code (>= 128) is deleted and      ReconcilePods; util/train IsRetryableExitCode
created again, another code fails the job
a Failed pod under OnFailure/Always: deleted,          common/pod.go ReconcilePods
``Restarting``
a headless Service per pod                             common/service.go
backoff: sum of restartCount of containers and init    core/job.go PastBackoffLimit
containers over the job's *Running* pods;
limit 0: any restart fails, else sum >= limit
"new failure and not all active and 1 > limit" (the    common/job.go ReconcileJobs (NumRequeues of
work queue never counts requeues)                      util.FakeWorkQueue is always 0)
activeDeadlineSeconds from startTime                   core/job.go PastActiveDeadline
failed job: reason ``PyTorchJobFailed``, pods          common/job.go ReconcileJobs,
deleted per cleanPodPolicy (None keeps them, and       DeletePodsAndServices
they keep running)
``Running`` when the Master has a Running pod;         pytorch/pytorchjob_controller.go UpdateJobStatus
``Succeeded`` when the Master succeeded;
``Restarting`` when a replica type has Failed pods
and fewer succeeded+running than replicas
(restartPolicy not Never), else ``Failed``
a Running pod with deletionTimestamp counts failed     core/status.go UpdateJobReplicaStatuses
conditions: none changes after Failed; Running and     util/status.go setCondition, filterOutCondition
Restarting replace each other; Running becomes False
on Succeeded/Failed
ttlSecondsAfterFinished deletes the finished job       common/job.go CleanupJob
a rejected pod create: event ``FailedCreatePod``       control/pod_control.go createPods
"Error creating: ...", the reconcile requeued with
controller-runtime's per-item back-off (5 ms
doubling, at most 1000 s)
=====================================================  ==================================================

Go's map order decides the order of replica types in the operator; here Master comes first.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from typing import Any

import yaml

from .kinds import PODS, PYTORCHJOBS, SERVICES
from .store import ApiError, now_rfc3339, parse_rfc3339

OPERATOR_NAME = "pytorchjob-controller"
CONTAINER = "pytorch"
PORT_NAME, DEFAULT_PORT = "pytorchjob-port", 23456
JOB_NAME = "training.kubeflow.org/job-name"
OPERATOR_LABEL = "training.kubeflow.org/operator-name"
REPLICA_TYPE = "training.kubeflow.org/replica-type"
REPLICA_INDEX = "training.kubeflow.org/replica-index"
JOB_ROLE = "training.kubeflow.org/job-role"
KIND = "PyTorchJob"

# The operator's built-in init container (pytorch/initcontainer.go, config/config.go defaults:
# image alpine:3.10, 100 tries). As data: the pod it produces, not the Go template's text.
DEFAULT_INIT_IMAGE, DEFAULT_MAX_TRIES = "alpine:3.10", 100


def default_init_containers(master: str, image: str = DEFAULT_INIT_IMAGE,
                            tries: int = DEFAULT_MAX_TRIES) -> list[dict[str, Any]]:
    loop = (f"err=1;for i in $(seq {tries}); do if nslookup {master}; then err=0 && break; fi;"
            "echo waiting for master; sleep 2; done; exit $err")
    return [{
        "name": "init-pytorch", "image": image, "imagePullPolicy": "IfNotPresent",
        "resources": {"limits": {"cpu": "100m", "memory": "20Mi"},
                      "requests": {"cpu": "50m", "memory": "10Mi"}},
        "command": ["sh", "-c", loop],
    }]


def render_init_template(text: str, master: str, image: str = DEFAULT_INIT_IMAGE,
                         tries: int = DEFAULT_MAX_TRIES) -> list[dict[str, Any]]:
    """A ``--pytorch-init-container-template-file`` as the operator renders it: a Go template
    with ``.MasterAddr``, ``.InitContainerImage`` and ``.MaxTries``, giving a YAML list."""
    values = {"MasterAddr": master, "InitContainerImage": image, "MaxTries": str(tries)}
    rendered = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: values[m.group(1)], text)
    return yaml.safe_load(rendered) or []


def replica_specs(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Replica specs with the operator's defaults, Master first (type names camel-cased)."""
    specs = {k[:1].upper() + k[1:].lower(): v
             for k, v in ((job.get("spec") or {}).get("pytorchReplicaSpecs") or {}).items()}
    out = {}
    for rtype in sorted(specs, key=lambda t: (t != "Master", t)):
        spec = copy.deepcopy(specs[rtype])
        spec.setdefault("replicas", 1)
        spec.setdefault("restartPolicy", "OnFailure")
        out[rtype] = spec
    return out


def master_port(job: dict[str, Any]) -> int:
    master = replica_specs(job).get("Master") or {}
    containers = ((master.get("template") or {}).get("spec") or {}).get("containers") or []
    for c in containers:
        if c.get("name") == CONTAINER:
            for p in c.get("ports") or []:
                if p.get("name") == PORT_NAME:
                    return int(p["containerPort"])
    return DEFAULT_PORT


class PyTorchJobController:
    """Reconciles PyTorchJobs through the cluster's API (so admission applies to its pods)."""

    resources = (PYTORCHJOBS,)  # the kinds it serves (the API server lists them when installed)

    def __init__(self, cluster: Any, init_template: str | None = None,
                 init_image: str = DEFAULT_INIT_IMAGE, clock: Callable[[], float] = time.time):
        self.cluster, self.store = cluster, cluster.store
        self.init_template, self.init_image = init_template, init_image
        self.clock = clock
        self._retry: dict[str, tuple[int, float]] = {}  # job uid -> (failures, next attempt)
        self.backoff_sums: dict[str, list[int]] = {}  # job uid -> PastBackoffLimit's sum, per pass
        self.seen: set[str] = set()

    # ---------------------------------------------------------------- helpers
    def _pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        meta = job["metadata"]
        return [p for p in self.store.items(PODS, meta["namespace"])
                if (p["metadata"].get("labels") or {}).get(JOB_NAME) == meta["name"]
                and (p["metadata"].get("labels") or {}).get(OPERATOR_LABEL) == OPERATOR_NAME
                and any(r.get("controller") and r.get("uid") == meta["uid"]
                        for r in p["metadata"].get("ownerReferences") or [])]

    def _owner(self, job: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "kubeflow.org/v1", "kind": KIND, "name": job["metadata"]["name"],
                "uid": job["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}

    def _event(self, job: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.cluster.record_event(job, type_, reason, message, "pytorchjob-controller")

    @staticmethod
    def set_condition(status: dict[str, Any], kind: str, state: str, reason: str,
                      message: str) -> None:
        """util/status.go setCondition: frozen after Failed; same status and reason: no-op."""
        conditions = status.setdefault("conditions", [])
        if any(c["type"] == "Failed" and c["status"] == "True" for c in conditions):
            return
        current = next((c for c in conditions if c["type"] == kind), None)
        if current and current["status"] == state and current.get("reason") == reason:
            return
        stamp = now_rfc3339()
        new = {"type": kind, "status": state, "reason": reason, "message": message,
               "lastUpdateTime": stamp, "lastTransitionTime": stamp}
        if current and current["status"] == state:
            new["lastTransitionTime"] = current["lastTransitionTime"]
        kept = []
        for c in conditions:
            if c["type"] == kind or {kind, c["type"]} == {"Running", "Restarting"}:
                continue
            if kind in ("Failed", "Succeeded") and c["type"] == "Running":
                c = {**c, "status": "False"}
            kept.append(c)
        status["conditions"] = kept + [new]

    @staticmethod
    def finished(status: dict[str, Any]) -> bool:
        return any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True"
                   for c in status.get("conditions") or [])

    # ---------------------------------------------------------------- reconcile
    def reconcile_all(self) -> None:
        for job in list(self.store.items(PYTORCHJOBS)):
            self.reconcile(job)

    def reconcile(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        if meta.get("deletionTimestamp"):
            return
        uid = meta["uid"]
        failures, next_at = self._retry.get(uid, (0, 0.0))
        if self.clock() < next_at:
            return
        old = copy.deepcopy(job.get("status") or {})
        status = copy.deepcopy(old)
        if uid not in self.seen:
            self.seen.add(uid)
            self.set_condition(status, "Created", "True", "PyTorchJobCreated",
                               f"PyTorchJob {meta['name']} is created.")
        try:
            self._reconcile(job, status)
        except ApiError:
            failures += 1
            self._retry[uid] = (failures, self.clock() + min(1000.0, 0.005 * 2 ** (failures - 1)))
        else:
            self._retry.pop(uid, None)
        if status != old:
            job["status"] = status
            self.store.update(PYTORCHJOBS, job)

    def _reconcile(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        policy = spec.get("runPolicy") or {}
        replicas = replica_specs(job)
        pods = self._pods(job)
        if self.finished(status):
            self._clean_up(job, status, policy, pods)
            if any(c["type"] == "Succeeded" and c["status"] == "True"
                   for c in status.get("conditions", [])):
                for counts in (status.get("replicaStatuses") or {}).values():
                    counts["succeeded"] = counts.get("succeeded", 0) + counts.get("active", 0)
                    counts["active"] = 0
            return
        active = [p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
                  and not p["metadata"].get("deletionTimestamp")]
        failed = sum(1 for p in pods if p.get("status", {}).get("phase") == "Failed")
        total = sum(int(s["replicas"]) for s in replicas.values())
        prev_failed = sum(int(c.get("failed", 0))
                          for c in (status.get("replicaStatuses") or {}).values())
        exceeds = past = False
        limit = policy.get("backoffLimit")
        if limit is not None:
            limit = int(limit)
            exceeds = failed > prev_failed and len(active) != total and 0 + 1 > limit
            total_restarts = 0
            for rtype, rspec in replicas.items():
                if rspec["restartPolicy"] not in ("OnFailure", "Always", "ExitCode"):
                    continue
                for pod in pods:
                    if (pod["metadata"].get("labels") or {}).get(REPLICA_TYPE) != rtype.lower():
                        continue
                    if pod.get("status", {}).get("phase") != "Running":
                        continue
                    for key in ("initContainerStatuses", "containerStatuses"):
                        total_restarts += sum(int(c.get("restartCount", 0))
                                              for c in pod["status"].get(key) or [])
            self.backoff_sums.setdefault(meta["uid"], []).append(total_restarts)
            past = total_restarts > 0 if limit == 0 else total_restarts >= limit
        message = None
        if exceeds or past:
            message = f"Job {meta['name']} has failed because it has reached the specified backoff limit"
        elif self._past_deadline(policy, status):
            message = f"Job {meta['name']} has failed because it was active longer than specified deadline"
        if message:
            status.setdefault("completionTime", now_rfc3339())
            self._event(job, "Normal", "PyTorchJobFailed", message)
            self.set_condition(status, "Failed", "True", "PyTorchJobFailed", message)
            self._delete_pods(job, policy, status, pods)
            return
        status["replicaStatuses"] = {}
        for rtype, rspec in replicas.items():
            self._reconcile_pods(job, status, pods, rtype, rspec, replicas)
            self._reconcile_services(job, rtype, rspec)
        self._update_status(job, status, replicas)

    def _past_deadline(self, policy: dict[str, Any], status: dict[str, Any]) -> bool:
        deadline, start = policy.get("activeDeadlineSeconds"), parse_rfc3339(status.get("startTime"))
        return deadline is not None and start is not None and self.clock() - start >= int(deadline)

    def _clean_up(self, job, status, policy, pods) -> None:
        self._delete_pods(job, policy, status, pods)
        ttl = policy.get("ttlSecondsAfterFinished")
        done = parse_rfc3339(status.get("completionTime"))
        if ttl is not None and done is not None and self.clock() > done + int(ttl):
            self.store.delete(PYTORCHJOBS, job["metadata"]["namespace"], job["metadata"]["name"])

    def _delete_pods(self, job, policy, status, pods) -> None:
        clean = policy.get("cleanPodPolicy") or "None"
        if self.finished(status) and clean == "None":
            return
        for pod in pods:
            phase = pod.get("status", {}).get("phase")
            if self.finished(status) and clean == "Running" and phase not in ("Running", "Pending"):
                continue
            self._delete_pod(job, pod)
            ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            svc = self.store.peek(SERVICES, ns, name)
            if svc is not None and not svc["metadata"].get("deletionTimestamp"):
                self.store.delete(SERVICES, ns, name)

    def _delete_pod(self, job, pod) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            return  # control/pod_control.go DeletePod: terminating, skipped
        self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
        self._event(job, "Normal", "SuccessfulDeletePod", f"Deleted pod: {pod['metadata']['name']}")

    def _reconcile_pods(self, job, status, pods, rtype, rspec, replicas) -> None:
        rt = rtype.lower()
        counts = {"active": 0, "succeeded": 0, "failed": 0}
        status["replicaStatuses"][rtype] = counts
        mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(REPLICA_TYPE) == rt]
        n = int(rspec["replicas"])
        slices: dict[int, list[dict[str, Any]]] = {}
        for pod in mine:
            index = int(pod["metadata"]["labels"].get(REPLICA_INDEX, -1))
            slices.setdefault(index, []).append(pod)
        for index in range(max(n, max(slices, default=-1) + 1)):
            found = slices.get(index, [])
            if len(found) > 1:
                continue
            if not found:
                self._create_pod(job, rt, index, rspec, replicas)
                continue
            pod = found[0]
            if index >= n:
                self._delete_pod(job, pod)
            exit_code = 0xBEEF
            for cs in pod.get("status", {}).get("containerStatuses") or []:
                terminated = (cs.get("state") or {}).get("terminated")
                if cs.get("name") == CONTAINER and terminated:
                    exit_code = int(terminated.get("exitCode", 0))
                    self._event(job, "Normal", "ExitedWithCode",
                                f"Pod: {pod['metadata']['namespace']}.{pod['metadata']['name']} "
                                f"exited with code {exit_code}")
            if pod.get("status", {}).get("phase") == "Failed":
                policy = rspec["restartPolicy"]
                if (policy == "ExitCode" and exit_code >= 128) or policy in ("OnFailure", "Always"):
                    self._delete_pod(job, pod)
                    message = f"job {job['metadata']['name']} is restarting because {rtype} replica(s) failed."
                    self._event(job, "Warning", "PyTorchJobRestarting", message)
                    self.set_condition(status, "Restarting", "True", "PyTorchJobRestarting", message)
                elif policy == "ExitCode":
                    message = (f'job "{job["metadata"]["name"]}" is failing because "{rtype}" '
                               "replica(s) failed.")
                    self._event(job, "Warning", "PyTorchJobFailed", message)
                    self.set_condition(status, "Failed", "True", "PyTorchJobFailed", message)
            phase = pod.get("status", {}).get("phase")
            if phase == "Running":
                counts["failed" if pod["metadata"].get("deletionTimestamp") else "active"] += 1
            elif phase == "Succeeded":
                counts["succeeded"] += 1
            elif phase == "Failed":
                counts["failed"] += 1

    def _create_pod(self, job, rt, index, rspec, replicas) -> None:
        meta = job["metadata"]
        name = f"{meta['name']}-{rt}-{index}"
        template = copy.deepcopy(rspec.get("template") or {})
        pod_meta = template.get("metadata") or {}
        labels = dict(pod_meta.get("labels") or {})
        labels.update({OPERATOR_LABEL: OPERATOR_NAME, JOB_NAME: meta["name"].replace("/", "-"),
                       REPLICA_TYPE: rt, REPLICA_INDEX: str(index)})
        master = "Master" in replicas
        if (master and rt == "master") or (not master and rt == "worker" and index == 0):
            labels[JOB_ROLE] = "master"
        pod_spec = template.get("spec") or {}
        self._set_env(job, pod_spec, rt, index, replicas)
        if master and rt == "worker":
            master_addr = f"{meta['name']}-master-0"
            init = (render_init_template(self.init_template, master_addr, self.init_image)
                    if self.init_template is not None
                    else default_init_containers(master_addr, self.init_image))
            pod_spec["initContainers"] = list(pod_spec.get("initContainers") or []) + init
        if pod_spec.get("restartPolicy"):
            self._event(job, "Warning", "SettedPodTemplateRestartPolicy",
                        "Restart policy in pod template will be overwritten by restart policy in "
                        "replica spec")
        policy = rspec["restartPolicy"]
        pod_spec["restartPolicy"] = "Never" if policy == "ExitCode" else policy
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels,
                             "annotations": dict(pod_meta.get("annotations") or {}),
                             "ownerReferences": [self._owner(job)]},
                "spec": pod_spec}
        try:
            self.cluster.api_create(PODS, meta["namespace"], body)
        except ApiError as exc:
            self._event(job, "Warning", "FailedCreatePod", f"Error creating: {exc.message}")
            raise
        self._event(job, "Normal", "SuccessfulCreatePod", f"Created pod: {name}")

    def _set_env(self, job, pod_spec, rt, index, replicas) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        total = sum(int(s["replicas"]) for s in replicas.values())
        nproc = spec.get("nprocPerNode")
        if nproc is None and spec.get("elasticPolicy") is None:
            nproc = "auto"  # the defaulter's DefaultNprocPerNode
        world = total * (int(nproc) if str(nproc).isdigit() else 1)
        port = master_port(job)
        for container in pod_spec.get("containers") or []:
            if container.get("name") == CONTAINER:
                ports = container.setdefault("ports", [])
                if not any(p.get("name") == PORT_NAME for p in ports):
                    ports.append({"name": PORT_NAME, "containerPort": DEFAULT_PORT,
                                  "protocol": "TCP"})
            env = container.setdefault("env", [])
            env.append({"name": "PYTHONUNBUFFERED", "value": "1"})
            if "Master" in replicas:
                addr = f"{meta['name']}-master-0"
                rank = index + 1 if rt == "worker" else index
                env += [{"name": "MASTER_PORT", "value": str(port)},
                        {"name": "PET_MASTER_PORT", "value": str(port)},
                        {"name": "MASTER_ADDR", "value": addr},
                        {"name": "PET_MASTER_ADDR", "value": addr},
                        {"name": "WORLD_SIZE", "value": str(world)},
                        {"name": "RANK", "value": str(rank)},
                        {"name": "PET_NODE_RANK", "value": str(rank)}]
            if nproc is not None:
                env.append({"name": "PET_NPROC_PER_NODE", "value": str(nproc)})
            if spec.get("elasticPolicy") is None:
                env.append({"name": "PET_NNODES", "value": str(total)})

    def _reconcile_services(self, job, rtype, rspec) -> None:
        meta = job["metadata"]
        for index in range(int(rspec["replicas"])):
            name = f"{meta['name']}-{rtype.lower()}-{index}"
            if self.store.peek(SERVICES, meta["namespace"], name) is not None:
                continue
            selector = {OPERATOR_LABEL: OPERATOR_NAME, JOB_NAME: meta["name"],
                        REPLICA_TYPE: rtype.lower(), REPLICA_INDEX: str(index)}
            body = {"metadata": {"name": name, "labels": dict(selector),
                                 "ownerReferences": [self._owner(job)]},
                    "spec": {"clusterIP": "None", "selector": selector,
                             "ports": [{"name": PORT_NAME, "port": master_port(job),
                                        "targetPort": master_port(job), "protocol": "TCP"}]}}
            self.cluster.api_create(SERVICES, meta["namespace"], body)

    def _update_status(self, job, status, replicas) -> None:
        name = job["metadata"]["name"]
        if status.get("startTime") is None:
            status["startTime"] = now_rfc3339()
        for rtype, rspec in replicas.items():
            counts = status["replicaStatuses"][rtype]
            counts["selector"] = ",".join(
                f"{k}={v}" for k, v in sorted({OPERATOR_LABEL: OPERATOR_NAME, JOB_NAME: name,
                                               REPLICA_TYPE: rtype.lower()}.items()))
            n = int(rspec["replicas"])
            expected = n - counts["succeeded"]
            running, failed = counts["active"], counts["failed"]
            if "Master" in replicas:
                if rtype == "Master":
                    if running > 0:
                        self.set_condition(status, "Running", "True", "PyTorchJobRunning",
                                           f"PyTorchJob {name} is running.")
                    if expected == 0:
                        message = f"PyTorchJob {name} is successfully completed."
                        self._event(job, "Normal", "PyTorchJobSucceeded", message)
                        status.setdefault("completionTime", now_rfc3339())
                        self.set_condition(status, "Succeeded", "True", "PyTorchJobSucceeded",
                                           message)
                        return
            elif rtype == "Worker":
                if expected == 0:
                    message = f"PyTorchJob {job['metadata']['namespace']}/{name} successfully completed."
                    self._event(job, "Normal", "PyTorchJobSucceeded", message)
                    status.setdefault("completionTime", now_rfc3339())
                    self.set_condition(status, "Succeeded", "True", "PyTorchJobSucceeded", message)
                elif running > 0:
                    self.set_condition(status, "Running", "True", "PyTorchJobRunning",
                                       f"PyTorchJob {job['metadata']['namespace']}/{name} is running.")
            if failed > 0 and n > counts["succeeded"] + running:
                if rspec["restartPolicy"] != "Never":
                    message = f"PyTorchJob {name} is restarting because {failed} {rtype} replica(s) failed."
                    self._event(job, "Warning", "PyTorchJobRestarting", message)
                    self.set_condition(status, "Restarting", "True", "PyTorchJobRestarting", message)
                else:
                    message = f"PyTorchJob {name} is failed because {failed} {rtype} replica(s) failed."
                    self._event(job, "Normal", "PyTorchJobFailed", message)
                    status.setdefault("completionTime", now_rfc3339())
                    self.set_condition(status, "Failed", "True", "PyTorchJobFailed", message)
