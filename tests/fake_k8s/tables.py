"""Server-side printing: ``meta.k8s.io/v1`` Tables, what ``kubectl get`` asks for.

The columns are the API server's own for built-in kinds (pkg/printers/internalversion: pods,
services, events, namespaces, nodes) and the CRD's ``additionalPrinterColumns`` for PyTorchJobs
(v1.9.4: ``State`` = ``.status.conditions[-1:].type``, ``Age``). The pod STATUS column follows
the printer's rules: init container progress (``Init:0/1``, ``Init:ErrImagePull``), then the
last container's waiting or terminated reason, ``Terminating`` once deletion started.
"""

from __future__ import annotations

import time
from typing import Any

from .store import Resource, parse_rfc3339


def human_age(stamp: str | None) -> str:
    """Kubernetes' short human duration (``5s``, ``3m2s``, ``4h``, ``2d``)."""
    t = parse_rfc3339(stamp)
    if t is None:
        return "<unknown>"
    s = max(0, int(time.time() - t))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 48:
        return f"{h}h"
    return f"{h // 24}d"


def pod_status(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    inits = (pod.get("spec") or {}).get("initContainers") or []
    initializing = False
    for i, c in enumerate(status.get("initContainerStatuses") or []):
        state = c.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        initializing = True
        if term:
            reason = "Init:" + (term.get("reason") or f"ExitCode:{term.get('exitCode')}")
        elif wait and wait.get("reason") not in (None, "", "PodInitializing"):
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(inits)}"
        break
    if not initializing:
        running = False
        for c in reversed(status.get("containerStatuses") or []):
            state = c.get("state") or {}
            if state.get("waiting", {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                reason = term.get("reason") or f"ExitCode:{term.get('exitCode')}"
            elif state.get("running") and c.get("ready"):
                running = True
        if reason == "Completed" and running:
            reason = "Running"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _restarts(pod: dict[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    count = sum(int(c.get("restartCount", 0)) for c in statuses)
    last = [((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
            for c in statuses]
    last = [t for t in last if t]
    return f"{count} ({human_age(max(last))} ago)" if count and last else str(count)


def _col(name: str, type_: str = "string", priority: int = 0, fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": "", "priority": priority}


def _pods(objs: list[dict[str, Any]]) -> tuple[list, list]:
    cols = [_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts"),
            _col("Age"), _col("IP", priority=1), _col("Node", priority=1),
            _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)]
    rows = []
    for p in objs:
        statuses = (p.get("status") or {}).get("containerStatuses") or []
        containers = (p.get("spec") or {}).get("containers") or []
        ready = sum(1 for c in statuses if c.get("ready"))
        rows.append([p["metadata"]["name"], f"{ready}/{len(containers)}", pod_status(p),
                     _restarts(p), human_age(p["metadata"].get("creationTimestamp")),
                     (p.get("status") or {}).get("podIP") or "<none>",
                     (p.get("spec") or {}).get("nodeName") or "<none>", "<none>", "<none>"])
    return cols, rows


def _pytorchjobs(objs: list[dict[str, Any]]) -> tuple[list, list]:
    cols = [_col("Name", fmt="name"), _col("State"), _col("Age", "date")]
    rows = []
    for j in objs:
        conditions = (j.get("status") or {}).get("conditions") or []
        rows.append([j["metadata"]["name"], conditions[-1]["type"] if conditions else None,
                     human_age(j["metadata"].get("creationTimestamp"))])
    return cols, rows


def _trainjobs(objs: list[dict[str, Any]]) -> tuple[list, list]:
    """The v2.3.0 CRD's columns: State = .status.conditions[-1:].type, Age."""
    return _pytorchjobs(objs)


def _jobsets(objs: list[dict[str, Any]]) -> tuple[list, list]:
    """JobSet v0.12.0's columns: TerminalState, Restarts, Completed, Suspended, Age."""
    cols = [_col("Name", fmt="name"), _col("TerminalState"), _col("Restarts"), _col("Completed"),
            _col("Suspended"), _col("Age", "date")]
    rows = []
    for j in objs:
        status = j.get("status") or {}
        completed = next((c["status"] for c in status.get("conditions") or []
                          if c["type"] == "Completed"), None)
        suspend = (j.get("spec") or {}).get("suspend")
        rows.append([j["metadata"]["name"], status.get("terminalState"),
                     str(status.get("restarts", 0)), completed,
                     None if suspend is None else str(suspend).lower(),
                     human_age(j["metadata"].get("creationTimestamp"))])
    return cols, rows


def _jobs(objs: list[dict[str, Any]]) -> tuple[list, list]:
    """The API server's printer for batch/v1 Jobs: Status, Completions, Duration, Age."""
    cols = [_col("Name", fmt="name"), _col("Status"), _col("Completions"), _col("Duration"),
            _col("Age")]
    rows = []
    for j in objs:
        status = j.get("status") or {}
        done = {c["type"] for c in status.get("conditions") or [] if c["status"] == "True"}
        state = ("Complete" if "Complete" in done else "Failed" if "Failed" in done else
                 "FailureTarget" if "FailureTarget" in done else
                 "Suspended" if "Suspended" in done else "Running")
        completions = (j.get("spec") or {}).get("completions")
        rows.append([j["metadata"]["name"], state,
                     f"{status.get('succeeded', 0)}/{completions}", human_age(
                         status.get("startTime")),
                     human_age(j["metadata"].get("creationTimestamp"))])
    return cols, rows


def _events(objs: list[dict[str, Any]]) -> tuple[list, list]:
    cols = [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message"),
            _col("Count", "integer", 1), _col("Name", fmt="name", priority=1)]
    rows = []
    for e in objs:
        inv = e.get("involvedObject") or {}
        rows.append([human_age(e.get("lastTimestamp")), e.get("type"), e.get("reason"),
                     f"{str(inv.get('kind', '')).lower()}/{inv.get('name')}", e.get("message"),
                     e.get("count", 1), e["metadata"]["name"]])
    return cols, rows


def _services(objs: list[dict[str, Any]]) -> tuple[list, list]:
    cols = [_col("Name", fmt="name"), _col("Type"), _col("Cluster-IP"), _col("External-IP"),
            _col("Port(s)"), _col("Age"), _col("Selector", priority=1)]
    rows = []
    for s in objs:
        spec = s.get("spec") or {}
        ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
        selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items())
        rows.append([s["metadata"]["name"], spec.get("type", "ClusterIP"),
                     spec.get("clusterIP") or "<none>", "<none>", ports or "<none>",
                     human_age(s["metadata"].get("creationTimestamp")), selector or "<none>"])
    return cols, rows


def _generic(objs: list[dict[str, Any]]) -> tuple[list, list]:
    cols = [_col("Name", fmt="name"), _col("Age")]
    return cols, [[o["metadata"]["name"], human_age(o["metadata"].get("creationTimestamp"))]
                  for o in objs]


def _namespaces(objs):
    cols = [_col("Name", fmt="name"), _col("Status"), _col("Age")]
    return cols, [[o["metadata"]["name"], (o.get("status") or {}).get("phase", "Active"),
                   human_age(o["metadata"].get("creationTimestamp"))] for o in objs]


PRINTERS = {"pods": _pods, "pytorchjobs": _pytorchjobs, "trainjobs": _trainjobs,
            "jobsets": _jobsets, "jobs": _jobs, "events": _events,
            "services": _services, "namespaces": _namespaces}


def table(resource: Resource, objs: list[dict[str, Any]], rv: int) -> dict[str, Any]:
    cols, rows = PRINTERS.get(resource.plural, _generic)(objs)
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": cols,
        "rows": [{"cells": cells, "object": obj} for cells, obj in zip(rows, objs, strict=True)],
    }
