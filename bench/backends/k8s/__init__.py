"""Kubernetes backend: each trial is a Kubeflow ``kubeflow.org/v1`` PyTorchJob.

Split by responsibility:

* :mod:`.config` its keys (``backend=k8s``), registered with Hydra;
* :mod:`.manifests` pure builders (trial spec -> PyTorchJob dict, names, labels, paths);
* :mod:`.errors` one-line errors that name the fix, retries with backoff;
* :mod:`.client` the API calls (official ``kubernetes`` client), one per RBAC verb;
* :mod:`.follow` reading job conditions and pods (pure);
* :mod:`.handle` the :class:`~bench.backends.base.TrialHandle` and the backend;
* :mod:`.metrics` CPU and memory from ``metrics.k8s.io``;
* :mod:`.fetch` event files from the shared volume through the API server's service proxy.

The cluster side (operator, RBAC, NFS volume, file server, TensorBoard) is ``k8s/``; the
step-by-step guide is ``docs/gke.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DryRunHandle", "K8sBackend", "K8sConfig", "K8sHandle"]


def __getattr__(name: str) -> Any:
    """The backend's classes, imported on first use: registering ``backend/k8s`` (which imports
    :mod:`.config`) must not import the Kubernetes client."""
    if name == "K8sConfig":
        from bench.backends.k8s.config import K8sConfig

        return K8sConfig
    if name in ("DryRunHandle", "K8sBackend", "K8sHandle"):
        from bench.backends.k8s import handle

        return getattr(handle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
