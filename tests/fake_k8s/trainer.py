"""Kubeflow Trainer v2.3.0: the TrainJob controller, its runtime framework (the Torch and JobSet
plugins) and its admission webhook, rebuilt from the source (kubeflow/trainer, tag v2.3.0).

=====================================================  ==================================================
behaviour                                              where Trainer does it
=====================================================  ==================================================
CRD defaults: runtimeRef.apiGroup                      manifests/base/crds/trainer.kubeflow.org_trainjobs
``trainer.kubeflow.org``, kind                         (``default:`` in the schema)
``ClusterTrainingRuntime``; managedBy
``trainer.kubeflow.org/trainjob-controller``
admission: the runtime kind is served, the runtime     pkg/webhooks/trainjob_webhook.go ValidateCreate;
exists ("specified trainingRuntime must be created     pkg/runtime/core/trainingruntime.go
before the TrainJob is created"); torch: no            ValidateObjects; plugins/torch/torch.go Validate
reserved ``PET_*`` in spec.trainer.env ("must not      (constants.TorchRunReservedEnvNames);
have reserved envs"); runtimePatches: the manager a    plugins/jobset/jobset.go Validate
domain-prefixed path, only replicated jobs and
containers the runtime has, no env for ``node``
the runtime is copied once into the ConfigMap          pkg/runtime/core/snapshot.go,
``<trainjob>-runtime-snapshot`` (owned by the          trainingruntime.go NewObjects
TrainJob) and read from there afterwards; one
owned by another object is an error (retried)
runtimePatches merged into the JobSet template         trainingruntime.go mergeRuntimePatches
(strategic merge, lists keyed by name), patch          (strategicpatch), newRuntimeInfo
metadata labels/annotations onto the JobSet
the trainer job (label trainjob-ancestor-step:         trainingruntime.go newRuntimeInfo;
trainer): count = mlPolicy.numNodes, then              plugins/torch EnforceMLPolicy;
trainer.numNodes; resourcesPerNode merged into the     plugins/jobset SyncParallelCount, builder.go
``node`` container; parallelism = completions =        Trainer
count, replicas 1; image, command, args, env from
spec.trainer
torch: PET_NNODES, PET_NPROC_PER_NODE (``auto``        plugins/torch/torch.go EnforceMLPolicy,
unless trainer.numProcPerNode; ``auto`` without GPUs   getNumCPUPerNode; constants.go
becomes the CPU request, rounded up, at least 1),      (ContainerTrainerPort 29500)
PET_NODE_RANK from the completion-index annotation,
PET_MASTER_ADDR ``<trainjob>-node-0-0.<trainjob>``,
PET_MASTER_PORT 29500, container port 29500
the JobSet: the TrainJob's name, controller owner      plugins/jobset/jobset.go Build
with blockOwnerDeletion; built once (rebuilt only
while either is suspended); suspend = the
TrainJob's
status: JobSet ``Completed`` -> ``Complete``,          plugins/jobset/jobset.go Status;
``Failed`` -> ``Failed`` (reason and message           controller/trainjob_controller.go
kept); jobsStatus from replicatedJobsStatus;           setSuspendedCondition, reconcileDeadline
``Suspended`` True/False (Suspended/Resumed);
activeDeadlineSeconds from creation (or resume):
``Failed`` ``DeadlineExceeded``, the JobSet deleted
no reconcile of objects once Complete or Failed        controller/trainjob_controller.go Reconcile
an error building: event                               controller/trainjob_controller.go Reconcile
``TrainJobResourcesCreationFailed``
=====================================================  ==================================================

Not modelled: the initializer jobs, the MPI/JAX/XGBoost/Flux plugins, gang scheduling, the
TrainJobStatus plugin (alpha, off by default), the runtimes' ``resource-in-use`` finalizer.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import yaml

from .jobset import default as default_jobset
from .jobset import true
from .kinds import (
    CLUSTERTRAININGRUNTIMES,
    CONFIGMAPS,
    JOBSETS,
    TRAININGRUNTIMES,
    TRAINJOBS,
)
from .store import ApiError, now_rfc3339, parse_rfc3339

GROUP = "trainer.kubeflow.org"
ANCESTOR = f"{GROUP}/trainjob-ancestor-step"
CONTAINER = "node"
PORT = 29500
RESERVED = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
            "PET_MASTER_PORT")
INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
WEBHOOK = "validator.trainjob.trainer.kubeflow.org"
_MERGE_KEYS = {"replicatedJobs": "name", "containers": "name", "initContainers": "name",
               "env": "name", "volumes": "name", "volumeMounts": "mountPath",
               "ports": "containerPort", "imagePullSecrets": "name"}


def strategic_merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """A strategic merge patch of plain fields: maps merged, the lists named in _MERGE_KEYS
    merged by their key (patch entries win, new ones appended), other lists replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = v if k not in out or v is None else strategic_merge(out[k], v, k)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in _MERGE_KEYS:
        field = _MERGE_KEYS[key]
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            at = next((i for i, x in enumerate(out) if x.get(field) == item.get(field)), None)
            if at is None:
                out.append(copy.deepcopy(item))
            else:
                out[at] = strategic_merge(out[at], item, None)
        return out
    return copy.deepcopy(patch)


