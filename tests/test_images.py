"""The built images do what the pods need (``make images`` first; ``.ci/run`` runs these).

Every container here runs as its Kubernetes object says, translated flag by flag from the
manifest (``pod_flags``): the PyTorchJob replicas of a dry-run sweep (``backend.dry_run=true``)
with the environment the training operator injects, the dataset by the prepare-data Job's own
command, TensorBoard by its Deployment's args. So each runs as uid 1000 with all capabilities
dropped and no-new-privileges, the shared volume (a folder here, owned by uid 1000 as the NFS
export is) at ``backend.mount_path``, and a read-only root filesystem whose only writable place
is a /tmp tmpfs (stricter than the trainer's manifest, which does not ask for a read-only root;
torch needs a writable temporary folder to import). The containers share a network the test
creates (``--internal``: no route out) and no port is published: only this process reaches
TensorBoard, at its container's address.

What could be wrong and is checked: the image's torch build, that the restrictions really
apply inside the container, that the container-prepared dataset is byte for byte the one this
checkout prepares, that two containers train together over the network to the numbers that
torchrun gives on this machine, and that TensorBoard serves exactly the scalars on the volume.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / ".images" / "images.json"  # written by docker/build-images.sh
BUILD_SCRIPT = REPO / "docker" / "build-images.sh"
# The training operator v1.9.4 (pkg/controller.v1/pytorch/envvar.go, master.go): every replica
# gets MASTER_ADDR = the Master's replica name <job>-master-0 (its Service), MASTER_PORT = the
# "pytorchjob-port" (defaulted to 23456, pkg/apis/kubeflow.org/v1/pytorch_defaults.go),
# WORLD_SIZE = all replicas, RANK (Worker i: i + 1), PET_NODE_RANK, PET_NNODES and
# PYTHONUNBUFFERED=1.
OPERATOR_PORT = 23456
UID = 1000  # the images' user, and the owner of the volume's folders (k8s/base/infra/nfs-server.yaml)
WAIT_S = 900  # generous: two cores shared with other work


def load_record() -> dict[str, Any] | None:
    return json.loads(RECORD.read_text()) if RECORD.exists() else None


# ----------------------------------------------------- fast checks (no engine needed)
def build_args(dockerfile: str) -> set[str]:
    return set(re.findall(r"^ARG\s+(\w+)", (REPO / "docker" / dockerfile).read_text(), re.M))


def test_the_dockerfiles_take_build_args_only_for_the_base_and_torch():
    assert build_args("trainer.Dockerfile") == {
        "BASE_IMAGE", "TORCH_VERSION", "TORCH_VARIANT", "TORCH_INDEX_URL", "TORCH_WHEELS"}
    assert build_args("tensorboard.Dockerfile") == {"BASE_IMAGE", "TENSORBOARD_VERSION"}
    passed = set(re.findall(r"--build-arg \"?(\w+)=", BUILD_SCRIPT.read_text()))
    assert passed and passed <= build_args("trainer.Dockerfile"), passed
    for dockerfile in ("trainer.Dockerfile", "tensorboard.Dockerfile"):
        text = (REPO / "docker" / dockerfile).read_text()
        assert "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\n" in text, dockerfile


def test_the_build_script_says_in_one_line_when_no_engine_is_there(tmp_path):
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "--check"], capture_output=True, text=True,
                         env={**os.environ, "ENGINE": "no-such-engine"}, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == "error: ENGINE=no-such-engine is not installed"


# ------------------------------------------------------ the images, run as the pods run
def quantity(value: Any) -> float:
    from kubernetes.utils.quantity import parse_quantity

    return float(parse_quantity(value))


def pod_flags(engine: str, pod: dict[str, Any], container: dict[str, Any],
              volume: Path) -> list[str]:
    """``run`` flags that give a container what its pod spec gives it on a kubelet.

    The PersistentVolumeClaim becomes ``volume`` bind-mounted at its mountPath, an emptyDir at
    /dev/shm the shm size, any other emptyDir a tmpfs; limits become --cpus and --memory. The
    root filesystem is read-only in every case, with a tmpfs /tmp as the only writable place.
    """
    sec = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    assert sec.get("runAsNonRoot") is True and sec.get("runAsUser") not in (None, 0), sec
    flags = ["--user", f"{sec['runAsUser']}:{sec.get('runAsGroup', 0)}"]
    if sec.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    for cap in (sec.get("capabilities") or {}).get("drop") or []:
        flags += ["--cap-drop", cap]
    # seccompProfile RuntimeDefault is the engine's own default profile: nothing to add.
    assert (sec.get("seccompProfile") or {}).get("type") == "RuntimeDefault", sec
    flags += ["--read-only"] + (["--read-only-tmpfs=false"] if engine == "podman" else [])
    limits = (container.get("resources") or {}).get("limits") or {}
    flags += ["--cpus", f"{quantity(limits['cpu']):g}", "--memory", str(int(quantity(limits["memory"])))]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounted = set()
    for mount in container.get("volumeMounts", []):
        source, path = volumes[mount["name"]], mount["mountPath"]
        mounted.add(path)
        if "persistentVolumeClaim" in source:
            read_only = mount.get("readOnly") or source["persistentVolumeClaim"].get("readOnly")
            flags += ["--volume", f"{volume}:{path}" + (":ro" if read_only else "")]
        elif "emptyDir" in source and path == "/dev/shm":
            flags += ["--shm-size", str(int(quantity(source["emptyDir"]["sizeLimit"])))]
        elif "emptyDir" in source:
            flags += ["--tmpfs", path]
        else:
            raise AssertionError(f"no mapping for volume {source}")
    if "/tmp" not in mounted:
        flags += ["--tmpfs", "/tmp"]
    return flags


class Engine:
    """The container engine the images were built with, as recorded by build-images.sh."""

    def __init__(self, record: dict[str, Any], network: str, label: str):
        self.name, self.network, self.label = record["engine"], network, label
        self.env = dict(os.environ)
        if record.get("containers_conf"):
            self.env["CONTAINERS_CONF"] = record["containers_conf"]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        out = subprocess.run([self.name, *args], capture_output=True, text=True, env=self.env,
                             timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"{self.name} {' '.join(args[:3])} ...: {out.stderr.strip()}")
        return out.stdout.strip()

    def start(self, name: str, image: str, pod: dict[str, Any], container: dict[str, Any],
              volume: Path, env: dict[str, str] | None = None) -> str:
        """Start ``container`` of ``pod`` as a container called ``name`` (also its hostname)."""
        argv = ["run", "--detach", "--name", name, "--hostname", name, "--label", self.label,
                "--network", self.network, *pod_flags(self.name, pod, container, volume)]
        merged = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
        for key, value in {**merged, **(env or {})}.items():
            argv += ["--env", f"{key}={value}"]
        if container.get("command"):
            argv += ["--entrypoint", json.dumps(container["command"])]
        self(*argv, image, *container.get("args", []))
        return name

    def wait(self, *names: str) -> dict[str, int]:
        """Exit code of each container once all have exited."""
        return {n: int(self("wait", n, timeout=WAIT_S).splitlines()[-1]) for n in names}

    def logs(self, name: str) -> str:  # for failure messages
        out = subprocess.run([self.name, "logs", name], capture_output=True, text=True,
                             env=self.env, timeout=60)
        return (out.stdout + out.stderr)[-3000:]

    def address(self, name: str) -> str:
        fmt = '{{(index .NetworkSettings.Networks "' + self.network + '").IPAddress}}'
        return self("inspect", "--format", fmt, name)


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    record = load_record()
    if record is None:
        pytest.skip(f"the images are not built here ({RECORD.relative_to(REPO)} is absent): make images")
    if shutil.which(record["engine"]) is None:
        pytest.skip(f"{record['engine']} is not installed")
    return record


@pytest.fixture(scope="module")
def engine(built):
    """The engine, with a network of this module's own that is removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    label = f"gnn-bench-test={tag}"
    eng = Engine(built, f"gnn-bench-test-{tag}", label)
    for name in ("trainer", "tensorboard"):
        image = built["images"][name]
        have = eng("image", "inspect", "--format", "{{.Id}}", image["tag"], check=False)
        assert have.removeprefix("sha256:") == image["id"].removeprefix("sha256:"), (
            f"{image['tag']} is not the image {RECORD.name} records: run make images again")
    eng("network", "create", "--internal", "--label", label, eng.network)
    yield eng
    ids = eng("ps", "--all", "--quiet", "--filter", f"label={label}", check=False).split()
    if ids:
        eng("rm", "--force", *ids, check=False)
    eng("network", "rm", eng.network, check=False)


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    """The shared volume: a folder owned by the pods' user, as the NFS export is."""
    path = tmp_path_factory.mktemp("volume")
    os.chown(path, UID, UID)
    return path


