"""``result.json``: what one trial writes and what the report reads, as one dataclass.

:class:`TrialResult` is the schema: each field's type, default and ``doc`` are the only
definition of a result field (the README's table is :func:`schema_markdown`, and a test checks
that the two agree). A trial fills one (``bench/trial.py``), writes it with :meth:`to_json`;
``bench.report.load_sweep`` reads every trial's back with :meth:`from_json`, which tolerates
results from older versions (missing fields take their defaults).

    python -m bench.result      # prints the schema table of the README
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import socket
import typing
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.layout import TrialDir
from bench.store import read_json
from rundir import atomic_write_json

SCHEMA_VERSION = 1
CURVE_TAGS = ("train/loss", "val/mrr", "val/mrr_se", "val/accuracy", "val/hits@10", "time/epoch_s",
              "train/edges_per_s")


def _field(default: Any = None, doc: str = "", json: str | None = None, factory: Any = None):
    metadata = {"doc": doc, **({"json": json} if json else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Usage:
    """One worker's CPU (cores) or memory (MiB) over the trial."""

    mean: float | None = None
    peak: float | None = None


@dataclass
class FaultRecord:
    """One fault the harness injected (see bench/faults.py for how each figure is measured)."""

    epoch: int  # epochs checkpointed when the fault was injected
    rank: int
    injected_at: float  # unix seconds
    recovered_at: float | None  # the first training progress after it
    recovery_s: float | None
    resumed_from_epoch: int
    work_lost_s: float | None  # training since the last checkpoint, thrown away
    epochs_redone: float | None  # the same in epochs


@dataclass
class Recovery:
    """One time the trial went on after an interruption that was not injected by the harness
    (see bench/trial.py): its worker group was restarted, or a harness resumed it after the
    one running it stopped."""

    at: float  # unix seconds, when the harness saw it
    kind: str  # "restart" (the worker group) | "resume" (another harness run)
    epoch: int  # epochs checkpointed at that moment: the trial went on from epoch + 1
    detail: str  # the cause as far as it is known


