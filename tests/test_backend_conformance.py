"""Every backend through the same tests of the trial handle (``bench/backends/base.py``).

One real trial per backend (``tiny``, 2 workers, 3 epochs, real trainers) is planned from a
composed config, submitted, followed, hit by one fault, collected and released; a second one is
cancelled while it runs. The backends: ``local`` (torchrun on this machine), ``k8s`` (a
PyTorchJob on the fake API server of ``tests/fake_k8s``, whose replicas are local processes),
``trainjob`` (a TrainJob on the same fake: Trainer v2.3, JobSet and the Job controller make its
node pods, torchrun runs in each) and ``container`` (a podman container of the trainer image per
worker; marked ``images`` and ``slow``, skipped where the image is not built or no container can
start).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fake_k8s import FakeKube

from bench.backends import backend_for
from bench.backends.base import JobState, JobStatus, TrialHandle, TrialSpec, wait
from bench.config import compose, split, validate
from bench.events import read_scalars
from bench.layout import TrialDir
from rundir import CheckpointInfo

EPOCHS = 3


@dataclass
class Target:
    """How one backend is reached in these tests: its overrides and, for k8s, the fake."""

    name: str
    overrides: list[str]
    fake: FakeKube | None = None
    leftovers: Callable[[], list[str]] | None = None  # what the backend still holds, by name

    def submit(self, tmp: Path, *extra: str) -> tuple[TrialSpec, TrialHandle]:
        cfg = compose(["dataset=tiny", "workers=2", f"epochs={EPOCHS}", "sweep_name=c",
                       f"results_dir={tmp}", *self.overrides, *extra])
        validate(cfg)
        trial = split(cfg)
        trial.trial_dir.mkdir(parents=True, exist_ok=True)
        backend = backend_for(trial.backend)
        spec = backend.plan(trial)
        return spec, backend.submit(spec)


@pytest.fixture(scope="module", params=[
    "local", "k8s", "trainjob",
    pytest.param("container", marks=[pytest.mark.images, pytest.mark.slow])])
def target(request, tiny_root, tmp_path_factory):
    if request.param == "local":
        yield Target("local", ["backend=local", f"data_root={tiny_root}",
                               "backend.poll_interval_s=0.2"])
        return
    if request.param == "container":
        yield container_target(tiny_root, tmp_path_factory)
        return
    volume = tmp_path_factory.mktemp("volume")
    shutil.copytree(tiny_root, volume / "datasets")  # the dataset, prepared on the volume
    with FakeKube(volume, metrics_window_s=0.5) as fake:
        kubeconfig = fake.write_kubeconfig(volume.parent / f"{volume.name}.kubeconfig")
        # Any image but the config's default (which no registry has: docs/gke.md, step 4).
        yield Target(request.param, [f"backend={request.param}",
                                     f"backend.kubeconfig={kubeconfig}",
                                     "backend.image=registry.example/gnn-bench/trainer:1",
                                     "backend.cpu=1", "backend.poll_interval_s=0.2",
                                     "backend.sample_interval_s=0.5",
                                     "backend.api_backoff_s=0.05"],
                     fake)


def container_target(tiny_root, tmp_path_factory) -> Target:
    """Podman with the built trainer image; the dataset in a folder the containers' user can
    read (pytest's own temporary folders are private to root)."""
    from bench.backends.container.config import ContainerConfig
    from bench.backends.container.engine import Engine
    from bench.backends.container.handle import usable_engine
    from trainer.config import ConfigError

    try:
        engine: Engine = usable_engine(ContainerConfig())
    except ConfigError as exc:
        pytest.skip(f"no container can start here: {exc}")
    data = tmp_path_factory.mktemp("container-data")
    shutil.copytree(tiny_root, data, dirs_exist_ok=True)
    os.chmod(data, 0o755)

    def leftovers() -> list[str]:
        labelled = "label=gnn-bench.sweep=c"
        names = engine("ps", "--all", "--format", "{{.Names}}", "--filter", labelled).stdout
        networks = engine("network", "ls", "--format", "{{.Name}}", "--filter", labelled).stdout
        return (names + networks).split()

    return Target("container", ["backend=container", f"data_root={data}",
                                "backend.poll_interval_s=0.2"], leftovers=leftovers)


@dataclass
class Run:
    """What one followed trial showed of its handle."""

    spec: TrialSpec
    handle: TrialHandle
    status: JobStatus
    progress: list[CheckpointInfo] = field(default_factory=list)
    killed: bool = False
    kill_after: bool = True
    summary: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def finished(target, tmp_path_factory) -> Run:
    """A trial followed to its end, rank 1 killed once epoch 1 is checkpointed."""
    spec, handle = target.submit(tmp_path_factory.mktemp(f"run-{target.name}"))
    sampler = handle.sampler(0.5)
    sampler.start()
    seen: list[CheckpointInfo] = []
    killed = []

    def on_poll(status: JobStatus) -> None:
        info = handle.progress()
        seen.append(info)
        if not killed and status.state is JobState.RUNNING and info.epoch >= 1:
            killed.append(handle.kill_worker(1))

    status = wait(handle, 240, 0.2, on_poll, sleep=handle.pause)  # as the harness waits
    sampler.stop()
    handle.collect(spec.trial_dir)
    run = Run(spec, handle, status, seen, bool(killed and killed[0]))
    run.summary = sampler.summary()
    run.kill_after = handle.kill_worker(0)
    handle.release()
    return run


def test_the_trial_survives_a_killed_worker_and_counts_the_restart(finished):
    assert finished.status.state is JobState.SUCCEEDED, finished.status.reason
    assert finished.killed  # rank 1 was running when the fault came
    assert finished.status.restarts >= 1
    assert finished.status.submitted_at < finished.status.finished_at


def test_progress_is_the_trainers_last_checkpoint(finished):
    epochs = [info.epoch for info in finished.progress]
    assert epochs == sorted(epochs) and max(epochs) <= EPOCHS  # a restart resumes, never rewinds
    last = finished.handle.progress()
    events = read_scalars(TrialDir(finished.spec.trial_dir).events)
    assert last.epoch == EPOCHS and last.val_mrr == pytest.approx(events.last("val/mrr"))


def test_the_sampler_measures_every_worker(finished):
    assert set(finished.summary) == {"rank0", "rank1"}
    for worker in finished.summary.values():
        assert worker["n_samples"] >= 1 and 50 < worker["mem_peak_mib"] < 8192


def test_collect_brings_the_event_files_summary_and_logs(finished):
    folder = TrialDir(finished.spec.trial_dir)
    events = read_scalars(folder.events)
    assert events.steps("val/mrr") == list(range(1, EPOCHS + 1))
    summary = json.loads(folder.summary.read_text())
    assert summary["val_mrr"] == pytest.approx(events.last("val/mrr"), rel=1e-6)
    assert f"epoch {EPOCHS}/{EPOCHS}" in finished.handle.logs(400)
    assert folder.workers_log.exists()


def test_a_finished_trial_has_no_worker_to_kill_and_is_released(finished, target):
    assert finished.kill_after is False
    if target.fake is not None:  # the job (and by garbage collection its pods) is deleted
        assert all(job.deleting for job in target.fake.cluster.history)
    if target.leftovers is not None:  # the containers and the trial's network are removed
        assert target.leftovers() == []


def test_cancel_stops_a_running_trial(target, tmp_path):
    spec, handle = target.submit(tmp_path, "epochs=200")
    deadline = time.monotonic() + 120
    while handle.poll().state is not JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.2)
    handle.cancel("stopped by the test")
    status = handle.poll()
    assert status.state is JobState.CANCELLED and status.reason == "stopped by the test"
    assert handle.kill_worker(0) is False  # nothing left running
    handle.collect(spec.trial_dir)
    handle.release()
    if target.leftovers is not None:
        assert target.leftovers() == []


def test_the_local_backend_sees_a_trial_end_when_torchrun_exits(tiny_root, tmp_path):
    """An hour between polls, and the wait still ends with the trial: the handle's pause ends
    when torchrun does, so finished_at is the trial's end (an alarm fails the test rather than
    let it hang if it is not)."""
    target = Target("local", ["backend=local", f"data_root={tiny_root}"])
    spec, handle = target.submit(tmp_path, "epochs=1")

    def hung(signum, frame):
        handle.cancel("the test's alarm")
        raise AssertionError("the wait did not end with torchrun")

    polls: list[JobState] = []
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(600)
    try:
        status = wait(handle, 7200, 3600, lambda s: polls.append(s.state), sleep=handle.pause)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    handle.release()
    assert status.state is JobState.SUCCEEDED, status.reason
    assert polls == [JobState.RUNNING, JobState.SUCCEEDED]  # one poll while it ran, one at its end
