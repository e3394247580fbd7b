"""Kubernetes API errors as one line that names the fix, and retries of the transient ones.

The client raises :class:`K8sError` for everything a user must act on (the training operator
missing, RBAC, a missing namespace, an unreachable cluster, bad credentials). Transient
failures (429, 5xx, connection resets and timeouts) are retried with exponential backoff
first, honouring ``Retry-After``; only when they persist do they become a ``K8sError``.
"""

from __future__ import annotations

import http.client
import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

if TYPE_CHECKING:
    from bench.backends.k8s.kinds import JobKind

T = TypeVar("T")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_DELAY_S = 30.0
_CONNECTION_ERRORS = (
    urllib3.exceptions.ProtocolError,  # connection reset or aborted mid-request
    urllib3.exceptions.TimeoutError,  # connect and read timeouts
    urllib3.exceptions.NewConnectionError,  # refused, DNS failure
    urllib3.exceptions.MaxRetryError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


class K8sError(RuntimeError):
    """A Kubernetes problem the user has to fix; the message is one line that names the fix."""


class NotInstalled(K8sError):
    """The cluster does not serve the job's kind (no training operator, no Trainer v2)."""


class Conflict(K8sError):
    """The object already exists (HTTP 409)."""


class MetricsUnavailable(K8sError):
    """metrics.k8s.io is not served (no metrics-server) or not readable."""


def status_of(exc: BaseException) -> dict[str, Any]:
    """The API's ``Status`` object of an ApiException ({} when the body is not one)."""
    body = getattr(exc, "body", None)
    try:
        data = json.loads(body) if body else {}
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def message_of(exc: BaseException) -> str:
    """The API's message of an error, on one line."""
    if isinstance(exc, ApiException):
        text = status_of(exc).get("message") or (exc.body or "").strip() or exc.reason or ""
    else:
        text = str(exc)
    return " ".join(str(text).split())[:300]


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: throttling, server errors and broken connections."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUSES or exc.status == 0
    return isinstance(exc, _CONNECTION_ERRORS)


def is_unreachable(exc: BaseException) -> bool:
    """No connection could be made at all (refused, DNS, connect timeout)."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return is_unreachable(exc.reason)
    return isinstance(
        exc,
        urllib3.exceptions.NewConnectionError
        | urllib3.exceptions.ConnectTimeoutError
        | ConnectionRefusedError,
    )


def retry_delay(exc: BaseException, attempt: int, backoff_s: float) -> float:
    """Seconds to wait before the next attempt: ``Retry-After`` when given, else exponential."""
    headers = getattr(exc, "headers", None) or {}
    retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
    if retry_after:
        try:
            return min(MAX_DELAY_S, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return min(MAX_DELAY_S, backoff_s * 2**attempt) * random.uniform(0.75, 1.0)


def with_retries(
    call: Callable[[], T],
    attempts: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried on transient errors; the last error is raised when all attempts fail."""
    for attempt in range(max(1, attempts)):
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc) or attempt == max(1, attempts) - 1:
                raise
            sleep(retry_delay(exc, attempt, backoff_s))
    raise AssertionError("unreachable")  # pragma: no cover


def explain(
    exc: BaseException, what: str, namespace: str, host: str, attempts: int = 1,
    kind: JobKind | None = None,
) -> K8sError:
    """One line for an error met while trying to ``what`` (e.g. "create PyTorchJob x")."""
    if isinstance(exc, K8sError):
        return exc
    if not isinstance(exc, ApiException):
        if is_unreachable(exc):
            return K8sError(
                f"cannot reach the Kubernetes API server at {host} ({_reason(exc)}): check that "
                "the cluster is running and your kubeconfig points at it (`kubectl cluster-info`; "
                "backend.context, backend.kubeconfig)"
            )
        return K8sError(
            f"lost the connection to the Kubernetes API server at {host} while trying to {what} "
            f"({_reason(exc)}; {attempts} attempts): check the network and `kubectl cluster-info`"
        )
    status, message = exc.status, message_of(exc)
    details = status_of(exc).get("details") or {}
    if status == 404 and details.get("kind") == "namespaces":
        return K8sError(
            f"namespace {namespace!r} does not exist: create it and the harness's resources with "
            "`kubectl apply -k k8s/base` (or set backend.namespace)"
        )
    if status == 404 and details.get("kind") == "services":
        return K8sError(
            f"service {details.get('name')!r} does not exist in namespace {namespace!r}: deploy "
            "the read-only file server with `kubectl apply -k k8s/base` "
            "(or set backend.files_service, backend.files_namespace)"
        )
    if kind is None:
        from bench.backends.k8s.kinds import PYTORCHJOB

        kind = PYTORCHJOB
    if status == 404 and details.get("kind") in (None, "") and kind.plural in what:
        return NotInstalled(
            f"{kind.controller} is not installed: the cluster at {host} does not "
            f"serve {kind.plural}.{kind.group}/{kind.version}; install it with "
            f"`{kind.install}` (docs/gke.md)"
        )
    if status == 403:
        return K8sError(
            f"forbidden to {what} in namespace {namespace!r} ({message}): apply the harness's Role "
            "with `kubectl apply -k k8s/base` and run as a user or ServiceAccount bound to it "
            "(docs/gke.md, section RBAC)"
        )
    if status == 401:
        return K8sError(
            f"the cluster at {host} rejected the credentials (401 Unauthorized): refresh them, "
            "e.g. `gcloud container clusters get-credentials <cluster> --location <region>`"
        )
    if status == 409:
        return Conflict(f"cannot {what}: it already exists ({message})")
    if status == 422:
        return K8sError(f"the cluster rejected the request to {what} as invalid: {message}")
    if status in TRANSIENT_STATUSES:
        return K8sError(
            f"the Kubernetes API kept failing while trying to {what}: {status} {exc.reason} after "
            f"{attempts} attempts ({message}); try again later"
        )
    return K8sError(f"Kubernetes API error {status} {exc.reason} while trying to {what}: {message}")


def _reason(exc: BaseException) -> str:
    """The innermost cause of a connection error, briefly."""
    while isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    text = str(exc)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "timed out",
        "Connection reset",
        "Remote end closed connection",
    ):
        if marker.lower() in text.lower():
            return marker.lower()
    return " ".join(text.split())[:120] or type(exc).__name__
