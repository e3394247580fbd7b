"""The fake cluster turns a TrainJob into what Kubeflow Trainer v2.3.0, JobSet v0.12.0 and the
Job controller make of it (tests/fake_k8s: trainer.py, jobset.py, jobs.py table each behaviour
and its source), and the real clients see it as on a cluster: ``kubectl`` (get, wait, logs) and
the ``kubeflow`` SDK's ``TrainerClient`` (list, get, wait, logs).

The TrainJobs are the backend's own (bench.backends.trainjob.manifests); their node pods run
tests/fake_k8s/stub_trainer.py (no torch). Waits poll with generous deadlines and assert no time
window.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_k8s import PROJECT_RUNTIME, FakeKube
from fake_k8s.cluster import container_env
from fake_k8s.kinds import JOBS, JOBSETS, PODS, SERVICES, TRAINJOBS
from fake_k8s.store import ApiError
from test_k8s_faithful import until

from bench.backends.base import TrialSpec
from bench.backends.trainjob.config import TrainJobConfig
from bench.backends.trainjob.manifests import trainjob

REPO = Path(__file__).resolve().parents[1]
STUB = [sys.executable, str(REPO / "tests" / "fake_k8s" / "stub_trainer.py")]
IMAGE = "europe-west1-docker.pkg.dev/p/gnn-bench/trainer:0.1.0"
TRIAL = "w3-e2-s0-tiny-0123abcd"
NS = "gnn-bench"


def make_spec(tmp_path: Path, workers: int = 3, **options: Any) -> TrialSpec:
    opts = TrainJobConfig(image=IMAGE, cpu="1", **options)
    run_dir = f"/mnt/bench/runs/s/{TRIAL}"
    return TrialSpec(trial_id=TRIAL, config_key="0123abcd0000", sweep_name="s",
                     workers=workers, epochs=2, threads_per_worker=1, cores=float(workers),
                     trainer_overrides=["dataset=tiny", "epochs=2", f"run_dir={run_dir}"],
                     trial_dir=tmp_path / "res" / "s" / TRIAL, run_dir=run_dir, backend=opts)


def create(fake: FakeKube, manifest: dict[str, Any]) -> dict[str, Any]:
    with fake.store.lock:
        return fake.cluster.api_create(TRAINJOBS, NS, manifest)


def get(fake: FakeKube, resource, name: str) -> dict[str, Any] | None:
    with fake.store.lock:
        found = fake.store.peek(resource, NS, name)
        return None if found is None else dict(found)


def pods(fake: FakeKube, name: str) -> list[dict[str, Any]]:
    with fake.store.lock:
        return [p for p in fake.cluster.trainjob_pods(name)
                if not p["metadata"].get("deletionTimestamp")]


def running(fake: FakeKube, name: str, n: int, attempt: int = 0) -> bool:
    live = [p for p in pods(fake, name) if p["status"].get("phase") == "Running"
            and p["metadata"]["labels"]["jobset.sigs.k8s.io/restart-attempt"] == str(attempt)]
    return len(live) == n


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or []
                 if c["type"] == kind and c["status"] == "True"), None)


def with_max_restarts(value: int):
    def edit(doc: dict) -> None:
        doc["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] = value
    return edit


@pytest.fixture()
def fake(tmp_path):
    with FakeKube(tmp_path / "volume", replica_command=STUB, metrics_window_s=0.5,
                  replica_env={"STUB_SECONDS": "30"}) as server:
        yield server


def test_a_trainjob_becomes_a_jobset_an_indexed_job_and_one_pod_per_node(fake, tmp_path):
    tj = create(fake, trainjob(make_spec(tmp_path)))
    name = tj["metadata"]["name"]
    until(lambda: running(fake, name, 3), 60, "three running node pods")
    jobset = get(fake, JOBSETS, name)
    assert [r["uid"] for r in jobset["metadata"]["ownerReferences"]] == [tj["metadata"]["uid"]]
    job = get(fake, JOBS, f"{name}-node-0")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 3
    assert job["spec"]["backoffLimit"] == 0  # the project's runtime: recovery is the JobSet's
    assert get(fake, SERVICES, name)["spec"]["clusterIP"] == "None"  # PET_MASTER_ADDR resolves
    for index, pod in enumerate(sorted(pods(fake, name), key=lambda p: p["metadata"]["name"])):
        meta = pod["metadata"]
        assert re.fullmatch(rf"{name}-node-0-{index}-[a-z0-9]{{5}}", meta["name"])
        assert meta["labels"]["jobset.sigs.k8s.io/jobset-name"] == name
        assert meta["labels"]["batch.kubernetes.io/job-completion-index"] == str(index)
        assert pod["spec"]["hostname"] == f"{name}-node-0-{index}"
        (container,) = pod["spec"]["containers"]
        assert container["name"] == "node" and container["image"] == IMAGE
        env = container_env(pod, container)
        assert {k: env[k] for k in env if k.startswith("PET_")} == {
            "PET_NNODES": "3", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(index),
            "PET_MASTER_ADDR": f"{name}-node-0-0.{name}", "PET_MASTER_PORT": "29500"}
        # What the runtime and the TrainJob's runtimePatches add: volume, security, labels.
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/mnt/bench", "/dev/shm"}
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert meta["labels"]["gnn-bench/trial"] == TRIAL
        assert container["resources"]["requests"]["cpu"] == "1"


def test_num_proc_per_node_auto_is_the_cpu_request_and_the_backend_pins_one(fake, tmp_path):
    """The torch plugin's default on a CPU node multiplies the world size; the backend's
    TrainJob sets numProcPerNode 1 whatever its CPU request."""
    manifest = trainjob(make_spec(tmp_path, workers=2))
    manifest["spec"]["trainer"]["resourcesPerNode"]["requests"]["cpu"] = "2500m"
    pinned = create(fake, manifest)
    auto = dict(manifest, metadata={**manifest["metadata"], "name": "auto"})
    auto["spec"] = dict(manifest["spec"], trainer={
        k: v for k, v in manifest["spec"]["trainer"].items() if k != "numProcPerNode"})
    auto = create(fake, auto)

    def nproc(tj):
        with fake.store.lock:
            js = fake.cluster.trainer.jobset_for(tj)
        container = js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
            "containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}["PET_NPROC_PER_NODE"]

    assert nproc(pinned) == "1"
    assert nproc(auto) == "3"  # 2500m rounded up: three processes on each node


def test_the_webhook_refuses_reserved_env_and_a_runtime_that_does_not_exist(fake, tmp_path):
    manifest = trainjob(make_spec(tmp_path))
    manifest["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "9"})
    with pytest.raises(ApiError, match=r"must not have reserved envs.*\[PET_NNODES\]"):
        create(fake, manifest)
    missing = trainjob(make_spec(tmp_path, runtime="nope"))
    with pytest.raises(ApiError, match="specified trainingRuntime must be created before"):
        create(fake, missing)


def test_a_deleted_node_pod_restarts_the_jobset_and_every_node_pod(fake, tmp_path):
    name = create(fake, trainjob(make_spec(tmp_path)))["metadata"]["name"]
    until(lambda: running(fake, name, 3), 60, "three running node pods")
    first = {p["metadata"]["name"] for p in pods(fake, name)}
    victim = next(p for p in pods(fake, name)
                  if p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "1")
    with fake.store.lock:
        fake.store.delete(PODS, NS, victim["metadata"]["name"])
    until(lambda: running(fake, name, 3, attempt=1), 60, "the node pods of restart 1")
    assert first.isdisjoint(p["metadata"]["name"] for p in pods(fake, name))
    jobset = get(fake, JOBSETS, name)
    assert jobset["status"]["restarts"] == jobset["status"]["restartsCountTowardsMax"] == 1
    assert condition(get(fake, TRAINJOBS, name), "Failed") is None


def test_the_restart_after_max_restarts_fails_the_trainjob(tmp_path):
    """Every pod exits 200 (a broken group, retryable): maxRestarts 1 allows one restart, the
    next failure ends the TrainJob with the JobSet's reason."""
    with FakeKube(tmp_path / "volume", replica_command=STUB, runtimes=(),
                  replica_env={"STUB_SECONDS": "0.2", "STUB_EXIT": "200"}) as fake:
        fake.apply_runtime(PROJECT_RUNTIME, edit=with_max_restarts(1))
        name = create(fake, trainjob(make_spec(tmp_path, workers=2)))["metadata"]["name"]
        failed = until(lambda: condition(get(fake, TRAINJOBS, name), "Failed"), 60, "Failed")
        assert failed["reason"] == "ReachedMaxRestarts"
        assert "reaching max number of restarts" in failed["message"]
        assert get(fake, JOBSETS, name)["status"]["restarts"] == 1


