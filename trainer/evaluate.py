"""Evaluation by the OGB protocol: layer-wise full-graph inference, then MRR with ogb's Evaluator.

The work is split across ranks: each rank computes every layer for its slice of the nodes
(shared by broadcasts before the next layer), then scores its slice of the sources; the scores are
gathered and ranked by ``ogb.linkproppred.Evaluator("ogbl-citation2")``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from ogb.linkproppred import Evaluator

from trainer.data.dataset import Graph
from trainer.model import LinkModel

_EVALUATOR: Evaluator | None = None


def evaluator() -> Evaluator:
    global _EVALUATOR
    if _EVALUATOR is None:
        _EVALUATOR = Evaluator(name="ogbl-citation2")
    return _EVALUATOR


def link_metrics(pos: torch.Tensor, neg: torch.Tensor) -> dict[str, float]:
    """MRR and hits@k by the OGB Evaluator (ties count half), and the study's accuracy.

    ``pos``: (n,) logits of true edges; ``neg``: (n, k) logits of their negatives. Accuracy is
    binary accuracy of sigmoid(logit) >= 0.5 on the n positives and the first negative of each
    (the study's column: it depends on where the logits sit around 0, which the ranking metrics
    ignore, so it can move against MRR between models).
    """
    out = evaluator().eval({"y_pred_pos": pos.float(), "y_pred_neg": neg.float()})
    correct = (pos >= 0).sum() + (neg[:, 0] < 0).sum()
    rr = out["mrr_list"].double()
    return {
        "mrr": rr.mean().item(),
        # Standard error of the MRR over sources (sample standard deviation / sqrt(n)).
        "mrr_se": (rr.std() / rr.numel() ** 0.5).item() if rr.numel() > 1 else float("nan"),
        "hits@1": out["hits@1_list"].mean().item(),
        "hits@10": out["hits@10_list"].mean().item(),
        "accuracy": correct.item() / (2 * pos.numel()),
        "sources": pos.numel(),
    }


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_rows(part: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate each rank's contiguous slice of rows (rank order); identity when alone."""
    rank, world = _world()
    if world == 1:
        return part
    sizes = [_slice(total, r, world)[1] - _slice(total, r, world)[0] for r in range(world)]
    padded = part.new_zeros((max(sizes),) + tuple(part.shape[1:]))
    padded[: part.shape[0]] = part
    chunks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    return torch.cat([c[:s] for c, s in zip(chunks, sizes, strict=True)])


def _slice(total: int, rank: int, world: int) -> tuple[int, int]:
    return total * rank // world, total * (rank + 1) // world


# Dot scores of a block of sources against every node, instead of gathering each source's
# candidates, when the graph has at most this many nodes per candidate: one matrix product reads
# each embedding once, while gathering copies every (source, candidate) pair's embedding (1,000
# per source) and runs ~70x slower per element on a CPU (measured on small: 50,000 nodes,
# 1,000 candidates, 0.45 s against 0.92 s; ogbl-citation2's 2.9M nodes take the gather).
MATMUL_NODES_PER_CANDIDATE = 64


