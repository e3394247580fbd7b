"""Kubeflow Trainer v2 backend: each trial is a ``trainer.kubeflow.org/v1alpha1`` TrainJob.

The TrainJob names the project's training runtime (``k8s/trainer/runtime``), asks for
``workers`` nodes with one process each, and runs the same trainer as every backend under
``torchrun`` (``python -m trainer.launch``, which keeps the worker's exit code). Trainer v2.3
turns it into a JobSet, JobSet into one indexed Job, the Job into ``workers`` pods.

* :mod:`.config` its keys (``backend=trainjob``), registered with Hydra;
* :mod:`.manifests` pure builders (trial spec -> TrainJob, with the ``kubeflow-trainer-api``
  models);
* :mod:`.handle` the :class:`~bench.backends.base.TrialHandle` and the backend.

Everything else (client, errors, events fetch, PodMetrics, the shared handle) is the Kubernetes
backend's (:mod:`bench.backends.k8s`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainJobBackend", "TrainJobConfig", "TrainJobHandle"]


def __getattr__(name: str) -> Any:
    """Imported on first use: registering ``backend/trainjob`` must not import the clients."""
    if name == "TrainJobConfig":
        from bench.backends.trainjob.config import TrainJobConfig

        return TrainJobConfig
    if name in ("TrainJobBackend", "TrainJobHandle"):
        from bench.backends.trainjob import handle

        return getattr(handle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
