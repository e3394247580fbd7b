"""PyG's stock link-prediction pipeline: the reference of benchmarks 1 and 2 (issue 7).

What "stock" means here: PyG's ``LinkNeighborLoader`` (negative sampling ``triplet``: one
uniformly random negative destination per positive edge, as ``trainer/train.py`` draws them)
feeding plain PyG ``SAGEConv`` layers that run on *every* node of the sampled subgraph at every
layer, then the trainer's own predictor and loss (BCE on the positive and the negative logits,
Adam). Without pyg-lib (no wheels for this torch) the loader samples with torch-sparse and
returns no per-hop node/edge counts, so the stock model cannot trim layers the way
``trainer/model.py`` does; it computes each layer for nodes whose outputs no seed ever reads.
The seed outputs are the same (``tests/test_stock_equivalence.py`` checks it).

The model half (``StockLinkModel``) needs only torch and PyG; the loader needs the optional
extra ``stock`` (torch-scatter, torch-sparse), imported lazily by :func:`require_stock` so that
importing this module never needs them (the test imports it in CI, where they are absent).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric.nn import SAGEConv

from trainer.model import MLPPredictor, dot_predictor

INSTALL_HINT = "bash benchmarks/install_stock.sh"


def require_stock() -> None:
    """Import the optional extra or exit with one line that says how to install it."""
    try:
        import torch_scatter  # noqa: F401
        import torch_sparse  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: a wheel built for another torch
        raise SystemExit(
            f"error: PyG's stock pipeline needs torch-scatter and torch-sparse ({exc}); "
            f"install them with `{INSTALL_HINT}` (the optional extra 'stock')"
        ) from None
    import torch_geometric.typing as pyg_typing

    if not pyg_typing.WITH_TORCH_SPARSE:
        raise SystemExit("error: torch-sparse is installed but PyG cannot load it "
                         f"(built for another torch?); reinstall with `{INSTALL_HINT}`")


class StockSAGE(nn.Module):
    """``num_layers`` SAGEConv layers, each applied to all nodes of the sampled subgraph.

    Parameter names match ``trainer.model.SAGE`` (``convs.<i>.lin_l`` ...), so weights move
    between the two with ``load_state_dict``.
    """

    def __init__(self, in_dim: int, hidden: int, num_layers: int, aggr: str, dropout: float):
        super().__init__()
        dims = [in_dim] + [hidden] * num_layers
        self.convs = nn.ModuleList(SAGEConv(dims[i], dims[i + 1], aggr=aggr)
                                   for i in range(num_layers))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = F.dropout(F.relu(x), p=self.dropout, training=self.training)
        return x


class StockLinkModel(nn.Module):
    """Stock encoder + the trainer's predictor; state_dict-compatible with ``LinkModel``."""

    def __init__(self, in_dim: int, model_cfg):
        super().__init__()
        self.encoder = StockSAGE(in_dim, model_cfg.hidden, model_cfg.num_layers, model_cfg.aggr,
                                 model_cfg.dropout)
        self.predictor = (MLPPredictor(model_cfg.hidden, dropout=model_cfg.dropout)
                          if model_cfg.predictor == "mlp" else None)

    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return dot_predictor(a, b) if self.predictor is None else self.predictor(a, b)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, src: torch.Tensor,
                dst: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x, edge_index)
        return self.score(h[src], h[dst]), self.score(h[src], h[neg])


def loss_fn(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """The trainer's loss: BCE with logits, positives against 1, negatives against 0."""
    return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + \
        F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))


def graph_data(graph):
    """The training graph as a PyG ``Data`` (undirected: both directions, as our CSR holds)."""
    from torch_geometric.data import Data

    deg = graph.indptr.diff()
    row = torch.repeat_interleave(torch.arange(graph.num_nodes), deg)
    # row 0 = source (neighbour), row 1 = target: the CSR of an undirected graph is its CSC.
    edge_index = torch.stack([graph.indices.long(), row])
    return Data(x=graph.x, edge_index=edge_index, num_nodes=graph.num_nodes)


