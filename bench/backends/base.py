"""The backend boundary: a backend's config, the trial spec it plans, the handle it returns.

A backend is three things, as Hydra's launcher plugins are (a config dataclass, a thin class,
the work underneath):

* its config, a subclass of :class:`BackendConfig` registered in Hydra's ``backend`` group
  (``bench/backends/<name>/config.py``): every ``backend.*`` key and its check;
* a thin :class:`Backend` class (named by the config's ``_target_``) that plans a trial into a
  :class:`TrialSpec` (where the workers write and read, their threads and cores) and submits it;
* the :class:`TrialHandle` of a running trial: everything the harness asks of it.

The harness (``bench/trial.py``), the fault injector and the report only ever see these.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from omegaconf import MISSING

from bench.sampling import Sampler
from rundir import CheckpointInfo
from trainer.config import ConfigError, overrides_for, positive

if TYPE_CHECKING:
    from bench.config import Trial


@dataclass
class BackendConfig:
    """The keys every backend has (``backend.*``); each backend's config extends it."""

    _target_: str = MISSING  # the Backend class, "module.Class" (as Hydra's launcher configs)
    name: str = MISSING  # the option of the backend group: backend=<name>
    backoff_limit: int = 3  # restarts allowed (torchrun --max-restarts; runPolicy.backoffLimit)
    sample_interval_s: float = 1.0  # resource sampling period
    poll_interval_s: float = 0.5  # how often the harness looks at a running trial
    timeout_s: float = 3600.0  # a trial running longer is cancelled and recorded as failed
    max_parallel: int = 1  # trials run at once by hydra/launcher=bench_parallel (1: one by one)

    def validate(self) -> None:
        """Range checks typing cannot express; raises ConfigError naming the key and the fix."""
        if self.backoff_limit < 0:
            raise ConfigError(f"backend.backoff_limit={self.backoff_limit} must be >= 0")
        for key, example in (("sample_interval_s", 1), ("poll_interval_s", 0.5),
                             ("timeout_s", 3600)):
            if getattr(self, key) <= 0:
                raise ConfigError(f"backend.{key}={getattr(self, key)} is invalid: it must be > 0 "
                                  f"(e.g. backend.{key}={example})")
        positive("backend.max_parallel", self.max_parallel, "e.g. backend.max_parallel=2")

    def check_fault_plan(self, workers: int, count: int) -> None:
        """Refuse (ConfigError) a plan of ``count`` injected faults this backend's restart budget
        cannot survive. By default none is refused: the trial fails when the budget runs out and
        says so (bench/faults.py)."""


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
    """Everything a backend needs to start one trial, and nothing else; built once, by
    :meth:`Backend.plan`."""

    trial_id: str  # unique in its sweep, readable, DNS-1123 safe
    config_key: str  # the hash of what defines the trial's numbers
    sweep_name: str
    workers: int
    epochs: int
    trial_dir: Path  # results/<sweep>/<trial>/: logs and collected files go here
    run_dir: str  # where the trainer writes (a path the workers see)
    threads_per_worker: int
    cores: float  # cores the trial may use (local: this machine's; k8s: every pod's CPU)
    trainer_overrides: list[str]  # `python -m trainer <these>`; run_dir and data_root included
    backend: BackendConfig
    redo: bool = False  # replace, never follow, what an earlier run of the trial left
    env: dict[str, str] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)  # the placed slice the overrides say

    @property
    def backoff_limit(self) -> int:
        return self.backend.backoff_limit

    @property
    def timeout_s(self) -> float:
        return self.backend.timeout_s

    @classmethod
    def build(cls, trial: Trial, backend: BackendConfig, *, run_dir: str, data_root: str,
              threads: int, cores: float) -> TrialSpec:
        """The spec of ``trial`` once a backend has placed it: the workers write to ``run_dir``,
        read ``data_root`` and run ``threads`` threads each."""
        trainer = trial.trainer_slice(run_dir=run_dir, data_root=data_root, threads=threads)
        return cls(
            trial_id=trial.trial_id,
            config_key=trial.config_key,
            sweep_name=trial.sweep_name,
            workers=trial.workers,
            epochs=trial.epochs,
            trial_dir=trial.trial_dir,
            run_dir=run_dir,
            threads_per_worker=threads,
            cores=cores,
            trainer_overrides=overrides_for(trainer),
            backend=backend,
            redo=trial.redo,
            trainer=trainer,
        )


@dataclass
class JobStatus:
    state: JobState
    restarts: int = 0
    reason: str | None = None  # why it failed or was cancelled
    submitted_at: float | None = None  # unix seconds
    finished_at: float | None = None


class TrialHandle(Protocol):
    """A submitted trial: everything the harness asks of it, on every backend."""

    spec: TrialSpec

    def poll(self) -> JobStatus:
        """The current state; cheap, never blocks."""

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` before the next poll, or less where the backend learns sooner that
        the job ended (the local one waits on torchrun itself), so that the end of a trial is
        seen when it comes rather than up to a poll interval later."""

    def sampler(self, interval_s: float) -> Sampler:
        """The sampler of the trial's CPU and memory per worker (not started)."""

    def progress(self) -> CheckpointInfo:
        """The trainer's last checkpoint (epoch, validation MRR); cheap, never blocks long."""

    def collect(self, dest: Path) -> None:
        """Copy what the trial wrote (event files, summary.json) and its logs under ``dest``."""

    def release(self) -> None:
        """Free what the trial holds on its backend (a finished job and its pods)."""

    def logs(self, tail_lines: int = 50) -> str:
        """The tail of the workers' combined log."""

    def cancel(self, reason: str) -> None:
        """Stop the trial; its state becomes CANCELLED with ``reason``."""

    def kill_worker(self, rank: int) -> bool:
        """Kill rank ``rank``'s worker as a fault would; False if it is not running right now."""


class Backend(Protocol):
    """The thin class of a backend: built from its config, it plans and submits trials."""

    config: BackendConfig

    def plan(self, trial: Trial) -> TrialSpec:
        """The spec of ``trial`` on this backend; writes at most the trial's own folder."""

    def preflight(self, trial: Trial) -> None:
        """Check, before anything runs or is written, that this backend can run ``trial``
        (ConfigError if not); called for every trial of a sweep, so an expensive check (a
        cluster that answers) is done once per what it checks."""

    def submit(self, spec: TrialSpec) -> TrialHandle: ...


def wait(handle: TrialHandle, timeout_s: float, poll_interval_s: float,
         on_poll: Callable[[JobStatus], None] | None = None,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> JobStatus:
    """Poll until the trial finishes; cancel it and report FAILED after ``timeout_s``.
    ``sleep`` waits between polls (the harness passes the handle's ``pause``)."""
    deadline = clock() + timeout_s
    while True:
        status = handle.poll()
        if on_poll is not None:
            on_poll(status)
        if status.state.finished:
            return status
        if clock() > deadline:
            handle.cancel(f"timed out after {timeout_s:.0f} s (backend.timeout_s)")
            status = handle.poll()
            status.state = JobState.FAILED
            return status
        sleep(poll_interval_s)
