"""Pure builders: a trial spec becomes a ``kubeflow.org/v1`` PyTorchJob (a plain dict).

No API calls here, so the builders are golden-tested without a cluster and the same dict is
what ``backend.dry_run=true`` writes as YAML and what the client submits. The job has one
``Master`` and ``workers - 1`` ``Worker`` replicas; the training operator injects
``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK`` and ``PYTHONUNBUFFERED`` into each
pod, so every replica runs the same ``python -m trainer <overrides>`` as a torchrun worker does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

import rundir
from bench.backends.base import TrialSpec
from bench.backends.k8s.config import K8sConfig

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
API_VERSION = f"{GROUP}/{VERSION}"
CONTAINER = "pytorch"  # the operator finds the training container by this name
# Labels the training operator puts on a job's pods (v1.9).
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
# Ours, on the job and its pods.
SWEEP_LABEL = "gnn-bench/sweep"
TRIAL_LABEL = "gnn-bench/trial"
SPEC_HASH_ANNOTATION = "gnn-bench/spec-hash"
# Pods are named <job>-worker-<i> and get a Service of that name (a DNS-1035 label, <= 63
# characters), so the job name leaves room for "-worker-999".
MAX_JOB_NAME = 48
DATA_VOLUME = "bench-data"


def slug(text: str) -> str:
    """Lowercase letters, digits and single dashes: the alphabet of a DNS-1123 label."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


def job_name(sweep_name: str, trial_id: str) -> str:
    """The PyTorchJob's name: deterministic, unique per (sweep, trial), a valid DNS-1035 label.

    ``<sweep>-<trial>`` when that is short enough, else the trial id shortened and a hash of
    both, so a re-run of the same sweep finds its job again by name.
    """
    name = f"{slug(sweep_name)}-{slug(trial_id)}".strip("-")
    if len(name) <= MAX_JOB_NAME and name[:1].isalpha():
        return name
    digest = hashlib.sha256(f"{sweep_name}\0{trial_id}".encode()).hexdigest()[:8]
    head = slug(trial_id)[: MAX_JOB_NAME - len(digest) - 3].strip("-")
    name = f"{head}-{digest}" if head else digest
    return name if name[0].isalpha() else f"t-{name}"


def label_value(text: str) -> str:
    """``text`` made a valid label value (<= 63 characters, alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def volume_paths(mount_path: str, sweep_name: str, trial_id: str, run_id: str) -> tuple[str, str]:
    """(run_dir, data_root) of a trial as its pods see them on the shared volume.

    ``run_id`` names one clean start of the trial: a failed or redone trial starts again in a
    new folder rather than resuming the old checkpoint; an interrupted one keeps its folder.
    """
    root = mount_path.rstrip("/")
    return f"{root}/runs/{sweep_name}/{trial_id}/{run_id}", f"{root}/datasets"


def pod_threads(cpu: str, cpu_limit: str | None = None) -> int:
    """Intra-op threads of a worker pod: its whole cores (the limit where set), at least one."""
    from kubernetes.utils.quantity import parse_quantity

    return max(1, int(parse_quantity(cpu_limit or cpu)))


def pod_cores(workers: int, opts: K8sConfig) -> float:
    """CPU cores a trial may use on the cluster: every pod's limit (or request)."""
    from kubernetes.utils.quantity import parse_quantity

    return workers * float(parse_quantity(opts.cpu_limit or opts.cpu))


def _resources(opts: K8sConfig) -> dict[str, dict[str, str]]:
    limits = {
        "cpu": str(opts.cpu_limit or opts.cpu),
        "memory": str(opts.memory_limit or opts.memory),
    }
    if opts.gpus > 0:
        limits["nvidia.com/gpu"] = str(opts.gpus)
    return {"requests": {"cpu": str(opts.cpu), "memory": str(opts.memory)}, "limits": limits}


# Restricted Pod Security Standard: the trainer image's own non-root user (docker/), no
# privilege escalation, no capabilities, the runtime's default seccomp profile.
RUN_AS_USER = 1000
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


# Where the trainer writes its failure record (rundir.FailureRecord: exit code, kind, error:
# line) before it exits: the kubelet's default terminationMessagePath, which it copies into the
# pod's status (lastState.terminated.message; Kubernetes "Customizing the termination message",
# at most 4096 bytes), readable even when the volume is full. FallbackToLogsOnError: a trainer
# that died before writing it leaves the tail of its log there instead.
TERMINATION_LOG = "/dev/termination-log"


