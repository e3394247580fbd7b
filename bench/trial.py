"""One trial, end to end: split the config, plan, submit, follow, collect, store.

``run_trial(cfg)`` is what the Hydra task function calls for each job of a sweep; it never
raises for a failed trial (the failure is recorded in ``result.json``) so the sweep goes on.

What happened to a trial besides the faults the harness injects is kept with it: every restart
of its worker group (its cause as the backend knows it) and every resume by a later harness run
after the one running it was interrupted (Ctrl-C, a timeout) or killed, in ``recoveries.json``
as it happens and in ``result.json`` at the end.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from bench.backends import backend_for
from bench.backends.base import JobState, JobStatus, TrialHandle, TrialSpec, wait
from bench.config import Trial, split
from bench.events import read_scalars
from bench.faults import FaultInjector, injector_for
from bench.layout import TrialDir
from bench.owner import TrialLock
from bench.progress import Progress
from bench.result import CURVE_TAGS, Recovery, TrialResult, Usage, env_info
from bench.sampling import Sampler
from bench.store import read_json
from rundir import atomic_write_json, atomic_write_text, remove_partial_writes


def run_trial(cfg: DictConfig, index: int = 0, total: int = 1,
              before_start: Callable[[], None] | None = None) -> TrialResult:
    """Run (or skip) one trial and return its result (also written to result.json).

    The trial is run by one harness at a time (bench/owner.py): its lock is taken before
    anything of it starts; if another harness holds it, this one says so and waits for it.
    ``before_start`` is called right before the trial's job is submitted (the sweep's stops its
    report process: bench/report_process.py).
    """
    trial = split(cfg)
    folder = TrialDir(trial.trial_dir)
    label = f"[{index + 1}/{total}] {trial.trial_id}"
    done = _succeeded(read_json(folder.result), trial)
    if done is not None:
        print(f"{label}: already succeeded, skipped (redo=true to re-run)", flush=True)
        return done

    def waiting(owner: str) -> None:
        print(f"{label}: run by another harness ({owner}); waiting for it", flush=True)

    with TrialLock.acquire(folder.lock, waiting) as lock:
        previous = read_json(folder.result)
        done = _succeeded(previous, trial)
        if lock.waited_for and previous and previous.get("config_key") == trial.config_key and \
                previous.get("status") in ("succeeded", "failed"):
            done = TrialResult.from_json(previous)  # it ran to its end (redo or not): once is all
        if done is not None:
            print(f"{label}: {done.status} in the harness it waited for, skipped", flush=True)
            return done
        return _run_owned(trial, folder, index, total, lock.waited_for, before_start)


def _succeeded(previous: dict | None, trial: Trial) -> TrialResult | None:
    """The earlier result of the trial when it stands (succeeded, same config, no redo)."""
    if previous and previous.get("status") == "succeeded" and \
            previous.get("config_key") == trial.config_key and not trial.redo:
        return TrialResult.from_json(previous)
    return None


def _run_owned(trial: Trial, folder: TrialDir, index: int, total: int,
               resuming: str | None, before_start: Callable[[], None] | None) -> TrialResult:
    """Run the trial whose lock this process holds."""
    remove_partial_writes(folder.path)  # a harness killed mid-write leaves its temporary files
    previous = read_json(folder.result)
    recoveries = _Recoveries(folder)
    if trial.redo or (previous and previous.get("status") != "cancelled"):
        folder.clear()  # a failed or redone trial starts clean (its lock stays)
        recoveries = _Recoveries(folder)
        interrupted = None
    elif previous:  # cancelled: Ctrl-C, a timeout, or a harness told to stop
        interrupted = f"resumed after: {previous.get('reason') or 'cancelled'}"
    elif folder.config.exists():  # started before, never finished: its harness was killed
        owner = f" ({resuming})" if resuming else ""
        interrupted = f"resumed after the harness running it{owner} stopped without a result"
    else:
        interrupted = None
    # An interrupted attempt (cancelled, or no result.json at all) left its run folder behind:
    # the trainer resumes from its checkpoint.
    folder.result.unlink(missing_ok=True)
    folder.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder.config, OmegaConf.to_yaml(trial.resolved))

    backend = backend_for(trial.backend)
    spec = backend.plan(trial)
    progress = Progress(index, total, trial.trial_id, trial.epochs, trial.progress)
    handle: TrialHandle | None = None
    sampler: Sampler | None = None
    injector: FaultInjector | None = None
    if before_start is not None:
        before_start()
    try:
        handle = backend.submit(spec)
        if interrupted:
            recoveries.add("resume", handle.progress().epoch, interrupted)
        sampler = handle.sampler(trial.backend.sample_interval_s)
        sampler.start()
        injector = injector_for(trial.fault, handle)
        status = wait(handle, spec.timeout_s, trial.backend.poll_interval_s,
                      _polls(handle, progress, injector, recoveries), sleep=handle.pause)
        if injector is not None:
            status = injector.explain(status, spec.backoff_limit)
            if missed := injector.shortfall(status, trial.backend.poll_interval_s):
                print(f"{trial.trial_id}: {missed}", flush=True)
    except KeyboardInterrupt:
        if handle is not None:
            handle.cancel("interrupted (Ctrl-C)")
        _stop(sampler, progress)
        finish(trial, spec, handle, JobStatus(JobState.CANCELLED, reason="interrupted (Ctrl-C)"),
               sampler, injector, recoveries)
        raise
    except Exception as exc:  # the backend could not start the trial: record it, go on
        status = JobStatus(JobState.FAILED, reason=f"could not start: {exc}")
    _stop(sampler, progress)
    result = finish(trial, spec, handle, status, sampler, injector, recoveries)
    print(result_line(result, index, total), flush=True)
    return result


class _Recoveries:
    """The trial's restarts and resumes, kept in ``recoveries.json`` as they happen (so that a
    later harness run of the trial still counts those of an earlier one)."""

    def __init__(self, folder: TrialDir):
        self.path = folder.recoveries
        raw = (read_json(self.path) or {}).get("recoveries") or []
        names = {f.name for f in dataclasses.fields(Recovery)}
        self.items = [Recovery(**{k: r[k] for k in names}) for r in raw
                      if isinstance(r, dict) and names <= set(r)]
        self.restarts_seen = 0  # the handle's count in this harness run

    def add(self, kind: str, epoch: int, detail: str) -> None:
        self.items.append(Recovery(time.time(), kind, epoch, detail))
        try:
            atomic_write_json(self.path, {"recoveries": [dataclasses.asdict(r)
                                                         for r in self.items]})
        except OSError:  # a full disk: the result still gets them
            pass

    def saw(self, status: JobStatus, epoch: Callable[[], int]) -> None:
        """Note each restart the handle reports."""
        while status.restarts > self.restarts_seen:
            self.restarts_seen += 1
            self.add("restart", epoch(), status.reason or "the worker group was restarted")

    @property
    def restarts(self) -> int:
        return sum(r.kind == "restart" for r in self.items)


def _polls(handle: TrialHandle, progress: Progress, injector: FaultInjector | None,
           recoveries: _Recoveries) -> Callable[[JobStatus], None]:
    """The wait loop's callback: restarts noted, the fault injector when there is one, and the
    progress line."""

    def on_poll(status: JobStatus) -> None:
        recoveries.saw(status, lambda: handle.progress().epoch)
        if injector is not None:
            injector.on_poll(status)
        progress.update(status, handle.progress)

    return on_poll


def _stop(sampler: Sampler | None, progress: Progress) -> None:
    if sampler is not None:
        sampler.stop()
    progress.close()


def finish(trial: Trial, spec: TrialSpec, handle: TrialHandle | None, status: JobStatus,
           sampler: Sampler | None, injector: FaultInjector | None = None,
           recoveries: _Recoveries | None = None) -> TrialResult:
    """Collect the trial's files, release its backend objects, and write result.json.

    A disk that is full (or gone) does not stop the sweep: what could not be copied or written
    is said on one line, and the trial's reason stays the real one."""
    problems = []
    if handle is not None:
        if recoveries is not None:
            recoveries.saw(status, lambda: handle.progress().epoch)
        try:
            handle.collect(spec.trial_dir)
        except OSError as exc:
            problems.append(f"its files could not be collected ({exc})")
        handle.release()
    result = collect(trial, spec, status, sampler, injector,
                     None if handle is None else handle.logs, recoveries)
    try:
        result.write(spec.trial_dir)
    except OSError as exc:
        problems.append(f"result.json could not be written ({exc})")
    if problems:
        print(f"{trial.trial_id}: " + "; ".join(problems), flush=True)
    return result


