"""Admission before launch (bench/backends/local/admission.py): a local trial that cannot fit this
machine's memory or disk is refused with one line naming the numbers and the fix, before
anything is written; ``backend.allow_overcommit=true`` overrides."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import dataset_dir

from bench.backends import backend_for
from bench.backends.local import admission
from bench.backends.local.admission import Footprint, Need
from bench.config import compose, split, validate
from trainer.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def trial_of(*overrides: str):
    cfg = compose(["dataset=tiny", "sweep_name=a", *overrides])
    validate(cfg)
    return split(cfg)


# ------------------------------------------------------------------ the estimate's parts


@pytest.mark.parametrize("predictor", ["dot", "mlp"])
def test_the_checkpoint_estimate_is_the_size_torch_saves(predictor):
    """What Trainer.save_checkpoint writes, for the tiny preset's model, after one step."""
    import torch

    from trainer.config import compose as trainer_compose
    from trainer.model import LinkModel

    cfg = trainer_compose(["dataset=tiny", f"model.predictor={predictor}"])
    model = LinkModel(cfg.dataset.feat_dim, cfg.model)
    optimizer = torch.optim.Adam(model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # Adam's two moments now exist
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
                "rng": torch.get_rng_state(), "history": [{"val/mrr": 0.1}] * 10}, buf)
    estimate = admission.checkpoint_bytes(dict(cfg.model), cfg.dataset.feat_dim)
    assert buf.tell() <= estimate <= 1.1 * buf.tell()


def test_the_cache_is_read_when_prepared_and_estimated_from_above_when_not(tiny_root, tmp_path):
    dataset = dict(trial_of().trainer["dataset"])
    real = sum(f.stat().st_size for f in (dataset_dir(tiny_root) / "cache").iterdir())
    assert admission.cache_size(dataset, str(tiny_root)) == (real, True)
    estimate, measured = admission.cache_size(dataset, str(tmp_path))  # nothing prepared there
    assert not measured and real <= estimate <= 1.5 * real
    other = {**dataset, "num_nodes": dataset["num_nodes"] + 500}  # another shape's cache
    assert admission.cache_size(other, str(tiny_root))[1] is False
    assert admission.estimated_cache_bytes({"synthetic": False}) > 3 * 2**30  # ogbl-citation2


def test_the_footprint_is_what_its_benchmark_measured():
    saved = json.loads((REPO / "benchmarks" / "results" / "footprint.json").read_text())
    constants = saved["figures"]["constants"]
    footprint = Footprint.load()
    assert footprint == Footprint(constants["base_mib"], constants["scale_mib"],
                                  constants["exponent"], constants["shared_mib"])
    for point in saved["figures"]["points"].values():  # an upper envelope of what it measured
        assert footprint.worker_mib(point["cache_mib"]) >= point["worker_uss_peak_mib"] - 0.1
    assert 200 < footprint.base_mib < 1500 and 0 < footprint.exponent <= 1.0


# ------------------------------------------------------------------ the decision, table-driven

NEED = Need(workers=64, worker_mib=400.0, shared_mib=100.0, cache_mib=2.0, cache_measured=True,
            disk_mib=9.7)
REFUSALS = [
    # name, need, available MiB, free disk MiB, expected words (None: it fits)
    ("fits", Need(2, 400.0, 100.0, 2.0, True, 9.7), 20480.0, 1000.0, None),
    ("memory", NEED, 20480.0, 1000.0,
     "workers=64 does not fit this machine's memory: it needs about 25.1 GiB (64 workers x 400 "
     "MiB + 100 MiB shared + 2 MiB of dataset tiny's cache) and 20.0 GiB is available: use "
     "workers=50 or fewer, a larger machine or backend=k8s (backend.allow_overcommit=true runs "
     "it anyway)"),
    ("not even one worker", Need(1, 30000.0, 100.0, 9000.0, False, 9.7), 20480.0, 1000.0,
     "(estimated)) and 20.0 GiB is available: use a smaller dataset, a larger machine"),
    ("disk", Need(2, 400.0, 100.0, 2.0, True, 9.7), 20480.0, 0.29,
     "results_dir=res has 297 KiB free and the trial needs about 9.7 MiB (checkpoints, events, "
     "logs): free space there or set results_dir=<a folder on a larger disk> "
     "(backend.allow_overcommit=true runs it anyway)"),
]


@pytest.mark.parametrize(("name", "need", "available", "free", "words"), REFUSALS,
                         ids=[c[0] for c in REFUSALS])
def test_refusals_name_the_numbers_and_the_fix(name, need, available, free, words):
    line = admission.refusal(need, "tiny", "res", available, free)
    if words is None:
        assert line is None
    else:
        assert words in line and "\n" not in line, line


def test_workers_that_fit_is_the_most_the_memory_holds():
    assert NEED.workers_that_fit(20480.0) == 50
    assert NEED.memory_mib == 64 * 400 + 100 + 2
    assert Need(50, 400.0, 100.0, 2.0, True, 1.0).memory_mib <= 20480.0 < \
        Need(51, 400.0, 100.0, 2.0, True, 1.0).memory_mib


# ------------------------------------------------------------------ the check, for real


def too_many_workers() -> int:
    """More workers than this machine's whole memory could hold at the measured per-process
    constant, whatever the machine."""
    total_mib = psutil.virtual_memory().total / 2**20
    return math.ceil(2 * total_mib / Footprint.load().base_mib)


def test_a_trial_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, tiny_root):
    workers = too_many_workers()
    env = {**os.environ, "GNN_BENCH_DATA": str(tiny_root)}
    out = subprocess.run([sys.executable, "-m", "bench.sweep", f"workers={workers}",
                          "dataset=tiny", "results_dir=res", "sweep_name=big"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: workers={workers} does not fit this machine's memory: it "
                           f"needs about "), line
    assert "is available: use workers=" in line and "backend=k8s" in line
    assert "backend.allow_overcommit=true runs it anyway" in line
    assert out.stdout == "" and not (tmp_path / "res").exists()


def test_allow_overcommit_lets_it_through(tiny_root, tmp_path):
    workers = too_many_workers()
    common = [f"workers={workers}", f"data_root={tiny_root}", f"results_dir={tmp_path}"]
    refused = trial_of(*common)
    with pytest.raises(ConfigError, match=f"workers={workers} does not fit"):
        backend_for(refused.backend).preflight(refused)
    allowed = trial_of(*common, "backend.allow_overcommit=true")
    backend_for(allowed.backend).preflight(allowed)  # no error
    assert allowed.config_key == refused.config_key  # how it is run, not what it computes
