"""One trial, end to end: spec from config, submit, follow, collect, store.

``run_trial(cfg)`` is what the Hydra task function calls for each job of a sweep; it never
raises for a failed trial (the failure is recorded in ``result.json``) so the sweep goes on.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.backends.base import Backend, JobState, JobStatus, TrialHandle, TrialSpec, wait
from bench.events import read_scalars
from bench.faults import FaultInjector, injector_for
from bench.progress import Progress
from bench.resources import ResourceSampler
from bench.results import CURVE_TAGS, SCHEMA_VERSION, env_info
from bench.store import atomic_write_json, atomic_write_text, config_key, read_json
from trainer.config import resolve_plain

# Keys that change how the harness runs or where it stores things, not what a trial computes.
# (data_root stays in the key: another folder may hold other data.)
HARNESS_KEYS = ("sweep_name", "results_dir", "run_dir", "redo", "progress", "experiment", "backend")


# Overrides the trainer never sees (harness settings), and those the harness sets itself.
HARNESS_ONLY = {"workers", "backend", "sweep_name", "results_dir", "redo", "progress", "hydra",
                "fault"}
SET_BY_HARNESS = {"run_dir", "data_root", "epochs", "seed", "train.threads"}


def trial_identity(cfg: DictConfig) -> tuple[str, str]:
    """(trial_id, config_key): the key hashes everything that defines the trial's numbers."""
    plain = resolve_plain(cfg)
    defining = {k: v for k, v in plain.items() if k not in HARNESS_KEYS}
    defining["backend"] = plain["backend"]["name"]
    if (plain.get("fault") or {}).get("kill_at_epoch") is None:
        defining.pop("fault", None)  # no fault: the key of results from before fault injection
    key = config_key(defining)
    return f"w{cfg.workers}-e{cfg.epochs}-s{cfg.seed}-{cfg.dataset.name}-{key[:8]}", key


def trainer_overrides(cfg: DictConfig, run_dir: str, threads: int) -> list[str]:
    """Overrides that make `python -m trainer` compute exactly this trial."""
    task = []
    try:
        from hydra.core.hydra_config import HydraConfig

        task = list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside a Hydra job (tests call run_trial directly)
        pass
    def key(override: str) -> str:
        return override.lstrip("+~").split("=", 1)[0]

    kept = [o for o in task if key(o).split(".")[0] not in HARNESS_ONLY and key(o) not in SET_BY_HARNESS]
    return [*kept, f"epochs={cfg.epochs}", f"seed={cfg.seed}", f"data_root={cfg.data_root}",
            f"run_dir={run_dir}", f"train.threads={threads}"]


def run_id(trial_dir: Path) -> str:
    """The id of this clean start of the trial, kept in ``<trial_dir>/run_id`` (created here).

    run_trial deletes the trial folder when a trial starts from scratch (failed before, or
    ``redo=true``), so a new id names a new run folder on a cluster's volume, and a trial that
    was only interrupted keeps its id, its run folder and its checkpoint.
    """
    path = trial_dir / "run_id"
    if not path.exists():
        atomic_write_text(path, uuid.uuid4().hex[:8])
    return path.read_text().strip()


def build_spec(cfg: DictConfig, trial_dir: Path) -> TrialSpec:
    """The backend's view of a trial.

    Locally the workers write to ``<trial_dir>/run`` and read ``data_root`` on this machine. On
    Kubernetes they write to ``<mount_path>/runs/<sweep>/<trial>/<run id>`` and read
    ``<mount_path>/datasets`` on the shared volume, and each worker pod gets its own cores.
    """
    trial_id, _ = trial_identity(cfg)
    options: dict[str, Any] = dict(resolve_plain(cfg.backend))
    if cfg.backend.name == "k8s":
        from bench.backends.k8s.manifests import K8sOptions, pod_cores, pod_threads, volume_paths

        threads = pod_threads(cfg.backend.cpu, cfg.backend.cpu_limit)
        run_dir, data_root = volume_paths(cfg.backend.mount_path, cfg.sweep_name, trial_id,
                                          run_id(trial_dir))
        options["cores"] = pod_cores(cfg.workers, K8sOptions.from_mapping(options))
    else:
        from bench.backends.local import threads_per_worker

        options["cores"] = cfg.backend.cores or os.cpu_count() or 1
        threads = threads_per_worker(cfg.workers, options["cores"])
        run_dir, data_root = str((trial_dir / "run").resolve()), str(cfg.data_root)
    options["redo"] = bool(cfg.redo)
    overrides = [f"data_root={data_root}" if o.startswith("data_root=") else o
                 for o in trainer_overrides(cfg, run_dir, threads)]
    return TrialSpec(
        trial_id=trial_id,
        sweep_name=cfg.sweep_name,
        workers=cfg.workers,
        threads_per_worker=threads,
        trainer_overrides=overrides,
        trial_dir=trial_dir,
        run_dir=run_dir,
        backoff_limit=cfg.backend.backoff_limit,
        timeout_s=cfg.backend.timeout_s,
        backend_options=options,
    )