def _pod_template(spec: TrialSpec, opts: K8sConfig, labels: dict[str, str]) -> dict[str, Any]:
    env = {"OMP_NUM_THREADS": str(spec.threads_per_worker), rundir.FAILURE_FILE_ENV: TERMINATION_LOG,
           **spec.env}
    container = {
        "name": CONTAINER,
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["python", "-m", "trainer"],
        "args": list(spec.trainer_overrides),
        "env": [{"name": k, "value": str(v)} for k, v in env.items()],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": _resources(opts),
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": opts.mount_path},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the trainer never talks to the API
        "securityContext": copy.deepcopy(POD_SECURITY),
        "containers": [container],
        "volumes": [
            {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": opts.volume_claim}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(opts.shm_size)}},
        ],
    }
    if opts.node_selector:
        pod_spec["nodeSelector"] = dict(opts.node_selector)
    return {"metadata": {"labels": dict(labels)}, "spec": pod_spec}


def pytorchjob(spec: TrialSpec) -> dict[str, Any]:
    """The PyTorchJob of one trial (``spec.backend`` is its K8sConfig), with its spec hash in an
    annotation."""
    opts: K8sConfig = spec.backend  # type: ignore[assignment]
    labels = {
        "app.kubernetes.io/name": "gnn-bench",
        "app.kubernetes.io/component": "trial",
        SWEEP_LABEL: label_value(spec.sweep_name),
        TRIAL_LABEL: label_value(spec.trial_id),
    }
    template = _pod_template(spec, opts, labels)
    # restartPolicy OnFailure, not ExitCode, although the trainer's exit codes follow the
    # ExitCode rule (rundir.retryable): under ExitCode training operator v1.9.4 deletes a pod
    # that failed with a retryable code and creates it again, so its restartCount stays 0, and
    # PastBackoffLimit (core/job.go) sums restartCount only over OnFailure/Always replicas: a
    # killed worker would be recreated without limit and backend.backoff_limit would bound
    # nothing (tests/fake_k8s/operator.py has both paths). Under OnFailure the kubelet restarts
    # the container in place and the operator counts it; the harness applies the rule itself: a
    # worker that exits with a permanent code (1-127) ends the trial at once with its error:
    # line (follow.permanent_failure), at most one in-place restart (the kubelet's first is
    # immediate) before the harness's next poll sees it.
    replicas: dict[str, Any] = {
        "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template},
    }
    if spec.workers > 1:
        replicas["Worker"] = {
            "replicas": spec.workers - 1,
            "restartPolicy": "OnFailure",
            "template": template,
        }
    run_policy: dict[str, Any] = {
        "backoffLimit": int(spec.backoff_limit),
        "activeDeadlineSeconds": int(opts.active_deadline_s or -(-spec.timeout_s // 1)),
        "cleanPodPolicy": opts.clean_pod_policy,
    }
    if opts.ttl_after_finished_s is not None:
        run_policy["ttlSecondsAfterFinished"] = int(opts.ttl_after_finished_s)
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": job_name(spec.sweep_name, spec.trial_id),
            "namespace": opts.namespace,
            "labels": labels,
            "annotations": {
                "gnn-bench/sweep-name": spec.sweep_name,
                "gnn-bench/trial-id": spec.trial_id,
            },
        },
        "spec": {"runPolicy": run_policy, "pytorchReplicaSpecs": replicas},
    }
    manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = spec_hash(manifest)
    return json.loads(
        json.dumps(manifest)
    )  # plain, unshared dicts (both replicas share one template)


def spec_hash(manifest: Mapping[str, Any]) -> str:
    """A short hash of what the job runs (its spec, name and namespace), for reattaching."""
    identity = {
        "name": manifest["metadata"]["name"],
        "namespace": manifest["metadata"].get("namespace"),
        "spec": manifest["spec"],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def to_yaml(manifest: Mapping[str, Any]) -> str:
    """The manifest as the YAML ``kubectl apply -f`` takes."""
    return yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False)


def worker_of_pod(pod_name: str, job: str) -> str | None:
    """``rank<n>`` of a replica pod (``<job>-master-0`` is rank 0, ``<job>-worker-i`` rank i+1).

    The operator names pods ``<job>-<replica type>-<index>`` and gives them exactly these
    ranks, so the names match the local backend's per-worker series.
    """
    match = re.fullmatch(re.escape(job) + r"-(master|worker)-(\d+)", pod_name)
    if not match:
        return None
    index = int(match.group(2))
    return f"rank{index if match.group(1) == 'master' else index + 1}"
