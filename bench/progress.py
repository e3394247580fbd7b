"""A live status line for the running trial: trial i/N, epoch, last validation MRR, elapsed.

It reads the trial's own event files (at most every 2 s), so it shows what the results will
hold. Quiet when stdout is not a terminal, so CI logs keep only the one-line-per-trial summary.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.backends.base import JobStatus
from bench.events import read_scalars

REFRESH_S = 2.0


class Progress:
    def __init__(self, index: int, total: int, trial_id: str, epochs: int, tb_dir: Path,
                 enabled: bool | None = None):
        self.prefix = f"[{index + 1}/{total}] {trial_id}"
        self.epochs, self.tb_dir = epochs, tb_dir
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._last_read = 0.0
        self._epoch, self._mrr = 0, None
        self._width = 0

    def update(self, status: JobStatus) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_read >= REFRESH_S:
            self._last_read = now
            scalars = read_scalars(self.tb_dir) if self.tb_dir.exists() else None
            if scalars and scalars.steps("val/mrr"):
                self._epoch, self._mrr = scalars.steps("val/mrr")[-1], scalars.last("val/mrr")
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
