"""Datasets: the real ogbl-citation2 through ``ogb``, synthetic presets, and a shared cache.

``load_graph(dataset_cfg, data_root)`` is all the trainer calls. On first use it
1. generates a synthetic preset in OGB's on-disk layout (or downloads the real dataset,
   answering ogb's y/N prompt with yes so a pod never waits on stdin),
2. loads it with ``ogb.linkproppred.LinkPropPredDataset`` (the real loading path), under an
   allow-list of numpy types because torch >= 2.6 loads with ``weights_only=True`` and ogb's
   files hold numpy arrays,
3. writes a compact cache: the undirected training graph as CSR, features and splits as .npy.

Later loads memory-map the cache, so every worker on a machine shares one copy of the data
in the page cache instead of each holding its own. One file lock per dataset makes several
workers that start together generate and convert it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.data.synthetic import SyntheticGraph, generate, write_ogb_layout

OGB_NAME = "ogbl-citation2"
OGB_DIR = "ogbl_citation2"  # ogb's folder name for OGB_NAME
CACHE_VERSION = 1
# Bump when trainer/data/synthetic.py changes what it generates: it is part of the dataset's
# folder name, so caches made by an older generator are never reused (3: latent-position
# generator calibrated to ogbl-citation2, negatives by OGB's definition).
GENERATOR_VERSION = 3
SPLIT_KEYS = {
    "train": ("source_node", "target_node"),
    "valid": ("source_node", "target_node", "target_node_neg"),
    "test": ("source_node", "target_node", "target_node_neg"),
}
GENERATOR_KEYS = (
    "num_nodes",
    "avg_degree",
    "num_topics",
    "reach",
    "feat_dim",
    "eval_fraction",
    "num_neg",
    "gen_seed",
)


class DatasetError(RuntimeError):
    """A missing, corrupt or unpreparable dataset; the message names the path and the fix."""


@dataclass
class Graph:
    """The training graph (undirected CSR), node features and the OGB edge splits."""

    x: torch.Tensor  # (N, F) float32
    indptr: torch.Tensor  # (N + 1,) int64
    indices: torch.Tensor  # (nnz,) int64: neighbours of node v are indices[indptr[v]:indptr[v+1]]
    year: torch.Tensor  # (N,) int64
    split: dict[str, dict[str, torch.Tensor]]  # split name -> OGB keys -> tensor
    root: Path

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_train_edges(self) -> int:
        return self.split["train"]["source_node"].shape[0]


def dataset_root(dataset_cfg, data_root: str | os.PathLike) -> Path:
    """``<data_root>/<preset>-<hash of generator params>`` (synthetic) or ``<data_root>/ogb``."""
    base = Path(os.path.expanduser(str(data_root)))
    if not dataset_cfg.synthetic:
        return base / "ogb"
    params = {k: dataset_cfg[k] for k in GENERATOR_KEYS} | {"version": GENERATOR_VERSION}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return base / f"{dataset_cfg.name}-{digest}"


def load_graph(dataset_cfg, data_root: str | os.PathLike) -> Graph:
    """Prepare the dataset if needed (once, under a lock) and memory-map its cache."""
    root = dataset_root(dataset_cfg, data_root)
    if not (root / "cache" / "meta.json").exists():
        prepare(dataset_cfg, data_root)
    return _open_cache(root)


def prepare(dataset_cfg, data_root: str | os.PathLike) -> Path:
    """Generate or download, load through ogb, and build the cache. Safe to call concurrently."""
    root = dataset_root(dataset_cfg, data_root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"cannot create the dataset folder {root} ({exc.strerror}): "
            "set data_root=<a writable folder> or GNN_BENCH_DATA"
        ) from exc
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker prepares; the others wait, then reuse
        if (root / "cache" / "meta.json").exists():
            return root
        ogb_dir = root / OGB_DIR
        if dataset_cfg.synthetic and not (ogb_dir / "RELEASE_v1.txt").exists():
            print(f"generating synthetic dataset '{dataset_cfg.name}' into {ogb_dir}", flush=True)
            graph = generate(**{k: dataset_cfg[k] for k in GENERATOR_KEYS})
            write_ogb_layout(graph, ogb_dir)
        elif ogb_dir.exists() and not (ogb_dir / "RELEASE_v1.txt").exists():
            raise DatasetError(
                f"{ogb_dir} is incomplete (no RELEASE_v1.txt): delete it and run "
                "`python -m trainer.data prepare dataset=ogbl_citation2` again"
            )
        _build_cache(root)
        _baselines_locked(root, _open_cache(root))
    return root


def _baselines_locked(root: Path, graph: Graph) -> dict:
    from trainer.data import baselines

    started = time.perf_counter()
    fresh = not baselines.cache_path(root).exists()
    rr = baselines.load_or_compute(graph, root)
    if fresh:
        print(f"baselines of {root.name} computed in {time.perf_counter() - started:.1f} s", flush=True)
    return rr


def baselines(dataset_cfg, data_root: str | os.PathLike, graph: Graph | None = None) -> dict:
    """Per-source reciprocal ranks of the parameter-free baselines on the dataset's validation
    and test splits (``trainer/data/baselines.py``), from their cache beside the dataset's,
    computed once under the dataset's lock when missing."""
    root = dataset_root(dataset_cfg, data_root)
    graph = graph if graph is not None else load_graph(dataset_cfg, data_root)
    from trainer.data.baselines import cache_path

    if cache_path(root).exists():
        from trainer.data.baselines import load_or_compute

        return load_or_compute(graph, root)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _baselines_locked(root, graph)


