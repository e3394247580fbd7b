"""The harness itself dies (SIGKILL of `python -m bench.sweep`) and the same command is run again
at once: the sweep ends with exactly one complete result per trial, wherever the kill came; the
dead harness's lock is taken over and its job stopped, and the trial it was running records
that it was resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.owner import held

ARGS = ["dataset=tiny", "workers=1,2", "epochs=2", "sweep_name=r", "results_dir=res", "-m"]


def first(pattern: str, root: Path) -> Path | None:
    return next(iter(sorted(root.glob(pattern))), None)


# Where the harness is killed: the file whose appearance triggers the kill.
KILL_POINTS = {
    "before a trial starts": "multirun.yaml",  # the sweep began, no trial folder yet
    # The first trial checkpointed an epoch. Its info file, not last.pt: the trainer writes it
    # after last.pt, and a kill between the two (a CI run's poll landed there) leaves the info one
    # epoch behind, so that the resume is recorded at epoch 0 while the trainer goes on from 1.
    "during a trial": "*/run/checkpoints/last.json",
    "right after a result is written": "*/result.json",
}


def _stray(tmp_path: Path) -> list[psutil.Process]:
    """Processes of this test still running (orphaned torchrun agents and their workers)."""
    stray = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(tmp_path) in " ".join(proc.info["cmdline"] or []):
                stray.append(proc)
        except psutil.Error:
            continue
    return stray


@pytest.mark.parametrize("point", [
    pytest.param("before a trial starts", marks=pytest.mark.slow),  # ~45 s each
    "during a trial",
    "right after a result is written",
])
def test_rerunning_after_the_harness_was_killed_completes_every_trial_once(point, tmp_path, tiny_root):
    env = {**os.environ, "GNN_BENCH_DATA": str(tiny_root)}
    command = [sys.executable, "-m", "bench.sweep", *ARGS]
    sweep_dir = tmp_path / "res" / "r"
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while first(KILL_POINTS[point], sweep_dir) is None:
            assert proc.poll() is None and time.monotonic() < deadline, f"never reached: {point}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_result = first("*/result.json", sweep_dir)
        before = killed_result.read_text() if killed_result else None
        # The lock dies with the harness. A kill just as it starts torchrun can leave the
        # forked child, between fork and exec (its pre-exec hook runs before it closes the
        # harness's descriptors), holding it a moment longer: it sees its parent gone and exits.
        deadline = time.monotonic() + 10
        while any(held(lock) for lock in sweep_dir.glob("*/.lock")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(held(lock) for lock in sweep_dir.glob("*/.lock"))  # died with it

        out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0, out.stdout + out.stderr
        assert _stray(tmp_path) == []  # the killed harness's job was stopped, none is left
    finally:
        for stray in _stray(tmp_path):
            stray.kill()

    trials = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and (d / "config.yaml").exists())
    assert [d.name.split("-")[0] for d in trials] == ["w1", "w2"]
    for trial in trials:
        result = json.loads((trial / "result.json").read_text())
        assert result["status"] == "succeeded", result["reason"]
        assert [s for s, _ in result["curves"]["val/mrr"]] == [1, 2]
        assert result["val_mrr"] is not None and result["trial_id"] == trial.name
        assert not list(trial.glob("*.tmp*")) and not list(trial.glob(".*result*"))
    table = (sweep_dir / "table.md").read_text().splitlines()
    assert len([line for line in table if line.startswith("| 1 ") or line.startswith("| 2 ")]) == 2
    resumed = [r for trial in trials
               for r in json.loads((trial / "result.json").read_text())["recoveries"]]
    if point == "during a trial":  # the trial it was running says it was taken over
        assert [r["kind"] for r in resumed] == ["resume"], resumed
        assert resumed[0]["detail"].startswith("resumed after the harness running it stopped")
        assert resumed[0]["epoch"] >= 1  # it went on from its checkpoint
    if before is not None:  # a result written before the kill is kept, not redone
        assert killed_result.read_text() == before
        assert "already succeeded, skipped" in out.stdout
