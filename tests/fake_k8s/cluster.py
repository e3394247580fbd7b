"""The fake cluster's state: PyTorchJobs whose replicas run as local processes.

What the Kubeflow training operator and the kubelets do, reduced to what the harness can see:

* a created job gets the ``Created`` condition; after ``pod_start_delay_s`` (scheduling and
  image pulls on a real cluster) its pods start: one process per replica running the
  container's ``command + args`` here, with the environment the operator injects
  (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``, ``PYTHONUNBUFFERED``) and the
  PVC's ``mountPath`` rewritten to a local folder (the "volume");
* all pods running -> ``Running``; the Master exiting 0 -> ``Succeeded``; a container exiting
  non-zero is restarted in place (``restartPolicy: OnFailure``, ``Restarting``) until the
  restarts exceed ``runPolicy.backoffLimit`` -> ``Failed``; ``activeDeadlineSeconds`` is enforced;
* a deleted pod's processes get SIGKILL (the harness deletes with no grace period) and the
  operator creates the pod again, with a restart count of 0, after ``pod_start_delay_s``;
* every ``metrics_window_s`` a metrics-server-like scrape turns each pod's process tree into
  a PodMetrics (CPU averaged over the window, memory as RSS).

Differences from a cluster, on purpose: MASTER_ADDR is 127.0.0.1 and MASTER_PORT a free port
(pods of several jobs share this machine's network), and GLOO_SOCKET_IFNAME=lo keeps the
replicas' traffic on loopback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]
# Variables of an enclosing launcher (torchrun, an operator's pod) that must not leak into the
# processes the tests start; tests/conftest.py and tests/test_k8s_sweep.py use them too.
LAUNCHER_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
)


def now_rfc3339(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Pod:
    name: str
    replica_type: str  # master | worker
    index: int
    rank: int
    env: dict[str, str]
    argv: list[str]
    labels: dict[str, str]
    log_dir: Path
    process: subprocess.Popen | None = None
    restarts: int = 0
    phase: str = "Pending"
    started_at: float | None = None
    exit_code: int | None = None
    last_exit_code: int | None = None
    metrics: dict[str, Any] | None = None  # the latest PodMetrics
    cpu_seen: tuple[float, float] | None = None  # (monotonic time, cpu seconds) at last scrape
    job: Job | None = field(default=None, repr=False, compare=False)
    recreate_at: float | None = None  # deleted: the operator creates it again at this time

    def log_path(self, restart: int) -> Path:
        return self.log_dir / f"{self.name}.{restart}.log"

    def start(self, cwd: Path) -> None:
        with open(self.log_path(self.restarts), "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.phase, self.started_at, self.exit_code = "Running", time.time(), None

    def kill(self, grace_s: float = 5) -> None:
        if self.process is not None and self.process.poll() is None:
            steps = ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)) if grace_s else ((signal.SIGKILL, 5),)
            for sig, wait in steps:
                try:
                    os.killpg(self.process.pid, sig)
                    self.process.wait(timeout=wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue


@dataclass
class Job:
    body: dict[str, Any]
    created: float = field(default_factory=time.time)
    pods: list[Pod] = field(default_factory=list)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    deleting: bool = False
    done: bool = False
    started: float | None = None  # when its pods started (for concurrency checks)
    finished: float | None = None

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    def set_condition(self, kind: str, reason: str, message: str = "") -> None:
        """Add or refresh a condition (Running and Restarting exclude each other, as in the
        operator)."""
        stamp = now_rfc3339()
        for c in self.conditions:
            if c["type"] in ("Running", "Restarting") and kind in (
                "Running",
                "Restarting",
                "Succeeded",
                "Failed",
            ):
                if c["type"] != kind and c["status"] == "True":
                    c.update(status="False", lastTransitionTime=stamp)
        for c in self.conditions:
            if c["type"] == kind:
                if c["status"] != "True":
                    c.update(
                        status="True", reason=reason, message=message, lastTransitionTime=stamp
                    )
                return
        self.conditions.append(
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastUpdateTime": stamp,
                "lastTransitionTime": stamp,
            }
        )

    def state(self) -> str | None:
        true = [c["type"] for c in self.conditions if c["status"] == "True"]
        return next((t for t in ("Succeeded", "Failed") if t in true), None)


class Cluster:
    """Jobs and pods, advanced by one controller thread every ``tick_s``."""

    def __init__(
        self,
        volume: Path,
        mount_path: str = "/mnt/bench",
        pod_start_delay_s: float = 0.0,
        metrics_window_s: float = 1.0,
        tick_s: float = 0.1,
        replica_command: list[str] | None = None,
        replica_env: dict[str, str] | None = None,
    ):
        self.volume, self.mount_path = Path(volume), mount_path.rstrip("/")
        # Tests that need jobs but not training run a stub instead of the container's command.
        self.replica_command, self.replica_env = replica_command, dict(replica_env or {})
        self.pod_start_delay_s, self.metrics_window_s, self.tick_s = (
            pod_start_delay_s,
            metrics_window_s,
            tick_s,
        )
        self.log_dir = self.volume.parent / f"{self.volume.name}-pod-logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[tuple[str, str], Job] = {}
        self.history: list[Job] = []  # every job ever created, also after deletion
        self.deleted_pods: list[tuple[str, float]] = []  # (pod name, when), in order
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._last_scrape = 0.0
        self._thread = threading.Thread(target=self._loop, name="fake-controller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self.lock:
            for job in self.jobs.values():
                for pod in job.pods:
                    pod.kill()

    # -- API-facing operations (called by the HTTP handler under self.lock)
    def create(self, namespace: str, body: dict[str, Any]) -> Job:
        meta = body.setdefault("metadata", {})
        meta.update(
            namespace=namespace,
            uid=f"uid-{len(self.history)}",
            resourceVersion="1",
            creationTimestamp=now_rfc3339(),
            generation=1,
        )
        job = Job(body)
        job.set_condition("Created", "PyTorchJobCreated", f"PyTorchJob {job.name} is created.")
        self.jobs[(namespace, job.name)] = job
        self.history.append(job)
        return job

    def delete(self, namespace: str, name: str) -> Job | None:
        job = self.jobs.get((namespace, name))
        if job is not None and not job.deleting:
            job.deleting = True
            job.body["metadata"]["deletionTimestamp"] = now_rfc3339()
        return job

    def delete_pod(self, namespace: str, name: str) -> Pod | None:
        pod = next((p for (jns, _), j in self.jobs.items() if jns == namespace
                    for p in j.pods if p.name == name), None)
        if pod is not None and pod.recreate_at is None:
            pod.kill(grace_s=0)
            pod.phase, pod.restarts, pod.exit_code, pod.last_exit_code = "Pending", 0, None, None
            pod.metrics = pod.cpu_seen = None
            pod.recreate_at = time.time() + self.pod_start_delay_s
            self.deleted_pods.append((name, time.time()))
        return pod

    def max_concurrent(self) -> int:
        """The most jobs whose pods were running at the same moment."""
        spans = [(j.started, j.finished or time.time()) for j in self.history if j.started]
        events = sorted(
            [(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1])
        )
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        return peak

    # -- the controller
    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self.lock:
                for key, job in list(self.jobs.items()):
                    self._advance(job)
                    if job.deleting and not any(
                        p.process and p.process.poll() is None for p in job.pods
                    ):
                        del self.jobs[key]
                if time.monotonic() - self._last_scrape >= self.metrics_window_s:
                    self._last_scrape = time.monotonic()
                    for job in self.jobs.values():
                        for pod in job.pods:
                            self._scrape(pod)

    def _advance(self, job: Job) -> None:
        if job.deleting:
            for pod in job.pods:
                pod.kill()
            job.finished = job.finished or time.time()
            return
        if job.done:
            return
        policy = job.body["spec"].get("runPolicy") or {}
        if not job.pods:
            if time.time() - job.created >= self.pod_start_delay_s:
                self._start_pods(job)
            return
        deadline = policy.get("activeDeadlineSeconds")
        if deadline is not None and time.time() - job.started > deadline:
            return self._end(
                job, "Failed", "DeadlineExceeded", "the job ran past activeDeadlineSeconds"
            )
        for pod in job.pods:
            if pod.recreate_at is not None and time.time() >= pod.recreate_at:
                pod.recreate_at = None
                pod.start(REPO)
            code = pod.process.poll() if pod.process and pod.phase == "Running" else None
            if code is None:
                continue
            pod.exit_code = code
            if code == 0:
                pod.phase = "Succeeded"
                continue
            if sum(p.restarts for p in job.pods) >= int(policy.get("backoffLimit", 0)):
                return self._end(
                    job,
                    "Failed",
                    "BackoffLimitExceeded",
                    f"PyTorchJob {job.name} has failed because it has reached the backoff limit",
                )
            job.set_condition(
                "Restarting",
                "PyTorchJobRestarting",
                f"PyTorchJob {job.name} is restarting because {pod.name} exited with {code}.",
            )
            pod.last_exit_code, pod.restarts = code, pod.restarts + 1
            pod.start(REPO)
        master = next(p for p in job.pods if p.replica_type == "master")
        if master.phase == "Succeeded":
            return self._end(
                job,
                "Succeeded",
                "PyTorchJobSucceeded",
                f"PyTorchJob {job.name} is successfully completed.",
            )
        if all(p.phase in ("Running", "Succeeded") for p in job.pods):
            job.set_condition("Running", "PyTorchJobRunning", f"PyTorchJob {job.name} is running.")

    def _end(self, job: Job, kind: str, reason: str, message: str) -> None:
        for pod in job.pods:
            if pod.process and pod.process.poll() is None and kind == "Failed":
                pod.kill()
                pod.phase, pod.exit_code = "Failed", pod.process.poll()
        job.set_condition(kind, reason, message)
        job.done, job.finished = True, time.time()
        job.body.setdefault("status", {})["completionTime"] = now_rfc3339()

    def _start_pods(self, job: Job) -> None:
        specs = job.body["spec"]["pytorchReplicaSpecs"]
        world = sum(int(s.get("replicas", 1)) for s in specs.values())
        port = str(free_port())
        for rtype in ("Master", "Worker"):
            spec = specs.get(rtype)
            for index in range(int(spec.get("replicas", 1)) if spec else 0):
                container = spec["template"]["spec"]["containers"][0]
                rank = index if rtype == "Master" else index + 1
                env = {k: v for k, v in os.environ.items()
                       if k not in (*LAUNCHER_VARS, "GNN_BENCH_DATA")}
                env.update(
                    {
                        e["name"]: self._on_volume(str(e.get("value", "")))
                        for e in container.get("env", [])
                    }
                )
                env.update(self.replica_env)
                env.update(
                    MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=port,
                    WORLD_SIZE=str(world),
                    RANK=str(rank),
                    PYTHONUNBUFFERED="0",
                    GLOO_SOCKET_IFNAME="lo",
                )
                command = self.replica_command or container.get("command", [])
                argv = [self._on_volume(a) for a in command + container.get("args", [])]
                if argv and argv[0] in ("python", "python3"):
                    argv[0] = sys.executable
                labels = {
                    **(spec["template"].get("metadata") or {}).get("labels", {}),
                    "training.kubeflow.org/job-name": job.name,
                    "training.kubeflow.org/operator-name": "pytorchjob-controller",
                    "training.kubeflow.org/replica-type": rtype.lower(),
                    "training.kubeflow.org/replica-index": str(index),
                }
                if rtype == "Master":
                    labels["training.kubeflow.org/job-role"] = "master"
                pod = Pod(
                    f"{job.name}-{rtype.lower()}-{index}",
                    rtype.lower(),
                    index,
                    rank,
                    env,
                    argv,
                    labels,
                    self.log_dir,
                    job=job,
                )
                pod.start(REPO)
                job.pods.append(pod)
        job.started = time.time()
        job.body.setdefault("status", {})["startTime"] = now_rfc3339()

    def _on_volume(self, text: str) -> str:
        """The PVC's mountPath in an argument, as the local folder that plays the volume."""
        return text.replace(self.mount_path, str(self.volume))

    def _scrape(self, pod: Pod) -> None:
        """metrics-server: CPU over the last window and memory of the pod's process tree."""
        if pod.phase != "Running" or pod.process is None:
            return
        try:
            root = psutil.Process(pod.process.pid)
            procs = [root, *root.children(recursive=True)]
            cpu = sum(sum(p.cpu_times()[:2]) for p in procs)
            rss = sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return
        now = time.monotonic()
        previous, pod.cpu_seen = pod.cpu_seen, (now, cpu)
        if previous is None or now <= previous[0]:
            return  # like metrics-server, a first reading has no rate yet
        cores = max(0.0, (cpu - previous[1]) / (now - previous[0]))
        pod.metrics = {
            "metadata": {
                "name": pod.name,
                "labels": pod.labels,
                "creationTimestamp": now_rfc3339(),
            },
            "timestamp": now_rfc3339(),
            "window": f"{self.metrics_window_s:g}s",
            "containers": [
                {
                    "name": "pytorch",
                    "usage": {"cpu": f"{int(cores * 1e9)}n", "memory": f"{rss // 1024}Ki"},
                }
            ],
        }

    # -- views
    def job_json(self, job: Job) -> dict[str, Any]:
        replica_status: dict[str, dict[str, int]] = {}
        for pod in job.pods:
            counts = replica_status.setdefault(
                pod.replica_type.capitalize(), {"active": 0, "succeeded": 0, "failed": 0}
            )
            key = {"Running": "active", "Succeeded": "succeeded", "Failed": "failed"}.get(pod.phase)
            if key:
                counts[key] += 1
        status = {
            **job.body.get("status", {}),
            "conditions": job.conditions,
            "replicaStatuses": replica_status,
        }
        return {**job.body, "status": status}

    def pod_json(self, job: Job, pod: Pod) -> dict[str, Any]:
        state: dict[str, Any]
        if pod.phase == "Running":
            state = {"running": {"startedAt": now_rfc3339(pod.started_at)}}
        elif pod.phase == "Pending":
            state = {"waiting": {"reason": "ContainerCreating"}}
        else:
            state = {
                "terminated": {
                    "exitCode": pod.exit_code,
                    "reason": "Completed" if pod.exit_code == 0 else "Error",
                }
            }
        last = (
            {"terminated": {"exitCode": pod.last_exit_code, "reason": "Error"}}
            if pod.restarts
            else {}
        )
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod.name,
                "namespace": job.body["metadata"]["namespace"],
                "labels": pod.labels,
            },
            "status": {
                "phase": pod.phase,
                "containerStatuses": [
                    {
                        "name": "pytorch",
                        "restartCount": pod.restarts,
                        "ready": pod.phase == "Running",
                        "state": state,
                        "lastState": last,
                    }
                ],
            },
        }