@pytest.mark.parametrize("code", ["1", "2"])
def test_a_permanent_exit_code_fails_at_once_without_a_restart(tmp_path, code):
    """Exit 2 (a bad configuration value) or 1 (a bug), like every code of 1-127, matches the
    node Job's podFailurePolicy, and the runtime's FailJobSet rule ends the JobSet without
    spending the restart budget."""
    with FakeKube(tmp_path / "volume", replica_command=STUB,
                  replica_env={"STUB_SECONDS": "0.2", "STUB_EXIT": code}) as fake:
        name = create(fake, trainjob(make_spec(tmp_path, workers=2)))["metadata"]["name"]
        failed = until(lambda: condition(get(fake, TRAINJOBS, name), "Failed"), 60, "Failed")
        assert failed["reason"] == "FailJobSetFailurePolicyAction"
        assert get(fake, JOBSETS, name)["status"]["restarts"] == 0
        job = get(fake, JOBS, f"{name}-node-0")
        assert condition(job, "Failed")["reason"] == "PodFailurePolicy"


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_gets_waits_and_reads_logs_of_a_trainjob(fake, tmp_path):
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    fake.cluster.replica_env.update(STUB_SECONDS="3", STUB_MARK="kubectl")
    name = create(fake, trainjob(make_spec(tmp_path, workers=2)))["metadata"]["name"]
    until(lambda: running(fake, name, 2), 60, "two running node pods")
    listed = kubectl(kubeconfig, "get", "pods", "-l", f"jobset.sigs.k8s.io/jobset-name={name}")
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split()[0].rsplit("-", 1)[0] for line in listed.stdout.splitlines()[1:]) \
        == [f"{name}-node-0-0", f"{name}-node-0-1"]
    waited = kubectl(kubeconfig, "wait", "--for=condition=Complete", f"trainjob/{name}",
                     "--timeout=60s")
    assert waited.returncode == 0 and "condition met" in waited.stdout, waited.stderr
    jobs = kubectl(kubeconfig, "get", "trainjobs")
    header, row = jobs.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "AGE"] and row.split()[:2] == [name, "Complete"]
    jobsets = kubectl(kubeconfig, "get", "jobsets", name)
    assert jobsets.stdout.splitlines()[1].split()[:3] == [name, "Completed", "0"]
    logs = kubectl(kubeconfig, "logs", "-l", f"jobset.sigs.k8s.io/jobset-name={name}", "-c", "node")
    assert logs.returncode == 0 and logs.stdout.count("kubectl") == 2, logs.stderr


