"""The synthetic ogbl-citation2: negatives by OGB's definition on every preset, the calibrated
properties (density, split shares, heavy tails), the baselines' arithmetic, and caches of an
older generator never reused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.config import compose
from trainer.data import baselines as B
from trainer.data import stats
from trainer.data.dataset import GENERATOR_KEYS, dataset_root, in_memory_graph, load_graph
from trainer.data.synthetic import generate

FAST_PRESETS = ["tiny", "small"]
SLOW_PRESETS = ["medium", "full"]
_GENERATED: dict[str, object] = {}


def generated(preset: str):
    """The preset straight from the generator (no OGB files), generated once per session."""
    if preset not in _GENERATED:
        cfg = compose([f"dataset={preset}"]).dataset
        _GENERATED[preset] = (cfg, generate(**{k: cfg[k] for k in GENERATOR_KEYS}))
    return _GENERATED[preset]


def _violations(preset: str) -> dict[str, int]:
    cfg, g = generated(preset)
    return stats.check_negatives(cfg.num_nodes, g.train, {"valid": g.valid, "test": g.test})


@pytest.mark.parametrize("preset", FAST_PRESETS)
def test_negatives_follow_ogbs_definition(preset: str) -> None:
    """Every row of both splits: 1,000 distinct papers older than the source, never the source,
    never one it cites in any split."""
    cfg, g = generated(preset)
    assert g.valid[2].shape == (g.valid[0].shape[0], cfg.num_neg)
    assert g.test[2].shape == (g.test[0].shape[0], cfg.num_neg)
    assert all(v == 0 for v in _violations(preset).values()), _violations(preset)


@pytest.mark.slow
@pytest.mark.parametrize("preset", SLOW_PRESETS)
def test_negatives_follow_ogbs_definition_on_the_big_presets(preset: str) -> None:
    test_negatives_follow_ogbs_definition(preset)


def _row_with(g, split: str, row: int, replacement: int) -> dict:
    s, t, neg = (a.copy() for a in getattr(g, split))
    neg[row, 0] = replacement
    other = "test" if split == "valid" else "valid"
    return {split: (s, t, neg), other: getattr(g, other)}


@pytest.mark.parametrize(
    ("case", "rules"),
    [
        ("the true target", {"cites"}),
        ("the other split's target", {"cites"}),
        ("a training reference", {"cites"}),
        ("the source itself", {"source among", "not older"}),  # (not older than itself)
        ("a newer paper", {"not older"}),
        ("a repeat", {"repeated"}),
    ],
)
def test_the_negatives_check_catches_each_kind_of_bad_row(case: str, rules: set[str]) -> None:
    cfg, g = generated("tiny")
    s, t, neg = g.valid
    row = 3
    src = int(s[row])
    train_src, train_dst = g.train
    replacement = {
        "the true target": int(t[row]),
        "the other split's target": int(g.test[1][np.flatnonzero(g.test[0] == src)[0]]),
        "a training reference": int(train_dst[np.flatnonzero(train_src == src)[0]]),
        "the source itself": src,
        "a newer paper": src + 1 if src + 1 < cfg.num_nodes else src,
        "a repeat": int(neg[row, 1]),
    }[case]
    found = stats.check_negatives(cfg.num_nodes, g.train, _row_with(g, "valid", row, replacement))
    flagged = {k: v for k, v in found.items() if v}
    assert {r for r in rules if any(r in k for k in flagged)} == rules, flagged
    assert len(flagged) == len(rules) and all(k.startswith("valid") and v == 1
                                              for k, v in flagged.items()), flagged


def test_small_has_citation2s_density_and_split_shares() -> None:
    cfg, g = generated("small")
    figures = stats.compute(in_memory_graph(g))
    ref = stats.CITATION2
    for key, tolerance in (("training citations per paper", 0.10),
                           ("validation sources per paper", 0.05),
                           ("share of edges held out (valid + test)", 0.10),
                           ("mean undirected degree", 0.12)):
        assert figures[key] == pytest.approx(ref[key], rel=tolerance), key


def test_degrees_are_heavy_tailed() -> None:
    """Citations received and references made spread far beyond their means (citation graphs'
    heavy tails), unlike the Poisson counts of the earlier generator."""
    _, g = generated("small")
    n = g.x.shape[0]
    indeg = np.bincount(g.train[1], minlength=n)
    outdeg = np.bincount(g.train[0], minlength=n)
    assert indeg.max() > 25 * indeg.mean()
    assert np.percentile(indeg, 99) > 4 * indeg.mean()
    assert np.percentile(outdeg, 99) > 3 * outdeg.mean()
    assert 1.0 < stats._hill(indeg) < 5.0


def test_structure_scores_equal_counting_by_hand(tiny_graph) -> None:
    """CN, AA and RA of the sparse products against sets built pair by pair."""
    indptr, indices = tiny_graph.indptr.numpy(), tiny_graph.indices.numpy()
    nbrs = [set(indices[indptr[v]:indptr[v + 1]].tolist()) for v in range(tiny_graph.num_nodes)]
    deg = np.diff(indptr).astype(float)
    valid = tiny_graph.split["valid"]
    src = valid["source_node"].numpy()[:12]
    cand = np.concatenate([valid["target_node"].numpy()[:12, None],
                           valid["target_node_neg"].numpy()[:12, :40]], axis=1)
    weights = {"cn": np.ones_like(deg), "aa": 1 / np.log(np.maximum(deg, 2)),
               "ra": 1 / np.maximum(deg, 1)}
    got = B._structure_scores(B._adjacency(indptr, indices), weights, src, cand)
    nonzero = 0
    for i, s in enumerate(src):
        for j, c in enumerate(cand[i]):
            common = nbrs[s] & nbrs[c]
            nonzero += bool(common)
            assert got["cn"][i, j] == len(common)
            assert got["aa"][i, j] == pytest.approx(sum(1 / math.log(deg[u]) for u in common))
            assert got["ra"][i, j] == pytest.approx(sum(1 / deg[u] for u in common))
    assert nonzero > 0  # the check compared some real overlaps


def test_feature_baselines_equal_numpy(tiny_graph) -> None:
    x = tiny_graph.x.numpy()
    indptr, indices = tiny_graph.indptr.numpy(), tiny_graph.indices.numpy()
    adj = B._adjacency(indptr, indices)
    mean = B._mean_neighbour_features(x, adj)
    v = int(np.argmax(np.diff(indptr)))
    expect = x[indices[indptr[v]:indptr[v + 1]]].mean(0)
    assert np.allclose(mean[v], expect / np.linalg.norm(expect), atol=1e-5)
    src, cand = np.array([v, 5]), np.array([[1, 2, 3], [4, 6, 7]])
    got = B._cosine_scores(x, src, cand)
    assert np.allclose(got[1], x[cand[1]] @ x[5], atol=1e-6)


def test_baselines_rank_like_the_evaluator_and_summarize_prefixes(tiny_graph) -> None:
    rr = B.compute(tiny_graph)
    assert set(rr) == set(B.METHODS)
    n_valid = tiny_graph.split["valid"]["source_node"].numel()
    for method in B.METHODS:
        assert rr[method]["valid"].shape == (n_valid,)
        assert np.all((rr[method]["valid"] > 0) & (rr[method]["valid"] <= 1))
    # Random scores: about 1/1001 * H(1001) ~ 0.0075 (loose: few sources on tiny).
    assert rr["random"]["valid"].mean() < 0.05
    summary = B.summarize(rr, 10, None)
    assert summary["adamic_adar"]["val_sources"] == 10
    assert summary["adamic_adar"]["val_mrr"] == pytest.approx(rr["adamic_adar"]["valid"][:10].mean())
    se = rr["adamic_adar"]["valid"][:10].std(ddof=1) / math.sqrt(10)
    assert summary["adamic_adar"]["val_mrr_se"] == pytest.approx(se)
    assert summary["random"]["test_sources"] == tiny_graph.split["test"]["source_node"].numel()


def test_baselines_are_cached_beside_the_dataset_and_versioned(private_root, monkeypatch) -> None:
    cfg = compose(["dataset=tiny"]).dataset
    root = dataset_root(cfg, private_root)
    graph = load_graph(cfg, private_root)
    first = B.load_or_compute(graph, root)  # cached by prepare() already
    assert B.cache_path(root).exists()
    calls = []
    monkeypatch.setattr(B, "compute", lambda g, seed=0: calls.append(1) or first)
    again = B.load_or_compute(graph, root)
    assert calls == [] and np.array_equal(again["feature_cosine"]["test"],
                                          first["feature_cosine"]["test"])
    monkeypatch.setattr(B, "BASELINES_VERSION", B.BASELINES_VERSION + 1)
    B.load_or_compute(graph, root)
    assert calls == [1]  # another version is recomputed, not reused


def test_an_older_generators_dataset_is_regenerated_not_reused(private_root, monkeypatch) -> None:
    """The generator version is part of the dataset folder's name: a cache made by the old
    generator sits in another folder and is never opened."""
    import trainer.data.dataset as D

    cfg = compose(["dataset=tiny"]).dataset
    new_root = dataset_root(cfg, private_root)
    monkeypatch.setattr(D, "GENERATOR_VERSION", D.GENERATOR_VERSION - 1)
    old_root = dataset_root(cfg, private_root)
    assert old_root != new_root
    monkeypatch.undo()
    new_root.rename(old_root)  # what an old checkout left behind: only the old version's folder
    graph = load_graph(cfg, private_root)
    assert graph.root == new_root and (new_root / "cache" / "meta.json").exists()
    assert old_root.exists()  # untouched, not reused


def test_in_memory_graph_equals_the_loaded_one(tiny_graph) -> None:
    cfg, g = generated("tiny")
    mem = in_memory_graph(g)
    assert torch.equal(mem.indptr, tiny_graph.indptr) and torch.equal(mem.indices, tiny_graph.indices)
    assert torch.allclose(mem.x, tiny_graph.x, atol=1e-6)
    for split in ("valid", "test"):
        for key, value in tiny_graph.split[split].items():
            assert torch.equal(mem.split[split][key], value), (split, key)


def test_the_feature_mlp_reference_learns_from_features(tiny_graph) -> None:
    """The OGB example's feature-only MLP (a trained reference row of the calibration table):
    one reciprocal rank per source, and well above random after a short training."""
    rr = B.feature_mlp(tiny_graph, steps=60, batch_size=2048)
    n_valid = tiny_graph.split["valid"]["source_node"].numel()
    assert rr["valid"].shape == (n_valid,)
    assert np.all((rr["valid"] > 0) & (rr["valid"] <= 1))
    random = B.compute(tiny_graph)["random"]["valid"].mean()
    assert rr["valid"].mean() > 2 * random


def test_stats_prints_each_method_beside_citation2s_published_mrr(tiny_root) -> None:
    import subprocess
    import sys

    from conftest import REPO, process_env

    out = subprocess.run([sys.executable, "-m", "trainer.data", "stats", "dataset=tiny",
                          f"data_root={tiny_root}"], cwd=REPO, env=process_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.stdout.splitlines()
            if line.startswith("| test MRR: ")}
    assert rows["test MRR: Adamic-Adar"].endswith(f"| {stats.CITATION2_TEST_MRR['adamic_adar']} |")
    assert rows["test MRR: random"].endswith("| - |")  # no published counterpart
    assert "| papers | 2,000 | 2,927,963 |" in out.stdout
    assert "negatives: all rows valid by OGB's definition" in out.stdout
