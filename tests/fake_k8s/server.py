"""A fake Kubernetes API server on 127.0.0.1 for the k8s backend's tests.

Serves exactly the requests the harness makes, through the real ``kubernetes`` client:

    POST/GET/DELETE /apis/kubeflow.org/v1/namespaces/<ns>/pytorchjobs[/<name>]
    GET  /api/v1/namespaces/<ns>/pods?labelSelector=...      GET .../pods/<pod>/log
    DELETE /api/v1/namespaces/<ns>/pods/<pod>   (SIGKILL; the "operator" creates it again)
    GET  /apis/metrics.k8s.io/v1beta1/namespaces/<ns>/pods?labelSelector=...
    GET  /api/v1/namespaces/<ns>/services/<svc>/proxy/<path>  (a read-only nginx-like file
         server on the volume: directories as ``autoindex_format json`` listings)

with the API server's error bodies (``Status`` objects), and on demand: no training operator
(``crd_installed=False``), no metrics-server (``metrics=False``), a missing namespace, RBAC from
a Role's rules (403 for anything else; ``used`` records what was asked), and injected failures
(``fail(...)``: any status, ``Retry-After``, or a connection reset). Jobs run as local
processes (``cluster.Cluster``). Use it as a context manager and point the client at it with
``write_kubeconfig``.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from .cluster import Cluster

ROUTES = [  # (method, regex, api group, resource, verb)
    (
        "POST",
        r"/apis/kubeflow\.org/v1/namespaces/(?P<ns>[^/]+)/pytorchjobs",
        "kubeflow.org",
        "pytorchjobs",
        "create",
    ),
    (
        "GET",
        r"/apis/kubeflow\.org/v1/namespaces/(?P<ns>[^/]+)/pytorchjobs/(?P<name>[^/]+)",
        "kubeflow.org",
        "pytorchjobs",
        "get",
    ),
    (
        "DELETE",
        r"/apis/kubeflow\.org/v1/namespaces/(?P<ns>[^/]+)/pytorchjobs/(?P<name>[^/]+)",
        "kubeflow.org",
        "pytorchjobs",
        "delete",
    ),
    ("GET", r"/api/v1/namespaces/(?P<ns>[^/]+)/pods", "", "pods", "list"),
    ("DELETE", r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)", "", "pods", "delete"),
    ("GET", r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/log", "", "pods/log", "get"),
    (
        "GET",
        r"/apis/metrics\.k8s\.io/v1beta1/namespaces/(?P<ns>[^/]+)/pods",
        "metrics.k8s.io",
        "pods",
        "list",
    ),
    (
        "GET",
        r"/api/v1/namespaces/(?P<ns>[^/]+)/services/(?P<name>[^/]+)/proxy/(?P<path>.*)",
        "",
        "services/proxy",
        "get",
    ),
]


def route(method: str, path: str) -> tuple[str, str, str, dict[str, str]] | None:
    """(api group, resource, verb, path parameters) of a request, as RBAC sees it."""
    for route_method, pattern, group, resource, verb in ROUTES:
        match = re.fullmatch(pattern, path)
        if route_method == method and match:
            return group, resource, verb, match.groupdict()
    return None


@dataclass
class Fault:
    method: str
    pattern: str
    status: int | str  # an HTTP status, or "reset" to drop the connection
    times: int
    headers: dict[str, str]
    details: dict[str, str]


def status_body(
    code: int, reason: str, message: str, details: dict | None = None
) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


def load_role_rules(path: Path) -> list[dict[str, Any]]:
    """The rules of the (first) Role in a multi-document YAML file, e.g. k8s/base/rbac.yaml."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Role":
            return doc["rules"]
    raise ValueError(f"no Role in {path}")