def make_backend(name: str) -> Backend:
    if name == "local":
        from bench.backends.local import LocalBackend

        return LocalBackend()
    if name == "k8s":
        from bench.backends.k8s import K8sBackend

        return K8sBackend()
    raise ValueError(f"backend={name} is not available: use backend=local or backend=k8s")


def _sampler(handle: TrialHandle, interval_s: float) -> ResourceSampler:
    """The handle's own sampler where it has one (Kubernetes: PodMetrics), else psutil."""
    own = getattr(handle, "resource_sampler", None)
    return own(interval_s) if own else ResourceSampler(handle.workers, interval_s=interval_s)


def run_trial(cfg: DictConfig, index: int = 0, total: int = 1) -> dict[str, Any]:
    """Run (or skip) one trial and return its result dict (also written to result.json)."""
    trial_id, key = trial_identity(cfg)
    trial_dir = Path(cfg.results_dir) / cfg.sweep_name / trial_id
    previous = read_json(trial_dir / "result.json")
    if previous and previous.get("status") == "succeeded" and previous.get("config_key") == key and not cfg.redo:
        print(f"[{index + 1}/{total}] {trial_id}: already succeeded, skipped (redo=true to re-run)", flush=True)
        return previous
    if cfg.redo or (previous and previous.get("status") != "cancelled"):
        shutil.rmtree(trial_dir, ignore_errors=True)  # a failed or redone trial starts clean
    # An interrupted attempt (cancelled, or no result.json at all) left run/ behind: the trainer
    # resumes from its checkpoint.
    (trial_dir / "result.json").unlink(missing_ok=True)
    trial_dir.mkdir(parents=True, exist_ok=True)
    plain = resolve_plain(cfg)
    atomic_write_text(trial_dir / "config.yaml", OmegaConf.to_yaml(plain))

    spec = build_spec(cfg, trial_dir)
    backend = make_backend(cfg.backend.name)
    progress = Progress(index, total, trial_id, cfg.epochs, trial_dir / "run" / "tb", cfg.progress)
    handle: TrialHandle | None = None
    sampler: ResourceSampler | None = None
    injector: FaultInjector | None = None
    try:
        handle = backend.submit(spec)
        sampler = _sampler(handle, cfg.backend.sample_interval_s)
        sampler.start()
        injector = injector_for(cfg.fault, handle)
        status = wait(handle, spec.timeout_s, cfg.backend.poll_interval_s,
                      _polls(progress.update, injector))
        if injector is not None:
            status = injector.explain(status, spec.backoff_limit)
    except KeyboardInterrupt:
        if handle is not None:
            handle.cancel("interrupted (Ctrl-C)")
        _stop(sampler, progress)
        collect(cfg, plain, spec, key, handle, JobStatus(JobState.CANCELLED, reason="interrupted (Ctrl-C)"),
                sampler, injector)
        raise
    except Exception as exc:  # the backend could not start the trial: record it, go on
        status = JobStatus(JobState.FAILED, reason=f"could not start: {exc}")
    _stop(sampler, progress)
    result = collect(cfg, plain, spec, key, handle, status, sampler, injector)
    print(result_line(result, index, total), flush=True)
    return result


