"""The container backend and its handle: each worker of a trial is a container of the trainer
image, on a network of the trial's own.

``submit`` prepares what the containers mount (the dataset, read-only; the trial's run folder,
owned by the containers' user), creates the network and one container per rank, and starts
them; or, when a re-run of the sweep finds the trial's containers (by their trial label) running
the same spec, follows them instead. ``poll`` inspects the containers and applies the exit-code
rule (:mod:`.follow`): a retryable failure restarts every container in place, resuming from the
checkpoint, up to ``backend.backoff_limit`` times; a permanent one fails the trial at once.
``collect`` saves each container's log, copies the event files and summary from the run folder
and writes ``container.json`` (network, containers, restarts, problems); ``release`` removes the
containers and the network, unless ``backend.keep_containers``; ``cancel`` stops and removes
them at once. The containers outlive a killed harness: that is what lets a re-run follow them.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rundir
from bench.backends.base import JobState, JobStatus, TrialSpec
from bench.backends.container.cgroups import ContainerCgroups
from bench.backends.container.commands import (
    SPEC_LABEL,
    SUBMITTED_LABEL,
    TRIAL_LABEL,
    Layout,
    container_paths,
    create_args,
    layout,
    network_args,
    security_args,
    spec_hash,
    threads,
    with_spec_label,
)
from bench.backends.container.config import ContainerConfig, size_bytes
from bench.backends.container.engine import (
    PROJECT_CONTAINERS_CONF,
    ContainerState,
    Engine,
    EngineError,
    last_line,
    network_subnets,
)
from bench.backends.container.follow import Action, judge, rank_of, retryable
from bench.layout import TrialDir
from bench.sampling import Sampler
from bench.store import read_json, unusable_folder
from rundir import CheckpointInfo, atomic_write_json, atomic_write_text
from trainer.config import ConfigError

if TYPE_CHECKING:
    from bench.config import Trial

RECORD = "container.json"  # in the trial folder: where and how its containers ran
LOST_CONTACT_S = 120.0  # the engine may fail to answer this long before the trial is given up
# What this process found out once: the engine that can start containers (per engine, its
# configuration and image), and the datasets prepared on this machine.
_ENGINES: dict[tuple[Any, ...], Engine] = {}
_PREPARED: set[tuple[str, ...]] = set()


def _say(message: str) -> None:
    print(message, flush=True)


class ContainerHandle:
    """The containers of one trial, started or found again by their trial label."""

    def __init__(self, spec: TrialSpec, opts: ContainerConfig, engine: Engine, where: Layout):
        self.spec, self.opts, self.engine, self.where = spec, opts, engine, where
        self.names = list(where.containers)
        self.digest = spec_hash(spec, where)
        self.record_path = spec.trial_dir / RECORD
        self.reattached = False
        self.submitted_at: float | None = None
        self.restarts = 0
        self.history: list[dict[str, Any]] = []  # one entry per restart of the group
        self.problems: list[str] = []
        self.containers: list[ContainerState] = []
        self.subnets: list[str] = []
        self._running: dict[str, tuple[str, int]] = {}  # worker -> (container id, pid)
        self._injected: set[str] = set()  # containers killed by kill_worker since the last start
        self._final: JobStatus | None = None
        self._cancel_reason: str | None = None
        self._log_tails: dict[str, str] | None = None  # kept once the containers may be gone
        self._removed = False
        self._failing_since: float | None = None
        self._cgroups: ContainerCgroups | None = None
        self._cancelled_at: float | None = None

    # -- submission
    def start(self) -> None:
        """Start the trial's containers, or follow the ones an earlier run of it left."""
        found = self.engine.inspect(self.engine.ids(f"{TRIAL_LABEL}={self.where.key}"))
        if found:
            why_not = self._why_not_follow(found)
            if why_not is None:
                return self._attach(found)
            _say(f"{self.spec.trial_id}: replacing the containers of an earlier run: {why_not}")
            self.engine.remove([c.name for c in found])
        self.engine.network_remove(self.where.network)  # left by a run that never released it
        self.submitted_at = time.time()
        try:
            self.engine.network_create(network_args(self.spec, self.where))
            for rank in range(self.spec.workers):
                argv = create_args(self.spec, self.where, rank, self.submitted_at)
                self.engine.create(with_spec_label(argv, self.digest))
            self.engine.start(self.names)
        except EngineError:
            self._remove()
            raise
        self._network_details()
        self._refresh()
        self._write_record()

    def _why_not_follow(self, found: list[ContainerState]) -> str | None:
        """Why containers found with this trial's label must be replaced (None: follow them)."""
        if self.spec.redo:
            return "redo=true"
        if sorted(c.name for c in found) != sorted(self.names):
            return f"they are {len(found)} other containers ({found[0].name}, ...)"
        if any(c.labels.get(SPEC_LABEL) != self.digest for c in found):
            return "their spec differs from this trial's (image, limits, mounts or command changed)"
        if self.engine.network_inspect(self.where.network) is None:
            return f"their network {self.where.network} is gone"
        return None

    def _attach(self, found: list[ContainerState]) -> None:
        self.reattached = True
        labelled = found[0].labels.get(SUBMITTED_LABEL)
        self.submitted_at = float(labelled) if labelled else time.time()
        previous = read_json(self.record_path) or {}
        if previous.get("network", {}).get("name") == self.where.network:
            self.restarts = int(previous.get("restarts") or 0)
            self.history = list(previous.get("restart_history") or [])
        self.containers = found
        self._network_details()
        running = sum(c.running for c in found)
        _say(f"{self.spec.trial_id}: following its {len(found)} containers on network "
             f"{self.where.network} ({running} running, {self.restarts} restarts so far) "
             "instead of starting new ones")
        self._refresh()

    def _network_details(self) -> None:
        raw = self.engine.network_inspect(self.where.network)
        self.subnets = network_subnets(raw) if raw else []

    # -- TrialHandle
    def poll(self) -> JobStatus:
        if self._cancel_reason is not None:
            return JobStatus(JobState.CANCELLED, self.restarts, self._cancel_reason,
                             self.submitted_at, self._cancelled_at)
        if self._final is not None:
            return self._final
        try:
            self._refresh()
        except EngineError as exc:
            now = time.monotonic()
            self._failing_since = self._failing_since or now
            if now - self._failing_since > LOST_CONTACT_S:
                return self._finish(JobState.FAILED, f"the engine stopped answering: {exc}")
            return JobStatus(JobState.RUNNING, self.restarts, None, self.submitted_at)
        self._failing_since = None
        verdict = judge(self.containers, self.names, self.restarts, self.spec.backoff_limit,
                        self._injected)
        if verdict.action is Action.STOP_REST:
            self._kill_running()
            return self._finish(JobState.FAILED, self._failure_reason(verdict.cause, verdict.reason))
        if verdict.action is Action.KILL_REST:
            self._kill_running()
        elif verdict.action is Action.RESTART:
            try:
                self._restart(verdict.cause, verdict.reason or "")
            except EngineError as exc:
                return self._finish(JobState.FAILED, f"could not restart the containers: {exc}")
        if verdict.state is JobState.SUCCEEDED:
            return self._finish(JobState.SUCCEEDED, None)
        return JobStatus(verdict.state, self.restarts, None, self.submitted_at)

    def _refresh(self) -> None:
        self.containers = self.engine.inspect(self.names)
        self._running = {f"rank{self.names.index(c.name)}": (c.id, c.pid)
                         for c in self.containers if c.running and c.pid > 0}

    def _restart(self, cause: ContainerState | None, why: str) -> None:
        """Start every (stopped) container again: the trainers resume from the checkpoint."""
        self.restarts += 1
        self.history.append({
            "at": time.time(),
            "rank": rank_of(cause, self.names) if cause else None,
            "exit_code": cause.exit_code if cause else None,
            "injected": bool(cause and cause.name in self._injected),
        })
        self._injected.clear()
        _say(f"{self.spec.trial_id}: {why}: restarting its {len(self.names)} containers "
             f"(restart {self.restarts} of backend.backoff_limit={self.spec.backoff_limit})")
        self.engine.start(self.names)
        self._write_record()

    def _kill_running(self) -> None:
        running = [c.name for c in self.containers if c.running]
        if running:
            self.engine.kill(running)

    def _finish(self, state: JobState, reason: str | None) -> JobStatus:
        if self._log_tails is None:
            self._log_tails = self._read_logs(self.opts.log_tail_lines)
        self._final = JobStatus(state, self.restarts, reason, self.submitted_at,
                                self._finished_at())
        return self._final

    def _finished_at(self) -> float:
        """The last container's own exit time when all have exited (a trial that finished while
        nobody watched keeps its own clock), else now."""
        ends = [c.finished_at for c in self.containers if c.exited]
        if self.containers and len(ends) == len(self.containers) and all(ends):
            return max(e for e in ends if e is not None)
        return time.time()

    def _failure_reason(self, cause: ContainerState | None, reason: str | None) -> str:
        """The trainer's own ``error:`` line for a permanent failure; else what happened, with
        an out-of-memory kill named when the cgroup counted one."""
        reason = reason or "the trial failed"
        if cause is None:
            return reason
        if not retryable(cause.exit_code):
            for line in reversed(self.engine.logs(cause.name, 200).splitlines()):
                if "error:" in line:
                    return line.split("error:", 1)[1].strip()
        oom = cause.oom_killed or (self._cgroups is not None and self._cgroups.oom_kills.get(cause.id))
        if oom:
            reason += f"; the kernel killed it out of memory (backend.memory={self.opts.memory})"
        return reason

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def sampler(self, interval_s: float) -> Sampler:
        """CPU and memory of each running container, from its cgroup."""
        self._cgroups = ContainerCgroups(lambda: dict(self._running))
        return Sampler(self._cgroups, interval_s)

    def progress(self) -> CheckpointInfo:
        return CheckpointInfo.read(self.where.host_run_dir)

    def collect(self, dest: Path) -> None:
        """Each container's log, the event files, summary.json and container.json into ``dest``."""
        trial = TrialDir(dest)
        self._save_logs(trial.logs)
        run_dir = self.where.host_run_dir
        if (run_dir / rundir.EVENTS).is_dir():
            shutil.copytree(run_dir / rundir.EVENTS, trial.events, dirs_exist_ok=True)
        else:
            self.problems.append(f"no event files in {run_dir / rundir.EVENTS}")
        if (run_dir / rundir.SUMMARY).exists():
            shutil.copy2(run_dir / rundir.SUMMARY, trial.summary)
        self._write_record()

    def release(self) -> None:
        """Remove the containers and the network, unless ``backend.keep_containers``."""
        if not self.opts.keep_containers:
            self._remove()

    def logs(self, tail_lines: int = 50) -> str:
        tails = self._log_tails if self._log_tails is not None else self._read_logs(tail_lines)
        per = max(1, tail_lines // max(1, len(tails)))
        return "\n".join(f"[{worker}] {line}" for worker, text in tails.items()
                         for line in text.splitlines()[-per:])

    def cancel(self, reason: str) -> None:
        """Stop the containers (SIGTERM, SIGKILL after ``backend.stop_timeout_s``), remove them
        and the network."""
        if self._final is not None or self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        self._log_tails = self._read_logs(self.opts.log_tail_lines)
        self.engine.stop(self.names, self.opts.stop_timeout_s)
        try:
            self._refresh()
        except EngineError:
            pass
        self._cancelled_at = self._finished_at()
        self._remove()

    def kill_worker(self, rank: int) -> bool:
        """``kill`` (SIGKILL) rank ``rank``'s container; False if it is not running now."""
        if self._cancel_reason is not None or self._final is not None:
            return False
        container = next((c for c in self.containers if c.name == self.names[rank]), None)
        if container is None or not container.running or not self.engine.kill([container.name]):
            return False
        self._injected.add(container.name)
        _say(f"{self.spec.trial_id}: fault injected: {self.engine.name} kill {container.name} "
             f"(rank {rank})")
        return True

    # -- helpers
    def _remove(self) -> None:
        if self._removed:
            return
        self.engine.remove(self.names)
        if not self.engine.network_remove(self.where.network) and \
                self.engine.network_inspect(self.where.network) is not None:
            self.problems.append(f"could not remove network {self.where.network}")
        self._removed = True

    def _read_logs(self, tail_lines: int) -> dict[str, str]:
        """Each container's log tail (every start of it: a restarted container keeps its log)."""
        if self._removed:
            return {}
        return {f"rank{r}": self.engine.logs(name, tail_lines) for r, name in enumerate(self.names)}

    def _save_logs(self, logs_dir: Path) -> None:
        if self._log_tails is None:
            self._log_tails = self._read_logs(self.opts.log_tail_lines)
        for worker, text in self._log_tails.items():
            atomic_write_text(logs_dir / f"{self.names[int(worker[4:])]}.log", text)
        atomic_write_text(logs_dir / "workers.log",
                          self.logs(self.opts.log_tail_lines * max(1, len(self._log_tails))) + "\n")

    def _write_record(self) -> None:
        """container.json: where the trial ran, its limits, restarts and problems."""
        atomic_write_json(self.record_path, {
            "engine": self.engine.name,
            "containers_conf": self.engine.containers_conf,
            "image": self.opts.image,
            "network": {"name": self.where.network, "subnets": self.subnets, "internal": True},
            "reattached": self.reattached,
            "submitted_at": self.submitted_at,
            "restarts": self.restarts,
            "restart_history": self.history,
            "containers": {
                c.name: {
                    "rank": self.names.index(c.name) if c.name in self.names else None,
                    "id": c.id,
                    "status": c.status,
                    "exit_code": c.exit_code,
                    "cpus": c.nano_cpus / 1e9,
                    "memory_bytes": c.memory_bytes,
                    "started_at": c.started_at,
                    "finished_at": c.finished_at,
                    "oom_kills": (self._cgroups.oom_kills.get(c.id, 0) if self._cgroups else 0),
                }
                for c in self.containers
            },
            "host_run_dir": str(self.where.host_run_dir),
            "host_data_root": str(self.where.host_data_root),
            "problems": self.problems,
        })


class ContainerBackend:
    """Trials as groups of containers, configured by ``backend=container`` (ContainerConfig)."""

    def __init__(self, config: ContainerConfig):
        self.config = config
        self._layouts: dict[Path, Layout] = {}

    def plan(self, trial: Trial) -> TrialSpec:
        """Each container gets ``backend.cpus``; the workers see the trial's run folder at
        ``<mount_path>/runs/<sweep>/<trial>`` and the datasets at ``<mount_path>/datasets``."""
        run_dir, data_root = container_paths(self.config.mount_path, trial.sweep_name,
                                              trial.trial_id)
        spec = TrialSpec.build(trial, self.config, run_dir=run_dir, data_root=data_root,
                               threads=threads(self.config.cpus),
                               cores=trial.workers * self.config.cpus)
        host_data = Path(os.path.expanduser(trial.data_root)).absolute()
        self._layouts[spec.trial_dir] = layout(
            trial.trial_dir, trial.trial_id, trial.workers,
            TrialDir(trial.trial_dir).run.absolute(), host_data, run_dir, data_root)
        return spec

    def preflight(self, trial: Trial) -> None:
        """data_root can be a folder here; the engine is installed, has the image and can start a
        container with the trial's flags (once per engine and image)."""
        problem = None if Path(trial.data_root).expanduser().is_dir() else \
            unusable_folder(Path(trial.data_root).expanduser())
        if problem:
            raise ConfigError(f"data_root={trial.data_root} cannot hold datasets ({problem}): set "
                              "data_root=<a writable folder> or GNN_BENCH_DATA")
        usable_engine(self.config)

    def submit(self, spec: TrialSpec) -> ContainerHandle:
        where = self._layouts.get(spec.trial_dir)
        if where is None:
            raise ValueError(f"{spec.trial_id} was not planned by this backend (plan it first)")
        engine = usable_engine(self.config)
        prepare_dataset(spec, where, self.config.user)
        prepare_run_dir(where.host_run_dir, self.config.user)
        handle = ContainerHandle(spec, self.config, engine, where)
        handle.start()
        return handle


def usable_engine(opts: ContainerConfig) -> Engine:
    """The engine, checked once per process: installed, holding the image, able to start a
    container with the workers' flags. Where podman's defaults cannot start one and no
    configuration was asked for, the project's docker/podman-containers.conf is tried."""
    key = (opts.engine, opts.containers_conf, os.environ.get("CONTAINERS_CONF"), opts.image,
           opts.user, opts.cpus, opts.memory)
    if key in _ENGINES:
        return _ENGINES[key]
    engine = Engine(opts.engine, opts.containers_conf)
    if not engine.installed:
        raise ConfigError(f"backend.engine={opts.engine} is not installed here: install podman "
                          "(apt-get install podman runc) or use backend.engine=docker")
    if engine.image_id(opts.image) is None:
        raise ConfigError(f"backend.image={opts.image} is not among {opts.engine}'s images here: "
                          "build it with `make images` (or pull it and set backend.image)")
    problem = _probe(engine, opts)
    if problem and opts.engine == "podman" and not opts.containers_conf and \
            not os.environ.get("CONTAINERS_CONF") and PROJECT_CONTAINERS_CONF.exists():
        fallback = Engine(opts.engine, str(PROJECT_CONTAINERS_CONF))
        if _probe(fallback, opts) is None:
            _say(f"podman: its defaults cannot start a container here ({problem}); using "
                 f"{PROJECT_CONTAINERS_CONF} (no default rlimits, runtime runc)")
            engine, problem = fallback, None
    if problem:
        raise ConfigError(f"{opts.engine} cannot start a container here: {problem} (for podman, "
                          "see docker/podman-containers.conf and backend.containers_conf)")
    _ENGINES[key] = engine
    return engine


def _probe(engine: Engine, opts: ContainerConfig) -> str | None:
    """Start (and remove) a container of the image that runs ``true`` with the workers' user,
    security flags and limits; the engine's error, or None."""
    memory = str(size_bytes(opts.memory))
    try:
        out = engine("run", "--rm", "--network", "none", "--init", "--user", opts.user,
                     *security_args(opts.engine), "--cpus", f"{opts.cpus:g}", "--memory", memory,
                     "--memory-swap", memory, opts.image, "true", check=False, timeout=300)
    except EngineError as exc:
        return str(exc)
    return None if out.returncode == 0 else last_line(out.stderr)


def _uid_gid(user: str) -> tuple[int, int]:
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def prepare_dataset(spec: TrialSpec, where: Layout, user: str) -> None:
    """Prepare the trial's dataset in data_root on this machine (``python -m trainer.data
    prepare``, the cluster's prepare-data Job), outside the trial's time, once per process;
    the containers mount it read-only, so it must be readable by their user."""
    dataset = [o for o in spec.trainer_overrides if o.startswith(("dataset=", "dataset."))]
    key = (str(where.host_data_root), *dataset)
    if key in _PREPARED:
        return
    out = subprocess.run(
        [sys.executable, "-m", "trainer.data", "prepare", *dataset,
         f"data_root={where.host_data_root}"],
        capture_output=True, text=True, timeout=spec.timeout_s, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"could not prepare the dataset in {where.host_data_root}: "
                           f"{last_line(out.stderr).removeprefix('error: ')}")
    match = re.search(r" at (/.+)$", out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "")
    folder = Path(match.group(1)) if match else where.host_data_root
    unreadable = _unreadable(where.host_data_root, folder, _uid_gid(user))
    if unreadable:
        raise RuntimeError(f"{unreadable} is not readable by the containers' user {user}: "
                           f"chmod -R o+rX {folder} (or use another data_root)")
    _PREPARED.add(key)


def _unreadable(data_root: Path, folder: Path, who: tuple[int, int]) -> Path | None:
    """The first path the containers' user could not read (folders: list and enter)."""
    def readable(path: Path, is_dir: bool) -> bool:
        st = path.stat()
        need = 0o5 if is_dir else 0o4
        if st.st_uid == who[0]:
            return ((st.st_mode >> 6) & need) == need
        if st.st_gid == who[1]:
            return ((st.st_mode >> 3) & need) == need
        return (st.st_mode & need) == need

    if not readable(data_root, True):
        return data_root
    for path in [folder, *sorted(folder.rglob("*"))]:
        if path.name.startswith(".") or path.is_symlink():
            continue
        if not readable(path, path.is_dir()):
            return path
    return None


def prepare_run_dir(run_dir: Path, user: str) -> None:
    """The trial's run folder, owned by the containers' user (as the volume's folders are on
    the cluster); chown needs root, i.e. rootful podman, which is what is tested here."""
    run_dir.mkdir(parents=True, exist_ok=True)
    uid, gid = _uid_gid(user)
    st = run_dir.stat()
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    try:
        os.chown(run_dir, uid, gid)
    except PermissionError as exc:
        if not st.st_mode & stat.S_IWOTH:
            raise RuntimeError(f"the run folder {run_dir} must be writable by the containers' "
                               f"user {user}: run the harness as root (rootful podman) or make "
                               "it writable") from exc