class FakeKube:
    """The API server (a ThreadingHTTPServer on 127.0.0.1, random port) and its cluster."""

    def __init__(
        self,
        volume: Path,
        *,
        namespaces: tuple[str, ...] = ("gnn-bench",),
        crd_installed: bool = True,
        metrics: bool = True,
        metrics_window_s: float = 1.0,
        files_service: str = "gnn-bench-files",
        mount_path: str = "/mnt/bench",
        pod_start_delay_s: float = 0.0,
        role_rules: list[dict[str, Any]] | None = None,
        replica_command: list[str] | None = None,
        replica_env: dict[str, str] | None = None,
    ):
        self.volume = Path(volume)
        self.volume.mkdir(parents=True, exist_ok=True)
        self.namespaces, self.crd_installed, self.metrics = set(namespaces), crd_installed, metrics
        self.files_service, self.role_rules = files_service, role_rules
        self.cluster = Cluster(
            self.volume,
            mount_path,
            pod_start_delay_s,
            metrics_window_s,
            replica_command=replica_command,
            replica_env=replica_env,
        )
        self.requests: list[tuple[str, str]] = []  # (method, path?query)
        self.used: set[tuple[str, str, str]] = (
            set()
        )  # (api group, resource, verb) allowed and served
        self.creates: dict[str, int] = {}  # job name -> POSTs that created it
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeKube:
        self.cluster.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.cluster.stop()

    def write_kubeconfig(
        self, path: Path, namespace: str = "gnn-bench", server: str | None = None
    ) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": server or self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def fail(
        self,
        method: str,
        pattern: str,
        status: int | str,
        times: int = 1,
        headers: dict[str, str] | None = None,
        details: dict[str, str] | None = None,
    ) -> None:
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

    def allowed(self, group: str, resource: str, verb: str, name: str | None) -> bool:
        """RBAC as the API server evaluates a Role's rules (no rules: everything allowed)."""
        if self.role_rules is None:
            return True
        return any(
            group in r.get("apiGroups", [])
            and resource in r.get("resources", [])
            and verb in r.get("verbs", [])
            and (not r.get("resourceNames") or name in r["resourceNames"])
            for r in self.role_rules
        )


