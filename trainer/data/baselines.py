"""Parameter-free reference scores on a dataset's own validation/test split and negatives.

A trained model is worth its MRR only beside what needs no training. Each method here scores
every (source, candidate) pair of the split (the true target and its 1,000 negatives) from the
training graph and the features alone, and ``ogb.linkproppred.Evaluator`` ranks them exactly as
it ranks the model's scores:

- ``random``: uniform random scores (MRR ~ 0.0075 with 1,000 negatives);
- ``common_neighbours``, ``adamic_adar``, ``resource_allocation``: the classic neighbourhood
  heuristics on the undirected training graph (Liben-Nowell & Kleinberg; Adamic & Adar; Zhou,
  Lü & Zhang), computed as sparse products ``A[sources] @ diag(w) @ A``;
- ``feature_cosine``: cosine of the raw node features;
- ``mean_aggregation``: cosine of the mean of each node's neighbours' features (one untrained
  GraphSAGE-mean layer without weights: what aggregation alone gives).

Results are per-source reciprocal ranks, cached beside the dataset's cache
(``<dataset>/baselines.npz``), so that any number of evaluated sources (``train.eval_sources``)
gives its MRR and standard error from the cache without recomputing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

# No torch import at module level: the report reads LABELS without loading torch.
BASELINES_VERSION = 1
METHODS = (
    "random",
    "common_neighbours",
    "adamic_adar",
    "resource_allocation",
    "feature_cosine",
    "mean_aggregation",
)
LABELS = {
    "random": "random",
    "common_neighbours": "common neighbours",
    "adamic_adar": "Adamic-Adar",
    "resource_allocation": "resource allocation",
    "feature_cosine": "cosine of raw features",
    "mean_aggregation": "cosine of mean neighbour features (untrained)",
}
SPLITS = ("valid", "test")
FILE = "baselines.npz"
_CHUNK = 1024  # sources per sparse product


def reciprocal_ranks(pos, neg) -> np.ndarray:
    """Per-source reciprocal rank by ogb's Evaluator for ogbl-citation2 (ties count half)."""
    from trainer.evaluate import evaluator

    out = evaluator().eval({"y_pred_pos": pos.float(), "y_pred_neg": neg.float()})
    return out["mrr_list"].numpy().astype(np.float64)


def mrr_and_se(rr: np.ndarray) -> tuple[float, float]:
    """Mean reciprocal rank and its standard error over sources (NaN with fewer than 2)."""
    rr = np.asarray(rr, dtype=np.float64)
    if rr.size == 0:
        return math.nan, math.nan
    se = float(rr.std(ddof=1) / math.sqrt(rr.size)) if rr.size > 1 else math.nan
    return float(rr.mean()), se


def _adjacency(indptr: np.ndarray, indices: np.ndarray):
    import scipy.sparse as sp

    n = indptr.shape[0] - 1
    data = np.ones(indices.shape[0], dtype=np.float64)
    return sp.csr_matrix((data, np.asarray(indices), np.asarray(indptr)), shape=(n, n))


