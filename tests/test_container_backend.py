"""The container backend without a container engine: its config, the arguments it gives the
engine, the exit-code rule, the cgroup readings, and its handle driven through restarts,
failures, reattaching and cancelling by an engine stand-in (``FakeEngine``: what ``inspect``
shows of each container, changed as podman changes it on create/start/kill/rm).

The real engine runs in tests/test_container_sweep.py (marker ``images``) and in the backend
conformance suite.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from pathlib import Path

import pytest

from bench.backends.base import JobState, TrialSpec
from bench.backends.container import commands
from bench.backends.container.cgroups import CgroupReader, ContainerCgroups
from bench.backends.container.config import ContainerConfig, size_bytes
from bench.backends.container.engine import ContainerState, network_subnets, parse_time
from bench.backends.container.follow import Action, describe_exit, judge, retryable
from bench.backends.container.handle import RECORD, ContainerHandle
from bench.config import compose, validate
from bench.store import read_json
from trainer.config import ConfigError

TRIAL = "w2-e3-s0-tiny-0123abcd"


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize(("override", "message"), [
    ("backend.engine=lxc", "backend.engine=lxc is invalid: use one of podman, docker"),
    ("backend.cpus=0", "backend.cpus=0.0 is invalid: it must be > 0"),
    ("backend.memory=8GB", "backend.memory=8GB is not a size of at least 6m"),
    ("backend.memory=1m", "backend.memory=1m is not a size of at least 6m"),
    ("backend.shm_size=lots", "backend.shm_size=lots is not a size"),
    ("backend.mount_path=mnt", "backend.mount_path=mnt must be an absolute path"),
    ("backend.user=0:0", "backend.user=0:0 is invalid: a non-root uid[:gid]"),
    ("backend.user=bench", "backend.user=bench is invalid"),
    ("backend.master_port=70000", "backend.master_port=70000 is not a port"),
    ("backend.image=''", "backend.image is empty"),
    ("backend.backoff_limit=-1", "backend.backoff_limit=-1 must be >= 0"),
])
def test_bad_container_settings_are_one_line_config_errors(override, message):
    cfg = compose(["backend=container", override, "sweep_name=x"])
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)


def test_the_defaults_compose_and_validate():
    cfg = compose(["backend=container", "sweep_name=x"])
    validate(cfg)
    assert cfg.backend.name == "container" and cfg.backend.cpus == 1.0


@pytest.mark.parametrize(("text", "expected"), [
    ("512m", 512 * 2**20), ("8g", 8 * 2**30), ("1.5G", 3 * 2**29), ("4096", 4096),
    ("64k", 65536), ("10b", 10),
])
def test_sizes_are_the_engines_own_syntax(text, expected):
    assert size_bytes(text) == expected


@pytest.mark.parametrize("text", ["8Gi", "8 g", "-1g", "g", ""])
def test_other_sizes_are_refused(text):
    with pytest.raises(ValueError):
        size_bytes(text)


# ------------------------------------------------------------------------ the builders
def make_spec(tmp_path: Path, workers: int = 2, redo: bool = False, **options) -> TrialSpec:
    opts = ContainerConfig(**{"image": "gnn-bench/trainer:test", "backoff_limit": 2, **options})
    run_dir, data_root = commands.container_paths(opts.mount_path, "s", TRIAL)
    return TrialSpec(
        trial_id=TRIAL, config_key="0123abcd0000", sweep_name="s", workers=workers, epochs=3,
        trial_dir=tmp_path / "res" / "s" / TRIAL, run_dir=run_dir,
        threads_per_worker=commands.threads(opts.cpus), cores=workers * opts.cpus,
        trainer_overrides=["dataset=tiny", "model=sage", "epochs=3", "seed=0",
                           f"data_root={data_root}", f"run_dir={run_dir}", "train.threads=1"],
        backend=opts, redo=redo)


def make_layout(spec: TrialSpec, tmp_path: Path) -> commands.Layout:
    return commands.layout(spec.trial_dir, spec.trial_id, spec.workers,
                           spec.trial_dir / "run", tmp_path / "data", spec.run_dir,
                           commands.container_paths(spec.backend.mount_path, "s", TRIAL)[1])


def test_each_worker_is_created_as_its_pytorchjob_replica_runs(tmp_path):
    spec = make_spec(tmp_path, workers=3, cpus=2, memory="8g")
    where = make_layout(spec, tmp_path)
    argv = commands.create_args(spec, where, 2, submitted_at=1700000000.25)
    name = where.containers[2]
    assert argv == [
        "--name", name, "--hostname", name, "--network", where.network,
        "--label", f"gnn-bench.trial={where.key}", "--label", f"gnn-bench.trial-id={TRIAL}",
        "--label", "gnn-bench.sweep=s", "--label", "gnn-bench.rank=2",
        "--label", "gnn-bench.submitted-at=1700000000.250",
        "--init", "--user", "1000:1000",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only",
        "--read-only-tmpfs=false", "--tmpfs", "/tmp",
        "--cpus", "2", "--memory", str(8 * 2**30), "--memory-swap", str(8 * 2**30),
        "--shm-size", str(2**30),
        "--volume", f"{tmp_path / 'data'}:/mnt/bench/datasets:ro",
        "--volume", f"{spec.trial_dir / 'run'}:/mnt/bench/runs/s/{TRIAL}",
        "--env", f"MASTER_ADDR={where.containers[0]}", "--env", "MASTER_PORT=23456",
        "--env", "WORLD_SIZE=3", "--env", "RANK=2", "--env", "LOCAL_RANK=0",
        "--env", "LOCAL_WORLD_SIZE=1", "--env", "PYTHONUNBUFFERED=1",
        "--env", "OMP_NUM_THREADS=2",
        "gnn-bench/trainer:test", "python", "-m", "trainer", *spec.trainer_overrides,
    ]


def test_the_flags_say_what_the_pod_manifests_say(tmp_path):
    """The same user, capabilities, privilege escalation, command and arguments as the
    PyTorchJob's pods; the same port and world as the training operator injects."""
    from bench.backends.k8s.config import K8sConfig
    from bench.backends.k8s.manifests import pytorchjob

    spec = make_spec(tmp_path)
    k8s_spec = dataclasses.replace(spec, backend=K8sConfig())
    pod = pytorchjob(k8s_spec)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    (container,) = pod["containers"]
    argv = commands.create_args(spec, make_layout(spec, tmp_path), 0)
    security = pod["securityContext"]
    assert argv[argv.index("--user") + 1] == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert container["securityContext"]["capabilities"]["drop"] == [argv[argv.index("--cap-drop") + 1]]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "no-new-privileges" in argv
    assert argv[-len(container["args"]) - 3:] == [*container["command"], *container["args"]]
    env = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--env")
    assert env["OMP_NUM_THREADS"] == next(e["value"] for e in container["env"]
                                          if e["name"] == "OMP_NUM_THREADS")
    assert env["MASTER_PORT"] == "23456"  # the operator's default pytorchjob-port


