"""Metrics by the OGB protocol, distributed evaluation, and the neighbour sampler + model path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import EVAL_MODEL_SEED, EVAL_OVERRIDES, tiny_overrides
from ogb.linkproppred import Evaluator

from trainer.config import compose
from trainer.evaluate import embed_all, evaluate, link_metrics
from trainer.model import LinkModel
from trainer.sampler import NeighborSampler

# ---------------------------------------------------------------- link_metrics


def test_link_metrics_hand_computed_with_ties() -> None:
    pos = torch.tensor([1.0, 0.5])
    neg = torch.tensor([[1.0, 0.0, 2.0], [0.1, 0.2, 0.3]])
    m = link_metrics(pos, neg)
    # Source 0: one negative above (2.0), one tied (1.0): rank (1 + 2) / 2 + 1 = 2.5.
    # Source 1: every negative below: rank 1.
    assert m["mrr"] == pytest.approx((1 / 2.5 + 1.0) / 2) == pytest.approx(0.7)
    assert m["hits@1"] == pytest.approx(0.5)
    assert m["hits@10"] == pytest.approx(1.0)
    # Both positives >= 0 are right; both first negatives (1.0, 0.1) are >= 0, so wrong.
    assert m["accuracy"] == pytest.approx(2 / 4)
    assert m["sources"] == 2


def test_link_metrics_hand_computed_signs_and_boundaries() -> None:
    pos = torch.tensor([1.0, 0.5, 0.0, -2.0])
    neg = torch.tensor([
        [1.0, 0.0, 2.0, 3.0],  # rank: 2 above, 1 tie -> (2 + 3) / 2 + 1 = 3.5
        [0.1, 0.2, 0.3, -5.0],  # rank 1
        [-1.0, 0.0, 0.0, 0.0],  # 0 above, 3 ties -> (0 + 3) / 2 + 1 = 2.5
        [-3.0, -1.0, -2.5, 1.0],  # 2 above (-1.0, 1.0) -> 3
    ])
    m = link_metrics(pos, neg)
    assert m["mrr"] == pytest.approx((1 / 3.5 + 1 + 1 / 2.5 + 1 / 3) / 4)
    assert m["hits@1"] == pytest.approx(1 / 4)
    assert m["hits@10"] == pytest.approx(1.0)
    # Positives right: 1.0, 0.5, 0.0 (logit 0 is p = 0.5, counted positive); -2.0 wrong.
    # First negatives right when < 0: -1.0 and -3.0.
    assert m["accuracy"] == pytest.approx((3 + 2) / 8)


def test_link_metrics_agree_with_ogb_evaluator() -> None:
    gen = torch.Generator().manual_seed(3)
    n, k = 257, 1000
    # Coarse values make ties frequent, which is where rank conventions differ.
    pos = torch.randint(-4, 5, (n,), generator=gen).float() / 2
    neg = torch.randint(-6, 5, (n, k), generator=gen).float() / 2
    neg[:5] = pos[:5, None]  # every negative tied
    ours = link_metrics(pos, neg)
    ogb = Evaluator(name="ogbl-citation2").eval({"y_pred_pos": pos, "y_pred_neg": neg})
    for name in ("mrr", "hits@1", "hits@10"):
        assert ours[name] == pytest.approx(ogb[f"{name}_list"].mean().item(), abs=1e-7)
    # Independent computation of the same quantities.
    above = (neg > pos[:, None]).sum(1).double()
    ties = (neg == pos[:, None]).sum(1).double()
    rank = above + ties / 2 + 1
    assert ours["mrr"] == pytest.approx((1 / rank).mean().item(), abs=1e-6)
    assert ours["hits@10"] == pytest.approx((rank <= 10).double().mean().item())
    assert ours["accuracy"] == pytest.approx(
        ((pos >= 0).sum() + (neg[:, 0] < 0).sum()).item() / (2 * n))
    assert ours["sources"] == n
    assert all(isinstance(ours[key], float) for key in ("mrr", "hits@1", "hits@10", "accuracy"))


def test_random_scores_give_random_mrr() -> None:
    """A sanity anchor for the training thresholds: random logits give MRR ~ H(1001)/1001."""
    gen = torch.Generator().manual_seed(0)
    m = link_metrics(torch.randn(4000, generator=gen), torch.randn(4000, 1000, generator=gen))
    expected = sum(1 / r for r in range(1, 1002)) / 1001
    assert m["mrr"] == pytest.approx(expected, rel=0.15)
    assert expected < 0.0076


# ---------------------------------------------------------------- sampler and model


def _model(cfg, seed: int = 0, **change) -> LinkModel:
    torch.manual_seed(seed)
    model_cfg = cfg.model.copy()
    for key, value in change.items():
        model_cfg[key] = value
    return LinkModel(128, model_cfg).eval()


@pytest.mark.parametrize(("aggr", "num_layers"), [("mean", 3), ("add", 2), ("max", 1)])
def test_full_fanout_sampling_equals_full_graph_inference(tiny_graph, aggr: str,
                                                         num_layers: int) -> None:
    cfg = compose(["dataset=tiny", f"model.aggr={aggr}", f"model.num_layers={num_layers}",
                   f"model.fanouts=[{','.join(['-1'] * num_layers)}]", "model.hidden=64"])
    model = _model(cfg)
    full = embed_all(model, tiny_graph, chunk=300)  # chunks straddle node ranges on purpose
    sampler = NeighborSampler(tiny_graph.indptr, tiny_graph.indices, cfg.model.fanouts)
    gen = torch.Generator().manual_seed(1)
    # High- and low-degree nodes, the first (no references) and last papers.
    deg = tiny_graph.indptr[1:] - tiny_graph.indptr[:-1]
    seeds = torch.unique(torch.cat([torch.randperm(1000, generator=gen)[:40],
                                    deg.topk(5).indices, torch.tensor([0, 999])]))
    with torch.no_grad():
        for batch in (seeds, seeds[:1]):
            sub = sampler(batch)
            assert torch.equal(sub.n_id[: batch.numel()], batch)
            h = model.encoder(tiny_graph.x[sub.n_id], sub)
            assert h.shape == (batch.numel(), 64)
            assert (h - full[batch]).abs().max().item() < 1e-5
    # Not vacuous: truncated neighbourhoods give clearly different embeddings.
    truncated = NeighborSampler(tiny_graph.indptr, tiny_graph.indices, [1] * num_layers)
    with torch.no_grad():
        sub = truncated(seeds, gen)
        h = model.encoder(tiny_graph.x[sub.n_id], sub)
    assert (h - full[seeds]).abs().max().item() > 1e-3


def _scatter_forward(encoder, x: torch.Tensor, sub) -> torch.Tensor:
    """SAGE.forward written out with plain edge_index tensors (PyG's gather/scatter path)."""
    num_layers = len(encoder.convs)
    for i, conv in enumerate(encoder.convs):
        n_src, n_dst = sub.cum_nodes[num_layers - i], sub.cum_nodes[num_layers - i - 1]
        x = x[:n_src]
        x = conv((x, x[:n_dst]), sub.edge_index[:, : sub.cum_edges[num_layers - i]])
        if i < num_layers - 1:
            x = torch.relu(x)
    return x


@pytest.mark.parametrize("aggr", ["mean", "add"])
@pytest.mark.parametrize("fanouts", [[5, 3, 2], [-1, -1, -1]], ids=["sampled", "full"])
@pytest.mark.parametrize("drop", [False, True], ids=["all-edges", "batch-edges-dropped"])
def test_sparse_aggregation_equals_scatter_path(tiny_graph, aggr: str, fanouts: list[int],
                                                drop: bool) -> None:
    """The model aggregates with a sparse CSR matmul; it must equal PyG's edge_index path,
    forward and backward, also with repeated neighbours (sampling draws with replacement)."""
    from trainer.sampler import drop_edges

    cfg = compose(["dataset=tiny", f"model.aggr={aggr}", f"model.num_layers={len(fanouts)}",
                   f"model.fanouts=[{','.join(map(str, fanouts))}]", "model.hidden=32"])
    model = _model(cfg).train()
    sampler = NeighborSampler(tiny_graph.indptr, tiny_graph.indices, fanouts)
    train = tiny_graph.split["train"]
    src, dst = train["source_node"][:40], train["target_node"][:40]
    seeds = torch.unique(torch.cat([src, dst]))
    sub = sampler(seeds, torch.Generator().manual_seed(1))
    if drop:
        sub = drop_edges(sub, src, dst, tiny_graph.num_nodes)
    x = tiny_graph.x[sub.n_id]
    grads = []
    for forward in (model.encoder, lambda x_, s_: _scatter_forward(model.encoder, x_, s_)):
        model.zero_grad()
        out = forward(x, sub)
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.encoder.parameters()]))
    (a, ga), (b, gb) = grads
    assert a.shape == (seeds.numel(), 32)
    assert (a - b).abs().max().item() < 1e-5 * max(1.0, b.abs().max().item())
    for u, v in zip(ga, gb, strict=True):
        assert (u - v).abs().max().item() <= 1e-4 * v.abs().max().item() + 1e-7


