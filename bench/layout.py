"""The trial folder: where one trial's files live under ``results/<sweep>/<trial>/``.

The harness writes it (``bench/trial.py``), backends collect into it, the report reads it::

    results/<sweep>/
      manifests/<trial>.yaml   what a dry run would submit (backend=k8s backend.dry_run=true)
      <trial>/
        .lock                  held by the harness running the trial (bench/owner.py)
        config.yaml            the resolved config, written first
        result.json            the trial's figures (bench/result.py), written last, atomically
        events/                the run's TensorBoard event files, collected from its run_dir
        summary.json           the trainer's final figures, collected from its run_dir
        resources.csv          t, worker, cpu_cores, rss_mib every backend.sample_interval_s
        recoveries.json        restarts and resumes so far (bench/trial.py), kept across harnesses
        logs/workers.log       the workers' output (k8s: also logs/<pod>.log)
        logs/failures/         the workers' failure records of the last attempt (local backend)
        run/                   the local backend's run_dir (rundir's layout)
        run_id                 the id of this clean start (names its run folder on a volume)
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from rundir import atomic_write_text


@dataclass(frozen=True)
class TrialDir:
    path: Path

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    @property
    def recoveries(self) -> Path:
        return self.path / "recoveries.json"

    @property
    def failures(self) -> Path:
        return self.logs / "failures"

    def clear(self) -> None:
        """Delete everything in the folder but its lock (whoever holds it keeps holding it)."""
        for entry in self.path.iterdir() if self.path.is_dir() else ():
            if entry == self.lock:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def result(self) -> Path:
        return self.path / "result.json"

    @property
    def events(self) -> Path:
        return self.path / "events"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def resources(self) -> Path:
        return self.path / "resources.csv"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def workers_log(self) -> Path:
        return self.logs / "workers.log"

    @property
    def run(self) -> Path:
        return self.path / "run"

    @property
    def manifest(self) -> Path:
        return self.path.parent / "manifests" / f"{self.path.name}.yaml"

    def run_id(self) -> str:
        """The id of this clean start of the trial, kept in ``run_id`` (created here).

        The harness deletes the trial folder when a trial starts from scratch (failed before, or
        ``redo=true``), so a new id names a new run folder on a cluster's volume, and a trial
        that was only interrupted keeps its id, its run folder and its checkpoint.
        """
        path = self.path / "run_id"
        if not path.exists():
            atomic_write_text(path, uuid.uuid4().hex[:8])
        return path.read_text().strip()
