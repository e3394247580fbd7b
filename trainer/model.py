"""GraphSAGE encoder (PyG ``SAGEConv``) and link predictors (dot product or MLP)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import SAGEConv

from trainer.sampler import Subgraph

# torch marks sparse CSR tensors "beta"; the matmul used here is stable and tested against the
# gather/scatter path (tests/test_trainer_metrics.py).
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
SPARSE_AGGRS = ("mean", "add", "sum")


def csr_adjacency(src: torch.Tensor, crow: torch.Tensor, n_dst: int, n_src: int) -> torch.Tensor:
    """The (n_dst x n_src) adjacency as a sparse CSR tensor: SAGEConv then aggregates with one
    sparse matmul, about 4x faster on a CPU than gather + scatter, forward and backward."""
    values = torch.ones(src.numel(), device=src.device)
    return torch.sparse_csr_tensor(crow, src, values, size=(n_dst, n_src))


def crow_from_sorted_targets(dst: torch.Tensor, n_dst: int) -> torch.Tensor:
    crow = torch.zeros(n_dst + 1, dtype=torch.long, device=dst.device)
    crow[1:] = torch.bincount(dst, minlength=n_dst).cumsum(0)
    return crow


class SAGE(nn.Module):
    """``num_layers`` SAGEConv layers; ReLU and dropout between them, none after the last."""

    def __init__(self, in_dim: int, hidden: int, num_layers: int, aggr: str, dropout: float):
        super().__init__()
        dims = [in_dim] + [hidden] * num_layers
        self.convs = nn.ModuleList(SAGEConv(dims[i], dims[i + 1], aggr=aggr) for i in range(num_layers))
        self.dropout = dropout

    def _activate(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        if layer == len(self.convs) - 1:
            return h
        return F.dropout(F.relu(h), p=self.dropout, training=self.training)

    def forward(self, x: torch.Tensor, sub: Subgraph) -> torch.Tensor:
        """Embeddings of the seeds of ``sub``; ``x`` holds the features of all its nodes.

        Layer i reads the nodes within L-i hops and writes those within L-i-1 hops, using only
        the edges sampled up to hop L-i: the last layer computes the seeds alone.
        """
        num_layers = len(self.convs)
        for i, conv in enumerate(self.convs):
            n_src, n_dst = sub.cum_nodes[num_layers - i], sub.cum_nodes[num_layers - i - 1]
            edge_index = sub.edge_index[:, : sub.cum_edges[num_layers - i]]
            if conv.aggr in SPARSE_AGGRS:  # edges are sorted by target (see trainer/sampler.py)
                crow = crow_from_sorted_targets(edge_index[1], n_dst)
                edge_index = csr_adjacency(edge_index[0], crow, n_dst, n_src)
            x = x[:n_src]
            x = self._activate(conv((x, x[:n_dst]), edge_index), i)
        return x

    @torch.no_grad()
    def layer(self, i: int, h: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
              start: int, end: int) -> torch.Tensor:
        """Layer ``i`` applied with full neighbourhoods to nodes ``start..end`` (inference)."""
        lo, hi = int(indptr[start]), int(indptr[end])
        conv = self.convs[i]
        if conv.aggr in SPARSE_AGGRS:
            crow = (indptr[start : end + 1] - lo).to(h.device)
            adjacency = csr_adjacency(indices[lo:hi].to(h.device), crow, end - start, h.shape[0])
        else:
            deg = indptr[start + 1 : end + 1] - indptr[start:end]
            dst = torch.repeat_interleave(torch.arange(end - start), deg)
            adjacency = torch.stack([indices[lo:hi], dst]).to(h.device)
        return self._activate(conv((h, h[start:end]), adjacency), i)


class MLPPredictor(nn.Module):
    """The OGB reference predictor: an MLP on the Hadamard product of the two embeddings."""

    def __init__(self, hidden: int, num_layers: int = 3, dropout: float = 0.0):
        super().__init__()
        self.lins = nn.ModuleList(nn.Linear(hidden, hidden if i < num_layers - 1 else 1) for i in range(num_layers))
        self.dropout = dropout

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h = a * b
        for lin in self.lins[:-1]:
            h = F.dropout(F.relu(lin(h)), p=self.dropout, training=self.training)
        return self.lins[-1](h).squeeze(-1)


def dot_predictor(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The study's predictor: the dot product of the two embeddings (a logit)."""
    return (a * b).sum(-1)


class LinkModel(nn.Module):
    """Encoder + predictor in one module, so DDP synchronises both in one backward pass."""

    def __init__(self, in_dim: int, model_cfg):
        super().__init__()
        self.encoder = SAGE(in_dim, model_cfg.hidden, model_cfg.num_layers, model_cfg.aggr, model_cfg.dropout)
        self.predictor = (
            MLPPredictor(model_cfg.hidden, dropout=model_cfg.dropout)
            if model_cfg.predictor == "mlp"
            else None
        )

    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return dot_predictor(a, b) if self.predictor is None else self.predictor(a, b)

    def forward(self, x: torch.Tensor, sub: Subgraph, src: torch.Tensor, dst: torch.Tensor,
                neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of positive edges (src, dst) and negative edges (src, neg); ids are seed-local."""
        h = self.encoder(x, sub)
        return self.score(h[src], h[dst]), self.score(h[src], h[neg])
