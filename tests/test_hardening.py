"""Hardening of everything that runs on a cluster: the PyTorchJobs the harness builds
(bench/backends/k8s/manifests.py) and every object of ``kubectl kustomize k8s/<overlay>``.

Each pod: non-root, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault,
resource limits. The one exception is the in-cluster NFS server (the kernel NFS server needs a
privileged container, and its init container chowns the export for the non-root pods). The
harness's Role is namespaced and exactly the verbs it uses; TensorBoard is ClusterIP except in
overlays/nodeport; no Secret and no credential in manifests or Dockerfiles.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_k8s_manifests import OVERLAYS, render, spec

from bench.backends.k8s.config import K8sConfig
from bench.backends.k8s.manifests import pytorchjob

REPO = Path(__file__).resolve().parents[1]
PRIVILEGED_ALLOWED = {("Deployment", "nfs-server")}  # see nfs-server.yaml
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "PyTorchJob"}


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs of a workload object (every replica type of a PyTorchJob)."""
    kind, spec_ = obj["kind"], obj.get("spec", {})
    if kind == "Pod":
        return [spec_]
    if kind == "CronJob":
        return [spec_["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "PyTorchJob":
        return [r["template"]["spec"] for r in spec_["pytorchReplicaSpecs"].values()]
    return [spec_["template"]["spec"]]


def problems_of(obj: dict[str, Any]) -> list[str]:
    """What a workload lacks of the restricted profile (empty: hardened)."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    found = []
    for pod in pod_specs(obj):
        pod_sec = pod.get("securityContext") or {}
        for c in pod.get("initContainers", []) + pod["containers"]:
            sec = {**pod_sec, **(c.get("securityContext") or {})}
            where = f"{name} container {c['name']}"
            if not (sec.get("runAsNonRoot") is True and sec.get("runAsUser", 1) != 0):
                found.append(f"{where}: not runAsNonRoot")
            if sec.get("allowPrivilegeEscalation") is not False:
                found.append(f"{where}: allowPrivilegeEscalation is not false")
            if sec.get("privileged"):
                found.append(f"{where}: privileged")
            if "ALL" not in ((sec.get("capabilities") or {}).get("drop") or []):
                found.append(f"{where}: capabilities not all dropped")
            if (sec.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                found.append(f"{where}: seccompProfile is not RuntimeDefault")
            limits = (c.get("resources") or {}).get("limits") or {}
            if not {"cpu", "memory"} <= set(limits):
                found.append(f"{where}: no cpu and memory limits")
    return found


@pytest.mark.parametrize("gpus", [0, 1])
@pytest.mark.parametrize("workers", [1, 3])
def test_every_pytorchjob_runs_restricted_pods(workers, gpus):
    opts = K8sConfig(gpus=gpus, node_selector={"pool": "a"})
    job = pytorchjob(spec(workers, opts=opts))
    assert problems_of(job) == []
    for pod in pod_specs(job):
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsUser"] == 1000  # the trainer image's user


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_workload_is_hardened_except_the_nfs_server(overlay):
    docs = render(overlay)
    workloads = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    assert workloads
    for obj in workloads:
        problems = problems_of(obj)
        if (obj["kind"], obj["metadata"]["name"]) in PRIVILEGED_ALLOWED:
            assert problems, "the NFS server became unprivileged: drop it from the exceptions"
            continue
        assert problems == [], problems
    assert not [d for d in docs if d["kind"] in ("Secret", "ClusterRole", "ClusterRoleBinding")]


HARNESS_RULES = [
    {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"], "verbs": ["create", "get", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": ["metrics.k8s.io"], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["services/proxy"], "resourceNames": ["gnn-bench-files"],
     "verbs": ["get"]},
]


def test_the_harness_role_is_namespaced_and_minimal():
    docs = render("base")
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "gnn-bench"
    assert role["rules"] == HARNESS_RULES
    flat = yaml.safe_dump(role["rules"])
    assert "'*'" not in flat and "secrets" not in flat
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert [s["namespace"] for s in binding["subjects"]] == ["gnn-bench"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_nodeport_overlay_exposes_tensorboard(overlay):
    services = {d["metadata"]["name"]: d["spec"] for d in render(overlay) if d["kind"] == "Service"}
    for name, svc in services.items():
        exposed = svc.get("type", "ClusterIP") != "ClusterIP"
        assert exposed == (overlay == "overlays/nodeport" and name == "tensorboard"), name


SECRET_PATTERNS = [
    re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|access[_-]?key)\s*[:=]\s*['\"]?\w{6,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"\"type\":\s*\"service_account\""),  # a GCP key file
]


def test_no_credentials_in_manifests_or_dockerfiles():
    files = [p for p in (REPO / "k8s").rglob("*.yaml")] + list((REPO / "docker").iterdir())
    assert len(files) > 5
    for path in files:
        text = path.read_text()
        for pattern in SECRET_PATTERNS:
            assert not pattern.search(text), f"{path}: looks like a credential ({pattern.pattern})"
    for dockerfile in (REPO / "docker").glob("*.Dockerfile"):
        users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
        assert users and users[-1] not in ("root", "0"), f"{dockerfile.name} runs as root"
