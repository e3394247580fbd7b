"""Pure builders: a trial spec becomes a ``trainer.kubeflow.org/v1alpha1`` TrainJob (a plain
dict), built with Kubeflow's own ``kubeflow-trainer-api`` models.

Why the models and not the ``kubeflow`` SDK's ``TrainerClient.train``: the SDK builds and
submits in one call from its own trainer abstractions, with no manifest to write for a dry
run, no runtimePatches and no say in the command; the models are the same generated types
(strict pydantic, the v2.3.0 API) and leave building pure, as the PyTorchJob builders are.

The TrainJob asks for ``workers`` nodes with **one process each** (``numProcPerNode: 1``: the
torch plugin's default ``auto`` would start one process per requested CPU on a CPU node and
silently multiply the world size), the image, ``python -m trainer.launch -m trainer
<overrides>`` (torchrun, keeping the worker's exit code; Trainer injects the ``PET_*``
variables it reads), ``resourcesPerNode`` from ``backend.cpu/memory/gpus``, and, through
``runtimePatches``, the shared volume's claim and mount, ``/dev/shm``, the restricted security
context, the node selector and the trial's labels on every pod. Restarts and failure rules are
the runtime's (``k8s/trainer/runtime``).
"""

from __future__ import annotations

import json
from typing import Any

import rundir
from bench.backends.base import TrialSpec
from bench.backends.k8s.manifests import (
    CONTAINER_SECURITY,
    DATA_VOLUME,
    POD_SECURITY,
    SPEC_HASH_ANNOTATION,
    SWEEP_LABEL,
    TERMINATION_LOG,
    TRIAL_LABEL,
    job_name,
    label_value,
    spec_hash,
)
from bench.backends.trainjob.config import TrainJobConfig

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
API_VERSION = f"{GROUP}/{VERSION}"
NODE = "node"  # the trainer container and replicated job the torch runtime expects
PATCH_MANAGER = "gnn-bench.local/harness"  # our runtimePatches entry (a domain-prefixed path)
# The labels JobSet and the Job controller put on every node pod (JobSet v0.12.0, batch/v1).
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
JOBSET_UID_LABEL = "jobset.sigs.k8s.io/jobset-uid"
RESTART_ATTEMPT_LABEL = "jobset.sigs.k8s.io/restart-attempt"
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
LAUNCH = ["python", "-m", "trainer.launch", "--max-restarts=0"]


def _resources(opts: TrainJobConfig) -> dict[str, dict[str, str]]:
    limits = {"cpu": str(opts.cpu_limit or opts.cpu),
              "memory": str(opts.memory_limit or opts.memory)}
    requests = {"cpu": str(opts.cpu), "memory": str(opts.memory)}
    if opts.gpus > 0:
        limits["nvidia.com/gpu"] = requests["nvidia.com/gpu"] = str(opts.gpus)
    return {"requests": requests, "limits": limits}


def _pod_patch(opts: TrainJobConfig, labels: dict[str, str]) -> dict[str, Any]:
    """What the TrainJob changes in the runtime's node pods (fields runtimePatches allow)."""
    spec: dict[str, Any] = {
        "securityContext": dict(POD_SECURITY),
        "containers": [{
            "name": NODE,
            "securityContext": json.loads(json.dumps(CONTAINER_SECURITY)),
            "volumeMounts": [{"name": DATA_VOLUME, "mountPath": opts.mount_path},
                             {"name": "dshm", "mountPath": "/dev/shm"}],
        }],
        "volumes": [
            {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": opts.volume_claim}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(opts.shm_size)}},
        ],
    }
    if opts.node_selector:
        spec["nodeSelector"] = dict(opts.node_selector)
    return {"metadata": {"labels": dict(labels)}, "spec": spec}


def trainjob(spec: TrialSpec) -> dict[str, Any]:
    """The TrainJob of one trial (``spec.backend`` is its TrainJobConfig), with its spec hash in
    an annotation."""
    from kubeflow_trainer_api import models

    opts: TrainJobConfig = spec.backend  # type: ignore[assignment]
    labels = {
        "app.kubernetes.io/name": "gnn-bench",
        "app.kubernetes.io/component": "trial",
        SWEEP_LABEL: label_value(spec.sweep_name),
        TRIAL_LABEL: label_value(spec.trial_id),
    }
    # The worker's failure record goes to the pod's termination message, as with PyTorchJobs.
    env = {"OMP_NUM_THREADS": str(spec.threads_per_worker), "PYTHONUNBUFFERED": "1",
           rundir.FAILURE_FILE_ENV: TERMINATION_LOG, **spec.env}
    patch = {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
        "replicatedJobs": [{"name": NODE, "template": {"spec": {
            "template": _pod_patch(opts, labels)}}}]}}}}
    job = models.TrainerV1alpha1TrainJob(
        api_version=API_VERSION,
        kind=KIND,
        metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=job_name(spec.sweep_name, spec.trial_id),
            namespace=opts.namespace,
            labels=labels,
            annotations={"gnn-bench/sweep-name": spec.sweep_name,
                         "gnn-bench/trial-id": spec.trial_id},
        ),
        spec=models.TrainerV1alpha1TrainJobSpec(
            runtime_ref=models.TrainerV1alpha1RuntimeRef(
                api_group=GROUP, kind=opts.runtime_kind, name=opts.runtime),
            trainer=models.TrainerV1alpha1Trainer(
                num_nodes=spec.workers,
                num_proc_per_node=1,
                image=opts.image,
                command=list(LAUNCH),
                args=["-m", "trainer", *spec.trainer_overrides],
                env=[models.IoK8sApiCoreV1EnvVar(name=k, value=str(v)) for k, v in env.items()],
                resources_per_node=models.IoK8sApiCoreV1ResourceRequirements.from_dict(
                    _resources(opts)),
            ),
            runtime_patches=[models.TrainerV1alpha1RuntimePatch.from_dict(patch)],
            active_deadline_seconds=int(opts.active_deadline_s or -(-spec.timeout_s // 1)),
        ),
    )
    manifest = job.to_dict()
    manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = spec_hash(manifest)
    return json.loads(json.dumps(manifest))


def worker_of_pod(metadata: dict[str, Any], job: str) -> str | None:
    """``rank<n>`` of a node pod: its completion index (one process per node, so the index is
    the rank torchrun gives it: ``PET_NODE_RANK``)."""
    labels = metadata.get("labels") or {}
    if labels.get(JOBSET_NAME_LABEL) != job or not str(labels.get(INDEX_LABEL, "")).isdigit():
        return None
    return f"rank{int(labels[INDEX_LABEL])}"