def mount_path_of(pod: dict[str, Any], container: dict[str, Any]) -> str:
    (claim,) = [v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == claim]
    return path


def on_volume(volume: Path, mount_path: str, path: str) -> Path:
    """A path a container sees under ``mount_path``, as this machine sees it on ``volume``."""
    assert path.startswith(mount_path.rstrip("/") + "/"), (path, mount_path)
    return volume / path[len(mount_path.rstrip("/")) + 1:]


@pytest.fixture(scope="module")
def prepared(engine, built, volume):
    """The prepare-data Job's container (k8s/prepare-data/job.yaml) run on the volume, tiny."""
    job = yaml.safe_load((REPO / "k8s" / "prepare-data" / "job.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container = {**container, "args": [("dataset=tiny" if a.startswith("dataset=") else a)
                                       for a in container["args"]]}
    name = engine.start(f"prepare-data-{engine.network[-8:]}", built["images"]["trainer"]["tag"],
                        pod, container, volume)
    codes = engine.wait(name)
    assert codes == {name: 0}, engine.logs(name)
    (data_root,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("data_root=")]
    return on_volume(volume, mount_path_of(pod, container), data_root)


@pytest.fixture(scope="module")
def trained(engine, built, volume, prepared, tmp_path_factory):
    """A dry-run sweep's PyTorchJob (2 replicas, tiny, 2 epochs), each replica a container."""
    work = tmp_path_factory.mktemp("sweep")
    sweep = f"img-{engine.network[-8:]}"
    out = subprocess.run(
        [sys.executable, "-m", "bench.sweep", "backend=k8s", "backend.dry_run=true",
         f"backend.image={built['images']['trainer']['tag']}", "dataset=tiny", "workers=2",
         "epochs=2", f"sweep_name={sweep}", f"results_dir={work}"],
        cwd=work, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "GNN_BENCH_DATA"})  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    (manifest_path,) = (work / sweep / "manifests").glob("*.yaml")
    job = yaml.safe_load(manifest_path.read_text())
    replicas = job["spec"]["pytorchReplicaSpecs"]
    world = sum(r["replicas"] for r in replicas.values())
    master = f"{job['metadata']['name']}-master-0"
    names = []
    for rtype in ("Master", "Worker"):
        for index in range(replicas.get(rtype, {}).get("replicas", 0)):
            template = replicas[rtype]["template"]
            (container,) = template["spec"]["containers"]
            assert container["image"] == built["images"]["trainer"]["tag"]
            rank = index + (rtype == "Worker")
            env = {"MASTER_ADDR": master, "MASTER_PORT": str(OPERATOR_PORT),
                   "WORLD_SIZE": str(world), "RANK": str(rank), "PET_NODE_RANK": str(rank),
                   "PET_NNODES": str(world), "PYTHONUNBUFFERED": "1"}
            names.append(engine.start(f"{job['metadata']['name']}-{rtype.lower()}-{index}",
                                      container["image"], template["spec"], container, volume,
                                      env))
    codes = engine.wait(*names)
    assert codes == dict.fromkeys(names, 0), "\n".join(engine.logs(n) for n in names)
    pod = replicas["Master"]["template"]["spec"]
    (container,) = pod["containers"]
    (run_dir,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("run_dir=")]
    return {"job": job, "names": names, "container": container,
            "run_dir": on_volume(volume, mount_path_of(pod, container), run_dir)}


