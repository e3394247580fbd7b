"""The job kinds the Kubernetes backends submit, as the shared client and readers need them.

A :class:`JobKind` says where the kind is served, how its pods are found (the label its
controller puts on them), which container trains, how a pod maps to a worker (``rank<n>``),
and how to install its controller when the cluster does not serve it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.backends.k8s.manifests import (
    CONTAINER,
    GROUP,
    JOB_NAME_LABEL,
    KIND,
    PLURAL,
    VERSION,
    worker_of_pod,
)


@dataclass(frozen=True)
class JobKind:
    group: str
    version: str
    plural: str
    kind: str
    container: str  # the training container (logs, exit codes, memory limit)
    name_label: str  # the label whose value is the job's name on all its pods
    controller: str  # what serves the kind, for messages ("the Kubeflow training operator")
    install: str  # the command that installs it
    worker: Callable[[dict[str, Any], str], str | None]  # (pod metadata, job name) -> rank<n>

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def pod_selector(self, job: str) -> str:
        return f"{self.name_label}={job}"


PYTORCHJOB = JobKind(
    GROUP, VERSION, PLURAL, KIND, CONTAINER, JOB_NAME_LABEL,
    "the Kubeflow training operator", "kubectl apply --server-side -k k8s/operator",
    lambda metadata, job: worker_of_pod(str(metadata.get("name", "")), job),
)
