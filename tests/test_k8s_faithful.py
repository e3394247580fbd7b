"""The fake cluster behaves as the training operator v1.9.4, the kubelet and the API server do
(tests/fake_k8s: each behaviour's source is tabled in operator.py, kubelet.py and store.py), the
harness reads it as it would read a cluster, and the real clients see what they would see:
``kubectl`` (get, describe, logs, delete) and Kubeflow's ``TrainingClient``.

Replicas run tests/fake_k8s/stub_trainer.py (no torch); waits poll the fake's state with
generous deadlines and assert no time window (a lower bound on a back-off holds on a busy
machine; an upper bound would not).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_k8s import FakeKube, project_role_rules
from fake_k8s.kinds import PODS, PYTORCHJOBS
from fake_k8s.store import FOREGROUND, ApiError

from bench.backends.base import JobState, TrialSpec, wait
from bench.backends.k8s import K8sBackend
from bench.backends.k8s.config import K8sConfig
from bench.backends.k8s.manifests import pytorchjob

REPO = Path(__file__).resolve().parents[1]
STUB = [sys.executable, str(REPO / "tests" / "fake_k8s" / "stub_trainer.py")]
IMAGE = "europe-west1-docker.pkg.dev/p/gnn-bench/trainer:0.1.0"
TRIAL = "w3-e2-s0-tiny-0123abcd"
NS = "gnn-bench"


def until(predicate: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what or predicate}")


def make_spec(tmp_path: Path, kubeconfig: Path | None = None, workers: int = 3,
              backoff_limit: int = 3, redo: bool = False, **options: Any) -> TrialSpec:
    values = {"image": IMAGE, "api_retries": 3, "api_backoff_s": 0.01, "poll_interval_s": 0.1,
              "backoff_limit": backoff_limit, "timeout_s": 120, **options}
    opts = K8sConfig(kubeconfig=str(kubeconfig) if kubeconfig else None, **values)
    run_dir = f"/mnt/bench/runs/s/{TRIAL}"
    return TrialSpec(trial_id=TRIAL, config_key="0123abcd0000", sweep_name="s",
                     workers=workers, epochs=2, threads_per_worker=1, cores=float(workers),
                     trainer_overrides=["dataset=tiny", "epochs=2", f"run_dir={run_dir}"],
                     trial_dir=tmp_path / "res" / "s" / TRIAL, run_dir=run_dir, backend=opts,
                     redo=redo)


def create_job(fake: FakeKube, tmp_path: Path, workers: int = 3, backoff_limit: int = 3,
               restart_policy: str | None = None, **options: Any) -> dict[str, Any]:
    manifest = pytorchjob(make_spec(tmp_path, workers=workers, backoff_limit=backoff_limit,
                                    **options))
    if restart_policy:
        for replica in manifest["spec"]["pytorchReplicaSpecs"].values():
            replica["restartPolicy"] = restart_policy
    with fake.store.lock:
        return fake.cluster.api_create(PYTORCHJOBS, NS, manifest)


def job_of(fake: FakeKube, name: str) -> dict[str, Any] | None:
    with fake.store.lock:
        job = fake.cluster.job(name)
        return None if job is None else dict(job)


def pods_of(fake: FakeKube, name: str) -> list[dict[str, Any]]:
    with fake.store.lock:
        items, _ = fake.store.list(PODS, NS, f"training.kubeflow.org/job-name={name}")
        return items


def conditions(job: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((job or {}).get("status") or {}).get("conditions") or []}


def is_true(job: dict[str, Any] | None, kind: str) -> bool:
    return conditions(job).get(kind, {}).get("status") == "True"


def restart_count(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or [])


@pytest.fixture()
def admin(tmp_path):
    """The fake cluster for a user with every right (kubectl and the SDK, as a cluster admin)."""
    with FakeKube(tmp_path / "volume", replica_command=STUB, metrics_window_s=0.5,
                  replica_env={"STUB_SECONDS": "30"}) as server:
        yield server


@pytest.fixture()
def fake(tmp_path):
    with FakeKube(tmp_path / "volume", replica_command=STUB, metrics_window_s=0.5,
                  replica_env={"STUB_SECONDS": "30"}, role_rules=project_role_rules()) as server:
        yield server


# ----------------------------------------------------------------------------- the operator
def test_the_backoff_limit_is_the_sum_of_restarts_over_running_pods(fake, tmp_path):
    """Every replica fails at once; the kubelet restarts each in place. The operator fails the
    job when the sum of the restart counts reaches backoffLimit (3 = one restart of each of the
    three pods), never sets Restarting (no pod is Failed), and under cleanPodPolicy None keeps
    the pods, which go on restarting."""
    fake.cluster.replica_env.update(STUB_EXIT="1", STUB_SECONDS="0.3")
    job = create_job(fake, tmp_path, workers=3, backoff_limit=3)
    name, uid = job["metadata"]["name"], job["metadata"]["uid"]
    failed = until(lambda: (j := job_of(fake, name)) and is_true(j, "Failed") and j, 60, "Failed")
    cond = conditions(failed)["Failed"]
    assert cond["reason"] == "PyTorchJobFailed"
    assert cond["message"] == f"Job {name} has failed because it has reached the specified backoff limit"
    assert "Restarting" not in conditions(failed)
    sums = fake.cluster.operator.backoff_sums[uid]
    assert sums[-1] >= 3 and max(sums[:-1]) < 3  # it failed at the first pass that reached 3
    assert conditions(failed)["Running"]["status"] == "False"
    before = {p["metadata"]["name"]: restart_count(p) for p in pods_of(fake, name)}
    assert len(before) == 3
    until(lambda: any(restart_count(p) > before[p["metadata"]["name"]] for p in pods_of(fake, name)),
          60, "a kept pod restarting again")
    assert len(pods_of(fake, name)) == 3 and is_true(job_of(fake, name), "Failed")


def test_running_means_the_master_runs(tmp_path):
    """One core for a three-pod job of one core each: the Master runs, the Workers cannot be
    scheduled, and the job is Running all the same (the operator looks at the Master)."""
    with FakeKube(tmp_path / "v", replica_command=STUB, replica_env={"STUB_SECONDS": "30"},
                  nodes={"small": {"cpu": "1.5", "memory": "16Gi"}}) as fake:
        name = create_job(fake, tmp_path, cpu="1")["metadata"]["name"]
        until(lambda: is_true(job_of(fake, name), "Running"), 60, "Running")
        pods = {p["metadata"]["labels"]["training.kubeflow.org/replica-type"]: p
                for p in pods_of(fake, name)}
        assert pods["master"]["status"]["phase"] == "Running"
        worker = next(p for p in pods_of(fake, name) if p["metadata"]["name"].endswith("worker-0"))
        assert worker["status"]["phase"] == "Pending"
        (scheduled,) = [c for c in worker["status"]["conditions"] if c["type"] == "PodScheduled"]
        assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable"
        assert "Insufficient cpu" in scheduled["message"]


def test_exit_code_policy_recreates_retryable_pods_and_fails_on_a_permanent_code(fake, tmp_path):
    """restartPolicy ExitCode: pods get Never; a pod that fails with a retryable code (>= 128)
    is deleted and created again (a new uid, restartCount 0: nothing counts against
    backoffLimit) and the job is Restarting; a code below 128 fails the job."""
    fake.cluster.replica_env.update(STUB_EXIT="137", STUB_SECONDS="0.3")
    job = create_job(fake, tmp_path, workers=1, backoff_limit=1, restart_policy="ExitCode")
    name, uid = job["metadata"]["name"], job["metadata"]["uid"]
    first = until(lambda: pods_of(fake, name), 30, "the pod")[0]
    assert first["spec"]["restartPolicy"] == "Never"
    until(lambda: is_true(job_of(fake, name), "Restarting"), 60, "Restarting")
    again = until(lambda: [p for p in pods_of(fake, name)
                           if p["metadata"]["uid"] != first["metadata"]["uid"]], 60, "a new pod")
    assert restart_count(again[0]) == 0 and max(fake.cluster.operator.backoff_sums[uid]) == 0
    fake.cluster.replica_env["STUB_EXIT"] = "3"
    failed = until(lambda: (j := job_of(fake, name)) and is_true(j, "Failed") and j, 60, "Failed")
    assert conditions(failed)["Failed"]["message"] == f'job "{name}" is failing because "Master" replica(s) failed.'


def test_pods_carry_the_operators_names_labels_env_owner_and_init_container(fake, tmp_path):
    job = create_job(fake, tmp_path, workers=3)
    name, uid = job["metadata"]["name"], job["metadata"]["uid"]
    pods = {p["metadata"]["name"]: p for p in until(lambda: len(pods_of(fake, name)) == 3
                                                    and pods_of(fake, name), 30, "pods")}
    assert sorted(pods) == [f"{name}-master-0", f"{name}-worker-0", f"{name}-worker-1"]
    for pod_name, pod in pods.items():
        (owner,) = pod["metadata"]["ownerReferences"]
        assert owner == {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": name,
                         "uid": uid, "controller": True, "blockOwnerDeletion": True}
        labels = pod["metadata"]["labels"]
        assert labels["training.kubeflow.org/operator-name"] == "pytorchjob-controller"
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        rank = 0 if "master" in pod_name else int(pod_name[-1]) + 1
        assert env["RANK"] == env["PET_NODE_RANK"] == str(rank)
        assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == f"{name}-master-0"
        assert env["MASTER_PORT"] == "23456" and env["WORLD_SIZE"] == env["PET_NNODES"] == "3"
        assert env["PET_NPROC_PER_NODE"] == "auto" and env["PYTHONUNBUFFERED"] == "1"
        assert "TORCHELASTIC_RESTART_COUNT" not in env  # the operator numbers no restarts
        inits = [c["name"] for c in pod["spec"].get("initContainers") or []]
        assert inits == ([] if "master" in pod_name else ["init-pytorch"])
    assert pods[f"{name}-master-0"]["metadata"]["labels"]["training.kubeflow.org/job-role"] == "master"


# ----------------------------------------------------------------------------- API server
def test_resource_versions_increase_uids_stay_and_a_recreated_pod_is_a_new_object(fake, tmp_path):
    job = create_job(fake, tmp_path, workers=2)
    name = job["metadata"]["name"]
    until(lambda: is_true(job_of(fake, name), "Running"), 30, "Running")
    later = job_of(fake, name)
    assert later["metadata"]["uid"] == job["metadata"]["uid"]
    assert int(later["metadata"]["resourceVersion"]) > int(job["metadata"]["resourceVersion"])
    worker = next(p for p in pods_of(fake, name) if "worker" in p["metadata"]["name"])
    with fake.store.lock:
        fake.store.delete(PODS, NS, worker["metadata"]["name"], {"gracePeriodSeconds": 0})
        with pytest.raises(ApiError):  # grace 0: gone from the API at once
            fake.store.get(PODS, NS, worker["metadata"]["name"])
    again = until(lambda: [p for p in pods_of(fake, name) if p["metadata"]["name"] ==
                           worker["metadata"]["name"]], 30, "the pod again")[0]
    assert again["metadata"]["uid"] != worker["metadata"]["uid"]
    assert int(again["metadata"]["resourceVersion"]) > int(worker["metadata"]["resourceVersion"])
    with fake.store.lock:  # a delete whose uid precondition names the old pod is refused
        with pytest.raises(ApiError) as info:
            fake.store.delete(PODS, NS, again["metadata"]["name"],
                              {"preconditions": {"uid": worker["metadata"]["uid"]}})
    assert info.value.code == 409


@pytest.mark.parametrize("policy", ["Foreground", "Background"])
def test_foreground_deletion_keeps_the_job_until_its_pods_are_gone(fake, tmp_path, policy):
    """Pods that ignore SIGTERM take their grace period (30 s, scaled). Foreground: the job
    keeps foregroundDeletion until they are gone; Background: the job goes first."""
    fake.cluster.replica_env.update(STUB_IGNORE_TERM="1")
    name = create_job(fake, tmp_path, workers=2)["metadata"]["name"]
    until(lambda: len([p for p in pods_of(fake, name) if p["status"]["phase"] == "Running"]) == 2,
          30, "two running pods")
    with fake.store.lock:
        fake.store.delete(PYTORCHJOBS, NS, name, {"propagationPolicy": policy})
    if policy == "Foreground":
        job = job_of(fake, name)
        assert job["metadata"]["deletionTimestamp"] and FOREGROUND in job["metadata"]["finalizers"]
    terminating = until(lambda: [p for p in pods_of(fake, name)
                                 if p["metadata"].get("deletionTimestamp")], 30, "terminating pods")
    assert terminating[0]["metadata"]["deletionGracePeriodSeconds"] == 30
    until(lambda: not pods_of(fake, name) and job_of(fake, name) is None, 60, "all gone")
    deleted = {e.obj["metadata"]["name"]: e.rv for e in fake.store.history if e.type == "DELETED"}
    pods = [rv for n, rv in deleted.items() if n.startswith(f"{name}-") and "-" in n[len(name):]]
    if policy == "Foreground":
        assert deleted[name] > max(pods)
    else:
        assert deleted[name] < min(pods)


def test_the_kubelet_backs_off_restarts_10_s_doubling(fake, tmp_path):
    """One replica failing at once, again and again: restarts at once, then after 10, 20, 40 s
    (scaled by time_scale), with CrashLoopBackOff while it waits."""
    fake.cluster.replica_env.update(STUB_EXIT="1", STUB_SECONDS="0")
    name = create_job(fake, tmp_path, workers=1, backoff_limit=50)["metadata"]["name"]
    seen: set[str] = set()

    def restarted_four_times() -> bool:
        for pod in pods_of(fake, name):
            for c in pod["status"].get("containerStatuses") or []:
                waiting = (c.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") == "CrashLoopBackOff":
                    seen.add(waiting["message"].split(" restarting")[0])
                if c.get("restartCount", 0) >= 4:
                    return True
        return False

    until(restarted_four_times, 90, "four restarts")
    run = fake.cluster.kubelet.find(NS, f"{name}-master-0")
    assert run.containers[0].waits[:4] == [0.0, 10.0, 20.0, 40.0]
    assert {"back-off 10s", "back-off 20s"} <= seen
    starts = [t for t, pod, _, _ in fake.cluster.kubelet.starts if pod == f"{name}-master-0"]
    scale = fake.cluster.time_scale
    for gap, wait_s in zip((b - a for a, b in zip(starts[1:], starts[2:], strict=False)),
                           (10.0, 20.0), strict=False):
        assert gap >= wait_s * scale  # never earlier than the back-off (later is fine)


# ----------------------------------------------------------------------------- the harness
def harness(tmp_path: Path, fake: FakeKube, redo: bool = False, **options: Any):
    spec = make_spec(tmp_path, fake.write_kubeconfig(tmp_path / "kubeconfig"), redo=redo,
                     **options)
    return K8sBackend(spec.backend).submit(spec)


@pytest.mark.parametrize(
    ("case", "options", "fake_options", "expected"),
    [
        ("image", {"image": "gnn-bench/trainer:latest"}, {},
         ["cannot pull its image", ("ImagePullBackOff", "ErrImagePull"),
          "backend.image=<registry>/<image>:<tag>",
          "now gnn-bench/trainer:latest"]),
        ("unschedulable", {"cpu": "100"}, {},
         ["could not be scheduled", "Insufficient cpu", "lower backend.cpu"]),
        ("admission", {}, {"init_container_template": None},
         ["refused to create the job's pods", 'violates PodSecurity "restricted:latest"',
          "kubectl apply --server-side -k k8s/operator"]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_trial_that_cannot_start_fails_after_start_timeout_with_the_reason(
    tmp_path, case, options, fake_options, expected
):
    with FakeKube(tmp_path / "v", replica_command=STUB, role_rules=project_role_rules(),
                  **fake_options) as fake:
        started = time.monotonic()
        handle = harness(tmp_path, fake, start_timeout_s=3, **options)
        status = wait(handle, 120, 0.1)
        waited = time.monotonic() - started
        gone = until(lambda: job_of(fake, handle.name) is None, 60, "the job deleted")
    assert gone and status.state is JobState.FAILED
    assert "\n" not in status.reason and "backend.start_timeout_s=3" in status.reason
    for text in expected:  # a tuple: one of them (the kubelet alternates the two pull reasons)
        assert any(t in status.reason for t in (text if isinstance(text, tuple) else (text,))), \
            status.reason
    assert waited >= 3  # it waited out start_timeout_s first


@pytest.mark.parametrize("memory", ["shm", "heap"])
def test_an_oomkilled_worker_ends_the_trial_at_once_naming_backend_memory(tmp_path, memory):
    with FakeKube(tmp_path / "v", replica_command=STUB, replica_env={"STUB_SECONDS": "60"},
                  role_rules=project_role_rules()) as fake:
        if memory == "shm" and not fake.cluster.kubelet.shm_isolation:
            pytest.skip("no private /dev/shm per pod here (needs root and unshare)")
        fake.cluster.replica_env["STUB_SHM_MIB" if memory == "shm" else "STUB_ALLOC_MIB"] = "400"
        handle = harness(tmp_path, fake, workers=2, memory="300Mi", backoff_limit=10)
        status = wait(handle, 120, 0.1)
    assert status.state is JobState.FAILED, status
    assert "OOMKilled" in status.reason and "memory limit of 300Mi" in status.reason
    assert "backend.memory=600Mi" in status.reason and "\n" not in status.reason
    assert status.restarts <= 2  # not waited out until the backoff limit


def test_a_rerun_never_reads_the_terminating_pods_of_the_old_job_of_that_name(fake, tmp_path):
    """Someone deleted the old job in the background (kubectl's default) while its pods, which
    restarted twice, still terminate; the re-run's job has the same name and pod names. The
    operator cannot create the new pods until the old ones are gone (AlreadyExists), and the
    harness, which matches pods by the job's uid, reports the new run's restarts and logs."""
    fake.cluster.replica_env.update(STUB_EXIT="1", STUB_SECONDS="0.2", STUB_IGNORE_TERM="1")
    old = create_job(fake, tmp_path, workers=2, backoff_limit=50)
    name = old["metadata"]["name"]
    until(lambda: sum(restart_count(p) for p in pods_of(fake, name)) >= 4, 60, "old restarts")
    with fake.store.lock:
        fake.store.delete(PYTORCHJOBS, NS, name, {"propagationPolicy": "Background"})
    fake.cluster.replica_env.update(STUB_EXIT="0", STUB_MARK="new-run", STUB_SECONDS="1")
    assert job_of(fake, name) is None and pods_of(fake, name)  # old pods still terminating
    handle = harness(tmp_path, fake, workers=2)
    assert handle.name == name and not handle.reattached
    status = wait(handle, 120, 0.1)
    assert status.state is JobState.SUCCEEDED and status.restarts == 0
    assert fake.cluster.events_for(name, "FailedCreatePod")  # both were there at once
    assert all(p.owner_uid == handle.uid for p in handle.pods)
    handle.collect(tmp_path / "out")
    handle.release()
    logs = (tmp_path / "out" / "logs" / "workers.log").read_text()
    assert "new-run" in logs and "told to fail" not in logs


def test_redo_waits_for_the_old_job_to_be_gone_before_submitting(fake, tmp_path, capsys):
    fake.cluster.replica_env.update(STUB_IGNORE_TERM="1", STUB_SECONDS="60")
    first = harness(tmp_path, fake, workers=2)
    until(lambda: first.poll().state is JobState.RUNNING, 60, "Running")
    first.cancel("interrupted")  # Foreground: the job stays while its pods take their grace
    assert job_of(fake, first.name)["metadata"]["deletionTimestamp"]
    fake.cluster.replica_env.update(STUB_SECONDS="1", STUB_MARK="second")
    second = harness(tmp_path, fake, workers=2, redo=True)
    assert "it is being deleted" in capsys.readouterr().out
    assert not pods_of(fake, first.name) or all(
        p["metadata"]["ownerReferences"][0]["uid"] == second.uid for p in pods_of(fake, first.name))
    status = wait(second, 120, 0.1)
    assert status.state is JobState.SUCCEEDED and status.restarts == 0
    assert fake.creates == {first.name: 2} and not fake.cluster.events_for(first.name,
                                                                          "FailedCreatePod")


# ----------------------------------------------------------------------------- real clients
def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_gets_describes_logs_and_deletes_as_on_a_cluster(admin, tmp_path):
    fake = admin
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    fake.cluster.replica_env.update(STUB_SECONDS="1", STUB_EXIT="1")
    name = create_job(fake, tmp_path, workers=2, backoff_limit=50)["metadata"]["name"]
    until(lambda: all(restart_count(p) >= 1 for p in pods_of(fake, name)) and
          len(pods_of(fake, name)) == 2, 60, "a restart of each pod")
    fake.cluster.replica_env.update(STUB_SECONDS="60", STUB_EXIT="0")
    waited = kubectl(kubeconfig, "wait", "--for=condition=Running", f"pytorchjob/{name}",
                     "--timeout=60s")  # a list, then a watch from its resourceVersion
    assert waited.returncode == 0 and "condition met" in waited.stdout, waited.stderr

    jobs = kubectl(kubeconfig, "get", "pytorchjobs")
    assert jobs.returncode == 0, jobs.stderr
    header, row = jobs.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "AGE"] and row.split()[:2] == [name, "Running"]

    pods = kubectl(kubeconfig, "get", "pods", "-l", f"training.kubeflow.org/job-name={name}",
                   "-o", "wide")
    assert pods.returncode == 0, pods.stderr
    lines = pods.stdout.splitlines()
    assert lines[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [line.split()[0] for line in lines[1:]] == [f"{name}-master-0", f"{name}-worker-0"]
    assert all(int(line.split()[3]) >= 1 for line in lines[1:])  # RESTARTS, as the kubelet counts
    none = kubectl(kubeconfig, "get", "pods", "-l", "training.kubeflow.org/job-name=other")
    assert "No resources found in gnn-bench namespace." in none.stderr

    described = kubectl(kubeconfig, "describe", "pytorchjob", name)
    assert described.returncode == 0, described.stderr
    assert "Reason:                PyTorchJobRunning" in described.stdout
    assert f"Created pod: {name}-worker-0" in described.stdout  # its Events
    pod = kubectl(kubeconfig, "describe", "pod", f"{name}-worker-0")
    assert "init-pytorch:" in pod.stdout and "Restart Count:  " in pod.stdout
    assert "Controlled By:  PyTorchJob/" + name in pod.stdout

    previous = kubectl(kubeconfig, "logs", f"{name}-master-0", "--previous")
    assert previous.returncode == 0 and "error: the stub was told to fail" in previous.stdout
    line = f"[pod/{name}-worker-0/pytorch] stub trainer rank 1 of 2"  # once the new run printed
    until(lambda: line in kubectl(kubeconfig, "logs", "-l", f"training.kubeflow.org/job-name={name}",
                                  "--prefix").stdout, 60, "the current runs' logs")
    init = kubectl(kubeconfig, "logs", f"{name}-worker-0", "-c", "init-pytorch")
    assert init.returncode == 0 and name + "-master-0" in init.stdout

    # Foreground: kubectl watches the job until it is gone, which is after its pods.
    deleted = kubectl(kubeconfig, "delete", "pytorchjob", name, "--cascade=foreground")
    assert deleted.returncode == 0 and f'pytorchjob.kubeflow.org "{name}" deleted' in deleted.stdout
    assert job_of(fake, name) is None and pods_of(fake, name) == []
    gone = kubectl(kubeconfig, "get", "pytorchjob", name)
    assert gone.returncode == 1 and "NotFound" in gone.stderr


def test_the_kubeflow_training_client_follows_a_job(admin, tmp_path, request):
    fake = admin
    training = pytest.importorskip("kubeflow.training")
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    client = training.TrainingClient(config_file=str(kubeconfig), namespace=NS,
                                     job_kind="PyTorchJob")
    # Its calls run on the kubernetes client's thread pool, which outlives the test unless closed
    request.addfinalizer(client.custom_api.api_client.close)
    fake.cluster.replica_env.update(STUB_SECONDS="2", STUB_MARK="sdk")
    name = create_job(fake, tmp_path, workers=2)["metadata"]["name"]
    running = client.wait_for_job_conditions(name, expected_conditions={"Running"},
                                             wait_timeout=60, polling_interval=1)
    assert running.metadata.uid and client.is_job_running(name)
    assert client.get_job_pod_names(name) == [f"{name}-master-0", f"{name}-worker-0"]
    assert client.get_job_pod_names(name, is_master=True) == [f"{name}-master-0"]
    assert client.get_job_pod_names(name, replica_type="worker") == [f"{name}-worker-0"]
    logs, _ = client.get_job_logs(name, is_master=False, follow=True)  # streams until they end
    assert logs == {f"{name}-master-0": "stub trainer rank 0 of 2 sdk",
                    f"{name}-worker-0": "stub trainer rank 1 of 2 sdk"}
    done = client.wait_for_job_conditions(name, wait_timeout=60, polling_interval=1)
    assert [c.type for c in done.status.conditions] == ["Created", "Running", "Succeeded"]
    assert client.is_job_succeeded(name) and not client.is_job_failed(name)
    assert [j.metadata.name for j in client.list_jobs()] == [name]
    _, events = client.get_job_logs(name, verbose=True)  # the Events of the job and its pods
    assert any(f"Created pod: {name}-worker-0" in e for e in events[f"pytorchjob/{name}"])
    assert any("Started container pytorch" in e for e in events[f"pod/{name}-master-0"])
    client.delete_job(name)
    until(lambda: job_of(fake, name) is None, 30, "the job deleted")

    fake.cluster.replica_env.update(STUB_EXIT="1", STUB_SECONDS="0.2")
    failing = create_job(fake, tmp_path, workers=1, backoff_limit=1)["metadata"]["name"]
    assert failing == name  # same trial, a new job
    with pytest.raises(RuntimeError, match="is Failed"):
        client.wait_for_job_conditions(failing, wait_timeout=60, polling_interval=1)
    assert client.get_job_conditions(failing)[-1].reason == "PyTorchJobFailed"

