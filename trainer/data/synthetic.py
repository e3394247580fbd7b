"""Synthetic citation graphs written in the exact on-disk layout of ogbl-citation2.

The generator exists because the real dataset cannot be downloaded everywhere (CI, this
machine). Loading its output goes through the same ``ogb`` code as the real dataset.

The model of a citation graph:
- Papers get years (more papers in later years) and node ids in publication order, so
  "cites an older paper" means "cites a smaller id".
- Each paper belongs to a topic and to a subtopic inside it. Its 128-d features are the topic
  centroid plus a weaker subtopic centroid plus strong noise: a features-only model can guess
  the topic but hardly the subtopic.
- A paper cites ``Poisson(avg_degree)`` older papers: most from its own subtopic, some from its
  topic, a few at random. Averaging over neighbours (what GraphSAGE does) denoises the
  subtopic signal, so a GNN ranks true citations well above a features-only model.
- Validation and test edges follow OGB's time split: for papers of the last year, one
  reference each goes to validation and one to test (removed from the training graph), each
  with 1,000 random negative targets.

Everything is vectorised numpy and deterministic given ``gen_seed``.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

FIRST_YEAR = 1990
NUM_YEARS = 30  # 1990..2019, as in ogbl-citation2 whose validation/test papers are from 2019
P_COPY = 0.5  # share of references copied from a reference's references
P_SUBTOPIC, P_TOPIC = 0.65, 0.25  # topical references; the rest (0.10) cite any older paper
TOPIC_SCALE, SUBTOPIC_SCALE, NOISE_SCALE = 1.0, 0.8, 2.0  # per-dimension standard deviations


@dataclass
class SyntheticGraph:
    """In-memory result of :func:`generate` (also handy in tests)."""

    x: np.ndarray  # (N, F) float32
    year: np.ndarray  # (N,) int64
    topic: np.ndarray  # (N,) int64
    subtopic: np.ndarray  # (N,) int64, globally numbered
    train: tuple[np.ndarray, np.ndarray]  # source, target
    valid: tuple[np.ndarray, np.ndarray, np.ndarray]  # source, target, target_neg (n, num_neg)
    test: tuple[np.ndarray, np.ndarray, np.ndarray]


def _older_in_group(
    rng: np.random.Generator, src: np.ndarray, group: np.ndarray, num_groups: int
) -> np.ndarray:
    """For each source id, a uniformly random member of ``group[src]`` with a smaller id (or -1).

    Members of each group sorted by id form one segment of ``order``; the count of members
    older than ``src`` is a searchsorted on the key ``group * N + id``.
    """
    n = group.shape[0]
    keys = group * n + np.arange(n)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    start = np.searchsorted(sorted_keys, np.arange(num_groups) * n)
    g = group[src]
    older = np.searchsorted(sorted_keys, g * n + src) - start[g]
    pick = np.floor(rng.random(src.shape[0]) * older).astype(np.int64)
    return np.where(older > 0, order[np.minimum(start[g] + pick, n - 1)], -1)


def _add_copied(
    rng: np.random.Generator, src: np.ndarray, dst: np.ndarray, n_copy: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Append ``n_copy[i]`` references of paper i, each a reference of a random reference of i.

    ``src`` must be sorted (it is: np.repeat over ids). References whose chosen reference cites
    nothing fall back to citing that reference itself (deduplicated later).
    """
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    csrc = np.repeat(np.arange(n), n_copy)
    deg = indptr[csrc + 1] - indptr[csrc]
    via = dst[indptr[csrc] + np.floor(rng.random(csrc.shape[0]) * deg).astype(np.int64)]
    via_deg = indptr[via + 1] - indptr[via]
    pick = indptr[via] + np.floor(rng.random(csrc.shape[0]) * via_deg).astype(np.int64)
    cdst = np.where(via_deg > 0, dst[np.minimum(pick, dst.shape[0] - 1)], via)
    return np.concatenate([src, csrc]), np.concatenate([dst, cdst])


def generate(
    num_nodes: int,
    avg_degree: float = 10.0,
    num_topics: int = 20,
    subtopics_per_topic: int = 10,
    feat_dim: int = 128,
    eval_fraction: float = 0.0297,
    num_neg: int = 1000,
    gen_seed: int = 0,
) -> SyntheticGraph:
    rng = np.random.default_rng(gen_seed)
    n = num_nodes

    # Years: papers per year grow by 8% a year; ids are in publication order.
    weights = 1.08 ** np.arange(NUM_YEARS)
    per_year = rng.multinomial(n, weights / weights.sum())
    year = np.repeat(np.arange(FIRST_YEAR, FIRST_YEAR + NUM_YEARS), per_year).astype(np.int64)

    topic = rng.integers(0, num_topics, n)
    subtopic = topic * subtopics_per_topic + rng.integers(0, subtopics_per_topic, n)
    topic_c = rng.normal(0, TOPIC_SCALE, (num_topics, feat_dim)).astype(np.float32)
    sub_c = rng.normal(0, SUBTOPIC_SCALE, (num_topics * subtopics_per_topic, feat_dim)).astype(np.float32)
    x = np.empty((n, feat_dim), dtype=np.float32)
    for lo in range(0, n, 1 << 18):  # in chunks, float32: `full` stays within a few GB
        hi = min(n, lo + (1 << 18))
        chunk = topic_c[topic[lo:hi]] + sub_c[subtopic[lo:hi]]
        chunk += rng.standard_normal((hi - lo, feat_dim), dtype=np.float32) * NOISE_SCALE
        x[lo:hi] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)  # word2vec-like scale

    # References: Poisson(avg_degree) per paper. First "topical" ones, to older papers of the
    # same subtopic / topic / anyone; then "copied" ones: a reference of one of its topical
    # references (triadic closure, as in real citation graphs). Copied citations are what
    # neighbourhood aggregation can see and features alone cannot.
    out_deg = rng.poisson(avg_degree, n)
    out_deg[0] = 0
    n_copy = rng.binomial(out_deg, P_COPY)
    n_copy[out_deg - n_copy < 1] = 0  # a copy needs a topical reference to copy from
    src = np.repeat(np.arange(n), out_deg - n_copy)
    kind = rng.random(src.shape[0])
    dst = np.floor(rng.random(src.shape[0]) * src).astype(np.int64)  # any older paper
    by_sub = kind < P_SUBTOPIC
    by_topic = (kind >= P_SUBTOPIC) & (kind < P_SUBTOPIC + P_TOPIC)
    sub_pick = _older_in_group(rng, src[by_sub], subtopic, num_topics * subtopics_per_topic)
    dst[by_sub] = np.where(sub_pick >= 0, sub_pick, dst[by_sub])
    top_pick = _older_in_group(rng, src[by_topic], topic, num_topics)
    dst[by_topic] = np.where(top_pick >= 0, top_pick, dst[by_topic])
    src, dst = _add_copied(rng, src, dst, n_copy, n)
    edges = np.unique(src * n + dst)  # sorted by source, duplicates dropped
    src, dst = edges // n, edges % n

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

    def negatives(count: int) -> np.ndarray:
        return rng.integers(0, n, (count, num_neg), dtype=np.int64)

    return SyntheticGraph(
        x=x,
        year=year,
        topic=topic,
        subtopic=subtopic,
        train=(src[keep], dst[keep]),
        valid=(src[val_e], dst[val_e], negatives(n_eval)),
        test=(src[test_e], dst[test_e], negatives(n_eval)),
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