def test_docker_gets_only_the_flags_it_has(tmp_path):
    spec = make_spec(tmp_path, engine="docker")
    argv = commands.create_args(spec, make_layout(spec, tmp_path), 0)
    assert "--read-only" in argv and not any(a.startswith("--read-only-tmpfs") for a in argv)
    assert commands.security_args("podman")[-3:] == ["--read-only-tmpfs=false", "--tmpfs", "/tmp"]


def test_names_are_dns_labels_unique_per_trial_folder_and_stable(tmp_path):
    spec = make_spec(tmp_path, workers=12)
    where = make_layout(spec, tmp_path)
    long = commands.layout(tmp_path / "x", "w12-e30-s0-ogbl_citation2-" + "a" * 40, 12,
                           tmp_path, tmp_path, "/r", "/d")
    for name in [where.network, *where.containers, long.network, *long.containers]:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name), name
    assert where == make_layout(spec, tmp_path)  # a re-run finds the same names
    other = commands.layout(tmp_path / "elsewhere" / TRIAL, TRIAL, 12, tmp_path, tmp_path, "/r", "/d")
    assert other.key != where.key and not set(other.containers) & set(where.containers)


def test_the_network_is_internal_labelled_and_takes_the_subnet_asked_for(tmp_path):
    spec = make_spec(tmp_path, subnet="10.89.77.0/24")
    where = make_layout(spec, tmp_path)
    argv = commands.network_args(spec, where)
    assert argv[0] == "--internal" and argv[-3:] == ["--subnet", "10.89.77.0/24", where.network]
    assert f"gnn-bench.trial={where.key}" in argv
    assert "--subnet" not in commands.network_args(make_spec(tmp_path), where)


