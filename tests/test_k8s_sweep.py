"""`python -m bench.sweep backend=k8s ... -m` end to end against the fake API server: real
trainers run as the PyTorchJobs' replicas, the harness follows them through the real
``kubernetes`` client, and the results have the local backend's shape."""

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
from fake_k8s import LAUNCHER_VARS, FakeKube, project_role_rules

from bench.result import load_results

REPO = Path(__file__).resolve().parents[1]
RBAC = project_role_rules()
IMAGE = "europe-west1-docker.pkg.dev/p/gnn-bench/trainer:0.1.0"  # one the fake's registry has
STUB = [sys.executable, str(REPO / "tests" / "fake_k8s" / "stub_trainer.py")]
COMMON_FILES = {"result.json", "config.yaml", "summary.json", "resources.csv", "logs/workers.log"}


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.sweep", *args]


def k8s_args(kubeconfig: Path, *args: str) -> list[str]:
    """A tiny sweep on the fake cluster, sized for 2 cores (one CPU and thread per pod)."""
    return [
        "backend=k8s",
        f"backend.kubeconfig={kubeconfig}",
        f"backend.image={IMAGE}",
        "backend.cpu=1",
        "backend.poll_interval_s=0.3",
        "backend.sample_interval_s=0.5",
        "backend.api_backoff_s=0.05",
        "dataset=tiny",
        "epochs=1",
        "results_dir=res",
        *args,
    ]


def env(data_root: Path | None = None) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if k not in (*LAUNCHER_VARS, "GNN_BENCH_DATA")}
    if data_root is not None:
        values["GNN_BENCH_DATA"] = str(data_root)
    return values


def run(args: list[str], cwd: Path, timeout: float = 240, data_root: Path | None = None):
    return subprocess.run(
        args, cwd=cwd, env=env(data_root), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    """The fake cluster's shared volume, with the tiny dataset prepared on it (once)."""
    volume = tmp_path_factory.mktemp("volume")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.data",
            "prepare",
            "dataset=tiny",
            f"data_root={volume / 'datasets'}",
        ],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return volume


