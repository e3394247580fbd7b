"""The synthetic dataset: OGB's on-disk layout, loadable by ``ogb``, its documented properties,
determinism, the memory-mapped cache, concurrent preparation and damaged caches."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, dataset_dir, process_env, write_script

from trainer.config import compose
from trainer.data.dataset import (
    GENERATOR_KEYS,
    DatasetError,
    _trusted_ogb_load,
    dataset_root,
    load_graph,
)
from trainer.data.synthetic import generate

RAW_FILES = [
    "raw/edge.csv.gz",
    "raw/node-feat.csv.gz",
    "raw/node_year.csv.gz",
    "raw/num-node-list.csv.gz",
    "raw/num-edge-list.csv.gz",
    "split/time/train.pt",
    "split/time/valid.pt",
    "split/time/test.pt",
    "RELEASE_v1.txt",
]


@pytest.fixture(scope="module")
def tiny_cfg():
    return compose(["dataset=tiny"]).dataset


@pytest.fixture(scope="module")
def ogb_loaded(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny dataset as ``ogb.linkproppred.LinkPropPredDataset`` itself loads it.

    It loads a copy of the generated files without ogb's ``processed/`` output, so that ogb
    parses the raw CSVs written by the generator (see test_cache_rebuilds_after_deleting_it for
    why the processed file cannot be read back).
    """
    import shutil

    from ogb.linkproppred import LinkPropPredDataset

    root = tmp_path_factory.mktemp("ogb_copy")
    shutil.copytree(dataset_dir(tiny_root) / "ogbl_citation2", root / "ogbl_citation2",
                    ignore=shutil.ignore_patterns("data_processed"))
    with _trusted_ogb_load():
        ds = LinkPropPredDataset(name="ogbl-citation2", root=str(root))
        split = ds.get_edge_split()
    return ds[0], split


def test_ogb_layout_files_exist(tiny_root: Path) -> None:
    ogb_dir = dataset_dir(tiny_root) / "ogbl_citation2"
    missing = [f for f in RAW_FILES if not (ogb_dir / f).is_file()]
    assert missing == []
    assert (ogb_dir / "RELEASE_v1.txt").read_text().strip() != ""


def test_ogb_loads_documented_shapes(ogb_loaded, tiny_cfg) -> None:
    graph, split = ogb_loaded
    n = tiny_cfg.num_nodes
    assert graph["num_nodes"] == n == 2000
    assert graph["node_feat"].shape == (n, 128)
    assert graph["node_feat"].dtype == np.float32
    assert graph["node_year"].reshape(-1).shape == (n,)
    edge_index = np.asarray(graph["edge_index"])
    assert edge_index.shape[0] == 2
    assert np.array_equal(edge_index[0], np.asarray(split["train"]["source_node"]))
    assert np.array_equal(edge_index[1], np.asarray(split["train"]["target_node"]))
    # References per paper: log-normal with mean avg_degree drawn, then duplicates dropped (many
    # among the few papers the oldest ones can cite); the held-out edges add back 2 per source.
    held_out = 2 * split["valid"]["source_node"].shape[0]
    assert 0.6 * tiny_cfg.avg_degree < (edge_index.shape[1] + held_out) / n < tiny_cfg.avg_degree
    for name in ("valid", "test"):
        s, t, neg = (np.asarray(split[name][k])
                     for k in ("source_node", "target_node", "target_node_neg"))
        assert s.ndim == t.ndim == 1 and s.shape == t.shape and s.shape[0] > 0
        assert neg.shape == (s.shape[0], 1000)
        assert neg.min() >= 0 and neg.max() < n
    assert split["valid"]["source_node"].shape == split["test"]["source_node"].shape


def test_training_edges_cite_older_papers(ogb_loaded) -> None:
    graph, _ = ogb_loaded
    src, dst = np.asarray(graph["edge_index"])
    year = graph["node_year"].reshape(-1)
    assert np.all(dst < src)
    assert np.all(year[dst] <= year[src])
    assert np.all(np.diff(year) >= 0)  # ids are in publication order
    keys = src * graph["num_nodes"] + dst
    assert np.unique(keys).size == keys.size  # no duplicate citations


