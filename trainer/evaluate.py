"""Evaluation by the OGB protocol: layer-wise full-graph inference, then MRR with ogb's Evaluator.

The work is split across ranks: each rank computes every layer for its slice of the nodes
(all-gathered before the next layer), then scores its slice of the sources; the scores are
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


GATHER_BLOCK_ROWS = 1 << 17  # rows per all-gather in embed_all (gloo copies through a buffer)


@torch.no_grad()
def embed_all(model: LinkModel, graph: Graph, chunk: int) -> torch.Tensor:
    """Embeddings of every node, layer by layer with full neighbourhoods, split across ranks.

    Memory: each layer writes straight into one (world * ceil(n / world), hidden) buffer (rank
    r owns rows ``r * per ...``; only the last rank's slot has padding, past row n) and fills
    the other ranks' slots with all-gathers of ``GATHER_BLOCK_ROWS`` rows, so a rank holds the
    previous layer and this one, not also per-chunk parts, their concatenation and gloo's
    full-size staging copies (at ogbl-citation2's size that is 6 GB per rank instead of ~12).
    """
    rank, world = _world()
    encoder = model.encoder
    device = next(model.parameters()).device
    h = graph.x.to(device)  # (the features stay memory-mapped on the CPU)
    n = graph.num_nodes
    per = -(-n // world)
    lo, hi = min(n, rank * per), min(n, (rank + 1) * per)
    for i in range(len(encoder.convs)):
        out = h.new_empty((world * per, encoder.convs[i].out_channels))
        for s in range(lo, hi, chunk):
            e = min(s + chunk, hi)
            out[s:e] = encoder.layer(i, h, graph.indptr, graph.indices, s, e)
        if world > 1:
            for b in range(0, per, GATHER_BLOCK_ROWS):
                rows = min(GATHER_BLOCK_ROWS, per - b)
                slots = [out[r * per + b : r * per + b + rows] for r in range(world)]
                dist.all_gather(slots, slots[rank].clone())
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
        neg_ids = data["target_node_neg"][lo:hi]
        block = 64  # sources per block: h[neg_ids] of a block is block x 1000 x hidden floats
        neg = torch.cat(
            [model.score(src[i : i + block].unsqueeze(1), h[neg_ids[i : i + block]])
             for i in range(0, src.shape[0], block)]
        ) if src.shape[0] else h.new_empty(0, neg_ids.shape[1])
        pos, neg = _gather_rows(pos, total), _gather_rows(neg, total)
        return link_metrics(pos.cpu(), neg.cpu())
    finally:
        model.train(was_training)