@pytest.fixture(scope="module")
def k8s_sweep(volume, tmp_path_factory):
    """A two-trial sweep, killed (SIGKILL) while its second job runs, then run again."""
    work = tmp_path_factory.mktemp("k8s")
    with FakeKube(volume, metrics_window_s=1.0, role_rules=RBAC) as fake:
        kubeconfig = fake.write_kubeconfig(work / "kubeconfig")
        args = sweep_cmd(*k8s_args(kubeconfig, "workers=1,2", "sweep_name=k", "-m"))
        first = subprocess.Popen(
            args,
            cwd=work,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while len(fake.creates) < 2 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the second job's pods are starting: the harness dies, they go on
        os.killpg(first.pid, signal.SIGKILL)
        killed_output = first.communicate()[0]
        assert len(fake.creates) == 2, killed_output
        rerun_at = time.time()
        again = run(args, work)
        yield {
            "dir": work / "res" / "k",
            "first": killed_output,
            "again": again,
            "fake": fake,
            "rerun_at": rerun_at,
        }


def test_a_two_trial_sweep_trains_on_the_fake_cluster(k8s_sweep):
    again = k8s_sweep["again"]
    assert again.returncode == 0, again.stdout + again.stderr
    results = load_results(k8s_sweep["dir"])
    assert [(r["workers"], r["status"], r["backend"]) for r in results] == [
        (1, "succeeded", "k8s"),
        (2, "succeeded", "k8s"),
    ]
    for r in results:
        trial = k8s_sweep["dir"] / r["trial_id"]
        assert r["val_mrr"] > 0.015 and 0.5 <= r["val_accuracy"] <= 1.0  # from the fetched events
        summary = json.loads((trial / "summary.json").read_text())
        assert r["val_mrr"] == pytest.approx(summary["val_mrr"], rel=1e-6)
        assert len(r["epoch_times_s"]) == 1 and 0 < r["time_startup_s"] < r["time_total_s"]
        # CPU and memory per worker from PodMetrics, named as the local backend names them.
        assert (
            set(r["cpu_cores"]) == set(r["memory_mib"]) == {f"rank{i}" for i in range(r["workers"])}
        )
        for worker in r["memory_mib"].values():
            assert 50 < worker["mean"] <= worker["peak"] < 4096
        assert all(c["peak"] > 0.05 for c in r["cpu_cores"].values())
        record = json.loads((trial / "k8s.json").read_text())
        assert record["job"].endswith(r["trial_id"]) and record["metrics_window_s"] == 1.0
        assert r["trainer_overrides"][-3:-1] == [
            "data_root=/mnt/bench/datasets",
            f"run_dir=/mnt/bench/runs/k/{r['trial_id']}/{(trial / 'run_id').read_text()}",
        ]
    assert (k8s_sweep["dir"] / "table.md").exists()
    # Every job was deleted after collection.
    assert all(job.deleting for job in k8s_sweep["fake"].cluster.history)


def test_rerunning_the_sweep_reattaches_instead_of_resubmitting(k8s_sweep):
    again, fake = k8s_sweep["again"], k8s_sweep["fake"]
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already succeeded, skipped") == 1, again.stdout
    assert "following the existing PyTorchJob gnn-bench/k-w2-e1-s0-tiny-" in again.stdout
    assert sorted(fake.creates.values()) == [1, 1]  # no job was created twice
    second = load_results(k8s_sweep["dir"])[1]
    record = json.loads((k8s_sweep["dir"] / second["trial_id"] / "k8s.json").read_text())
    assert record["reattached"] is True
    # Timed from the job's creation, before the harness was killed, not from the re-run.
    assert second["submitted_at"] < k8s_sweep["rerun_at"] - 1


def test_results_have_the_shape_of_the_local_backends(k8s_sweep, volume, tmp_path):
    out = run(
        sweep_cmd(
            "dataset=tiny",
            "workers=1",
            "epochs=1",
            "sweep_name=l",
            "results_dir=res",
            "backend.sample_interval_s=0.5",
        ),
        tmp_path,
        data_root=volume / "datasets",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (local,) = load_results(tmp_path / "res" / "l")
    k8s = next(r for r in load_results(k8s_sweep["dir"]) if r["workers"] == 1)
    assert set(k8s) == set(local)
    for key, value in local.items():
        if value is not None and k8s[key] is not None:
            assert type(k8s[key]) is type(value) or {type(k8s[key]), type(value)} == {int, float}, (
                key
            )
    for key in ("cpu_cores", "memory_mib", "curves"):
        assert set(k8s[key]) == set(local[key]), key
    assert set(k8s["cpu_cores"]["rank0"]) == set(local["cpu_cores"]["rank0"])
    assert len(k8s["epoch_times_s"]) == len(local["epoch_times_s"])
    trial_files = {}
    for name, root in (
        ("k8s", k8s_sweep["dir"] / k8s["trial_id"]),
        ("local", tmp_path / "res" / "l" / local["trial_id"]),
    ):
        trial_files[name] = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
        assert COMMON_FILES <= trial_files[name], name
        assert any(f.startswith("events/events.out.tfevents.") for f in trial_files[name]), name
        assert (root / "resources.csv").read_text().splitlines()[0] == "t,worker,cpu_cores,rss_mib"


def fault_demo(volume: Path, tmp_path: Path, workers: str, *extra: str, sweep: str = "fk",
               **fake_options) -> tuple[list[dict], FakeKube, str]:
    """The study's demo, measured: rank 1's pod is deleted after epoch 2 is checkpointed, with
    the k8s defaults (backend.backoff_limit=10); each trial has a fault-free twin."""
    with FakeKube(volume, metrics_window_s=1.0, role_rules=RBAC, **fake_options) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        args = k8s_args(kubeconfig, f"workers={workers}", "epochs=4", "fault.kill_at_epoch=null,2",
                        "fault.rank=1", f"sweep_name={sweep}", *extra, "-m")
        out = run(sweep_cmd(*args), tmp_path, timeout=1200)
        assert out.returncode == 0, out.stdout + out.stderr
    return load_results(tmp_path / "res" / sweep), fake, out.stdout


def check_fault_demo(results: list[dict], fake: FakeKube, tmp_path: Path, sweep: str) -> None:
    for workers in sorted({r["workers"] for r in results}):
        (faulty,) = [r for r in results if r["faults"] and r["workers"] == workers]
        (twin,) = [r for r in results if not r["faults"] and r["workers"] == workers]
        assert faulty["status"] == twin["status"] == "succeeded", (faulty["reason"], twin["reason"])
        (fault,) = faulty["faults"]
        assert 2 <= fault["epoch"] < 4 and fault["rank"] == 1
        assert fault["recovery_s"] > 0 and fault["resumed_from_epoch"] == fault["epoch"] + 1
        # Every other replica restarted once, the recreated pod none: the operator's sum.
        record = json.loads((tmp_path / "res" / sweep / faulty["trial_id"] / "k8s.json").read_text())
        assert faulty["restarts"] == workers - 1 == fake.cluster.max_backoff_sum(record["uid"])
        assert twin["restarts"] == 0
        assert [s for s, _ in faulty["curves"]["val/mrr"]] == [1, 2, 3, 4]
        assert abs(faulty["val_mrr"] - twin["val_mrr"]) <= 0.02
        assert (tmp_path / "res" / sweep / "faults.md").exists()
        logs = (tmp_path / "res" / sweep / faulty["trial_id"] / "logs" / "workers.log").read_text()
        assert "rendezvous: rank 0 started generation" in logs


@pytest.mark.slow  # a minute: the fault demo at 2, 4 and 6 workers below covers it; the conformance suite kills a k8s worker in the fast suite
def test_a_deleted_worker_pod_is_recreated_and_the_trial_matches_its_fault_free_twin(
    volume, tmp_path
):
    results, fake, stdout = fault_demo(volume, tmp_path, "2")
    check_fault_demo(results, fake, tmp_path, "fk")
    deleted = [name for name, _ in fake.cluster.deleted_pods]
    (faulty,) = [r for r in results if r["faults"]]
    assert deleted == [f"fk-{faulty['trial_id']}-worker-0"]  # rank 1 is the first Worker
    assert "fault injected: deleted pod" in stdout


@pytest.mark.slow
def test_the_studys_fault_demo_at_2_4_and_6_workers_succeeds_with_the_defaults(volume, tmp_path):
    """One deleted Worker pod costs workers - 1 restarts (5 at 6 workers), which the k8s
    default backend.backoff_limit=10 allows; the old default of 3 failed 4 and 6 workers."""
    results, fake, _ = fault_demo(volume, tmp_path, "2,4,6", sweep="demo")
    assert sorted(r["workers"] for r in results) == [2, 2, 4, 4, 6, 6]
    check_fault_demo(results, fake, tmp_path, "demo")


def test_a_fault_plan_the_backoff_limit_cannot_survive_is_refused_before_submission(
    volume, tmp_path
):
    with FakeKube(volume, role_rules=RBAC) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        args = k8s_args(kubeconfig, "workers=2,6", "epochs=4", "fault.kill_at_epoch=2",
                        "backend.backoff_limit=3", "sweep_name=refused", "-m")
        out = run(sweep_cmd(*args), tmp_path)
        assert fake.creates == {} and {m for m, _ in fake.requests} <= {"GET"}  # none submitted
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: fault.count=1 at workers=6 costs 5 restarts")
    assert "backend.backoff_limit=3" in line and "set backend.backoff_limit=6 or more" in line
    assert not (tmp_path / "res" / "refused").exists()


@pytest.mark.slow
def test_three_pod_deletions_within_the_backoff_limit(volume, tmp_path):
    """Each deletion at 2 workers restarts the master once: 3 faults cost 3 restarts, which
    backoffLimit 4 survives (3 would be refused before submission, as above)."""
    with FakeKube(volume, metrics_window_s=1.0, role_rules=RBAC) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        # Tiny epochs take well under a second: a fault can land an epoch or two after the one
        # asked for (bench/faults.py), so the run has room for three late ones.
        args = k8s_args(kubeconfig, "workers=2", "epochs=9", "fault.kill_at_epoch=1",
                        "fault.count=3", "fault.rank=1", "backend.backoff_limit=4",
                        "sweep_name=f3")
        out = run(sweep_cmd(*args), tmp_path, timeout=900)
        assert out.returncode == 0, out.stdout + out.stderr
        deletions = len(fake.cluster.deleted_pods)
    (result,) = load_results(tmp_path / "res" / "f3")
    assert result["status"] == "succeeded", result["reason"]
    assert deletions == len(result["faults"]) == 3 and result["restarts"] == 3
    assert all(f["recovery_s"] and f["recovery_s"] > 0 for f in result["faults"])


@pytest.mark.slow
def test_workers_restarted_before_the_master_with_back_off_recover(volume, tmp_path):
    """The uncoordinated case: the Master's pod is deleted twice. The operator creates it
    again, and a new pod takes pod_start_delay_s (scheduling, image pull) before it runs; the
    two Workers fail their collective and the kubelet restarts them in place, the first time at
    once and the second after its 10 s back-off (scaled): both times they are up before the
    new Master and wait for it. The trial recovers each time and succeeds."""
    with FakeKube(volume, metrics_window_s=1.0, role_rules=RBAC, pod_start_delay_s=4.0) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        args = k8s_args(kubeconfig, "workers=3", "epochs=8", "fault.kill_at_epoch=1",
                        "fault.count=2", "fault.rank=0", "sweep_name=unco")
        out = run(sweep_cmd(*args), tmp_path, timeout=900)
        assert out.returncode == 0, out.stdout + out.stderr
        starts = list(fake.cluster.kubelet.starts)
        waits = {run.name: run.containers[0].waits for run in fake.cluster.kubelet.runs.values()}
    (result,) = load_results(tmp_path / "res" / "unco")
    assert result["status"] == "succeeded", result["reason"]
    assert len(result["faults"]) == 2 and all(f["recovery_s"] > 0 for f in result["faults"])
    assert result["restarts"] == 2 * 2  # each fault: both Workers once; the new Masters none
    master = [t for t, pod, c, _ in starts if pod.endswith("-master-0") and c == "pytorch"]
    assert len(master) == 3  # the first Master and two new pods
    for fault, new_master in zip(result["faults"], master[1:], strict=True):
        restarted = [t for t, pod, c, n in starts if "-worker-" in pod and c == "pytorch"
                     and n > 0 and fault["injected_at"] < t < new_master]
        assert len(restarted) == 2, (fault, starts)  # both Workers came back before the Master
    assert all(w[:2] == [0.0, 10.0] for name, w in waits.items() if "-worker-" in name), waits
    logs = (tmp_path / "res" / "unco" / result["trial_id"] / "logs" / "workers.log").read_text()
    assert logs.count("rendezvous: rank 0 started generation") >= 1


def test_a_trial_whose_image_cannot_be_pulled_fails_with_one_line_and_the_sweep_goes_on(
    volume, tmp_path
):
    with FakeKube(volume, role_rules=RBAC) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        args = k8s_args(kubeconfig, "workers=2", "backend.image=gnn-bench/trainer:latest",
                        "backend.start_timeout_s=2", "sweep_name=img")
        out = run(sweep_cmd(*args), tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr
        assert all(r.deleting for r in fake.cluster.history)
    (result,) = load_results(tmp_path / "res" / "img")
    assert result["status"] == "failed" and "\n" not in result["reason"]
    assert "cannot pull its image" in result["reason"]
    assert "set backend.image=<registry>/<image>:<tag>" in result["reason"]
    assert "FAILED: pod img-" in out.stdout


def test_a_trial_started_from_scratch_gets_a_new_run_folder_on_the_volume(tmp_path):
    """Otherwise a failed trial run again, or redo=true, would resume the old checkpoint."""
    from bench.backends import backend_for
    from bench.config import compose, split, validate

    cfg = compose(["backend=k8s", "workers=2", "sweep_name=s", f"results_dir={tmp_path}"])
    validate(cfg)
    trial = split(cfg)
    backend = backend_for(trial.backend)
    first = backend.plan(trial).run_dir
    assert backend.plan(trial).run_dir == first  # interrupted: resume there
    shutil.rmtree(trial.trial_dir)  # what run_trial does for a failed trial or redo=true
    again = backend.plan(trial).run_dir
    assert again != first and again.rsplit("/", 1)[0] == first.rsplit("/", 1)[0]
    assert first.startswith("/mnt/bench/runs/s/w2-")


def test_a_parallel_sweep_runs_at_most_max_parallel_jobs(volume, tmp_path):
    """Four trials, two at a time (stub replicas: this is about scheduling, not training)."""
    with FakeKube(volume, replica_command=STUB, replica_env={"STUB_SECONDS": "3"}) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        out = run(
            sweep_cmd(
                *k8s_args(
                    kubeconfig,
                    "workers=2",
                    "seed=0,1,2,3",
                    "sweep_name=p",
                    "hydra/launcher=bench_parallel",
                    "backend.max_parallel=2",
                    "-m",
                )
            ),
            tmp_path,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert fake.cluster.max_concurrent() == 2 and len(fake.creates) == 4
    results = load_results(tmp_path / "res" / "p")
    assert [r["status"] for r in results] == ["succeeded"] * 4
    assert sorted(r["seed"] for r in results) == [0, 1, 2, 3]
    # The jobs ran side by side: the time some job was running is about half their total.
    spans = sorted((job.started, job.finished) for job in fake.cluster.history)
    total = sum(end - start for start, end in spans)
    busy, reach = 0.0, 0.0
    for start, end in spans:
        busy += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    assert busy < 0.7 * total, spans
    assert "Launching 4 trials, 2 at a time" in out.stdout
    assert {f"[{i}/4]" for i in range(1, 5)} <= {
        line.split()[0] for line in out.stdout.splitlines() if line.startswith("[")
    }


@pytest.mark.slow
def test_a_parallel_sweep_of_real_tiny_trials_beats_the_sequential_one(volume, tmp_path):
    """Four real tiny trials, two at a time, against the same four one by one. Pods take 10 s to
    start (scheduling and image pulls take that and more on a cluster). One worker per trial:
    on this 2-core machine the trainers of parallel jobs share the cores, which a cluster's pods
    would not, so the gain measured here is mostly the overlapped waiting."""
    timings = {}
    for mode, extra in (
        ("parallel", ["hydra/launcher=bench_parallel", "backend.max_parallel=2"]),
        ("sequential", []),
    ):
        with FakeKube(volume, pod_start_delay_s=10.0) as fake:
            kubeconfig = fake.write_kubeconfig(tmp_path / f"kc-{mode}")
            started = time.monotonic()
            out = run(
                sweep_cmd(
                    *k8s_args(
                        kubeconfig, "workers=1", "seed=0,1,2,3", f"sweep_name={mode}", *extra, "-m"
                    )
                ),
                tmp_path,
                timeout=600,
            )
            timings[mode] = time.monotonic() - started
            assert out.returncode == 0, out.stdout + out.stderr
            assert fake.cluster.max_concurrent() == (2 if mode == "parallel" else 1)
        assert [r["status"] for r in load_results(tmp_path / "res" / mode)] == ["succeeded"] * 4
    print(f"sweep of four: {timings}")
    assert timings["parallel"] < 0.8 * timings["sequential"], timings


def test_the_launcher_takes_its_cap_from_the_backend_and_stays_sequential_at_one():
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    from bench.config import compose
    from hydra_plugins.bench_parallel_launcher.bench_parallel_launcher import ParallelLauncher

    cfg = compose(["backend=k8s", "backend.max_parallel=3", "hydra/launcher=bench_parallel"],
                  return_hydra_config=True)  # fmt: skip
    assert cfg.hydra.launcher.max_parallel == 3
    assert list(cfg.hydra.launcher.extra_overrides) == ["progress=false"]
    assert compose([], return_hydra_config=True).hydra.launcher._target_.endswith("BasicLauncher")
    assert isinstance(ParallelLauncher(max_parallel=1), BasicLauncher)


@pytest.mark.slow
def test_ctrl_c_cancels_the_running_trials_and_starts_no_more(volume, tmp_path):
    with FakeKube(volume, replica_command=STUB, replica_env={"STUB_SECONDS": "120"}) as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
        args = k8s_args(kubeconfig, "workers=2", "seed=0,1,2,3", "sweep_name=c",
                        "hydra/launcher=bench_parallel", "backend.max_parallel=2", "-m")  # fmt: skip
        sweep = subprocess.Popen(sweep_cmd(*args), cwd=tmp_path, env=env(), text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while len(fake.creates) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group gets it
        output = sweep.communicate(timeout=120)[0]
        assert sweep.returncode != 0, output
        assert len(fake.creates) == 2, output  # trials 3 and 4 never started
        assert all(job.deleting for job in fake.cluster.history)
    results = load_results(tmp_path / "res" / "c")
    assert [r["status"] for r in results] == ["cancelled", "cancelled"]
    assert all("interrupted" in r["reason"] for r in results)