def score_negatives(model: LinkModel, h: torch.Tensor, src: torch.Tensor,
                    neg_ids: torch.Tensor) -> torch.Tensor:
    """(sources, candidates) scores of each source's embedding ``src[i]`` against the
    embeddings ``h[neg_ids[i]]``, in blocks of sources that bound the memory."""
    if not src.shape[0]:
        return h.new_empty(0, neg_ids.shape[1])
    if model.predictor is None and h.shape[0] <= MATMUL_NODES_PER_CANDIDATE * neg_ids.shape[1]:
        # A block's scores: at most 4M floats (16 MB), small enough for malloc to reuse the
        # memory from one block to the next instead of mapping fresh pages each time.
        block = max(1, (1 << 22) // h.shape[0])
        return torch.cat([torch.gather(src[i : i + block] @ h.t(), 1, neg_ids[i : i + block])
                          for i in range(0, src.shape[0], block)])
    block = 64  # sources per block: h[neg_ids] of a block is block x 1000 x hidden floats
    return torch.cat([model.score(src[i : i + block].unsqueeze(1), h[neg_ids[i : i + block]])
                      for i in range(0, src.shape[0], block)])


GATHER_BLOCK_ROWS = 1 << 17  # rows per broadcast in embed_all
# Layer buffers of at most this size are kept between evaluations (two: a layer's input and
# output). A fresh buffer costs more than its computation: the kernel zeroes every page on first
# touch, and on the 2-core machine an evaluation of `small` spent more time there and in gloo's
# staging copies than in the layers (perf: ~25% of all CPU in clear_page). Larger ones, e.g.
# ogbl-citation2's 3 GB per layer, are allocated per evaluation so training does not hold them.
KEEP_BUFFER_BYTES = 256 << 20
_buffers: dict[tuple, list[torch.Tensor]] = {}


def _layer_buffer(shape: tuple[int, int], like: torch.Tensor, layer: int) -> torch.Tensor:
    """An uninitialised (rows, cols) buffer for ``layer``'s output; consecutive layers get
    different ones (a layer reads the previous layer's buffer while it writes its own)."""
    if shape[0] * shape[1] * like.element_size() > KEEP_BUFFER_BYTES:
        return like.new_empty(shape)
    key = (shape, like.dtype, like.device)
    pair = _buffers.get(key)
    if pair is None:
        pair = _buffers[key] = [like.new_empty(shape), like.new_empty(shape)]
    return pair[layer % 2]


@torch.no_grad()
def embed_all(model: LinkModel, graph: Graph, chunk: int) -> torch.Tensor:
    """Embeddings of every node, layer by layer with full neighbourhoods, split across ranks.

    Each layer writes into one (world * ceil(n / world), hidden) buffer: rank r computes rows
    ``r * per ...`` (only the last rank's slot has padding, past row n) and then every rank
    broadcasts its slot, in blocks of ``GATHER_BLOCK_ROWS`` rows, straight into the others'
    copies of the buffer (an all-gather through gloo would stage the whole layer in a fresh
    buffer and copy it out again). A rank holds the previous layer and this one, nothing more
    (at ogbl-citation2's size 6 GB). The result is a view of a buffer that the next call may
    reuse (KEEP_BUFFER_BYTES): use it before evaluating again.
    """
    rank, world = _world()
    encoder = model.encoder
    device = next(model.parameters()).device
    h = graph.x.to(device)  # (the features stay memory-mapped on the CPU)
    n = graph.num_nodes
    per = -(-n // world)
    lo, hi = min(n, rank * per), min(n, (rank + 1) * per)
    for i in range(len(encoder.convs)):
        out = _layer_buffer((world * per, encoder.convs[i].out_channels), h, i)
        for s in range(lo, hi, chunk):
            e = min(s + chunk, hi)
            out[s:e] = encoder.layer(i, h, graph.indptr, graph.indices, s, e)
        if world > 1:
            for b in range(0, per, GATHER_BLOCK_ROWS):
                rows = min(GATHER_BLOCK_ROWS, per - b)
                for r in range(world):
                    dist.broadcast(out[r * per + b : r * per + b + rows], src=r)
        h = out[:n]
    return h


@torch.no_grad()
def evaluate(model: LinkModel, graph: Graph, split: str, max_sources: int | None,
             chunk: int = 65_536) -> dict[str, float]:
    """Metrics on the first ``max_sources`` sources of ``split`` (all of them when None)."""
    was_training = model.training
    model.eval()
    try:
        h = embed_all(model, graph, chunk)
        data = graph.split[split]
        total = data["source_node"].shape[0] if max_sources is None else min(max_sources, data["source_node"].shape[0])
        rank, world = _world()
        lo, hi = _slice(total, rank, world)
        src = h[data["source_node"][lo:hi]]
        pos = model.score(src, h[data["target_node"][lo:hi]])
        neg = score_negatives(model, h, src, data["target_node_neg"][lo:hi])
        pos, neg = _gather_rows(pos, total), _gather_rows(neg, total)
        return link_metrics(pos.cpu(), neg.cpu())
    finally:
        model.train(was_training)
