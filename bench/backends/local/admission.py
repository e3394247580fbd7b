"""Admission: whether a local trial fits this machine, checked before anything of it starts.

A trial of ``workers`` processes needs about

    memory = workers x (base_mib + scale_mib x cache_mib ** exponent) + shared_mib + cache_mib
    disk   = 2 x checkpoint + event files and logs      (under results_dir)

* ``base_mib``, ``scale_mib``, ``exponent`` and ``shared_mib`` are measured by
  ``python -m benchmarks.footprint`` and kept in ``footprint.json`` beside this module: what a
  worker holds privately with almost no data (interpreter, torch, PyG, gloo, the model), how
  that grows with the dataset (sampled subgraphs and the evaluation's full-graph embeddings:
  less than in proportion to the cache), and what the workers share once (libraries);
* ``cache_mib`` is the dataset cache's size on disk, which every worker maps (shared, counted
  once): read from the prepared cache when there is one, otherwise estimated from the preset;
* the checkpoint (model, Adam's two moments) is written beside the previous one before it
  replaces it, hence twice.

Memory is compared with what the machine has available (``psutil.virtual_memory().available``,
which counts reclaimable page cache), disk with the free space of ``results_dir``'s filesystem.
A trial that does not fit is refused with one line naming the numbers and the fix;
``backend.allow_overcommit=true`` runs it anyway.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FOOTPRINT = Path(__file__).with_name("footprint.json")
_MIB = 2**20
# Published size of the real ogbl-citation2 (OGB's dataset page): nodes, citations, validation
# and test sources (each with 1,000 negatives), 128-d features.
OGBL_CITATION2 = {"num_nodes": 2_927_963, "edges": 30_561_187, "sources": 86_956, "feat_dim": 128,
                  "num_neg": 1000}
LOG_MIB = 2.0  # the workers' log and torchrun's, a generous bound for a trial


@dataclass(frozen=True)
class Footprint:
    """The measured constants of :func:`need` (see the module's docstring)."""

    base_mib: float
    scale_mib: float
    exponent: float
    shared_mib: float

    @classmethod
    def load(cls, path: Path = FOOTPRINT) -> Footprint:
        raw = json.loads(path.read_text())
        return cls(float(raw["base_mib"]), float(raw["scale_mib"]), float(raw["exponent"]),
                   float(raw["shared_mib"]))

    def worker_mib(self, cache_mib: float) -> float:
        """One worker's own memory with a dataset cache of ``cache_mib``."""
        return self.base_mib + self.scale_mib * max(0.0, cache_mib) ** self.exponent


@dataclass(frozen=True)
class Need:
    """What one trial needs of this machine."""

    workers: int
    worker_mib: float  # each worker's private memory
    shared_mib: float  # libraries, once
    cache_mib: float  # the dataset cache, mapped by every worker, once
    cache_measured: bool  # read from a prepared cache (else estimated from the preset)
    disk_mib: float  # under results_dir

    @property
    def memory_mib(self) -> float:
        return self.workers * self.worker_mib + self.shared_mib + self.cache_mib

    def workers_that_fit(self, available_mib: float) -> int:
        return max(0, math.floor((available_mib - self.shared_mib - self.cache_mib)
                                 / self.worker_mib))


def estimated_cache_bytes(dataset: dict[str, Any]) -> int:
    """The cache ``trainer/data/dataset.py`` builds for a preset, from its parameters (an upper
    bound: the generator drops duplicate references and some last-year papers cite nothing)."""
    if dataset.get("synthetic", True):
        nodes, feat, neg = int(dataset["num_nodes"]), int(dataset["feat_dim"]), int(dataset["num_neg"])
        edges = nodes * float(dataset["avg_degree"])
        sources = nodes * float(dataset["eval_fraction"])
    else:
        real = OGBL_CITATION2
        nodes, feat, neg = real["num_nodes"], real["feat_dim"], real["num_neg"]
        edges, sources = real["edges"], real["sources"]
    arrays = (nodes * feat * 4  # x, float32
              + (nodes + 1) * 8 + nodes * 8  # indptr, year
              + 2 * edges * 8  # indices: the undirected training graph
              + 2 * edges * 8  # train source and target
              + 2 * sources * (2 + neg) * 8)  # valid and test: source, target, negatives
    return int(arrays)


def cache_size(dataset: dict[str, Any], data_root: str) -> tuple[int, bool]:
    """(bytes, measured): the prepared cache's size when one of this preset's shape exists under
    ``data_root`` (``<name>-<hash>/cache``, its meta.json naming nodes, features and negatives),
    else the estimate."""
    root = Path(os.path.expanduser(data_root))
    pattern = f"{dataset['name']}-*/cache/meta.json" if dataset.get("synthetic", True) \
        else "ogb/cache/meta.json"
    sizes = []
    for meta_path in root.glob(pattern):
        try:
            meta = json.loads(meta_path.read_text())
            shape = (meta["num_nodes"], meta["feat_dim"],
                     meta["arrays"]["valid.target_node_neg"][1])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue
        wanted = ((int(dataset["num_nodes"]), int(dataset["feat_dim"]), int(dataset["num_neg"]))
                  if dataset.get("synthetic", True) else shape)
        if shape == wanted:
            sizes.append(sum(f.stat().st_size for f in meta_path.parent.iterdir()))
    if sizes:
        return max(sizes), True
    return estimated_cache_bytes(dataset), False


def checkpoint_bytes(model: dict[str, Any], feat_dim: int) -> int:
    """``checkpoints/last.pt``: the weights and Adam's two moments, float32 (trainer/model.py:
    SAGEConv layers ``in -> hidden`` with a root weight and a bias, the MLP predictor's three
    linear layers), plus the pickled history and RNG state."""
    hidden, layers = int(model["hidden"]), int(model["num_layers"])
    dims = [feat_dim] + [hidden] * layers
    params = sum(2 * a * b + b for a, b in zip(dims, dims[1:], strict=False))
    if model.get("predictor") == "mlp":
        params += 2 * (hidden * hidden + hidden) + hidden + 1
    return 3 * params * 4 + 64 * 1024


def need(workers: int, trainer: dict[str, Any], footprint: Footprint) -> Need:
    """What a trial of ``workers`` processes and the trainer slice ``trainer`` needs here."""
    dataset, model, train = trainer["dataset"], trainer["model"], trainer["train"]
    cache, measured = cache_size(dataset, str(trainer["data_root"]))
    cache_mib = cache / _MIB
    feat = int(dataset.get("feat_dim") or OGBL_CITATION2["feat_dim"])
    # Epoch scalars (~30 a epoch) and step scalars (one every log_every steps): ~100 bytes each,
    # in the run folder and again in the trial folder.
    events = 2 * 100 * int(trainer["epochs"]) * (30 + (train.get("steps_per_epoch") or 1000)
                                                 / max(1, int(train["log_every"])))
    disk = (2 * checkpoint_bytes(model, feat) + events) / _MIB + LOG_MIB
    return Need(workers, footprint.worker_mib(cache_mib), footprint.shared_mib, cache_mib,
                measured, disk)


def _gib(mib: float) -> str:
    if mib >= 1024:
        return f"{mib / 1024:.1f} GiB"
    if mib >= 10:
        return f"{mib:.0f} MiB"
    return f"{mib:.1f} MiB" if mib >= 1 else f"{mib * 1024:.0f} KiB"


def refusal(need: Need, dataset: str, results_dir: str, available_mib: float,
            free_disk_mib: float) -> str | None:
    """The one line that refuses a trial, or None when it fits."""
    fixes = ("a larger machine or backend=k8s (backend.allow_overcommit=true runs it anyway)")
    if need.memory_mib > available_mib:
        fit = need.workers_that_fit(available_mib)
        cache = "cache" if need.cache_measured else "cache (estimated)"
        fewer = f"use workers={fit} or fewer" if fit else "use a smaller dataset"
        return (f"workers={need.workers} does not fit this machine's memory: it needs about "
                f"{_gib(need.memory_mib)} ({need.workers} workers x {need.worker_mib:.0f} MiB + "
                f"{need.shared_mib:.0f} MiB shared + {need.cache_mib:.0f} MiB of dataset "
                f"{dataset}'s {cache}) and {_gib(available_mib)} is "
                f"available: {fewer}, {fixes}")
    if need.disk_mib > free_disk_mib:
        return (f"results_dir={results_dir} has {_gib(free_disk_mib)} free and the trial "
                f"needs about {_gib(need.disk_mib)} (checkpoints, events, logs): free space "
                f"there or set results_dir=<a folder on a larger disk> "
                "(backend.allow_overcommit=true runs it anyway)")
    return None


def free_mib(path: Path) -> float:
    """Free space of the filesystem that holds ``path`` (or would: its nearest existing folder)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / _MIB


def available_memory_mib() -> float:
    import psutil

    return psutil.virtual_memory().available / _MIB


def check(workers: int, trainer: dict[str, Any], results_dir: str, trial_dir: Path,
          footprint: Footprint | None = None) -> str | None:
    """Whether the trial fits this machine now: the refusal line, or None."""
    needed = need(workers, trainer, footprint or Footprint.load())
    return refusal(needed, str(trainer["dataset"]["name"]), results_dir, available_memory_mib(),
                   free_mib(trial_dir))