def _polls(update: Callable[[JobStatus], None],
           injector: FaultInjector | None) -> Callable[[JobStatus], None]:
    """The wait loop's callback: the progress line, and the fault injector when there is one."""
    if injector is None:
        return update

    def on_poll(status: JobStatus) -> None:
        injector.on_poll(status)
        update(status)

    return on_poll


def _stop(sampler: ResourceSampler | None, progress: Progress) -> None:
    if sampler is not None:
        sampler.stop()
    progress.close()


def collect(cfg: DictConfig, plain: dict, spec: TrialSpec, key: str, handle: TrialHandle | None,
            status: JobStatus, sampler: ResourceSampler | None,
            injector: FaultInjector | None = None) -> dict[str, Any]:
    """Gather times, resources and metrics into result.json (written last, atomically)."""
    trial_dir = spec.trial_dir
    if handle is not None:
        handle.fetch_events(trial_dir)
    scalars = read_scalars(trial_dir / "events")
    summary = read_json(trial_dir / "summary.json") or {}
    usage = sampler.summary() if sampler else {}
    if sampler:
        sampler.write_csv(trial_dir / "resources.csv")
    succeeded = status.state is JobState.SUCCEEDED
    reason = status.reason
    if succeeded and scalars.last("val/mrr") is None:
        succeeded, reason = False, "the job succeeded but its event files hold no val/mrr"
    first_step = scalars.first_wall_time("train/loss_step")
    submitted = status.submitted_at or 0.0
    finished = status.finished_at or time.time()
    cores = spec.backend_options["cores"]  # local: this machine's; k8s: workers x CPU per pod
    cpu = {w: {"mean": u["cpu_mean"], "peak": u["cpu_peak"]} for w, u in usage.items()}
    mem = {w: {"mean": u["mem_mean_mib"], "peak": u["mem_peak_mib"]} for w, u in usage.items()}
    result = {
        "schema_version": SCHEMA_VERSION,
        "status": "succeeded" if succeeded else "cancelled" if status.state is JobState.CANCELLED else "failed",
        "reason": None if succeeded else reason,
        "trial_id": spec.trial_id,
        "config_key": key,
        "sweep_name": spec.sweep_name,
        "backend": cfg.backend.name,
        "workers": cfg.workers,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "threads_per_worker": spec.threads_per_worker,
        "cores": cores,
        "oversubscribed": cfg.workers > cores,
        "time_total_s": finished - submitted if submitted else None,
        "time_startup_s": (first_step - submitted) if first_step and submitted else None,
        "epoch_times_s": scalars.values("time/epoch_s"),
        "val_mrr": scalars.last("val/mrr"),
        "val_accuracy": scalars.last("val/accuracy"),
        "val_hits@10": scalars.last("val/hits@10"),
        "test_mrr": scalars.last("test/mrr"),
        "test_accuracy": scalars.last("test/accuracy"),
        "train_loss": scalars.last("train/loss"),
        "edges_per_s": _mean(scalars.values("train/edges_per_s")),
        "cpu_cores": cpu,
        "memory_mib": mem,
        "cpu_cores_mean": _mean([c["mean"] for c in cpu.values()]),
        "memory_mib_mean": _mean([m["mean"] for m in mem.values()]),
        "restarts": max(status.restarts, int(summary.get("restart_count") or 0)),
        "faults": injector.records(scalars) if injector is not None else [],
        "curves": {t: [[p.step, p.value] for p in scalars.series.get(t, [])] for t in CURVE_TAGS},
        "event_problems": scalars.problems,
        "log_tail": None if succeeded or handle is None else handle.logs(100),
        "submitted_at": submitted,
        "finished_at": finished,
        "trainer_overrides": spec.trainer_overrides,
        "config": plain,
        "env": env_info(),
    }
    atomic_write_json(trial_dir / "result.json", result)
    return result


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and v == v]
    return sum(values) / len(values) if values else None


def result_line(r: dict[str, Any], index: int, total: int) -> str:
    if r["status"] != "succeeded":
        return f"[{index + 1}/{total}] {r['trial_id']}: {r['status'].upper()}: {r['reason']}"
    return (
        f"[{index + 1}/{total}] {r['trial_id']}: done in {r['time_total_s']:.1f} s, "
        f"val MRR {r['val_mrr']:.4f}, accuracy {r['val_accuracy']:.4f}"
    )