def test_the_spec_hash_changes_with_what_runs_and_not_with_the_clock(tmp_path):
    spec = make_spec(tmp_path)
    where = make_layout(spec, tmp_path)
    digest = commands.spec_hash(spec, where)
    assert commands.spec_hash(make_spec(tmp_path), where) == digest
    assert commands.spec_hash(make_spec(tmp_path, cpus=2), where) != digest
    assert commands.spec_hash(make_spec(tmp_path, image="other:1"), where) != digest


# ------------------------------------------------------------------- the exit-code rule
def state(name: str, status: str = "running", code: int = 0, finished: float | None = None,
          **kw) -> ContainerState:
    return ContainerState(name=name, id=f"id-{name}", status=status, exit_code=code,
                          pid=100 if status == "running" else 0, started_at=1.0,
                          finished_at=finished, **kw)


NAMES = ["r0", "r1", "r2"]
RUN, OK = "running", "exited"


@pytest.mark.parametrize(("case", "states", "restarts", "injected", "expected"), [
    ("all running", [("r0", RUN, 0, None), ("r1", RUN, 0, None), ("r2", RUN, 0, None)], 0, (),
     (JobState.RUNNING, Action.NONE, None)),
    ("not all started", [("r0", RUN, 0, None), ("r1", "created", 0, None), ("r2", RUN, 0, None)],
     0, (), (JobState.PENDING, Action.NONE, None)),
    ("all done", [("r0", OK, 0, 9.0), ("r1", OK, 0, 9.1), ("r2", OK, 0, 9.0)], 0, (),
     (JobState.SUCCEEDED, Action.NONE, None)),
    ("one done, others finishing", [("r0", OK, 0, 9.0), ("r1", RUN, 0, None), ("r2", RUN, 0, None)],
     0, (), (JobState.RUNNING, Action.NONE, None)),
    ("killed, peers still up", [("r0", RUN, 0, None), ("r1", OK, 137, 5.0), ("r2", RUN, 0, None)],
     0, (), (JobState.RESTARTING, Action.KILL_REST, "r1")),
    ("killed first, the peer's reset later", [("r0", OK, 1, 5.14), ("r1", OK, 137, 5.0),
                                               ("r2", OK, 137, 5.3)],
     1, (), (JobState.RESTARTING, Action.RESTART, "r1")),
    ("a permanent failure first", [("r0", OK, 137, 6.0), ("r1", OK, 3, 5.0), ("r2", RUN, 0, None)],
     0, (), (JobState.FAILED, Action.STOP_REST, "r1")),
    ("a bad value on every rank", [("r0", OK, 2, 5.0), ("r1", OK, 2, 5.0), ("r2", OK, 2, 5.1)],
     0, (), (JobState.FAILED, Action.STOP_REST, "r0")),
    ("the injected kill is the cause even if a peer's exit was stamped first",
     [("r0", OK, 1, 4.9), ("r1", OK, 137, 5.0), ("r2", RUN, 0, None)], 0, ("r1",),
     (JobState.RESTARTING, Action.KILL_REST, "r1")),
    ("retryable but the backoff limit is used up", [("r0", RUN, 0, None), ("r1", OK, 137, 5.0),
                                                    ("r2", RUN, 0, None)],
     2, (), (JobState.FAILED, Action.STOP_REST, "r1")),
    ("SIGTERM is retryable", [("r0", OK, 143, 5.0), ("r1", OK, 0, 6.0), ("r2", OK, 0, 6.0)], 0, (),
     (JobState.RESTARTING, Action.RESTART, "r0")),
])
def test_the_exit_code_rule(case, states, restarts, injected, expected):
    containers = [state(n, s, c, f) for n, s, c, f in states]
    verdict = judge(containers, NAMES, restarts, backoff_limit=2, injected=injected)
    assert (verdict.state, verdict.action, verdict.cause and verdict.cause.name) == expected, case