def test_the_kubeflow_trainer_client_lists_gets_waits_and_reads_logs(fake, tmp_path, request):
    trainer = pytest.importorskip("kubeflow.trainer")
    from kubeflow.common.types import KubernetesBackendConfig

    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    client = trainer.TrainerClient(KubernetesBackendConfig(config_file=str(kubeconfig),
                                                           namespace=NS))
    # Its calls run on the kubernetes client's thread pool, which outlives the test unless closed
    request.addfinalizer(client.backend.custom_api.api_client.close)
    fake.cluster.replica_env.update(STUB_SECONDS="3", STUB_MARK="sdk")
    name = create(fake, trainjob(make_spec(tmp_path, workers=2)))["metadata"]["name"]
    job = client.wait_for_job_status(name, {"Running"}, timeout=60, polling_interval=1)
    assert job.num_nodes == 2 and job.runtime.name == "gnn-bench-torch"
    assert sorted(s.name for s in job.steps) == ["node-0", "node-1"]
    assert {s.pod_name.rsplit("-", 1)[0] for s in job.steps} == {f"{name}-node-0-0",
                                                                  f"{name}-node-0-1"}
    assert [j.name for j in client.list_jobs()] == [name]
    done = client.wait_for_job_status(name, timeout=60, polling_interval=1)
    assert done.status == "Complete" and client.get_job(name).status == "Complete"
    assert "stub trainer" in "".join(client.get_job_logs(name)) and "sdk" in "".join(
        client.get_job_logs(name))
    client.delete_job(name)
    until(lambda: get(fake, TRAINJOBS, name) is None, 30, "the TrainJob deleted")

    fake.cluster.replica_env.update(STUB_EXIT="2", STUB_SECONDS="0.2")
    failing = create(fake, trainjob(make_spec(tmp_path, workers=1)))["metadata"]["name"]
    with pytest.raises(RuntimeError, match="is Failed"):
        client.wait_for_job_status(failing, timeout=60, polling_interval=1)
