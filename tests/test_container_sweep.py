"""`python -m bench.sweep backend=container ... -m` end to end with podman and the built trainer
image (``make images`` first): every worker a container with its CPU limit, on a network of the
trial's own; the harness killed and run again; a killed worker container restarted; trials in
parallel; the exit-code rule on a real permanent failure; the backoff limit.

Marked ``images`` and ``slow`` (minutes on two cores): ``make test-images`` and CI's image stage
run them; they are skipped, with the reason, where no container can start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_k8s import LAUNCHER_VARS

from bench.backends.container.handle import RECORD
from bench.result import load_results

pytestmark = [pytest.mark.images, pytest.mark.slow]
SWEEP_TIMEOUT_S = 900  # two shared cores; a trial with a restart takes one to two minutes
CPUS = 1.5


@pytest.fixture(scope="module")
def engine():
    from bench.backends.container.config import ContainerConfig
    from bench.backends.container.handle import usable_engine
    from trainer.config import ConfigError

    try:
        return usable_engine(ContainerConfig())
    except ConfigError as exc:
        pytest.skip(f"no container can start here: {exc}")


@pytest.fixture(scope="module")
def data_root(tiny_root, tmp_path_factory) -> Path:
    """The tiny dataset in a folder the containers' user can read."""
    data = tmp_path_factory.mktemp("container-sweep-data")
    shutil.copytree(tiny_root, data, dirs_exist_ok=True)
    os.chmod(data, 0o755)
    return data