def test_eval_edges_are_last_year_and_held_out(ogb_loaded) -> None:
    graph, split = ogb_loaded
    year = graph["node_year"].reshape(-1)
    n = graph["num_nodes"]
    train_keys = set((split["train"]["source_node"] * n + split["train"]["target_node"]).tolist())
    eval_keys = {}
    for name in ("valid", "test"):
        s, t = np.asarray(split[name]["source_node"]), np.asarray(split[name]["target_node"])
        assert np.all(year[s] == year.max())  # OGB's time split: sources from the last year
        assert np.all(t < s)  # held-out citations also point to older papers
        assert np.unique(s).size == s.size  # one citation per source per split
        eval_keys[name] = set((s * n + t).tolist())
        assert eval_keys[name].isdisjoint(train_keys)
    assert eval_keys["valid"].isdisjoint(eval_keys["test"])
    # The same sources give one citation to valid and another one to test.
    assert np.array_equal(np.sort(split["valid"]["source_node"]),
                          np.sort(split["test"]["source_node"]))


def _params(cfg, **change) -> dict:
    params = {k: cfg[k] for k in GENERATOR_KEYS}
    params.update(change)
    return params


def test_generation_is_deterministic_in_gen_seed(tiny_cfg) -> None:
    a = generate(**_params(tiny_cfg))
    b = generate(**_params(tiny_cfg))
    c = generate(**_params(tiny_cfg, gen_seed=1))
    for name in ("x", "year", "pos", "fitness"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("train", "valid", "test"):
        for u, v in zip(getattr(a, name), getattr(b, name), strict=True):
            assert np.array_equal(u, v), name
    assert not np.array_equal(a.x, c.x)
    assert a.train[0].shape != c.train[0].shape or not np.array_equal(a.train[1], c.train[1])
    assert not np.array_equal(a.valid[2], c.valid[2])
    # Another seed is another dataset folder, never a stale cache of the first one.
    cfg1 = compose(["dataset=tiny", "dataset.gen_seed=1"]).dataset
    assert dataset_root(cfg1, "/d") != dataset_root(tiny_cfg, "/d")


def test_files_on_disk_match_the_generator(ogb_loaded, tiny_cfg) -> None:
    graph, split = ogb_loaded
    g = generate(**_params(tiny_cfg))
    assert np.abs(graph["node_feat"] - g.x).max() <= 1e-6  # written with %.6f
    assert np.array_equal(graph["node_year"].reshape(-1), g.year)
    assert np.array_equal(split["train"]["source_node"], g.train[0])
    assert np.array_equal(split["valid"]["target_node_neg"], g.valid[2])
    assert np.array_equal(split["test"]["target_node"], g.test[1])


def test_cache_equals_what_ogb_loads(ogb_loaded, tiny_graph) -> None:
    graph, split = ogb_loaded
    src, dst = np.asarray(graph["edge_index"])
    n = graph["num_nodes"]
    assert tiny_graph.num_nodes == n
    assert tiny_graph.indices.numel() == 2 * src.size  # undirected CSR: each citation twice
    assert np.array_equal(tiny_graph.x.numpy(), graph["node_feat"])
    assert tiny_graph.x.dtype == torch.float32
    assert np.array_equal(tiny_graph.year.numpy(), graph["node_year"].reshape(-1))
    # The CSR holds exactly the symmetrised citations, neighbours sorted per node.
    indptr, indices = tiny_graph.indptr.numpy(), tiny_graph.indices.numpy()
    assert indptr[0] == 0 and indptr[-1] == indices.size and np.all(np.diff(indptr) >= 0)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    expected = np.unique(np.concatenate([src * n + dst, dst * n + src]))
    assert np.array_equal(rows * n + indices, expected)
    for name, keys in (("train", ("source_node", "target_node")),
                       ("valid", ("source_node", "target_node", "target_node_neg")),
                       ("test", ("source_node", "target_node", "target_node_neg"))):
        for key in keys:
            assert np.array_equal(tiny_graph.split[name][key].numpy(), split[name][key]), key
    meta = json.loads((tiny_graph.root / "cache" / "meta.json").read_text())
    assert meta["num_directed_edges"] == src.size and meta["nnz"] == 2 * src.size


def test_features_carry_link_signal(tiny_graph) -> None:
    """Rows are unit vectors. Citing papers are a little more alike than random pairs in the raw
    features (nuisance directions drown most of it) and much more after averaging neighbours:
    the signal is there for aggregation (and training) to extract, not for raw cosines."""
    from trainer.data.baselines import _adjacency, _mean_neighbour_features

    x = tiny_graph.x
    assert torch.allclose(x.norm(dim=1), torch.ones(x.shape[0]), atol=1e-5)
    src = tiny_graph.split["train"]["source_node"]
    dst = tiny_graph.split["train"]["target_node"]
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, x.shape[0], (20_000,), generator=gen)
    b = torch.randint(0, x.shape[0], (20_000,), generator=gen)
    linked = (x[src] * x[dst]).sum(1).mean().item()
    random_pairs = (x[a] * x[b]).sum(1).mean().item()
    assert 0.02 < linked - random_pairs < 0.15, (linked, random_pairs)
    mean = torch.from_numpy(_mean_neighbour_features(
        x.numpy(), _adjacency(tiny_graph.indptr.numpy(), tiny_graph.indices.numpy())))
    linked_mean = (mean[src] * mean[dst]).sum(1).mean().item()
    random_mean = (mean[a] * mean[b]).sum(1).mean().item()
    assert linked_mean - random_mean > 3 * (linked - random_pairs), (linked_mean, random_mean)


