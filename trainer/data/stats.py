"""Statistics of a dataset beside ogbl-citation2's published figures (the calibration table).

    python -m trainer.data stats dataset=small            # a prepared (or preparable) preset
    python -m trainer.data stats dataset=full --in-memory # straight from the generator

Every figure is computed from the training graph and the validation/test splits exactly as the
trainer sees them. ``check_negatives`` verifies OGB's definition of the negatives row by row.
"""

from __future__ import annotations

import math

import numpy as np

# ogbl-citation2 as published. Sources: the OGB dataset page and paper (nodes, edges, the time
# split with two held-out references per 2019 paper and 1,000 negatives each), the split files'
# sizes (86,596 validation and test sources; the OGB example evaluates 86,596 training edges to
# match); training citations = edges - 2 x 86,596. The README's calibration table cites each.
CITATION2 = {
    "papers": 2_927_963,
    "citations (all splits)": 30_561_187,
    "training citations": 30_387_995,
    "validation sources": 86_596,
    "test sources": 86_596,
    "negatives per source": 1000,
}
CITATION2["training citations per paper"] = CITATION2["training citations"] / CITATION2["papers"]
CITATION2["validation sources per paper"] = CITATION2["validation sources"] / CITATION2["papers"]
CITATION2["mean undirected degree"] = 2 * CITATION2["training citations"] / CITATION2["papers"]
CITATION2["share of edges held out (valid + test)"] = (
    2 * CITATION2["validation sources"] / CITATION2["citations (all splits)"])

# Published test MRRs on ogbl-citation2 (1,000 negatives per source), by the method names of
# trainer/data/baselines.py. Checked against the OGB leaderboard's source
# (snap-stanford/ogb-web, _docs/leaderboard/leader_linkprop.md, ogbl-citation2 table):
# NeighborSampling (SAGE aggr) 0.8044, Full-batch GraphSAGE 0.8260, Node2vec 0.6141 (the OGB
# team's runs), Adamic Adar 0.5189 and Common Neighbor 0.5147 (SEAL's authors' runs). Not on
# that table, so not checked here: resource allocation 0.5198 (Chamberlain et al., ICLR 2023,
# Table 2) and the feature-only MLP 0.2904 (the OGB paper's MLP row). Methods of ours with no
# published counterpart (random, raw-feature and untrained mean-feature cosines) have none.
CITATION2_TEST_MRR = {
    "common_neighbours": 0.5147,
    "adamic_adar": 0.5189,
    "resource_allocation": 0.5198,
    "feature_mlp": 0.2904,
}
CITATION2_PUBLISHED_OTHER = {"Node2vec": 0.6141, "GraphSAGE (neighbour sampling)": 0.8044,
                             "GraphSAGE (full batch)": 0.8260}

TWO_HOP_SOURCES = 1000  # sources sampled for the 2-hop figures


def check_negatives(num_nodes: int, train: tuple[np.ndarray, np.ndarray],
                    splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, int]:
    """Rows of each split's negatives that break OGB's definition, by rule.

    A valid negative of source s is a paper older than s (smaller id: ids are in publication
    order), distinct within its row, not s itself, and not cited by s in any split.
    """
    n = num_nodes
    src_all = np.concatenate([train[0], *[s[0] for s in splits.values()]])
    dst_all = np.concatenate([train[1], *[s[1] for s in splits.values()]])
    cited = np.unique(src_all.astype(np.int64) * n + dst_all)
    out: dict[str, int] = {}
    for name, (src, _dst, neg) in splits.items():
        src = np.asarray(src, dtype=np.int64)
        neg = np.asarray(neg, dtype=np.int64)
        not_older = (neg >= src[:, None]).any(1)
        itself = (neg == src[:, None]).any(1)
        ordered = np.sort(neg, axis=1)
        duplicate = (ordered[:, 1:] == ordered[:, :-1]).any(1)
        keys = src[:, None] * n + neg
        at = np.minimum(np.searchsorted(cited, keys), cited.shape[0] - 1)
        cited_row = (cited[at] == keys).any(1)
        out[f"{name}: rows with a negative not older than the source"] = int(not_older.sum())
        out[f"{name}: rows with the source among its negatives"] = int(itself.sum())
        out[f"{name}: rows with a repeated negative"] = int(duplicate.sum())
        out[f"{name}: rows with a negative the source cites"] = int(cited_row.sum())
    return out


