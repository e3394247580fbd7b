"""A failure no restart can fix fails the local trial at once, in the trainer's own words; one a
restart can fix (a killed worker: tests/test_faults.py, tests/test_backend_conformance.py) is
restarted. Real torchrun jobs of two workers with ``backend.backoff_limit=3``: "at once" is
``restarts == 0`` and one torchrun start in the workers' log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import dataset_dir

from bench.backends import backend_for
from bench.backends.base import JobState, wait
from bench.config import compose, split, validate
from bench.layout import TrialDir
from rundir import FailureRecord


def planned(results: Path, *overrides: str):
    cfg = compose(["dataset=tiny", "workers=2", "epochs=2", "sweep_name=p",
                   f"results_dir={results}", "backend.backoff_limit=3",
                   "backend.poll_interval_s=0.2", *overrides])
    validate(cfg)
    trial = split(cfg)
    trial.trial_dir.mkdir(parents=True, exist_ok=True)
    backend = backend_for(trial.backend)
    return backend, backend.plan(trial)


def run_to_end(backend, spec):
    handle = backend.submit(spec)
    status = wait(handle, 600, 0.2)
    handle.release()
    return handle, status


def attempts(spec) -> int:
    """torchrun attempts in the workers' log (the local handle heads each with a line)."""
    log = TrialDir(spec.trial_dir).workers_log.read_text(errors="replace")
    return log.count("[harness] attempt ")


def test_a_bad_trainer_value_reaching_the_workers_fails_at_once(tmp_path, tiny_root):
    backend, spec = planned(tmp_path, f"data_root={tiny_root}")
    spec.trainer_overrides.append("model.fanouts=[10,5,5]")  # past the harness's own checks
    handle, status = run_to_end(backend, spec)
    assert status.state is JobState.FAILED and status.restarts == 0
    assert status.reason == ("model.fanouts has 3 entries but model.num_layers=2: give one "
                             "fan-out per layer, e.g. model.fanouts=[15,10]")
    codes = {r.code for r in handle.records()}
    assert codes == {2}  # each rank that got that far said so; torchrun stopped the others
    assert attempts(spec) == 1


def test_a_corrupt_dataset_cache_fails_at_once(tmp_path, private_root):
    cache = dataset_dir(private_root) / "cache"
    (cache / "indptr.npy").write_bytes((cache / "indptr.npy").read_bytes()[:200])
    backend, spec = planned(tmp_path, f"data_root={private_root}")
    handle, status = run_to_end(backend, spec)
    assert status.state is JobState.FAILED and status.restarts == 0
    assert status.reason.startswith(f"the dataset cache {cache} is corrupt (")
    assert status.reason.endswith("delete that folder and run again to rebuild it")
    assert {r.code for r in handle.records()} == {3}
    assert attempts(spec) == 1


def sweep(args: list[str], data_root: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GNN_BENCH_DATA": str(data_root)}
    return subprocess.run([sys.executable, "-m", "bench.sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_a_full_disk_is_refused_by_admission_and_fails_a_trial_at_once(tmp_path, tiny_root,
                                                                        small_disk):
    """results_dir on a 300 KiB filesystem. Admission refuses the sweep (a checkpoint alone is
    ~4 MiB); told to run it anyway, the first checkpoint fills the disk and the trial fails
    with the trainer's line, without a restart."""
    disk = small_disk("300k")
    args = ["dataset=tiny", "workers=2", "epochs=3", "sweep_name=full", f"results_dir={disk}",
            "backend.backoff_limit=3"]
    refused = sweep(args, tiny_root, tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: results_dir={disk} has 300 KiB free and the trial needs "
                           "about "), line
    needed = float(line.split("needs about ")[1].split(" MiB")[0])
    assert 4 < needed < 50  # two checkpoints of ~3.8 MiB (tested in test_admission.py) and logs
    assert "backend.allow_overcommit=true" in line
    assert list(disk.iterdir()) == []  # nothing written

    out = sweep([*args, "backend.allow_overcommit=true"], tiny_root, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr  # a failed trial does not fail a sweep
    (trial,) = [d for d in (disk / "full").iterdir() if (d / "config.yaml").exists()]
    result = json.loads((trial / "result.json").read_text())
    expected = (f"no space left on device writing {trial}/run/checkpoints/last.pt: free space "
                "there, or set run_dir (results_dir in a sweep) to a folder on a larger disk")
    assert result["status"] == "failed" and result["restarts"] == 0, result["reason"]
    assert result["reason"] == expected
    assert f"FAILED: {expected}" in out.stdout
    records = [FailureRecord.read(p) for p in sorted((trial / "logs" / "failures").iterdir())]
    assert records[0].code == 4 and records[0].rank == 0  # rank 0 writes checkpoints
    assert all(r is None or r.code in (4, 200) for r in records)  # rank 1: lost its peer
    assert (trial / "logs" / "workers.log").read_text().count("[harness] attempt ") == 1
