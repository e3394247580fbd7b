"""The TrainJob side without a cluster: the builders against Trainer v2.3.0's CRD schemas made
strict (from /work/shared/kubeflow, never copied here), the project's runtime, dry runs through
``kubectl apply --dry-run=client``, the install's pin and the trainjob config checks."""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_k8s import PROJECT_RUNTIME, FakeKube, kubeflow_dir
from test_k8s_manifests import crd_errors, spec, strict

import rundir
from bench.backends.trainjob.config import TrainJobConfig
from bench.backends.trainjob.manifests import trainjob, worker_of_pod
from bench.config import compose, validate
from trainer.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
KUBEFLOW = kubeflow_dir()


def validator(name: str):
    path = KUBEFLOW / name
    if not path.exists():
        pytest.skip(f"the Kubeflow CRD schemas are not here ({KUBEFLOW} is absent)")
    jsonschema = pytest.importorskip("jsonschema")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


@pytest.fixture(scope="module")
def trainjob_schema():
    return validator("trainer.kubeflow.org_trainjobs.v2.3.0.yaml")


def tj_spec(workers: int = 3, **options):
    base = spec(workers)
    return dataclasses.replace(base, backend=TrainJobConfig(timeout_s=1800.5, **options))


OPTIONS = [
    ("defaults", {}),
    ("gpu, limits, selector", {"gpus": 2, "cpu": "500m", "cpu_limit": "4",
                               "memory_limit": "16Gi",
                               "node_selector": {"cloud.google.com/gke-nodepool": "gpu"}}),
    ("cluster runtime, deadline", {"runtime_kind": "ClusterTrainingRuntime",
                                   "runtime": "torch-distributed", "active_deadline_s": 600}),
]


@pytest.mark.parametrize(("name", "options"), OPTIONS, ids=[o[0] for o in OPTIONS])
@pytest.mark.parametrize("workers", [1, 2, 6])
def test_generated_trainjobs_pass_the_strict_crd_schema(trainjob_schema, name, options, workers):
    manifest = trainjob(tj_spec(workers, **options))
    assert crd_errors(trainjob_schema, manifest) == []
    trainer = manifest["spec"]["trainer"]
    assert trainer["numNodes"] == workers
    assert trainer["numProcPerNode"] == 1  # never the torch plugin's `auto` (= CPUs per node)
    assert not [e for e in trainer["env"] if e["name"].startswith("PET_")]  # the webhook's rule
    assert trainer["command"][:3] == ["python", "-m", "trainer.launch"]
    assert trainer["args"][:2] == ["-m", "trainer"] and "epochs=10" in trainer["args"]
    assert manifest["spec"]["runtimeRef"]["kind"] == options.get("runtime_kind",
                                                                 "TrainingRuntime")


def test_the_strict_schema_can_fail(trainjob_schema):
    broken = copy.deepcopy(trainjob(tj_spec()))
    broken["spec"]["trainer"]["numProcsPerNode"] = 1  # a typo the API server would drop
    broken["spec"]["trainer"]["numNodes"] = "3"  # a string where the API wants an integer
    errors = crd_errors(trainjob_schema, broken)
    assert any("numProcsPerNode" in e for e in errors)
    assert any(e.startswith("spec/trainer/numNodes") for e in errors)