def test_sampler_respects_fanouts_and_graph(tiny_graph) -> None:
    indptr, indices = tiny_graph.indptr, tiny_graph.indices
    n = tiny_graph.num_nodes
    adjacency = set((torch.repeat_interleave(torch.arange(n), indptr[1:] - indptr[:-1]) * n
                     + indices).tolist())
    fanouts = [4, 3, 2]
    sampler = NeighborSampler(indptr, indices, fanouts)
    gen = torch.Generator().manual_seed(0)
    deg = indptr[1:] - indptr[:-1]
    seeds = torch.unique(torch.cat([torch.randperm(n, generator=gen)[:64], deg.topk(8).indices]))
    sub = sampler(seeds, torch.Generator().manual_seed(5))
    assert torch.equal(sub.n_id[: seeds.numel()], seeds)
    assert sub.n_id.unique().numel() == sub.n_id.numel()  # each node has one local id
    assert sub.cum_nodes[0] == seeds.numel() and len(sub.cum_nodes) == len(fanouts) + 1
    assert sub.cum_edges[0] == 0 and sub.cum_edges[-1] == sub.edge_index.shape[1]
    src_g, dst_g = sub.n_id[sub.edge_index[0]], sub.n_id[sub.edge_index[1]]
    # Every sampled edge is an edge of the graph.
    assert set((dst_g * n + src_g).tolist()) <= adjacency
    for hop, fanout in enumerate(fanouts, start=1):
        lo, hi = sub.cum_edges[hop - 1], sub.cum_edges[hop]
        frontier_lo, frontier_hi = sub.cum_nodes[hop - 2] if hop > 1 else 0, sub.cum_nodes[hop - 1]
        targets = sub.edge_index[1, lo:hi]
        # Hop h expands exactly the nodes first reached at hop h-1 ...
        assert targets.min() >= frontier_lo and targets.max() < frontier_hi
        assert sub.edge_index[0, lo:hi].max() < sub.cum_nodes[hop]
        counts = torch.bincount(targets - frontier_lo, minlength=frontier_hi - frontier_lo)
        # ... with min(degree, fanout) sampled edges each.
        frontier_deg = deg[sub.n_id[frontier_lo:frontier_hi]]
        assert torch.equal(counts, frontier_deg.clamp(max=fanout))
    # Nodes of degree <= fanout keep all their neighbours, each once.
    small = (deg[seeds] <= fanouts[0]).nonzero().flatten()
    assert small.numel() > 0
    first = sub.edge_index[:, : sub.cum_edges[1]]
    for i in small.tolist():
        got = sorted(sub.n_id[first[0, first[1] == i]].tolist())
        v = seeds[i].item()
        assert got == sorted(indices[indptr[v]: indptr[v + 1]].tolist())
    # Sampling is reproducible given the generator.
    again = sampler(seeds, torch.Generator().manual_seed(5))
    assert torch.equal(again.n_id, sub.n_id) and torch.equal(again.edge_index, sub.edge_index)


