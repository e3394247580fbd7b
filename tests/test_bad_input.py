"""Bad input, everywhere a user can give it: one table, one real process per case.

Each case runs a command as a user would (``python -m bench.sweep``, ``python -m trainer``,
``python -m trainer.data``, ``python -m bench.report``) in a fresh folder and asserts:

* the exit code (2: bad input, checked before anything runs; 3: a bad file found while running);
* the last line of stderr is ``error: <the problem and the fix>`` (the expected words), and
  there is no traceback (``--verbose`` shows one: see the last test);
* nothing was written to ``results/`` (the sweep's ``results_dir``) or, for the trainer, to its
  run folder beyond what the case put there.

Bad input that only stops one trial of a sweep (a corrupt checkpoint found by a trainer, a
trainer killed past the backoff limit) is a failed trial instead, recorded with its reason while
the sweep goes on: tests/test_sweep.py, tests/test_faults.py and tests/test_trainer_errors.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

SWEEP = ["-m", "bench.sweep", "dataset=tiny", "epochs=2", "results_dir=res"]
TRAINER = ["-m", "trainer", "dataset=tiny", "epochs=1", "run_dir=run"]
PREPARE = ["-m", "trainer.data"]
REPORT = ["-m", "bench.report"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


def kubeconfig_to_nowhere(tmp: Path) -> str:
    """A valid kubeconfig whose API server is a loopback port where nothing listens."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{closed_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }
    path = tmp / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def corrupt_checkpoint(tmp: Path) -> None:
    (tmp / "run" / "checkpoints").mkdir(parents=True)
    (tmp / "run" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")


def corrupt_dataset_cache(tmp: Path, data_root: Path) -> None:
    """A copy of the prepared tiny dataset whose cache index is garbage."""
    import shutil

    (source,) = data_root.glob("tiny-*")
    copy = tmp / "data" / source.name
    shutil.copytree(source, copy)
    (copy / "cache" / "meta.json").write_text("{not json")


def sweep_with_a_result_and_a_file(tmp: Path) -> None:
    (tmp / "res" / "s" / "w2-e2-s0-tiny-00000000").mkdir(parents=True)
    (tmp / "res" / "s" / "w2-e2-s0-tiny-00000000" / "result.json").write_text('{"status": ')
    (tmp / "afile").write_text("x")


@dataclass
class Case:
    id: str
    argv: list[str]  # after `python`; "{tmp}" is replaced by the case's folder
    message: str  # words the error line must contain
    code: int = 2
    setup: Callable[..., object] | None = None  # (tmp) or (tmp, data_root)
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # -- config values of a sweep (every job of a -m grid is checked before any runs)
    Case("workers-zero", [*SWEEP, "workers=0"], "workers=0 is invalid: it must be >= 1"),
    Case("epochs-negative-in-a-grid", [*SWEEP, "workers=1,2", "epochs=2,-1", "-m"],
         "epochs=-1 is invalid: it must be >= 1 (e.g. epochs=10) (trial dataset=tiny epochs=-1 "
         "results_dir=res workers=1)"),
    Case("workers-not-a-number", [*SWEEP, "workers=abc"], "workers=abc is invalid: it must be of type"),
    Case("unknown-backend", [*SWEEP, "backend=nope"], "backend=nope is unknown: use one of container, k8s, local, trainjob"),
    Case("unknown-dataset", [*SWEEP, "dataset=nope"], "dataset=nope is unknown: use one of"),
    Case("misspelt-key", [*SWEEP, "wokers=2"], "wokers is not a config key: check the spelling"),
    Case("override-syntax", [*SWEEP, "workers=[1,"], "cannot parse workers=[1,"),
    Case("unknown-option", [*SWEEP, "--frob"], "unknown option --frob"),
    Case("hidden-zero", [*SWEEP, "model.hidden=0"], "model.hidden=0 is invalid: it must be >= 1"),
    Case("lr-negative", [*SWEEP, "train.lr=-1"], "train.lr=-1.0 must be > 0"),
    Case("fanouts-per-layer", [*SWEEP, "model.fanouts=[15,10,5]"],
         "model.fanouts has 3 entries but model.num_layers=2"),
    Case("unknown-aggregation", [*SWEEP, "model.aggr=median"], "model.aggr=median is unknown"),
    Case("graph-too-small", [*SWEEP, "dataset.num_nodes=5"], "dataset.num_nodes=5 is too small"),
    Case("too-many-negatives", [*SWEEP, "dataset.num_neg=1500"],
         "dataset.num_neg=1500 is too many for dataset.num_nodes=2000"),
    Case("unknown-loss", [*SWEEP, "train.loss=hinge"], "train.loss=hinge is unknown: use bce or softmax"),
    Case("softmax-needs-dot", [*SWEEP, "model.predictor=mlp"],
         "train.loss=softmax scores every pair of the batch and needs model.predictor=dot"),
    Case("target-out-of-range", [*SWEEP, "dataset.target_mrr=2"], "dataset.target_mrr=2.0 must be in (0, 1]"),
    Case("fault-after-the-last-epoch", [*SWEEP, "fault.kill_at_epoch=5"],
         "fault.kill_at_epoch=5 is invalid: it must be >= 1 and < epochs=2"),
    Case("timeout-zero", [*SWEEP, "backend.timeout_s=0"], "backend.timeout_s=0.0 is invalid: it must be > 0"),
    Case("sweep-name-escapes-results", [*SWEEP, "sweep_name=../x"],
         "sweep_name=../x is invalid: it must be one folder name"),
    # -- folders and files
    Case("results-dir-is-a-file", [*SWEEP, "results_dir={tmp}/afile"],
         "results_dir={tmp}/afile cannot hold results ({tmp}/afile is a file, not a folder)",
         setup=lambda tmp: (tmp / "afile").write_text("x")),
    Case("results-dir-not-writable", [*SWEEP, "results_dir=/proc/1/res"],
         "results_dir=/proc/1/res cannot hold results (/proc/1 is not writable)"),
    Case("data-root-is-a-file", [*SWEEP, "data_root={tmp}/afile"],
         "data_root={tmp}/afile cannot hold datasets ({tmp}/afile is a file, not a folder)",
         setup=lambda tmp: (tmp / "afile").write_text("x")),
    Case("corrupt-dataset-cache", [*TRAINER, "data_root={tmp}/data"],
         "is corrupt", code=3, setup=corrupt_dataset_cache),
    Case("corrupt-checkpoint", [*TRAINER], "cannot be loaded", code=3, setup=corrupt_checkpoint),
    Case("trainer-epochs-zero", [*TRAINER[:-2], "epochs=0", "run_dir=run"], "epochs=0 is invalid"),
    Case("prepare-unknown-command", [*PREPARE, "frobnicate"], "usage: python -m trainer.data prepare"),
    Case("prepare-unknown-dataset", [*PREPARE, "prepare", "dataset=nope"], "dataset=nope is unknown"),
    Case("report-of-no-sweep", [*REPORT, "res/nothing-here"], "res/nothing-here"),
    Case("report-out-is-a-file", [*REPORT, "res/s", "--out", "{tmp}/afile"],
         "{tmp}/afile cannot hold the report ({tmp}/afile is a file, not a folder)",
         setup=sweep_with_a_result_and_a_file),
    # -- Kubernetes (nothing is submitted when the cluster cannot be used)
    Case("k8s-bad-namespace", [*SWEEP, "backend=k8s", "backend.namespace=Bad_NS"],
         "backend.namespace=Bad_NS is not a valid namespace name"),
    Case("k8s-bad-quantity", [*SWEEP, "backend=k8s", "backend.cpu=lots"],
         "backend.cpu=lots is not a positive Kubernetes quantity"),
    Case("k8s-kubeconfig-missing", [*SWEEP, "backend=k8s", "backend.kubeconfig={tmp}/nope"],
         "no usable Kubernetes configuration"),
    Case("k8s-cluster-unreachable",
         [*SWEEP, "backend=k8s", "backend.kubeconfig={tmp}/kubeconfig", "backend.api_retries=2",
          "backend.api_backoff_s=0.05"],
         "cannot reach", setup=kubeconfig_to_nowhere),
]


