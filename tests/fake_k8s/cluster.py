"""The fake cluster: the API server's store, the garbage collector, the Kubeflow training
operator (operator.py), the scheduler and kubelets (kubelet.py), one controller loop.

What each part reproduces, and from where, is tabled in store.py (API server), operator.py
(training operator v1.9.4) and kubelet.py (scheduler, kubelet, metrics-server). This module
adds the garbage collector (Garbage collection: an object whose owners are all gone is deleted
in the background; an owner deleted with ``Foreground`` keeps ``foregroundDeletion`` until its
blocking dependents are gone; ``Orphan`` removes the owner references) and Events (core/v1,
repeated ones counted in ``count``/``lastTimestamp`` as the event recorder aggregates them).

Time: every kubelet duration (back-offs, grace periods, the init container's retry) is the
real one times ``time_scale`` (default 0.1; must be > 0). The operator's own clock is not
scaled.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import admission
from .jobs import JobController
from .jobset import JobSetController
from .jobset import default as default_jobset
from .kinds import EVENTS, JOBSETS, NAMESPACES, NODES, PODS, PYTORCHJOBS, SERVICES, TRAINJOBS
from .kubelet import Kubelet, python_argv
from .operator import PyTorchJobController
from .store import FOREGROUND, ORPHAN, ApiError, Store, now_rfc3339
from .trainer import TrainerController

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
    "TORCHELASTIC_USE_AGENT_STORE",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
    "PET_NNODES",
    "PET_NODE_RANK",
    "PET_NPROC_PER_NODE",
)
# What no registry has: the config's default image name (docker/ builds it under your own
# registry's name; docs/gke.md step 4).
MISSING_IMAGES = frozenset({"gnn-bench/trainer:latest", "gnn-bench/trainer"})
DEFAULT_NODES = {"fake-node-0": {"cpu": "64", "memory": "256Gi", "pods": "110"}}


def field_ref(pod: dict[str, Any], path: str) -> str:
    """The downward API's value of ``fieldPath`` for a pod (metadata.name, .namespace, .uid,
    labels['k'] and annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP)."""
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
              "metadata.uid": meta.get("uid"),
              "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
              "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
              "status.podIP": (pod.get("status") or {}).get("podIP")}
    return str(simple.get(path) or "")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, ``$$`` escapes, an
    undefined reference stays as it is (Define Environment Variables for a Container)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def container_env(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """A container's declared environment as the kubelet makes it: in order, each value with
    the earlier ones expanded, ``valueFrom.fieldRef`` from the downward API."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        ref = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        env[item["name"]] = field_ref(pod, ref) if ref else expand(str(item.get("value", "")), env)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JobRecord:
    """A PyTorchJob's or TrainJob's life as the tests look at it (kept after the job is gone)."""

    name: str
    namespace: str
    uid: str
    created: float
    started: float | None = None  # the first of its pods running
    finished: float | None = None  # succeeded, failed or deleted
    cluster: Any = field(default=None, repr=False, compare=False)
    resource: Any = field(default=PYTORCHJOBS, repr=False, compare=False)

    @property
    def deleting(self) -> bool:
        """Deleted, or being deleted (read from the API server's store now)."""
        with self.cluster.lock:
            job = next((j for j in self.cluster.store.items(self.resource)
                        if j["metadata"]["uid"] == self.uid), None)
            return job is None or bool(job["metadata"].get("deletionTimestamp"))

    def owns(self, pod: dict[str, Any]) -> bool:
        """A pod of this job: the PyTorchJob's by ownerReference, the TrainJob's by its
        JobSet's (same name) label and uid."""
        meta = pod["metadata"]
        if self.resource == PYTORCHJOBS:
            return any(r.get("uid") == self.uid for r in meta.get("ownerReferences") or [])
        labels = meta.get("labels") or {}
        if labels.get("jobset.sigs.k8s.io/jobset-name") != self.name or \
                meta.get("namespace") != self.namespace:
            return False
        jobsets = {j["metadata"]["uid"]: j for j in self.cluster.store.items(JOBSETS)}
        js = jobsets.get(labels.get("jobset.sigs.k8s.io/jobset-uid"))
        return js is None or any(r.get("uid") == self.uid
                                 for r in js["metadata"].get("ownerReferences") or [])


