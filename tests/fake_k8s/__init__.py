"""A fake Kubernetes cluster for the k8s backend's tests: an API server that real clients
(the ``kubernetes`` client, ``kubectl``, Kubeflow's ``TrainingClient``) talk to, the Kubeflow
training operator v1.9.4's PyTorchJob controller, the scheduler and kubelets running pods as
local processes. See store.py, operator.py, kubelet.py, cluster.py and server.py."""

from .cluster import LAUNCHER_VARS
from .server import (
    PROJECT_INIT_TEMPLATE,
    FakeKube,
    kubeflow_dir,
    load_role_rules,
    project_role_rules,
)

__all__ = [
    "LAUNCHER_VARS", "PROJECT_INIT_TEMPLATE", "FakeKube", "kubeflow_dir", "load_role_rules",
    "project_role_rules",
]