CONCURRENT = """
import json, sys, time
from pathlib import Path
from omegaconf import OmegaConf
from trainer.data.dataset import prepare
rank, data_root, barrier = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
cfg = OmegaConf.create(json.loads(sys.argv[4]))
(barrier / f"ready{rank}").touch()
deadline = time.time() + 60
while len(list(barrier.glob("ready*"))) < 2 and time.time() < deadline:
    time.sleep(0.002)
began = time.time()
root = prepare(cfg, data_root)
print("RESULT " + json.dumps({"began": began, "ended": time.time(), "root": str(root)}))
"""


def test_concurrent_prepare_generates_once(tmp_path: Path, tiny_graph) -> None:
    import subprocess

    script = write_script(tmp_path / "prep.py", CONCURRENT)
    data_root, barrier = tmp_path / "data", tmp_path / "barrier"
    barrier.mkdir()
    from omegaconf import OmegaConf

    cfg = json.dumps(OmegaConf.to_container(compose(["dataset=tiny"]).dataset))
    procs = [
        subprocess.Popen([sys.executable, str(script), str(r), str(data_root), str(barrier), cfg],
                         cwd=REPO, env=process_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for r in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        outs.append(out)
    generated = sum(len(re.findall(r"^generating synthetic dataset", o, re.M)) for o in outs)
    assert generated == 1, outs
    results = [json.loads(o.split("RESULT ", 1)[1]) for o in outs]
    assert results[0]["root"] == results[1]["root"]
    # Both were inside prepare at the same time: the second waited on the lock.
    assert max(r["began"] for r in results) < min(r["ended"] for r in results)
    root = Path(results[0]["root"])
    assert sorted(p.name for p in root.iterdir()) == [".lock", "baselines.npz", "cache",
                                                      "ogbl_citation2"]
    # Same generator parameters give the same data as the shared session copy.
    graph = load_graph(compose(["dataset=tiny"]).dataset, data_root)
    assert torch.equal(graph.indices, tiny_graph.indices)
    assert torch.equal(graph.x, tiny_graph.x)


@pytest.mark.parametrize("name", ["indices.npy", "x.npy", "valid.target_node_neg.npy"])
@pytest.mark.parametrize("keep", [0.5, 100])
def test_truncated_cache_file_is_a_dataset_error(private_root: Path, name: str,
                                                 keep: float) -> None:
    cfg = compose(["dataset=tiny"]).dataset
    path = dataset_dir(private_root) / "cache" / name
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if keep < 1 else int(keep)])
    with pytest.raises(DatasetError) as info:
        load_graph(cfg, private_root)
    message = str(info.value)
    assert str(path.parent) in message
    assert "delete" in message


def test_empty_cache_file_is_a_dataset_error(private_root: Path) -> None:
    cfg = compose(["dataset=tiny"]).dataset
    path = dataset_dir(private_root) / "cache" / "indices.npy"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="delete"):
        load_graph(cfg, private_root)


def test_cache_is_reused_not_rebuilt(private_root: Path, capsys: pytest.CaptureFixture) -> None:
    """A second load memory-maps the cache: nothing is rewritten, and the OGB files are not read."""
    import shutil

    cfg = compose(["dataset=tiny"]).dataset
    cache = dataset_dir(private_root) / "cache"
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    shutil.rmtree(dataset_dir(private_root) / "ogbl_citation2")
    graph = load_graph(cfg, private_root)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before
    assert "generating" not in capsys.readouterr().out
    assert graph.num_nodes == 2000 and graph.indices.numel() > 0


def test_cache_rebuilds_after_deleting_it(private_root: Path, tiny_graph) -> None:
    """The DatasetError for a corrupt cache says: delete that folder and run again."""
    import shutil

    cfg = compose(["dataset=tiny"]).dataset
    shutil.rmtree(dataset_dir(private_root) / "cache")
    graph = load_graph(cfg, private_root)
    assert torch.equal(graph.indices, tiny_graph.indices)
