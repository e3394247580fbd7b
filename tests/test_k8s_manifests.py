"""The Kubernetes side without a cluster: PyTorchJob builders against the CRD's schema, the
rendered ``k8s/`` against Kubernetes' own schemas, names, labels and the k8s config checks."""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_k8s import kubeflow_dir
from omegaconf import OmegaConf

from bench.backends.base import TrialSpec
from bench.backends.k8s.config import K8sConfig
from bench.backends.k8s.manifests import (
    MAX_JOB_NAME,
    SPEC_HASH_ANNOTATION,
    job_name,
    label_value,
    pod_threads,
    pytorchjob,
    to_yaml,
    worker_of_pod,
)
from bench.config import compose, validate
from trainer.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
KUBEFLOW = kubeflow_dir()
CRD = KUBEFLOW / "kubeflow.org_pytorchjobs.v1.9.4.yaml"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
KUBERNETES_VERSION = "1.33.0"  # GKE's regular channel at the time of the study's re-run


def spec(workers: int = 3, opts: K8sConfig | None = None, **kw: Any) -> TrialSpec:
    values = dict(
        trial_id="w3-e10-s0-small-01521ad6",
        config_key="01521ad6abcd",
        sweep_name="table1-2026-11-28",
        workers=workers,
        epochs=10,
        threads_per_worker=2,
        cores=2.0 * workers,
        trainer_overrides=[
            "dataset=small",
            "epochs=10",
            "seed=0",
            "data_root=/mnt/bench/datasets",
            "run_dir=/mnt/bench/runs/table1-2026-11-28/w3",
            "train.threads=2",
        ],
        trial_dir=Path("results/x/w3"),
        run_dir="/mnt/bench/runs/table1-2026-11-28/w3",
        backend=dataclasses.replace(opts or K8sConfig(), backoff_limit=2, timeout_s=1800.5),
    )
    values.update(kw)
    return TrialSpec(**values)


