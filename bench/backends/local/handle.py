"""The local backend and its handle: a trial is a torchrun process group on this machine.

torchrun (``torch.distributed.run``, the elastic launcher) starts ``workers`` processes of
``python -m trainer``. Its ``--max-restarts`` restarts the whole worker group when a worker
fails, which is what a PyTorchJob with ``restartPolicy: OnFailure`` and ``backoffLimit`` does
with pods; the trainer resumes from its last checkpoint either way.

Threads: each worker gets ``max(1, cores // workers)`` intra-op threads (OMP_NUM_THREADS and
``train.threads``), so the workers together never ask for more cores than the trial may use.
With more workers than cores the trial is oversubscribed (one thread each) and the result says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

import rundir
from bench.backends.base import JobState, JobStatus, TrialSpec
from bench.backends.local.config import LocalConfig
from bench.backends.local.processes import process_sampler, torchrun_workers
from bench.layout import TrialDir
from bench.sampling import Sampler
from bench.store import unusable_folder
from rundir import CheckpointInfo
from trainer.config import ConfigError

if TYPE_CHECKING:
    from bench.config import Trial

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM torchrun when the harness dies, even by SIGKILL.

    torchrun runs in its own session (so cancel() can signal the whole group); without this
    a killed harness would leave the job running, and a re-run would start a second job on the
    same run directory. On SIGTERM the elastic agent stops its workers. Linux only; elsewhere
    this is a no-op.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the harness died before prctl took effect
        os._exit(1)


def threads_per_worker(workers: int, cores: int) -> int:
    """The threading rule: split the cores evenly, at least one thread per worker."""
    return max(1, cores // workers)


class LocalHandle:
    def __init__(self, spec: TrialSpec):
        self.spec = spec
        self.log_path = TrialDir(spec.trial_dir).workers_log
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={spec.workers}",
            f"--max-restarts={spec.backoff_limit}",
            f"--monitor-interval={spec.backend.monitor_interval_s}",
            "-m", "trainer", *spec.trainer_overrides,
        ]
        env = {**os.environ, **spec.env, "OMP_NUM_THREADS": str(spec.threads_per_worker),
               "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "ab")
        self.submitted_at = time.time()
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # its own process group: cancel() reaches every worker
            preexec_fn=_die_with_parent,
        )
        self._cancel_reason: str | None = None
        self._finished_at: float | None = None
        self._pids_seen: dict[str, set[int]] = {}
        # The workers found by the last workers() walk, so that poll() can tell that they still
        # run from their own /proc entries instead of walking the process tree every time.
        self._last_workers: dict[str, psutil.Process] = {}

    # -- TrialHandle
    def poll(self) -> JobStatus:
        code = self.process.poll()
        restarts = self._restarts()
        if code is None:
            state = JobState.RESTARTING if self._restarting() else JobState.RUNNING
            return JobStatus(state, restarts, submitted_at=self.submitted_at)
        if self._finished_at is None:
            self._finished_at = time.time()
            self._log.close()
        if self._cancel_reason is not None:
            state, reason = JobState.CANCELLED, self._cancel_reason
        elif code == 0:
            state, reason = JobState.SUCCEEDED, None
        else:
            state, reason = JobState.FAILED, self._failure_reason(code, restarts)
        return JobStatus(state, restarts, reason, self.submitted_at, self._finished_at)

    def workers(self) -> dict[str, int]:
        found = torchrun_workers(self.process.pid)
        live: dict[str, psutil.Process] = {}
        for name, pid in found.items():
            self._pids_seen.setdefault(name, set()).add(pid)
            try:
                live[name] = psutil.Process(pid)  # remembers the creation time: no pid reuse
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        self._last_workers = live
        return found

    def sampler(self, interval_s: float) -> Sampler:
        """psutil over each worker's process tree."""
        return process_sampler(self.workers, interval_s)

    def progress(self) -> CheckpointInfo:
        return CheckpointInfo.read(self.spec.run_dir)

    def collect(self, dest: Path) -> None:
        """The workers wrote into ``run_dir`` on this machine: copy the event files over."""
        run_dir, trial = Path(self.spec.run_dir), TrialDir(dest)
        dest.mkdir(parents=True, exist_ok=True)
        if (run_dir / rundir.EVENTS).is_dir():
            shutil.copytree(run_dir / rundir.EVENTS, trial.events, dirs_exist_ok=True)
        if (run_dir / rundir.SUMMARY).exists():
            shutil.copy2(run_dir / rundir.SUMMARY, trial.summary)

    def release(self) -> None:
        """Nothing outlives the process group on this machine."""

    def logs(self, tail_lines: int = 50) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail_lines:])

    def cancel(self, reason: str) -> None:
        if self.process.poll() is not None:
            return
        self._cancel_reason = reason
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def kill_worker(self, rank: int) -> bool:
        """SIGKILL the worker process of rank ``rank``: torchrun restarts the whole group."""
        pid = self.workers().get(f"rank{rank}")
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    # -- helpers
    def _restarts(self) -> int:
        """Worker-group restarts so far: distinct pids seen for rank 0, minus one."""
        return max(0, len(self._pids_seen.get("rank0", ())) - 1)

    def _restarting(self) -> bool:
        """No worker alive although some ran before: torchrun is restarting the group.

        While every worker of the last walk still runs the answer is no, without a walk (the
        walk reads every process of the machine and each descendant's environment); only
        when one of them has gone is the tree walked again.
        """
        if not self._pids_seen:
            return False
        if self._last_workers and all(_running(p) for p in self._last_workers.values()):
            return False
        return not self.workers()

    def _failure_reason(self, code: int, restarts: int) -> str:
        for line in reversed(self.logs(200).splitlines()):
            if "error:" in line:
                return line.split("error:", 1)[1].strip()
        prefix = f"exceeded backoff limit ({restarts} restarts); " if restarts >= self.spec.backoff_limit > 0 else ""
        return f"{prefix}torchrun exited with code {code}; see logs/workers.log"


def _running(process: psutil.Process) -> bool:
    """The process (same pid and creation time) exists and has not exited."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class LocalBackend:
    """Trials as torchrun process groups; the workers write to ``<trial_dir>/run``."""

    def __init__(self, config: LocalConfig):
        self.config = config

    def plan(self, trial: Trial) -> TrialSpec:
        cores = self.config.cores or os.cpu_count() or 1
        return TrialSpec.build(
            trial, self.config, run_dir=str(TrialDir(trial.trial_dir).run.resolve()),
            data_root=trial.data_root, threads=threads_per_worker(trial.workers, cores),
            cores=cores,
        )

    def preflight(self, trial: Trial) -> None:
        """data_root must be (or become) a folder of this machine."""
        data_root = Path(trial.data_root)
        problem = None if data_root.is_dir() else unusable_folder(data_root)
        if problem:
            raise ConfigError(f"data_root={trial.data_root} cannot hold datasets ({problem}): set "
                              "data_root=<a writable folder> or GNN_BENCH_DATA")

    def submit(self, spec: TrialSpec) -> LocalHandle:
        return LocalHandle(spec)
