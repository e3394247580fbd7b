"""Pure builders: a trial spec becomes the engine arguments of its network and containers.

No engine is called here, so the builders are golden-tested without one. Each worker runs as
its PyTorchJob replica's pod does (``bench/backends/k8s/manifests.py``), flag by flag:

=====================================  =================================================
pod spec                               container flags
=====================================  =================================================
runAsUser/runAsGroup 1000              ``--user 1000:1000``
allowPrivilegeEscalation: false        ``--security-opt no-new-privileges``
capabilities.drop [ALL]                ``--cap-drop ALL``
seccompProfile RuntimeDefault          the engine's default profile (nothing to add)
limits.cpu / limits.memory             ``--cpus`` / ``--memory`` (= ``--memory-swap``: no swap)
the shared volume at mount_path        ``--volume``: the dataset (read-only) and the run folder
/dev/shm emptyDir (Memory)             ``--shm-size``
command python -m trainer <args>       the same command and arguments
operator's MASTER_ADDR, RANK, ...      ``--env``: rank 0's container is the master
=====================================  =================================================

and, stricter than the pods, a read-only root filesystem whose only writable place is a /tmp
tmpfs (torch needs one to import), as ``tests/test_images.py`` runs the image. ``--init`` puts a
small init process in front of the trainer, as a pod's pause container and kubelet do for
signals: the trainer as PID 1 would ignore SIGTERM, and a cancel would wait out the stop timeout.

Each container runs ``python -m trainer`` itself, not torchrun with one process: that is what
the PyTorchJob replicas run, the engine then sees the trainer's own exit code (torchrun would
turn a SIGKILLed worker's 137 into its own 1, which the exit-code rule would call permanent),
and restarts are the backend's, as they are the operator's on Kubernetes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from bench.backends.base import TrialSpec
from bench.backends.container.config import ContainerConfig, size_bytes

# Labels on the trial's containers and network. The trial label is what a re-run of the sweep
# finds them by; the spec label says whether they run what this trial would run.
TRIAL_LABEL = "gnn-bench.trial"  # key(): the trial folder's absolute path, hashed
TRIAL_ID_LABEL = "gnn-bench.trial-id"
SWEEP_LABEL = "gnn-bench.sweep"
RANK_LABEL = "gnn-bench.rank"
SPEC_LABEL = "gnn-bench.spec"
SUBMITTED_LABEL = "gnn-bench.submitted-at"  # unix seconds: a reattached trial keeps its clock
DATASETS = "datasets"  # under mount_path, as on the cluster's volume
MAX_TRIAL_PART = 40  # of a name: names are DNS labels (<= 63 characters) on the trial network


def slug(text: str) -> str:
    """Lowercase letters, digits and single dashes (a DNS label's alphabet)."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


def trial_key(trial_dir: Path) -> str:
    """The trial's identity on the engine: its folder, so two sweeps (or results_dirs) never
    share containers, and the same command run again finds its own."""
    return hashlib.sha256(str(trial_dir.absolute()).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Layout:
    """Where one trial's workers run and what they mount."""

    key: str
    network: str
    containers: tuple[str, ...]  # rank order; rank 0's is the master
    host_run_dir: Path  # the run folder on this machine (<trial>/run)
    host_data_root: Path  # the datasets on this machine (the trial's data_root)
    run_dir: str  # the same run folder, as the containers see it
    data_root: str


def container_paths(mount_path: str, sweep_name: str, trial_id: str) -> tuple[str, str]:
    """(run_dir, data_root) as the containers see them: the pods' paths on their volume."""
    root = mount_path.rstrip("/")
    return f"{root}/runs/{sweep_name}/{trial_id}", f"{root}/{DATASETS}"


def layout(trial_dir: Path, trial_id: str, workers: int, host_run_dir: Path,
           host_data_root: Path, run_dir: str, data_root: str) -> Layout:
    key = trial_key(trial_dir)
    base = f"gnn-{slug(trial_id)[:MAX_TRIAL_PART].strip('-')}-{key[:8]}"
    return Layout(key, base, tuple(f"{base}-rank{r}" for r in range(workers)),
                  host_run_dir, host_data_root, run_dir, data_root)


def threads(cpus: float) -> int:
    """Intra-op threads of a worker: its whole cores, at least one (as a pod's)."""
    return max(1, int(cpus))


def network_args(spec: TrialSpec, where: Layout) -> list[str]:
    """``network create`` arguments: internal (no route out: the workers reach only each
    other), the engine's DNS on it, the trial's labels, its own subnet."""
    opts: ContainerConfig = spec.backend  # type: ignore[assignment]
    argv = ["--internal", *_labels(spec, where)]
    if opts.subnet:
        argv += ["--subnet", opts.subnet]
    return [*argv, where.network]


def _labels(spec: TrialSpec, where: Layout) -> list[str]:
    labels = {TRIAL_LABEL: where.key, TRIAL_ID_LABEL: spec.trial_id, SWEEP_LABEL: spec.sweep_name}
    return [arg for k, v in labels.items() for arg in ("--label", f"{k}={v}")]


def worker_env(spec: TrialSpec, where: Layout, rank: int) -> dict[str, str]:
    """What the training operator puts in a replica's environment (and LOCAL_RANK: one process
    per container), plus the spec's own."""
    opts: ContainerConfig = spec.backend  # type: ignore[assignment]
    return {
        "MASTER_ADDR": where.containers[0],
        "MASTER_PORT": str(opts.master_port),
        "WORLD_SIZE": str(spec.workers),
        "RANK": str(rank),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(spec.threads_per_worker),
        **spec.env,
    }


def security_args(engine: str) -> list[str]:
    """The pods' security context, and the read-only root with its /tmp tmpfs."""
    argv = ["--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only"]
    if engine == "podman":  # podman-only: no tmpfs of its own on /run and /var/tmp
        argv.append("--read-only-tmpfs=false")
    return [*argv, "--tmpfs", "/tmp"]


def create_args(spec: TrialSpec, where: Layout, rank: int,
                submitted_at: float | None = None) -> list[str]:
    """``create`` arguments of rank ``rank``'s container (its spec label added by
    :func:`with_spec_label`)."""
    opts: ContainerConfig = spec.backend  # type: ignore[assignment]
    name = where.containers[rank]
    memory = size_bytes(opts.memory)
    argv = ["--name", name, "--hostname", name, "--network", where.network,
            *_labels(spec, where), "--label", f"{RANK_LABEL}={rank}"]
    if submitted_at is not None:
        argv += ["--label", f"{SUBMITTED_LABEL}={submitted_at:.3f}"]
    argv += ["--init", "--user", opts.user, *security_args(opts.engine),
             "--cpus", f"{opts.cpus:g}", "--memory", str(memory), "--memory-swap", str(memory),
             "--shm-size", str(size_bytes(opts.shm_size)),
             "--volume", f"{where.host_data_root}:{where.data_root}:ro",
             "--volume", f"{where.host_run_dir}:{where.run_dir}"]
    for key, value in worker_env(spec, where, rank).items():
        argv += ["--env", f"{key}={value}"]
    return [*argv, opts.image, "python", "-m", "trainer", *spec.trainer_overrides]


def spec_hash(spec: TrialSpec, where: Layout) -> str:
    """A short hash of what the trial's containers run (every rank's arguments but the clock)."""
    identity = [network_args(spec, where)] + [create_args(spec, where, r)
                                              for r in range(spec.workers)]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def with_spec_label(argv: list[str], digest: str) -> list[str]:
    """``argv`` with the spec label in front of the image (labels are set at creation)."""
    return ["--label", f"{SPEC_LABEL}={digest}", *argv]
