"""CPU and memory per worker from ``metrics.k8s.io`` PodMetrics.

A :class:`~bench.sampling.SampleSource` for the shared :class:`~bench.sampling.Sampler`, as
the local backend's psutil process trees are: one sample per worker (``rank<n>``) and tick.
Differences that come from the API, not from us:

* ``cpu_cores`` is metrics-server's average over its ``window`` (usually 10-30 s), so samples
  are taken no faster than that window, and a window already seen is not counted twice. The
  first sample of a worker has a value (psutil's has none).
* ``rss_mib`` holds the container's working set (what the kubelet uses for evictions), the
  closest the API has to RSS.

Without metrics-server the sampler reports that once and records nothing; the trial goes on.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from bench.backends.k8s.client import KubeClient
from bench.backends.k8s.errors import K8sError, MetricsUnavailable
from bench.sampling import ResourceSample, Sampler

logger = logging.getLogger(__name__)

_MIB = 2**20
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """Seconds of a Go duration as the API writes ``window`` (``30s``, ``1m0s``, ``10.5s``)."""
    if not text:
        return None
    parts = _DURATION_PART.findall(str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text).lstrip("+"):
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def usage(item: dict[str, Any]) -> tuple[float, float]:
    """(CPU cores, memory MiB) of one PodMetrics, summed over its containers."""
    containers = item.get("containers") or []
    cpu = sum(parse_quantity((c.get("usage") or {}).get("cpu", "0")) for c in containers)
    memory = sum(parse_quantity((c.get("usage") or {}).get("memory", "0")) for c in containers)
    return float(cpu), float(memory) / _MIB


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class PodMetrics:
    """The PodMetrics of one job's pods, one sample per worker and new window."""

    def __init__(self, client: KubeClient, job: str, warn: Callable[[str], None] = _warn):
        self._client, self._job, self.warn = client, job, warn
        self._window_seen: dict[str, str] = {}  # worker -> timestamp of its last sample
        self.window_s: float | None = None
        self.min_interval_s = 0.0  # the window, once seen: no faster than the API
        self.problem: str | None = None

    def read(self, t: float) -> list[ResourceSample]:
        if self.problem is not None:
            return []
        try:
            items = self._client.pod_metrics(self._job)
        except MetricsUnavailable as exc:
            self.problem = str(exc)
            self.warn(f"{self._job}: {exc}")
            return []
        except K8sError as exc:  # a passing API problem: skip this tick
            logger.warning("PodMetrics of %s: %s", self._job, exc)
            return []
        samples = []
        for item in items:
            worker = self._client.kind.worker(item.get("metadata") or {}, self._job)
            if worker is None:
                continue
            window = parse_duration(item.get("window"))
            if window:
                self.window_s = self.min_interval_s = window
            stamp = str(item.get("timestamp"))
            if self._window_seen.get(worker) == stamp:
                continue  # the same window again: not a new measurement
            self._window_seen[worker] = stamp
            cpu, memory = usage(item)
            samples.append(ResourceSample(t=t, worker=worker, cpu_cores=cpu, rss_mib=memory))
        return sorted(samples, key=lambda s: s.worker)


def pod_metrics_sampler(client: KubeClient, job: str, interval_s: float) -> Sampler:
    return Sampler(PodMetrics(client, job), interval_s)
