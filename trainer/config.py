"""The trainer's configuration: what one worker needs, typed, and its command line.

``python -m trainer`` composes ``conf/trainer.yaml``: :class:`TrainerConfig` (epochs, seed,
where to read data and write the run, and the ``dataset``, ``model`` and ``train`` groups) with
the presets of ``conf/workload.yaml``. The YAML files extend these dataclasses (Hydra structured
configs), so a value of the wrong type (``epochs=abc``) fails when the config is composed;
range checks that OmegaConf cannot express (``epochs=-1``, a fan-out list of the wrong length)
live in :func:`validate_trainer`. The harness's tree (``conf/config.yaml``, ``bench/config.py``)
extends this one, so a trial's trainer keys are spelt the same on both command lines, and
:func:`overrides_for` turns a trial's slice back into the trainer's arguments.

Also here, because every entry point of both packages uses them: :class:`ConfigError`,
:func:`compose_tree` with its one-line errors, and :func:`fail`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import sys
import traceback
from collections.abc import Iterator
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
    # Synthetic generator (ignored for the real dataset); see trainer/data/synthetic.py.
    num_nodes: int = 10_000
    avg_degree: float = 11.7  # mean references drawn per paper; ~11% are duplicates, dropped,
    # which leaves ogbl-citation2's 10.4 citations a paper
    num_topics: int = 20  # clusters of the latent map of science
    reach: float = 50.0  # papers within one standard deviation of a local reference's offset
    feat_dim: int = 128
    eval_fraction: float = 0.0297  # validation (and test) sources per node, as in ogbl-citation2
    num_neg: int = 1000  # negatives per validation/test source (the OGB protocol)
    gen_seed: int = 0
    # Training and reporting on this dataset.
    steps_per_epoch: int | None = None  # default of train.steps_per_epoch (OGB: 1,000 an epoch)
    target_mrr: float | None = None  # "time to quality": first epoch with validation MRR >= this


@dataclass
class ModelConf:
    name: str = MISSING
    num_layers: int = 3
    hidden: int = 256
    aggr: str = "mean"  # any PyG aggregation name SAGEConv accepts: mean | add | max
    dropout: float = 0.0
    predictor: str = "dot"  # dot (as in the study) | mlp (as in the OGB reference)
    fanouts: list[int] = field(default_factory=lambda: [15, 10, 5])  # one per layer; -1 = all
    # The training recipe that goes with the model: train.lr and train.loss default to these.
    lr: float = 0.001
    loss: str = "bce"  # bce | softmax (see TrainConf.loss)


@dataclass
class TrainConf:
    batch_size: int = 512  # positive edges per worker per step
    lr: float = 0.001  # Adam (conf/config.yaml: model.lr unless set)
    num_negatives: int = 1  # random negative targets per positive edge (the OGB example: 1)
    # bce: binary cross-entropy on positives and their negatives (the OGB example);
    # softmax: each positive also ranked against all the batch's other targets and negatives
    # (cross-entropy over the batch, plus the BCE terms, which keep scores calibrated at 0).
    loss: str = "bce"  # (conf/config.yaml: model.loss unless set)
    # An epoch: at most steps_per_epoch x batch_size edges in all, dealt to the workers (each
    # takes ceil(its share / batch_size) steps; trainer/train.py, epoch_edges). None: a full pass.
    steps_per_epoch: int | None = None
    exclude_target_edges: bool = True  # drop a batch's positive edges from its message passing
    eval_sources: int | None = 1000  # validation sources scored each epoch (None: all)
    test_sources: int | None = None  # test sources scored at the end (None: all)
    eval_batch_nodes: int = 65_536  # nodes per chunk in layer-wise full-graph inference
    threads: int | None = None  # torch intra-op threads per worker (None: OMP_NUM_THREADS or 1)
    log_every: int = 20  # steps between step-level TensorBoard scalars
    dist_timeout_s: int = 600


@dataclass
class TrainerConfig:
    """Everything a worker computes from; nothing of how or where the harness runs it."""

    epochs: int = 3
    seed: int = 0
    run_dir: str = "runs/default"  # where the trainer writes events, checkpoints, summary.json
    data_root: str = MISSING  # conf/workload.yaml: $GNN_BENCH_DATA or ~/.cache/gnn-bench/datasets
    dataset: DatasetConf = MISSING
    model: ModelConf = MISSING
    train: TrainConf = field(default_factory=TrainConf)


@functools.cache  # a store converts the dataclass to a config each time: once is enough
def register_configs() -> None:
    """Register the schema so that ``conf/trainer.yaml`` can name it in its defaults list."""
    ConfigStore.instance().store(name="trainer_schema", node=TrainerConfig)


def positive(name: str, value: int | float | None, fix: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise ConfigError(f"{name}={value} is invalid: it must be >= 1 ({fix})")


def validate_trainer(cfg: DictConfig) -> None:
    """Range checks of a trainer config (the harness's config extends it). Raises ConfigError."""
    positive("epochs", cfg.epochs, "e.g. epochs=10")
    if cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed} is invalid: it must be >= 0")
    dataset, model, train = cfg.dataset, cfg.model, cfg.train
    if dataset.name not in SYNTHETIC_PRESETS + REAL_DATASETS:
        raise ConfigError(
            f"dataset={dataset.name} is unknown: use one of "
            + ", ".join(SYNTHETIC_PRESETS + REAL_DATASETS)
        )
    if dataset.synthetic:
        positive("dataset.num_nodes", dataset.num_nodes, "e.g. dataset.num_nodes=10000")
        if dataset.num_nodes < 200:
            raise ConfigError(f"dataset.num_nodes={dataset.num_nodes} is too small: use >= 200")
        if dataset.avg_degree <= 0:
            raise ConfigError(f"dataset.avg_degree={dataset.avg_degree} must be > 0")
        positive("dataset.num_topics", dataset.num_topics, "e.g. dataset.num_topics=20")
        if dataset.reach <= 0:
            raise ConfigError(f"dataset.reach={dataset.reach} must be > 0 (e.g. dataset.reach=50)")
        positive("dataset.feat_dim", dataset.feat_dim, "e.g. dataset.feat_dim=128")
        positive("dataset.num_neg", dataset.num_neg, "e.g. dataset.num_neg=1000")
        if dataset.num_neg > dataset.num_nodes // 2:
            raise ConfigError(
                f"dataset.num_neg={dataset.num_neg} is too many for dataset.num_nodes="
                f"{dataset.num_nodes}: each source needs that many older papers it does not cite; "
                f"use dataset.num_nodes >= {2 * dataset.num_neg} or fewer negatives"
            )
        if not 0 < dataset.eval_fraction < 0.5:
            raise ConfigError(f"dataset.eval_fraction={dataset.eval_fraction} must be in (0, 0.5)")
    positive("model.num_layers", model.num_layers, "e.g. model.num_layers=3")
    positive("model.hidden", model.hidden, "e.g. model.hidden=256")
    if model.aggr not in ("mean", "add", "sum", "max"):
        raise ConfigError(f"model.aggr={model.aggr} is unknown: use mean, add or max")
    if model.predictor not in ("dot", "mlp"):
        raise ConfigError(f"model.predictor={model.predictor} is unknown: use dot or mlp")
    if not 0.0 <= model.dropout < 1.0:
        raise ConfigError(f"model.dropout={model.dropout} must be in [0, 1)")
    fanouts = list(model.fanouts)
    if len(fanouts) != model.num_layers:
        example = ",".join(str(max(5, 15 - 5 * i)) for i in range(model.num_layers))
        raise ConfigError(
            f"model.fanouts has {len(fanouts)} entries but model.num_layers={model.num_layers}: "
            f"give one fan-out per layer, e.g. model.fanouts=[{example}]"
        )
    if any(f == 0 or f < -1 for f in fanouts):
        raise ConfigError(f"model.fanouts={fanouts} is invalid: use positive counts or -1 (all)")
    positive("train.batch_size", train.batch_size, "e.g. train.batch_size=512")
    positive("train.num_negatives", train.num_negatives, "e.g. train.num_negatives=1")
    if train.loss not in ("bce", "softmax"):
        raise ConfigError(f"train.loss={train.loss} is unknown: use bce or softmax")
    if train.loss == "softmax" and model.predictor != "dot":
        raise ConfigError("train.loss=softmax scores every pair of the batch and needs "
                          "model.predictor=dot (or use train.loss=bce)")
    if train.lr <= 0:
        raise ConfigError(f"train.lr={train.lr} must be > 0")
    positive("train.steps_per_epoch", train.steps_per_epoch, "or null", allow_none=True)
    if dataset.target_mrr is not None and not 0 < dataset.target_mrr <= 1:
        raise ConfigError(f"dataset.target_mrr={dataset.target_mrr} must be in (0, 1] (or null)")
    positive("train.eval_sources", train.eval_sources, "or null for all", allow_none=True)
    positive("train.test_sources", train.test_sources, "or null for all", allow_none=True)
    positive("train.eval_batch_nodes", train.eval_batch_nodes, "e.g. 65536")
    positive("train.threads", train.threads, "or null", allow_none=True)
    positive("train.log_every", train.log_every, "e.g. train.log_every=20")


