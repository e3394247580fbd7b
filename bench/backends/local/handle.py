"""The local backend and its handle: a trial is a torchrun process group on this machine.

torchrun (``torch.distributed.run``, the elastic launcher) starts ``workers`` processes of
``python -m trainer``. Restarts are the harness's, one torchrun per attempt
(``--max-restarts=0``): torchrun exits 1 whatever its worker's exit code was, and would restart
the group even after a failure no restart can fix. So each worker that gives up leaves a
failure record (``rundir.FailureRecord``: its exit code and ``error:`` line) in
``<trial>/logs/failures/rank<r>.json``, blank space reserved there before the attempt starts so
that a full disk cannot stop it; after the attempt:

* a record with a permanent code (1-127: configuration, data, environment, a bug) fails the
  trial at once, with that worker's ``error:`` line as its reason;
* otherwise (a worker killed, 128+signal, or the process group broken, 200: ``rundir.retryable``)
  a new torchrun is started, at most ``backend.backoff_limit`` times, and the trainer resumes
  from its last checkpoint.

That is Kubeflow's ``restartPolicy: ExitCode`` with ``backoffLimit``, which the Kubernetes
backend's jobs follow with pods.

Threads: each worker gets ``max(1, cores // workers)`` intra-op threads (OMP_NUM_THREADS and
``train.threads``), so the workers together never ask for more cores than the trial may use.
With more workers than cores the trial is oversubscribed (one thread each) and the result says so.
"""

from __future__ import annotations

import functools
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
from bench import parent_death
from bench.backends.base import JobState, JobStatus, TrialSpec
from bench.backends.local import admission
from bench.backends.local.config import LocalConfig
from bench.backends.local.processes import (
    process_sampler,
    processes_with_argument,
    stop_processes,
    torchrun_workers,
)
from bench.layout import TrialDir
from bench.sampling import Sampler
from bench.store import unusable_folder
from rundir import CheckpointInfo
from trainer.config import ConfigError

if TYPE_CHECKING:
    from bench.config import Trial

def _die_with_parent(harness_pid: int) -> None:
    """In the child before exec: SIGTERM torchrun when the harness dies, even by SIGKILL.

    torchrun runs in its own session (so cancel() can signal the whole group); without this
    a killed harness would leave the job running, and a re-run would start a second job on the
    same run directory. On SIGTERM the elastic agent stops its workers. Linux only; elsewhere
    this is a no-op.
    """
    parent_death.die_with_parent(harness_pid, signal.SIGTERM)


