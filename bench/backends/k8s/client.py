"""The few Kubernetes API calls the harness makes, through the official ``kubernetes`` client.

Every call is retried on transient errors and turned into a one-line :class:`K8sError`
otherwise. These are exactly the verbs of the harness's Role in ``k8s/base/rbac.yaml``:

=============================  ================================  ============================
resource                       verb                              used for
=============================  ================================  ============================
pytorchjobs (kubeflow.org)     create, get, delete               submit, follow, clean up
pods                           list                              restarts, replica states
pods                           delete                            fault injection (``fault.*``)
pods/log                       get                               log tails
events                         list                              why no pod was created
pods (metrics.k8s.io)          list                              CPU and memory samples
services/proxy                 get (only ``files_service``, in   fetch event files
                               ``files_namespace``)
=============================  ================================  ============================

Pods are the job's by their controller ownerReference (the job's uid), not by name or label
alone: a re-run's new job has the old one's name, and the old job's pods may still be
terminating. Jobs are deleted with ``Foreground`` propagation, so a deleted job is gone only
once its pods are.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from bench.backends.k8s.config import ClusterConfig
from bench.backends.k8s.errors import (
    Conflict,
    K8sError,
    MetricsUnavailable,
    explain,
    is_transient,
    with_retries,
)
from bench.backends.k8s.kinds import PYTORCHJOB, JobKind

T = TypeVar("T")
METRICS_GROUP, METRICS_VERSION = "metrics.k8s.io", "v1beta1"


def load_configuration(opts: ClusterConfig) -> k8s.Configuration:
    """Client configuration from the kubeconfig (file and context from ``opts``), or the pod's
    in-cluster service account when there is no kubeconfig and the harness runs in a pod."""
    configuration = k8s.Configuration()
    config_file = opts.kubeconfig or os.environ.get("KUBECONFIG") or None
    default_file = os.path.expanduser("~/.kube/config")
    in_cluster = (
        not config_file
        and not opts.context
        and not os.path.exists(default_file)
        and "KUBERNETES_SERVICE_HOST" in os.environ
    )
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            k8s_config.load_kube_config(
                config_file=config_file,
                context=opts.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError) as exc:
        raise K8sError(
            f"no usable Kubernetes configuration ({' '.join(str(exc).split())[:200]}): run "
            "`gcloud container clusters get-credentials <cluster> --location <region>`, or set "
            "backend.kubeconfig / backend.context"
        ) from exc
    configuration.retries = False  # we retry ourselves, with backoff, and see every error
    configuration.safe_chars_for_path_param = "/"  # service proxy paths keep their slashes
    return configuration


class KubeClient:
    """Typed, retried wrappers of the API calls; results are plain dicts as the API sends them.
    ``kind`` is the job kind the job verbs act on (PyTorchJob unless told)."""

    def __init__(self, opts: ClusterConfig, sleep: Callable[[float], None] = time.sleep,
                 kind: JobKind = PYTORCHJOB):
        self.opts = opts
        self.kind = kind
        self.namespace = opts.namespace
        self._sleep = sleep
        self._connect()

    def _connect(self) -> None:
        configuration = load_configuration(self.opts)
        self.host = configuration.host
        self.api = k8s.ApiClient(configuration)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)

    @property
    def _timeout(self) -> tuple[float, float]:
        return (min(10.0, self.opts.request_timeout_s), self.opts.request_timeout_s)

    def call(self, what: str, fn: Callable[[], T], attempts: int | None = None,
             namespace: str | None = None) -> T:
        """``fn()`` with retries; errors become a K8sError naming the fix (``namespace``: where
        the call goes, when not ``backend.namespace``).

        A 401 reloads the credentials once (an exec plugin's token may have expired).
        """
        attempts = attempts or self.opts.api_retries
        retry = lambda: with_retries(fn, attempts, self.opts.api_backoff_s, self._sleep)  # noqa: E731
        try:
            try:
                return retry()
            except ApiException as exc:
                if exc.status != 401:
                    raise
                self._connect()
                return retry()
        except Exception as exc:
            raise explain(
                exc, what, namespace or self.namespace, self.host,
                attempts if is_transient(exc) else 1, self.kind
            ) from exc

    # -- the jobs (PyTorchJobs or TrainJobs: self.kind)
    def get_job(self, name: str) -> dict[str, Any] | None:
        """The job, or None when there is none of that name."""
        k = self.kind
        return self.get_object(k.group, k.version, k.plural, name)

    def get_object(self, group: str, version: str, plural: str, name: str,
                   namespaced: bool = True) -> dict[str, Any] | None:
        """A custom object of the jobs' namespace (or the cluster's), None when absent."""

        def get() -> dict[str, Any] | None:
            try:
                if not namespaced:
                    return self.custom.get_cluster_custom_object(
                        group, version, plural, name, _request_timeout=self._timeout)
                return self.custom.get_namespaced_custom_object(
                    group, version, self.namespace, plural, name, _request_timeout=self._timeout
                )
            except ApiException as exc:
                if exc.status == 404 and _not_found_kind(exc) == plural:
                    return None
                raise

        return self.call(f"get {plural} {name}", get)

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the job; raises Conflict when one of that name exists."""
        name, k = manifest["metadata"]["name"], self.kind
        return self.call(
            f"create {k.plural} {name}",
            lambda: self.custom.create_namespaced_custom_object(
                k.group, k.version, self.namespace, k.plural, manifest,
                _request_timeout=self._timeout
            ),
        )

    def delete_job(self, name: str) -> bool:
        """Delete the job and (by garbage collection, Foreground: the job stays until its pods
        are gone) its pods; False when it was not there."""

        k = self.kind

        def delete() -> bool:
            try:
                self.custom.delete_namespaced_custom_object(
                    k.group,
                    k.version,
                    self.namespace,
                    k.plural,
                    name,
                    propagation_policy="Foreground",
                    _request_timeout=self._timeout,
                )
                return True
            except ApiException as exc:
                if exc.status == 404 and _not_found_kind(exc) == k.plural:
                    return False
                raise

        return self.call(f"delete {k.plural} {name}", delete)

    def wait_deleted(self, name: str, timeout_s: float = 120.0) -> None:
        """Wait until a deleted job is gone (its finalizers done), so the name can be reused."""
        deadline = time.monotonic() + timeout_s
        while self.get_job(name) is not None:
            if time.monotonic() > deadline:
                raise K8sError(
                    f"{self.kind.kind} {name} is still being deleted after {timeout_s:.0f} s: "
                    f"delete it with `kubectl -n {self.namespace} delete "
                    f"{self.kind.kind.lower()} {name}`"
                )
            self._sleep(min(2.0, self.opts.poll_interval_s))

    # -- pods
    def list_pods(self, job: str, uid: str | None = None,
                  selector: str | None = None) -> list[dict[str, Any]]:
        """The job's pods: the kind's name label (``training.kubeflow.org/job-name``) and, when
        ``uid`` is given, a controller ownerReference to the object of that uid (as the operator
        claims its pods; a TrainJob's pods are their Job's). ``selector``: more labels."""
        labels = self.kind.pod_selector(job) + (f",{selector}" if selector else "")
        response = self.call(
            f"list pods of {job}",
            lambda: self.core.list_namespaced_pod(
                self.namespace,
                label_selector=labels,
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
        )
        pods = json.loads(response.data).get("items") or []
        if uid is None:
            return pods
        return [p for p in pods if any(
            r.get("controller") and r.get("uid") == uid
            for r in (p.get("metadata") or {}).get("ownerReferences") or [])]

    def delete_pod(self, pod: str, uid: str | None = None) -> bool:
        """Delete a pod at once (no grace period: its processes get SIGKILL), as a fault does;
        False when there is no such pod (or, with ``uid``, when the pod of that name is
        another one). The training operator creates it again."""

        def delete() -> bool:
            try:
                self.core.delete_namespaced_pod(
                    pod,
                    self.namespace,
                    grace_period_seconds=0,
                    body=k8s.V1DeleteOptions(
                        grace_period_seconds=0,
                        preconditions=k8s.V1Preconditions(uid=uid) if uid else None,
                    ),
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
                return True
            except ApiException as exc:
                if exc.status == 404 and _not_found_kind(exc) == "pods":
                    return False
                if exc.status == 409 and uid:  # precondition: the pod of that name is another
                    return False
                raise

        return self.call(f"delete pods {pod}", delete)

    def job_events(self, job: str, uid: str | None = None,
                   kind: str | None = None) -> list[dict[str, Any]]:
        """The Events about the job (e.g. the operator's ``FailedCreatePod``); ``kind``: about
        an object of that kind and name instead (e.g. a TrainJob's ``Job``)."""
        selector = f"involvedObject.kind={kind or self.kind.kind},involvedObject.name={job}"
        if uid:
            selector += f",involvedObject.uid={uid}"
        response = self.call(
            f"list events of {job}",
            lambda: self.core.list_namespaced_event(
                self.namespace,
                field_selector=selector,
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
            attempts=min(3, self.opts.api_retries),
        )
        return json.loads(response.data).get("items") or []

    def pod_log(self, pod: str, tail_lines: int, previous: bool = False) -> str:
        """The last ``tail_lines`` lines of a pod's training container ('' when there are none)."""

        def read() -> str:
            try:
                response = self.core.read_namespaced_pod_log(
                    pod,
                    self.namespace,
                    container=self.kind.container,
                    tail_lines=tail_lines,
                    previous=previous,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            except ApiException as exc:
                if exc.status in (400, 404):  # not started yet, no previous container, gone
                    return ""
                raise
            return response.data.decode("utf-8", errors="replace")

        return self.call(f"get pods/log of {pod}", read, attempts=min(3, self.opts.api_retries))

    # -- metrics.k8s.io
    def pod_metrics(self, job: str) -> list[dict[str, Any]]:
        """PodMetrics of the job's pods; raises MetricsUnavailable without metrics-server."""

        def read() -> list[dict[str, Any]]:
            data = self.custom.list_namespaced_custom_object(
                METRICS_GROUP,
                METRICS_VERSION,
                self.namespace,
                "pods",
                label_selector=self.kind.pod_selector(job),
                _request_timeout=self._timeout,
            )
            return data.get("items") or []

        try:
            return self.call("list pods.metrics.k8s.io", read, attempts=2)
        except K8sError as exc:
            cause = exc.__cause__
            status = getattr(cause, "status", None)
            if status in (404, 503):
                raise MetricsUnavailable(
                    f"metrics.k8s.io is not available on the cluster at {self.host} "
                    f"({status}: is metrics-server installed and ready? GKE has it by default; "
                    "elsewhere install kubernetes-sigs/metrics-server): no CPU/memory series"
                ) from exc
            if status == 403:
                raise MetricsUnavailable(f"{exc} (no CPU/memory series)") from exc
            raise

    # -- files on the shared volume, through the API server's service proxy
    def proxy_get(self, path: str) -> bytes | None:
        """GET ``path`` from the read-only file server (``files_service`` in
        ``files_namespace``); None when it is not there (404)."""
        service, namespace = self.opts.files_service, self.opts.files_namespace

        def get() -> bytes | None:
            try:
                response = self.core.connect_get_namespaced_service_proxy_with_path(
                    service,
                    namespace,
                    path,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            except ApiException as exc:
                if exc.status == 404 and not _not_found_kind(exc):  # the file server's own 404
                    return None
                raise
            return response.data

        return self.call(f"get services/proxy {service}/{path}", get, namespace=namespace)


def _not_found_kind(exc: ApiException) -> str | None:
    """``details.kind`` of a 404 Status: which kind of object the API server did not find."""
    try:
        return (json.loads(exc.body or "{}").get("details") or {}).get("kind")
    except (TypeError, ValueError, AttributeError):
        return None


__all__ = ["Conflict", "KubeClient", "K8sError", "MetricsUnavailable", "load_configuration"]
