"""`python -m bench.sweep backend=trainjob ... -m` end to end against the fake API server:
Trainer v2.3 makes each TrainJob a JobSet, JobSet v0.12 an indexed Job, the Job controller
the node pods, and real trainers run in them under torchrun (python -m trainer.launch), as the
project's runtime (k8s/trainer/runtime) says. The harness follows them through the real
``kubernetes`` client, and the results have the other backends' shape."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from fake_k8s import PROJECT_RUNTIME, TRAINJOB_RBAC, FakeKube, load_role_rules, project_role_rules
from fake_k8s.kinds import JOBSETS
from test_k8s_sweep import COMMON_FILES, run, sweep_cmd
from test_k8s_sweep import volume as volume  # the fixture: the tiny dataset on the volume

from bench.result import load_results

REPO = Path(__file__).resolve().parents[1]
RBAC = project_role_rules()
IMAGE = "europe-west1-docker.pkg.dev/p/gnn-bench/trainer:0.1.0"
STUB = [sys.executable, str(REPO / "tests" / "fake_k8s" / "stub_trainer.py")]


def trainjob_args(kubeconfig: Path, *args: str) -> list[str]:
    """A tiny sweep of TrainJobs on the fake cluster, sized for 2 cores (a CPU per node pod)."""
    return ["backend=trainjob", f"backend.kubeconfig={kubeconfig}", f"backend.image={IMAGE}",
            "backend.cpu=1", "backend.poll_interval_s=0.3", "backend.sample_interval_s=0.5",
            "backend.api_backoff_s=0.05", "dataset=tiny", "epochs=1", "results_dir=res", *args]


def with_max_restarts(value: int):
    """A kustomize-like edit of the project runtime: its failurePolicy.maxRestarts."""
    def edit(doc: dict) -> None:
        doc["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] = value
    return edit


@pytest.fixture(scope="module")
def tj_sweep(volume, tmp_path_factory):
    """A two-trial sweep of TrainJobs, then the same command again."""
    work = tmp_path_factory.mktemp("tj")
    with FakeKube(volume, metrics_window_s=1.0, role_rules=RBAC) as fake:
        kubeconfig = fake.write_kubeconfig(work / "kubeconfig")
        args = sweep_cmd(*trainjob_args(kubeconfig, "workers=1,2", "sweep_name=t", "-m"))
        first = run(args, work, timeout=600)
        again = run(args, work, timeout=300)
        yield {"dir": work / "res" / "t", "first": first, "again": again, "fake": fake}


def test_a_two_trial_sweep_of_trainjobs_trains_on_the_fake_cluster(tj_sweep):
    first = tj_sweep["first"]
    assert first.returncode == 0, first.stdout + first.stderr
    results = load_results(tj_sweep["dir"])
    assert [(r["workers"], r["status"], r["backend"], r["restarts"]) for r in results] == [
        (1, "succeeded", "trainjob", 0), (2, "succeeded", "trainjob", 0)]
    for r in results:
        trial = tj_sweep["dir"] / r["trial_id"]
        assert r["val_mrr"] > 0.015 and 0.5 <= r["val_accuracy"] <= 1.0
        summary = json.loads((trial / "summary.json").read_text())
        assert r["val_mrr"] == pytest.approx(summary["val_mrr"], rel=1e-6)
        # One process per node: the trainer saw a world of `workers` (not workers x CPUs).
        assert summary["world_size"] == r["workers"]
        assert len(r["epoch_times_s"]) == 1 and 0 < r["time_startup_s"] < r["time_total_s"]
        assert set(r["cpu_cores"]) == set(r["memory_mib"]) == {f"rank{i}"
                                                               for i in range(r["workers"])}
        for worker in r["memory_mib"].values():
            assert 50 < worker["mean"] <= worker["peak"] < 4096
        record = json.loads((trial / "trainjob.json").read_text())
        assert record["job"].endswith(r["trial_id"]) and record["restarts"] == 0
        assert COMMON_FILES <= {str(p.relative_to(trial)) for p in trial.rglob("*")
                                if p.is_file()}
        logs = (trial / "logs" / "workers.log").read_text()
        assert re.search(rf"\[t-{r['trial_id']}-node-0-0-[a-z0-9]{{5}}\] epoch 1/1 ", logs), logs
    rows = (tj_sweep["dir"] / "table.md").read_text().splitlines()[2:]
    rows = rows[: rows.index("")]  # Table 1's rows; the reference rows and notes follow
    assert [row.split("|")[1:3] for row in rows] == [[" 1 ", " 1 "], [" 2 ", " 1 "]]
    assert all(job.deleting for job in tj_sweep["fake"].cluster.history)
    # Every request was allowed by the Roles (the fake enforces them), and every rule of the
    # TrainJob Role was used: the Role is no wider than the backend needs.
    tj_rules = {(g, r, v) for rule in load_role_rules(TRAINJOB_RBAC)
                for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert tj_rules <= tj_sweep["fake"].used


def test_rerunning_a_trainjob_sweep_skips_what_succeeded(tj_sweep):
    again, fake = tj_sweep["again"], tj_sweep["fake"]
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already succeeded, skipped") == 2, again.stdout
    assert sorted(fake.creates.values()) == [1, 1]


def test_trainjob_results_have_the_fields_of_the_pytorchjob_backends(tj_sweep, volume, tmp_path):
    from test_k8s_sweep import k8s_args

    with FakeKube(volume, metrics_window_s=1.0) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        out = run(sweep_cmd(*k8s_args(kubeconfig, "workers=1", "sweep_name=p", "-m")), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    (k8s,) = load_results(tmp_path / "res" / "p")
    trainjob = next(r for r in load_results(tj_sweep["dir"]) if r["workers"] == 1)
    assert set(trainjob) == set(k8s)
    for key in ("cpu_cores", "memory_mib", "curves"):
        assert set(trainjob[key]) == set(k8s[key]), key
    header = (tmp_path / "res" / "p" / "table.md").read_text().splitlines()[0]
    assert (tj_sweep["dir"] / "table.md").read_text().splitlines()[0] == header


def test_a_trial_past_the_restart_budget_fails_naming_backend_backoff_limit(volume, tmp_path):
    """Every node pod exits 200 (a broken group, retryable): the runtime's maxRestarts 1 and
    backend.backoff_limit=1 allow one JobSet restart; the next failure fails the trial, and
    the sweep goes on to write its result."""
    with FakeKube(volume, replica_command=STUB, runtimes=(), role_rules=RBAC,
                  replica_env={"STUB_SECONDS": "0.3", "STUB_EXIT": "200"}) as fake:
        fake.apply_runtime(PROJECT_RUNTIME, edit=with_max_restarts(1))
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        out = run(sweep_cmd(*trainjob_args(kubeconfig, "workers=2", "backend.backoff_limit=1",
                                           "sweep_name=b")), tmp_path)
        jobsets = [j.get("status") or {} for j in fake.cluster.store.items(JOBSETS)]
    (result,) = load_results(tmp_path / "res" / "b")
    assert result["status"] == "failed", out.stdout + out.stderr
    assert "ReachedMaxRestarts" in result["reason"] and "backend.backoff_limit=1" in result["reason"]
    assert result["restarts"] == 1
    assert all(s.get("restarts", 1) == 1 for s in jobsets)


def test_a_backoff_limit_other_than_the_runtimes_is_refused_before_submission(volume, tmp_path):
    with FakeKube(volume, role_rules=RBAC) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        out = run(sweep_cmd(*trainjob_args(kubeconfig, "workers=2", "backend.backoff_limit=5",
                                           "sweep_name=m")), tmp_path)
        assert fake.creates == {}
    assert out.returncode != 0
    (line,) = [x for x in (out.stdout + out.stderr).splitlines() if x.startswith("error:")]
    assert "backend.backoff_limit=5" in line and "failurePolicy.maxRestarts=3" in line


def fault_demo(volume: Path, tmp_path: Path, workers: str, sweep: str = "tf"):
    """One node pod (rank 1) deleted after epoch 2 is checkpointed, with the trainjob
    defaults (the project's runtime, backend.backoff_limit=3); each trial has a fault-free
    twin."""
    with FakeKube(volume, metrics_window_s=1.0, role_rules=RBAC) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        args = trainjob_args(kubeconfig, f"workers={workers}", "epochs=4",
                             "fault.kill_at_epoch=null,2", "fault.rank=1", f"sweep_name={sweep}",
                             "-m")
        out = run(sweep_cmd(*args), tmp_path, timeout=1500)
        assert out.returncode == 0, out.stdout + out.stderr
        deleted = [name for name, _ in fake.cluster.deleted_pods]
    return load_results(tmp_path / "res" / sweep), deleted, out.stdout


def check_fault_demo(results, tmp_path: Path, sweep: str, deleted: list[str]) -> None:
    for workers in sorted({r["workers"] for r in results}):
        (faulty,) = [r for r in results if r["faults"] and r["workers"] == workers]
        (twin,) = [r for r in results if not r["faults"] and r["workers"] == workers]
        assert faulty["status"] == twin["status"] == "succeeded", (faulty["reason"], twin["reason"])
        (fault,) = faulty["faults"]
        assert 2 <= fault["epoch"] < 4 and fault["rank"] == 1
        assert fault["recovery_s"] > 0 and fault["resumed_from_epoch"] == fault["epoch"] + 1
        # One lost pod, one JobSet restart (every node pod recreated), at any size.
        assert faulty["restarts"] == 1 and twin["restarts"] == 0
        record = json.loads((tmp_path / "res" / sweep / faulty["trial_id"] / "trainjob.json")
                            .read_text())
        assert record["restarts"] == 1
        assert [s for s, _ in faulty["curves"]["val/mrr"]] == [1, 2, 3, 4]
        assert abs(faulty["val_mrr"] - twin["val_mrr"]) <= 0.02
        # The pod was found by the JobSet's labels: the index-1 pod of restart attempt 0.
        (victim,) = [d for d in deleted if d.startswith(f"{sweep}-{faulty['trial_id']}-")]
        assert re.fullmatch(rf"{sweep}-{faulty['trial_id']}-node-0-1-[a-z0-9]{{5}}", victim)


@pytest.mark.slow  # a minute: the fault demo at 2, 4 and 6 nodes below covers it; the conformance suite kills a trainjob worker in the fast suite
def test_a_deleted_node_pod_is_survived_and_the_trial_matches_its_fault_free_twin(
        volume, tmp_path):
    results, deleted, stdout = fault_demo(volume, tmp_path, "2")
    check_fault_demo(results, tmp_path, "tf", deleted)
    assert "fault injected: deleted pod" in stdout


@pytest.mark.slow
def test_the_fault_demo_at_2_4_and_6_nodes_succeeds_with_the_projects_runtime(volume, tmp_path):
    results, deleted, _ = fault_demo(volume, tmp_path, "2,4,6", sweep="tf6")
    assert sorted(r["workers"] for r in results) == [2, 2, 4, 4, 6, 6]
    check_fault_demo(results, tmp_path, "tf6", deleted)


@pytest.mark.slow
def test_the_studys_grid_runs_as_trainjobs(volume, tmp_path):
    """The issue's command: workers=2,4,6 epochs=10,30 on tiny data, sequentially."""
    with FakeKube(volume, metrics_window_s=1.0, role_rules=RBAC) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        out = run(sweep_cmd(*trainjob_args(kubeconfig, "workers=2,4,6", "epochs=10,30",
                                           "sweep_name=grid", "-m")), tmp_path, timeout=3600)
    assert out.returncode == 0, out.stdout + out.stderr
    results = load_results(tmp_path / "res" / "grid")
    assert sorted((r["workers"], r["epochs"]) for r in results) == [
        (w, e) for w in (2, 4, 6) for e in (10, 30)]
    for r in results:
        assert r["status"] == "succeeded" and r["backend"] == "trainjob", r["reason"]
        assert len(r["epoch_times_s"]) == r["epochs"] and set(r["cpu_cores"]) == {
            f"rank{i}" for i in range(r["workers"])}
    md = (tmp_path / "res" / "grid" / "table.md").read_text().splitlines()
    rows = md[2:md.index("")] if "" in md else md[2:]  # the reference rows follow a blank line
    assert sorted((int(r.split("|")[1]), int(r.split("|")[2])) for r in rows) == [
        (w, e) for w in (2, 4, 6) for e in (10, 30)]
