"""The fast code paths of the trainer against the plain implementations they replace."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import SAGEConv

from trainer.model import crow_from_sorted_targets, csr_adjacency, sage_conv
from trainer.sampler import NeighborSampler, Subgraph, drop_edges


def _reference_drop_edges(sub: Subgraph, src, dst, num_nodes: int) -> Subgraph:
    """The original implementation: isin over every sampled edge."""
    g_src, g_dst = sub.n_id[sub.edge_index[0]], sub.n_id[sub.edge_index[1]]
    pairs = torch.cat([src * num_nodes + dst, dst * num_nodes + src])
    keep = ~torch.isin(g_src * num_nodes + g_dst, pairs)
    hop = torch.repeat_interleave(torch.arange(len(sub.cum_edges) - 1),
                                  torch.tensor(sub.cum_edges).diff())
    kept = torch.bincount(hop[keep], minlength=len(sub.cum_edges) - 1)
    return Subgraph(sub.n_id, sub.edge_index[:, keep], sub.cum_nodes,
                    [0] + kept.cumsum(0).tolist())


def test_bitmap_unique_equals_torch_unique() -> None:
    gen = torch.Generator().manual_seed(0)
    sampler = NeighborSampler(torch.zeros(1001, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                              [1])
    for size in (0, 1, 50, 5000):
        ids = torch.randint(0, 1000, (size,), generator=gen)
        assert torch.equal(sampler._unique(ids), torch.unique(ids))
        assert not sampler._seen.any()  # the scratch bitmap is clean again


@pytest.mark.parametrize("endpoints", ["seeds", "any-nodes"])
def test_drop_edges_equals_reference(tiny_graph, endpoints: str) -> None:
    n = tiny_graph.num_nodes
    train = tiny_graph.split["train"]
    src, dst = train["source_node"][:60], train["target_node"][:60]
    seeds = torch.unique(torch.cat([src, dst]))
    if endpoints == "any-nodes":  # pairs between nodes that are not seeds: dropped all the same
        seeds = seeds[::3]
    sampler = NeighborSampler(tiny_graph.indptr, tiny_graph.indices, [8, 4, 2])
    sub = sampler(seeds, torch.Generator().manual_seed(2))
    got, want = drop_edges(sub, src, dst, n), _reference_drop_edges(sub, src, dst, n)
    assert torch.equal(got.edge_index, want.edge_index)
    assert got.cum_edges == want.cum_edges and got.cum_nodes == sub.cum_nodes
    assert want.edge_index.shape[1] < sub.edge_index.shape[1]  # something was dropped
    none = drop_edges(sub, src[:0], dst[:0], n)
    assert torch.equal(none.edge_index, sub.edge_index) and none.cum_edges == sub.cum_edges


@pytest.mark.parametrize("aggr", ["mean", "add"])
@pytest.mark.parametrize("start", [0, 7])
def test_fused_sage_layer_equals_sageconv(aggr: str, start: int) -> None:
    """Forward and every gradient (input included) of the fused layer equal SAGEConv's."""
    gen = torch.Generator().manual_seed(1)
    n_src, n_dst, e = 60, 20, 200
    dst = torch.sort(torch.randint(0, n_dst, (e,), generator=gen)).values
    src = torch.randint(0, n_src, (e,), generator=gen)
    dst[:3] = 0  # a repeated neighbour and rows without any
    src[:3] = 5
    torch.manual_seed(0)
    conv = SAGEConv(16, 8, aggr=aggr)
    results = []
    for fused in (True, False):
        x = torch.randn(n_src, 16, generator=torch.Generator().manual_seed(3), requires_grad=True)
        conv.zero_grad()
        if fused:
            adj = csr_adjacency(src, crow_from_sorted_targets(dst, n_dst), n_dst, n_src)
            out = sage_conv(conv, x, adj, start, start + n_dst)
        else:
            out = conv((x, x[start : start + n_dst]), torch.stack([src, dst]))
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        results.append((out.detach(), x.grad.clone(), [p.grad.clone() for p in conv.parameters()]))
    (a, ga, pa), (b, gb, pb) = results
    assert (a - b).abs().max().item() < 1e-5
    assert (ga - gb).abs().max().item() < 1e-5
    for u, v in zip(pa, pb, strict=True):
        assert (u - v).abs().max().item() < 1e-5