@contextlib.contextmanager
def compose_session() -> Iterator[None]:
    """One Hydra initialisation of ``conf/`` for every composition inside (its repository keeps
    the parsed YAML, so each composition after the first costs about half as much)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app, or a session already
        yield
        return
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()


def compose_tree(
    config_name: str,
    overrides: list[str] | None = None,
    return_hydra_config: bool = False,
    keys_hint: str = "trainer/config.py lists every key",
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides (the schemas must be registered), in
    the running Hydra app or compose session if there is one.

    Errors (unknown group option, wrong type, unknown key) become one-line ConfigErrors;
    ``keys_hint`` says where to find the keys that exist.
    """
    from hydra import compose as hydra_compose

    try:
        with compose_session():
            return hydra_compose(
                config_name=config_name,
                overrides=list(overrides or []),
                return_hydra_config=return_hydra_config,
            )
    except ConfigError:
        raise
    except Exception as exc:  # Hydra and OmegaConf raise several types; all are user errors here
        raise ConfigError(one_line(exc, keys_hint)) from exc


def compose(overrides: list[str] | None = None) -> DictConfig:
    """The trainer's config, as ``python -m trainer <overrides>`` composes it (tests use it too)."""
    register_configs()
    return compose_tree("trainer", overrides)


# Trainer keys that say where one run reads and writes, and with how many threads: every trial
# sets them, and they close its argument list in this order.
PLACEMENT_KEYS = ("epochs", "seed", "data_root", "run_dir", "train.threads")