def test_drop_edges_removes_exactly_the_batch_pairs(tiny_graph) -> None:
    """Training hides a batch's positive edges from its own message passing (both directions)."""
    from trainer.sampler import drop_edges

    n = tiny_graph.num_nodes
    train = tiny_graph.split["train"]
    src, dst = train["source_node"][:50], train["target_node"][:50]
    seeds = torch.unique(torch.cat([src, dst]))
    sampler = NeighborSampler(tiny_graph.indptr, tiny_graph.indices, [-1, -1])
    sub = sampler(seeds)
    out = drop_edges(sub, src, dst, n)

    def keys(s):
        return s.n_id[s.edge_index[0]] * n + s.n_id[s.edge_index[1]]

    pairs = set(torch.cat([src * n + dst, dst * n + src]).tolist())
    before, after = keys(sub).tolist(), keys(out).tolist()
    assert not pairs & set(after)
    # Only batch pairs go; in full neighbourhoods each pair was there (seeds are expanded).
    assert [k for k in before if k not in pairs] == after
    assert len(before) - len(after) >= 2 * src.numel()
    assert torch.equal(out.n_id, sub.n_id) and out.cum_nodes == sub.cum_nodes
    # Hop grouping survives: cum_edges counts the kept edges of each hop.
    assert out.cum_edges[0] == 0 and out.cum_edges[-1] == out.edge_index.shape[1]
    for hop in (1, 2):
        kept = [k for k in before[sub.cum_edges[hop - 1]: sub.cum_edges[hop]] if k not in pairs]
        assert after[out.cum_edges[hop - 1]: out.cum_edges[hop]] == kept


# ---------------------------------------------------------------- distributed evaluation

def test_distributed_evaluate_equals_single_process(two_rank_probe: Path, tiny_root: Path,
                                                    tiny_graph) -> None:
    """2 gloo ranks (conftest.TWO_RANK_PROBE) evaluate the same seeded model as one process."""
    cfg = compose(tiny_overrides(tiny_root, two_rank_probe / "eval", *EVAL_OVERRIDES))
    torch.manual_seed(EVAL_MODEL_SEED)
    model = LinkModel(128, cfg.model)  # in training mode, as the ranks' model
    single = {
        "valid": evaluate(model, tiny_graph, "valid", None),
        "test33": evaluate(model, tiny_graph, "test", 33),
        "h": embed_all(model, tiny_graph, 65_536),
    }
    assert model.training  # evaluate restores the mode
    assert single["valid"]["sources"] == tiny_graph.split["valid"]["source_node"].numel()
    assert single["test33"]["sources"] == 33
    assert single["valid"]["mrr"] > 0  # a real number, not a NaN
    for rank in range(2):
        got = torch.load(two_rank_probe / f"eval_rank{rank}.pt", weights_only=True)
        assert got["training"] is True
        assert (got["h"] - single["h"]).abs().max().item() < 1e-5
        for split in ("valid", "test33"):
            for key, value in single[split].items():
                assert got[split][key] == pytest.approx(value, abs=1e-6), (rank, split, key)
                assert math.isfinite(got[split][key])