def _degree_figures(label: str, deg: np.ndarray) -> dict[str, float]:
    return {
        f"{label}: mean": float(deg.mean()),
        f"{label}: median": float(np.median(deg)),
        f"{label}: 99th percentile": float(np.percentile(deg, 99)),
        f"{label}: max": float(deg.max()),
        f"{label}: share of papers with 0": float((deg == 0).mean()),
        f"{label}: tail exponent (Hill, top 1%)": _hill(deg),
    }


def _hill(deg: np.ndarray) -> float:
    """Hill estimate of the power-law exponent alpha of P(D >= d) ~ d^-alpha over the top 1%."""
    x = np.sort(deg[deg > 0].astype(np.float64))[::-1]
    k = max(10, x.shape[0] // 100)
    if x.shape[0] <= k:
        return math.nan
    return float(1.0 / np.mean(np.log(x[:k] / x[k])))


def two_hop_figures(indptr: np.ndarray, indices: np.ndarray, src: np.ndarray, dst: np.ndarray,
                    neg: np.ndarray) -> dict[str, float]:
    """How many negatives (and true targets) lie within 2 hops of their source in the training
    graph: what common-neighbour heuristics can see at all."""
    import scipy.sparse as sp

    n = indptr.shape[0] - 1
    adj = sp.csr_matrix((np.ones(indices.shape[0]), indices, indptr), shape=(n, n))
    k = min(TWO_HOP_SOURCES, src.shape[0])
    left = adj[src[:k]]
    reach = (left @ adj + left).tocsr()
    rows = np.repeat(np.arange(k), neg.shape[1])
    neg_in = np.asarray(reach[rows, neg[:k].ravel()]).ravel() > 0
    pos_in = np.asarray(reach[np.arange(k), dst[:k]]).ravel() > 0
    size = np.diff(reach.indptr)
    return {
        "negatives within 2 hops of the source (share)": float(neg_in.mean()),
        "negatives within 2 hops of the source (per 1,000)": float(neg_in.mean() * 1000),
        "true targets within 2 hops of the source (share)": float(pos_in.mean()),
        "2-hop neighbourhood of a source (share of papers)": float(size.mean() / n),
    }


def compute(graph) -> dict[str, float]:
    """The calibration statistics of a :class:`trainer.data.dataset.Graph`."""
    n = graph.num_nodes
    train = graph.split["train"]
    src, dst = train["source_node"].numpy(), train["target_node"].numpy()
    valid, test = graph.split["valid"], graph.split["test"]
    n_valid, n_test = valid["source_node"].shape[0], test["source_node"].shape[0]
    total = src.shape[0] + n_valid + n_test
    indptr, indices = graph.indptr.numpy(), graph.indices.numpy()
    out: dict[str, float] = {
        "papers": n,
        "citations (all splits)": total,
        "training citations": src.shape[0],
        "training citations per paper": src.shape[0] / n,
        "validation sources": n_valid,
        "test sources": n_test,
        "validation sources per paper": n_valid / n,
        "share of edges held out (valid + test)": (n_valid + n_test) / total,
        "negatives per source": int(valid["target_node_neg"].shape[1]),
        "mean undirected degree": float(np.diff(indptr).mean()),
    }
    out |= _degree_figures("references per paper (training)", np.bincount(src, minlength=n))
    out |= _degree_figures("citations received (training)", np.bincount(dst, minlength=n))
    year = graph.year.numpy()
    out["years"] = float(year.max() - year.min() + 1)
    out["papers in the last year (share)"] = float((year == year.max()).mean())
    out |= two_hop_figures(indptr, indices, valid["source_node"].numpy(),
                           valid["target_node"].numpy(), valid["target_node_neg"].numpy())
    return out


def format_value(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 10):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"