def overrides_for(config: DictConfig | dict[str, Any]) -> list[str]:
    """The arguments that make ``python -m trainer`` compose exactly ``config`` (a trainer config
    or the trainer's slice of the harness's): the dataset and model presets it names, every other
    value spelt out, then :data:`PLACEMENT_KEYS`. Every value, not only those that differ from
    the presets: the arguments alone then say the whole config (a worker whose ``conf/`` presets
    differ, e.g. an older image, still trains the trial recorded), and making them needs no
    composition of the presets (0.13 s of a sweep's start-up)."""
    plain = config if isinstance(config, dict) else resolve_plain(config)
    presets = [f"dataset={plain['dataset']['name']}", f"model={plain['model']['name']}"]
    leaves = _leaves({name: plain[name] for name in trainer_keys()})
    named = {*PLACEMENT_KEYS, "dataset.name", "model.name"}  # (the presets are named from these)
    values = [f"{key}={_override_value(value)}" for key, value in leaves.items()
              if key not in named]
    placed = [f"{key}={_override_value(leaves[key])}" for key in PLACEMENT_KEYS]
    return presets + values + placed


def trainer_keys() -> tuple[str, ...]:
    """The top-level keys of a trainer config: what a trial's trainer slice is made of."""
    return tuple(f.name for f in dataclasses.fields(TrainerConfig))


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every non-dict value of a nested dict, in order."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_leaves(value, f"{name}."))
        else:
            out[name] = value
    return out


_BARE = re.compile(r"^[A-Za-z0-9_/.\-+@:~%]+$")


def _override_value(value: Any) -> str:
    """A value in Hydra's override grammar (strings quoted unless they would read back the same)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    text = str(value)
    if _BARE.match(text) and not re.fullmatch(r"[-+]?[\d.]+(e[-+]?\d+)?|true|false|null|nan|inf",
                                              text, flags=re.I):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def one_line(exc: BaseException,
             keys_hint: str = "`python -m bench.sweep --cfg job` prints every key") -> str:
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
        options = group_options(group)
        return f"{group}={option} is unknown: use one of {', '.join(options)}"
    bad_type = re.search(r"Value '([^']*)' of type '\w+' could not be converted to (\w+)", text)
    if bad_type:
        key = re.search(r"full_key: ([\w.\[\]]+)", text)
        name = key.group(1) if key else "a value"
        return f"{name}={bad_type.group(1)} is invalid: it must be of type {bad_type.group(2)}"
    unknown = re.search(r"Key '([^']+)' not in '\w+'\s+full_key: ([\w.]+)", text)
    if unknown:
        return f"{unknown.group(2)} is not a config key: check the spelling ({keys_hint})"
    return lines[0] if lines else "invalid configuration"


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAML files and its ConfigStore entries."""
    files = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    try:
        stored = {name.removesuffix(".yaml") for name in ConfigStore.instance().list(group)}
    except OSError:  # no such group in the store
        stored = set()
    return sorted(files | stored)


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
