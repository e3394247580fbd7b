"""A live status line for the running trial: trial i/N, epoch, last validation MRR, elapsed.

It asks the trial's handle for the trainer's last checkpoint (at most every 2 s), on every
backend. Quiet when stdout is not a terminal, so CI logs keep only the one-line-per-trial
summary.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from bench.backends.base import JobStatus
from rundir import CheckpointInfo

REFRESH_S = 2.0


class Progress:
    def __init__(self, index: int, total: int, trial_id: str, epochs: int,
                 enabled: bool | None = None):
        self.prefix = f"[{index + 1}/{total}] {trial_id}"
        self.epochs = epochs
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._last_read = 0.0
        self._epoch, self._mrr = 0, None
        self._width = 0

    def update(self, status: JobStatus, read: Callable[[], CheckpointInfo]) -> None:
        """Redraw the line; ``read`` is the handle's ``progress`` (called at most every 2 s)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_read >= REFRESH_S:
            self._last_read = now
            info = read()
            if info.epoch:
                self._epoch, self._mrr = info.epoch, info.val_mrr
        mrr = "-" if self._mrr is None else f"{self._mrr:.4f}"
        line = (f"{self.prefix} {status.state.value} epoch {self._epoch}/{self.epochs} "
                f"val MRR {mrr} elapsed {now - self.started:.0f}s")
        sys.stdout.write("\r" + line.ljust(self._width))
        sys.stdout.flush()
        self._width = len(line)

    def close(self) -> None:
        if self.enabled and self._width:
            sys.stdout.write("\r" + " " * self._width + "\r")
            sys.stdout.flush()