def test_a_missing_or_unstartable_container_fails_the_trial():
    gone = judge([state("r0"), state("r2")], NAMES, 0, 2)
    assert gone.state is JobState.FAILED and "rank 1's container r1 is gone" in gone.reason
    broken = state("r1", "created", error="runc: exec: python: not found")
    broken = dataclasses.replace(broken, started_at=None)
    verdict = judge([state("r0"), broken, state("r2")], NAMES, 0, 2)
    assert verdict.state is JobState.FAILED and verdict.reason.endswith("python: not found")


@pytest.mark.parametrize(("code", "retry", "text"), [
    (1, False, "exit code 1"), (3, False, "exit code 3"), (127, False, "exit code 127"),
    (128, True, "exit code 128"), (137, True, "exit code 137, SIGKILL"),
    (143, True, "exit code 143, SIGTERM"), (255, True, "exit code 255"),
])
def test_codes_1_to_127_are_permanent_128_to_255_retryable(code, retry, text):
    assert retryable(code) is retry and describe_exit(code) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-01T21:31:26.278875201Z", 1796160686.278875201),
    ("2026-12-01T22:31:26.5+01:00", 1796160686.5),
    ("2026-12-01T21:31:26Z", 1796160686.0),
    ("0001-01-01T00:00:00Z", None), ("", None), (None, None),
])
def test_inspect_times(text, expected):
    assert parse_time(text) == (pytest.approx(expected, abs=1e-6) if expected else None)


def test_inspect_json_of_either_engine():
    podman = {"Name": "a", "Id": "1", "State": {"Status": "exited", "ExitCode": 137, "Pid": 0,
              "StartedAt": "2026-12-01T21:31:20Z", "FinishedAt": "2026-12-01T21:31:26Z"},
              "Config": {"Labels": {"k": "v"}}, "HostConfig": {"NanoCpus": 1500000000}}
    docker = {**podman, "Name": "/a"}
    assert ContainerState.from_inspect(podman) == ContainerState.from_inspect(docker)
    got = ContainerState.from_inspect(docker)
    assert got.exited and not got.running and got.nano_cpus == 1500000000 and got.labels == {"k": "v"}
    assert network_subnets({"subnets": [{"subnet": "10.89.3.0/24"}]}) == ["10.89.3.0/24"]
    assert network_subnets({"IPAM": {"Config": [{"Subnet": "172.18.0.0/16"}]}}) == ["172.18.0.0/16"]


# ----------------------------------------------------------------------- cgroup readings
CID = "c0ffee" * 10


def cgroup_tree(tmp_path: Path, version: int, cpu_ns: int, usage: int, inactive: int,
                oom: int = 0, pid: int = 42, cid: str = CID) -> CgroupReader:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    path = f"libpod_parent/libpod-{cid}"
    if version == 1:
        lines = [f"4:memory:/{path}", f"2:cpu,cpuacct:/{path}", f"0::/{path}"]
        (root / "memory" / path).mkdir(parents=True, exist_ok=True)
        (root / "cpu,cpuacct" / path).mkdir(parents=True, exist_ok=True)
        (root / "memory" / path / "memory.usage_in_bytes").write_text(f"{usage}\n")
        (root / "memory" / path / "memory.stat").write_text(
            f"cache 5\nrss 7\ntotal_inactive_file {inactive}\n")
        (root / "memory" / path / "memory.oom_control").write_text(
            f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom}\n")
        (root / "cpu,cpuacct" / path / "cpuacct.usage").write_text(f"{cpu_ns}\n")
    else:
        lines = [f"0::/{path}"]
        (root / path).mkdir(parents=True, exist_ok=True)
        (root / "cgroup.controllers").write_text("cpu memory\n")
        (root / path / "memory.current").write_text(f"{usage}\n")
        (root / path / "memory.stat").write_text(f"anon 1\ninactive_file {inactive}\n")
        (root / path / "memory.events").write_text(f"low 0\noom 1\noom_kill {oom}\n")
        (root / path / "cpu.stat").write_text(f"usage_usec {cpu_ns // 1000}\nuser_usec 1\n")
    (proc / str(pid) / "cgroup").write_text("\n".join(lines) + "\n")
    return CgroupReader(proc, root)


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_counters_of_v1_and_v2(tmp_path, version):
    reader = cgroup_tree(tmp_path, version, cpu_ns=3_000_000_000, usage=300 * 2**20,
                         inactive=100 * 2**20, oom=1)
    got = reader.read(42, CID)
    assert got is not None and got.cpu_ns == 3_000_000_000
    assert got.working_set_bytes == 200 * 2**20 and got.oom_kills == 1