def test_the_projects_runtime_passes_the_runtime_schema_and_sets_the_restart_budget():
    runtime = yaml.safe_load(PROJECT_RUNTIME.read_text())
    schema = validator("trainer.kubeflow.org_trainingruntimes.v2.3.0.yaml")
    assert crd_errors(schema, runtime) == []
    js = runtime["spec"]["template"]["spec"]
    assert js["failurePolicy"]["maxRestarts"] == TrainJobConfig().backoff_limit
    (node,) = js["replicatedJobs"]
    assert node["name"] == "node" and node["template"]["spec"]["backoffLimit"] == 0
    pod = node["template"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["containers"][0]["name"] == "node"
    # Kubeflow's ExitCode rule: 1-127 fail at once, 128-255 (signals, 200) are retried.
    (rule,) = node["template"]["spec"]["podFailurePolicy"]["rules"]
    codes = rule["onExitCodes"]
    assert rule["action"] == "FailJob" and codes["operator"] == "NotIn"
    assert codes["values"] == list(range(128, 256))  # sorted, as the API requires
    assert [c for c in range(1, 256) if c not in codes["values"]] == [
        c for c in range(1, 256) if not rundir.retryable(c)]
    assert "torch" in runtime["spec"]["mlPolicy"]


def test_dry_run_writes_trainjobs_that_pass_the_schema_and_kubectl_apply(trainjob_schema,
                                                                          tmp_path):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH")
    with FakeKube(tmp_path / "volume") as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        out = subprocess.run(
            [sys.executable, "-m", "bench.sweep", "backend=trainjob", "backend.dry_run=true",
             f"backend.kubeconfig={kubeconfig}", "dataset=tiny", "workers=2,4,6", "epochs=10,30",
             "sweep_name=review", "results_dir=res", "-m"],
            cwd=tmp_path, capture_output=True, text=True, timeout=240,
            env={k: v for k, v in os.environ.items() if k != "GNN_BENCH_DATA"})
        assert out.returncode == 0, out.stdout + out.stderr
        assert fake.requests == []  # a dry run contacts no cluster
        manifests = sorted((tmp_path / "res" / "review" / "manifests").glob("*.yaml"))
        assert len(manifests) == 6
        for path in manifests:
            manifest = yaml.safe_load(path.read_text())
            assert manifest["kind"] == "TrainJob" and crd_errors(trainjob_schema, manifest) == []
            assert manifest["spec"]["trainer"]["numNodes"] == int(path.stem.split("-")[0][1:])
        # Client-side, as a user runs it: kubectl parses each file, maps its kind through the
        # server's discovery and, finding the fieldValidation parameter in the group's OpenAPI v3
        # document, leaves field validation to the server, as on a real cluster (the strict CRD
        # schema above is the field check).
        applied = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", "apply", "--dry-run=client", "-o", "name",
             *[f"--filename={p}" for p in manifests]], capture_output=True, text=True, timeout=60)
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.count("trainjob.trainer.kubeflow.org/") == 6
        read = {path.split("?")[0] for method, path in fake.requests}
        assert "/openapi/v3/apis/trainer.kubeflow.org/v1alpha1" in read
        assert not [m for m, _ in fake.requests if m != "GET"]  # a client dry run writes nothing
    assert "dry run" in out.stdout


def test_pods_map_to_their_completion_index():
    labels = {"jobset.sigs.k8s.io/jobset-name": "s-w3",
              "batch.kubernetes.io/job-completion-index": "2"}
    assert worker_of_pod({"labels": labels}, "s-w3") == "rank2"
    assert worker_of_pod({"labels": labels}, "s-w4") is None
    assert worker_of_pod({"labels": {**labels, "batch.kubernetes.io/job-completion-index": ""}},
                         "s-w3") is None


@pytest.mark.parametrize(("override", "message"), [
    ("backend.runtime_kind=Runtime", "backend.runtime_kind=Runtime is invalid"),
    ("backend.runtime=Bad_Name", "backend.runtime=Bad_Name is not a valid runtime name"),
    ("backend.cores=2", "cores"),
])
def test_bad_trainjob_values_fail_before_anything_runs(override, message):
    with pytest.raises((ConfigError, Exception), match=message):
        validate(compose(["backend=trainjob", override]))


def test_a_fault_plan_past_the_runtimes_budget_is_refused():
    TrainJobConfig().check_fault_plan(6, 3)
    with pytest.raises(ConfigError, match="backend.backoff_limit=3"):
        TrainJobConfig().check_fault_plan(2, 4)


def test_the_trainer_install_is_a_pinned_release_and_the_runtime_renders_offline():
    kustomization = yaml.safe_load((REPO / "k8s" / "trainer" / "kustomization.yaml").read_text())
    (resource,) = kustomization["resources"]
    assert resource.startswith("https://github.com/kubeflow/trainer.git/manifests/overlays/")
    assert resource.endswith("?ref=v2.3.0")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH (its kustomize renders k8s/)")
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / "trainer" / "runtime")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = {(d["kind"], d["metadata"]["name"], d["metadata"]["namespace"])
             for d in yaml.safe_load_all(out.stdout) if d}
    assert kinds == {("TrainingRuntime", "gnn-bench-torch", "gnn-bench"),
                     ("Role", "gnn-bench-harness-trainjob", "gnn-bench"),
                     ("RoleBinding", "gnn-bench-harness-trainjob", "gnn-bench")}
