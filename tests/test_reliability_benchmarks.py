"""The pure parts of benchmarks/footprint.py (the admission's fit) and benchmarks/chaos.py (the
soak's verdict), with made-up measurements."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks.chaos import Fault, Soak, check
from benchmarks.footprint import fit, worker_estimate


def point(cache: float, uss: float, shared: float = 100.0) -> dict[str, float]:
    return {"cache_mib": cache, "worker_uss_peak_mib": uss, "shared_peak_mib": shared}


def test_the_fit_bounds_every_point_from_above():
    points = [point(2.0, 400.0), point(5.0, 420.0, 90.0), point(250.0, 1150.0),
              point(3700.0, 5900.0)]
    constants = fit(points)
    assert constants["base_mib"] == 420.0  # the larger of the small-cache workers
    # The growth exponent through the two largest caches: (5480 / 730) = (3700 / 250) ** e.
    assert constants["exponent"] == pytest.approx(0.7486, abs=1e-3)
    assert constants["shared_mib"] == 100.0
    for p in points:
        assert worker_estimate(constants, p["cache_mib"]) >= p["worker_uss_peak_mib"] - 0.5


def test_with_one_large_point_the_growth_is_linear():
    constants = fit([point(2.0, 400.0), point(250.0, 1150.0)])
    assert constants["exponent"] == 1.0 and constants["scale_mib"] == pytest.approx(3.0)


def write_trial(sweep: Path, name: str, result: dict | None) -> None:
    folder = sweep / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("x: 1\n")
    if result is not None:
        (folder / "result.json").write_text(json.dumps(result))


def ok(mrr: float, recoveries: list[dict] | None = None) -> dict:
    recoveries = recoveries or []
    return {"status": "succeeded", "val_mrr": mrr, "recoveries": recoveries,
            "restarts": sum(r["kind"] == "restart" for r in recoveries)}


def soak_in(tmp_path: Path, faults: list[Fault]) -> Soak:
    args = argparse.Namespace(seed=1, faults_per_trial=2)
    soak = Soak(args, tmp_path, tmp_path / "data")
    soak.faults = faults
    return soak


RESTART = {"at": 20.0, "kind": "restart", "epoch": 2, "detail": "rank 1 ..."}
VERDICTS = [
    # name, chaos results (None: no result.json), faults that hit trial "a", expected problems
    ("all well", {"a": ok(0.05, [RESTART]), "b": ok(0.04)}, [10.0], []),
    ("a fault not recorded", {"a": ok(0.05), "b": ok(0.04)}, [10.0], ["a: 1 faults hit it"]),
    ("a recovery without a fault", {"a": ok(0.05, [RESTART]), "b": ok(0.04, [RESTART])}, [10.0],
     ["b: no fault hit it"]),
    ("recorded before the fault", {"a": ok(0.05, [RESTART]), "b": ok(0.04)}, [30.0],
     ["a: a recovery recorded before the first fault"]),
    ("MRR off", {"a": ok(0.08, [RESTART]), "b": ok(0.04)}, [10.0], ["a: val MRR 0.08 vs 0.05"]),
    ("failed", {"a": {"status": "failed", "reason": "boom"}, "b": ok(0.04)}, [10.0],
     ["a: failed: boom"]),
    ("missing", {"a": ok(0.05, [RESTART]), "b": None}, [10.0], ["b: 0 result files"]),
]


@pytest.mark.parametrize(("name", "chaos", "fault_times", "expected"), VERDICTS,
                         ids=[v[0] for v in VERDICTS])
def test_the_soaks_verdict(tmp_path, name, chaos, fault_times, expected):
    for trial, result in chaos.items():
        write_trial(tmp_path / "res" / "chaos", trial, result)
    clean = {"a": ok(0.05), "b": ok(0.04)}
    readable = {t: r or {} for t, r in chaos.items()}
    soak = soak_in(tmp_path, [Fault("worker", t, "a", True) for t in fault_times]
                   + [Fault("worker", 1.0, "b", False)])  # a kill that missed counts for nothing
    problems = check(soak, clean, readable, 2, 0.02)
    assert len(problems) == len(expected), problems
    for words, problem in zip(expected, problems, strict=True):
        assert problem.startswith(words), problems


def test_every_kind_of_fault_comes_in_each_cycle_and_a_hit_trial_is_spared(tmp_path):
    soak = soak_in(tmp_path, [Fault("worker", 1.0, "a", True), Fault("sigint", 2.0, "a", True),
                              Fault("worker", 3.0, "b", False)])
    drawn = [soak.next_kind() for _ in range(2 * len(Soak.KINDS))]
    for cycle in (drawn[: len(Soak.KINDS)], drawn[len(Soak.KINDS):]):
        assert sorted(cycle) == sorted(Soak.KINDS)
    assert (soak.hits("a"), soak.hits("b")) == (2, 0)  # a kill that missed is no hit