class Cluster:
    """All controllers, advanced by one thread every ``tick_s`` under the store's lock."""

    def __init__(
        self,
        volume: Path,
        mount_path: str = "/mnt/bench",
        pod_start_delay_s: float = 0.0,
        metrics_window_s: float = 1.0,
        tick_s: float = 0.05,
        replica_command: list[str] | None = None,
        replica_env: dict[str, str] | None = None,
        time_scale: float = 0.1,
        nodes: dict[str, dict[str, str]] | None = None,
        node_labels: dict[str, dict[str, str]] | None = None,
        missing_images: frozenset[str] | set[str] = MISSING_IMAGES,
        init_container_template: str | None = None,
        namespaces: dict[str, dict[str, str]] | None = None,
    ):
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0: the fake's back-offs are real ones, scaled")
        self.volume, self.mount_path = Path(volume), mount_path.rstrip("/")
        self.replica_command, self.replica_env = replica_command, dict(replica_env or {})
        self.pod_start_delay_s, self.metrics_window_s, self.tick_s = (
            pod_start_delay_s, metrics_window_s, tick_s)
        self.time_scale = time_scale
        self.missing_images = set(missing_images)
        self.workdir = REPO
        self.log_dir = self.volume.parent / f"{self.volume.name}-pod-logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store()
        self.lock = self.store.lock
        self.kubelet = Kubelet(self)
        self.operator = PyTorchJobController(self, init_container_template)
        self.trainer = TrainerController(self)  # Kubeflow Trainer v2.3 (trainer.py)
        self.jobset = JobSetController(self)  # JobSet v0.12.0 (jobset.py)
        self.jobs = JobController(self)  # kube-controller-manager's Job controller (jobs.py)
        # Controllers run in this order each tick; each has ``resources`` and reconcile_all().
        self.controllers: list[Any] = [self.operator, self.trainer, self.jobset, self.jobs]
        self.records: dict[str, JobRecord] = {}
        self.deleted_pods: list[tuple[str, float]] = []  # pods deleted by clients, in order
        self._ports: dict[tuple[str, str, int], int] = {}
        self._stop = threading.Event()
        self._last_scrape = 0.0
        self._thread = threading.Thread(target=self._loop, name="fake-controllers", daemon=True)
        for name, labels in (namespaces or {"gnn-bench": {}}).items():
            self.store.create(NAMESPACES, "", {"metadata": {"name": name, "labels": dict(labels)},
                                              "status": {"phase": "Active"}})
        for name, allocatable in (nodes or DEFAULT_NODES).items():
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                      **((node_labels or {}).get(name) or {})}
            self.store.create(NODES, "", {
                "metadata": {"name": name, "labels": labels},
                "status": {"capacity": dict(allocatable), "allocatable": dict(allocatable),
                           "conditions": [{"type": "Ready", "status": "True",
                                           "reason": "KubeletReady"}],
                           "nodeInfo": {"kubeletVersion": "v1.33.0-fake"}}})

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self.lock:
            self.kubelet.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self.lock:
                self.tick()

    def tick(self) -> None:
        self.collect_garbage()
        for controller in self.controllers:
            controller.reconcile_all()
        self.kubelet.schedule()
        self.kubelet.sync()
        self._track_jobs()
        if time.monotonic() - self._last_scrape >= self.metrics_window_s:
            self._last_scrape = time.monotonic()
            self.kubelet.scrape(self.metrics_window_s)

    # ------------------------------------------------------------------ API-side helpers
    def api_create(self, resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """A create as the API server admits it (namespace exists, Pod Security)."""
        if resource.namespaced:
            ns = self.store.peek(NAMESPACES, "", namespace)
            if ns is None:
                raise ApiError(404, f'namespaces "{namespace}" not found', "NotFound",
                               {"name": namespace, "kind": "namespaces"})
            if ns["metadata"].get("deletionTimestamp"):
                raise ApiError(403, f'unable to create new content in namespace {namespace} '
                                    "because it is being terminated", "Forbidden")
            if resource == PODS:
                body.setdefault("metadata", {})
                problem = admission.check(ns, body)
                if problem:
                    raise ApiError(403, problem, "Forbidden",
                                   {"name": body["metadata"].get("name", ""), "kind": "pods"})
                spec = body.setdefault("spec", {})
                spec.setdefault("terminationGracePeriodSeconds", 30)
                spec.setdefault("restartPolicy", "Always")
                spec.setdefault("schedulerName", "default-scheduler")
                body["status"] = {"phase": "Pending", "qosClass": "Guaranteed"}
        if resource == TRAINJOBS:
            self.trainer.admit(namespace, body)  # CRD defaults and Trainer's webhook
        if resource == JOBSETS:
            default_jobset(body)  # JobSet's mutating webhook
        obj = self.store.create(resource, namespace, body)
        if resource in (PYTORCHJOBS, TRAINJOBS):
            meta = obj["metadata"]
            self.records[meta["uid"]] = JobRecord(meta["name"], namespace, meta["uid"],
                                                  time.time(), cluster=self, resource=resource)
        return obj

    def record_event(self, obj: dict[str, Any], type_: str, reason: str, message: str,
                     component: str) -> None:
        """An Event about ``obj``; a repeat (same object, reason, message) is counted."""
        meta = obj["metadata"]
        key = hashlib.sha1(f"{meta['uid']}{reason}{message}".encode()).hexdigest()[:16]
        name = f"{meta['name']}.{key}"
        ns = meta.get("namespace") or "default"
        existing = self.store.peek(EVENTS, ns, name)
        stamp = now_rfc3339()
        if existing is not None:
            existing["count"] = int(existing.get("count", 1)) + 1
            existing["lastTimestamp"] = stamp
            self.store.update(EVENTS, existing)
            return
        self.store.create(EVENTS, ns, {
            "metadata": {"name": name},
            "involvedObject": {"kind": obj.get("kind"), "namespace": ns, "name": meta["name"],
                               "uid": meta["uid"], "apiVersion": obj.get("apiVersion"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": component},
            "reportingComponent": component, "reportingInstance": "",
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "eventTime": None,
        })

    def events_for(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.store.items(EVENTS)
                if e["involvedObject"]["name"] == name and (reason is None or e["reason"] == reason)]

    # ------------------------------------------------------------------ garbage collector
    def collect_garbage(self) -> None:
        everything = list(self.store.objects.items())
        by_uid = {o["metadata"]["uid"]: (r, o) for (r, _, _), o in everything}
        for (resource, _, _), obj in everything:
            meta = obj["metadata"]
            owners = meta.get("ownerReferences") or []
            if owners and not meta.get("deletionTimestamp"):
                present = [by_uid.get(ref.get("uid")) for ref in owners]
                if not any(present):
                    self.store.delete(resource, meta.get("namespace", ""), meta["name"])
                    continue
                for found in present:
                    if found and FOREGROUND in (found[1]["metadata"].get("finalizers") or []):
                        # A dependent that has dependents of its own is deleted in the
                        # foreground too, so the owner waits for the whole tree
                        # (garbagecollector.go attemptToDeleteItem).
                        has_own = any(ref.get("uid") == meta["uid"] for (_, _, _), o in everything
                                      for ref in o["metadata"].get("ownerReferences") or [])
                        self.store.delete(resource, meta.get("namespace", ""), meta["name"],
                                          {"propagationPolicy": "Foreground"} if has_own else None)
                        break
        for uid, (resource, obj) in by_uid.items():
            meta = obj["metadata"]
            finalizers = meta.get("finalizers") or []
            if not meta.get("deletionTimestamp") or not finalizers:
                continue
            dependents = [(r, o) for (r, _, _), o in self.store.objects.items()
                          if any(ref.get("uid") == uid for ref in
                                 o["metadata"].get("ownerReferences") or [])]
            if ORPHAN in finalizers:
                for r, o in dependents:
                    o["metadata"]["ownerReferences"] = [
                        ref for ref in o["metadata"]["ownerReferences"] if ref.get("uid") != uid]
                    self.store.update(r, o)
                meta["finalizers"] = [f for f in finalizers if f != ORPHAN]
                self.store.update(resource, obj)
            elif FOREGROUND in finalizers:
                blocking = [o for _, o in dependents if any(
                    ref.get("uid") == uid and ref.get("blockOwnerDeletion")
                    for ref in o["metadata"].get("ownerReferences") or [])]
                if not blocking:
                    meta["finalizers"] = [f for f in finalizers if f != FOREGROUND]
                    self.store.update(resource, obj)

    # ------------------------------------------------------------------ kubelet helpers
    def image_missing(self, image: str) -> bool:
        return image in self.missing_images

    def resolves(self, namespace: str, service: str) -> bool:
        """Cluster DNS: a headless Service's name has records for its ready endpoints only."""
        svc = self.store.peek(SERVICES, namespace, service)
        if svc is None:
            return False
        selector = (svc.get("spec") or {}).get("selector") or {}
        for pod in self.store.items(PODS, namespace):
            labels = pod["metadata"].get("labels") or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])
            if ready and all(labels.get(k) == v for k, v in selector.items()) and \
                    not pod["metadata"].get("deletionTimestamp"):
                return True
        return False

    def loopback_port(self, namespace: str, service: str, port: int) -> int:
        """The local port that plays ``<service>:<port>`` (one per Service port, kept)."""
        key = (namespace, service, int(port))
        if key not in self._ports:
            self._ports[key] = free_port()
        return self._ports[key]

    def on_volume(self, text: str) -> str:
        """The PVC's mountPath in a value, as the local folder that plays the volume."""
        return text.replace(self.mount_path, str(self.volume))

    def process_command(self, pod: dict[str, Any], container: dict[str, Any]
                        ) -> tuple[list[str], dict[str, str]]:
        """argv and environment of a container's process on this machine."""
        ns = pod["metadata"]["namespace"]
        env = {k: v for k, v in os.environ.items() if k not in (*LAUNCHER_VARS, "GNN_BENCH_DATA")}
        declared = container_env(pod, container)
        for addr_key, port_key in (("MASTER_ADDR", "MASTER_PORT"),
                                   ("PET_MASTER_ADDR", "PET_MASTER_PORT")):
            if addr_key in declared:
                service = declared[addr_key]
                port = int(declared.get(port_key) or 23456)
                declared[addr_key] = "127.0.0.1"
                declared[port_key] = str(self.loopback_port(ns, service, port))
        env.update({k: self.on_volume(v) for k, v in declared.items()})
        env.update(self.replica_env)
        env["GLOO_SOCKET_IFNAME"] = "lo"
        command = self.replica_command or list(container.get("command") or [])
        argv = [self.on_volume(expand(str(a), declared))
                for a in command + list(container.get("args") or [])]
        return python_argv(argv), env

    # ------------------------------------------------------------------ for tests
    def _track_jobs(self) -> None:
        live = {j["metadata"]["uid"]: j for r in (PYTORCHJOBS, TRAINJOBS)
                for j in self.store.items(r)}
        pods = self.store.items(PODS)
        for uid, record in self.records.items():
            job = live.get(uid)
            done = job is not None and (self.operator.finished(job.get("status") or {})
                                        if record.resource == PYTORCHJOBS
                                        else self.trainer.finished(job))
            if record.finished is None and (job is None or job["metadata"].get("deletionTimestamp")
                                            or done):
                record.finished = time.time()
            if record.started is None and any(
                    p.get("status", {}).get("phase") == "Running" and record.owns(p)
                    for p in pods):
                record.started = time.time()

    @property
    def history(self) -> list[JobRecord]:
        return sorted(self.records.values(), key=lambda r: r.created)

    def job(self, name: str, namespace: str = "gnn-bench") -> dict[str, Any] | None:
        return self.store.peek(PYTORCHJOBS, namespace, name)

    def trainjob(self, name: str, namespace: str = "gnn-bench") -> dict[str, Any] | None:
        return self.store.peek(TRAINJOBS, namespace, name)

    def trainjob_pods(self, name: str, namespace: str = "gnn-bench") -> list[dict[str, Any]]:
        """The pods of a TrainJob's JobSet (the label JobSet puts on them), by index."""
        pods = [p for p in self.store.items(PODS, namespace)
                if (p["metadata"].get("labels") or {}).get("jobset.sigs.k8s.io/jobset-name")
                == name]
        return sorted(pods, key=lambda p: (p["metadata"]["creationTimestamp"],
                                           p["metadata"]["name"]))

    def pods_of(self, job_name: str, namespace: str = "gnn-bench") -> list[dict[str, Any]]:
        return [p for p in self.store.items(PODS, namespace)
                if (p["metadata"].get("labels") or {}).get("training.kubeflow.org/job-name")
                == job_name]

    def max_backoff_sum(self, uid: str) -> int:
        """The largest restart sum the operator compared with backoffLimit for a job."""
        return max(self.operator.backoff_sums.get(uid) or [0])

    def max_concurrent(self) -> int:
        """The most jobs whose pods were running at the same moment."""
        spans = [(r.started, r.finished or time.time()) for r in self.records.values() if r.started]
        events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        return peak

    def crash(self, namespace: str, pod: str, container: str = "pytorch", sig: int = 9) -> bool:
        """Kill a container's process (a crash, not a pod deletion): the kubelet restarts it."""
        with self.lock:
            run = self.kubelet.find(namespace, pod)
            c = next((c for c in (run.containers if run else []) if c.name == container), None)
            if c is None or c.process is None or c.process.poll() is not None:
                return False
            os.killpg(c.process.pid, sig)
            return True


__all__ = ["Cluster", "JobRecord", "LAUNCHER_VARS", "MISSING_IMAGES", "REPO", "sys"]