def make_loader(graph, fanouts: list[int], batch_size: int, seed: int, shuffle: bool = True):
    """``LinkNeighborLoader`` over the training edges, one random negative target per positive.

    Returns (loader, seconds to build it: the CSC conversion PyG does on construction).
    """
    require_stock()
    from torch_geometric.loader import LinkNeighborLoader
    from torch_geometric.sampler import NegativeSampling

    started = time.perf_counter()
    train = graph.split["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "without a 'pyg-lib' installation is deprecated"
        loader = LinkNeighborLoader(
            graph_data(graph),
            num_neighbors=list(fanouts),
            edge_label_index=torch.stack([train["source_node"], train["target_node"]]),
            neg_sampling=NegativeSampling("triplet", amount=1),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(seed),
            num_workers=0,
        )
    return loader, time.perf_counter() - started


def drop_supervision_edges(batch) -> torch.Tensor:
    """The batch's edge_index without edges that join one of its positive pairs (either
    direction): what ``train.exclude_target_edges`` (the trainer's default) does for ours."""
    n_id, edge_index = batch.n_id, batch.edge_index
    n = int(n_id.max()) + 1
    s, d = n_id[batch.src_index], n_id[batch.dst_pos_index]
    pairs = torch.cat([s * n + d, d * n + s])
    keep = ~torch.isin(n_id[edge_index[0]] * n + n_id[edge_index[1]], pairs)
    return edge_index[:, keep]


class LayerRows(TorchDispatchMode):
    """Counts the node-rows each SAGEConv layer of ``encoders`` transforms, whatever code runs it.

    Within the context, every dense matmul (``mm``, ``addmm``, ``addmm_``) whose right operand
    is a view of layer i's ``lin_l.weight`` adds its row count to ``rows[i]``: the nodes layer i
    computes an output for (its linear maps, the bulk of its FLOPs, run on those rows). It sees
    through fused kernels and PyG's ``Linear`` alike, so ours and stock are counted the same way.
    """

    _MATMULS = ("mm.default", "addmm.default", "addmm_.default")

    def __init__(self, *encoders: nn.Module):
        super().__init__()
        self._layer = {}
        for encoder in encoders:
            for i, conv in enumerate(encoder.convs):
                self._layer[conv.lin_l.weight.data_ptr()] = i
        self.rows: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.__name__) if hasattr(func, "__name__") else str(func)
        if name in self._MATMULS:
            a, b = (args[0], args[1]) if name == "mm.default" else (args[1], args[2])
            if (isinstance(b, torch.Tensor) and b.layout == torch.strided
                    and b.data_ptr() in self._layer):
                i = self._layer[b.data_ptr()]
                self.rows[i] = self.rows.get(i, 0) + int(a.shape[0])
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.rows.values())


class StockTrainer:
    """One worker of the stock pipeline: loader batches -> full-layer SAGE -> BCE -> Adam."""

    def __init__(self, graph, model_cfg, train_cfg, seed: int, init_state: dict[str, Any] | None):
        torch.manual_seed(seed)
        self.model = StockLinkModel(graph.x.shape[1], model_cfg)
        if init_state is not None:
            self.model.load_state_dict(init_state)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_cfg.lr)
        self.exclude = bool(train_cfg.exclude_target_edges)
        self.loader, self.loader_setup_s = make_loader(graph, model_cfg.fanouts,
                                                       train_cfg.batch_size, seed)
        self._it = iter(())

    def next_batch(self):
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def train_step(self) -> tuple[float, int]:
        """One optimiser step on the loader's next batch; returns (loss, positive edges)."""
        batch = self.next_batch()
        edge_index = drop_supervision_edges(batch) if self.exclude else batch.edge_index
        self.model.train()
        pos, neg = self.model(batch.x, edge_index, batch.src_index, batch.dst_pos_index,
                              batch.dst_neg_index)
        loss = loss_fn(pos, neg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item(), int(batch.src_index.numel())
