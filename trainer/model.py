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


class _SageLayer(torch.autograd.Function):
    """One SAGEConv (sum or mean aggregation, root weight, no projection or normalisation) as a
    single autograd node: ``lin_l(aggr(x)) + lin_r(x[:n_dst])`` with the two matmuls written
    into one output, and a backward that

    - computes only the gradients that are needed (layer 0's input is the raw features),
    - writes the gradient of ``x[:n_dst]`` into the gradient of ``x`` in place (autograd would
      materialise a zero-filled copy of ``x``'s size for the slice and add it), and
    - aggregates backward through the transposed adjacency built with one stable ``argsort``
      (``torch.sparse.mm(..., reduce)``'s own backward sorts ``(row, col)`` pairs and
      materialises more).

    Forward values are those of ``SAGEConv`` with ``torch.sparse.mm(adj, x, reduce)``.
    """

    @staticmethod
    def forward(ctx, x, w_l, b_l, w_r, adj, reduce, start, end):  # noqa: D102
        agg = torch.sparse.mm(adj, x, reduce) if reduce == "mean" else torch.sparse.mm(adj, x)
        out = torch.addmm(b_l, agg, w_l.t()) if b_l is not None else agg @ w_l.t()
        out.addmm_(x[start:end], w_r.t())
        if any(ctx.needs_input_grad[:4]):
            ctx.save_for_backward(x, agg, w_l, w_r)
            ctx.adj, ctx.reduce, ctx.start, ctx.end = adj, reduce, start, end
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, agg, w_l, w_r = ctx.saved_tensors
        start, end = ctx.start, ctx.end
        need_x, need_wl, need_bl, need_wr = ctx.needs_input_grad[:4]
        grad = grad.contiguous()
        grad_x = grad_wl = grad_bl = grad_wr = None
        if need_wl:
            grad_wl = grad.t() @ agg
        if need_bl:
            grad_bl = grad.sum(0)
        if need_wr:
            grad_wr = grad.t() @ x[start:end]
        if need_x:
            grad_agg = grad @ w_l  # (n_dst, f_in)
            adj = ctx.adj
            crow, col = adj.crow_indices(), adj.col_indices()
            if ctx.reduce == "mean":
                deg = (crow[1:] - crow[:-1]).clamp_(min=1).to(grad_agg.dtype)
                grad_agg = grad_agg.div_(deg.unsqueeze(1))
            grad_x = torch.sparse.mm(_transpose(crow, col, x.shape[0]), grad_agg, "sum")
            grad_x[start:end].addmm_(grad, w_r)
        return grad_x, grad_wl, grad_bl, grad_wr, None, None, None, None


def _transpose(crow: torch.Tensor, col: torch.Tensor, n_src: int) -> torch.Tensor:
    """The (n_src x n_dst) transpose of a 0/1 CSR matrix as CSR: one stable argsort of its
    column indices (each transposed row keeps the order of its entries)."""
    n_dst = crow.numel() - 1
    row = torch.repeat_interleave(torch.arange(n_dst, device=col.device), crow.diff())
    order = torch.argsort(col, stable=True)
    crow_t = torch.zeros(n_src + 1, dtype=torch.long, device=col.device)
    crow_t[1:] = torch.bincount(col, minlength=n_src).cumsum(0)
    values = torch.ones(col.numel(), device=col.device)
    return torch.sparse_csr_tensor(crow_t, row[order], values, size=(n_src, n_dst))


def _fusable(conv: SAGEConv) -> bool:
    return (conv.aggr in SPARSE_AGGRS and conv.root_weight and not conv.project
            and not conv.normalize and getattr(conv.lin_r, "bias", None) is None)


def sage_conv(conv: SAGEConv, x: torch.Tensor, adj: torch.Tensor, start: int,
              end: int) -> torch.Tensor:
    """``conv((x, x[start:end]), adj)`` for a CSR ``adj`` ((end - start) x len(x)), fused when
    the layer allows it."""
    if not _fusable(conv):
        return conv((x, x[start:end]), adj)
    reduce = "mean" if conv.aggr == "mean" else "sum"
    return _SageLayer.apply(x, conv.lin_l.weight, conv.lin_l.bias, conv.lin_r.weight, adj,
                            reduce, start, end)


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
        h = F.relu_(h)  # in place: h is a fresh layer output nothing else holds
        if self.dropout > 0:
            h = F.dropout(h, p=self.dropout, training=self.training)
        return h

    def forward(self, x: torch.Tensor, sub: Subgraph) -> torch.Tensor:
        """Embeddings of the seeds of ``sub``; ``x`` holds the features of all its nodes.

        Layer i reads the nodes within L-i hops and writes those within L-i-1 hops, using only
        the edges sampled up to hop L-i: the last layer computes the seeds alone.
        """
        num_layers = len(self.convs)
        for i, conv in enumerate(self.convs):
            n_src, n_dst = sub.cum_nodes[num_layers - i], sub.cum_nodes[num_layers - i - 1]
            edge_index = sub.edge_index[:, : sub.cum_edges[num_layers - i]]
            if x.shape[0] != n_src:  # a no-op slice would still cost a zero-filled grad
                x = x[:n_src]
            if conv.aggr in SPARSE_AGGRS:  # edges are sorted by target (see trainer/sampler.py)
                crow = crow_from_sorted_targets(edge_index[1], n_dst)
                adjacency = csr_adjacency(edge_index[0], crow, n_dst, n_src)
                x = self._activate(sage_conv(conv, x, adjacency, 0, n_dst), i)
            else:
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
            return self._activate(sage_conv(conv, h, adjacency, start, end), i)
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
                neg: torch.Tensor, in_batch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of positive edges (src, dst) and negative edges; ids are seed-local. ``neg``
        holds k negative targets per positive, grouped by positive (src[i]'s are
        ``neg[i * k : (i + 1) * k]``).

        With ``in_batch``, every source is also scored against every other positive's target
        and every negative of the batch: the negatives are then a (b, b - 1 + b * k) matrix
        (row i: all candidates but its own target), for a sampled-softmax loss. (One forward
        for both modes, so that DDP synchronises the gradients either way.)
        """
        h = self.encoder(x, sub)
        hs = h[src]
        if in_batch:
            cand = h[torch.cat([dst, neg])]
            logits = hs @ cand.t()  # (b, b + b * k) dot products (validate: dot predictor only)
            b = src.numel()
            own = torch.eye(b, logits.shape[1], dtype=torch.bool, device=logits.device)
            return logits[own], logits[~own].view(b, -1)
        k = neg.numel() // max(src.numel(), 1)
        return self.score(hs, h[dst]), self.score(hs.repeat_interleave(k, dim=0), h[neg])
