"""The Kubernetes backend through the real ``kubernetes`` client against the fake API server
(tests/fake_k8s): submit, follow, reattach, metrics, logs, event files, and every error case.

Jobs here run ``tests/fake_k8s/stub_trainer.py`` (seconds, no torch); the real trainer runs in
tests/test_k8s_sweep.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from fake_k8s import FakeKube, project_role_rules
from fake_k8s.kinds import PYTORCHJOBS
from kubernetes.client.exceptions import ApiException

from bench.backends.base import JobState, TrialSpec, wait
from bench.backends.k8s import K8sBackend, K8sHandle
from bench.backends.k8s.config import K8sConfig
from bench.backends.k8s.errors import K8sError, NotInstalled, explain, retry_delay, with_retries
from bench.backends.k8s.follow import job_state, parse_time
from bench.backends.k8s.manifests import job_name
from bench.backends.k8s.metrics import parse_duration, usage
from bench.events import read_scalars

REPO = Path(__file__).resolve().parents[1]
STUB = [sys.executable, str(REPO / "tests" / "fake_k8s" / "stub_trainer.py")]
TRIAL = "w2-e2-s0-tiny-0123abcd"
IMAGE = "europe-west1-docker.pkg.dev/p/gnn-bench/trainer:0.1.0"  # one the fake's registry has


def make_spec(tmp_path: Path, kubeconfig: Path, workers: int = 2, redo: bool = False,
              **options) -> TrialSpec:
    opts = K8sConfig(**{
        "kubeconfig": str(kubeconfig),
        "image": IMAGE,
        "api_retries": 3,
        "api_backoff_s": 0.01,
        "poll_interval_s": 0.1,
        "backoff_limit": 0,
        "timeout_s": 60,
        **options,
    })
    run_dir = f"/mnt/bench/runs/s/{TRIAL}"
    return TrialSpec(
        trial_id=TRIAL,
        config_key="0123abcd0000",
        sweep_name="s",
        workers=workers,
        epochs=2,
        threads_per_worker=1,
        cores=2.0 * workers,
        trainer_overrides=["dataset=tiny", "epochs=2", f"run_dir={run_dir}"],
        trial_dir=tmp_path / "res" / "s" / TRIAL,
        run_dir=run_dir,
        backend=opts,
        redo=redo,
    )


def collect(handle: K8sHandle, dest: Path) -> None:
    """What the harness does with a finished trial: collect its files, release its job."""
    handle.collect(dest)
    handle.release()


@pytest.fixture()
def fake(tmp_path):
    with FakeKube(
        tmp_path / "volume",
        replica_command=STUB,
        replica_env={"STUB_SECONDS": "0.5"},
        metrics_window_s=0.5,
        role_rules=project_role_rules(),
    ) as server:
        yield server


@pytest.fixture()
def kubeconfig(fake, tmp_path):
    return fake.write_kubeconfig(tmp_path / "kubeconfig")


def submit(tmp_path, kubeconfig, **options) -> K8sHandle:
    spec = make_spec(tmp_path, kubeconfig, **options)
    return K8sBackend(spec.backend).submit(spec)


# ----------------------------------------------------------------------------- following a job
def test_a_job_is_followed_to_succeeded_with_metrics_logs_and_event_files(
    fake, kubeconfig, tmp_path
):
    fake.cluster.replica_env["STUB_SECONDS"] = "1.5"  # a few metrics windows
    scrapes, scrape = [], fake.cluster.kubelet.scrape
    fake.cluster.kubelet.scrape = lambda window_s: (scrapes.append(window_s), scrape(window_s))
    handle = submit(tmp_path, kubeconfig)
    sampler = handle.sampler(0.1)
    sampler.start()
    states = []
    status = wait(handle, 30, 0.1, on_poll=lambda s: states.append(s.state))
    sampler.stop()
    assert status.state is JobState.SUCCEEDED and status.restarts == 0
    assert JobState.RUNNING in states and status.submitted_at < status.finished_at
    assert fake.creates == {handle.name: 1}

    # CPU and memory per worker, as the local backend names them, at most one per window.
    summary = sampler.summary()
    assert set(summary) == {"rank0", "rank1"}
    assert all(s["mem_peak_mib"] > 5 and s["cpu_mean"] >= 0 for s in summary.values())
    assert sampler.source.window_s == 0.5
    # At most one sample per window the metrics server measured (each scrape is a new window
    # with a new timestamp): the sampler asks no faster than the window and skips one it has
    # seen. Counted, not timed: a tick delayed on a busy machine may come close to the next.
    per_worker = [s.t for s in sampler.samples if s.worker == "rank0"]
    assert 1 <= len(per_worker) <= len(scrapes)

    dest = tmp_path / "res" / "s" / TRIAL
    collect(handle, dest)
    scalars = read_scalars(dest / "events")
    assert scalars.values("val/mrr") == pytest.approx([0.1, 0.2])  # read by the local code
    assert json.loads((dest / "summary.json").read_text()) == {"val_mrr": pytest.approx(0.2)}
    assert "stub trainer rank 0 of 2" in (dest / "logs" / f"{handle.name}-master-0.log").read_text()
    assert "rank 1 of 2" in (dest / "logs" / "workers.log").read_text()
    record = json.loads((dest / "k8s.json").read_text())
    assert record["job"] == handle.name and not record["reattached"] and record["problems"] == []
    stamps = record["timestamps"]
    assert (
        stamps["first_step"] and stamps["first_epoch"] and stamps["finished"] >= stamps["created"]
    )
    assert {p["worker"] for p in record["pods"].values()} == {"rank0", "rank1"}
    # Deleted after collection; every request allowed by k8s/base's Roles, and every rule of
    # them used (the TrainJob Role's are the trainjob backend's: tests/test_trainjob_sweep.py).
    assert fake.cluster.records[handle.uid].deleting
    rules = {
        (g, r, v)
        for namespace_rules in project_role_rules(trainjob=False).values()
        for rule in namespace_rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    # `delete` on pods is only for fault injection (tests/test_k8s_sweep.py uses it), `list` on
    # events only for a job whose pods were never created (tests/test_k8s_faithful.py).
    assert fake.used == rules - {("", "pods", "delete"), ("", "events", "list")}


def test_keep_jobs_leaves_the_job(fake, kubeconfig, tmp_path):
    handle = submit(tmp_path, kubeconfig, keep_jobs=True)
    assert wait(handle, 30, 0.1).state is JobState.SUCCEEDED
    collect(handle, tmp_path / "out")
    assert fake.cluster.job(handle.name) is not None


def test_a_retryable_failure_is_restarted_then_failed_with_its_own_error(fake, kubeconfig,
                                                                         tmp_path):
    fake.cluster.replica_env.update(STUB_EXIT="200", STUB_SECONDS="0.2")  # the group broke
    spec = make_spec(tmp_path, kubeconfig, workers=1)
    spec.backend.backoff_limit = 1
    handle = K8sBackend(spec.backend).submit(spec)
    status = wait(handle, 30, 0.1)
    assert status.state is JobState.FAILED
    assert status.reason == "the stub was told to fail"
    assert status.restarts == 1
    collect(handle, tmp_path / "out")
    assert (tmp_path / "out" / "logs" / f"{handle.name}-master-0.previous.log").exists()
    assert "error: the stub was told to fail" in handle.logs(10)


@pytest.mark.parametrize("record", [True, False], ids=["its record", "the log's tail"])
def test_a_permanent_failure_ends_the_trial_without_waiting_out_the_backoff_limit(
    fake, kubeconfig, tmp_path, record
):
    """Exit 3 (data) is permanent under the ExitCode rule: the harness deletes the job as soon
    as it sees it, with the trainer's line, from the failure record the kubelet copied into the
    pod's status, or (no record) from the log tail FallbackToLogsOnError put there. The
    kubelet's first in-place restart is immediate, so one may start before the harness looks;
    backend.backoff_limit=6 would allow 6 and their back-offs (10+20+40+80+160 s, scaled)."""
    fake.cluster.replica_env.update(STUB_EXIT="3", STUB_SECONDS="0.2",
                                    STUB_RECORD="1" if record else "0")
    spec = make_spec(tmp_path, kubeconfig, workers=2, backoff_limit=6)
    handle = K8sBackend(spec.backend).submit(spec)
    status = wait(handle, 30, 0.1)
    assert status.state is JobState.FAILED and status.restarts <= 2, status  # one per pod at most
    if record:
        assert status.reason == "the stub was told to fail (its record)"
    else:
        assert status.reason.endswith(" exited with code 3, which no restart can fix: the stub was "
                                      "told to fail"), status.reason
    assert fake.cluster.records[handle.uid].deleting  # the harness ended it, not the operator
    collect(handle, tmp_path / "out")


def test_without_metrics_server_the_trial_completes_and_says_so(tmp_path):
    with FakeKube(
        tmp_path / "volume",
        replica_command=STUB,
        metrics=False,
        replica_env={"STUB_SECONDS": "0.5"},
    ) as fake:
        handle = submit(tmp_path, fake.write_kubeconfig(tmp_path / "kc"))
        warnings = []
        sampler = handle.sampler(0.1)
        sampler.source.warn = warnings.append
        sampler.start()
        assert wait(handle, 30, 0.1).state is JobState.SUCCEEDED
        sampler.stop()
        collect(handle, tmp_path / "out")
    assert sampler.samples == [] and len(warnings) == 1 and "metrics-server" in warnings[0]
    record = json.loads((tmp_path / "out" / "k8s.json").read_text())
    assert any("metrics.k8s.io is not available" in p for p in record["problems"])
    assert read_scalars(tmp_path / "out" / "events").last("val/mrr") == pytest.approx(0.2)


def test_timeout_cancels_and_deletes_the_job(fake, kubeconfig, tmp_path):
    fake.cluster.replica_env["STUB_SECONDS"] = "30"
    handle = submit(tmp_path, kubeconfig)
    status = wait(handle, 1.0, 0.1)
    assert status.state is JobState.FAILED and "timed out" in status.reason
    assert fake.cluster.records[handle.uid].deleting
    assert handle.poll().state is JobState.CANCELLED


def test_a_job_deleted_behind_the_harness_fails_the_trial(fake, kubeconfig, tmp_path):
    fake.cluster.replica_env["STUB_SECONDS"] = "30"
    handle = submit(tmp_path, kubeconfig)
    fake.store.delete(PYTORCHJOBS, "gnn-bench", handle.name)  # kubectl delete's default
    status = handle.poll()
    assert status.state is JobState.FAILED and "deleted outside the harness" in status.reason


# ----------------------------------------------------------------------------- reattaching
def test_a_rerun_follows_the_existing_job_instead_of_creating_another(
    fake, kubeconfig, tmp_path, capsys
):
    fake.cluster.replica_env["STUB_SECONDS"] = "2"
    first = submit(tmp_path, kubeconfig)
    second = submit(tmp_path, kubeconfig)
    assert fake.creates == {first.name: 1} and second.reattached and not first.reattached
    assert "following the existing PyTorchJob gnn-bench/" in capsys.readouterr().out
    assert abs(second.submitted_at - first.submitted_at) < 2  # its creation time, not now
    assert wait(second, 30, 0.1).state is JobState.SUCCEEDED


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"image": "gnn-bench/trainer:other"}, "its spec differs"),
        ({"redo": True}, "redo=true"),
    ],
)
def test_a_different_or_redone_trial_replaces_the_job(
    fake, kubeconfig, tmp_path, capsys, change, why
):
    first = submit(tmp_path, kubeconfig)
    spec = make_spec(tmp_path, kubeconfig, **change)
    K8sBackend(spec.backend).submit(spec)
    assert fake.creates == {first.name: 2}
    assert why in capsys.readouterr().out


def test_a_failed_job_is_replaced_on_rerun(fake, kubeconfig, tmp_path):
    fake.cluster.replica_env.update(STUB_EXIT="1", STUB_SECONDS="0")
    first = submit(tmp_path, kubeconfig)
    assert wait(first, 30, 0.1).state is JobState.FAILED
    fake.cluster.replica_env.update(STUB_EXIT="0")
    second = submit(tmp_path, kubeconfig)
    assert not second.reattached and fake.creates == {first.name: 2}
    assert wait(second, 30, 0.1).state is JobState.SUCCEEDED


def test_a_create_that_races_another_follows_the_winner(fake, kubeconfig, tmp_path):
    first = submit(tmp_path, kubeconfig)
    # The look-up misses the job (created meanwhile by another harness), so the create gets 409.
    fake.fail("GET", "/pytorchjobs/", 404, details={"kind": "pytorchjobs", "name": first.name})
    second = submit(tmp_path, kubeconfig)
    assert fake.creates == {first.name: 1}
    assert [m for m, _ in fake.requests[-3:]] == ["GET", "POST", "GET"]
    assert wait(second, 30, 0.1).state is JobState.SUCCEEDED


# ----------------------------------------------------------------------------- errors
def one_line_error(tmp_path, kubeconfig, **options) -> str:
    with pytest.raises(K8sError) as info:
        submit(tmp_path, kubeconfig, **options)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_no_training_operator(tmp_path):
    with FakeKube(tmp_path / "v", crd_installed=False) as fake:
        with pytest.raises(
            NotInstalled,
            match=r"Kubeflow training operator is not installed.*"
            r"kubectl apply --server-side -k k8s/operator",
        ):
            submit(tmp_path, fake.write_kubeconfig(tmp_path / "kc"))


def test_missing_namespace(tmp_path):
    with FakeKube(tmp_path / "v", namespaces=("other",)) as fake:
        message = one_line_error(tmp_path, fake.write_kubeconfig(tmp_path / "kc"))
    assert (
        "namespace 'gnn-bench' does not exist" in message and "kubectl apply -k k8s/base" in message
    )


def test_forbidden(tmp_path):
    rules = {ns: [r for r in rules if "pytorchjobs" not in r["resources"]]
             for ns, rules in project_role_rules().items()}
    with FakeKube(tmp_path / "v", role_rules=rules) as fake:
        message = one_line_error(tmp_path, fake.write_kubeconfig(tmp_path / "kc"))
    assert message.startswith("forbidden to get pytorchjobs")
    assert "cannot get resource" in message and "Role" in message and "k8s/base" in message


def test_unreachable_cluster(tmp_path):
    with FakeKube(tmp_path / "v") as fake:
        kubeconfig = fake.write_kubeconfig(tmp_path / "kc")
    started = time.monotonic()
    message = one_line_error(tmp_path, kubeconfig)  # the server is gone: connection refused
    assert message.startswith(f"cannot reach the Kubernetes API server at {fake.url}")
    assert "kubectl cluster-info" in message and time.monotonic() - started < 10


def test_no_kubeconfig(tmp_path):
    message = one_line_error(tmp_path, tmp_path / "nope.yaml")
    assert message.startswith("no usable Kubernetes configuration") and "get-credentials" in message


def test_persistent_server_errors_give_up_with_one_line(fake, kubeconfig, tmp_path):
    fake.fail("POST", "/pytorchjobs$", 500, times=10)
    message = one_line_error(tmp_path, kubeconfig)
    assert (
        "kept failing while trying to create pytorchjobs" in message
        and "after 3 attempts" in message
    )


@pytest.mark.parametrize(
    ("status", "headers"),
    [(429, {"Retry-After": "0"}), (500, {}), (502, {}), (503, {}), ("reset", {})],
)
def test_transient_errors_are_retried(fake, kubeconfig, tmp_path, status, headers):
    fake.fail("POST", "/pytorchjobs$", status, times=2, headers=headers)
    fake.fail("GET", "/pytorchjobs/", status, times=1, headers=headers)
    handle = submit(tmp_path, kubeconfig)
    posts = [r for r in fake.requests if r[0] == "POST"]
    assert len(posts) == 3 and fake.creates == {handle.name: 1}
    fake.fail("GET", "/pytorchjobs/", status, times=2, headers=headers)
    assert wait(handle, 30, 0.1).state is JobState.SUCCEEDED


def test_a_poll_that_keeps_failing_keeps_the_last_state(fake, kubeconfig, tmp_path):
    fake.cluster.replica_env["STUB_SECONDS"] = "30"
    handle = submit(tmp_path, kubeconfig)
    before = handle.poll()
    fake.fail("GET", "/pytorchjobs/", 503, times=10)
    assert handle.poll().state is before.state  # not failed: the API will be back


# ----------------------------------------------------------------------------- pure parts
def condition(kind: str, at: str, status: str = "True", **kw) -> dict:
    return {"type": kind, "status": status, "lastTransitionTime": at, **kw}


JOBS = [
    ("new", [], JobState.PENDING),
    ("created", [condition("Created", "2026-01-01T00:00:00Z")], JobState.PENDING),
    (
        "running",
        [
            condition("Created", "2026-01-01T00:00:00Z"),
            condition("Running", "2026-01-01T00:00:05Z"),
        ],
        JobState.RUNNING,
    ),
    (
        "restarting",
        [
            condition("Running", "2026-01-01T00:00:05Z"),
            condition("Restarting", "2026-01-01T00:00:09Z"),
        ],
        JobState.RESTARTING,
    ),
    (
        "running again",
        [
            condition("Running", "2026-01-01T00:00:12Z"),
            condition("Restarting", "2026-01-01T00:00:09Z", "False"),
        ],
        JobState.RUNNING,
    ),
    (
        "succeeded",
        [
            condition("Running", "2026-01-01T00:00:05Z", "False"),
            condition("Succeeded", "2026-01-01T00:01:00Z"),
        ],
        JobState.SUCCEEDED,
    ),
    (
        "failed",
        [
            condition(
                "Failed", "2026-01-01T00:01:00Z", reason="BackoffLimitExceeded", message="too many"
            )
        ],
        JobState.FAILED,
    ),
    ("suspended", [condition("Suspended", "2026-01-01T00:00:01Z")], JobState.PENDING),
]


@pytest.mark.parametrize(("name", "conditions", "state"), JOBS, ids=[j[0] for j in JOBS])
def test_job_conditions_map_to_states(name, conditions, state):
    got, reason = job_state({"status": {"conditions": conditions}})
    assert got is state
    assert (
        (reason == "BackoffLimitExceeded too many") if state is JobState.FAILED else reason is None
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10.5s", 10.5),
        ("1m0s", 60.0),
        ("1h2m3s", 3723.0),
        ("500ms", 0.5),
        ("", None),
        (None, None),
        ("soon", None),
        ("5", None),
    ],
)
def test_go_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("cpu", "memory", "cores", "mib"),
    [
        ("250m", "123Mi", 0.25, 123.0),
        ("12345n", "1234Ki", 12345e-9, 1234 / 1024),
        ("2", "1Gi", 2.0, 1024.0),
        ("1500000u", "1048576", 1.5, 1.0),
    ],
)
def test_pod_metrics_quantities(cpu, memory, cores, mib):
    item = {"containers": [{"name": "pytorch", "usage": {"cpu": cpu, "memory": memory}}]}
    assert usage(item) == pytest.approx((cores, mib))


def test_timestamps():
    assert parse_time("2026-01-01T00:00:05Z") == parse_time("2026-01-01T00:00:00Z") + 5
    assert parse_time("2026-01-01T00:00:05.250000Z") % 1 == pytest.approx(0.25)
    assert parse_time(None) is None and parse_time("yesterday") is None


def api_error(status: int, body: dict | None = None, headers: dict | None = None) -> ApiException:
    exc = ApiException(status=status, reason="R")
    exc.body, exc.headers = json.dumps(body or {}), headers
    return exc


EXPLAINED = [
    (
        "crd",
        api_error(
            404, {"message": "the server could not find the requested resource", "details": {}}
        ),
        "create pytorchjobs j",
        "kubectl apply --server-side -k k8s/operator",
    ),
    (
        "namespace",
        api_error(404, {"message": 'namespaces "ns" not found', "details": {"kind": "namespaces"}}),
        "create pytorchjobs j",
        "namespace 'ns' does not exist",
    ),
    (
        "forbidden",
        api_error(403, {"message": "no"}),
        "create pytorchjobs j",
        "forbidden to create pytorchjobs j in namespace 'ns' (no)",
    ),
    ("unauthorized", api_error(401), "get pytorchjobs j", "get-credentials"),
    (
        "invalid",
        api_error(422, {"message": "spec.x: bad"}),
        "create pytorchjobs j",
        "as invalid: spec.x: bad",
    ),
    ("throttled", api_error(429, {"message": "slow down"}), "get pytorchjobs j", "kept failing"),
    (
        "no service",
        api_error(404, {"details": {"kind": "services", "name": "f"}}),
        "get services/proxy f/x",
        "service 'f' does not exist",
    ),
    (
        "other",
        api_error(418, {"message": "teapot"}),
        "get pytorchjobs j",
        "Kubernetes API error 418",
    ),
]


@pytest.mark.parametrize(
    ("name", "exc", "what", "expected"), EXPLAINED, ids=[e[0] for e in EXPLAINED]
)
def test_errors_are_explained_in_one_line(name, exc, what, expected):
    message = str(explain(exc, what, "ns", "https://k"))
    assert expected in message and "\n" not in message


def test_retries_back_off_exponentially_and_honour_retry_after():
    sleeps: list[float] = []
    calls = iter(
        [api_error(500), api_error(503), api_error(429, headers={"Retry-After": "7"}), "ok"]
    )

    def call():
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert with_retries(call, attempts=5, backoff_s=1.0, sleep=sleeps.append) == "ok"
    assert 0.75 <= sleeps[0] <= 1.0 and 1.5 <= sleeps[1] <= 2.0 and sleeps[2] == 7.0
    with pytest.raises(ApiException):
        with_retries(lambda: (_ for _ in ()).throw(api_error(403)), 5, 1.0, sleeps.append)
    assert len(sleeps) == 3  # a 403 is not retried
    assert retry_delay(api_error(500), 10, 1.0) <= 30.0


def test_job_names_used_by_the_backend_are_the_manifest_names(tmp_path):
    assert job_name("s", TRIAL) == f"s-{TRIAL}"