def baseline_summary(dataset_cfg, data_root: str | os.PathLike, graph: Graph,
                     valid_sources: int | None, test_sources: int | None) -> dict | None:
    """MRR and standard error of each baseline on the sources the trainer evaluates, or None
    (with a warning) when they cannot be computed: the reference rows must not stop training."""
    from trainer.data.baselines import summarize

    try:
        return summarize(baselines(dataset_cfg, data_root, graph), valid_sources, test_sources)
    except (OSError, ValueError, MemoryError, RuntimeError) as exc:
        print(f"warning: baselines unavailable for {dataset_cfg.name} ({exc})", flush=True)
        return None


@contextlib.contextmanager
def _trusted_ogb_load() -> Iterator[None]:
    """Let ogb's ``torch.load`` calls read numpy arrays, and never prompt for a download.

    torch >= 2.6 defaults to ``weights_only=True``, which refuses numpy arrays; rather than
    turning the safety off we allow exactly numpy's array types. ogb asks ``(y/N)`` on stdin
    before a download over 1 GB; a pod has no stdin, so the answer is always yes here.
    """
    import ogb.linkproppred.dataset as ogb_dataset

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    allowed = [_reconstruct, np.ndarray, np.dtype, *dtypes]
    saved = ogb_dataset.decide_download
    ogb_dataset.decide_download = lambda url: True
    try:
        with torch.serialization.safe_globals(allowed):
            yield
    finally:
        ogb_dataset.decide_download = saved


