"""The kinds the fake API server serves (what ``kubectl api-resources`` lists for them)."""

from __future__ import annotations

from .store import Resource

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",))
NODES = Resource("", "v1", "nodes", "Node", namespaced=False, short_names=("no",))
PODS = Resource("", "v1", "pods", "Pod", short_names=("po",), categories=("all",),
                subresources=("log", "status"))
SERVICES = Resource("", "v1", "services", "Service", short_names=("svc",), categories=("all",),
                    subresources=("proxy", "status"))
EVENTS = Resource("", "v1", "events", "Event", short_names=("ev",))
# The v1.9.4 CRD (manifests/base/crds/kubeflow.org_pytorchjobs.yaml): no short names, the
# status and scale subresources.
PYTORCHJOBS = Resource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob",
                       subresources=("status", "scale"))
# metrics-server's aggregated API: read-only, not stored.
POD_METRICS = Resource("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", verbs=("get", "list"))

CORE = (NAMESPACES, NODES, PODS, SERVICES, EVENTS)