def _run(case: Case, tmp: Path, data_root: Path, extra: list[str] | None = None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("KUBECONFIG", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(GNN_BENCH_DATA=str(data_root), HOME=str(tmp), GNN_BENCH_VERBOSE="0", **case.env)
    argv = [a.replace("{tmp}", str(tmp)) for a in case.argv]
    return subprocess.run([sys.executable, *argv[:2], *(extra or []), *argv[2:]], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=600)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def test_the_table_has_at_least_twenty_cases_with_distinct_ids():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_and_writes_nothing(case, tmp_path, tiny_root):
    tmp = tmp_path / "work"
    tmp.mkdir()
    if case.setup is not None:
        case.setup(*((tmp, tiny_root) if case.setup.__code__.co_argcount == 2 else (tmp,)))
    before = {name: _files(tmp / name) for name in ("res", "run")}
    out = _run(case, tmp, tiny_root)
    assert out.returncode == case.code, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), out.stderr
    assert case.message.replace("{tmp}", str(tmp)) in last, last
    assert "Traceback" not in out.stderr + out.stdout
    # Nothing written: no results folder (or only what the case put there), no run output.
    assert _files(tmp / "res") == before["res"]
    assert _files(tmp / "run") == before["run"]


def test_verbose_shows_the_traceback_before_the_same_line(tmp_path, tiny_root):
    case = next(c for c in CASES if c.id == "workers-zero")
    plain = _run(case, tmp_path, tiny_root)
    loud = _run(case, tmp_path, tiny_root, extra=["--verbose"])
    assert loud.returncode == plain.returncode == 2
    assert "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == plain.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "res").exists()
