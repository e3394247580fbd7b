"""The backend boundary: a trial spec goes in, a handle comes out.

Everything a sweep needs from a backend is on :class:`TrialHandle`: poll its state, wait for
it, tell which workers to sample, fetch its event files and logs, cancel it. The local backend
(torchrun on this machine) and the Kubernetes backend (a PyTorchJob) implement it; collectors,
the results store and the report only ever see this interface.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class JobState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    RESTARTING = "restarting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass
class TrialSpec:
    """Everything a backend needs to start one trial, and nothing else."""

    trial_id: str  # unique in its sweep, readable, DNS-1123 safe
    sweep_name: str
    workers: int
    threads_per_worker: int
    trainer_overrides: list[str]  # `python -m trainer <these>`; run_dir and data_root included
    trial_dir: Path  # results/<sweep>/<trial>/: logs and fetched files go here
    run_dir: str  # where the trainer writes (a path the workers see)
    backoff_limit: int = 3
    timeout_s: float = 3600.0
    env: dict[str, str] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobStatus:
    state: JobState
    restarts: int = 0
    reason: str | None = None  # why it failed or was cancelled
    submitted_at: float | None = None  # unix seconds
    finished_at: float | None = None


class TrialHandle(Protocol):
    spec: TrialSpec

    def poll(self) -> JobStatus:
        """The current state; cheap, never blocks."""

    def workers(self) -> dict[str, int]:
        """Worker name -> pid to sample locally ({} where sampling happens elsewhere)."""

    def fetch_events(self, dest: Path) -> None:
        """Copy the trial's TensorBoard event files (and summary.json) under ``dest``."""

    def logs(self, tail_lines: int = 50) -> str:
        """The tail of the workers' combined log."""

    def cancel(self, reason: str) -> None:
        """Stop the trial; its state becomes CANCELLED with ``reason``."""

    # Fault injection (bench/faults.py)
    def checkpointed_epoch(self) -> int:
        """The last epoch the trainer has checkpointed (0: none yet); cheap, never blocks long."""

    def kill_worker(self, rank: int) -> bool:
        """Kill rank ``rank``'s worker as a fault would; False if it is not running right now."""

    # Optional: ``resource_sampler(interval_s)`` returning an object with the ResourceSampler
    # interface (start, stop, summary, write_csv) for backends that measure elsewhere
    # (Kubernetes: PodMetrics). Without it the harness samples ``workers()`` with psutil.


class Backend(Protocol):
    name: str

    def submit(self, spec: TrialSpec) -> TrialHandle: ...


def wait(handle: TrialHandle, timeout_s: float, poll_interval_s: float,
         on_poll: Callable[[JobStatus], None] | None = None) -> JobStatus:
    """Poll until the trial finishes; cancel it and report FAILED after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = handle.poll()
        if on_poll is not None:
            on_poll(status)
        if status.state.finished:
            return status
        if time.monotonic() > deadline:
            handle.cancel(f"timed out after {timeout_s:.0f} s (backend.timeout_s)")
            status = handle.poll()
            status.state = JobState.FAILED
            return status
        time.sleep(poll_interval_s)
