"""Hardening of everything that runs on a cluster: the PyTorchJobs the harness builds
(bench/backends/k8s/manifests.py), the pods the training operator makes of them (init
container included, as the fake operator creates them from k8s/operator's template), and every
object of ``kubectl kustomize k8s/<overlay>``.

Each pod: non-root, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault,
resource limits. The one exception is the in-cluster NFS server (the kernel NFS server needs a
privileged container, and its init container chowns the export for the non-root pods), which
lives in its own namespace: the trials' namespace enforces the restricted Pod Security
Standard. The harness's Roles are namespaced and exactly the verbs it uses; TensorBoard is
ClusterIP except in overlays/nodeport, and no documented firewall rule opens a port to the
world; no Secret and no credential in manifests or Dockerfiles.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_k8s import PROJECT_INIT_TEMPLATE, FakeKube
from fake_k8s.admission import ENFORCE, violations
from fake_k8s.kinds import PODS, PYTORCHJOBS
from test_k8s_manifests import OVERLAYS, by_namespace, render, spec

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


def operator_pods(tmp_path: Path, template: Path | None) -> tuple[list[dict], list[str]]:
    """The pods the training operator creates for a 3-worker trial in the trials' namespace
    (labelled as k8s/base labels it), and the operator's FailedCreatePod messages."""
    sleeper = ["python", "-c", "import time; time.sleep(30)"]
    with FakeKube(tmp_path / "volume", replica_command=sleeper,
                  init_container_template=template) as fake:
        manifest = pytorchjob(spec(3, opts=K8sConfig(image="registry.example/trainer:1")))
        with fake.store.lock:
            fake.cluster.api_create(PYTORCHJOBS, "gnn-bench", manifest)
        name = manifest["metadata"]["name"]
        deadline = time.monotonic() + 60
        pods, refused = [], []
        while time.monotonic() < deadline and len(pods) < 3 and not refused:
            time.sleep(0.1)
            with fake.store.lock:
                pods, _ = fake.store.list(PODS, "gnn-bench", f"training.kubeflow.org/job-name={name}")
                refused = [e["message"] for e in fake.cluster.events_for(name, "FailedCreatePod")]
    return pods, refused


def test_the_operators_pods_pass_the_restricted_profile(tmp_path):
    """With k8s/operator's template: every pod the operator creates, the Workers' init-pytorch
    included, is admitted by the restricted namespace and passes this file's checks."""
    pods, refused = operator_pods(tmp_path, PROJECT_INIT_TEMPLATE)
    assert refused == [] and len(pods) == 3
    workers = [p for p in pods if p["metadata"]["labels"]["training.kubeflow.org/replica-type"]
               == "worker"]
    assert [c["name"] for p in workers for c in p["spec"]["initContainers"]] == ["init-pytorch"] * 2
    for pod in pods:
        assert violations(pod, "restricted") == []
        assert problems_of(pod) == []


def test_the_operators_own_init_container_is_refused_by_the_restricted_namespace(tmp_path):
    """Without the template (the operator's built-in alpine init container), the Worker pods
    are rejected by Pod Security admission: the check above can fail."""
    pods, refused = operator_pods(tmp_path, None)
    assert [p["metadata"]["labels"]["training.kubeflow.org/replica-type"] for p in pods] == [
        "master"]
    assert refused and 'violates PodSecurity "restricted:latest"' in refused[0]
    assert 'container "init-pytorch" must set securityContext.allowPrivilegeEscalation=false' \
        in refused[0]


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


HARNESS_RULES = {
    "gnn-bench": [
        {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"],
         "verbs": ["create", "get", "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
        {"apiGroups": ["metrics.k8s.io"], "resources": ["pods"], "verbs": ["list"]},
    ],
    "gnn-bench-infra": [
        {"apiGroups": [""], "resources": ["services/proxy"], "resourceNames": ["gnn-bench-files"],
         "verbs": ["get"]},
    ],
}


def test_the_harness_roles_are_namespaced_and_minimal():
    docs = render("base")
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    assert {ns: r["rules"] for ns, r in roles.items()} == HARNESS_RULES
    for role in roles.values():
        flat = yaml.safe_dump(role["rules"])
        assert "'*'" not in flat and "secrets" not in flat
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(HARNESS_RULES)
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": "gnn-bench-harness"}
        assert [s["namespace"] for s in binding["subjects"]] == ["gnn-bench"]


def test_the_trials_namespace_is_restricted_and_holds_no_infrastructure():
    """pods: delete (fault injection) reaches only the trials: the NFS server, the file server
    and TensorBoard live in a namespace of their own; only that one allows privileged pods."""
    docs = render("base")
    namespaces = {d["metadata"]["name"]: d["metadata"].get("labels", {})
                  for d in docs if d["kind"] == "Namespace"}
    assert namespaces["gnn-bench"][ENFORCE] == "restricted"
    assert namespaces["gnn-bench-infra"][ENFORCE] == "privileged"
    workloads = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    assert {d["metadata"]["namespace"] for d in workloads} == {"gnn-bench-infra"}
    assert by_namespace(docs)[("gnn-bench-infra", "Deployment", "nfs-server")]
    # The prepare-data Job runs where the trials run, and passes their namespace's admission.
    (job,) = [d for d in render("prepare-data") if d["kind"] == "Job"]
    assert job["metadata"]["namespace"] == "gnn-bench"
    assert violations({"spec": job["spec"]["template"]["spec"]}, "restricted") == []


def test_no_documented_firewall_rule_opens_a_port_to_the_world():
    """docs/gke.md and the nodeport overlay: every `gcloud compute firewall-rules create` has a
    source range that is not 0.0.0.0/0 and target tags (not every VM of the project)."""
    texts = {p: p.read_text() for p in [REPO / "docs" / "gke.md",
                                        REPO / "k8s" / "overlays" / "nodeport" / "kustomization.yaml"]}
    rules = []
    for path, text in texts.items():
        joined = re.sub(r"\\\n#?\s*", " ", text)  # join continued lines (also in comments)
        rules += [(path.name, line) for line in joined.splitlines()
                  if "firewall-rules create" in line]
    assert rules, "no firewall rule documented: drop this test or the NodePort overlay"
    for name, rule in rules:
        assert "--source-ranges" in rule and "0.0.0.0/0" not in rule, (name, rule)
        assert "--target-tags" in rule, (name, rule)


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