def env(data_root: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    values["GNN_BENCH_DATA"] = str(data_root)
    return values


def sweep(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.sweep", "dataset=tiny", "results_dir=res", *args]


def container_args(*args: str) -> list[str]:
    return sweep("backend=container", f"backend.cpus={CPUS}", "backend.memory=1g",
                 "backend.poll_interval_s=0.5", *args)


def run(args: list[str], cwd: Path, data_root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env(data_root), capture_output=True, text=True,
                          timeout=SWEEP_TIMEOUT_S)


def labelled(engine, sweep_name: str, what: str = "ps") -> list[str]:
    """Containers (``ps``) or networks (``network``) of a sweep, by name."""
    args = (["ps", "--all"] if what == "ps" else ["network", "ls"])
    out = engine(*args, "--format", "{{.Names}}" if what == "ps" else "{{.Name}}",
                 "--filter", f"label=gnn-bench.sweep={sweep_name}").stdout
    return out.split()


@pytest.fixture(scope="module")
def killed_and_rerun(engine, data_root, tmp_path_factory):
    """workers=2,3 epochs=3: the harness is SIGKILLed once the second trial's containers run,
    and the same command is run again."""
    work = tmp_path_factory.mktemp("container-sweep")
    args = container_args("workers=2,3", "epochs=3", "sweep_name=cs", "-m")
    first = subprocess.Popen(args, cwd=work, env=env(data_root), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    running: list[str] = []
    while len(running) < 3:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
        time.sleep(0.5)
        running = [n for n in labelled(engine, "cs") if "w3-" in n and
                   engine("inspect", "--format", "{{.State.Status}}", n, check=False).stdout.strip() == "running"]
    ids = {n: engine("inspect", "--format", "{{.Id}}", n).stdout.strip() for n in running}
    os.killpg(first.pid, signal.SIGKILL)
    killed_output = first.communicate()[0]
    rerun_at = time.time()
    again = run(args, work, data_root)
    local = run(sweep("workers=2", "epochs=3", "sweep_name=local", "-m"), work, data_root)
    return {"dir": work / "res" / "cs", "local_dir": work / "res" / "local", "ids": ids,
            "first": killed_output, "again": again, "local": local, "rerun_at": rerun_at}


def test_every_worker_is_a_container_with_its_cpu_limit(killed_and_rerun, engine):
    again = killed_and_rerun["again"]
    assert again.returncode == 0, again.stdout + again.stderr
    results = load_results(killed_and_rerun["dir"])
    assert [(r["workers"], r["status"], r["backend"]) for r in results] == [
        (2, "succeeded", "container"), (3, "succeeded", "container")]
    for r in results:
        record = json.loads((killed_and_rerun["dir"] / r["trial_id"] / RECORD).read_text())
        containers = record["containers"]
        assert sorted(c["rank"] for c in containers.values()) == list(range(r["workers"]))
        assert {c["cpus"] for c in containers.values()} == {CPUS}
        assert {c["memory_bytes"] for c in containers.values()} == {2**30}
        assert {c["exit_code"] for c in containers.values()} == {0}
        assert r["cores"] == r["workers"] * CPUS and r["threads_per_worker"] == 1
        assert record["network"]["internal"] and record["network"]["subnets"]
        # Measured from each container's cgroup, named as the local backend names workers.
        assert set(r["cpu_cores"]) == set(r["memory_mib"]) == {f"rank{i}" for i in range(r["workers"])}
        for worker, cpu in r["cpu_cores"].items():
            assert 0.05 < cpu["peak"] <= CPUS * 1.1, worker  # the limit holds
            assert 50 < r["memory_mib"][worker]["peak"] < 1024  # under --memory 1g
        assert r["val_mrr"] > 0.015 and r["restarts"] == 0
    assert labelled(engine, "cs") == [] and labelled(engine, "cs", "network") == []


def test_the_rerun_followed_the_running_containers_instead_of_starting_new_ones(killed_and_rerun):
    again = killed_and_rerun["again"]
    assert again.stdout.count("already succeeded, skipped") == 1, again.stdout
    assert "following its 3 containers on network gnn-w3-e3-" in again.stdout, again.stdout
    (second,) = [r for r in load_results(killed_and_rerun["dir"]) if r["workers"] == 3]
    record = json.loads((killed_and_rerun["dir"] / second["trial_id"] / RECORD).read_text())
    assert record["reattached"] is True
    assert {n: c["id"] for n, c in record["containers"].items()} == killed_and_rerun["ids"]
    # The first run's clock: a trial submitted again would carry a time after the rerun began.
    assert second["submitted_at"] < killed_and_rerun["rerun_at"]


def test_results_and_table_have_the_local_backends_shape_and_numbers(killed_and_rerun):
    local_out = killed_and_rerun["local"]
    assert local_out.returncode == 0, local_out.stdout + local_out.stderr
    (local,) = load_results(killed_and_rerun["local_dir"])
    container = next(r for r in load_results(killed_and_rerun["dir"]) if r["workers"] == 2)
    assert set(container) == set(local)
    for key in ("cpu_cores", "memory_mib", "curves"):
        assert set(container[key]) == set(local[key]), key
    for key, value in local.items():
        if value is not None and container[key] is not None:
            assert type(container[key]) is type(value) or \
                {type(container[key]), type(value)} == {int, float}, key
    # The same training in containers as under torchrun: the same numbers.
    for key in ("val_mrr", "val_accuracy", "test_mrr", "train_loss"):
        assert container[key] == pytest.approx(local[key], rel=1e-6), key
    header = [(d / "table.md").read_text().splitlines()[0]
              for d in (killed_and_rerun["dir"], killed_and_rerun["local_dir"])]
    assert header[0] == header[1]
    files = [{str(p.relative_to(d / r["trial_id"])) for p in (d / r["trial_id"]).rglob("*")
              if p.is_file() and "run/" not in str(p.relative_to(d / r["trial_id"]))}
             for d, r in ((killed_and_rerun["dir"], container),
                          (killed_and_rerun["local_dir"], local))]
    assert {"result.json", "config.yaml", "summary.json", "resources.csv",
            "logs/workers.log"} <= files[0] & files[1]
    assert any(f.startswith("events/events.out.tfevents.") for f in files[0])


def test_a_killed_worker_container_restarts_and_matches_its_twin_run_in_parallel(engine, data_root,
                                                                                tmp_path):
    """fault.kill_at_epoch=null,1 fault.rank=1: the twin trials side by side
    (hydra/launcher=bench_parallel backend.max_parallel=2), each on its own network. Four epochs,
    so that the harness sees a checkpoint at or after epoch 1 while the trial still runs."""
    out = run(container_args("workers=2", "epochs=4", "fault.kill_at_epoch=null,1",
                             "fault.rank=1", "sweep_name=cf", "hydra/launcher=bench_parallel",
                             "backend.max_parallel=2", "-m"), tmp_path, data_root)
    assert out.returncode == 0, out.stdout + out.stderr
    results = load_results(tmp_path / "res" / "cf")
    (faulty,) = [r for r in results if r["faults"]]
    (twin,) = [r for r in results if not r["faults"]]
    assert faulty["status"] == twin["status"] == "succeeded", (faulty["reason"], twin["reason"])
    assert faulty["restarts"] == 1 and twin["restarts"] == 0
    (fault,) = faulty["faults"]
    assert fault["rank"] == 1 and fault["recovery_s"] > 0
    assert [s for s, _ in faulty["curves"]["val/mrr"]] == [1, 2, 3, 4]
    assert abs(faulty["val_mrr"] - twin["val_mrr"]) <= 0.02
    for r in (faulty, twin):  # readings through the kill and the restart stay the container's
        assert all(c["peak"] <= CPUS * 1.1 for c in r["cpu_cores"].values()), r["cpu_cores"]
        assert all(m["peak"] < 1024 for m in r["memory_mib"].values()), r["memory_mib"]
    assert "fault injected: podman kill gnn-w2-e4-" in out.stdout
    assert "exited (exit code 137, SIGKILL): restarting its 2 containers" in out.stdout
    records = [json.loads((tmp_path / "res" / "cf" / r["trial_id"] / RECORD).read_text())
               for r in (faulty, twin)]
    assert records[0]["restart_history"][0]["rank"] == 1
    assert records[0]["restart_history"][0]["injected"] is True
    assert records[0]["network"]["name"] != records[1]["network"]["name"]
    assert set(records[0]["network"]["subnets"]).isdisjoint(records[1]["network"]["subnets"])
    assert faulty["submitted_at"] < twin["finished_at"] and twin["submitted_at"] < faulty["finished_at"]
    assert labelled(engine, "cf") == [] and labelled(engine, "cf", "network") == []


def test_a_permanent_exit_is_not_restarted_and_the_backoff_limit_holds(engine, data_root, tmp_path):
    """Two trials. One was interrupted and left a corrupt checkpoint in its run folder: every
    trainer exits 3 (1-127: permanent) and the trial fails at once, with the trainer's error
    line. The other meets two faults with backend.backoff_limit=1 and fails naming the limit.

    Six epochs: the second fault is due once epoch 2 is checkpointed, and the harness must see
    that before the trial ends (a tiny epoch is ~0.4 s, about one poll; with three epochs CI
    once saw the trial finish first)."""
    from bench.config import compose, split

    cfg = compose(["backend=container", "dataset=tiny", "workers=2", "epochs=6",
                   "sweep_name=cp", f"results_dir={tmp_path / 'res'}", f"data_root={data_root}"])
    checkpoints = split(cfg).trial_dir / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt").write_bytes(b"not a checkpoint")
    (checkpoints / "last.json").write_text('{"epoch": 1}')
    out = run(container_args("workers=2", "epochs=6", "sweep_name=cp",
                             "fault.kill_at_epoch=null,1", "fault.count=2", "fault.rank=1",
                             "backend.backoff_limit=1", "-m"), tmp_path, data_root)
    assert out.returncode == 0, out.stdout + out.stderr  # failed trials do not fail a sweep
    bad, beyond = sorted(load_results(tmp_path / "res" / "cp"), key=lambda r: bool(r["faults"]))
    assert bad["trial_id"] == split(cfg).trial_id
    assert bad["status"] == "failed" and bad["restarts"] == 0
    # The trainer's own line, with the path as the containers see it; not "exit code 3".
    assert bad["reason"].startswith(
        f"checkpoint /mnt/bench/runs/cp/{bad['trial_id']}/checkpoints/last.pt cannot be loaded ("
    ), bad["reason"]
    assert bad["reason"].endswith("delete it to train from scratch")
    assert beyond["status"] == "failed" and len(beyond["faults"]) == 2 and beyond["restarts"] == 1
    assert "exceeded the backoff limit (backend.backoff_limit=1)" in beyond["reason"]
    assert out.stdout.count("restarting its 2 containers") == 1, out.stdout  # the first fault's
    assert labelled(engine, "cp") == [] and labelled(engine, "cp", "network") == []
