"""One split of a composed job (bench/config.py) and the spec a backend plans from it."""

from __future__ import annotations

import pytest

from bench.backends import backend_for
from bench.config import compose, split, validate
from bench.store import WHERE_AND_HOW
from trainer.config import compose as compose_trainer
from trainer.config import resolve_plain, trainer_keys

CASES = [
    ["dataset=tiny"],
    ["dataset=tiny", "train.lr=0.01", "model.fanouts=[5,-1]", "train.steps_per_epoch=7"],
    ["dataset=small", "model=sage_seed", "seed=3", "epochs=11", "model.dropout=0.25"],
    ["dataset=tiny", "data_root='/tmp/a b,c\\'d'", "train.exclude_target_edges=false",
     "train.eval_sources=null", "dataset.avg_degree=7.5", "workers=3"],
    ["dataset=tiny", "backend=k8s", "workers=4", "backend.cpu=3"],
]


@pytest.mark.parametrize("overrides", CASES, ids=[" ".join(c) for c in CASES])
def test_the_trainers_arguments_compose_back_to_the_trials_slice(overrides, tmp_path):
    cfg = compose([*overrides, "sweep_name=s", f"results_dir={tmp_path}"])
    validate(cfg)
    trial = split(cfg)
    spec = backend_for(trial.backend).plan(trial)
    assert spec.trainer["run_dir"] == spec.run_dir
    assert spec.trainer["train"]["threads"] == spec.threads_per_worker
    assert resolve_plain(compose_trainer(spec.trainer_overrides)) == spec.trainer
    assert [o.split("=")[0] for o in spec.trainer_overrides[-5:]] == [
        "epochs", "seed", "data_root", "run_dir", "train.threads"]


def test_the_slice_is_the_trainers_keys_and_the_harness_part_the_rest():
    cfg = compose(["dataset=tiny", "workers=3", "sweep_name=s", "fault.kill_at_epoch=1"])
    trial = split(cfg)
    assert set(trial.trainer) == set(trainer_keys())
    assert not {"workers", "backend", "fault", "sweep_name"} & set(trial.trainer)
    assert trial.workers == 3 and trial.fault.kill_at_epoch == 1
    assert type(trial.backend).__name__ == "LocalConfig"


def test_the_identity_leaves_out_where_and_how_and_all_of_the_backend_but_its_name(tmp_path):
    base = ["dataset=tiny", "sweep_name=a"]
    first = split(compose(base))
    same = [f"results_dir={tmp_path}", "redo=true", "progress=false", "sweep_name=b",
            "run_dir=x", "backend.poll_interval_s=2", "backend.timeout_s=10"]
    assert all(k in WHERE_AND_HOW for k in ("sweep_name", "results_dir", "redo", "progress"))
    assert split(compose([*base, *same])).config_key == first.config_key
    for other in ("workers=3", "seed=1", "train.lr=0.5", "backend=k8s", f"data_root={tmp_path}"):
        assert split(compose([*base, other])).config_key != first.config_key, other