def test_a_cgroup_that_is_not_the_containers_is_never_read(tmp_path):
    """An exiting process shows the root cgroup: its counters are the machine's."""
    reader = cgroup_tree(tmp_path, 1, 1, 1, 0)
    (tmp_path / "proc" / "42" / "cgroup").write_text("4:memory:/\n2:cpu,cpuacct:/\n0::/\n")
    assert reader.read(42, CID) is None
    # Half moved: memory and cpuacct at the root, the systemd hierarchy still the container's.
    (tmp_path / "proc" / "42" / "cgroup").write_text(
        f"9:name=systemd:/libpod_parent/libpod-{CID}\n4:memory:/\n"
        f"2:cpu,cpuacct:/libpod_parent/libpod-{CID}\n0::/libpod_parent/libpod-{CID}\n")
    assert reader.read(42, CID) is None
    assert cgroup_tree(tmp_path / "b", 1, 1, 1, 0).read(42, "another") is None
    assert cgroup_tree(tmp_path / "c", 1, 1, 1, 0).read(7, CID) is None  # no such process


def test_cpu_is_the_cgroup_time_between_ticks_and_a_restart_starts_afresh(tmp_path):
    readings = iter([(1_000_000_000, 42), (1_500_000_000, 42), (200_000_000, 43),
                     (700_000_000, 43)])
    ticks = iter([10.0, 11.0, 12.0, 12.5])
    pids = {"pid": 42}

    class Reader:
        def read(self, pid, cid):
            cpu, expect = next(readings)
            assert pid == expect and cid == CID
            return type("R", (), {"cpu_ns": cpu, "working_set_bytes": 64 * 2**20,
                                  "oom_kills": 0})()

    source = ContainerCgroups(lambda: {"rank0": (CID, pids["pid"])}, Reader(), lambda: next(ticks))
    first = source.read(0.0)
    second = source.read(1.0)
    pids["pid"] = 43  # restarted in place: same container, a new process and cgroup
    third = source.read(2.0)
    fourth = source.read(2.5)
    assert math.isnan(first[0].cpu_cores) and second[0].cpu_cores == pytest.approx(0.5)
    assert math.isnan(third[0].cpu_cores) and fourth[0].cpu_cores == pytest.approx(1.0)
    assert {s.rss_mib for s in first + second + third + fourth} == {64.0}