@dataclass
class TrialResult:
    """One trial's ``result.json``. A trial fills every field; in a result read back, a field
    the file lacks is None (or empty), as the report treats a missing value."""

    schema_version: int = _field(SCHEMA_VERSION, "version of this schema")
    status: str | None = _field(None, "`succeeded`, `failed` or `cancelled`")
    reason: str | None = _field(None, "why, when not succeeded")
    trial_id: str | None = _field(None, "`w<workers>-e<epochs>-s<seed>-<dataset>-<key>`: the trial's folder")
    config_key: str | None = _field(None, "hash of what defines the trial's numbers (its resolved config "
                                 "less where results go and how the harness runs)")
    sweep_name: str | None = _field(None, "the sweep's folder under `results_dir`")
    backend: str | None = _field(None, "`local`, `k8s`, `trainjob` or `container`")
    workers: int | None = _field(None, "processes of the job")
    epochs: int | None = _field(None, "epochs asked for")
    seed: int | None = _field(None, "the trial's seed")
    dataset: str | None = _field(None, "dataset preset")
    model: str | None = _field(None, "model preset")
    threads_per_worker: int | None = _field(None, "intra-op threads of each worker")
    cores: float | None = _field(None, "cores the trial could use (k8s: every pod's CPU)")
    oversubscribed: bool | None = _field(None, "more workers than cores")
    time_total_s: float | None = _field(None, "submission to completion, seconds")
    time_startup_s: float | None = _field(None, "submission to the first training step, seconds")
    epoch_times_s: list[float] = _field(doc="seconds of each epoch (training and validation)",
                                        factory=list)
    val_mrr: float | None = _field(None, "validation MRR, last epoch (OGB protocol)")
    val_mrr_se: float | None = _field(None, "its standard error over the validation sources")
    val_accuracy: float | None = _field(None, "validation accuracy, last epoch (the study's "
                                              "column)")
    val_hits_at_10: float | None = _field(None, "validation hits@10, last epoch",
                                          json="val_hits@10")
    test_mrr: float | None = _field(None, "test MRR of the last epoch's weights")
    test_mrr_se: float | None = _field(None, "its standard error over the test sources")
    test_accuracy: float | None = _field(None, "test accuracy at the end")
    train_loss: float | None = _field(None, "training loss, last epoch")
    best_epoch: int | None = _field(None, "the epoch of the highest validation MRR")
    best_val_mrr: float | None = _field(None, "validation MRR of the best epoch")
    best_val_mrr_se: float | None = _field(None, "its standard error over the validation sources")
    test_mrr_at_best: float | None = _field(None, "test MRR of the weights after the best "
                                                  "epoch (as the OGB leaderboard reports)")
    test_mrr_at_best_se: float | None = _field(None, "its standard error over the test sources")
    target_mrr: float | None = _field(None, "the dataset's target validation MRR "
                                            "(`dataset.target_mrr`)")
    time_to_target_s: float | None = _field(None, "submission to the first validation MRR >= "
                                                  "the target, seconds (MLPerf's time to "
                                                  "quality; none: not reached)")
    epochs_to_target: int | None = _field(None, "that epoch")
    baselines: dict[str, dict[str, float]] = _field(
        doc="reference rows `{method: {val_mrr, val_mrr_se, test_mrr, test_mrr_se, val_sources, "
            "test_sources}}`: parameter-free methods on the same sources and negatives",
        factory=dict)
    edges_per_s: float | None = _field(None, "training positive edges per second (all workers), "
                                             "mean over epochs")
    cpu_cores: dict[str, Usage] = _field(doc="per worker (`rank<n>`): `{mean, peak}` CPU cores",
                                         factory=dict)
    memory_mib: dict[str, Usage] = _field(doc="per worker: `{mean, peak}` memory, MiB (k8s: "
                                              "working set)", factory=dict)
    cpu_cores_mean: float | None = _field(None, "the per-worker CPU means averaged over workers")
    memory_mib_mean: float | None = _field(None, "the per-worker memory means averaged over "
                                                 "workers")
    restarts: int | None = _field(None, "restarts: locally the worker group's (torchrun attempts "
                                        "after the first, over every harness run of the trial); "
                                        "on k8s what the training operator counts, the container "
                                        "restarts summed over the job's pods; in containers the "
                                        "harness's restarts of the trial's containers")
    faults: list[FaultRecord] = _field(doc="injected faults, one record each (see Faults)",
                                       factory=list)
    recoveries: list[Recovery] = _field(doc="every restart of the worker group and every resume "
                                            "by a later harness run, `{at, kind, epoch, detail}` "
                                            "(see Faults)", factory=list)
    curves: dict[str, list[list[float]]] = _field(
        doc="per-epoch series `{tag: [[epoch, value], ...]}` of " + ", ".join(CURVE_TAGS),
        factory=dict)
    event_problems: list[str] = _field(doc="corrupt or truncated event files found (reported, "
                                           "not fatal)", factory=list)
    log_tail: str | None = _field(None, "last lines of the workers' log (failed trials)")
    submitted_at: float | None = _field(None, "unix seconds")
    finished_at: float | None = _field(None, "unix seconds")
    trainer_overrides: list[str] = _field(doc="the exact `python -m trainer` arguments",
                                          factory=list)
    config: dict[str, Any] = _field(doc="the resolved config", factory=dict)
    env: dict[str, Any] = _field(doc="versions, host, platform, CPU count", factory=dict)

    # -- JSON
    def to_json(self) -> dict[str, Any]:
        """The dict ``result.json`` holds: every field under its JSON name, in schema order."""
        return {_json_name(f): _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialResult:
        """A result read back; fields it lacks take their defaults, unknown keys are ignored,
        and a nested value of the wrong shape is kept as it was read."""
        values = {}
        for f in dataclasses.fields(cls):
            name = _json_name(f)
            if name in data:
                values[f.name] = _typed(f.name, data[name])
        return cls(**values)

    def write(self, trial_dir: Path) -> None:
        atomic_write_json(TrialDir(trial_dir).result, self.to_json())


def _json_name(f: dataclasses.Field) -> str:
    return f.metadata.get("json", f.name)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _typed(name: str, value: Any) -> Any:
    if name in ("cpu_cores", "memory_mib") and isinstance(value, dict):
        return {w: Usage(u.get("mean"), u.get("peak")) if isinstance(u, dict) else u
                for w, u in value.items()}
    for key, record in (("faults", FaultRecord), ("recoveries", Recovery)):
        if name == key and isinstance(value, list):
            names = {f.name for f in dataclasses.fields(record)}
            return [record(**{k: v for k, v in r.items() if k in names})
                    if isinstance(r, dict) and names <= set(r) else r for r in value]
    return value


def numeric_fields() -> tuple[str, ...]:
    """JSON names of the fields that hold one number (int or float, or None)."""
    hints = typing.get_type_hints(TrialResult)
    numbers = {int, float, int | None, float | None}
    return tuple(_json_name(f) for f in dataclasses.fields(TrialResult)
                 if hints[f.name] in numbers)


def schema_markdown() -> str:
    """The README's table of ``result.json``: one row per field."""
    rows = ["| field | meaning |", "| --- | --- |"]
    rows += [f"| `{_json_name(f)}` | {f.metadata['doc']} |" for f in dataclasses.fields(TrialResult)]
    return "\n".join(rows)


def load_results(sweep_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every readable ``result.json`` of a sweep as written, sorted by epochs, workers, seed."""
    rows = [r for p in sorted(Path(sweep_dir).glob("*/result.json")) if (r := read_json(p))]
    return sorted(rows, key=lambda r: (r.get("epochs", 0), r.get("workers", 0), r.get("seed", 0)))


def env_info() -> dict[str, Any]:
    """Versions and hardware stored beside every number (a copy; read once per process).

    Versions come from the installed packages' metadata: importing torch, PyG and ogb only to
    read ``__version__`` cost the harness seconds of CPU and ~350 MB (benchmarks/harness_overhead).
    """
    return dict(_env_info())


@functools.lru_cache(maxsize=1)
def _env_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        **{key: _version(dist) for key, dist in (("torch", "torch"),
                                                 ("torch_geometric", "torch-geometric"),
                                                 ("ogb", "ogb"), ("hydra", "hydra-core"))},
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    print(schema_markdown())
