"""Fault injection: the harness kills a worker of a running trial and measures the recovery.

``fault.kill_at_epoch=3 fault.rank=1 fault.count=1`` asks for one fault: as soon as the trial
has *checkpointed* epoch 3, the harness kills rank 1's worker:

* local backend: SIGKILL of the worker process; torchrun restarts the whole group (at most
  ``backend.backoff_limit`` times, its ``--max-restarts``);
* Kubernetes backend: deletion of the worker's pod with no grace period (the study's demo);
  the training operator creates the pod again, the surviving replicas fail their collective
  and are restarted in place (``restartPolicy: OnFailure``); the operator sums these restarts
  over all pods against ``runPolicy.backoffLimit``, so one fault costs ``workers - 1`` (checked
  before submission: ``trainer.config.validate_fault_budget``).

Either way the trainer resumes from its checkpoint. The harness looks at every poll
(``backend.poll_interval_s``); with epochs shorter than that the first poll may see a later
epoch checkpointed, and the fault is injected (and recorded) there.

Rule for ``count > 1``: fault ``i`` (from 0) is injected once epoch ``kill_at_epoch + i`` is
checkpointed *and* the checkpoint has moved past the epoch of the previous fault, i.e. each
fault after the first waits until the restarted group has recovered and finished one more
epoch. So ``kill_at_epoch + count - 1 < epochs`` (checked when the config is composed).

The trainer knows nothing of this; the harness only reads what the trial writes (event files
and ``checkpoints/last.json``). :class:`FaultInjector` is backend-neutral: it takes a
``progress()`` (epochs checkpointed so far) and a ``kill(rank)``, which :func:`injector_for`
takes from the trial's handle. Each fault is recorded in ``result.json`` (a
:class:`~bench.result.FaultRecord`, see :meth:`FaultInjector.records`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.backends.base import JobState, JobStatus, TrialHandle
from bench.config import FaultConfig
from bench.events import EventScalars
from bench.result import FaultRecord


@dataclass
class Injected:
    epoch: int  # epochs checkpointed when the fault was injected
    rank: int
    injected_at: float  # unix seconds


class FaultInjector:
    """Kills ``rank`` after epochs ``kill_at_epoch``, ``kill_at_epoch + 1``, ... (``count`` in all).

    Call :meth:`on_poll` from the wait loop; it never blocks for long (one read of the run's
    progress and at most one kill).
    """

    def __init__(self, kill_at_epoch: int, rank: int, count: int,
                 progress: Callable[[], int], kill: Callable[[int], bool]):
        self.kill_at_epoch, self.rank, self.count = kill_at_epoch, rank, count
        self.progress, self.kill = progress, kill
        self.injected: list[Injected] = []

    def on_poll(self, status: JobStatus) -> None:
        if len(self.injected) >= self.count or status.state is not JobState.RUNNING:
            return
        epoch = self.progress()
        if epoch >= self._due() and self.kill(self.rank):
            self.injected.append(Injected(epoch, self.rank, time.time()))

    def _due(self) -> int:
        """The epoch whose checkpoint the next fault waits for: its own, and past the epoch of
        the previous fault."""
        due = self.kill_at_epoch + len(self.injected)
        return max(due, self.injected[-1].epoch + 1) if self.injected else due

    def explain(self, status: JobStatus, backoff_limit: int) -> JobStatus:
        """A trial that failed after more faults than restarts allowed says so in its reason."""
        if status.state is JobState.FAILED and len(self.injected) > backoff_limit:
            status.reason = (
                f"exceeded the backoff limit (backend.backoff_limit={backoff_limit}): "
                f"{len(self.injected)} injected faults, {status.restarts} restarts; {status.reason}"
            )
        return status

    def shortfall(self, status: JobStatus, poll_interval_s: float) -> str | None:
        """For a trial that succeeded with fewer faults than asked: which one it ended before, and
        why (the harness looks every poll interval, and the last epochs were shorter)."""
        if status.state is not JobState.SUCCEEDED or len(self.injected) >= self.count:
            return None
        return (f"{len(self.injected)} of {self.count} faults injected: the trial ended before "
                f"the harness saw epoch {self._due()} checkpointed (it looks every "
                f"backend.poll_interval_s={poll_interval_s:g} s; use longer epochs or a shorter "
                f"interval)")

    def records(self, scalars: EventScalars) -> list[FaultRecord]:
        """One dict per injected fault, measured from the trial's event files.

        - ``recovered_at``: the first training progress after the fault: the earliest
          ``train/loss_step`` (or, failing that, any epoch scalar) written after ``injected_at``;
          ``recovery_s`` = recovered_at - injected_at (restart, imports, data, rendezvous,
          checkpoint load); both None if the trial never recovered.
        - ``work_lost_s``: training time thrown away: from the checkpointed epoch's end (the
          wall time of its ``val/mrr``) to the fault; ``epochs_redone``: the same in epochs
          (divided by the median ``time/epoch_s``), i.e. the part of epoch ``epoch + 1`` that
          ran before the fault and is run again after the resume.
        """
        out = []
        epoch_s = sorted(scalars.values("time/epoch_s"))
        typical_epoch_s = epoch_s[len(epoch_s) // 2] if epoch_s else None
        val_done = {p.step: p.wall_time for p in scalars.series.get("val/mrr", [])}
        for fault in self.injected:
            recovered = _first_after(scalars, fault.injected_at)
            ended = val_done.get(fault.epoch)
            lost = max(0.0, fault.injected_at - ended) if ended is not None else None
            out.append(FaultRecord(
                epoch=fault.epoch,
                rank=fault.rank,
                injected_at=fault.injected_at,
                recovered_at=recovered,
                recovery_s=recovered - fault.injected_at if recovered is not None else None,
                resumed_from_epoch=fault.epoch + 1,
                work_lost_s=lost,
                epochs_redone=(lost / typical_epoch_s if lost is not None and typical_epoch_s
                               else None),
            ))
        return out


def _first_after(scalars: EventScalars, t: float) -> float | None:
    for tags in (["train/loss_step"], list(scalars.series)):
        times = [p.wall_time for tag in tags for p in scalars.series.get(tag, []) if p.wall_time > t]
        if times:
            return min(times)
    return None


def injector_for(fault: FaultConfig, handle: TrialHandle) -> FaultInjector | None:
    """The injector for the trial's fault plan (None: no fault asked for), acting through the
    handle: ``progress()`` reads the checkpointed epoch, ``kill_worker(rank)`` kills (local:
    SIGKILL of the worker process; Kubernetes: deletion of the worker's pod)."""
    if fault.kill_at_epoch is None:
        return None
    return FaultInjector(fault.kill_at_epoch, fault.rank, fault.count,
                         progress=lambda: handle.progress().epoch, kill=handle.kill_worker)
