"""Reading a trial's containers (pure): its state, the failure that caused the others, and
what to do about it.

The exit-code rule is Kubeflow's ``restartPolicy: ExitCode`` (issue 14): a worker that exits
with 1-127 failed permanently (the trainer's own codes: 1 an error, 2 a bad configuration, 3 bad
data or checkpoint), and a restart would only fail again, so the trial fails at once; 128-255
(killed by a signal: 137 SIGKILL, 143 SIGTERM) is retryable: the whole group of containers is
restarted in place, up to ``backend.backoff_limit`` times, and the trainer resumes from its
checkpoint (as torchrun restarts its worker group on the local backend).

Which exit counts: when one worker dies, its peers fail their next collective ("Connection
reset by peer") and exit 1 a moment later. So the cause is the *first* container to fail (the
earliest ``FinishedAt``, as torchelastic names the first failure its root cause), and a
container the harness killed itself (fault injection) is the cause whenever it failed at all.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from bench.backends.base import JobState
from bench.backends.container.engine import ContainerState


def retryable(code: int) -> bool:
    """128-255: ended by a signal (or said so); 1-127 are permanent."""
    return 128 <= code <= 255


def describe_exit(code: int) -> str:
    if code > 128:
        try:
            return f"exit code {code}, {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exit code {code}"


class Action(enum.Enum):
    NONE = "none"  # nothing to do (running, or finished)
    STOP_REST = "stop-rest"  # the trial failed: stop the containers still running
    KILL_REST = "kill-rest"  # a restart is due: kill the ones still running first
    RESTART = "restart"  # every container has stopped: start them all again


@dataclass(frozen=True)
class Verdict:
    state: JobState
    action: Action = Action.NONE
    cause: ContainerState | None = None  # the failure that decided it
    reason: str | None = None


def rank_of(container: ContainerState, names: Sequence[str]) -> int:
    return names.index(container.name)


def first_failure(containers: Sequence[ContainerState],
                  injected: Collection[str] = ()) -> ContainerState | None:
    """The failure that caused the others: one the harness injected, else the earliest."""
    failed = [c for c in containers if c.exited and c.exit_code != 0]
    if not failed:
        return None
    return min(failed, key=lambda c: (c.name not in injected, c.finished_at or float("inf")))


def judge(containers: Sequence[ContainerState], names: Sequence[str], restarts: int,
          backoff_limit: int, injected: Collection[str] = ()) -> Verdict:
    """The trial's state from its containers (``names`` in rank order) and what to do next."""
    by_name = {c.name: c for c in containers}
    missing = [n for n in names if n not in by_name]
    if missing:
        return Verdict(JobState.FAILED, Action.STOP_REST, None,
                       f"rank {names.index(missing[0])}'s container {missing[0]} is gone "
                       "(removed outside the harness)")
    ordered = [by_name[n] for n in names]
    broken = next((c for c in ordered if c.error and not c.running and c.started_at is None), None)
    if broken is not None:
        return Verdict(JobState.FAILED, Action.STOP_REST, broken,
                       f"rank {rank_of(broken, names)}'s container could not start: {broken.error}")
    cause = first_failure(ordered, injected)
    if cause is None:
        if all(c.exited for c in ordered):
            return Verdict(JobState.SUCCEEDED)
        if all(c.running or c.exited for c in ordered) and any(c.running for c in ordered):
            return Verdict(JobState.RUNNING)
        return Verdict(JobState.PENDING)
    rank = rank_of(cause, names)
    what = f"rank {rank}'s container exited ({describe_exit(cause.exit_code)})"
    if not retryable(cause.exit_code):
        return Verdict(JobState.FAILED, Action.STOP_REST, cause,
                       f"{what}: permanent (1-127 are not restarted)")
    if restarts >= backoff_limit:
        return Verdict(JobState.FAILED, Action.STOP_REST, cause,
                       f"exceeded backoff limit ({restarts} restarts); {what}")
    if any(c.running for c in ordered):
        return Verdict(JobState.RESTARTING, Action.KILL_REST, cause, what)
    return Verdict(JobState.RESTARTING, Action.RESTART, cause, what)
