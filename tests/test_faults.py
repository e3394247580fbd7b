"""Fault injection (bench/faults.py): the harness kills a worker, torchrun restarts the group,
the trainer resumes, and result.json records each fault and its recovery."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.backends import backend_for
from bench.backends.base import JobState, JobStatus
from bench.config import compose, split, validate
from bench.events import EventScalars, ScalarPoint
from bench.faults import FaultInjector, injector_for
from bench.result import load_results
from rundir import CheckpointInfo
from trainer.config import ConfigError


def sweep(args: list[str], data_root: Path, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "GNN_BENCH_DATA": str(data_root)}
    return subprocess.run([sys.executable, "-m", "bench.sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ config

BAD_FAULTS = [
    (["fault.kill_at_epoch=0"], "fault.kill_at_epoch=0 is invalid"),
    (["fault.kill_at_epoch=6"], "fault.kill_at_epoch=6 is invalid: it must be >= 1 and < epochs=6"),
    (["fault.kill_at_epoch=2", "fault.rank=2"], "fault.rank=2 is invalid"),
    (["fault.kill_at_epoch=2", "fault.rank=-1"], "fault.rank=-1 is invalid"),
    (["fault.kill_at_epoch=2", "fault.count=0"], "fault.count=0 is invalid"),
    (["fault.kill_at_epoch=4", "fault.count=3"], "fault.count=3 is too many"),
    (["fault.kill_at_epoch=two"], "fault.kill_at_epoch=two is invalid"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_FAULTS)
def test_bad_fault_settings_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        validate(compose(["workers=2", "epochs=6", *overrides]))
    assert "\n" not in str(err.value)


def test_the_default_is_no_fault_and_leaves_trial_keys_unchanged():
    def trial_identity(cfg):
        trial = split(cfg)
        return trial.trial_id, trial.config_key

    plain = compose(["workers=2", "epochs=6", "sweep_name=s"])
    validate(plain)
    assert plain.fault.kill_at_epoch is None
    faulty = compose(["workers=2", "epochs=6", "sweep_name=s", "fault.kill_at_epoch=3"])
    validate(faulty)
    assert trial_identity(plain) != trial_identity(faulty)
    # The key of a fault-free trial does not mention faults (results from before still match).
    assert trial_identity(plain) == trial_identity(compose(["workers=2", "epochs=6", "sweep_name=s",
                                                            "fault.rank=1"]))
    trial = split(faulty)
    assert not any(o.startswith("fault") for o in backend_for(trial.backend).plan(trial)
                   .trainer_overrides)
    assert injector_for(split(plain).fault, None) is None


# ------------------------------------------------------------------ the injector, table-driven


def running(restarts: int = 0) -> JobStatus:
    return JobStatus(JobState.RUNNING, restarts)


INJECTOR_CASES = [
    # name, (kill_at_epoch, count), progress seen at each poll, kill succeeds, epochs of the kills
    ("one fault at its epoch", (3, 1), [0, 1, 2, 3, 3, 4, 5], True, [3]),
    ("late poll: injected at the epoch seen", (2, 1), [0, 4, 5], True, [4]),
    ("each next fault waits for one more epoch", (2, 3), [2, 2, 2, 3, 3, 4, 5], True, [2, 3, 4]),
    ("no second fault before progress", (2, 2), [3, 3, 3], True, [3]),
    ("worker not running: retried next poll", (2, 1), [2, 2], False, []),
]


@pytest.mark.parametrize(("name", "setting", "seen", "kill_ok", "expected"), INJECTOR_CASES,
                         ids=[c[0] for c in INJECTOR_CASES])
def test_injector_kills_at_epoch_boundaries(name, setting, seen, kill_ok, expected):
    progress = iter(seen)
    killed: list[int] = []

    def kill(rank: int) -> bool:
        killed.append(rank)
        return kill_ok

    injector = FaultInjector(setting[0], 1, setting[1], lambda: next(progress), kill)
    for _ in seen:
        injector.on_poll(running())
    assert [f.epoch for f in injector.injected] == expected
    assert all(f.rank == 1 for f in injector.injected)


def test_injector_does_nothing_while_the_group_restarts_or_after_the_end():
    injector = FaultInjector(1, 0, 1, lambda: 5, lambda rank: pytest.fail("killed"))
    injector.on_poll(JobStatus(JobState.RESTARTING))
    injector.on_poll(JobStatus(JobState.SUCCEEDED))
    assert injector.injected == []


def test_records_measure_recovery_and_work_lost_from_events():
    injector = FaultInjector(2, 1, 1, lambda: 2, lambda rank: True)
    injector.on_poll(running())
    t = injector.injected[0].injected_at
    scalars = EventScalars(series={
        "val/mrr": [ScalarPoint(1, t - 2.5, 0.01), ScalarPoint(2, t - 0.5, 0.02),
                    ScalarPoint(3, t + 8.0, 0.03)],
        "time/epoch_s": [ScalarPoint(1, 0, 1.0), ScalarPoint(2, 0, 2.0), ScalarPoint(3, 0, 2.0)],
        "train/loss_step": [ScalarPoint(10, t - 0.2, 1.0), ScalarPoint(10, t + 6.0, 1.0)],
    })
    (record,) = [dataclasses.asdict(r) for r in injector.records(scalars)]
    assert record["epoch"] == 2 and record["rank"] == 1 and record["resumed_from_epoch"] == 3
    assert record["recovered_at"] == pytest.approx(t + 6.0)
    assert record["recovery_s"] == pytest.approx(6.0)
    assert record["work_lost_s"] == pytest.approx(0.5)
    assert record["epochs_redone"] == pytest.approx(0.25)  # 0.5 s of a 2 s epoch


def test_a_failure_after_more_faults_than_restarts_names_the_backoff_limit():
    injector = FaultInjector(1, 0, 3, iter([1, 2]).__next__, lambda rank: True)
    injector.on_poll(running())
    injector.on_poll(running(1))
    status = injector.explain(JobStatus(JobState.FAILED, 1, "torchrun exited with code 1"), 1)
    assert "exceeded the backoff limit (backend.backoff_limit=1)" in status.reason
    assert "2 injected faults" in status.reason
    ok = injector.explain(JobStatus(JobState.FAILED, 1, "boom"), 3)
    assert ok.reason == "boom"


def test_a_trial_that_ends_before_a_fault_says_which_one_it_missed():
    """The first fault came late (epoch 4 seen, asked at 2): the next is due after epoch 5."""
    injector = FaultInjector(2, 0, 3, iter([4, 4]).__next__, lambda rank: True)
    injector.on_poll(running())
    injector.on_poll(running(1))  # no progress since: no second fault
    line = injector.shortfall(JobStatus(JobState.SUCCEEDED, 1), 0.5)
    assert line is not None and line.startswith("1 of 3 faults injected: "), line
    assert "saw epoch 5 checkpointed" in line and "backend.poll_interval_s=0.5 s" in line
    assert injector.shortfall(JobStatus(JobState.FAILED, 1, "boom"), 0.5) is None
    every = FaultInjector(1, 0, 1, lambda: 1, lambda rank: True)
    every.on_poll(running())
    assert every.shortfall(JobStatus(JobState.SUCCEEDED), 0.5) is None


@pytest.mark.parametrize(("info", "epoch"), [
    (None, 0),  # no checkpoint yet
    (b'{"epoch": 3, "saved_at": 1.5}', 3),
    (b'{"epoch": 3, "sav', 0),  # torn (never, with atomic writes; still no progress, no crash)
    (b"[]", 0),
    (b'{"epoch": "x"}', 0),
])
def test_progress_is_the_epoch_in_the_checkpoint_info(info, epoch):
    assert CheckpointInfo.parse(info).epoch == epoch


def test_the_local_handle_reads_progress_from_the_trainers_checkpoint_info(tmp_path):
    from bench.backends.local import LocalHandle

    handle = LocalHandle.__new__(LocalHandle)  # no process: only the run directory matters here
    handle.spec = type("Spec", (), {"run_dir": str(tmp_path)})()
    assert handle.progress().epoch == 0
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.json").write_text('{"epoch": 2, "saved_at": 0}')
    assert handle.progress().epoch == 2


# ------------------------------------------------------------------ real torchrun trials


def test_one_killed_worker_recovers_and_matches_its_fault_free_twin(tmp_path, tiny_root):
    args = ["dataset=tiny", "workers=2", "epochs=6", "fault.kill_at_epoch=null,3", "fault.rank=1",
            "backend.poll_interval_s=0.2", "sweep_name=f", "results_dir=res", "-m"]
    out = sweep(args, tiny_root, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    results = load_results(tmp_path / "res" / "f")
    (faulty,) = [r for r in results if r["faults"]]
    (twin,) = [r for r in results if not r["faults"]]
    assert faulty["status"] == twin["status"] == "succeeded", (faulty["reason"], twin["reason"])
    (fault,) = faulty["faults"]
    # At the first poll after epoch 3 is checkpointed: on tiny data (~0.5 s epochs) on a busy
    # machine that poll can come an epoch later.
    assert 3 <= fault["epoch"] < 6 and fault["rank"] == 1
    assert fault["resumed_from_epoch"] == fault["epoch"] + 1
    assert fault["recovery_s"] > 0 and fault["recovered_at"] > fault["injected_at"]
    assert 0 <= fault["epochs_redone"] < 3
    assert faulty["restarts"] == 1 and twin["restarts"] == 0
    assert [s for s, _ in faulty["curves"]["val/mrr"]] == [1, 2, 3, 4, 5, 6]
    assert abs(faulty["val_mrr"] - twin["val_mrr"]) <= 0.02
    # The restart is recorded with its cause (the survivor's, or that no record was left).
    (restart,) = faulty["recoveries"]
    assert restart["kind"] == "restart" and restart["epoch"] >= 3 and restart["detail"]


@pytest.mark.slow  # ~60 s: three restarts of the group
def test_three_faults_within_the_backoff_limit_succeed(tmp_path, tiny_root):
    args = ["dataset=tiny", "workers=2", "epochs=8", "fault.kill_at_epoch=2", "fault.count=3",
            "fault.rank=0", "backend.backoff_limit=3", "backend.poll_interval_s=0.2",
            "sweep_name=f3", "results_dir=res"]
    out = sweep(args, tiny_root, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    (result,) = load_results(tmp_path / "res" / "f3")
    assert result["status"] == "succeeded", result["reason"]
    epochs = [f["epoch"] for f in result["faults"]]
    assert len(epochs) == 3 and epochs == sorted(set(epochs)) and 2 <= epochs[0] and epochs[-1] < 8
    assert all(f["recovery_s"] and f["recovery_s"] > 0 for f in result["faults"])
    assert result["restarts"] == 3


def test_more_faults_than_the_backoff_limit_fail_the_trial(tmp_path, tiny_root):
    args = ["dataset=tiny", "workers=2", "epochs=6", "fault.kill_at_epoch=2", "fault.count=3",
            "fault.rank=1", "backend.backoff_limit=1", "backend.poll_interval_s=0.2",
            "sweep_name=f1", "results_dir=res"]
    out = sweep(args, tiny_root, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr  # a failed trial does not fail the sweep
    (result,) = load_results(tmp_path / "res" / "f1")
    assert result["status"] == "failed"
    assert "backoff limit (backend.backoff_limit=1)" in result["reason"], result["reason"]
    epochs = [f["epoch"] for f in result["faults"]]
    assert len(epochs) == 2 and 2 <= epochs[0] < epochs[1]  # the third never came
    assert result["faults"][1]["recovered_at"] is None
