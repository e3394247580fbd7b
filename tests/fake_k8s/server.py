"""A fake Kubernetes API server on 127.0.0.1, for the real clients: the harness's
``kubernetes`` client, ``kubectl`` and the Kubeflow SDK's ``TrainingClient``.

It serves discovery (``/version``, ``/api``, ``/apis``, each group version's resource list, the
OpenAPI v3 index and one document per group version: see ``openapi_v3``), and
get, list (label and field selectors), watch, create, update, merge patch and delete (with
propagation, grace period and preconditions) of namespaces, nodes, pods, services, events and
PyTorchJobs; ``pods/log`` (``container``, ``previous``, ``tailLines``, ``follow``);
``metrics.k8s.io`` PodMetrics; the service proxy to a read-only, nginx-like file server over
the volume (``autoindex_format json``); Tables for ``kubectl get``; errors as ``Status``
objects. Semantics are in store.py, cluster.py, operator.py and kubelet.py.

On demand: no training operator (``crd_installed=False``), no metrics-server
(``metrics=False``), RBAC from a Role's rules (403 for anything else; ``used`` records what was
asked), and injected failures (``fail(...)``: any status, ``Retry-After``, or a connection
reset). By default the cluster is the one docs/gke.md sets up: the namespaces of
``k8s/base/namespace.yaml`` (the jobs' one enforcing the restricted Pod Security Standard) and
the operator with ``k8s/operator``'s init container template. Use it as a context manager and
point clients at it with ``write_kubeconfig``.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from . import tables
from .cluster import MISSING_IMAGES, REPO, Cluster
from .kinds import CORE, NAMESPACES, POD_METRICS, PODS, PYTORCHJOBS, SERVICES, TRAINJOBS
from .store import ApiError, Resource

PROJECT_NAMESPACES = REPO / "k8s" / "base" / "namespace.yaml"
PROJECT_INIT_TEMPLATE = REPO / "k8s" / "operator" / "init-container.yaml"
PROJECT_RUNTIME = REPO / "k8s" / "trainer" / "runtime" / "gnn-bench-torch.yaml"
STOCK_RUNTIME = "torch_distributed.runtime.v2.3.0.yaml"  # in kubeflow_dir()


@dataclass
class Fault:
    method: str
    pattern: str
    status: int | str  # an HTTP status, or "reset" to drop the connection
    times: int
    headers: dict[str, str]
    details: dict[str, str]


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    return ApiError(code, message, reason, details).body()


def load_role_rules(path: Path, namespace: str | None = None) -> list[dict[str, Any]]:
    """The rules of the Roles in a multi-document YAML file (e.g. k8s/base/rbac.yaml), of one
    namespace when given (a Role without one counts for every namespace)."""
    rules = []
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Role":
            ns = (doc.get("metadata") or {}).get("namespace")
            if namespace is None or ns in (None, namespace):
                rules += doc["rules"]
    if not rules:
        raise ValueError(f"no Role in {path}")
    return rules


def kubeflow_dir() -> Path:
    """The shared Kubeflow CRD schemas (``../shared/kubeflow`` beside the checkout, or beside
    the folder of worktrees; ``GNN_BENCH_KUBEFLOW_DIR`` overrides). May not exist."""
    import os

    if os.environ.get("GNN_BENCH_KUBEFLOW_DIR"):
        return Path(os.environ["GNN_BENCH_KUBEFLOW_DIR"])
    candidates = [REPO.parent / "shared" / "kubeflow", REPO.parent.parent / "shared" / "kubeflow"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


TRAINJOB_RBAC = REPO / "k8s" / "trainer" / "runtime" / "rbac.yaml"


def project_role_rules(trainjob: bool = True) -> dict[str, list[dict[str, Any]]]:
    """The harness's Roles of k8s/base and, unless ``trainjob`` is false, k8s/trainer/runtime's
    for TrainJobs, by namespace (what the RBAC check enforces)."""
    jobs = load_role_rules(REPO / "k8s" / "base" / "jobs" / "rbac.yaml")
    return {"gnn-bench": jobs + (load_role_rules(TRAINJOB_RBAC) if trainjob else []),
            "gnn-bench-infra": load_role_rules(REPO / "k8s" / "base" / "infra" / "rbac.yaml")}


def project_namespaces() -> dict[str, dict[str, str]]:
    """Namespace name -> labels, from k8s/base/namespace.yaml."""
    return {d["metadata"]["name"]: dict(d["metadata"].get("labels") or {})
            for d in yaml.safe_load_all(PROJECT_NAMESPACES.read_text())
            if d and d.get("kind") == "Namespace"}


class FakeKube:
    """The API server (a ThreadingHTTPServer on 127.0.0.1, random port) and its cluster."""

    def __init__(
        self,
        volume: Path,
        *,
        namespaces: tuple[str, ...] | dict[str, dict[str, str]] | None = None,
        crd_installed: bool = True,
        metrics: bool = True,
        metrics_window_s: float = 1.0,
        files_service: str = "gnn-bench-files",
        files_namespace: str | None = None,
        mount_path: str = "/mnt/bench",
        pod_start_delay_s: float = 0.0,
        role_rules: list[dict[str, Any]] | dict[str, list[dict[str, Any]]] | None = None,
        replica_command: list[str] | None = None,
        replica_env: dict[str, str] | None = None,
        time_scale: float = 0.1,
        nodes: dict[str, dict[str, str]] | None = None,
        node_labels: dict[str, dict[str, str]] | None = None,
        missing_images: frozenset[str] | set[str] = MISSING_IMAGES,
        init_container_template: str | Path | None = PROJECT_INIT_TEMPLATE,
        runtimes: tuple[Path | str, ...] = (PROJECT_RUNTIME,),
    ):
        self.volume = Path(volume)
        self.volume.mkdir(parents=True, exist_ok=True)
        if namespaces is None:
            namespaces = project_namespaces()
        elif not isinstance(namespaces, dict):
            namespaces = {name: {} for name in namespaces}
        self.crd_installed, self.metrics = crd_installed, metrics
        infra = [n for n in namespaces if n.endswith("-infra")]
        self.files_service = files_service
        self.files_namespace = files_namespace or (infra[0] if infra else next(iter(namespaces)))
        # A Role's rules for every namespace, or per namespace ({"ns": rules}).
        self.role_rules = role_rules
        template = None
        if init_container_template is not None:
            template = Path(init_container_template).read_text()
        self.cluster = Cluster(
            self.volume, mount_path=mount_path, pod_start_delay_s=pod_start_delay_s,
            metrics_window_s=metrics_window_s, replica_command=replica_command,
            replica_env=replica_env, time_scale=time_scale, nodes=nodes,
            node_labels=node_labels, missing_images=missing_images,
            init_container_template=template, namespaces=namespaces)
        # Training runtimes applied as `kubectl apply` would (k8s/trainer/runtime: the project's
        # TrainingRuntime in the jobs' namespace; a ClusterTrainingRuntime cluster-wide).
        for runtime in runtimes:
            self.apply_runtime(Path(runtime))
        if crd_installed:
            self._install_trainer_public_config()
        self.requests: list[tuple[str, str]] = []
        self.used: set[tuple[str, str, str]] = set()
        self.creates: dict[str, int] = {}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _install_trainer_public_config(self) -> None:
        """What Trainer v2.3.0's install (manifests/overlays/manager) leaves for its SDK: the
        namespace kubeflow-system and the ConfigMap kubeflow-trainer-public with
        kubeflow_trainer_version (the SDK's TrainerClient reads it when it starts)."""
        from .kinds import CONFIGMAPS

        with self.cluster.lock:
            if self.cluster.store.peek(NAMESPACES, "", "kubeflow-system") is None:
                self.cluster.store.create(NAMESPACES, "", {
                    "metadata": {"name": "kubeflow-system"}, "status": {"phase": "Active"}})
            self.cluster.store.create(CONFIGMAPS, "kubeflow-system", {
                "metadata": {"name": "kubeflow-trainer-public"},
                "data": {"kubeflow_trainer_version": "v2.3.0"}})

    def apply_runtime(self, path: Path, namespace: str = "gnn-bench",
                      edit: Any = None) -> dict[str, Any]:
        """Create a TrainingRuntime or ClusterTrainingRuntime from a YAML file (``edit``: a
        function changing the document first, as a kustomize patch would)."""
        from .kinds import CLUSTERTRAININGRUNTIMES, TRAININGRUNTIMES

        doc = yaml.safe_load(Path(path).read_text())
        if edit is not None:
            edit(doc)
        resource = CLUSTERTRAININGRUNTIMES if doc["kind"] == "ClusterTrainingRuntime" \
            else TRAININGRUNTIMES
        with self.cluster.lock:
            return self.cluster.store.create(resource, namespace if resource.namespaced else "",
                                             doc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def store(self):
        return self.cluster.store

    def resources(self) -> list[Resource]:
        served = list(CORE)
        if self.crd_installed:  # the controllers' kinds (the CRDs their install brings)
            served += [r for c in self.cluster.controllers for r in c.resources]
        if self.metrics:
            served.append(POD_METRICS)
        return served

    def __enter__(self) -> FakeKube:
        self.cluster.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.cluster.stop()

    def write_kubeconfig(self, path: Path, namespace: str = "gnn-bench",
                         server: str | None = None) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": server or self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake",
                          "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def fail(self, method: str, pattern: str, status: int | str, times: int = 1,
             headers: dict[str, str] | None = None, details: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` requests matching (method, path regex) with ``status``
        (a Status object with ``details``, and ``headers`` such as Retry-After)."""
        with self._lock:
            self._faults.append(Fault(method, pattern, status, times, headers or {}, details or {}))

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and re.search(fault.pattern, path):
                    fault.times -= 1
                    return fault
        return None

    def allowed(self, namespace: str | None, group: str, resource: str, verb: str,
                name: str | None) -> bool:
        """RBAC as the API server evaluates Roles' rules (no rules: everything allowed)."""
        rules = self.role_rules
        if rules is None:
            return True
        if isinstance(rules, dict):
            rules = rules.get(namespace or "", [])
        return any(
            group in r.get("apiGroups", []) and resource in r.get("resources", [])
            and verb in r.get("verbs", [])
            and (not r.get("resourceNames") or name in r["resourceNames"])
            for r in rules)


# ------------------------------------------------------------------ request parsing
@dataclass
class Target:
    resource: Resource
    namespace: str | None
    name: str | None
    sub: str | None
    rest: str


def parse_target(fake: FakeKube, path: str) -> Target | None:
    parts = [p for p in path.split("/") if p != ""]
    if parts[:2] == ["api", "v1"]:
        group, version, parts = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, parts = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(parts) >= 3 and parts[0] == "namespaces":
        namespace, parts = parts[1], parts[2:]
    if not parts:
        return None
    resource = next((r for r in fake.resources() if r.group == group and r.version == version
                     and r.plural == parts[0]), None)
    if resource is None:
        return None
    name = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else None
    rest = "/".join(parts[3:]) if len(parts) > 3 else ""
    if sub == "proxy" and path.endswith("/") and rest:
        rest += "/"
    elif sub == "proxy" and path.endswith("/proxy/"):
        rest = ""
    return Target(resource, namespace, name, sub, rest)


def discovery(fake: FakeKube, path: str) -> dict[str, Any] | None:
    served = fake.resources()
    groups: dict[str, list[Resource]] = {}
    for r in served:
        groups.setdefault(r.group, []).append(r)
    if path == "/version":
        return {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": fake.url.split("//")[1]}]}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{rs[0].version}",
                                      "version": rs[0].version}],
             "preferredVersion": {"groupVersion": f"{g}/{rs[0].version}", "version": rs[0].version}}
            for g, rs in groups.items() if g]}
    match = re.fullmatch(r"/api/(v1)|/apis/([^/]+)/([^/]+)", path)
    if match:
        group = match.group(2) or ""
        version = match.group(1) or match.group(3)
        rs = [r for r in groups.get(group, []) if r.version == version]
        if not rs:
            return None
        listing = []
        for r in rs:
            entry = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                     "kind": r.kind, "verbs": list(r.verbs)}
            if r.short_names:
                entry["shortNames"] = list(r.short_names)
            if r.categories:
                entry["categories"] = list(r.categories)
            listing.append(entry)
            for sub in r.subresources:
                verbs = {"log": ["get"], "proxy": ["create", "delete", "get", "patch", "update"],
                         "status": ["get", "patch", "update"], "scale": ["get", "patch", "update"]}
                listing.append({"name": f"{r.plural}/{sub}", "singularName": "",
                                "namespaced": r.namespaced, "kind": r.kind if sub != "scale"
                                else "Scale", "verbs": verbs[sub]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": listing}
    match = re.fullmatch(r"/apis/([^/]+)", path)
    if match and match.group(1) in groups:
        g, v = match.group(1), groups[match.group(1)][0].version
        return {"kind": "APIGroup", "apiVersion": "v1", "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
    return None


def openapi_v3(fake: FakeKube, path: str) -> dict[str, Any] | None:
    """``/openapi/v3`` and its group-version documents, as far as ``kubectl`` reads them.

    kube-apiserver publishes (since 1.27, GA of ServerSideFieldValidation) an index whose ``paths``
    name every group version (``api/v1``, ``apis/<group>/<version>``) with a
    ``serverRelativeURL``, and for each an OpenAPI 3.0 document whose operations carry the
    ``x-kubernetes-group-version-kind`` extension; every PATCH takes the ``fieldValidation`` query
    parameter. kubectl (cli-runtime's query-param verifier, v3 first, then ``/openapi/v2``) reads
    that parameter on the kind's PATCH operation: where the server has it, kubectl leaves field
    validation to the server and checks no schema itself, which is why ``kubectl apply
    --dry-run=client`` of a custom resource is accepted on a real cluster without kubectl
    downloading its schema. The documents here have those operations and a stub schema per kind
    (``type: object`` with the GVK extension), not the CRDs' schemas; and, unlike a real server,
    the fake does not enforce ``fieldValidation=Strict`` on writes (the tests check manifests
    against the strict CRD schemas instead).

    Sources: the vendor extensions and their placement on operations, kubernetes/kubernetes
    ``api/openapi-spec/README.md``; the order of kubectl's requests (``/openapi/v3``, then the
    group's document, then the object), kubectl 1.32's own ``-v=6`` log against this fake.
    """
    served = fake.resources()
    versions = sorted({(r.group, r.version) for r in served})

    def gv_path(group: str, version: str) -> str:
        return f"apis/{group}/{version}" if group else f"api/{version}"

    if path == "/openapi/v3":
        return {"paths": {gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{gv_path(g, v)}"}
                          for g, v in versions}}
    match = re.fullmatch(r"/openapi/v3/api/(v1)|/openapi/v3/apis/([^/]+)/([^/]+)", path)
    if not match:
        return None
    group, version = match.group(2) or "", match.group(1) or match.group(3)
    rs = [r for r in served if (r.group, r.version) == (group, version)]
    if not rs:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    query = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
             for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
    for r in rs:
        gvk = {"group": group, "version": version, "kind": r.kind}
        scope = "/namespaces/{namespace}" if r.namespaced else ""
        name = f"{'.'.join(reversed(group.split('.'))) if group else 'io.k8s.api.core'}." \
               f"{version}.{r.kind}"
        schemas[name] = {"type": "object", "x-kubernetes-group-version-kind": [gvk]}
        ref = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
        paths[f"/{gv_path(group, version)}{scope}/{r.plural}/{{name}}"] = {
            **{verb: {"x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk,
                      "responses": {"200": {"description": "OK", **ref}}}
               for verb in ("get", "put", "delete")},
            "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                      "parameters": query, "responses": {"200": {"description": "OK", **ref}}},
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "uniqueItems": True}}]}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0-fake"},
            "paths": paths, "components": {"schemas": schemas}}


def flag(query: dict[str, str], key: str) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (``true``, ``True``, ``1``)."""
    return query.get(key, "").lower() in ("1", "t", "true")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also used for strategic merge patches of plain fields)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _handler_for(fake: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        # -- plumbing
        def _send(self, code: int, body: Any, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, exc: ApiError, headers: dict[str, str] | None = None) -> None:
            self._send(exc.code, exc.body(), headers=headers)

        def _stream_start(self, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-cache, private")
            self.end_headers()
            self.close_connection = True

        def _write(self, data: bytes) -> bool:
            try:
                self.wfile.write(data)
                self.wfile.flush()
                return True
            except (BrokenPipeError, ConnectionResetError, OSError):
                return False

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = yaml.safe_load(raw)
            fake.requests.append((method, self.path))
            fault = fake.take_fault(method, path)
            if fault is not None:
                if fault.status == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                code = int(fault.status)
                return self._error(ApiError(code, f"injected {fault.status}",
                                            ApiError.REASONS.get(code) or {
                                                429: "TooManyRequests",
                                                503: "ServiceUnavailable"}.get(code, "Unknown"),
                                            fault.details), fault.headers)
            if method == "GET":
                doc = discovery(fake, path.rstrip("/") or "/") or openapi_v3(fake, path)
                if doc is not None:
                    return self._send(200, doc)
            target = parse_target(fake, path)
            if target is None:
                return self._error(ApiError(
                    404, "the server could not find the requested resource", "NotFound"))
            try:
                self._dispatch(method, target, query, body)
            except ApiError as exc:
                self._error(exc)

        def _verb(self, method: str, target: Target, query: dict[str, str]) -> str:
            if method == "GET":
                if target.name is None:
                    return "watch" if flag(query, "watch") else "list"
                return "get"
            return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]

        def _dispatch(self, method: str, target: Target, query: dict[str, str], body: Any) -> None:
            resource, ns = target.resource, target.namespace
            verb = self._verb(method, target, query)
            rbac_resource = resource.plural + (f"/{target.sub}" if target.sub else "")
            name = target.name.split(":")[0] if target.name else None
            if not fake.allowed(ns, resource.group, rbac_resource, verb, name):
                what = rbac_resource + (f".{resource.group}" if resource.group else "")
                what += f' "{name}"' if name else ""
                raise ApiError(403, (
                    f"{what} is forbidden: "
                    'User "system:serviceaccount:gnn-bench:'
                    f'gnn-bench-harness" cannot {verb} resource "{rbac_resource}" in API group '
                    f'"{resource.group}"' + (f' in the namespace "{ns}"' if ns else
                                              " at the cluster scope")),
                    "Forbidden", {"name": name or "", "group": resource.group,
                                  "kind": resource.plural})
            fake.used.add((resource.group, rbac_resource, verb))
            if resource == POD_METRICS:
                return self._metrics(target, query)
            if target.sub == "log":
                return self._log(target, query)
            if target.sub == "proxy":
                return self._proxy(target)
            if verb == "watch":
                return self._watch(target, query)
            store, cluster = fake.store, fake.cluster
            with store.lock:
                if verb == "list":
                    items, rv = store.list(resource, ns, query.get("labelSelector"),
                                           query.get("fieldSelector"))
                    return self._answer(resource, items, rv, is_list=True)
                if verb == "get":
                    return self._answer(resource, [store.get(resource, ns or "", name)], store.rv)
                if verb == "create":
                    body = body or {}
                    created = cluster.api_create(resource, ns or "", body)
                    if resource in (PYTORCHJOBS, TRAINJOBS):
                        job = created["metadata"]["name"]
                        fake.creates[job] = fake.creates.get(job, 0) + 1
                    return self._send(201, created)
                if verb in ("update", "patch"):
                    current = store.peek(resource, ns or "", name)
                    if current is None:
                        raise resource.not_found(name)
                    if verb == "update":
                        new = body or {}
                        if target.sub == "status":
                            new = {**current, "status": new.get("status")}
                    else:
                        new = merge_patch(current, body or {})
                    new["metadata"] = {**current["metadata"],
                                       **{k: v for k, v in (new.get("metadata") or {}).items()
                                          if k in ("labels", "annotations", "finalizers")}}
                    spec_changed = new.get("spec") != current.get("spec")
                    current.clear()
                    current.update(new)
                    store.update(resource, current, bump_generation=spec_changed)
                    return self._send(200, copy.deepcopy(current))
                if verb == "delete":
                    options = dict(body or {})
                    for key in ("gracePeriodSeconds", "propagationPolicy"):
                        if key in query:
                            options[key] = int(query[key]) if key == "gracePeriodSeconds" \
                                else query[key]
                    if resource == PODS and store.peek(PODS, ns or "", name) is not None:
                        cluster.deleted_pods.append((name, time.time()))
                    gone = store.delete(resource, ns or "", name, options)
                    return self._send(200, gone)
            raise ApiError(405, f"{method} is not supported here", "MethodNotAllowed")

        def _answer(self, resource: Resource, items: list[dict[str, Any]], rv: int,
                    is_list: bool = False) -> None:
            if "as=Table" in (self.headers.get("Accept") or ""):
                return self._send(200, tables.table(resource, items, rv))
            if not is_list:
                return self._send(200, items[0])
            return self._send(200, {
                "kind": f"{resource.kind}List", "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(rv)}, "items": items})

        def _watch(self, target: Target, query: dict[str, str]) -> None:
            store, resource = fake.store, target.resource
            since = query.get("resourceVersion") or ""
            timeout = float(query.get("timeoutSeconds") or 1800)
            labels, fields = query.get("labelSelector"), query.get("fieldSelector")
            if since.isdigit() and since != "0":
                start, items = int(since), []
                if start < store.oldest_rv() - 1:
                    raise ApiError(410, f"too old resource version: {since} "
                                        f"({store.oldest_rv()})", "Expired")
            else:  # no version (or "0"): the current objects as ADDED, then what follows
                items, start = store.list(resource, target.namespace, labels, fields)
            events = store.watch(resource, target.namespace, start, labels, fields, timeout,
                                 fake._closing)
            self._stream_start("application/json")
            for obj in items:
                if not self._write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n"):
                    return
            try:
                for event in events:
                    if event is None:
                        continue
                    line = json.dumps({"type": event.type, "object": event.obj}).encode() + b"\n"
                    if not self._write(line):
                        return
            except ApiError as exc:
                self._write(json.dumps({"type": "ERROR", "object": exc.body()}).encode() + b"\n")

        # -- pods/log
        def _log(self, target: Target, query: dict[str, str]) -> None:
            store, kubelet = fake.store, fake.cluster.kubelet
            with store.lock:
                pod = store.get(PODS, target.namespace, target.name)
                containers = [c["name"] for c in pod["spec"].get("containers") or []]
                inits = [c["name"] for c in pod["spec"].get("initContainers") or []]
                container = query.get("container")
                if not container:
                    if len(containers) != 1:
                        raise ApiError(400, f"a container name must be specified for pod "
                                            f"{target.name}, choose one of: {containers}")
                    container = containers[0]
                if container not in containers + inits:
                    raise ApiError(400, f"container {container} is not valid for pod {target.name}")
                run = kubelet.runs.get(pod["metadata"]["uid"])
                c = next((c for c in run.all() if c.name == container), None) if run else None
                previous = flag(query, "previous")
                if c is None or (c.state == "waiting" and not c.restarts and not previous):
                    reason = c.reason if c else "ContainerCreating"
                    raise ApiError(400, f'container "{container}" in pod "{target.name}" is '
                                        f"waiting to start: {reason}")
                if previous and not c.restarts:
                    raise ApiError(400, f'previous terminated container "{container}" in pod '
                                        f'"{target.name}" not found')
                path = run.log_path(container, c.restarts - 1 if previous else c.restarts)
                restart = c.restarts

                def alive() -> bool:
                    return c.state == "running" and c.restarts == restart and run.uid in kubelet.runs
            tail = int(query.get("tailLines") or 0)
            if not flag(query, "follow") or previous:
                lines = path.read_text(errors="replace").splitlines(keepends=True) \
                    if path.exists() else []
                return self._send(200, "".join(lines[-tail:] if tail else lines).encode(),
                                  "text/plain")
            self._stream_start("text/plain")
            lines = path.read_text(errors="replace").splitlines(keepends=True) if path.exists() else []
            offset = path.stat().st_size if path.exists() else 0
            if not self._write("".join(lines[-tail:] if tail else lines).encode()):
                return
            while not fake._closing.is_set():
                running = alive()
                if path.exists() and path.stat().st_size > offset:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        data = f.read()
                    offset += len(data)
                    if not self._write(data):
                        return
                if not running:
                    return
                time.sleep(0.1)

        # -- metrics.k8s.io
        def _metrics(self, target: Target, query: dict[str, str]) -> None:
            from .store import matches, parse_field_selector, parse_label_selector

            with fake.store.lock:
                items = [copy.deepcopy(r.metrics) for r in fake.cluster.kubelet.runs.values()
                         if r.metrics and (target.namespace is None
                                           or r.namespace == target.namespace)]
            if target.name:
                found = [m for m in items if m["metadata"]["name"] == target.name]
                if not found:
                    raise ApiError(404, f'podmetrics.metrics.k8s.io "{target.name}" not found',
                                   "NotFound", {"name": target.name, "group": "metrics.k8s.io",
                                                "kind": "pods"})
                return self._send(200, found[0])
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"))
            items = sorted((m for m in items if matches(m, labels, fields)),
                           key=lambda m: m["metadata"]["name"])
            self._send(200, {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                             "metadata": {}, "items": items})

        # -- the file server behind the service proxy
        def _proxy(self, target: Target) -> None:
            if target.resource != SERVICES:
                raise ApiError(404, "the server could not find the requested resource")
            service = (target.name or "").split(":")[0]
            if (target.namespace, service) != (fake.files_namespace, fake.files_service):
                raise ApiError(404, f'services "{service}" not found', "NotFound",
                               {"name": service, "kind": "services"})
            rel = target.rest
            root = fake.volume.resolve()
            dest = (root / rel).resolve()
            if root not in (dest, *dest.parents):
                return self._send(403, b"<html>403 Forbidden</html>", "text/html")
            if rel.endswith("/") or rel == "":
                if not dest.is_dir():
                    return self._send(404, b"<html>404 Not Found</html>", "text/html")
                listing = [{"name": p.name, "type": "directory" if p.is_dir() else "file",
                            "mtime": "", **({} if p.is_dir() else {"size": p.stat().st_size})}
                           for p in sorted(dest.iterdir())]
                return self._send(200, listing)
            if not dest.is_file():
                return self._send(404, b"<html>404 Not Found</html>", "text/html")
            self._send(200, dest.read_bytes(), "application/octet-stream")

    return Handler


__all__ = ["FakeKube", "PROJECT_INIT_TEMPLATE", "kubeflow_dir", "load_role_rules", "project_role_rules",
           "status_body", "NAMESPACES"]