# ----------------------------------------------------------------------------- CRD schema
def strict(schema: Any) -> Any:
    """The CRD schema, rejecting unknown fields (the API server would silently prune them)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd_validator():
    if not CRD.exists():
        pytest.skip(f"the Kubeflow CRD schemas are not here ({KUBEFLOW} is absent)")
    jsonschema = pytest.importorskip("jsonschema")
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def crd_errors(validator, manifest: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(manifest)]


OPTIONS = [
    ("defaults", K8sConfig()),
    (
        "gpu, limits, selector",
        K8sConfig(
            gpus=2,
            cpu="500m",
            cpu_limit="4",
            memory_limit="16Gi",
            node_selector={"cloud.google.com/gke-nodepool": "gpu"},
        ),
    ),
    (
        "no ttl, deadline, cleanup",
        K8sConfig(ttl_after_finished_s=None, active_deadline_s=600, clean_pod_policy="All"),
    ),
]


@pytest.mark.parametrize(("name", "opts"), OPTIONS, ids=[o[0] for o in OPTIONS])
@pytest.mark.parametrize("workers", [1, 2, 6])
def test_generated_pytorchjobs_pass_the_crd_schema(crd_validator, name, opts, workers):
    manifest = pytorchjob(spec(workers, opts=opts))
    assert crd_errors(crd_validator, manifest) == []
    # The schema does not say which values are allowed; the operator does.
    replicas = manifest["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) <= {"Master", "Worker"}
    assert all(r["restartPolicy"] == "OnFailure" for r in replicas.values())
    assert manifest["spec"]["runPolicy"]["cleanPodPolicy"] in ("None", "Running", "All")


def test_the_strict_schema_can_fail(crd_validator):
    manifest = pytorchjob(spec(opts=K8sConfig()))
    broken = copy.deepcopy(manifest)
    broken["spec"]["runPolicy"]["backoffLimits"] = 3  # a typo the API server would drop
    broken["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0][
        "resources"
    ] = "2"
    errors = crd_errors(crd_validator, broken)
    assert any("backoffLimits" in e for e in errors) and any("resources" in e for e in errors)


def test_the_manifest_runs_the_trainer_with_the_trial_and_the_config():
    opts = K8sConfig(
        image="europe-west1-docker.pkg.dev/p/gnn-bench/trainer:0.1",
        gpus=1,
        cpu="3",
        memory="12Gi",
        namespace="bench",
        volume_claim="vol",
        mount_path="/data",
        ttl_after_finished_s=60,
        clean_pod_policy="None",
    )
    manifest = pytorchjob(spec(3, opts=opts))
    meta, run = manifest["metadata"], manifest["spec"]["runPolicy"]
    assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "PyTorchJob"
    assert (
        meta["name"] == "table1-2026-11-28-w3-e10-s0-small-01521ad6"
        and meta["namespace"] == "bench"
    )
    assert meta["labels"]["gnn-bench/sweep"] == "table1-2026-11-28"
    assert meta["labels"]["gnn-bench/trial"] == "w3-e10-s0-small-01521ad6"
    assert run == {
        "backoffLimit": 2,
        "activeDeadlineSeconds": 1801,
        "cleanPodPolicy": "None",
        "ttlSecondsAfterFinished": 60,
    }
    replicas = manifest["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    for replica in replicas.values():
        pod = replica["template"]
        assert pod["metadata"]["labels"]["gnn-bench/trial"] == meta["labels"]["gnn-bench/trial"]
        (container,) = pod["spec"]["containers"]
        assert container["name"] == "pytorch" and container["image"] == opts.image
        assert container["command"] == ["python", "-m", "trainer"]
        assert container["args"] == spec().trainer_overrides
        assert {"name": "OMP_NUM_THREADS", "value": "2"} in container["env"]
        assert container["resources"] == {
            "requests": {"cpu": "3", "memory": "12Gi"},
            "limits": {"cpu": "3", "memory": "12Gi", "nvidia.com/gpu": "1"},
        }
        assert {"name": "bench-data", "mountPath": "/data"} in container["volumeMounts"]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["bench-data"]["persistentVolumeClaim"] == {"claimName": "vol"}
    assert "Worker" not in pytorchjob(spec(1, opts=opts))["spec"]["pytorchReplicaSpecs"]


def test_manifests_are_deterministic_and_the_spec_hash_follows_what_runs():
    a, b = pytorchjob(spec(opts=K8sConfig())), pytorchjob(spec(opts=K8sConfig()))
    assert a == b and to_yaml(a) == to_yaml(b)
    assert yaml.safe_load(to_yaml(a)) == a
    other = pytorchjob(spec(opts=K8sConfig(image="other:1")))
    assert (
        other["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        != a["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    )


NAMES = [
    ("default-2026-11-28", "w2-e10-s0-small-01521ad6"),
    ("table1-2026-11-28", "w6-e30-s0-small-01521ad6"),
    ("My Sweep_2026/11", "w2-e1-s0-tiny-aaaaaaaa"),
    ("2026-runs", "w2-e1-s0-tiny-aaaaaaaa"),
    ("a" * 80, "w128-e1000-s12-ogbl_citation2-0123abcd"),
    ("a" * 80, "w128-e1000-s13-ogbl_citation2-0123abcd"),
    ("b" * 80, "w128-e1000-s12-ogbl_citation2-0123abcd"),
]


def test_job_names_are_dns_labels_deterministic_and_unique_per_trial():
    names = [job_name(sweep, trial) for sweep, trial in NAMES]
    for name in names:
        assert DNS_1035.match(name) and len(name) <= MAX_JOB_NAME, name
        assert len(f"{name}-worker-999") <= 63  # the operator's pod and Service names
    assert len(set(names)) == len(names)
    assert names == [job_name(sweep, trial) for sweep, trial in NAMES]
    assert names[0] == "default-2026-11-28-w2-e10-s0-small-01521ad6"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default-2026-11-28", "default-2026-11-28"),
        ("my sweep/1", "my-sweep-1"),
        ("-x-", "x"),
        ("a" * 70, "a" * 63),
        ("ogbl_citation2", "ogbl_citation2"),
    ],
)
def test_label_values(text, expected):
    assert label_value(text) == expected and LABEL_VALUE.match(label_value(text))


@pytest.mark.parametrize(
    ("pod", "worker"),
    [
        ("j-master-0", "rank0"),
        ("j-worker-0", "rank1"),
        ("j-worker-4", "rank5"),
        ("j-launcher-0", None),
        ("other-master-0", None),
        ("j-worker-x", None),
    ],
)
def test_pods_map_to_the_ranks_the_operator_gives_them(pod, worker):
    assert worker_of_pod(pod, "j") == worker


@pytest.mark.parametrize(
    ("cpu", "limit", "threads"),
    [("1", None, 1), ("500m", None, 1), ("2", "4", 4), ("3500m", None, 3)],
)
def test_threads_per_pod_are_its_whole_cores(cpu, limit, threads):
    assert pod_threads(cpu, limit) == threads


BAD_K8S = [
    ("backend.namespace=Bad_NS", "backend.namespace=Bad_NS is not a valid namespace"),
    ("backend.cpu=lots", "backend.cpu=lots is not a positive Kubernetes quantity"),
    ("backend.memory=0", "backend.memory=0 is not a positive"),
    ("backend.image_pull_policy=Sometimes", "backend.image_pull_policy=Sometimes is invalid"),
    ("backend.clean_pod_policy=Never", "backend.clean_pod_policy=Never is invalid"),
    ("backend.gpus=-1", "backend.gpus=-1 must be >= 0"),
    ("backend.mount_path=data", "must be an absolute path"),
    ("backend.max_parallel=0", "backend.max_parallel=0 is invalid"),
    ("backend.image=", "backend.image is empty"),
    ("backend.start_timeout_s=0", "backend.start_timeout_s=0.0 is invalid: it must be > 0"),
    ("backend.files_namespace=Infra", "backend.files_namespace=Infra is not a valid namespace"),
    # The study's demo at 6 workers with the old default limit: refused, naming the limit.
    ("workers=6 epochs=4 fault.kill_at_epoch=2 backend.backoff_limit=3",
     "fault.count=1 at workers=6 costs 5 restarts, which the training operator counts against "
     "backend.backoff_limit=3 (the job fails when they reach it): set backend.backoff_limit=6 "
     "or more"),
    ("workers=2 epochs=4 fault.kill_at_epoch=1 backend.backoff_limit=0",
     "set backend.backoff_limit=2 or more"),
]


@pytest.mark.parametrize(("override", "message"), BAD_K8S)
def test_bad_k8s_values_fail_before_anything_runs(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(["backend=k8s", *override.split()]))


@pytest.mark.parametrize(("workers", "count", "limit"), [(2, 1, 2), (6, 1, 10), (6, 1, 6),
                                                         (4, 3, 10), (1, 2, 0)])
def test_fault_plans_within_the_restart_budget_pass(workers, count, limit):
    """count * (workers - 1) restarts below the limit (a single pod's loss costs none)."""
    validate(compose(["backend=k8s", f"workers={workers}", "epochs=6", "fault.kill_at_epoch=1",
                      f"fault.count={count}", f"backend.backoff_limit={limit}"]))
    # the local backend counts group restarts (torchrun) and is not checked up front
    validate(compose([f"workers={workers}", "epochs=6", "fault.kill_at_epoch=1",
                      f"fault.count={count}", "backend.backoff_limit=0"]))


def test_the_k8s_config_composes_and_local_keeps_working():
    cfg = compose(["backend=k8s", "+backend.node_selector={cloud.google.com/gke-nodepool:gpu}"])
    validate(cfg)
    assert dict(cfg.backend.node_selector) == {"cloud.google.com/gke-nodepool": "gpu"}
    assert cfg.backend.name == "k8s" and cfg.backend.namespace == "gnn-bench"
    assert (cfg.backend.backoff_limit, cfg.backend.start_timeout_s, cfg.backend.files_namespace) \
        == (10, 600, "gnn-bench-infra")
    assert OmegaConf.to_object(cfg.backend).volume_claim == "gnn-bench-data"
    validate(compose(["backend=local", "backend.max_parallel=2"]))


# ----------------------------------------------------------------------------- k8s/ (kustomize)
OVERLAYS = ["base", "overlays/gke", "overlays/nodeport", "prepare-data"]


def render(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH (its kustomize renders k8s/)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "k8s" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_renders_offline_and_passes_kubernetes_schemas(overlay):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = render(overlay)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        if doc["kind"] not in ("Namespace", "PersistentVolume"):
            # The trials' namespace holds only what the trials need; the servers live apart.
            infra = doc["kind"] in ("Deployment", "Service", "ConfigMap") or doc["metadata"][
                "name"] == "nfs-server-disk"
            expected = "gnn-bench-infra" if infra else "gnn-bench"
            if doc["kind"] in ("Role", "RoleBinding", "PersistentVolumeClaim") and doc[
                    "metadata"]["namespace"] == "gnn-bench-infra":
                expected = "gnn-bench-infra"
            assert doc["metadata"]["namespace"] == expected, (doc["kind"], doc["metadata"]["name"])


def test_the_validator_can_fail():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "eighty"}], "tpye": "ClusterIP"},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


