"""The API server's storage and its generic semantics, as the clients see them.

Objects are the plain JSON dicts the API sends.

=====================================================  ==================================================
behaviour                                              where Kubernetes documents it
=====================================================  ==================================================
every object gets ``uid``, ``creationTimestamp`` and   API concepts, "Resource versions"
a ``resourceVersion`` from one cluster-wide counter    (reference/using-api/api-concepts)
that grows with every write; clients compare
versions for equality only
watch from a version: the changes after it, as         API concepts, "Efficient detection of changes";
ADDED/MODIFIED/DELETED; no version or "0": the         "410 Gone responses"
current objects as ADDED first; a version older
than the kept history: 410 Gone (Expired)
label selectors ``=``, ``==``, ``!=``, ``in``,         Labels and Selectors
``notin``, ``key``, ``!key``; field selectors on       Field Selectors
``metadata.*`` and e.g. Events' ``involvedObject.*``
create of an existing name: 409 AlreadyExists          API concepts; Kubernetes API reference (Status)
DELETE without finalizers: gone at once; with          Finalizers; Pod lifecycle, "Termination of
finalizers, or a Pod bound to a node:                  Pods" (a pod not yet bound is removed at once;
``deletionTimestamp`` set (Pods:                       gracePeriodSeconds=0 removes it at once, as
``deletionGracePeriodSeconds``, the pod's              ``kubectl delete --force --grace-period=0``)
``terminationGracePeriodSeconds`` (30) unless the
request gives one) until the kubelet / the
finalizers are done; a shorter grace on a
terminating pod wins
``propagationPolicy``: Foreground adds                 Garbage collection, "Cascading deletion";
``foregroundDeletion`` and the owner stays until       Use Cascading Deletion in a Cluster
its ``blockOwnerDeletion`` dependents are gone;
Background (default for custom resources and Pods)
removes the owner first; Orphan drops the owner
references (the collector is in cluster.py)
``preconditions.uid`` / ``.resourceVersion`` on        DeleteOptions (API reference)
DELETE: 409 Conflict when they do not match
=====================================================  ==================================================

Pages: https://kubernetes.io/docs/reference/using-api/api-concepts/ ,
https://kubernetes.io/docs/concepts/overview/working-with-objects/{labels,field-selectors,finalizers}/ ,
https://kubernetes.io/docs/concepts/architecture/garbage-collection/ ,
https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


def now_rfc3339(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def parse_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


class ApiError(Exception):
    """An error the API server answers with a ``Status`` object."""

    REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
               409: "AlreadyExists", 410: "Expired", 422: "Invalid", 500: "InternalError"}

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details,
                "code": self.code}


@dataclass(frozen=True)
class Resource:
    """One kind the API server serves (what discovery lists)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "get", "list", "patch", "update", "watch")
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def not_found(self, name: str) -> ApiError:
        what = f"{self.plural}.{self.group}" if self.group else self.plural
        return ApiError(404, f'{what} "{name}" not found', "NotFound",
                        {"name": name, "group": self.group, "kind": self.plural})


# ------------------------------------------------------------------ selectors
_REQ = re.compile(
    r"\s*(?P<neg>!)?(?P<key>[A-Za-z0-9_./-]+)"
    r"(?:\s*(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*"
)


def parse_label_selector(text: str | None) -> list[Callable[[dict[str, str]], bool]]:
    """A label selector as a list of predicates on a labels dict (all must hold)."""
    preds: list[Callable[[dict[str, str]], bool]] = []
    rest = (text or "").strip()
    while rest:
        match = _REQ.match(rest)
        if not match or match.end() == 0:
            raise ApiError(400, f"unable to parse requirement: {rest!r}")
        g = match.groupdict()
        key = g["key"]
        if g["op"]:
            value, eq = g["value"], g["op"] != "!="
            preds.append(lambda labels, k=key, v=value, eq=eq: (labels.get(k) == v) == eq)
        elif g["setop"]:
            values = {v.strip() for v in g["values"].split(",") if v.strip()}
            inside = g["setop"] == "in"
            preds.append(lambda labels, k=key, vs=values, inside=inside:
                         (labels.get(k) in vs) if inside else (labels.get(k) not in vs))
        else:
            present = not g["neg"]
            preds.append(lambda labels, k=key, p=present: (k in labels) == p)
        rest = rest[match.end():]
        if rest.startswith(","):
            rest = rest[1:]
        elif rest:
            raise ApiError(400, f"unable to parse requirement: {rest!r}")
    return preds


