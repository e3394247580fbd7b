"""The scheduler, the kubelets and metrics-server of the fake cluster: pods as local processes.

Every duration the kubelet takes from Kubernetes is multiplied by the cluster's ``time_scale``
(never 0; the tests use 0.1, so a 10 s back-off takes 1 s). Messages keep the nominal values.

=====================================================  ==================================================
behaviour                                              where Kubernetes documents it
=====================================================  ==================================================
scheduling: a pod fits a node when its nodeSelector    Pod scheduling (kube-scheduler); Pod lifecycle,
matches and its requests (cpu, memory, GPUs; init      "Pod conditions": ``PodScheduled=False``,
containers: the larger of the largest init request     reason ``Unschedulable``, event
and the sum of the containers') fit the node's         ``FailedScheduling`` "0/N nodes are available: ..."
allocatable minus the requests of its pods
images: pulled once per node (``IfNotPresent``),       Images, "Image pull policy", "ImagePullBackOff":
every time (``Always``), never (``Never``:             waiting reasons ``ErrImagePull`` then
``ErrImageNeverPull``); a missing image gives          ``ImagePullBackOff``, retried with back-off
``ErrImagePull`` then ``ImagePullBackOff``, retried    (10 s doubling to 300 s)
10 s, 20 s, ... up to 300 s
init containers run one after the other before the     Init Containers; Pod lifecycle "Container
containers; the pod is ``Pending`` (``Init:0/1``)      states"
until they all exit 0; a failing one is restarted
with the pod's restartPolicy
restart of a failed container (restartPolicy           Pod lifecycle, "Container restarts": first
OnFailure/Always) in place: ``restartCount`` + 1,      restart at once, then 10 s, 20 s, 40 s, ...
``lastState.terminated``, ``CrashLoopBackOff``         capped at 300 s; reset after 10 min running
while waiting
``OOMKilled`` (exit 137) when a container's working    Assign Memory Resources ("Exceed a Container's
set passes its memory limit; memory-backed emptyDir    memory limit"); Volumes "emptyDir" (medium
(``/dev/shm``) counts against it                       Memory counts against the memory limit)
phase: Pending until the containers started;           Pod lifecycle, "Pod phase"
Running while one runs or restarts; Succeeded when
all exited 0 and none restarts; Failed when all
ended and one failed (Never)
deletion: SIGTERM, SIGKILL after the grace period,     Pod lifecycle, "Termination of Pods"
then the pod object is removed; a force-deleted pod
(grace 0) is gone from the API at once and its
processes get SIGKILL
termination message: each run of a container gets     Pod lifecycle / "Determine the Reason for Pod
an empty file at ``terminationMessagePath``            Failure" (Customizing the termination
(default ``/dev/termination-log``); when it ends       message): default path, at most 4096 bytes
its contents become ``terminated.message``; an empty   per container; ``FallbackToLogsOnError`` takes
file with ``FallbackToLogsOnError`` and a failed       the log's last 2048 bytes or 80 lines,
exit takes the log's tail                              whichever is smaller
PodMetrics: CPU over the window, memory as the         metrics-server (``window``, working set:
working set (RSS of the container's processes +        Resource metrics pipeline)
its memory-backed emptyDir)
=====================================================  ==================================================

The operator's init container ``init-pytorch`` (``nslookup <master>`` until it resolves) is not
run as a shell: it waits, every 2 s (scaled), until the Service of that name selects a Ready pod
(a headless Service has DNS records only for ready endpoints), and fails after the command's
tries. Other init containers complete at once. Differences on purpose: every pod's network is
this machine's loopback (MASTER_ADDR becomes 127.0.0.1 and each Service port a free local port,
GLOO_SOCKET_IFNAME=lo); the volume's mountPath in arguments and env is rewritten to the local
folder that plays the volume, and the terminationMessagePath in env to that run's file (the
kubelet bind-mounts it at the path); ``/dev/shm`` is a private tmpfs of the emptyDir's sizeLimit when
this process may create mount namespaces (root), else the host's (and then not counted).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .kinds import NODES, PODS, SERVICES
from .store import now_rfc3339

INITIAL_BACKOFF_S, MAX_BACKOFF_S, BACKOFF_RESET_S = 10.0, 300.0, 600.0
TERMINATION_LOG = "/dev/termination-log"  # the default terminationMessagePath
MESSAGE_BYTES, FALLBACK_BYTES, FALLBACK_LINES = 4096, 2048, 80
DNS_RETRY_S = 2.0
MIB = 2**20


def parse_quantity(value: Any) -> float:
    from kubernetes.utils.quantity import parse_quantity as parse

    return float(parse(str(value)))


def _shm_isolation() -> bool:
    """Whether each pod can get its own /dev/shm (a tmpfs in a private mount namespace)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs -o size=1m tmpfs /dev/shm"], capture_output=True, timeout=10)
    return probe.returncode == 0