def upsert_env(env: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    for item in items:
        at = next((i for i, e in enumerate(env) if e.get("name") == item["name"]), None)
        if at is None:
            env.append(copy.deepcopy(item))
        else:
            env[at] = copy.deepcopy(item)


def cpu_value(quantity: Any) -> int:
    """resource.Quantity.Value() of a CPU quantity: rounded up to a whole number."""
    from kubernetes.utils.quantity import parse_quantity

    return math.ceil(parse_quantity(str(quantity)))


def num_proc_per_node(trainjob: dict[str, Any], resources: dict[str, Any]) -> str:
    """PET_NPROC_PER_NODE as the torch plugin sets it (getNumCPUPerNode for ``auto``)."""
    trainer = (trainjob.get("spec") or {}).get("trainer") or {}
    if trainer.get("numProcPerNode") is not None:
        return str(int(trainer["numProcPerNode"]))
    gpus = sum(int(v) for k, v in {**(resources.get("limits") or {}),
                                   **(resources.get("requests") or {})}.items() if "gpu" in k)
    if gpus:
        return "auto"
    request = (resources.get("requests") or {}).get("cpu")
    limit = (resources.get("limits") or {}).get("cpu")
    cpus = cpu_value(request) if request is not None and cpu_value(request) else (
        cpu_value(limit) if limit is not None else 0)
    return str(max(1, cpus))


def merge_resources(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for part in ("requests", "limits"):
        if override.get(part):
            out[part] = {**(out.get(part) or {}), **override[part]}
    return out


class TrainerController:
    """TrainJobs (and the runtimes they name) through the cluster's API."""

    resources = (TRAINJOBS, TRAININGRUNTIMES, CLUSTERTRAININGRUNTIMES)
    top_level = TRAINJOBS  # what a test's JobRecord follows

    def __init__(self, cluster: Any):
        self.cluster, self.store = cluster, cluster.store

    # ---------------------------------------------------------------- admission
    def admit(self, namespace: str, body: dict[str, Any]) -> None:
        """CRD defaults and the validating webhook, on create."""
        spec = body.setdefault("spec", {})
        ref = spec.setdefault("runtimeRef", {})
        ref.setdefault("apiGroup", GROUP)
        ref.setdefault("kind", "ClusterTrainingRuntime")
        spec.setdefault("managedBy", f"{GROUP}/trainjob-controller")
        runtime = self._runtime_ref(namespace, ref)
        if isinstance(runtime, str):
            raise ApiError(403, f'admission webhook "{WEBHOOK}" denied the request: {runtime}',
                           "Forbidden")
        errors = []
        envs = sorted({e.get("name") for e in (spec.get("trainer") or {}).get("env") or []
                       if e.get("name") in RESERVED})
        if envs and "torch" in ((runtime.get("spec") or {}).get("mlPolicy") or {}):
            errors.append("spec.trainer.env: Invalid value: ...: must not have reserved envs, "
                          f"invalid envs configured: [{' '.join(envs)}]")
        rjobs = {r["name"]: {c["name"] for c in r["template"]["spec"]["template"]["spec"].get(
            "containers") or []} | {c["name"] for c in r["template"]["spec"]["template"]["spec"]
                                    .get("initContainers") or []}
                 for r in runtime["spec"]["template"]["spec"]["replicatedJobs"]}
        for patch in spec.get("runtimePatches") or []:
            if not re.fullmatch(r"[a-z0-9.-]+\.[a-z]+/[A-Za-z0-9._-]+", patch.get("manager", "")):
                errors.append("spec.runtimePatches.manager: Invalid value: "
                              f"{patch.get('manager')!r}: must be a domain-prefixed path")
            template = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {})
            for rjob in ((template.get("spec") or {}).get("replicatedJobs") or []):
                if rjob.get("name") not in rjobs:
                    errors.append("spec.runtimePatches: Invalid value: ...: must not have "
                                  "replicated job that doesn't exist in the runtime job template")
                    continue
                pod = (((rjob.get("template") or {}).get("spec") or {}).get("template")
                       or {}).get("spec") or {}
                for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
                    if c.get("name") not in rjobs[rjob["name"]]:
                        errors.append("spec.runtimePatches: Invalid value: ...: must not have "
                                      f"container that doesn't exist in the runtime job "
                                      f"{rjob['name']}")
                    elif c.get("env") and c["name"] == CONTAINER:
                        errors.append("spec.runtimePatches: Invalid value: ...: must not have "
                                      "envs for the dataset-initializer, model-initializer, node "
                                      "containers")
        if errors:
            raise ApiError(403, f'admission webhook "{WEBHOOK}" denied the request: '
                           + ", ".join(errors), "Forbidden")

    def _runtime_ref(self, namespace: str, ref: dict[str, Any]) -> dict[str, Any] | str:
        kind = ref.get("kind")
        if ref.get("apiGroup") != GROUP or kind not in ("TrainingRuntime",
                                                         "ClusterTrainingRuntime"):
            return f"unsupported runtime: {kind}.{ref.get('apiGroup')}"
        resource = TRAININGRUNTIMES if kind == "TrainingRuntime" else CLUSTERTRAININGRUNTIMES
        found = self.store.peek(resource, namespace if resource.namespaced else "",
                                ref.get("name", ""))
        if found is None:
            what = "trainingRuntime" if kind == "TrainingRuntime" else "clusterTrainingRuntime"
            return (f"spec.runtimeRef: Invalid value: {ref!r}: {resource.plural}.{GROUP} "
                    f"\"{ref.get('name')}\" not found: specified {what} must be created before "
                    "the TrainJob is created")
        return found

    # ---------------------------------------------------------------- reconcile
    def reconcile_all(self) -> None:
        for tj in list(self.store.items(TRAINJOBS)):
            self.reconcile(tj)

    @staticmethod
    def finished(obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        return bool(true(status, "Complete") or true(status, "Failed"))

    def reconcile(self, tj: dict[str, Any]) -> None:
        meta, spec = tj["metadata"], tj.get("spec") or {}
        if meta.get("deletionTimestamp") or spec.get("managedBy") not in (
                None, f"{GROUP}/trainjob-controller"):
            return
        old = copy.deepcopy(tj.get("status") or {})
        status = copy.deepcopy(old)
        ns = meta["namespace"]
        jobset = self.store.peek(JOBSETS, ns, meta["name"])
        if not self.finished(tj):
            try:
                self._build(tj, jobset)
            except ApiError as exc:
                self.cluster.record_event(tj, "Warning", "TrainJobResourcesCreationFailed",
                                          "TrainJob resources reconciliation failed: "
                                          f"{exc.message}", "trainjob-controller")
            jobset = self.store.peek(JOBSETS, ns, meta["name"])
        conditions = status.setdefault("conditions", [])
        if spec.get("suspend"):
            self._set(conditions, "Suspended", "True", "Suspended", "TrainJob is suspended")
        elif true(status, "Suspended"):
            self._set(conditions, "Suspended", "False", "Resumed", "TrainJob is resumed")
        if jobset is not None and jobset["metadata"].get("ownerReferences", [{}])[0].get(
                "uid") == meta["uid"]:
            js_status = jobset.get("status") or {}
            for theirs, ours in (("Completed", "Complete"), ("Failed", "Failed")):
                cond = true(js_status, theirs)
                if cond is not None:
                    self._set(conditions, ours, "True", cond["reason"], cond["message"],
                              cond.get("lastTransitionTime"))
            status["jobsStatus"] = [
                {k: s.get(k, 0) for k in ("name", "ready", "succeeded", "failed", "active",
                                          "suspended")}
                for s in js_status.get("replicatedJobsStatus") or []]
        deadline = spec.get("activeDeadlineSeconds")
        if deadline and not self.finished({"status": status}) and not spec.get("suspend"):
            start = parse_rfc3339(meta.get("creationTimestamp"))
            resumed = next((c for c in conditions if c["type"] == "Suspended"
                            and c["status"] == "False"), None)
            if resumed:
                start = parse_rfc3339(resumed["lastTransitionTime"])
            import time

            if start is not None and time.time() > start + int(deadline):
                self._set(conditions, "Failed", "True", "DeadlineExceeded",
                          "TrainJob exceeded its active deadline")
                if jobset is not None:
                    self.store.delete(JOBSETS, ns, meta["name"])
        if not conditions:
            status.pop("conditions")
        if status != old:
            tj["status"] = status
            self.store.update(TRAINJOBS, tj)

    @staticmethod
    def _set(conditions: list[dict[str, Any]], kind: str, value: str, reason: str, message: str,
             when: str | None = None) -> None:
        """meta.SetStatusCondition: the transition time changes only with the status."""
        current = next((c for c in conditions if c["type"] == kind), None)
        if current is None:
            conditions.append({"type": kind, "status": value, "reason": reason,
                               "message": message, "lastTransitionTime": when or now_rfc3339()})
            return
        if current["status"] != value:
            current["lastTransitionTime"] = when or now_rfc3339()
        current.update(status=value, reason=reason, message=message)

    def _runtime(self, tj: dict[str, Any]) -> dict[str, Any]:
        """The runtime as first seen (the snapshot ConfigMap), or now (and snapshot it)."""
        meta = tj["metadata"]
        name = f"{meta['name']}-runtime-snapshot"
        snapshot = self.store.peek(CONFIGMAPS, meta["namespace"], name)
        if snapshot is not None:
            owner = next((r for r in snapshot["metadata"].get("ownerReferences") or []
                          if r.get("controller")), {})
            if owner.get("uid") != meta["uid"]:  # an old TrainJob's, not yet collected
                raise ApiError(409, "invalid runtime snapshot: a snapshot configmap exists but "
                               "is owned by another object")
            return yaml.safe_load(snapshot["data"]["runtime"])
        runtime = self._runtime_ref(meta["namespace"], tj["spec"]["runtimeRef"])
        if isinstance(runtime, str):
            raise ApiError(404, runtime)
        self.cluster.api_create(CONFIGMAPS, meta["namespace"], {
            "metadata": {"name": name, "ownerReferences": [self._owner(tj)]},
            "data": {"runtime": yaml.safe_dump(runtime)}})
        return copy.deepcopy(runtime)

    def _owner(self, tj: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "TrainJob",
                "name": tj["metadata"]["name"], "uid": tj["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True}

    def jobset_for(self, tj: dict[str, Any]) -> dict[str, Any]:
        """The JobSet the runtime framework builds for a TrainJob (pure but for the runtime)."""
        runtime = self._runtime(tj)
        spec = tj["spec"]
        template = copy.deepcopy(runtime["spec"]["template"])
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        annotations = dict((template.get("metadata") or {}).get("annotations") or {})
        js_spec = template["spec"]
        for patch in spec.get("runtimePatches") or []:
            ptemplate = (patch.get("trainingRuntimeSpec") or {}).get("template") or {}
            labels.update((ptemplate.get("metadata") or {}).get("labels") or {})
            annotations.update((ptemplate.get("metadata") or {}).get("annotations") or {})
            if ptemplate.get("spec"):
                js_spec = strategic_merge(js_spec, ptemplate["spec"])
        ml = runtime["spec"].get("mlPolicy") or {}
        trainer = spec.get("trainer") or {}
        for rjob in js_spec["replicatedJobs"]:
            job_labels = ((rjob.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if job_labels.get(ANCESTOR) != "trainer":
                continue
            count = int(ml.get("numNodes", 1))
            if trainer.get("numNodes") is not None and "torch" in ml:
                count = int(trainer["numNodes"])
            rjob["replicas"] = 1
            job_spec = rjob["template"].setdefault("spec", {})
            job_spec["parallelism"] = job_spec["completions"] = count
            pod = job_spec["template"]["spec"]
            for container in pod.get("containers") or []:
                if container["name"] != CONTAINER:
                    continue
                if trainer.get("resourcesPerNode"):
                    container["resources"] = merge_resources(container.get("resources") or {},
                                                             trainer["resourcesPerNode"])
                for key in ("image", "command", "args"):
                    if trainer.get(key) is not None:
                        container[key] = copy.deepcopy(trainer[key])
                env = container.setdefault("env", [])
                upsert_env(env, trainer.get("env") or [])
                if "torch" in ml:
                    name = tj["metadata"]["name"]
                    upsert_env(env, [
                        {"name": "PET_NNODES", "value": str(count)},
                        {"name": "PET_NPROC_PER_NODE",
                         "value": num_proc_per_node(tj, container.get("resources") or {})},
                        {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {
                            "fieldPath": INDEX_FIELD}}},
                        {"name": "PET_MASTER_ADDR", "value": f"{name}-{CONTAINER}-0-0.{name}"},
                        {"name": "PET_MASTER_PORT", "value": str(PORT)}])
                    ports = container.setdefault("ports", [])
                    if not any(p.get("containerPort") == PORT for p in ports):
                        ports.append({"containerPort": PORT})
        js_spec["suspend"] = bool(spec.get("suspend"))
        body = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
                "metadata": {"name": tj["metadata"]["name"], "labels": labels,
                             "annotations": annotations, "ownerReferences": [self._owner(tj)]},
                "spec": js_spec}
        default_jobset(body)
        return body

    def _build(self, tj: dict[str, Any], jobset: dict[str, Any] | None) -> None:
        suspended = bool((tj.get("spec") or {}).get("suspend"))
        if jobset is not None and not suspended and not (jobset.get("spec") or {}).get("suspend"):
            return
        body = self.jobset_for(tj)
        ns = tj["metadata"]["namespace"]
        if jobset is None:
            self.cluster.api_create(JOBSETS, ns, body)
            return
        if jobset["spec"] != body["spec"]:
            jobset["spec"] = body["spec"]
            self.store.update(JOBSETS, jobset, bump_generation=True)
