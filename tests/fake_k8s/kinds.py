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

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", short_names=("cm",))
# batch/v1 Jobs (JobSet's children): the status subresource; kubectl's short name.
JOBS = Resource("batch", "v1", "jobs", "Job", categories=("all",), subresources=("status",))
# JobSet v0.12.0 (config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml): group
# jobset.x-k8s.io (its labels are jobset.sigs.k8s.io/...), the status subresource.
JOBSETS = Resource("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet", subresources=("status",))
# Kubeflow Trainer v2.3.0 (manifests/base/crds/trainer.kubeflow.org_*.yaml): no short names;
# TrainJob has the status subresource, the runtimes none; ClusterTrainingRuntime is cluster-wide.
TRAINJOBS = Resource("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob",
                     subresources=("status",))
TRAININGRUNTIMES = Resource("trainer.kubeflow.org", "v1alpha1", "trainingruntimes",
                            "TrainingRuntime")
CLUSTERTRAININGRUNTIMES = Resource("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes",
                                   "ClusterTrainingRuntime", namespaced=False)
CORE = (NAMESPACES, NODES, PODS, SERVICES, EVENTS, CONFIGMAPS)
