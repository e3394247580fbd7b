"""Typed configuration schema shared by the trainer and the harness.

The YAML files in ``conf/`` extend these dataclasses (Hydra structured configs), so a value of
the wrong type (``workers=abc``) fails when the config is composed. Range checks that OmegaConf
cannot express (``workers=0``, ``epochs=-1``, a fan-out list of the wrong length) live in
:func:`validate`, which both entry points call before they run or write anything.

Each component receives only its own slice: the trainer gets ``cfg.dataset``, ``cfg.model`` and
``cfg.train``; the harness adds ``cfg.backend`` and ``cfg.fault``.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

SYNTHETIC_PRESETS = ("tiny", "small", "medium", "full")
REAL_DATASETS = ("ogbl_citation2",)


class ConfigError(ValueError):
    """A user-facing configuration problem: the message names the key and the fix."""


@dataclass
class DatasetConf:
    name: str = MISSING  # preset: tiny | small | medium | full | ogbl_citation2
    synthetic: bool = True
    # Synthetic generator (ignored for the real dataset).
    num_nodes: int = 10_000
    avg_degree: float = 10.0  # mean references per paper (ogbl-citation2: 10.4)
    num_topics: int = 20
    subtopics_per_topic: int = 10
    feat_dim: int = 128
    eval_fraction: float = 0.0297  # validation (and test) sources per node, as in ogbl-citation2
    num_neg: int = 1000  # negatives per validation/test source (the OGB protocol)
    gen_seed: int = 0


@dataclass
class ModelConf:
    name: str = MISSING
    num_layers: int = 3
    hidden: int = 256
    aggr: str = "mean"  # any PyG aggregation name SAGEConv accepts: mean | add | max
    dropout: float = 0.0
    predictor: str = "dot"  # dot (as in the study) | mlp (as in the OGB reference)
    fanouts: list[int] = field(default_factory=lambda: [15, 10, 5])  # one per layer; -1 = all


@dataclass
class TrainConf:
    batch_size: int = 512  # positive edges per worker per step
    lr: float = 0.001
    steps_per_epoch: int | None = None  # None: a full pass over the training edges
    exclude_target_edges: bool = True  # drop a batch's positive edges from its message passing
    eval_sources: int | None = 1000  # validation sources scored each epoch (None: all)
    test_sources: int | None = None  # test sources scored at the end (None: all)
    eval_batch_nodes: int = 65_536  # nodes per chunk in layer-wise full-graph inference
    threads: int | None = None  # torch intra-op threads per worker (None: OMP_NUM_THREADS or 1)
    log_every: int = 20  # steps between step-level TensorBoard scalars
    dist_timeout_s: int = 600


@dataclass
class BackendConf:
    name: str = MISSING  # local | k8s
    # Restarts allowed. local: torchrun's --max-restarts (one per group restart). k8s: the
    # PyTorchJob's runPolicy.backoffLimit, which the operator compares with the sum of all its
    # pods' container restarts: one lost pod costs workers - 1 (conf/backend/k8s.yaml: 10).
    backoff_limit: int = 3
    sample_interval_s: float = 1.0  # resource sampling period
    poll_interval_s: float = 0.5
    timeout_s: float = 3600.0  # a trial running longer is cancelled and recorded as failed
    cores: int | None = None  # cores the trial may use (None: all of this machine)
    master_port: int | None = None  # None: a free port is chosen per trial
    max_parallel: int = 1  # trials run at once by hydra/launcher=bench_parallel (1: one by one)
    # -- Kubernetes (backend=k8s, docs/gke.md); the local backend ignores these. Per worker pod.
    namespace: str = "gnn-bench"  # where the PyTorchJobs run (k8s/ creates it)
    context: str | None = None  # kubeconfig context (None: the current one)
    kubeconfig: str | None = None  # None: $KUBECONFIG or ~/.kube/config; in a pod: in-cluster
    image: str = "gnn-bench/trainer:latest"  # the trainer image (docker/trainer.Dockerfile)
    image_pull_policy: str = "IfNotPresent"  # Always | IfNotPresent | Never
    cpu: str = "1"  # CPU request (a quantity: 1, 500m); threads per worker = its whole cores
    memory: str = "2Gi"  # memory request
    cpu_limit: str | None = None  # None: the request
    memory_limit: str | None = None  # None: the request
    gpus: int = 0  # nvidia.com/gpu per pod
    node_selector: dict[str, str] = field(default_factory=dict)  # e.g. a GKE node pool
    volume_claim: str = "gnn-bench-data"  # the RWX PVC holding datasets/ and runs/ (k8s/)
    mount_path: str = "/mnt/bench"  # where every pod mounts it
    shm_size: str = "1Gi"  # /dev/shm (memory-backed emptyDir) for PyTorch
    files_service: str = "gnn-bench-files"  # read-only file server on the volume (k8s/base)
    files_namespace: str = "gnn-bench-infra"  # its namespace (apart from the jobs': k8s/base)
    dry_run: bool = False  # write results/<sweep>/manifests/<trial>.yaml, contact no cluster
    keep_jobs: bool = False  # keep finished PyTorchJobs (and their pods) after collection
    clean_pod_policy: str = "None"  # runPolicy.cleanPodPolicy: None | Running | All
    active_deadline_s: int | None = None  # runPolicy.activeDeadlineSeconds (None: timeout_s)
    ttl_after_finished_s: int | None = 86400  # runPolicy.ttlSecondsAfterFinished (None: never)
    # A trial whose pods are not all running for this long (image pull, scheduling, admission)
    # fails with the waiting reason and its fix.
    start_timeout_s: float = 600.0
    log_tail_lines: int = 200  # lines of each pod's log kept in logs/
    api_retries: int = 5  # attempts for transient API errors (429, 5xx, connection resets)
    api_backoff_s: float = 1.0  # first retry delay; doubles each attempt
    request_timeout_s: float = 30.0  # per API request


@dataclass
class FaultConf:
    """Fault injection by the harness (bench/faults.py); the defaults mean "no fault"."""

    kill_at_epoch: int | None = None  # SIGKILL (pod delete on k8s) once this epoch is checkpointed
    rank: int = 0  # the worker killed
    count: int = 1  # faults in all: the i-th (from 0) once epoch kill_at_epoch + i is checkpointed


@dataclass
class Config:
    workers: int = 2  # total processes (1 Master + workers-1 Worker replicas on Kubernetes)
    epochs: int = 3
    seed: int = 0
    experiment: str = "default"
    sweep_name: str = MISSING
    results_dir: str = "results"
    run_dir: str = "runs/default"  # where the trainer writes events, checkpoints, summary.json
    data_root: str = MISSING
    redo: bool = False  # re-run trials whose result already succeeded
    progress: bool | None = None  # live progress line (None: only when stdout is a terminal)
    dataset: DatasetConf = MISSING
    model: ModelConf = MISSING
    train: TrainConf = field(default_factory=TrainConf)
    backend: BackendConf = MISSING
    fault: FaultConf = field(default_factory=FaultConf)
    # Groups added by later harness features land here without touching the trainer.
    extra: dict[str, Any] = field(default_factory=dict)


def register_configs() -> None:
    """Register the schema so that ``conf/*.yaml`` can name it in their defaults lists."""
    ConfigStore.instance().store(name="config_schema", node=Config)


def _positive(name: str, value: int | float | None, fix: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise ConfigError(f"{name}={value} is invalid: it must be >= 1 ({fix})")


def validate(cfg: DictConfig) -> None:
    """Range and consistency checks that typing alone cannot express. Raises ConfigError."""
    _positive("workers", cfg.workers, "e.g. workers=2")
    _positive("epochs", cfg.epochs, "e.g. epochs=10")
    if cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed} is invalid: it must be >= 0")
    validate_trainer(cfg.dataset, cfg.model, cfg.train)
    if cfg.backend.backoff_limit < 0:
        raise ConfigError(f"backend.backoff_limit={cfg.backend.backoff_limit} must be >= 0")
    for key, example in (("sample_interval_s", 1), ("poll_interval_s", 0.5), ("timeout_s", 3600)):
        if cfg.backend[key] <= 0:
            raise ConfigError(f"backend.{key}={cfg.backend[key]} is invalid: it must be > 0 "
                              f"(e.g. backend.{key}={example})")
    name = str(cfg.sweep_name)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"sweep_name={name} is invalid: it must be one folder name, without '/' "
                          "(e.g. sweep_name=table1)")
    _positive("backend.cores", cfg.backend.cores, "or leave it null", allow_none=True)
    _positive("backend.max_parallel", cfg.backend.max_parallel, "e.g. backend.max_parallel=2")
    if cfg.backend.name == "k8s":
        validate_k8s(cfg.backend)
    validate_fault(cfg.fault, cfg.workers, cfg.epochs)
    if cfg.backend.name == "k8s":
        validate_fault_budget(cfg.fault, cfg.workers, cfg.backend.backoff_limit)


def fault_cost(workers: int, count: int) -> int:
    """Restarts the training operator counts for ``count`` lost pods of a ``workers``-replica
    PyTorchJob: each loss fails every other replica's collective, and the kubelet restarts each
    of them in place once (the recreated pod starts with no restarts)."""
    return count * (workers - 1)


def validate_fault_budget(fault: DictConfig, workers: int, backoff_limit: int) -> None:
    """A planned fault demo the PyTorchJob's backoffLimit cannot survive is refused up front.

    The operator fails the job once the sum of its Running pods' restarts reaches the limit
    (kubeflow/trainer v1.9, pkg/core/job.go PastBackoffLimit; a limit of 0 fails at the first).
    """
    if fault.kill_at_epoch is None:
        return
    cost = fault_cost(workers, fault.count)
    if cost >= max(1, backoff_limit):
        raise ConfigError(
            f"fault.count={fault.count} at workers={workers} costs {cost} restarts, which the "
            f"training operator counts against backend.backoff_limit={backoff_limit} (the job "
            f"fails when they reach it): set backend.backoff_limit={cost + 1} or more")


def validate_fault(fault: DictConfig, workers: int, epochs: int) -> None:
    """A fault must hit a worker that exists, at an epoch boundary before the last epoch."""
    if fault.kill_at_epoch is None:
        return
    if not 1 <= fault.kill_at_epoch < epochs:
        raise ConfigError(f"fault.kill_at_epoch={fault.kill_at_epoch} is invalid: it must be >= 1 "
                          f"and < epochs={epochs}")
    if not 0 <= fault.rank < workers:
        raise ConfigError(f"fault.rank={fault.rank} is invalid: it must be >= 0 and < "
                          f"workers={workers}")
    _positive("fault.count", fault.count, "e.g. fault.count=1")
    last = fault.kill_at_epoch + fault.count - 1
    if last >= epochs:
        raise ConfigError(f"fault.count={fault.count} is too many: the last fault would follow "
                          f"epoch {last}, which must be < epochs={epochs} (one fault per epoch)")


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def validate_k8s(backend: DictConfig) -> None:
    """Checks of the Kubernetes fields, so that a typo fails before any job is submitted."""
    from kubernetes.utils.quantity import parse_quantity

    if not _DNS_LABEL.match(backend.namespace or ""):
        raise ConfigError(f"backend.namespace={backend.namespace} is not a valid namespace name "
                          "(lowercase letters, digits and '-')")
    if not backend.image:
        raise ConfigError("backend.image is empty: set the trainer image, e.g. backend.image="
                          "europe-west1-docker.pkg.dev/<project>/gnn-bench/trainer:0.1")
    for key in ("cpu", "memory", "cpu_limit", "memory_limit", "shm_size"):
        value = backend[key]
        if value is None and key.endswith("_limit"):
            continue
        try:
            ok = parse_quantity(value) > 0
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise ConfigError(f"backend.{key}={value} is not a positive Kubernetes quantity "
                              "(e.g. 2, 500m, 4Gi)")
    choices = {"image_pull_policy": ("Always", "IfNotPresent", "Never"),
               "clean_pod_policy": ("None", "Running", "All")}
    for key, allowed in choices.items():
        if backend[key] not in allowed:
            raise ConfigError(f"backend.{key}={backend[key]} is invalid: use one of "
                              + ", ".join(allowed))
    if backend.gpus < 0:
        raise ConfigError(f"backend.gpus={backend.gpus} must be >= 0")
    if not str(backend.mount_path).startswith("/"):
        raise ConfigError(f"backend.mount_path={backend.mount_path} must be an absolute path")
    if not _DNS_LABEL.match(backend.files_namespace or ""):
        raise ConfigError(f"backend.files_namespace={backend.files_namespace} is not a valid "
                          "namespace name (lowercase letters, digits and '-')")
    if backend.start_timeout_s <= 0:
        raise ConfigError(f"backend.start_timeout_s={backend.start_timeout_s} is invalid: it "
                          "must be > 0 (e.g. backend.start_timeout_s=600)")
    _positive("backend.api_retries", backend.api_retries, "e.g. backend.api_retries=5")
    _positive("backend.active_deadline_s", backend.active_deadline_s, "or null", allow_none=True)
    if backend.ttl_after_finished_s is not None and backend.ttl_after_finished_s < 0:
        raise ConfigError("backend.ttl_after_finished_s must be >= 0 (or null)")


def validate_trainer(dataset: DictConfig, model: DictConfig, train: DictConfig) -> None:
    """The checks the trainer needs on its own slices (it also runs without the harness)."""
    if dataset.name not in SYNTHETIC_PRESETS + REAL_DATASETS:
        raise ConfigError(
            f"dataset={dataset.name} is unknown: use one of "
            + ", ".join(SYNTHETIC_PRESETS + REAL_DATASETS)
        )
    if dataset.synthetic:
        _positive("dataset.num_nodes", dataset.num_nodes, "e.g. dataset.num_nodes=10000")
        if dataset.num_nodes < 200:
            raise ConfigError(f"dataset.num_nodes={dataset.num_nodes} is too small: use >= 200")
        if dataset.avg_degree <= 0:
            raise ConfigError(f"dataset.avg_degree={dataset.avg_degree} must be > 0")
        _positive("dataset.num_topics", dataset.num_topics, "e.g. dataset.num_topics=20")
        _positive("dataset.subtopics_per_topic", dataset.subtopics_per_topic, "e.g. 10")
        _positive("dataset.feat_dim", dataset.feat_dim, "e.g. dataset.feat_dim=128")
        _positive("dataset.num_neg", dataset.num_neg, "e.g. dataset.num_neg=1000")
        if not 0 < dataset.eval_fraction < 0.5:
            raise ConfigError(f"dataset.eval_fraction={dataset.eval_fraction} must be in (0, 0.5)")
    _positive("model.num_layers", model.num_layers, "e.g. model.num_layers=3")
    _positive("model.hidden", model.hidden, "e.g. model.hidden=256")
    if model.aggr not in ("mean", "add", "sum", "max"):
        raise ConfigError(f"model.aggr={model.aggr} is unknown: use mean, add or max")
    if model.predictor not in ("dot", "mlp"):
        raise ConfigError(f"model.predictor={model.predictor} is unknown: use dot or mlp")
    if not 0.0 <= model.dropout < 1.0:
        raise ConfigError(f"model.dropout={model.dropout} must be in [0, 1)")
    fanouts = list(model.fanouts)
    if len(fanouts) != model.num_layers:
        raise ConfigError(
            f"model.fanouts has {len(fanouts)} entries but model.num_layers={model.num_layers}: "
            "give one fan-out per layer, e.g. model.fanouts=[15,10,5]"
        )
    if any(f == 0 or f < -1 for f in fanouts):
        raise ConfigError(f"model.fanouts={fanouts} is invalid: use positive counts or -1 (all)")
    _positive("train.batch_size", train.batch_size, "e.g. train.batch_size=512")
    if train.lr <= 0:
        raise ConfigError(f"train.lr={train.lr} must be > 0")
    _positive("train.steps_per_epoch", train.steps_per_epoch, "or null", allow_none=True)
    _positive("train.eval_sources", train.eval_sources, "or null for all", allow_none=True)
    _positive("train.test_sources", train.test_sources, "or null for all", allow_none=True)
    _positive("train.eval_batch_nodes", train.eval_batch_nodes, "e.g. 65536")
    _positive("train.threads", train.threads, "or null", allow_none=True)
    _positive("train.log_every", train.log_every, "e.g. train.log_every=20")


def compose(overrides: list[str] | None = None, return_hydra_config: bool = False) -> DictConfig:
    """Compose ``conf/config.yaml`` with overrides, as the entry points do (used by tests too).

    Errors (unknown group option, wrong type, unknown key) become one-line ConfigErrors.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(
                config_name="config",
                overrides=list(overrides or []),
                return_hydra_config=return_hydra_config,
            )
    except Exception as exc:  # Hydra and OmegaConf raise several types; all are user errors here
        raise ConfigError(one_line(exc)) from exc
    finally:
        GlobalHydra.instance().clear()
    return cfg


def one_line(exc: BaseException) -> str:
    """One line from a Hydra/OmegaConf error: the problem and, where we know it, the fix."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:  # Hydra keeps the detail in __cause__
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    lines = [line.strip() for e in chain for line in str(e).splitlines() if line.strip()]
    text = " ".join(lines)
    override = next((e.override for e in chain if getattr(e, "override", None)), None)
    if override is not None:  # Hydra's OverrideParseException
        return (f"cannot parse {override} ({lines[0] if lines else 'syntax error'}): write "
                "key=value, or key=a,b,c with -m to sweep; quote values with special characters")
    missing = re.search(r"Could not find '(\w+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        return f"{group}={option} is unknown: use one of {', '.join(options)}"
    bad_type = re.search(r"Value '([^']*)' of type '\w+' could not be converted to (\w+)", text)
    if bad_type:
        key = re.search(r"full_key: ([\w.\[\]]+)", text)
        name = key.group(1) if key else "a value"
        return f"{name}={bad_type.group(1)} is invalid: it must be of type {bad_type.group(2)}"
    unknown = re.search(r"Key '([^']+)' not in '\w+'\s+full_key: ([\w.]+)", text)
    if unknown:
        return (f"{unknown.group(2)} is not a config key: check the spelling "
                "(`python -m bench.sweep --cfg job` prints every key)")
    return lines[0] if lines else "invalid configuration"


def resolve_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict (interpolations evaluated), for storing beside results."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


VERBOSE_ENV = "GNN_BENCH_VERBOSE"  # set by --verbose; inherited by the trainers of a sweep


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def take_verbose_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--verbose``/``-v``; either one turns on tracebacks (here and in every
    process started from here)."""
    rest = [a for a in argv if a not in ("--verbose", "-v")]
    if len(rest) != len(argv):
        os.environ[VERBOSE_ENV] = "1"
    return rest


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit: the user-facing failure path of every entry point.

    With ``--verbose`` (or GNN_BENCH_VERBOSE=1) the traceback of the error being handled, if
    any, comes first.
    """
    if verbose() and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