def _handler_for(fake: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        # -- plumbing
        def _send(
            self,
            code: int,
            body: Any,
            content_type: str = "application/json",
            headers: dict[str, str] | None = None,
        ) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(
            self,
            code: int,
            reason: str,
            message: str,
            details: dict | None = None,
            headers: dict[str, str] | None = None,
        ) -> None:
            self._send(code, status_body(code, reason, message, details), headers=headers)

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null") if length else None
            fake.requests.append((method, self.path))
            fault = fake.take_fault(method, path)
            if fault is not None:
                if fault.status == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                reasons = {
                    403: "Forbidden",
                    404: "NotFound",
                    409: "AlreadyExists",
                    429: "TooManyRequests",
                    500: "InternalError",
                    503: "ServiceUnavailable",
                }
                return self._error(
                    int(fault.status),
                    reasons.get(int(fault.status), "Unknown"),
                    f"injected {fault.status}",
                    fault.details,
                    fault.headers,
                )
            found = route(method, path)
            if found is None:
                return self._error(
                    404, "NotFound", "the server could not find the requested resource"
                )
            group, resource, verb, args = found
            if (group == "kubeflow.org" and not fake.crd_installed) or (
                group == "metrics.k8s.io" and not fake.metrics
            ):
                return self._error(
                    404, "NotFound", "the server could not find the requested resource"
                )
            name = args.get("name")
            if not fake.allowed(group, resource, verb, name):
                return self._error(
                    403,
                    "Forbidden",
                    (
                        f'{resource}{"." + group if group else ""} "{name or ""}" is forbidden: '
                        f'User "system:serviceaccount:gnn-bench:gnn-bench-harness" cannot {verb} '
                        f'resource "{resource}" in API group "{group}" in the namespace '
                        f'"{args["ns"]}"'
                    ),
                    {"name": name or "", "group": group, "kind": resource},
                )
            fake.used.add((group, resource, verb))
            with fake.cluster.lock:
                self._route(group, resource, verb, args, query, body)

        # -- the resources
        def _route(
            self,
            group: str,
            resource: str,
            verb: str,
            args: dict[str, str],
            query: dict[str, list[str]],
            body: Any,
        ) -> None:
            ns, name, cluster = args["ns"], args.get("name"), fake.cluster
            if resource == "pytorchjobs":
                not_found = (
                    f'pytorchjobs.kubeflow.org "{name}" not found',
                    {"name": name, "group": "kubeflow.org", "kind": "pytorchjobs"},
                )
                if verb == "create":
                    name = body["metadata"]["name"]
                    if ns not in fake.namespaces:
                        return self._error(
                            404,
                            "NotFound",
                            f'namespaces "{ns}" not found',
                            {"name": ns, "kind": "namespaces"},
                        )
                    if (ns, name) in cluster.jobs:
                        return self._error(
                            409,
                            "AlreadyExists",
                            f'pytorchjobs.kubeflow.org "{name}" already exists',
                            {"name": name, "group": "kubeflow.org", "kind": "pytorchjobs"},
                        )
                    job = cluster.create(ns, body)
                    fake.creates[name] = fake.creates.get(name, 0) + 1
                    return self._send(201, cluster.job_json(job))
                job = cluster.jobs.get((ns, name))
                if job is None:
                    return self._error(404, "NotFound", *not_found)
                if verb == "delete":
                    cluster.delete(ns, name)
                    return self._send(200, status_body(200, "", "") | {"status": "Success"})
                return self._send(200, cluster.job_json(job))
            selector = dict(
                s.split("=", 1) for s in query.get("labelSelector", [""])[0].split(",") if "=" in s
            )
            pods = [
                (j, p)
                for (jns, _), j in cluster.jobs.items()
                if jns == ns
                for p in j.pods
                if all(p.labels.get(k) == v for k, v in selector.items())
            ]
            if resource == "pods" and verb == "delete":
                pod = cluster.delete_pod(ns, name)
                if pod is None:
                    return self._error(
                        404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"}
                    )
                return self._send(200, cluster.pod_json(pod.job, pod))
            if resource == "pods" and group == "":
                return self._send(
                    200,
                    {
                        "kind": "PodList",
                        "apiVersion": "v1",
                        "metadata": {},
                        "items": [cluster.pod_json(j, p) for j, p in pods],
                    },
                )
            if resource == "pods":  # metrics.k8s.io: what metrics-server scraped last
                items = [
                    p.metrics | {"metadata": {**p.metrics["metadata"], "namespace": ns}}
                    for _, p in pods
                    if p.metrics
                ]
                return self._send(
                    200,
                    {
                        "kind": "PodMetricsList",
                        "apiVersion": "metrics.k8s.io/v1beta1",
                        "metadata": {},
                        "items": items,
                    },
                )
            if resource == "pods/log":
                pod = next(
                    (p for j in cluster.jobs.values() for p in j.pods if p.name == name), None
                )
                if pod is None:
                    return self._error(
                        404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"}
                    )
                previous = query.get("previous", ["false"])[0] == "true"
                if previous and not pod.restarts:
                    return self._error(
                        400,
                        "BadRequest",
                        f'previous terminated container "pytorch" in pod "{name}" not found',
                    )
                log = pod.log_path(pod.restarts - 1 if previous else pod.restarts)
                lines = (
                    log.read_text(errors="replace").splitlines(keepends=True)
                    if log.exists()
                    else []
                )
                tail = int(query.get("tailLines", ["0"])[0] or 0)
                return self._send(
                    200, "".join(lines[-tail:] if tail else lines).encode(), "text/plain"
                )
            if resource == "services/proxy":
                if name != fake.files_service:
                    return self._error(
                        404,
                        "NotFound",
                        f'services "{name}" not found',
                        {"name": name, "kind": "services"},
                    )
                return self._serve_file(args["path"])
            self._error(404, "NotFound", "the server could not find the requested resource")

        def _serve_file(self, rel: str) -> None:
            """nginx with ``autoindex on; autoindex_format json;`` over the volume, read-only."""
            target = (fake.volume / rel).resolve()
            if fake.volume.resolve() not in (target, *target.parents):
                return self._send(403, b"<html>403 Forbidden</html>", "text/html")
            if rel.endswith("/") or rel == "":
                if not target.is_dir():
                    return self._send(404, b"<html>404 Not Found</html>", "text/html")
                listing = [
                    {
                        "name": p.name,
                        "type": "directory" if p.is_dir() else "file",
                        "mtime": "",
                        **({} if p.is_dir() else {"size": p.stat().st_size}),
                    }
                    for p in sorted(target.iterdir())
                ]
                return self._send(200, listing)
            if not target.is_file():
                return self._send(404, b"<html>404 Not Found</html>", "text/html")
            self._send(200, target.read_bytes(), "application/octet-stream")

    return Handler