def by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def by_namespace(docs: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(d["metadata"].get("namespace", ""), d["kind"], d["metadata"]["name"]): d for d in docs}


def test_the_base_wires_volume_file_server_tensorboard_and_rbac_together():
    docs = by_namespace(render("base"))
    cfg = compose(["backend=k8s"]).backend
    jobs, infra = cfg.namespace, cfg.files_namespace
    assert (jobs, infra) == ("gnn-bench", "gnn-bench-infra")
    # One NFS export, one PersistentVolume per namespace's claim (a volume binds one claim).
    volumes = []
    for ns in (jobs, infra):
        pvc = docs[(ns, "PersistentVolumeClaim", cfg.volume_claim)]
        pv = docs[("", "PersistentVolume", pvc["spec"]["volumeName"])]
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] == pv["spec"]["accessModes"]
        assert pv["spec"]["claimRef"] == {"namespace": ns, "name": cfg.volume_claim}
        volumes.append(pv["spec"]["nfs"])
    assert volumes[0] == volumes[1]
    assert volumes[0]["server"] == docs[(infra, "Service", "nfs-server")]["spec"]["clusterIP"]
    files = docs[(infra, "Service", cfg.files_service)]
    assert files["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert len(files["spec"]["ports"]) == 1  # so the proxy path needs no port name
    for deployment in ("gnn-bench-files", "tensorboard"):
        pod = docs[(infra, "Deployment", deployment)]["spec"]["template"]["spec"]
        claims = [
            v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        ]
        assert claims == [{"claimName": cfg.volume_claim, "readOnly": True}]
    assert docs[(infra, "Service", "tensorboard")]["spec"]["type"] == "ClusterIP"
    assert not [k for k in docs if k[0] == jobs and k[1] in ("Deployment", "Service")]
    for ns in (jobs, infra):
        binding = docs[(ns, "RoleBinding", "gnn-bench-harness")]
        assert binding["roleRef"]["name"] == "gnn-bench-harness"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "gnn-bench-harness", "namespace": jobs}
        ]
        rules = docs[(ns, "Role", "gnn-bench-harness")]["rules"]
        assert all(
            not {"*", "update", "patch", "watch", "deletecollection"} & set(r["verbs"])
            for r in rules
        )
    # In the servers' namespace the harness may only read the file server.
    assert docs[(infra, "Role", "gnn-bench-harness")]["rules"] == [
        {"apiGroups": [""], "resources": ["services/proxy"], "resourceNames": [cfg.files_service],
         "verbs": ["get"]}
    ]
    assert not [r for r in docs[(jobs, "Role", "gnn-bench-harness")]["rules"]
                if "services/proxy" in r["resources"]]