@pytest.mark.images
@pytest.mark.slow
def test_the_trainer_image_has_the_torch_it_was_built_with(engine, built):
    torch = built["torch"]
    out = engine("run", "--rm", "--network", engine.network, built["images"]["trainer"]["tag"],
                 "python", "-c", "import torch; print(torch.__version__, torch.version.cuda)",
                 timeout=300)
    cuda = "None" if torch["variant"] == "cpu" else torch["variant"]
    assert out.splitlines()[-1].split()[0] == f"{torch['version']}+{torch['variant']}"
    if torch["variant"] == "cpu":
        assert out.splitlines()[-1].split()[1] == cuda


@pytest.mark.images
@pytest.mark.slow
def test_inside_a_trainer_pod_nothing_but_the_volume_and_tmp_is_writable(engine, built, volume):
    job = yaml.safe_load((REPO / "k8s" / "prepare-data" / "job.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = mount_path_of(pod, container)
    probe = (
        "import os\n"
        "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines())\n"
        "def writable(d):\n"
        "    try:\n"
        "        open(os.path.join(d, 'probe'), 'w').close(); os.remove(os.path.join(d, 'probe'))\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
        f"print(os.getuid(), os.getgid(), status['CapEff'], status['CapBnd'], status['NoNewPrivs'],"
        f" status['Seccomp'], *[writable(d) for d in ('/', '/app', '/home/bench', '/tmp', '/dev/shm', {mount!r})])\n"
    )
    name = engine.start(f"probe-{engine.network[-8:]}", built["images"]["trainer"]["tag"], pod,
                        {**container, "command": ["python", "-c", probe], "args": []}, volume)
    assert engine.wait(name) == {name: 0}, engine.logs(name)
    fields = engine("logs", name).splitlines()[-1].split()
    assert fields[:6] == [str(UID), str(UID), "0000000000000000", "0000000000000000", "1", "2"]
    assert fields[6:] == ["False", "False", "False", "True", "True", "True"]


@pytest.mark.images
@pytest.mark.slow
def test_the_prepare_data_job_writes_the_dataset_this_checkout_prepares(prepared, tmp_path):
    (dataset,) = [p for p in prepared.iterdir() if p.name.startswith("tiny-")]
    ours = tmp_path / "datasets"
    out = subprocess.run([sys.executable, "-m", "trainer.data", "prepare", "dataset=tiny",
                          f"data_root={ours}"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    cache = sorted(p.name for p in (ours / dataset.name / "cache").iterdir())
    assert "x.npy" in cache and "meta.json" in cache
    assert sorted(p.name for p in (dataset / "cache").iterdir()) == cache
    for name in cache:
        assert (dataset / "cache" / name).read_bytes() == (ours / dataset.name / "cache" / name).read_bytes(), name
    assert {p.stat().st_uid for p in dataset.rglob("*")} == {UID}


@pytest.mark.images
@pytest.mark.slow
def test_two_replica_containers_train_over_their_network_as_torchrun_does(trained, prepared, tmp_path):
    run_dir = trained["run_dir"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 2
    assert summary["host"] == trained["names"][0]  # rank 0 ran in the Master's container
    assert json.loads((run_dir / "checkpoints" / "last.json").read_text())["epoch"] == 2
    assert (run_dir / "checkpoints" / "last.pt").stat().st_size > 0
    from bench.events import read_scalars

    events = read_scalars(run_dir / "tb")
    assert events.problems == [] and events.steps("val/mrr") == [1, 2]
    # The same job with torchrun on this machine, on the same data: the same numbers.
    args = trained["container"]["args"]
    local = [a for a in args if not a.startswith(("data_root=", "run_dir="))]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                        "GNN_BENCH_DATA")}
    env.update({e["name"]: e["value"] for e in trained["container"]["env"]},
               GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "trainer", *local, f"data_root={prepared}", f"run_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=WAIT_S, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    twin = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("val_mrr", "val_accuracy", "test_mrr", "test_accuracy", "train_loss"):
        assert summary[key] == pytest.approx(twin[key], rel=1e-6), key


@pytest.mark.images
@pytest.mark.slow
def test_tensorboard_serves_the_runs_on_the_volume_to_this_test_only(engine, built, volume, trained):
    from bench.events import read_scalars

    deployment = next(d for d in yaml.safe_load_all((REPO / "k8s" / "base" / "infra" / "tensorboard.yaml").read_text())
                      if d["kind"] == "Deployment")  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    name = engine.start(f"tensorboard-{engine.network[-8:]}", built["images"]["tensorboard"]["tag"],
                        pod, container, volume)
    assert engine("port", name) == ""  # nothing published on this machine
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    base = f"http://{engine.address(name)}:{port}"
    mount = mount_path_of(pod, container)
    (logdir,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--logdir=")]
    run = (trained["run_dir"] / "tb").relative_to(on_volume(volume, mount, logdir)).as_posix()
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=5) as r:
                tags = json.load(r)
            if "val/mrr" in tags.get(run, {}):
                break
        except OSError:
            pass
        state = engine("inspect", "--format", "{{.State.Status}}", name)
        assert state == "running" and time.monotonic() < deadline, engine.logs(name)
        time.sleep(1)
    url = f"{base}/data/plugin/scalars/scalars?run={run}&tag=val/mrr"
    with urllib.request.urlopen(url, timeout=10) as r:
        served = json.load(r)
    events = read_scalars(trained["run_dir"] / "tb")
    assert [(step, value) for _, step, value in served] == [
        (p.step, pytest.approx(p.value, rel=1e-7)) for p in events.series["val/mrr"]]