def collect(trial: Trial, spec: TrialSpec, status: JobStatus, sampler: Sampler | None,
            injector: FaultInjector | None = None,
            logs: Callable[[int], str] | None = None,
            recoveries: _Recoveries | None = None) -> TrialResult:
    """Times, resources and metrics of a finished trial, from the files collected into its
    folder."""
    folder = TrialDir(spec.trial_dir)
    scalars = read_scalars(folder.events)
    summary = read_json(folder.summary) or {}
    usage = sampler.summary() if sampler else {}
    if sampler:
        try:
            sampler.write_csv(folder.resources)
        except OSError:
            pass  # finish() says when the disk is full
    succeeded = status.state is JobState.SUCCEEDED
    reason = status.reason
    if succeeded and scalars.last("val/mrr") is None:
        succeeded, reason = False, "the job succeeded but its event files hold no val/mrr"
    first_step = scalars.first_wall_time("train/loss_step")
    submitted = status.submitted_at or 0.0
    finished = status.finished_at or time.time()
    target = trial.resolved["dataset"].get("target_mrr")
    to_target_s, to_target_epoch = time_to_target(scalars, target, submitted)
    cpu = {w: Usage(u["cpu_mean"], u["cpu_peak"]) for w, u in usage.items()}
    mem = {w: Usage(u["mem_mean_mib"], u["mem_peak_mib"]) for w, u in usage.items()}
    state = "succeeded" if succeeded else (
        "cancelled" if status.state is JobState.CANCELLED else "failed")
    config = trial.resolved
    return TrialResult(
        status=state,
        reason=None if succeeded else reason,
        trial_id=spec.trial_id,
        config_key=spec.config_key,
        sweep_name=spec.sweep_name,
        backend=trial.backend.name,
        workers=spec.workers,
        epochs=spec.epochs,
        seed=config["seed"],
        dataset=config["dataset"]["name"],
        model=config["model"]["name"],
        threads_per_worker=spec.threads_per_worker,
        cores=spec.cores,
        oversubscribed=spec.workers > spec.cores,
        time_total_s=finished - submitted if submitted else None,
        time_startup_s=(first_step - submitted) if first_step and submitted else None,
        epoch_times_s=scalars.values("time/epoch_s"),
        val_mrr=scalars.last("val/mrr"),
        val_mrr_se=scalars.last("val/mrr_se"),
        val_accuracy=scalars.last("val/accuracy"),
        val_hits_at_10=scalars.last("val/hits@10"),
        test_mrr=scalars.last("test/mrr"),
        test_mrr_se=scalars.last("test/mrr_se"),
        test_accuracy=scalars.last("test/accuracy"),
        train_loss=scalars.last("train/loss"),
        best_epoch=_int(scalars.last("best/epoch")),
        best_val_mrr=scalars.last("best/val_mrr"),
        best_val_mrr_se=scalars.last("best/val_mrr_se"),
        test_mrr_at_best=scalars.last("best/test_mrr"),
        test_mrr_at_best_se=scalars.last("best/test_mrr_se"),
        target_mrr=target,
        time_to_target_s=to_target_s,
        epochs_to_target=to_target_epoch,
        baselines=summary.get("baselines") or {},
        edges_per_s=_mean(scalars.values("train/edges_per_s")),
        cpu_cores=cpu,
        memory_mib=mem,
        cpu_cores_mean=_mean([c.mean for c in cpu.values()]),
        memory_mib_mean=_mean([m.mean for m in mem.values()]),
        restarts=max(status.restarts, int(summary.get("restart_count") or 0),
                     recoveries.restarts if recoveries is not None else 0),
        faults=injector.records(scalars) if injector is not None else [],
        recoveries=list(recoveries.items) if recoveries is not None else [],
        curves={t: [[p.step, p.value] for p in scalars.series.get(t, [])] for t in CURVE_TAGS},
        event_problems=scalars.problems,
        log_tail=None if succeeded or logs is None else logs(100),
        submitted_at=submitted,
        finished_at=finished,
        trainer_overrides=spec.trainer_overrides,
        config=config,
        env=env_info(),
    )


def time_to_target(scalars, target: float | None,
                   submitted: float) -> tuple[float | None, int | None]:
    """Seconds from submission to the first validation MRR >= ``target`` (MLPerf's time to
    quality), and that epoch; (None, None) when never reached or no target is set."""
    if target is None:
        return None, None
    for point in scalars.series.get("val/mrr", []):
        if point.value >= target:
            return (point.wall_time - submitted if submitted else None), int(point.step)
    return None, None


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None and v == v]
    return sum(values) / len(values) if values else None


def result_line(r: TrialResult, index: int, total: int) -> str:
    if r.status != "succeeded":
        return f"[{index + 1}/{total}] {r.trial_id}: {r.status.upper()}: {r.reason}"
    return (
        f"[{index + 1}/{total}] {r.trial_id}: done in {r.time_total_s:.1f} s, "
        f"val MRR {r.val_mrr:.4f}, accuracy {r.val_accuracy:.4f}"
    )
