"""A small fake Kubernetes API server with a Kubeflow training operator that runs replicas as
local processes (see server.py and cluster.py)."""

from .cluster import LAUNCHER_VARS
from .server import FakeKube, load_role_rules

__all__ = ["LAUNCHER_VARS", "FakeKube", "load_role_rules"]
