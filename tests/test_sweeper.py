"""The ``bench`` sweeper (hydra_plugins/bench_sweeper): every job of a multirun composed and
checked before the first runs, each composed once at most (a job that differs from one composed
before in plain values alone is derived from it), in the basic sweeper's order.

Each case runs ``bench.sweep`` in a fresh interpreter whose trials only record themselves
(``bench.trial.run_trial`` replaced) and which counts Hydra's compositions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import atexit, collections, json, runpy, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.types import RunMode
import bench.trial

runs, compositions = [], collections.Counter()
load = ConfigLoaderImpl.load_configuration

def counted(self, config_name, overrides, run_mode, *args, **kwargs):
    compositions[run_mode.name] += 1
    return load(self, config_name, overrides, run_mode, *args, **kwargs)

ConfigLoaderImpl.load_configuration = counted
bench.trial.run_trial = lambda cfg, index, total, **_: runs.append(
    [index, total, cfg.workers, cfg.epochs])
atexit.register(lambda: print(json.dumps({"runs": runs, "compositions": compositions})))
sys.argv = ["bench.sweep", *sys.argv[1:]]
runpy.run_module("bench.sweep", run_name="__main__", alter_sys=True)
"""
REPO = Path(__file__).resolve().parent.parent


def _sweep(tmp_path: Path, *args: str,
           script: str = _SCRIPT) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = subprocess.run(
        [sys.executable, "-c", script, "dataset=tiny", f"results_dir={tmp_path}/res",
         "sweep_name=s", "progress=false", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    lines = [line for line in out.stdout.splitlines() if line.startswith('{"runs"')]
    return out, json.loads(lines[-1])


def test_every_job_is_composed_once_in_the_basic_sweepers_order(tmp_path):
    out, seen = _sweep(tmp_path, "workers=1,2", "epochs=2,3", "-m")
    assert out.returncode == 0, out.stderr
    assert seen["runs"] == [[0, 4, 1, 2], [1, 4, 1, 3], [2, 4, 2, 2], [3, 4, 2, 3]]
    # No composition of a job: the 4 differ from the master config only in the workers and
    # epochs it leaves out, and are derived from it (compared with their compositions below);
    # the launcher runs the sweeper's, and the trainer's arguments need none (every value spelt
    # out). One a job, and again for the launcher, would make 8.
    assert seen["compositions"].get("RUN", 0) == 0
    # The master config once: Hydra's probe of hydra.mode (a second one) is skipped, and the
    # sweep is still Hydra's multirun, with the override Hydra adds then.
    assert seen["compositions"]["MULTIRUN"] == 1
    multirun = (tmp_path / "res" / "s" / "multirun.yaml").read_text()
    assert "mode: MULTIRUN" in multirun and "- hydra.mode=MULTIRUN" in multirun, multirun


# Every job's config as the preflight gets it, against Hydra's composition of that job.
_COMPARE = """
import atexit, json, runpy, sys
from omegaconf import OmegaConf
import bench.preflight, bench.trial

report, check_jobs = [], bench.preflight.check_jobs

class Compared:
    def __init__(self, loader):
        self.loader = loader
    def __getattr__(self, name):
        return getattr(self.loader, name)
    def load_sweep_config(self, master, overrides):
        got = self.loader.load_sweep_config(master, overrides)
        want = self.loader.loader.load_sweep_config(master, list(overrides))
        report.append({"derived": all(got is not c for _, c in self.loader.composed),
                       "equal": OmegaConf.to_container(got, resolve=False)
                       == OmegaConf.to_container(want, resolve=False),
                       "struct": OmegaConf.is_struct(got) and OmegaConf.is_struct(want),
                       "workers": got.workers, "poll": got.backend.poll_interval_s,
                       "task": list(got.hydra.overrides.task),
                       "dirname": got.hydra.job.override_dirname})
        return got

bench.preflight.check_jobs = lambda loader, master, jobs: check_jobs(Compared(loader), master, jobs)
bench.trial.run_trial = lambda cfg, index, total, **_: None
atexit.register(lambda: print(json.dumps({"runs": report})))
sys.argv = ["bench.sweep", *sys.argv[1:]]
runpy.run_module("bench.sweep", run_name="__main__", alter_sys=True)
"""


def test_a_job_derived_from_another_is_its_composition(tmp_path):
    out, seen = _sweep(tmp_path, "model=sage,sage_seed", "workers=1,2",
                       "backend.poll_interval_s=0.5,1.0", "-m", script=_COMPARE)
    assert out.returncode == 0, out.stderr
    jobs = seen["runs"]
    # A composition for each model (a config group); the workers and the nested backend key
    # are plain values, so the 3 other jobs of each model are derived.
    assert [job["derived"] for job in jobs] == [False, True, True, True] * 2
    assert all(job["equal"] and job["struct"] for job in jobs), jobs
    assert [(job["workers"], job["poll"]) for job in jobs[:4]] == [
        (1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
    assert {"model=sage", "workers=2", "backend.poll_interval_s=1.0"} <= set(jobs[3]["task"])
    assert not {"workers=1", "backend.poll_interval_s=0.5"} & set(jobs[3]["task"])
    assert "workers=2" in jobs[3]["dirname"] and "workers=1" not in jobs[3]["dirname"]

    # Plain keys swept, and nothing else: every job derived from the master config, the first
    # too (its progress=false is the sweeper's progress=False, a plain value as well).
    out, seen = _sweep(tmp_path, "workers=1,2", "backend.poll_interval_s=0.5,1.0", "-m",
                       script=_COMPARE)
    assert out.returncode == 0, out.stderr
    assert [job["derived"] for job in seen["runs"]] == [True] * 4
    assert all(job["equal"] and job["struct"] for job in seen["runs"]), seen["runs"]
    assert [(job["workers"], job["poll"]) for job in seen["runs"]] == [
        (1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
    assert "workers=1,2" not in seen["runs"][0]["task"]

    # A dict value merges with what it replaces, and a key under another override's: composed.
    out, seen = _sweep(tmp_path, "train.lr=0.01,0.02", "train={lr:0.5}", "-m", script=_COMPARE)
    assert out.returncode == 0, out.stderr
    assert [job["derived"] for job in seen["runs"]] == [False, False]
    assert all(job["equal"] for job in seen["runs"]), seen


def test_a_master_config_with_a_group_left_unchosen_is_no_base() -> None:
    # Hydra's multirun composition skips a group left ??? (a job's composition fails on it).
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from hydra_plugins.bench_sweeper.bench_sweeper import SetValues

    derive = SetValues(loader=None, parser=OverridesParser.create())
    master = OmegaConf.create({"workers": 2, "hydra": {
        "overrides": {"task": ["workers=1,2"]}, "runtime": {"choices": {"dataset": "tiny"}}}})
    [(task, config)] = derive._master(master)
    assert config is master and [o.input_line for o in task] == ["workers=1,2"]
    master.hydra.runtime.choices.model = "???"
    derive = SetValues(loader=None, parser=OverridesParser.create())  # a sweep of that master
    assert derive._master(master) == []


def test_an_experiments_grid_is_swept_and_a_command_line_sweep_replaces_its_key(tmp_path):
    out, seen = _sweep(tmp_path, "experiment=table1", "-m")
    assert out.returncode == 0, out.stderr
    assert [run[2:] for run in seen["runs"]] == [[w, e] for w in (2, 4, 6) for e in (10, 30)]
    assert {run[1] for run in seen["runs"]} == {6}

    out, seen = _sweep(tmp_path, "experiment=table1", "workers=1", "-m")
    assert out.returncode == 0, out.stderr
    assert [run[2:] for run in seen["runs"]] == [[1, 10], [1, 30]]


def test_a_bad_job_anywhere_stops_the_sweep_before_any_runs(tmp_path):
    out, seen = _sweep(tmp_path, "workers=1,2", "epochs=2,0", "-m")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: epochs=0 is invalid: it must be >= 1 (e.g. epochs=10) (trial dataset=tiny "
        f"results_dir={tmp_path}/res sweep_name=s progress=False workers=1 epochs=0)")
    assert seen["runs"] == []
    assert not (tmp_path / "res").exists()  # not even the sweep's multirun.yaml
