"""A failure no restart can fix fails the local trial at once, in the trainer's own words; one a
restart can fix (a killed worker: tests/test_faults.py, tests/test_backend_conformance.py) is
restarted. Real torchrun jobs of two workers with ``backend.backoff_limit=3``: "at once" is
``restarts == 0`` and one torchrun start in the workers' log."""

from __future__ import annotations

from pathlib import Path

from conftest import dataset_dir

from bench.backends import backend_for
from bench.backends.base import JobState, wait
from bench.config import compose, split, validate
from bench.layout import TrialDir


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
    spec.trainer_overrides.append("model.fanouts=[10,5]")  # past the harness's own checks
    handle, status = run_to_end(backend, spec)
    assert status.state is JobState.FAILED and status.restarts == 0
    assert status.reason == ("model.fanouts has 2 entries but model.num_layers=3: give one "
                             "fan-out per layer, e.g. model.fanouts=[15,10,5]")
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
