"""One owner per trial (bench/owner.py): a trial is run by one harness at a time; a second one
says who runs it and waits; a lock whose holder died (SIGKILL) is free at once. Real processes
throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.owner import TrialLock, held

HOLD = """
import sys, time
from pathlib import Path
from bench.owner import TrialLock
lock = TrialLock.acquire(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


def test_a_held_lock_names_its_holder_and_is_free_once_the_holder_is_killed(tmp_path):
    path = tmp_path / "trial" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert held(path)
        notices: list[str] = []
        got: list[TrialLock] = []
        waiter = threading.Thread(target=lambda: got.append(TrialLock.acquire(path,
                                                                            notices.append)))
        waiter.start()
        deadline = time.monotonic() + 60
        while not notices and time.monotonic() < deadline:
            time.sleep(0.05)
        assert notices and notices[0].startswith(f"pid {holder.pid} on "), notices
        assert not got  # still waiting: the holder is alive
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        waiter.join(timeout=60)
        (lock,) = got  # the kernel dropped the dead holder's lock: taken over
        assert lock.waited_for == notices[0]
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid()
        lock.release()
        assert not held(path) and path.read_text() == ""
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def sweep_process(args: list[str], data_root: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "GNN_BENCH_DATA": str(data_root)}
    return subprocess.Popen([sys.executable, "-m", "bench.sweep", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def owner_pid(lock: Path) -> int | None:
    try:
        return json.loads(lock.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_two_harnesses_on_one_sweep_run_the_trial_once_and_say_so(tmp_path, tiny_root):
    args = ["workers=1", "epochs=3", "dataset=tiny", "sweep_name=conc", "results_dir=res"]
    first = sweep_process(args, tiny_root, tmp_path)
    second = None
    try:
        deadline = time.monotonic() + 300
        locks = []
        while not locks or owner_pid(locks[0]) != first.pid:  # the first harness owns the trial
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
            time.sleep(0.05)
            locks = list((tmp_path / "res" / "conc").glob("*/.lock"))
        second = sweep_process(args, tiny_root, tmp_path)
        out_first, _ = first.communicate(timeout=900)
        out_second, _ = second.communicate(timeout=900)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert first.returncode == 0 and second.returncode == 0, out_first + out_second
    (trial,) = [d for d in (tmp_path / "res" / "conc").iterdir() if (d / "config.yaml").exists()]
    assert f"[1/1] {trial.name}: done in" in out_first
    assert f"[1/1] {trial.name}: run by another harness (pid {first.pid} on " in out_second
    assert f"[1/1] {trial.name}: succeeded in the harness it waited for, skipped" in out_second
    log = (trial / "logs" / "workers.log").read_text()
    assert log.count("[harness] attempt ") == 1 and log.count("epoch 3/3") == 1  # trained once
    assert json.loads((trial / "result.json").read_text())["status"] == "succeeded"
    assert not held(trial / ".lock")


def test_the_parallel_launcher_cannot_run_one_trial_twice(tmp_path, tiny_root):
    """Two jobs of one sweep that are the same trial (seed=0,0), run by two pool processes."""
    args = ["hydra/launcher=bench_parallel", "backend.max_parallel=2", "workers=1", "epochs=2",
            "seed=0,0", "dataset=tiny", "sweep_name=par", "results_dir=res", "-m"]
    proc = sweep_process(args, tiny_root, tmp_path)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    (trial,) = [d for d in (tmp_path / "res" / "par").iterdir() if (d / "config.yaml").exists()]
    log = (trial / "logs" / "workers.log").read_text()
    assert log.count("[harness] attempt ") == 1 and log.count("epoch 2/2") == 1, log
    assert out.count(f"{trial.name}: done in") == 1
    # The other job waited for it (or came after it): either way it took its result.
    assert (f"{trial.name}: succeeded in the harness it waited for, skipped" in out
            or f"{trial.name}: already succeeded, skipped" in out), out
