"""Per-hop trimming (trainer/model.py) gives the stock full-layer outputs with less work.

PyG's stock pipeline without pyg-lib (benchmarks/stock.py, the reference of issue 7's
benchmarks) runs every SAGEConv layer on every node of the sampled subgraph; our model computes
layer i only for the nodes within L-i-1 hops of the seeds. On the same sampled subgraph with
the same weights the seed scores must be equal, while ours computes fewer node-rows.

Needs neither torch-sparse nor torch-scatter (CI has neither): the stock *model* is plain PyG
SAGEConv over an edge_index; only the stock *loader* needs the optional extra.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from benchmarks.stock import (
    INSTALL_HINT,
    LayerRows,
    StockLinkModel,
    drop_supervision_edges,
    require_stock,
)
from trainer.config import compose
from trainer.model import LinkModel
from trainer.sampler import NeighborSampler, drop_edges

BATCH = 64


def _batch(graph, seed: int = 3):
    """Positive edges, one random negative target each, seeds and seed-local ids (as
    Trainer.train_step builds them)."""
    gen = torch.Generator().manual_seed(seed)
    train = graph.split["train"]
    ids = torch.randperm(graph.num_train_edges, generator=gen)[:BATCH]
    src, dst = train["source_node"][ids], train["target_node"][ids]
    neg = torch.randint(0, graph.num_nodes, (BATCH,), generator=gen)
    nodes, inverse = torch.unique(torch.cat([src, dst, neg]), return_inverse=True)
    return src, dst, nodes, inverse[:BATCH], inverse[BATCH : 2 * BATCH], inverse[2 * BATCH :]


def _models(graph, overrides: list[str], seed: int = 0):
    cfg = compose(["dataset=tiny", "model.hidden=64", *overrides])
    torch.manual_seed(seed)
    ours = LinkModel(graph.x.shape[1], cfg.model).eval()
    stock = StockLinkModel(graph.x.shape[1], cfg.model).eval()
    stock.load_state_dict(ours.state_dict())  # strict: the parameter names match
    return cfg, ours, stock


@pytest.mark.parametrize("overrides", [[], ["model.predictor=mlp"], ["model.aggr=max"],
                                       ["model.fanouts=[-1,-1]"]],
                         ids=["mean-dot", "mean-mlp", "max-dot", "all-neighbours"])
def test_trimmed_equals_full_layer_forward(tiny_graph, overrides):
    graph = tiny_graph
    cfg, ours, stock = _models(graph, overrides)
    src, dst, nodes, s, d, n = _batch(graph)
    sub = NeighborSampler(graph.indptr, graph.indices, cfg.model.fanouts)(
        nodes, torch.Generator().manual_seed(5))
    sub = drop_edges(sub, src, dst, graph.num_nodes)  # as train.exclude_target_edges does
    x = graph.x[sub.n_id]
    num_layers = cfg.model.num_layers
    assert len(sub.cum_nodes) == num_layers + 1 and sub.cum_nodes[-1] > 2 * sub.num_seeds

    with torch.no_grad():
        with LayerRows(ours.encoder) as ours_rows:
            pos, neg = ours(x, sub, s, d, n)
        with LayerRows(stock.encoder) as stock_rows:
            stock_pos, stock_neg = stock(x, sub.edge_index, s, d, n)
        h_ours = ours.encoder(x, sub)
        h_stock = stock.encoder(x, sub.edge_index)

    # Same outputs for the seeds (the only rows the loss reads).
    assert h_ours.shape[0] == sub.num_seeds
    torch.testing.assert_close(h_ours, h_stock[: sub.num_seeds], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pos, stock_pos, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(neg, stock_neg, rtol=1e-5, atol=1e-5)
    assert pos.std() > 0 and neg.std() > 0  # not a degenerate (constant) comparison

    # Less work, counted on the matmuls that use each layer's weights: layer i of ours
    # transforms the nodes within L-i-1 hops of the seeds, stock every sampled node.
    n_all = sub.cum_nodes[-1]
    assert stock_rows.rows == {i: n_all for i in range(num_layers)}
    assert ours_rows.rows == {i: sub.cum_nodes[num_layers - 1 - i] for i in range(num_layers)}
    assert ours_rows.total < stock_rows.total  # (tiny: 2,000 nodes; medium: ~7x fewer rows)


def test_the_comparison_can_fail(tiny_graph):
    """Different weights, or a subgraph missing the last hop, change the seed scores."""
    graph = tiny_graph
    cfg, ours, stock = _models(graph, [])
    src, dst, nodes, s, d, n = _batch(graph)
    sub = NeighborSampler(graph.indptr, graph.indices, cfg.model.fanouts)(
        nodes, torch.Generator().manual_seed(5))
    x = graph.x[sub.n_id]
    with torch.no_grad():
        pos, _ = ours(x, sub, s, d, n)
        truncated = sub.edge_index[:, : sub.cum_edges[-2]]  # without hop L's edges
        pos_short, _ = stock(x, truncated, s, d, n)
        stock.encoder.convs[0].lin_l.weight.mul_(1.01)  # 1% off in one layer
        pos_perturbed, _ = stock(x, sub.edge_index, s, d, n)
        _, _, other = _models(graph, [], seed=1)
        pos_other, _ = other(x, sub.edge_index, s, d, n)
    for wrong in (pos_short, pos_perturbed, pos_other):
        assert not torch.allclose(pos, wrong, rtol=1e-5, atol=1e-5)


def test_stock_exclusion_matches_ours(tiny_graph):
    """The reference drops a batch's positive edges from message passing exactly as ours."""
    graph = tiny_graph
    src, dst, nodes, s, d, _ = _batch(graph)
    sub = NeighborSampler(graph.indptr, graph.indices, [-1, -1])(nodes)
    ours = drop_edges(sub, src, dst, graph.num_nodes)
    assert ours.edge_index.shape[1] < sub.edge_index.shape[1]  # some edges were dropped
    batch = SimpleNamespace(n_id=sub.n_id, edge_index=sub.edge_index, src_index=s,
                            dst_pos_index=d)
    assert torch.equal(drop_supervision_edges(batch), ours.edge_index)


def test_missing_extra_fails_with_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_sparse", None)  # import raises ImportError
    with pytest.raises(SystemExit) as exc:
        require_stock()
    message = str(exc.value)
    assert message.startswith("error:") and "\n" not in message and INSTALL_HINT in message