def test_overlays_change_what_they_say():
    nodeport = by_kind(render("overlays/nodeport"))[("Service", "tensorboard")]["spec"]
    assert nodeport["type"] == "NodePort" and nodeport["ports"][0]["nodePort"] == 30606
    gke = by_kind(render("overlays/gke"))
    assert (
        gke[("PersistentVolumeClaim", "nfs-server-disk")]["spec"]["storageClassName"]
        == "standard-rwo"
    )
    image = gke[("Deployment", "tensorboard")]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith("-docker.pkg.dev/PROJECT_ID/gnn-bench/tensorboard:0.1.0")


def test_the_operator_is_a_pinned_remote_base():
    kustomization = yaml.safe_load((REPO / "k8s" / "operator" / "kustomization.yaml").read_text())
    (resource,) = kustomization["resources"]
    assert "kubeflow/training-operator" in resource and "manifests/overlays/standalone" in resource
    assert re.search(r"\?ref=v1\.9\.\d+$", resource)


# The parts of the v1.9.4 operator Deployment (manifests/base/deployment.yaml) that the patch
# touches, as the standalone overlay renders them: the container, its cert mount and volume.
OPERATOR_STAND_IN = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: training-operator, namespace: kubeflow}
spec:
  selector: {matchLabels: {control-plane: kubeflow-training-operator}}
  template:
    metadata: {labels: {control-plane: kubeflow-training-operator}}
    spec:
      containers:
        - name: training-operator
          image: kubeflow/training-operator:v1-93c5489
          command: [/manager]
          volumeMounts: [{name: cert, mountPath: /tmp/k8s-webhook-server/serving-certs,
                          readOnly: true}]
      volumes: [{name: cert, secret: {secretName: training-operator-webhook-cert}}]
