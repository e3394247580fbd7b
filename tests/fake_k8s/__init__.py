"""A fake Kubernetes cluster for the k8s backend's tests, rebuilt from the behaviour of the real
parts (facts only; no code or prose copied): real clients talk to it unchanged, and the tests
run them (tests/test_k8s_faithful.py: ``kubectl`` get/describe/logs/delete, Kubeflow's
``TrainingClient``; the harness through the official ``kubernetes`` client).

==============  ===========================================================  ====================
module          stands for                                                   behaviours tabled
==============  ===========================================================  ====================
server.py       kube-apiserver's HTTP API: discovery, REST verbs, watch,     (module docstring)
                pods/log, service proxy, metrics.k8s.io, Tables, RBAC
store.py        the API server's storage semantics: uids, resourceVersion,   store.py
                selectors, deletion, grace, finalizers, preconditions
cluster.py      the garbage collector, Events, the controller loop           cluster.py
admission.py    Pod Security admission (baseline / restricted)               admission.py
operator.py     Kubeflow training operator v1.9.4, PyTorchJob controller     operator.py
trainer.py      Kubeflow Trainer v2.3.0: TrainJob controller, runtime        trainer.py
                framework (torch, JobSet plugins), its admission webhook
jobset.py       JobSet v0.12.0 controller and defaulting webhook             jobset.py
jobs.py         kube-controller-manager's batch/v1 Job controller (Indexed)  jobs.py
kubelet.py      kube-scheduler, kubelet, metrics-server                      kubelet.py
==============  ===========================================================  ====================

Durations the kubelet takes from Kubernetes (restart and image pull back-off, grace periods,
the init container's retry) are the real ones times ``time_scale`` (default 0.1, never 0).
Kinds are a ``Resource`` in kinds.py served by a controller in ``Cluster.controllers``
(operator.py, trainer.py, jobset.py, jobs.py, in that order each tick); the API server lists a
controller's kinds while it is installed. By default both the v1 operator and Trainer v2 are,
with the project's TrainingRuntime applied (``runtimes``; ``FakeKube.apply_runtime``).
"""

from .cluster import LAUNCHER_VARS
from .server import (
    PROJECT_INIT_TEMPLATE,
    PROJECT_RUNTIME,
    STOCK_RUNTIME,
    TRAINJOB_RBAC,
    FakeKube,
    kubeflow_dir,
    load_role_rules,
    project_role_rules,
)

__all__ = [
    "LAUNCHER_VARS", "PROJECT_INIT_TEMPLATE", "PROJECT_RUNTIME", "STOCK_RUNTIME", "TRAINJOB_RBAC",
    "FakeKube", "kubeflow_dir", "load_role_rules", "project_role_rules",
]