def _pair_scores(product, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``product[rows, cols]`` for a CSR matrix, as a flat float array (0 where absent)."""
    return np.asarray(product[rows, cols]).ravel()


def _structure_scores(adj, weights: dict[str, np.ndarray], src: np.ndarray,
                      cand: np.ndarray) -> dict[str, np.ndarray]:
    """CN/AA/RA scores of (src[i], cand[i, j]) for every method in ``weights`` (node weights)."""
    import scipy.sparse as sp

    out = {name: np.empty(cand.shape, dtype=np.float64) for name in weights}
    for lo in range(0, src.shape[0], _CHUNK):
        hi = min(src.shape[0], lo + _CHUNK)
        left = adj[src[lo:hi]]
        rows = np.repeat(np.arange(hi - lo), cand.shape[1])
        cols = cand[lo:hi].ravel()
        for name, w in weights.items():
            product = (left @ sp.diags(w) @ adj).tocsr()
            out[name][lo:hi] = _pair_scores(product, rows, cols).reshape(hi - lo, -1)
    return out


def _mean_neighbour_features(x: np.ndarray, adj) -> np.ndarray:
    deg = np.asarray(adj.sum(axis=1)).ravel()
    mean = np.asarray(adj @ x, dtype=np.float32) / np.maximum(deg, 1)[:, None].astype(np.float32)
    mean[deg == 0] = x[deg == 0]  # no neighbours: the node's own features
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    return mean / np.maximum(norm, 1e-12)


def _cosine_scores(h: np.ndarray, src: np.ndarray, cand: np.ndarray) -> np.ndarray:
    out = np.empty(cand.shape, dtype=np.float64)
    for lo in range(0, src.shape[0], _CHUNK):
        hi = min(src.shape[0], lo + _CHUNK)
        out[lo:hi] = np.einsum("bf,bkf->bk", h[src[lo:hi]], h[cand[lo:hi]])
    return out


def compute(graph, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Per-source reciprocal ranks ``{method: {split: rr}}`` of every method on the graph's
    validation and test splits (all sources). ``graph`` is a :class:`trainer.data.dataset.Graph`."""
    import torch

    indptr, indices = graph.indptr.numpy(), graph.indices.numpy()
    x = np.ascontiguousarray(graph.x.numpy(), dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x_unit = x / np.maximum(norm, 1e-12)
    adj = _adjacency(indptr, indices)
    deg = np.diff(indptr).astype(np.float64)
    weights = {
        "common_neighbours": np.ones_like(deg),
        "adamic_adar": 1.0 / np.log(np.maximum(deg, 2.0)),
        "resource_allocation": 1.0 / np.maximum(deg, 1.0),
    }
    mean_h = _mean_neighbour_features(x, adj)
    rng = np.random.default_rng(seed)
    results: dict[str, dict[str, np.ndarray]] = {m: {} for m in METHODS}
    for split in SPLITS:
        data = graph.split[split]
        src = data["source_node"].numpy()
        cand = np.concatenate([data["target_node"].numpy()[:, None],
                               data["target_node_neg"].numpy()], axis=1)
        scores = {"random": rng.random(cand.shape)}
        scores |= _structure_scores(adj, weights, src, cand)
        scores["feature_cosine"] = _cosine_scores(x_unit, src, cand)
        scores["mean_aggregation"] = _cosine_scores(mean_h, src, cand)
        for method in METHODS:
            s = torch.from_numpy(scores[method])
            results[method][split] = reciprocal_ranks(s[:, 0], s[:, 1:])
    return results


def cache_path(root: Path) -> Path:
    return Path(root) / FILE


def load_or_compute(graph, root: Path) -> dict[str, dict[str, np.ndarray]]:
    """The cached reciprocal ranks of ``root``'s dataset, computed and cached on first use.

    The caller holds the dataset's lock (or is the only process), see ``dataset.baselines``.
    """
    path = cache_path(root)
    if path.exists():
        try:
            with np.load(path) as data:
                if int(data["version"]) == BASELINES_VERSION:
                    return {m: {s: data[f"{m}/{s}"] for s in SPLITS} for m in METHODS}
        except (OSError, KeyError, ValueError):
            pass  # damaged or older: recompute
    results = compute(graph)
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}.npz")
    arrays = {f"{m}/{s}": results[m][s] for m in METHODS for s in SPLITS}
    np.savez(tmp, version=np.array(BASELINES_VERSION), **arrays)
    os.replace(tmp, path)
    return results


def summarize(rr: dict[str, dict[str, np.ndarray]], valid_sources: int | None,
              test_sources: int | None) -> dict[str, dict[str, float]]:
    """``{method: {val_mrr, val_mrr_se, test_mrr, test_mrr_se, val_sources, test_sources}}`` on
    the first ``valid_sources`` / ``test_sources`` sources (all when None): the sources the
    trainer evaluates."""
    out = {}
    for method in rr:
        row: dict[str, float] = {}
        for split, tag, count in (("valid", "val", valid_sources), ("test", "test", test_sources)):
            values = rr[method][split]
            values = values if count is None else values[:count]
            row[f"{tag}_mrr"], row[f"{tag}_mrr_se"] = mrr_and_se(values)
            row[f"{tag}_sources"] = int(values.shape[0])
        out[method] = row
    return out


def format_table(summary: dict[str, dict[str, float]]) -> str:
    lines = ["| method | val MRR | ± SE | test MRR | ± SE |", "| --- | --- | --- | --- | --- |"]
    for method, row in summary.items():
        label = LABELS.get(method) or TRAINED_LABELS.get(method, method)
        lines.append(f"| {label} | {row['val_mrr']:.4f} | "
                     f"{row['val_mrr_se']:.4f} | {row['test_mrr']:.4f} | {row['test_mrr_se']:.4f} |")
    return "\n".join(lines)


def to_json(summary: dict[str, dict[str, float]]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True)


# --- trained references for the calibration table (not part of every run) -------------------

TRAINED_LABELS = {"feature_mlp": "MLP on raw features (trained, the OGB example's recipe)"}


def feature_mlp(graph, steps: int = 300, batch_size: int = 8192, lr: float = 0.01,
                hidden: int = 256, seed: int = 0,
                max_sources: int | None = None) -> dict[str, np.ndarray]:
    """Per-source reciprocal ranks of the OGB example's feature-only baseline
    (examples/linkproppred/citation2/mlp.py in snap-stanford/ogb): a 3-layer MLP (hidden 256) on
    the Hadamard product of the two papers' raw features, BCE on training edges against one
    random target each, Adam 0.01; here ``steps`` mini-batches of ``batch_size`` edges (the
    example: 100 full passes in batches of 65,536, on a GPU). ``max_sources``: score only the
    first that many sources of each split (scoring is most of the cost on a big preset)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    x = graph.x.float()
    net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                        nn.ReLU(), nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    src_all, dst_all = graph.split["train"]["source_node"], graph.split["train"]["target_node"]
    gen = torch.Generator().manual_seed(seed)

    def score(a, b):
        return net(x[a] * x[b]).squeeze(-1)

    for _ in range(steps):
        ids = torch.randint(0, src_all.numel(), (batch_size,), generator=gen)
        src, dst = src_all[ids], dst_all[ids]
        neg = torch.randint(0, x.shape[0], (batch_size,), generator=gen)
        pos, negs = score(src, dst), score(src, neg)
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + \
            F.binary_cross_entropy_with_logits(negs, torch.zeros_like(negs))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = {}
    with torch.no_grad():
        for split in SPLITS:
            data = graph.split[split]
            s, t, neg = data["source_node"], data["target_node"], data["target_node_neg"]
            s, t, neg = s[:max_sources], t[:max_sources], neg[:max_sources]
            k = neg.shape[1]
            negs = torch.cat([score(s[i:i + 64].repeat_interleave(k), neg[i:i + 64].reshape(-1))
                              .view(-1, k) for i in range(0, s.numel(), 64)])
            out[split] = reciprocal_ranks(score(s, t), negs)
    return out