def threads_per_worker(workers: int, cores: int) -> int:
    """The threading rule: split the cores evenly, at least one thread per worker."""
    return max(1, cores // workers)


class LocalHandle:
    def __init__(self, spec: TrialSpec):
        self.spec = spec
        folder = TrialDir(spec.trial_dir)
        self.log_path = folder.workers_log
        self.failures = folder.failures
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.submitted_at = time.time()
        self.restarts = 0  # attempts started after the first
        self.restart_causes: list[str] = []
        self._cancel_reason: str | None = None
        self._final: JobStatus | None = None
        self._start()

    def _start(self) -> None:
        """Start one attempt: a torchrun of its own, the workers' record files reserved."""
        spec = self.spec
        for rank in range(spec.workers):
            try:
                rundir.reserve_record(self.failures / f"rank{rank}.json")
            except OSError:  # no room even for that: a worker may still manage to write it
                pass
        command = [
            sys.executable, "-m", "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={spec.workers}",
            "--max-restarts=0",  # the harness restarts (see the module's docstring)
            f"--monitor-interval={spec.backend.monitor_interval_s}",
            "-m", "trainer", *spec.trainer_overrides,
        ]
        env = {**os.environ, **spec.env, "OMP_NUM_THREADS": str(spec.threads_per_worker),
               "PYTHONUNBUFFERED": "1",
               rundir.FAILURE_FILE_ENV: str(self.failures / "rank{rank}.json")}
        parent_death.libc()  # loaded here, before the fork (see its docstring)
        self._log = open(self.log_path, "ab")
        why = f"restart {self.restarts} of at most {spec.backoff_limit} after: " \
            f"{self.restart_causes[-1]}" if self.restarts else "the first"
        try:  # a line of our own between the attempts' output
            self._log.write(f"[harness] attempt {self.restarts + 1} ({why})\n".encode())
            self._log.flush()
        except OSError:
            pass
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # its own process group: cancel() reaches the agent
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        self._seen_workers = False  # this attempt's workers were found once
        # The workers found by the last workers() walk, so that poll() can tell that they still
        # run from their own /proc entries instead of walking the process tree every time.
        self._last_workers: dict[str, psutil.Process] = {}

    # -- TrialHandle
    def poll(self) -> JobStatus:
        if self._final is not None:
            return self._final
        code = self.process.poll()
        if code is None:
            restarting = self._restarting()
            return JobStatus(JobState.RESTARTING if restarting else JobState.RUNNING,
                             self.restarts, self.restart_causes[-1] if restarting and self.restart_causes else None,
                             self.submitted_at)
        self._log.close()
        if self._cancel_reason is not None:
            return self._finish(JobState.CANCELLED, self._cancel_reason)
        if code == 0:
            return self._finish(JobState.SUCCEEDED, None)
        records = self.records()
        permanent = sorted((r for r in records if not r.retryable), key=lambda r: r.at)
        if permanent:  # no restart can fix it: fail now, in the worker's own words
            return self._finish(JobState.FAILED, permanent[0].error)
        cause = self._cause(code, records)
        if self.restarts >= self.spec.backoff_limit:
            prefix = (f"exceeded backoff limit ({self.restarts} restarts); "
                      if self.spec.backoff_limit > 0 else "")
            return self._finish(JobState.FAILED, f"{prefix}{cause}; see logs/workers.log")
        self.restarts += 1
        self.restart_causes.append(cause)
        self._start()
        return JobStatus(JobState.RESTARTING, self.restarts, cause, self.submitted_at)

    def pause(self, seconds: float) -> None:
        # torchrun's exit ends the wait (Popen.wait checks every 50 ms at most), so a trial's
        # finished_at is its end, not the next poll up to an interval later.
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass

    def _finish(self, state: JobState, reason: str | None) -> JobStatus:
        self._stop_leftovers()
        for path in self.failures.glob("rank*.json"):  # keep only the records there are
            if rundir.FailureRecord.read(path) is None:
                path.unlink(missing_ok=True)
        self._final = JobStatus(state, self.restarts, reason, self.submitted_at, time.time())
        return self._final

    def records(self) -> list[rundir.FailureRecord]:
        """The failure records the workers of the last attempt left."""
        paths = sorted(self.failures.glob("rank*.json")) if self.failures.is_dir() else []
        return [r for r in (rundir.FailureRecord.read(p) for p in paths) if r is not None]

    def _cause(self, code: int, records: list[rundir.FailureRecord]) -> str:
        """Why an attempt ended that a restart may fix, as far as the records tell."""
        if records:
            first = min(records, key=lambda r: r.at)
            return f"rank {first.rank}: {first.error}"
        line = self._last_error_line()
        if line:
            return f"torchrun exited with code {code}: {line}"
        return (f"torchrun exited with code {code} and no worker left a failure record (a worker "
                "was killed or crashed)")

    def workers(self) -> dict[str, int]:
        found = torchrun_workers(self.process.pid)
        live: dict[str, psutil.Process] = {}
        for name, pid in found.items():
            try:
                live[name] = psutil.Process(pid)  # remembers the creation time: no pid reuse
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        if live:
            self._seen_workers = True
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
        if self._final is not None or self.process.poll() is not None:
            self._cancel_reason = self._cancel_reason or reason
            return
        self._cancel_reason = reason
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # the agent stops its workers
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        self._stop_leftovers()

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
    def _restarting(self) -> bool:
        """A restarted attempt whose workers have not started yet, or an attempt whose workers
        have all gone while its torchrun still runs (it is stopping the group).

        While every worker of the last walk still runs the answer is no, without a walk (the
        walk reads every process of the machine and each descendant's environment); only
        when one of them has gone is the tree walked again.
        """
        if not self._seen_workers:
            return self.restarts > 0 and not self.workers()
        if self._last_workers and all(_running(p) for p in self._last_workers.values()):
            return False
        return not self.workers()

    def _last_error_line(self) -> str | None:
        for line in reversed(self.logs(200).splitlines()):
            if "error:" in line:
                return line.split("error:", 1)[1].strip()
        return None

    def _stop_leftovers(self) -> None:
        """Kill workers of the last walk that outlived their torchrun (it was killed itself)."""
        for process in self._last_workers.values():
            if _running(process):
                try:
                    process.kill()  # psutil checks that it is still the same process
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass


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
        """data_root must be (or become) a folder of this machine, and the trial must fit its
        memory and disk (admission, unless backend.allow_overcommit=true)."""
        data_root = Path(trial.data_root)
        problem = None if data_root.is_dir() else unusable_folder(data_root)
        if problem:
            raise ConfigError(f"data_root={trial.data_root} cannot hold datasets ({problem}): set "
                              "data_root=<a writable folder> or GNN_BENCH_DATA")
        self._admit(trial.workers, trial.trainer, trial.results_dir, trial.trial_dir)

    def _admit(self, workers: int, trainer: dict, results_dir: str, trial_dir: Path) -> None:
        if self.config.allow_overcommit:
            return
        refused = admission.check(workers, trainer, results_dir, trial_dir)
        if refused:
            raise ConfigError(refused)

    def submit(self, spec: TrialSpec) -> LocalHandle:
        """Start the trial, once no process of an earlier run of it is left (the job of a
        harness that was killed stops on its own within seconds: it is waited for, then
        killed)."""
        token = next(o for o in spec.trainer_overrides if o.startswith("run_dir="))
        stopped = stop_processes(processes_with_argument(token), grace_s=30.0)
        if stopped:
            print(f"{spec.trial_id}: {stopped} processes of an earlier run of this trial were "
                  "still running; stopped them before starting", flush=True)
        # Admission again, now (the sweep's preflight checked every trial before the first one
        # ran): what is free may have changed since.
        self._admit(spec.workers, spec.trainer, str(spec.trial_dir.parent.parent),
                    spec.trial_dir)
        return LocalHandle(spec)