def _load_with_ogb(root: Path) -> tuple[dict, dict]:
    from ogb.linkproppred import LinkPropPredDataset

    try:
        with _trusted_ogb_load():
            dataset = LinkPropPredDataset(name=OGB_NAME, root=str(root))
            split = dataset.get_edge_split()
        return dataset[0], split
    except (OSError, ValueError, RuntimeError, EOFError, KeyError, IndexError,
            pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(
            f"the dataset in {root / OGB_DIR} is unreadable ({first[:200]}): delete that folder "
            "and run again to regenerate it (or re-run `python -m trainer.data prepare`)"
        ) from exc


def _build_cache(root: Path) -> None:
    # ogb saves its processed graph with pickle protocol 4, which torch's weights_only loader
    # cannot read back ("Unsupported operand 149"). The cache replaces it, so let ogb process
    # the raw files again whenever the cache has to be (re)built.
    (root / OGB_DIR / "processed" / "data_processed").unlink(missing_ok=True)
    graph, split = _load_with_ogb(root)
    num_nodes = int(graph["num_nodes"])
    edge_index = np.asarray(graph["edge_index"], dtype=np.int64)
    indptr, indices = undirected_csr(edge_index[0], edge_index[1], num_nodes)
    arrays = {
        "x": np.ascontiguousarray(graph["node_feat"], dtype=np.float32),
        "indptr": indptr,
        "indices": indices.astype(np.int64),
        "year": np.asarray(graph["node_year"], dtype=np.int64).reshape(-1),
    }
    for name, keys_ in SPLIT_KEYS.items():
        for key in keys_:
            arrays[f"{name}.{key}"] = np.asarray(split[name][key], dtype=np.int64)

    tmp = root / f"cache.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, array in arrays.items():
        np.save(tmp / f"{name}.npy", array)
    meta = {
        "version": CACHE_VERSION,
        "num_nodes": num_nodes,
        "num_directed_edges": int(edge_index.shape[1]),
        "nnz": int(indices.shape[0]),
        "feat_dim": int(arrays["x"].shape[1]),
        "arrays": {k: list(v.shape) for k, v in arrays.items()},
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))  # written last: marks complete
    shutil.rmtree(root / "cache", ignore_errors=True)
    os.replace(tmp, root / "cache")


def undirected_csr(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of the undirected, deduplicated graph of the directed edges src -> dst
    (the OGB reference symmetrises citation2 for message passing)."""
    keys = np.unique(np.concatenate([src * num_nodes + dst, dst * num_nodes + src]))
    rows, indices = np.divmod(keys, num_nodes)
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num_nodes), out=indptr[1:])
    return indptr, indices.astype(np.int64)


def in_memory_graph(graph: SyntheticGraph, root: Path | None = None) -> Graph:
    """A :class:`Graph` straight from the generator's output, without the OGB files or the
    cache (for statistics and tests; the trainer always loads through ogb)."""
    src, dst = graph.train
    indptr, indices = undirected_csr(src, dst, graph.x.shape[0])
    split = {"train": {"source_node": src, "target_node": dst}}
    for name, (s, t, neg) in (("valid", graph.valid), ("test", graph.test)):
        split[name] = {"source_node": s, "target_node": t, "target_node_neg": neg}
    return Graph(
        x=torch.from_numpy(graph.x),
        indptr=torch.from_numpy(indptr),
        indices=torch.from_numpy(indices),
        year=torch.from_numpy(graph.year),
        split={k: {kk: torch.from_numpy(np.asarray(v)) for kk, v in d.items()} for k, d in split.items()},
        root=Path(root) if root is not None else Path("."),
    )


def _open_cache(root: Path) -> Graph:
    cache = root / "cache"
    try:
        meta = json.loads((cache / "meta.json").read_text())
        arrays = {}
        for name, shape in meta["arrays"].items():
            array = np.load(cache / f"{name}.npy", mmap_mode="r")
            if list(array.shape) != shape:
                raise ValueError(f"{name}.npy has shape {list(array.shape)}, expected {shape}")
            arrays[name] = array
    except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError) as exc:
        raise DatasetError(
            f"the dataset cache {cache} is corrupt ({exc}): delete that folder and run again "
            "to rebuild it"
        ) from exc

    def tensor(name: str) -> torch.Tensor:
        with warnings.catch_warnings():  # read-only memory maps: we never write to them
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(arrays[name])

    return Graph(
        x=tensor("x"),
        indptr=tensor("indptr"),
        indices=tensor("indices"),
        year=tensor("year"),
        split={name: {k: tensor(f"{name}.{k}") for k in keys} for name, keys in SPLIT_KEYS.items()},
        root=root,
    )