def field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def parse_field_selector(text: str | None) -> list[Callable[[dict[str, Any]], bool]]:
    preds: list[Callable[[dict[str, Any]], bool]] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        match = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", part)
        if not match:
            raise ApiError(400, f"invalid field selector: {part!r}")
        path, op, value = match.groups()
        eq = op != "!="
        preds.append(lambda obj, p=path, v=value, eq=eq: (field_value(obj, p) == v) == eq)
    return preds


def matches(obj: dict[str, Any], labels: list, fields: list) -> bool:
    obj_labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(p(obj_labels) for p in labels) and all(p(obj) for p in fields)


# ------------------------------------------------------------------ the store
@dataclass
class WatchEvent:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    resource: Resource
    obj: dict[str, Any]


@dataclass
class Store:
    """All objects, one lock, one resourceVersion counter and a bounded history for watches."""

    history_size: int = 20_000
    lock: threading.RLock = field(default_factory=threading.RLock)
    objects: dict[tuple[Resource, str, str], dict[str, Any]] = field(default_factory=dict)
    rv: int = 0
    history: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)
        self.history = deque(maxlen=self.history_size)

    # -- bookkeeping
    def _bump(self, resource: Resource, kind: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append(WatchEvent(self.rv, kind, resource, copy.deepcopy(obj)))
        self.changed.notify_all()

    def oldest_rv(self) -> int:
        return self.history[0].rv if self.history else self.rv

    # -- verbs
    def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            name = meta.get("name")
            if not name:
                raise ApiError(422, f"{resource.kind} is invalid: metadata.name: Required value")
            key = (resource, namespace if resource.namespaced else "", name)
            if key in self.objects:
                what = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
                raise ApiError(409, f'{what} "{name}" already exists', "AlreadyExists",
                               {"name": name, "group": resource.group, "kind": resource.plural})
            if resource.namespaced:
                meta["namespace"] = namespace
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
            meta.pop("deletionTimestamp", None)
            obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
            self.objects[key] = obj
            self._bump(resource, "ADDED", obj)
            return copy.deepcopy(obj)

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get((resource, namespace if resource.namespaced else "", name))
            if obj is None:
                raise resource.not_found(name)
            return copy.deepcopy(obj)

    def peek(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself (controllers read and write it under the lock)."""
        return self.objects.get((resource, namespace if resource.namespaced else "", name))

    def items(self, resource: Resource, namespace: str | None = None) -> list[dict[str, Any]]:
        """The stored objects of a kind (not copies), optionally of one namespace."""
        return [o for (r, ns, _), o in list(self.objects.items())
                if r == resource and (namespace is None or ns == namespace)]

    def list(self, resource: Resource, namespace: str | None, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict[str, Any]], int]:
        labels, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        with self.lock:
            found = [copy.deepcopy(o) for o in self.items(resource, namespace)
                     if matches(o, labels, fields)]
            return sorted(found, key=lambda o: (o["metadata"].get("namespace", ""),
                                                o["metadata"]["name"])), self.rv

    def update(self, resource: Resource, obj: dict[str, Any], bump_generation: bool = False
               ) -> dict[str, Any]:
        """Store a changed object (controllers: status writes, finalizer changes)."""
        with self.lock:
            meta = obj["metadata"]
            key = (resource, meta.get("namespace", "") if resource.namespaced else "", meta["name"])
            if self.objects.get(key) is not obj and key in self.objects:
                self.objects[key] = obj
            if bump_generation:
                meta["generation"] = int(meta.get("generation", 1)) + 1
            self._bump(resource, "MODIFIED", obj)
            if self._can_go(resource, obj):
                self.remove(resource, obj)
            return obj

    def delete(self, resource: Resource, namespace: str, name: str,
               options: dict[str, Any] | None = None) -> dict[str, Any]:
        """DELETE as the API server does it; returns the object (gone, or now terminating)."""
        options = options or {}
        with self.lock:
            obj = self.peek(resource, namespace, name)
            if obj is None:
                raise resource.not_found(name)
            meta = obj["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise ApiError(409, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                    f"UID in object meta: {meta['uid']}", "Conflict",
                               {"name": name, "kind": resource.plural})
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise ApiError(409, "Precondition failed: ResourceVersion in precondition: "
                                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                    f"{meta['resourceVersion']}", "Conflict",
                               {"name": name, "kind": resource.plural})
            policy = options.get("propagationPolicy") or (
                ORPHAN if options.get("orphanDependents") else "Background")
            finalizers = meta.setdefault("finalizers", [])
            if policy == "Foreground" and FOREGROUND not in finalizers:
                finalizers.append(FOREGROUND)
            elif policy == "Orphan" and ORPHAN not in finalizers:
                finalizers.append(ORPHAN)
            if not finalizers:
                meta.pop("finalizers", None)
            grace = options.get("gracePeriodSeconds")
            if resource.kind == "Pod":
                if grace is None:
                    grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                if not (obj.get("spec") or {}).get("nodeName"):
                    grace = 0  # never bound to a node: nothing to stop, removed at once
                if "deletionTimestamp" in meta:  # already terminating: a shorter grace wins
                    grace = min(int(grace), int(meta.get("deletionGracePeriodSeconds") or 0))
            if "deletionTimestamp" not in meta or (resource.kind == "Pod" and grace == 0):
                meta["deletionTimestamp"] = now_rfc3339(time.time() + int(grace or 0))
                if resource.kind == "Pod":
                    meta["deletionGracePeriodSeconds"] = int(grace)
                self._bump(resource, "MODIFIED", obj)
            result = copy.deepcopy(obj)
            if self._can_go(resource, obj):
                self.remove(resource, obj)
            return result

    def _can_go(self, resource: Resource, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if "deletionTimestamp" not in meta or meta.get("finalizers"):
            return False
        if resource.kind == "Pod":
            return int(meta.get("deletionGracePeriodSeconds") or 0) == 0
        return True

    def remove(self, resource: Resource, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (resource, meta.get("namespace", "") if resource.namespaced else "", meta["name"])
        if self.objects.get(key) is obj:
            del self.objects[key]
            self._bump(resource, "DELETED", obj)

    # -- watch
    def watch(self, resource: Resource, namespace: str | None, since: int,
              label_selector: str | None, field_selector: str | None,
              timeout_s: float, stop: threading.Event) -> Iterator[WatchEvent | None]:
        """Events after ``since`` (None now and then, so the caller can send keep-alives)."""
        labels, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        deadline = time.monotonic() + timeout_s
        seen = since
        with self.lock:
            if since and since < self.oldest_rv() - 1:
                raise ApiError(410, f"too old resource version: {since} ({self.oldest_rv()})",
                               "Expired")
        while time.monotonic() < deadline and not stop.is_set():
            with self.lock:
                pending = [e for e in self.history if e.rv > seen]
                if not pending:
                    self.changed.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                    pending = [e for e in self.history if e.rv > seen]
            if not pending:
                yield None
                continue
            for event in pending:
                seen = event.rv
                ns = event.obj["metadata"].get("namespace")
                if event.resource != resource or (namespace and ns != namespace):
                    continue
                if matches(event.obj, labels, fields):
                    yield event