def _shm_bytes(pid: int) -> int:
    try:
        s = os.statvfs(f"/proc/{pid}/root/dev/shm")
        return (s.f_blocks - s.f_bfree) * s.f_frsize
    except OSError:
        return 0


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _kill_tree(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Backoff:
    """The kubelet's per-container restart back-off (flowcontrol.Backoff)."""

    delay: float | None = None  # None: no failure yet (or reset)

    def next_delay(self, ran_s: float, scale: float) -> float:
        """Seconds to wait before this restart; the first is immediate."""
        if self.delay is None or ran_s >= BACKOFF_RESET_S * scale:
            self.delay = INITIAL_BACKOFF_S * scale
            return 0.0
        wait, self.delay = self.delay, min(self.delay * 2, MAX_BACKOFF_S * scale)
        return wait


@dataclass
class ContainerRun:
    spec: dict[str, Any]
    init: bool
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    process: subprocess.Popen | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    term_reason: str | None = None
    restarts: int = 0
    last: dict[str, Any] | None = None
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None
    wait_s: float = 0.0
    backoff_event: bool = False
    waits: list[float] = field(default_factory=list)  # each restart's back-off, unscaled s
    pull_delay: float = 0.0
    pull_at: float = 0.0
    pulled: bool = False
    oom: bool = False
    dns_tries: int = 0
    dns_next: float = 0.0
    cpu_seen: tuple[float, float] | None = None
    started_wall: float | None = None
    finished_wall: float | None = None
    previous_last: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.spec["name"]


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    node: str
    log_dir: Path
    bound_at: float
    inits: list[ContainerRun]
    containers: list[ContainerRun]
    ip: str
    start_time: str | None = None
    terminating_since: float | None = None
    kill_at: float | None = None
    metrics: dict[str, Any] | None = None
    removed: bool = False  # the kubelet's final delete was sent

    def all(self) -> list[ContainerRun]:
        return self.inits + self.containers

    def log_path(self, container: str, restart: int) -> Path:
        return self.log_dir / f"{container}.{restart}.log"

    def message_path(self, container: str, restart: int) -> Path:
        return self.log_dir / f"{container}.{restart}.termination-log"


class Kubelet:
    """Scheduler + kubelets of all nodes + metrics-server, advanced by the cluster's loop."""

    def __init__(self, cluster: Any):
        self.cluster, self.store = cluster, cluster.store
        self.runs: dict[str, PodRun] = {}  # pod uid -> what runs it
        self.images: dict[str, set[str]] = {}  # node -> images pulled
        self.shm_isolation = _shm_isolation()
        self._ips = 0
        # (unix time, pod, container, restartCount) of every container start, in order
        self.starts: list[tuple[float, str, str, int]] = []

    # ------------------------------------------------------------------ scheduler
    def _requests(self, spec: dict[str, Any]) -> dict[str, float]:
        def of(containers: list[dict[str, Any]]) -> list[dict[str, float]]:
            out = []
            for c in containers:
                res = c.get("resources") or {}
                req = {**(res.get("limits") or {}), **(res.get("requests") or {})}
                out.append({k: parse_quantity(v) for k, v in req.items()})
            return out

        total: dict[str, float] = {}
        for r in of(spec.get("containers") or []):
            for k, v in r.items():
                total[k] = total.get(k, 0.0) + v
        for r in of(spec.get("initContainers") or []):
            for k, v in r.items():
                total[k] = max(total.get(k, 0.0), v)
        return total

    def schedule(self) -> None:
        nodes = self.store.items(NODES)
        pods = self.store.items(PODS)
        for pod in pods:
            spec = pod.get("spec") or {}
            if spec.get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            wants = self._requests(spec)
            reasons: dict[str, int] = {}
            chosen = None
            for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
                labels = node["metadata"].get("labels") or {}
                if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
                    why = "node(s) didn't match Pod's node affinity/selector"
                    reasons[why] = reasons.get(why, 0) + 1
                    continue
                allocatable = {k: parse_quantity(v)
                               for k, v in (node["status"].get("allocatable") or {}).items()}
                used: dict[str, float] = {}
                for other in pods:
                    if (other.get("spec") or {}).get("nodeName") == node["metadata"]["name"] and \
                            other.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                        for k, v in self._requests(other["spec"]).items():
                            used[k] = used.get(k, 0.0) + v
                short = [k for k, v in wants.items()
                         if v > 0 and v > allocatable.get(k, 0.0) - used.get(k, 0.0)]
                if short:
                    for k in short:
                        why = f"Insufficient {k}"
                        reasons[why] = reasons.get(why, 0) + 1
                    continue
                chosen = node
                break
            status = pod.setdefault("status", {"phase": "Pending"})
            if chosen is None:
                n = len(nodes)
                detail = ", ".join(f"{count} {why}" for why, count in sorted(reasons.items()))
                message = (f"0/{n} nodes are available: {detail}. preemption: 0/{n} nodes are "
                           f"available: {n} No preemption victims found for incoming pod.")
                cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": message, "lastProbeTime": None,
                        "lastTransitionTime": now_rfc3339()}
                old = next((c for c in status.get("conditions") or []
                            if c["type"] == "PodScheduled"), None)
                if old is None or old.get("message") != message:
                    status["phase"] = "Pending"
                    status["conditions"] = [cond]
                    self.store.update(PODS, pod)
                    self.cluster.record_event(pod, "Warning", "FailedScheduling", message,
                                              "default-scheduler")
                continue
            node_name = chosen["metadata"]["name"]
            spec["nodeName"] = node_name
            status.update(phase="Pending", conditions=[
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                 "lastTransitionTime": now_rfc3339()}])
            self.store.update(PODS, pod)
            self.cluster.record_event(
                pod, "Normal", "Scheduled",
                f"Successfully assigned {pod['metadata']['namespace']}/{pod['metadata']['name']} "
                f"to {node_name}", "default-scheduler")
            self._ips += 1
            run = PodRun(
                uid=pod["metadata"]["uid"], namespace=pod["metadata"]["namespace"],
                name=pod["metadata"]["name"], node=node_name,
                log_dir=self.cluster.log_dir / pod["metadata"]["uid"], bound_at=time.monotonic(),
                inits=[ContainerRun(c, True, reason="PodInitializing")
                       for c in spec.get("initContainers") or []],
                containers=[ContainerRun(c, False, reason="PodInitializing"
                                         if spec.get("initContainers") else "ContainerCreating")
                            for c in spec.get("containers") or []],
                ip=f"10.4.{self._ips // 250}.{self._ips % 250 + 2}")
            run.log_dir.mkdir(parents=True, exist_ok=True)
            self.runs[run.uid] = run

    # ------------------------------------------------------------------ kubelet
    def sync(self) -> None:
        live = {p["metadata"]["uid"]: p for p in self.store.items(PODS)}
        for uid, run in list(self.runs.items()):
            pod = live.get(uid)
            if pod is None:  # force-deleted (or removed after termination): nothing may run
                for c in run.all():
                    if c.process is not None and c.process.poll() is None:
                        _kill_tree(c.process, signal.SIGKILL)
                        c.process.wait(timeout=10)
                del self.runs[uid]
                continue
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod, run)
                continue
            self._advance(pod, run)
            self._write_status(pod, run)

    def _terminate(self, pod: dict[str, Any], run: PodRun) -> None:
        now = time.monotonic()
        if run.terminating_since is None:
            run.terminating_since = now
            grace = int(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            run.kill_at = now + grace * self.cluster.time_scale
            for c in run.all():
                if c.process is not None and c.process.poll() is None:
                    _kill_tree(c.process, signal.SIGTERM)
                    self.cluster.record_event(pod, "Normal", "Killing",
                                              f"Stopping container {c.name}", "kubelet")
        alive = [c for c in run.all() if c.process is not None and c.process.poll() is None]
        if alive and run.kill_at is not None and now >= run.kill_at:
            for c in alive:
                _kill_tree(c.process, signal.SIGKILL)
                c.process.wait(timeout=10)
            alive = []
        if alive:
            return
        for c in run.all():
            if c.state == "running":
                self._ended(run, c, c.process.poll() if c.process else 137)
        self._write_status(pod, run)
        if run.removed:
            return  # asked once; a finalizer (e.g. a Job's) keeps the object a while
        run.removed = True
        # The kubelet's final delete (grace 0): the API server removes the object.
        self.store.delete(PODS, run.namespace, run.name, {"gracePeriodSeconds": 0})

    def _advance(self, pod: dict[str, Any], run: PodRun) -> None:
        now = time.monotonic()
        if now - run.bound_at < self.cluster.pod_start_delay_s:
            return
        if run.start_time is None:
            run.start_time = now_rfc3339()
        policy = pod["spec"].get("restartPolicy", "Always")
        for c in run.inits:
            if c.state == "terminated" and c.exit_code == 0:
                continue
            self._step(pod, run, c, policy)
            return  # one init container at a time, in order
        for c in run.containers:
            if c.reason == "PodInitializing":
                c.reason = "ContainerCreating"
            self._step(pod, run, c, policy)

    def _step(self, pod: dict[str, Any], run: PodRun, c: ContainerRun, policy: str) -> None:
        now = time.monotonic()
        scale = self.cluster.time_scale
        if c.state == "running":
            code = self._poll(pod, run, c)
            if code is None:
                return
            self._ended(run, c, code)
            if c.init:
                restart = c.exit_code != 0 and policy != "Never"
            else:
                restart = policy == "Always" or (policy == "OnFailure" and c.exit_code != 0)
            if restart:
                ran = (c.finished_at or now) - (c.started_at or now)
                c.wait_s = c.backoff.next_delay(ran, scale)
                c.waits.append(round(c.wait_s / scale, 6))
                c.restart_at = now + c.wait_s
                c.backoff_event = False
            return
        if c.state == "terminated":
            if c.restart_at is None:
                return
            if now < c.restart_at:
                c.reason = "CrashLoopBackOff"
                c.message = (f"back-off {c.wait_s / scale:g}s restarting failed container="
                             f"{c.name} pod={run.name}_{run.namespace}({run.uid})")
                if not c.backoff_event:
                    c.backoff_event = True
                    self.cluster.record_event(
                        pod, "Warning", "BackOff", "Back-off restarting failed container "
                        f"{c.name} in pod {run.name}_{run.namespace}({run.uid})", "kubelet")
                return
            c.restart_at = None
            c.restarts += 1
            c.state, c.reason, c.message = "waiting", "ContainerCreating", ""
        # waiting: the image first, then start
        if self._image_ready(pod, run, c):
            self._start(pod, run, c)

    def _image_ready(self, pod: dict[str, Any], run: PodRun, c: ContainerRun) -> bool:
        image = str(c.spec.get("image") or "")
        tag = image.rsplit("/", 1)[-1]
        pull = c.spec.get("imagePullPolicy") or (
            "Always" if tag.endswith(":latest") or ":" not in tag else "IfNotPresent")
        cached = image in self.images.setdefault(run.node, set())
        if c.pulled or (cached and pull != "Always"):
            return True
        if pull == "Never":
            c.reason = "ErrImageNeverPull"
            c.message = f'Container image "{image}" is not present with pull policy of Never'
            return False
        now = time.monotonic()
        if now < c.pull_at:
            c.reason, c.message = "ImagePullBackOff", f'Back-off pulling image "{image}"'
            return False
        self.cluster.record_event(pod, "Normal", "Pulling", f'Pulling image "{image}"', "kubelet")
        if self.cluster.image_missing(image):
            first = image.split("/")[0]
            ref = image if "/" in image and ("." in first or ":" in first) else (
                f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}")
            c.reason = "ErrImagePull"
            c.message = (f'rpc error: code = NotFound desc = failed to pull and unpack image '
                         f'"{ref}": failed to resolve reference "{ref}": {ref}: not found')
            self.cluster.record_event(pod, "Warning", "Failed",
                                      f'Failed to pull image "{image}": {c.message}', "kubelet")
            scale = self.cluster.time_scale
            c.pull_delay = min(c.pull_delay * 2, MAX_BACKOFF_S * scale) if c.pull_delay \
                else INITIAL_BACKOFF_S * scale
            c.pull_at = now + c.pull_delay
            return False
        self.images[run.node].add(image)
        c.pulled = True
        self.cluster.record_event(pod, "Normal", "Pulled",
                                  f'Successfully pulled image "{image}"', "kubelet")
        return True

    def _start(self, pod: dict[str, Any], run: PodRun, c: ContainerRun) -> None:
        now = time.monotonic()
        c.oom, c.exit_code, c.term_reason, c.cpu_seen = False, None, None, None
        if c.init:
            c.state, c.reason, c.message = "running", "", ""
            c.started_at, c.started_wall, c.dns_tries, c.dns_next = now, time.time(), 0, now
            run.log_path(c.name, c.restarts).touch()
            return
        argv, env = self.cluster.process_command(pod, c.spec)
        message_file = run.message_path(c.name, c.restarts)
        message_file.write_bytes(b"")
        in_container = c.spec.get("terminationMessagePath") or TERMINATION_LOG
        env = {k: str(message_file) if v == in_container else v for k, v in env.items()}
        if self.shm_isolation:
            size = self._shm_limit(pod, c.spec)
            argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                    f'mount -t tmpfs -o size={size} tmpfs /dev/shm && exec "$@"', "sh", *argv]
        with open(run.log_path(c.name, c.restarts), "wb") as log:
            c.process = subprocess.Popen(argv, cwd=self.cluster.workdir, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        c.state, c.reason, c.message, c.started_at = "running", "", "", now
        c.started_wall = time.time()
        self.starts.append((c.started_wall, run.name, c.name, c.restarts))
        self.cluster.record_event(pod, "Normal", "Created", f"Created container {c.name}",
                                  "kubelet")
        self.cluster.record_event(pod, "Normal", "Started", f"Started container {c.name}",
                                  "kubelet")

    def _shm_limit(self, pod: dict[str, Any], spec: dict[str, Any]) -> int:
        mounts = {m.get("name"): m.get("mountPath") for m in spec.get("volumeMounts") or []}
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            empty = volume.get("emptyDir")
            if empty is not None and empty.get("medium") == "Memory" and \
                    mounts.get(volume["name"]) == "/dev/shm":
                return int(parse_quantity(empty.get("sizeLimit") or "64Mi"))
        return 64 * MIB  # the container runtime's default /dev/shm

    def _poll(self, pod: dict[str, Any], run: PodRun, c: ContainerRun) -> int | None:
        """The container's exit code, or None while it runs (the OOM killer checked first)."""
        if c.init:
            return self._dns_wait(pod, run, c)
        code = c.process.poll()
        if code is not None:
            return code
        limit = ((c.spec.get("resources") or {}).get("limits") or {}).get("memory")
        if limit is not None and self.working_set(c) > parse_quantity(limit):
            _kill_tree(c.process, signal.SIGKILL)
            c.process.wait(timeout=10)
            c.oom = True
            return 137
        return None

    def working_set(self, c: ContainerRun) -> int:
        if c.process is None or c.process.poll() is not None:
            return 0
        rss = 0
        for p in _tree(c.process.pid):
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        return rss + (_shm_bytes(c.process.pid) if self.shm_isolation else 0)

    def _dns_wait(self, pod: dict[str, Any], run: PodRun, c: ContainerRun) -> int | None:
        """``init-pytorch``: nslookup of the master's Service until it has a ready endpoint."""
        text = " ".join(str(a) for a in (c.spec.get("command") or []) + (c.spec.get("args") or []))
        target = re.search(r"nslookup\s+([A-Za-z0-9.-]+)", text)
        if target is None:
            return 0
        now = time.monotonic()
        if now < c.dns_next:
            return None
        tries = int((re.search(r"seq\s+(\d+)", text) or [None, 100])[1])
        c.dns_tries += 1
        if self.cluster.resolves(run.namespace, target.group(1).split(".")[0]):
            with open(run.log_path(c.name, c.restarts), "a") as log:
                log.write(f"Name:\t{target.group(1)}\nAddress: 127.0.0.1\n")
            return 0
        with open(run.log_path(c.name, c.restarts), "a") as log:
            log.write(f"** server can't find {target.group(1)}: NXDOMAIN\nwaiting for master\n")
        if c.dns_tries >= tries:
            return 1
        c.dns_next = now + DNS_RETRY_S * self.cluster.time_scale
        return None

    def _ended(self, run: PodRun, c: ContainerRun, code: int) -> None:
        if code < 0:  # killed by a signal: the runtime reports 128 + signal
            code = 128 - code
        c.state, c.exit_code, c.finished_at = "terminated", code, time.monotonic()
        c.finished_wall = time.time()
        c.term_reason = "OOMKilled" if c.oom else ("Completed" if code == 0 else "Error")
        c.previous_last = c.last
        c.last = {"terminated": {"exitCode": code, "reason": c.term_reason,
                                 "startedAt": now_rfc3339(c.started_wall),
                                 "finishedAt": now_rfc3339(c.finished_wall),
                                 "containerID": f"containerd://{id(c):x}{c.restarts}"}}
        message = self._termination_message(run, c, code)
        if message:
            c.last["terminated"]["message"] = message

    def _termination_message(self, run: PodRun, c: ContainerRun, code: int) -> str:
        if c.init:
            return ""
        try:
            message = run.message_path(c.name, c.restarts).read_bytes()[:MESSAGE_BYTES]
        except OSError:
            message = b""
        if not message.strip() and code != 0 and \
                c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            try:
                log = run.log_path(c.name, c.restarts).read_bytes()
            except OSError:
                log = b""
            message = b"\n".join(log.splitlines()[-FALLBACK_LINES:])[-FALLBACK_BYTES:]
        return message.decode(errors="replace")

    # ------------------------------------------------------------------ status
    def _container_status(self, c: ContainerRun, ready: bool) -> dict[str, Any]:
        last: dict[str, Any] = c.last or {}
        if c.state == "running":
            state = {"running": {"startedAt": now_rfc3339(c.started_wall)}}
        elif c.state == "terminated" and c.restart_at is None:
            state, last = c.last or {}, c.previous_last or {}
        elif c.state == "terminated":
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": c.message}}
        else:
            state = {"waiting": {"reason": c.reason, **({"message": c.message} if c.message else {})}}
        out = {"name": c.name, "image": c.spec.get("image", ""), "imageID": "",
               "ready": ready, "restartCount": c.restarts, "started": c.state == "running",
               "state": state, "lastState": last}
        if c.state != "waiting" or c.restarts:
            out["containerID"] = f"containerd://{id(c):x}{c.restarts}"
        return out

    def _write_status(self, pod: dict[str, Any], run: PodRun) -> None:
        policy = pod["spec"].get("restartPolicy", "Always")
        inits_done = all(c.state == "terminated" and c.exit_code == 0 for c in run.inits)
        mains = run.containers
        started = [c for c in mains if c.state != "waiting" or c.restarts]
        if not inits_done or len(started) < len(mains):
            phase = "Pending"
            if inits_done is False and any(c.state == "terminated" and c.exit_code not in (0, None)
                                           and c.restart_at is None for c in run.inits):
                phase = "Failed"
        elif all(c.state == "terminated" and c.restart_at is None for c in mains):
            phase = "Succeeded" if all(c.exit_code == 0 for c in mains) else "Failed"
        else:
            phase = "Running"
        if policy == "Always" and phase == "Succeeded":
            phase = "Running"
        ready = phase == "Running" and all(c.state == "running" for c in mains)
        stamp = now_rfc3339()
        old = pod.get("status") or {}
        old_conditions = {c["type"]: c for c in old.get("conditions") or []}

        def cond(kind: str, ok: bool, reason: str | None = None) -> dict[str, Any]:
            prev = old_conditions.get(kind)
            value = "True" if ok else "False"
            when = prev["lastTransitionTime"] if prev and prev["status"] == value else stamp
            out = {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": when}
            if reason and not ok:
                out["reason"] = reason
            return out

        status = {
            "phase": phase,
            "conditions": [
                cond("PodReadyToStartContainers", True),
                cond("Initialized", inits_done, "ContainersNotInitialized"),
                cond("Ready", ready, "ContainersNotReady"),
                cond("ContainersReady", ready, "ContainersNotReady"),
                old_conditions.get("PodScheduled") or cond("PodScheduled", True),
            ],
            "hostIP": "10.128.0.2",
            "hostIPs": [{"ip": "10.128.0.2"}],
            "podIP": run.ip,
            "podIPs": [{"ip": run.ip}],
            "startTime": run.start_time or stamp,
            "qosClass": "Guaranteed",
            "containerStatuses": [self._container_status(c, ready and c.state == "running")
                                  for c in mains],
        }
        if run.inits:
            status["initContainerStatuses"] = [
                self._container_status(c, c.state == "terminated" and c.exit_code == 0)
                for c in run.inits]
        if status != old:
            pod["status"] = status
            self.store.update(PODS, pod)

    # ------------------------------------------------------------------ metrics-server
    def scrape(self, window_s: float) -> None:
        for uid, run in self.runs.items():
            containers = []
            for c in run.containers:
                if c.state != "running" or c.process is None:
                    continue
                cpu = 0.0
                for p in _tree(c.process.pid):
                    try:
                        cpu += sum(p.cpu_times()[:2])
                    except psutil.Error:
                        pass
                now = time.monotonic()
                previous, c.cpu_seen = c.cpu_seen, (now, cpu)
                if previous is None or now <= previous[0]:
                    continue  # a first reading has no rate yet
                cores = max(0.0, (cpu - previous[1]) / (now - previous[0]))
                containers.append({"name": c.name, "usage": {
                    "cpu": f"{int(cores * 1e9)}n", "memory": f"{self.working_set(c) // 1024}Ki"}})
            pod = next((p for p in self.store.items(PODS, run.namespace)
                        if p["metadata"]["uid"] == uid), None)
            if not containers or pod is None:
                continue
            run.metrics = {
                "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": run.name, "namespace": run.namespace,
                             "labels": dict(pod["metadata"].get("labels") or {}),
                             "creationTimestamp": now_rfc3339()},
                "timestamp": now_rfc3339(), "window": f"{window_s:g}s", "containers": containers}

    def stop(self) -> None:
        for run in self.runs.values():
            for c in run.all():
                if c.process is not None and c.process.poll() is None:
                    _kill_tree(c.process, signal.SIGKILL)
                    try:
                        c.process.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass

    # ------------------------------------------------------------------ for tests
    def find(self, namespace: str, name: str) -> PodRun | None:
        return next((r for r in self.runs.values()
                     if r.namespace == namespace and r.name == name), None)


def python_argv(argv: list[str]) -> list[str]:
    """The image's ``python`` and ``torchrun`` (its console script) as this checkout's."""
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    if argv and argv[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    return argv


__all__ = ["Kubelet", "PodRun", "ContainerRun", "python_argv", "SERVICES"]
