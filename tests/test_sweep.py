"""The main job end to end: `python -m bench.sweep ... -m` as a user runs it (real torchrun jobs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.result import load_results

REPO = Path(__file__).resolve().parent.parent


def sweep(args: list[str], data_root: Path, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "GNN_BENCH_DATA": str(data_root)}
    return subprocess.run(
        [sys.executable, "-m", "bench.sweep", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """The tiny dataset generated once for this module (workers would do it on first use)."""
    root = tmp_path_factory.mktemp("data")
    out = subprocess.run(
        [sys.executable, "-m", "trainer.data", "prepare", "dataset=tiny", f"data_root={root}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return root


BAD_VALUES = [
    ("workers=0", "workers=0 is invalid"),
    ("epochs=-1", "epochs=-1 is invalid"),
    ("workers=abc", "workers=abc is invalid"),
    ("backend=nope", "backend=nope is unknown"),
    ("dataset=nope", "dataset=nope is unknown"),
    ("model.fanouts=[10,5,3]", "model.fanouts has 3 entries"),
    ("train.batch_size=0", "train.batch_size=0 is invalid"),
    ("nokey=1", "nokey is not a config key"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES)
def test_bad_values_fail_at_compose_time_with_one_line(tmp_path, override, message):
    out = sweep([override, "results_dir=res"], tmp_path / "data", tmp_path, timeout=600)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert not (tmp_path / "res").exists() and not (tmp_path / "data").exists()


def test_a_bad_value_anywhere_in_the_grid_stops_the_whole_multirun(tmp_path):
    out = sweep(["workers=2,0", "epochs=1", "results_dir=res", "-m"], tmp_path / "data", tmp_path, timeout=600)
    assert out.returncode == 2
    assert "workers=0 is invalid" in out.stderr and "(trial" in out.stderr
    assert not (tmp_path / "res").exists()


def test_two_trial_multirun_writes_results_and_table_then_skips_on_rerun(tmp_path, tiny_root):
    args = ["dataset=tiny", "workers=1,2", "epochs=2", "sweep_name=s", "results_dir=res", "-m"]
    out = sweep(args, tiny_root, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "\r" not in out.stdout  # no live progress line when stdout is not a terminal

    results = load_results(tmp_path / "res" / "s")
    assert [(r["workers"], r["epochs"], r["status"]) for r in results] == [(1, 2, "succeeded"), (2, 2, "succeeded")]
    for r in results:
        trial = tmp_path / "res" / "s" / r["trial_id"]
        assert r["val_mrr"] > 0.015  # random ranking gives ~0.0075
        assert 0.5 <= r["val_accuracy"] <= 1.0
        assert len(r["epoch_times_s"]) == 2 and all(t > 0 for t in r["epoch_times_s"])
        assert 0 < r["time_startup_s"] < r["time_total_s"]
        assert sum(r["epoch_times_s"]) < r["time_total_s"]
        assert [s for s, _ in r["curves"]["val/mrr"]] == [1, 2]
        # The event files are the source of the metrics: the trainer's summary must agree.
        summary = json.loads((trial / "summary.json").read_text())
        assert r["val_mrr"] == pytest.approx(summary["val_mrr"], rel=1e-6)
        assert r["test_mrr"] == pytest.approx(summary["test_mrr"], rel=1e-6)
        # One resource series per worker, with real numbers.
        assert set(r["cpu_cores"]) == {f"rank{i}" for i in range(r["workers"])}
        for worker in r["memory_mib"].values():
            assert 100 < worker["mean"] <= worker["peak"] < 4096
        csv_rows = (trial / "resources.csv").read_text().strip().splitlines()
        assert csv_rows[0] == "t,worker,cpu_cores,rss_mib" and len(csv_rows) > r["workers"]
        assert r["config"]["workers"] == r["workers"] and r["env"]["torch"]
        assert (trial / "config.yaml").exists() and list((trial / "events").glob("events.out.tfevents.*"))
        assert r["threads_per_worker"] == max(1, (os.cpu_count() or 1) // r["workers"])

    table = (tmp_path / "res" / "s" / "table.md").read_text().splitlines()
    assert table[0].startswith("| No. of workers | Epochs |")
    assert table[4] == ""  # header, rule, two rows, then the reference rows and notes
    assert table[2].startswith("| 1 | 2 |") and table[3].startswith("| 2 | 2 |")
    assert table[5].startswith("Reference rows: parameter-free methods")
    assert any(line.startswith("| Adamic-Adar | ") for line in table[6:])
    assert any("not on ogbl-citation2's scale" in line for line in table[6:])
    assert f"{results[0]['val_mrr']:.4f}" in table[2]
    assert "Table 1" in out.stdout

    again = sweep(args, tiny_root, tmp_path)
    assert again.returncode == 0
    assert again.stdout.count("already succeeded, skipped") == 2
    assert [r["finished_at"] for r in load_results(tmp_path / "res" / "s")] == [r["finished_at"] for r in results]


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_root):
    # The second data_root holds a corrupt dataset cache: its trial fails on every rank.
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(tiny_root), str(broken)], check=True)
    x_file = next(broken.glob("tiny-*/cache/x.npy"))
    x_file.write_bytes(x_file.read_bytes()[:100])
    args = ["dataset=tiny", "workers=2", "epochs=1", f"data_root={broken},{tiny_root}",
            "backend.backoff_limit=0", "sweep_name=f", "results_dir=res", "-m"]
    out = sweep(args, tiny_root, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    results = {r["config"]["data_root"]: r for r in load_results(tmp_path / "res" / "f")}
    failed, ok = results[str(broken)], results[str(tiny_root)]
    assert failed["status"] == "failed"
    assert "is corrupt" in failed["reason"] and "delete" in failed["reason"]
    assert "corrupt" in failed["log_tail"]
    assert failed["val_mrr"] is None
    assert ok["status"] == "succeeded" and ok["val_mrr"] > 0.015
    table = (tmp_path / "res" / "f" / "table.md").read_text()
    assert "failed: the dataset cache" in table


def test_progress_line_shows_trial_epoch_and_mrr(tmp_path, capsys):
    from bench.backends.base import JobState, JobStatus
    from bench.progress import Progress
    from rundir import CheckpointInfo

    CheckpointInfo(2, 0.0, 0.2345).write(tmp_path)  # as the trainer writes it after epoch 2
    progress = Progress(2, 6, "w4-e10", 10, enabled=True)
    progress.update(JobStatus(JobState.RUNNING), lambda: CheckpointInfo.read(tmp_path))
    line = capsys.readouterr().out
    assert line.startswith("\r[3/6] w4-e10 running epoch 2/10 val MRR 0.2345")
    quiet = Progress(0, 1, "x", 1, enabled=False)
    quiet.update(JobStatus(JobState.RUNNING), lambda: CheckpointInfo.read(tmp_path))
    assert capsys.readouterr().out == ""


def test_threads_rule_never_oversubscribes_unless_workers_exceed_cores():
    from bench.backends.local import threads_per_worker

    cases = [(1, 2, 2), (2, 2, 1), (6, 2, 1), (2, 16, 8), (3, 16, 5)]
    for workers, cores, expected in cases:
        assert threads_per_worker(workers, cores) == expected
        assert workers * threads_per_worker(workers, cores) <= max(cores, workers)


def test_a_killed_worker_is_restarted_and_training_resumes(tmp_path, tiny_root):
    """restartPolicy OnFailure, locally: torchrun restarts the group, the trainer resumes."""
    import signal
    import time

    import psutil

    args = ["dataset=tiny", "workers=2", "epochs=6", "sweep_name=k", "results_dir=res"]
    env = {**os.environ, "GNN_BENCH_DATA": str(tiny_root)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.sweep", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        checkpoint = None
        while checkpoint is None and time.monotonic() < deadline:
            checkpoint = next((tmp_path / "res" / "k").glob("*/run/checkpoints/last.pt"), None)
            time.sleep(0.2)
        assert checkpoint is not None, "no checkpoint appeared"
        victim = next(
            p for p in psutil.Process(proc.pid).children(recursive=True)
            if p.environ().get("RANK") == "1" and "trainer" in " ".join(p.cmdline())
        )
        victim.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    (result,) = load_results(tmp_path / "res" / "k")
    assert result["status"] == "succeeded", result["reason"]
    assert result["restarts"] >= 1
    assert [s for s, _ in result["curves"]["val/mrr"]] == [1, 2, 3, 4, 5, 6]
    log = (tmp_path / "res" / "k" / result["trial_id"] / "logs" / "workers.log").read_text()
    assert "resuming from" in log