# ---------------------------------------------------------------- the handle, by a stand-in
class FakeEngine:
    """What the handle sees of podman: containers (by name) whose inspect state changes as
    podman's does: create -> created, start -> running (a new pid), kill/stop -> exited 137,
    rm -> gone; networks by name."""

    name = "podman"
    containers_conf = None

    def __init__(self) -> None:
        self.containers: dict[str, ContainerState] = {}
        self.networks: dict[str, list[str]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.output: dict[str, str] = {}
        self.clock = 100.0
        self.pid = 1000

    def tick(self) -> float:
        self.clock += 0.1
        return self.clock

    def exit(self, name: str, code: int) -> None:
        self.containers[name] = dataclasses.replace(self.containers[name], status="exited",
                                                    exit_code=code, pid=0,
                                                    finished_at=self.tick())

    def ids(self, label):
        key, value = label.split("=", 1)
        return [c.id for c in self.containers.values() if c.labels.get(key) == value]

    def inspect(self, refs):
        return [c for c in self.containers.values() if c.name in refs or c.id in refs]

    def create(self, argv):
        self.calls.append(("create", argv[argv.index("--name") + 1]))
        name = argv[argv.index("--name") + 1]
        labels = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--label")
        self.containers[name] = ContainerState(name, f"id-{name}", "created", 0, 0, None, None,
                                               labels)
        return f"id-{name}"

    def start(self, names):
        self.calls.append(("start", *names))
        for name in names:
            self.pid += 1
            self.containers[name] = dataclasses.replace(
                self.containers[name], status="running", pid=self.pid, started_at=self.tick(),
                exit_code=0)

    def kill(self, names, signal="KILL"):
        self.calls.append(("kill", *names))
        hit = [n for n in names if n in self.containers and self.containers[n].running]
        for name in hit:
            self.exit(name, 137)
        return bool(hit)

    def stop(self, names, timeout_s):
        self.calls.append(("stop", *names))
        for name in names:
            if name in self.containers and self.containers[name].running:
                self.exit(name, 143)

    def remove(self, names):
        self.calls.append(("rm", *names))
        for name in names:
            self.containers.pop(name, None)

    def logs(self, name, tail_lines):
        return self.output.get(name, "")

    def network_create(self, argv):
        self.calls.append(("network create", argv[-1]))
        self.networks[argv[-1]] = argv

    def network_inspect(self, name):
        return {"name": name, "subnets": [{"subnet": "10.89.9.0/24"}]} if name in self.networks else None

    def network_remove(self, name):
        return self.networks.pop(name, None) is not None


def started(tmp_path: Path, engine: FakeEngine | None = None, **options) -> ContainerHandle:
    spec = make_spec(tmp_path, **options)
    spec.trial_dir.mkdir(parents=True, exist_ok=True)
    handle = ContainerHandle(spec, spec.backend, engine or FakeEngine(), make_layout(spec, tmp_path))
    handle.start()
    return handle


def test_start_makes_the_network_then_every_container_and_starts_them(tmp_path):
    handle = started(tmp_path)
    engine, names = handle.engine, handle.names
    assert engine.calls == [("network create", handle.where.network), ("create", names[0]),
                            ("create", names[1]), ("start", *names)]
    assert handle.poll().state is JobState.RUNNING
    assert read_json(handle.record_path)["network"]["subnets"] == ["10.89.9.0/24"]


def test_a_killed_worker_restarts_the_whole_group_in_place(tmp_path):
    handle = started(tmp_path)
    engine, names = handle.engine, handle.names
    handle.poll()
    assert handle.kill_worker(1) is True
    status = handle.poll()  # rank 1 exited 137, rank 0 still runs: it is stopped first
    assert status.state is JobState.RESTARTING and engine.calls[-1] == ("kill", names[0])
    status = handle.poll()  # both stopped: started again, one restart counted
    assert status.state is JobState.RESTARTING and engine.calls[-1] == ("start", *names)
    assert handle.poll().state is JobState.RUNNING and handle.poll().restarts == 1
    assert not [c for c in engine.calls if c[0] == "create" and c[1] in names[2:]]
    assert read_json(handle.record_path)["restart_history"][0] | {"at": 0} == {
        "at": 0, "rank": 1, "exit_code": 137, "injected": True}
    for name in names:
        engine.exit(name, 0)
    done = handle.poll()
    assert done.state is JobState.SUCCEEDED and done.restarts == 1
    assert done.finished_at == max(c.finished_at for c in engine.containers.values())


def test_a_permanent_exit_fails_at_once_with_the_trainers_error_line(tmp_path):
    handle = started(tmp_path)
    engine, names = handle.engine, handle.names
    handle.poll()
    engine.output[names[1]] = ("Traceback...\nerror: the dataset cache /mnt/bench/datasets/x is "
                               "corrupt (bad): delete that folder and run again to rebuild it\n")
    engine.exit(names[1], 3)
    status = handle.poll()
    assert status.state is JobState.FAILED and status.restarts == 0
    assert status.reason.startswith("the dataset cache /mnt/bench/datasets/x is corrupt")
    assert ("kill", names[0]) in engine.calls and not [c for c in engine.calls[4:] if c[0] == "start"]


def test_retryable_failures_beyond_the_backoff_limit_fail_the_trial(tmp_path):
    handle = started(tmp_path)  # backoff_limit=2
    engine, names = handle.engine, handle.names
    for _ in range(3):
        handle.poll()
        engine.exit(names[0], 137)
        engine.exit(names[1], 1)  # the peer's "Connection reset by peer", after the kill
        status = handle.poll()
    assert status.state is JobState.FAILED and status.restarts == 2
    assert status.reason == ("exceeded backoff limit (2 restarts); rank 0's container exited "
                             "(exit code 137, SIGKILL)")


def test_a_rerun_follows_the_containers_it_finds_by_label(tmp_path, capsys):
    first = started(tmp_path)
    first.poll()
    first.kill_worker(0)
    first.poll()
    first.poll()  # restarted once; now the harness dies
    engine = first.engine
    calls = len(engine.calls)
    again = started(tmp_path, engine)
    assert engine.calls[calls:] == []  # nothing created, started or removed
    assert again.reattached and again.restarts == 1
    assert again.submitted_at == pytest.approx(first.submitted_at, abs=1e-3)
    assert again.poll().state is JobState.RUNNING
    assert "following its 2 containers on network" in capsys.readouterr().out


@pytest.mark.parametrize(("change", "why"), [
    ({"redo": True}, "redo=true"),
    ({"cpus": 2.0}, "their spec differs from this trial's"),
])
def test_a_rerun_replaces_containers_that_are_not_this_trials(tmp_path, capsys, change, why):
    first = started(tmp_path)
    engine = first.engine
    calls = len(engine.calls)
    again = started(tmp_path, engine, **change)
    assert not again.reattached
    assert engine.calls[calls] == ("rm", *first.names)
    assert [c[0] for c in engine.calls[calls + 1:]] == ["network create", "create", "create", "start"]
    assert why in capsys.readouterr().out


def test_cancel_stops_and_removes_the_containers_and_the_network(tmp_path):
    handle = started(tmp_path)
    engine = handle.engine
    handle.poll()
    engine.output[handle.names[0]] = "epoch 1/3 loss 1.0\n"
    handle.cancel("stopped by the test")
    status = handle.poll()
    assert status.state is JobState.CANCELLED and status.reason == "stopped by the test"
    assert engine.containers == {} and engine.networks == {}
    assert handle.kill_worker(0) is False
    handle.collect(handle.spec.trial_dir)  # the log saved before the containers went
    assert "[rank0] epoch 1/3" in (handle.spec.trial_dir / "logs" / "workers.log").read_text()
    handle.release()
    assert (handle.spec.trial_dir / RECORD).exists()


def test_release_removes_everything_unless_asked_to_keep_it(tmp_path):
    for keep in (False, True):
        handle = started(tmp_path / str(keep), keep_containers=keep)
        for name in handle.names:
            handle.engine.exit(name, 0)
        assert handle.poll().state is JobState.SUCCEEDED
        handle.collect(handle.spec.trial_dir)
        handle.release()
        assert bool(handle.engine.containers) is keep and bool(handle.engine.networks) is keep


# ----------------------------------------------------------------------- before anything runs
def test_a_missing_engine_stops_the_sweep_with_one_line_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"  # python only: no podman, no docker on this PATH
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    out = subprocess.run([sys.executable, "-m", "bench.sweep", "backend=container", "dataset=tiny",
                          f"data_root={tmp_path / 'data'}", "results_dir=res", "sweep_name=x"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "error: backend.engine=podman is not installed here: install podman (apt-get install "
        "podman runc) or use backend.engine=docker"]
    assert not (tmp_path / "res").exists()


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")
def test_an_image_the_engine_does_not_hold_is_named_with_the_fix():
    from bench.backends.container.handle import usable_engine

    with pytest.raises(ConfigError, match=re.escape(
            "backend.image=gnn-bench/no-such-image:0 is not among podman's images here: build it "
            "with `make images` (or pull it and set backend.image)")):
        usable_engine(ContainerConfig(image="gnn-bench/no-such-image:0"))