"""


def test_the_operator_reads_the_compliant_init_container_template(tmp_path):
    """k8s/operator rendered offline, with the remote base replaced by a stand-in of its
    Deployment: the operator gets --pytorch-init-container-template-file naming the mounted
    ConfigMap that holds k8s/operator/init-container.yaml."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH (its kustomize renders k8s/)")
    operator = REPO / "k8s" / "operator"
    work = tmp_path / "operator"
    shutil.copytree(operator, work)
    (work / "upstream.yaml").write_text(OPERATOR_STAND_IN)
    kustomization = yaml.safe_load((work / "kustomization.yaml").read_text())
    kustomization["resources"] = ["upstream.yaml"]
    (work / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    out = subprocess.run(["kubectl", "kustomize", str(work)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    docs = by_kind([d for d in yaml.safe_load_all(out.stdout) if d])
    pod = docs[("Deployment", "training-operator")]["spec"]["template"]["spec"]
    (flag,) = [a for a in pod["containers"][0]["args"]
               if a.startswith("--pytorch-init-container-template-file=")]
    path = Path(flag.split("=", 1)[1])
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == str(path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = docs[("ConfigMap", volume["configMap"]["name"])]
    assert config_map["metadata"]["namespace"] == "kubeflow"
    assert config_map["data"][path.name] == (operator / "init-container.yaml").read_text()
    assert [m["name"] for m in pod["containers"][0]["volumeMounts"]][0] == "cert"  # kept


def test_cloudbuild_builds_the_images_the_configs_name():
    build = yaml.safe_load((REPO / "docker" / "cloudbuild.yaml").read_text())
    images = build["images"]
    assert any(i.endswith("/trainer:${_TAG}") for i in images)
    assert any(i.endswith("/tensorboard:${_TAG}") for i in images)
    for step in build["steps"]:
        dockerfile = next(a.split("=", 1)[1] for a in step["args"] if a.startswith("--file="))
        assert (REPO / dockerfile).exists()
    trainer = (REPO / "docker" / "trainer.Dockerfile").read_text()
    assert (
        "ARG TORCH_VARIANT=cpu" in trainer
        and "download.pytorch.org/whl/${TORCH_VARIANT}" in trainer
    )


def test_a_dry_run_sweep_writes_one_manifest_per_trial_and_contacts_no_cluster(
    crd_validator, tmp_path
):
    import os
    import sys

    from fake_k8s import FakeKube

    with FakeKube(tmp_path / "volume") as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        out = subprocess.run(
            [sys.executable, "-m", "bench.sweep", "backend=k8s", "backend.dry_run=true",
             f"backend.kubeconfig={kubeconfig}", "dataset=tiny", "workers=1,4", "epochs=2",
             "sweep_name=review", "results_dir=res", "-m"],
            cwd=tmp_path, capture_output=True, text=True, timeout=240,
            env={k: v for k, v in os.environ.items() if k != "GNN_BENCH_DATA"},
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert fake.requests == []
        manifests = sorted((tmp_path / "res" / "review" / "manifests").glob("*.yaml"))
        if shutil.which("kubectl"):  # as a user reviews them: kubectl's client-side dry run
            applied = subprocess.run(
                ["kubectl", f"--kubeconfig={kubeconfig}", "apply", "--dry-run=client", "-o",
                 "name", *[f"--filename={p}" for p in manifests]],
                capture_output=True, text=True, timeout=60)
            assert applied.returncode == 0, applied.stderr
            assert applied.stdout.count("pytorchjob.kubeflow.org/") == 2
            assert "/openapi/v3/apis/kubeflow.org/v1" in {p.split("?")[0] for _, p in fake.requests}
    assert [m.stem.split("-")[0] for m in manifests] == ["w1", "w4"]
    for path in manifests:
        manifest = yaml.safe_load(path.read_text())
        assert crd_errors(crd_validator, manifest) == []
        assert manifest["metadata"]["name"] == job_name("review", path.stem)
        workers = int(path.stem.split("-")[0][1:])
        replicas = manifest["spec"]["pytorchReplicaSpecs"]
        assert sum(r["replicas"] for r in replicas.values()) == workers
    assert "dry run" in out.stdout
