"""Synthetic citation graphs written in the exact on-disk layout of ogbl-citation2.

The generator exists because the real dataset cannot be downloaded everywhere (CI, this
machine). Loading its output goes through the same ``ogb`` code as the real dataset. Its
parameters are calibrated against ogbl-citation2's published statistics; ``python -m
trainer.data stats`` prints the comparison (the README's calibration table).

The model of a citation graph:
- Papers get years (more papers in later years) and node ids in publication order, so
  "cites an older paper" means "cites a smaller id".
- Each paper has a position on a 2-d latent "map of science" (a torus): a topic centre plus
  a spread, topics of very unequal sizes. It also has a *fitness* (heavy-tailed, log-normal):
  how citable it is, whatever its position.
- Its 128-d features are a noisy projection of its position: random Fourier features of the
  position (their dot products approximate a Gaussian kernel of latent distance) plus strong
  noise, unit-normalised like word2vec averages. Features alone locate a paper only roughly.
- A paper cites a heavy-tailed (log-normal) number of older papers. Most references are
  *local*: a point near the paper's position is drawn (Gaussian, the "reach" holds about
  ``reach`` papers), and an older paper of that small cell of the map is cited with probability
  proportional to its fitness. So citation probability falls with latent distance and rises
  with the target's popularity among the older papers. Some references are *copied* from a
  reference's references (triadic closure, which is what common-neighbour heuristics see and
  which makes in-degrees heavier-tailed still), a few go anywhere (proportional to fitness).
- A GNN that averages over a paper's references denoises its position (and its neighbours'
  in-degree tells it about popularity); features alone and common neighbours see only part.
- Validation and test edges follow OGB's time split: for papers of the last year with at
  least three references, one reference each goes to validation and one to test (removed from
  the training graph). Each gets 1,000 negatives by OGB's definition: distinct papers older
  than the source that the source does not cite (in any split), never the source itself.

Everything is vectorised numpy and deterministic given ``gen_seed``: bit for bit, whatever
the number of threads (BLAS is held to one thread while generating: a multi-threaded sgemm
sums in another order, which moved ~8% of the features by an ulp and a few of their
6-decimal CSV digits between a 1-thread worker and a many-thread one).
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

FIRST_YEAR = 1990
NUM_YEARS = 30  # 1990..2019, as in ogbl-citation2 whose validation/test papers are from 2019
YEAR_GROWTH = 1.08  # papers per year grow by 8% a year
TOPIC_SPREAD = 0.5  # standard deviation of a paper's position around its topic centre
TOPIC_SIZE_SIGMA = 1.0  # topic sizes are log-normal: a few big fields, many small ones
FITNESS_SIGMA = 1.5  # log-normal fitness: the heavy tail of in-degrees
OUT_DEGREE_SIGMA = 0.75  # log-normal reference counts: the heavy tail of out-degrees
P_COPY = 0.15  # share of references copied from a reference's references
P_ANYWHERE = 0.03  # share of references to any older paper (by fitness)
CELLS_PER_REACH = 2.0  # map cells per reach radius (resolution of the local citation kernel)
LOCAL_TRIES = 4  # a local reference that lands on a cell without older papers is redrawn
RFF_SCALE = 1.5  # feature kernel length-scale in reach radii
FEATURE_NOISE = 1.0  # noise-to-signal ratio of the position features (per dimension)
NUISANCE_DIMS = 0.5  # share of feature directions unrelated to citations
NUISANCE_SCALE = 3.0  # their standard deviation (the position features' signal has 1)
FITNESS_IN_FEATURES = 2.0  # length of the fitness trace (in standard deviations of log fitness)


@dataclass
class SyntheticGraph:
    """In-memory result of :func:`generate` (also handy in tests)."""

    x: np.ndarray  # (N, F) float32
    year: np.ndarray  # (N,) int64
    pos: np.ndarray  # (N, 2) float64: latent position on the unit torus
    fitness: np.ndarray  # (N,) float64
    train: tuple[np.ndarray, np.ndarray]  # source, target
    valid: tuple[np.ndarray, np.ndarray, np.ndarray]  # source, target, target_neg (n, num_neg)
    test: tuple[np.ndarray, np.ndarray, np.ndarray]


def reach_radius(num_nodes: int, reach: float) -> float:
    """The standard deviation of a local reference's offset: a disc of that radius on the unit
    torus holds ``reach`` papers on average (area pi r^2 = reach / N)."""
    return math.sqrt(reach / (math.pi * num_nodes))


class _CellIndex:
    """Papers grouped by map cell, each cell's members sorted by id with cumulative fitness, so
    that "an older paper of cell c, by fitness" is two searchsorteds (vectorised over queries)."""

    def __init__(self, pos: np.ndarray, fitness: np.ndarray, grid: int):
        n = pos.shape[0]
        self.n, self.grid = n, grid
        cell = self.cell_of(pos)
        keys = cell * n + np.arange(n)
        self.order = np.argsort(keys, kind="stable")
        self.sorted_keys = keys[self.order]
        self.cum = np.cumsum(fitness[self.order])

    def cell_of(self, points: np.ndarray) -> np.ndarray:
        g = self.grid
        ij = np.minimum((points * g).astype(np.int64), g - 1)
        return ij[:, 0] * g + ij[:, 1]

    def pick(self, rng: np.random.Generator, cell: np.ndarray, src: np.ndarray) -> np.ndarray:
        """For each query, a paper of ``cell`` older than ``src`` chosen by fitness, or -1."""
        n = self.n
        lo = np.searchsorted(self.sorted_keys, cell * n)
        hi = np.searchsorted(self.sorted_keys, cell * n + src)  # members with id < src
        base = np.where(lo > 0, self.cum[np.maximum(lo - 1, 0)], 0.0)
        top = np.where(hi > 0, self.cum[np.maximum(hi - 1, 0)], 0.0)
        u = base + rng.random(src.shape[0]) * (top - base)
        at = np.clip(np.searchsorted(self.cum, u, side="right"), lo, np.maximum(hi - 1, lo))
        return np.where(hi > lo, self.order[np.minimum(at, n - 1)], -1)


def _older_by_fitness(rng: np.random.Generator, cum: np.ndarray, src: np.ndarray) -> np.ndarray:
    """For each source id (>= 1), an older paper chosen with probability proportional to fitness
    (``cum`` is the cumulative fitness in id order)."""
    u = rng.random(src.shape[0]) * cum[src - 1]
    return np.minimum(np.searchsorted(cum, u, side="right"), src - 1)


def _local_references(rng, index: _CellIndex, pos, src, radius, fallback_cum) -> np.ndarray:
    dst = np.full(src.shape[0], -1, dtype=np.int64)
    todo = np.arange(src.shape[0])
    for _ in range(LOCAL_TRIES):
        if todo.size == 0:
            break
        point = (pos[src[todo]] + rng.normal(0.0, radius, (todo.size, 2))) % 1.0
        got = index.pick(rng, index.cell_of(point), src[todo])
        dst[todo] = got
        todo = todo[got < 0]
    if todo.size:  # crowded-out early papers: cite anyone older, by fitness
        dst[todo] = _older_by_fitness(rng, fallback_cum, src[todo])
    return dst


def _copied_references(rng, src, dst, n_copy, n) -> tuple[np.ndarray, np.ndarray]:
    """``n_copy[i]`` extra references of paper i, each a reference of one of its references.

    ``src`` must be sorted (np.repeat over ids). A chosen reference that cites nothing is cited
    again instead (a duplicate, dropped later).
    """
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    csrc = np.repeat(np.arange(n), n_copy)
    deg = indptr[csrc + 1] - indptr[csrc]
    via = dst[indptr[csrc] + np.floor(rng.random(csrc.shape[0]) * deg).astype(np.int64)]
    via_deg = indptr[via + 1] - indptr[via]
    pick = indptr[via] + np.floor(rng.random(csrc.shape[0]) * via_deg).astype(np.int64)
    cdst = np.where(via_deg > 0, dst[np.minimum(pick, dst.shape[0] - 1)], via)
    return csrc, cdst


def _positions(rng: np.random.Generator, n: int, num_topics: int) -> np.ndarray:
    sizes = rng.lognormal(0.0, TOPIC_SIZE_SIGMA, num_topics)
    topic = rng.choice(num_topics, n, p=sizes / sizes.sum())
    centres = rng.random((num_topics, 2))
    return (centres[topic] + rng.normal(0.0, TOPIC_SPREAD, (n, 2))) % 1.0


def _features(rng: np.random.Generator, pos: np.ndarray, fitness: np.ndarray, feat_dim: int,
              length: float) -> np.ndarray:
    """Word2vec-like features: a noisy projection of the position, some nuisance, a weak trace of
    the paper's fitness, in a random basis, unit-normalised.

    The signal is random Fourier features of the position on the torus (integer frequencies
    keep them periodic): E[<rff(a), rff(b)>] ~ exp(-|a - b|^2 / (2 length^2)), so their dot
    product is a kernel of latent distance. ``NUISANCE_DIMS`` directions carry large variance
    unrelated to citations (what a paper's vocabulary says about anything but its topic): raw
    cosines drown in it, a trained layer can learn to ignore it. A random rotation mixes all of
    it into every dimension.
    """
    n = pos.shape[0]
    n_nuis = int(round(NUISANCE_DIMS * feat_dim))
    n_sig = feat_dim - n_nuis
    freq = np.rint(rng.normal(0.0, 1.0 / (2 * math.pi * length), (n_sig, 2)))
    phase = rng.uniform(0.0, 2 * math.pi, n_sig)
    basis, _ = np.linalg.qr(rng.standard_normal((feat_dim, feat_dim)))
    basis = basis.astype(np.float32)
    fit_dir = rng.standard_normal(feat_dim).astype(np.float32)
    fit_dir /= np.linalg.norm(fit_dir)
    log_fit = (np.log(fitness) / max(FITNESS_SIGMA, 1e-9)).astype(np.float32)
    x = np.empty((n, feat_dim), dtype=np.float32)
    for lo in range(0, n, 1 << 17):  # in chunks, float32: `full` stays within a few GB
        hi = min(n, lo + (1 << 17))
        chunk = np.empty((hi - lo, feat_dim), dtype=np.float32)
        chunk[:, :n_sig] = np.cos(2 * math.pi * pos[lo:hi] @ freq.T + phase) * math.sqrt(2.0)
        chunk[:, :n_sig] += rng.standard_normal((hi - lo, n_sig), dtype=np.float32) * FEATURE_NOISE
        chunk[:, n_sig:] = rng.standard_normal((hi - lo, n_nuis), dtype=np.float32) * NUISANCE_SCALE
        chunk = chunk @ basis
        chunk += FITNESS_IN_FEATURES * log_fit[lo:hi, None] * fit_dir
        x[lo:hi] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return x


def _negatives(rng: np.random.Generator, src: np.ndarray, cited: np.ndarray, n: int,
               num_neg: int) -> np.ndarray:
    """``num_neg`` distinct papers older than each source that it does not cite (OGB's
    definition for ogbl-citation2). ``cited`` holds the sorted keys ``s * n + t`` of every
    reference of every paper (all splits)."""
    out = np.empty((src.shape[0], num_neg), dtype=np.int64)
    todo = np.arange(src.shape[0])
    draw = num_neg + num_neg // 4 + 16
    while todo.size:
        s = src[todo]
        cand = np.floor(rng.random((todo.size, draw)) * s[:, None]).astype(np.int64)
        cand.sort(axis=1)
        keys = s[:, None] * n + cand
        pos = np.minimum(np.searchsorted(cited, keys), cited.shape[0] - 1)
        ok = cited[pos] != keys
        ok[:, 1:] &= cand[:, 1:] != cand[:, :-1]  # distinct within a row
        enough = ok.sum(1) >= num_neg
        for row in np.flatnonzero(enough):  # keep a random num_neg of the valid candidates
            valid = cand[row, ok[row]]
            out[todo[row]] = valid[rng.permutation(valid.shape[0])[:num_neg]]
        todo = todo[~enough]
        draw = draw * 2
        if todo.size and draw > 64 * num_neg:
            raise ValueError(
                f"source paper {int(src[todo[0]])} has fewer than {num_neg} older papers it does "
                f"not cite: use more papers (dataset.num_nodes) or fewer negatives (dataset.num_neg)"
            )
    return out


def generate(
    num_nodes: int,
    avg_degree: float = 11.7,
    num_topics: int = 20,
    reach: float = 50.0,
    feat_dim: int = 128,
    eval_fraction: float = 0.0297,
    num_neg: int = 1000,
    gen_seed: int = 0,
) -> SyntheticGraph:
    with threadpool_limits(limits=1, user_api="blas"):  # the same bits at any thread count
        return _generate(num_nodes, avg_degree, num_topics, reach, feat_dim, eval_fraction,
                         num_neg, gen_seed)


def _generate(num_nodes: int, avg_degree: float, num_topics: int, reach: float, feat_dim: int,
              eval_fraction: float, num_neg: int, gen_seed: int) -> SyntheticGraph:
    rng = np.random.default_rng(gen_seed)
    n = num_nodes

    weights = YEAR_GROWTH ** np.arange(NUM_YEARS)
    per_year = rng.multinomial(n, weights / weights.sum())
    year = np.repeat(np.arange(FIRST_YEAR, FIRST_YEAR + NUM_YEARS), per_year).astype(np.int64)
    pos = _positions(rng, n, num_topics)
    fitness = rng.lognormal(0.0, FITNESS_SIGMA, n)
    radius = reach_radius(n, reach)
    x = _features(rng, pos, fitness, feat_dim, RFF_SCALE * radius)

    # Reference counts: log-normal with mean avg_degree (before duplicates are dropped), at
    # least one; the first paper cites nothing.
    mu = math.log(avg_degree) - OUT_DEGREE_SIGMA**2 / 2
    out_deg = np.maximum(1, np.rint(rng.lognormal(mu, OUT_DEGREE_SIGMA, n))).astype(np.int64)
    out_deg[0] = 0
    n_copy = rng.binomial(out_deg, P_COPY)
    n_copy[out_deg - n_copy < 1] = 0  # a copy needs a reference of its own to copy from
    src = np.repeat(np.arange(n), out_deg - n_copy)
    grid = max(1, int(CELLS_PER_REACH / radius))
    index = _CellIndex(pos, fitness, grid)
    cum_id = np.cumsum(fitness)
    anywhere = rng.random(src.shape[0]) < P_ANYWHERE
    dst = np.empty(src.shape[0], dtype=np.int64)
    dst[anywhere] = _older_by_fitness(rng, cum_id, src[anywhere])
    dst[~anywhere] = _local_references(rng, index, pos, src[~anywhere], radius, cum_id)
    csrc, cdst = _copied_references(rng, src, dst, n_copy, n)
    edges = np.unique(np.concatenate([src, csrc]) * n + np.concatenate([dst, cdst]))
    src, dst = edges // n, edges % n  # sorted by source, duplicates dropped

    # Time split: last-year papers with >= 3 references give one to valid and one to test.
    shuffled = rng.permutation(src.shape[0])
    by_src = shuffled[np.argsort(src[shuffled], kind="stable")]  # random order within a source
    s_sorted = src[by_src]
    first = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    counts = np.diff(np.r_[first, s_sorted.shape[0]])
    eligible = (year[s_sorted[first]] == year[-1]) & (counts >= 3)
    cand = first[eligible]
    n_eval = min(cand.shape[0], max(1, int(round(eval_fraction * n))))
    chosen = np.sort(rng.choice(cand, n_eval, replace=False))
    val_e, test_e = by_src[chosen], by_src[chosen + 1]
    keep = np.ones(src.shape[0], dtype=bool)
    keep[val_e] = keep[test_e] = False
    return SyntheticGraph(
        x=x,
        year=year,
        pos=pos,
        fitness=fitness,
        train=(src[keep], dst[keep]),
        valid=(src[val_e], dst[val_e], _negatives(rng, src[val_e], edges, n, num_neg)),
        test=(src[test_e], dst[test_e], _negatives(rng, src[test_e], edges, n, num_neg)),
    )


def _write_csv_gz(path: Path, array: np.ndarray) -> None:
    with gzip.open(path, "wt", compresslevel=1) as f:
        chunk = 200_000
        for i in range(0, max(array.shape[0], 1), chunk):
            pd.DataFrame(array[i : i + chunk]).to_csv(f, header=False, index=False)


def _fixed6_csv(x: np.ndarray) -> bytes:
    """Rows of ``x`` (values in [-1, 1]) as CSV text with 6 decimals, e.g. ``+0.123456,-0.5...``.

    Vectorised byte arithmetic instead of per-number string formatting: pandas' ``to_csv``
    needs ~15 minutes for the 375M features of ``full``, this takes well under one.
    """
    n, d = x.shape
    v = np.rint(np.abs(x.astype(np.float64)) * 1e6).astype(np.int64)
    out = np.empty((n, d, 10), dtype=np.uint8)
    out[..., 0] = np.where(x < 0, ord("-"), ord("+"))
    out[..., 1] = ord("0") + v // 1_000_000
    out[..., 2] = ord(".")
    for k in range(6):
        out[..., 3 + k] = ord("0") + (v // 10 ** (5 - k)) % 10
    out[..., 9] = ord(",")
    out[:, -1, 9] = ord("\n")
    return out.tobytes()


def _write_features(path: Path, x: np.ndarray) -> None:
    assert float(np.abs(x).max(initial=0.0)) <= 1.0, "features must be unit-normalised"
    with gzip.open(path, "wb", compresslevel=1) as f:
        for lo in range(0, x.shape[0], 100_000):
            f.write(_fixed6_csv(x[lo : lo + 100_000]))


def write_ogb_layout(graph: SyntheticGraph, dataset_dir: Path) -> None:
    """Write ``graph`` as OGB's ``ogbl_citation2`` folder (raw CSVs, time split, release tag).

    Files are written into a sibling temp folder that is renamed into place at the end, so an
    interrupted generation never leaves a half-written dataset behind.
    """
    dataset_dir = Path(dataset_dir)
    tmp = dataset_dir.with_name(dataset_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "raw").mkdir(parents=True)
    (tmp / "split" / "time").mkdir(parents=True)
    (tmp / "processed").mkdir()  # ogb saves its processed form here, as in the real archive

    src, dst = graph.train
    _write_csv_gz(tmp / "raw" / "edge.csv.gz", np.stack([src, dst], axis=1))
    _write_features(tmp / "raw" / "node-feat.csv.gz", graph.x)
    _write_csv_gz(tmp / "raw" / "node_year.csv.gz", graph.year[:, None])
    _write_csv_gz(tmp / "raw" / "num-node-list.csv.gz", np.array([[graph.x.shape[0]]]))
    _write_csv_gz(tmp / "raw" / "num-edge-list.csv.gz", np.array([[src.shape[0]]]))

    # Split files hold numpy arrays, like the published ones (hence the weights_only handling).
    torch.save({"source_node": src, "target_node": dst}, tmp / "split" / "time" / "train.pt")
    for name, (s, t, neg) in (("valid", graph.valid), ("test", graph.test)):
        torch.save(
            {"source_node": s, "target_node": t, "target_node_neg": neg},
            tmp / "split" / "time" / f"{name}.pt",
        )
    (tmp / "RELEASE_v1.txt").write_text("ogbl-citation2 layout, synthetic graph (gnn-bench)\n")
    if dataset_dir.exists():
        shutil.rmtree(dataset_dir)
    os.replace(tmp, dataset_dir)
