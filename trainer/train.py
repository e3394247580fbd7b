"""The training program of one worker: DDP GraphSAGE link prediction with per-epoch evaluation.

One method per phase (``init_distributed``, ``train_step``, ``train_epoch``, ``evaluate``,
``save_checkpoint``, ``close``); ``run`` strings them together. Rank 0 writes TensorBoard events,
checkpoints and ``summary.json`` under ``run_dir``; every rank trains on its own shard of the
training edges, reshuffled each epoch from the shared seed.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.tensorboard import SummaryWriter

import rundir
from rundir import CheckpointInfo, atomic_write_bytes, atomic_write_json
from trainer.data.dataset import Graph, baseline_summary, load_graph
from trainer.evaluate import evaluate
from trainer.model import LinkModel
from trainer.sampler import NeighborSampler, drop_edges


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be loaded; the message names the file and the fix."""


@dataclass
class Batch:
    """Positive edges (src -> dst) and ``train.num_negatives`` sampled negative targets per
    positive (``neg``, grouped by positive)."""

    src: torch.Tensor
    dst: torch.Tensor
    neg: torch.Tensor


@dataclass
class History:
    """Per-epoch figures, carried across restarts inside the checkpoint."""

    epochs: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Best:
    """The epoch with the highest validation MRR so far and the model weights after it (the
    OGB leaderboard reports test MRR at the best validation epoch); kept in the checkpoint."""

    epoch: int = 0
    val_mrr: float = float("-inf")
    val_mrr_se: float = float("nan")
    state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, figures: dict[str, float], model: torch.nn.Module) -> None:
        if figures["val/mrr"] > self.val_mrr:
            self.epoch, self.val_mrr = epoch, figures["val/mrr"]
            self.val_mrr_se = figures.get("val/mrr_se", float("nan"))
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "val_mrr": self.val_mrr, "val_mrr_se": self.val_mrr_se,
                "model": self.state}

    @classmethod
    def from_dict(cls, d: dict | None) -> Best:
        if not d:
            return cls()
        return cls(int(d["epoch"]), float(d["val_mrr"]), float(d["val_mrr_se"]), d["model"])


def mix_seed(*values: int) -> int:
    """A deterministic 63-bit seed from several integers (seed, epoch, rank, ...)."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (v & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def epoch_edges(num_edges: int, batch_size: int, world: int, steps_cap: int | None) -> int:
    """Training edges each rank takes per epoch: an equal share of the epoch's edges.

    The epoch is the same for every world size, as DDP with a distributed sampler has it: a
    full pass over the edges, or with ``steps_cap`` the first ``steps_cap * batch_size`` of the
    shuffle (the cap counts one worker's steps: 10 steps of 512 are 5,120 edges an epoch, 5
    steps each for 2 workers, 3 for 4). More workers therefore make an epoch shorter (strong
    scaling), and every row of a sweep trains on the same number of edges per epoch.
    """
    total = num_edges if steps_cap is None else min(num_edges, steps_cap * batch_size)
    return total // world


def steps_per_epoch(num_edges: int, batch_size: int, world: int, steps_cap: int | None) -> int:
    """Steps every rank takes per epoch: its share of the epoch's edges in batches (the last
    one short when the share does not divide by ``batch_size``)."""
    return -(-epoch_edges(num_edges, batch_size, world, steps_cap) // batch_size)


def epoch_batches(num_edges: int, batch_size: int, epoch: int, seed: int, rank: int, world: int,
                  steps_cap: int | None) -> list[torch.Tensor]:
    """This rank's edge ids for each step of ``epoch``: a shared shuffle, dealt round-robin.

    Every rank gets the same number of edges and steps (DDP needs that), so up to ``world - 1``
    edges an epoch are skipped when the count does not divide evenly.
    """
    perm = torch.randperm(num_edges, generator=torch.Generator().manual_seed(mix_seed(seed, epoch)))
    share = epoch_edges(num_edges, batch_size, world, steps_cap)
    steps = steps_per_epoch(num_edges, batch_size, world, steps_cap)
    # A copy of only what this rank uses, so that the whole permutation (8 bytes an edge: 245 MB
    # on ogbl-citation2) is not held by every worker for the whole epoch.
    shard = perm[rank::world][:share].clone()
    del perm
    return [shard[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


@dataclass
class EpochSteps:
    """One epoch's batches for one rank: edge ids chosen up front, each batch's negatives drawn
    from ``gen`` as it is reached (the sampler draws from ``gen`` between them)."""

    ids: list[torch.Tensor]
    src: torch.Tensor
    dst: torch.Tensor
    num_nodes: int
    gen: torch.Generator
    num_negatives: int = 1

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[Batch]:
        for ids in self.ids:
            neg = torch.randint(0, self.num_nodes, (ids.numel() * self.num_negatives,),
                                generator=self.gen)
            yield Batch(self.src[ids], self.dst[ids], neg)


class StepProfile:
    """The profiling hook of :meth:`Trainer.train_step` (``Trainer.profile``; None in training).

    While set, every step adds the seconds of each of its phases to ``seconds`` and leaves its
    subgraph in ``subgraph`` (benchmarks/efficiency.py reads both).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.subgraph = None
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """The phase ``phase`` ended now."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


def _no_mark(phase: str) -> None:
    pass


class Trainer:
    def __init__(self, cfg):
        self.dataset_cfg, self.model_cfg, self.train_cfg = cfg.dataset, cfg.model, cfg.train
        self.epochs, self.seed = int(cfg.epochs), int(cfg.seed)
        self.num_negatives = int(cfg.train.num_negatives)
        self.data_root = cfg.data_root
        self.run_dir = Path(cfg.run_dir)
        self.rank, self.world, self.local_rank = 0, 1, 0
        self.device = torch.device("cpu")
        self.graph: Graph | None = None
        self.writer: SummaryWriter | None = None
        self.step_writer: SummaryWriter | None = None
        self.start_epoch = 1
        self.history = History()
        self.best = Best()
        self.baselines: dict[str, dict[str, float]] | None = None
        self.first_step_time: float | None = None
        self.time_start = time.time()
        self.profile: StepProfile | None = None  # benchmarks set it to time train_step's phases
        self.load_seconds: float | None = None
        self.test_eval_seconds: float | None = None

    # ---------------------------------------------------------------- phases
    def init_distributed(self) -> None:
        """Join the process group when torchrun or the training operator started us."""
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        if self.world > 1:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            timeout = timedelta(seconds=int(self.train_cfg.dist_timeout_s))
            dist.init_process_group(
                backend, store=self._store(timeout), rank=self.rank, world_size=self.world,
                timeout=timeout,
            )

    def _store(self, timeout: timedelta) -> dist.Store:
        """The rendezvous store, with keys private to this attempt of the job.

        After torchrun restarts the worker group, the new workers reach the same agent store as
        the old ones; without a per-attempt prefix gloo reads the old workers' addresses and
        fails with "connectFullMesh ... Connection refused" (seen with torch 2.13). Without
        torchrun (the training operator's pods restart one by one, and number nothing) the
        Master's generations keep attempts apart instead (trainer/rendezvous.py).
        """
        if "TORCHELASTIC_RESTART_COUNT" not in os.environ:
            from trainer.rendezvous import generation_store

            store, _ = generation_store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                        self.rank, self.world, timeout)
            return store
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), self.world,
            is_master=self.rank == 0 and not agent_store, timeout=timeout,
        )
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return dist.PrefixStore(f"gnn-bench/attempt-{attempt}", store)

    def setup(self) -> None:
        threads = self.train_cfg.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads:
            torch.set_num_threads(threads)
        # Data first: a bad dataset fails on every rank before anyone waits in a rendezvous.
        started = time.perf_counter()
        self.graph = load_graph(self.dataset_cfg, self.data_root)
        self.load_seconds = time.perf_counter() - started
        self.init_distributed()
        if self.rank == 0:
            self.baselines = baseline_summary(self.dataset_cfg, self.data_root, self.graph,
                                              self.train_cfg.eval_sources,
                                              self.train_cfg.test_sources)
        torch.manual_seed(self.seed)
        model = LinkModel(self.graph.x.shape[1], self.model_cfg).to(self.device)
        self.model = model
        self.ddp = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None) if self.world > 1 else model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.train_cfg.lr)
        self.sampler = NeighborSampler(self.graph.indptr, self.graph.indices, self.model_cfg.fanouts)
        self.load_checkpoint()
        if self.rank == 0:
            # purge_step drops events a previous attempt logged past the checkpoint we resume.
            # Epoch scalars and step scalars count different things, so each has its writer.
            self.writer = SummaryWriter(str(self.run_dir / rundir.EVENTS), purge_step=self.start_epoch)
            self.step_writer = SummaryWriter(
                str(self.run_dir / rundir.STEP_EVENTS),
                purge_step=(self.start_epoch - 1) * steps_per_epoch(
                    self.graph.num_train_edges, self.train_cfg.batch_size, self.world,
                    self.train_cfg.steps_per_epoch,
                ),
            )

    def train_step(self, batch: Batch, generator: torch.Generator | None = None) -> float:
        """One optimiser step on ``batch``; returns its loss (mean over its edges).

        With ``self.profile`` set, the step's phases are timed into it (see StepProfile).
        """
        profile = self.profile
        if profile is not None:
            profile.start()
        clock = profile.mark if profile is not None else _no_mark
        nodes, inverse = torch.unique(torch.cat([batch.src, batch.dst, batch.neg]), return_inverse=True)
        b = batch.src.numel()
        clock("seeds")
        sub = self.sampler(nodes, generator)
        clock("sample")
        if self.train_cfg.exclude_target_edges:
            sub = drop_edges(sub, batch.src, batch.dst, self.graph.num_nodes)
        clock("drop_edges")
        x = self.graph.x[sub.n_id].to(self.device, non_blocking=True)
        sub.edge_index = sub.edge_index.to(self.device)
        inverse = inverse.to(self.device)
        clock("gather")
        in_batch = self.train_cfg.loss == "softmax"
        pos, neg = self.ddp(x, sub, inverse[:b], inverse[b : 2 * b], inverse[2 * b :], in_batch)
        # The OGB example's loss: BCE on the positives and on the negatives. It also keeps the
        # scores calibrated around 0, which the study's accuracy (threshold 0) relies on.
        loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + \
            F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
        if in_batch:  # plus: rank each positive first among all the batch's other candidates
            logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
            loss = loss + F.cross_entropy(logits, torch.zeros(b, dtype=torch.long,
                                                              device=logits.device))
        clock("forward")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock("backward")  # includes DDP's gradient all-reduce when world > 1
        self.optimizer.step()
        value = loss.item()
        clock("optimizer")
        if profile is not None:
            profile.subgraph = sub
        return value

    def epoch_steps(self, epoch: int, steps_cap: int | None | str = "config") -> EpochSteps:
        """This rank's steps of ``epoch`` (``train.steps_per_epoch`` of them at most, unless
        ``steps_cap`` says otherwise), seeded per (seed, epoch, rank) so that a resumed run
        draws what an uninterrupted one draws; benchmarks step through them as training does."""
        train = self.graph.split["train"]
        cap = self.train_cfg.steps_per_epoch if steps_cap == "config" else steps_cap
        ids = epoch_batches(train["source_node"].numel(), self.train_cfg.batch_size, epoch,
                            self.seed, self.rank, self.world, cap)
        gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, self.rank, 1))
        torch.manual_seed(mix_seed(self.seed, epoch, self.rank, 2))  # dropout: exact on resume
        return EpochSteps(ids, train["source_node"], train["target_node"], self.graph.num_nodes,
                          gen, self.train_cfg.num_negatives)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        steps = self.epoch_steps(epoch)
        self.model.train()
        loss_sum, edges = 0.0, 0
        started = time.perf_counter()
        for step, batch in enumerate(steps):
            loss = self.train_step(batch, steps.gen)
            if self.first_step_time is None:
                self.first_step_time = time.time()
            loss_sum += loss * batch.src.numel()
            edges += batch.src.numel()
            global_step = (epoch - 1) * len(steps) + step
            if self.step_writer and (step % self.train_cfg.log_every == 0):
                self.step_writer.add_scalar("train/loss_step", loss, global_step)
        seconds = time.perf_counter() - started
        totals = torch.tensor([loss_sum, float(edges)], dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(totals)
        return {
            "train/loss": (totals[0] / totals[1]).item(),
            "train/edges": totals[1].item(),
            "train/edges_per_s": totals[1].item() / seconds,
            "time/train_s": seconds,
            "train/steps": float(len(steps)),
        }

    def evaluate(self, split: str, max_sources: int | None) -> dict[str, float]:
        started = time.perf_counter()
        metrics = evaluate(self.model, self.graph, split, max_sources, self.train_cfg.eval_batch_nodes)
        out = {f"{split_tag(split)}/{k}": float(v) for k, v in metrics.items()}
        out["time/eval_s"] = time.perf_counter() - started
        return out

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, epoch: int) -> None:
        if self.rank != 0:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "rng": torch.get_rng_state(),
            "history": self.history.epochs,
            "best": self.best.to_dict(),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.run_dir / rundir.CHECKPOINT, buf.getvalue())
        last = self.history.epochs[-1] if self.history.epochs else {}
        CheckpointInfo(epoch, time.time(), last.get("val/mrr")).write(self.run_dir)

    def load_checkpoint(self) -> None:
        path = self.run_dir / rundir.CHECKPOINT
        if not path.exists():
            return
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            rng, epoch, history = state["rng"], int(state["epoch"]), list(state["history"])
            best = Best.from_dict(state.get("best"))
        except Exception as exc:  # torch raises several types for a damaged file
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CheckpointError(
                f"checkpoint {path} cannot be loaded ({detail}): delete it to train from scratch"
            ) from exc
        torch.set_rng_state(rng.cpu())
        self.start_epoch = epoch + 1
        self.history.epochs = history
        self.best = best
        if self.rank == 0:
            print(f"resuming from {path} at epoch {self.start_epoch}", flush=True)

    # ---------------------------------------------------------------- the run
    def run(self) -> dict:
        self.setup()
        for epoch in range(self.start_epoch, self.epochs + 1):
            started = time.perf_counter()
            figures = self.train_epoch(epoch)
            figures.update(self.evaluate("valid", self.train_cfg.eval_sources))
            figures["time/epoch_s"] = time.perf_counter() - started
            figures["epoch"] = float(epoch)
            self.history.epochs.append(figures)
            self.best.offer(epoch, figures, self.model)
            self.log(epoch, figures)
            self.save_checkpoint(epoch)
        test = self.evaluate("test", self.train_cfg.test_sources)
        self.test_eval_seconds = test["time/eval_s"]
        self.log(self.epochs, {k: v for k, v in test.items() if k.startswith("test/")})
        best = self.test_at_best(test)
        self.log(self.epochs, best)
        summary = self.summary(test, best)
        if self.rank == 0:
            self.log_hparams(summary)
            atomic_write_json(self.run_dir / rundir.SUMMARY, summary)
            print("summary " + json.dumps({k: summary[k] for k in ("val_mrr", "val_accuracy", "test_mrr")}), flush=True)
        return summary

    def test_at_best(self, last_test: dict[str, float]) -> dict[str, float]:
        """Test figures of the weights after the best validation epoch (``best/*``); the last
        model's test figures when that was the last epoch (no second evaluation)."""
        out = {"best/epoch": float(self.best.epoch), "best/val_mrr": self.best.val_mrr,
               "best/val_mrr_se": self.best.val_mrr_se}
        if self.best.state is not None and self.best.epoch != self.epochs:
            current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self.best.state)
            test = self.evaluate("test", self.train_cfg.test_sources)
            self.model.load_state_dict(current)
            self.test_eval_seconds = (self.test_eval_seconds or 0.0) + test["time/eval_s"]
        else:
            test = last_test
        for key in ("mrr", "mrr_se", "accuracy", "hits@10"):
            out[f"best/test_{key}"] = test[f"test/{key}"]
        return out

    def log(self, step: int, figures: dict[str, float]) -> None:
        if self.rank != 0:
            return
        for tag, value in figures.items():
            if "/" in tag:
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()
        if "val/mrr" in figures:
            print(
                f"epoch {step}/{self.epochs} loss {figures['train/loss']:.4f} "
                f"val_mrr {figures['val/mrr']:.4f} ± {figures['val/mrr_se']:.4f} "
                f"val_acc {figures['val/accuracy']:.4f} "
                f"time {figures['time/epoch_s']:.2f}s edges/s {figures['train/edges_per_s']:.0f}",
                flush=True,
            )

    def log_hparams(self, summary: dict) -> None:
        """The trial's settings and final metrics in TensorBoard's HParams format, so that
        ``tensorboard --logdir results/<sweep>`` compares the trials side by side."""
        hparams = {
            "workers": self.world,
            "epochs": self.epochs,
            "seed": self.seed,
            "dataset": str(self.dataset_cfg.name),
            "model": str(self.model_cfg.name),
            "predictor": str(self.model_cfg.predictor),
            "batch_size": int(self.train_cfg.batch_size),
            "lr": float(self.train_cfg.lr),
            "loss": str(self.train_cfg.loss),
            "num_negatives": int(self.train_cfg.num_negatives),
            "steps_per_epoch": int(self.train_cfg.steps_per_epoch or 0),
            "fanouts": ",".join(str(f) for f in self.model_cfg.fanouts),
        }
        metrics = {
            f"hparam/{k}": float(summary[k])
            for k in ("val_mrr", "val_accuracy", "test_mrr", "test_accuracy", "best_val_mrr",
                      "test_mrr_at_best")
            if summary.get(k) is not None
        }
        metrics["hparam/train_time_s"] = float(sum(summary["epoch_times_s"]))
        self.writer.add_hparams(hparams, metrics, run_name=".")

    def summary(self, test: dict[str, float], best: dict[str, float]) -> dict:
        last = self.history.epochs[-1] if self.history.epochs else {}
        return {
            "epochs": self.epochs,
            "world_size": self.world,
            # torchrun's elastic agent counts restarts of the worker group (local backend).
            "restart_count": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
            "resumed_from_epoch": self.start_epoch if self.start_epoch > 1 else None,
            "val_mrr": last.get("val/mrr"),
            "val_mrr_se": last.get("val/mrr_se"),
            "val_accuracy": last.get("val/accuracy"),
            "val_hits@10": last.get("val/hits@10"),
            "train_loss": last.get("train/loss"),
            "test_mrr": test.get("test/mrr"),
            "test_mrr_se": test.get("test/mrr_se"),
            "test_accuracy": test.get("test/accuracy"),
            "test_hits@10": test.get("test/hits@10"),
            # The OGB leaderboard's figures: the epoch with the best validation MRR and the
            # test MRR of the weights after it.
            "best_epoch": int(best["best/epoch"]),
            "best_val_mrr": best["best/val_mrr"],
            "best_val_mrr_se": best["best/val_mrr_se"],
            "test_mrr_at_best": best["best/test_mrr"],
            "test_mrr_at_best_se": best["best/test_mrr_se"],
            "val_mrr_curve": [e.get("val/mrr") for e in self.history.epochs],
            "val_mrr_se_curve": [e.get("val/mrr_se") for e in self.history.epochs],
            # Parameter-free methods on the same sources and negatives (trainer/data/baselines.py).
            "baselines": self.baselines,
            "epoch_times_s": [e["time/epoch_s"] for e in self.history.epochs],
            "edges_per_s": [e["train/edges_per_s"] for e in self.history.epochs],
            "train_times_s": [e.get("time/train_s") for e in self.history.epochs],
            "eval_times_s": [e.get("time/eval_s") for e in self.history.epochs],
            "test_eval_s": self.test_eval_seconds,
            "load_s": self.load_seconds,  # this attempt's dataset load (prepare + memory-map)
            "num_nodes": self.graph.num_nodes,
            "num_train_edges": self.graph.num_train_edges,
            "time_start_unix": self.time_start,
            "time_first_step_unix": self.first_step_time,
            "time_end_unix": time.time(),
            "host": socket.gethostname(),
            "threads_per_worker": torch.get_num_threads(),
        }

    def close(self, clean: bool = True) -> None:
        """Release everything; ``clean=False`` after an error skips the (blocking) barrier."""
        for writer in (self.writer, self.step_writer):
            if writer is not None:
                writer.close()
        if dist.is_available() and dist.is_initialized():
            # The barrier keeps rank 0 (which hosts the rendezvous store) alive until every
            # rank is done. See trainer/__main__.py for why the process then exits hard.
            try:
                if clean:
                    dist.barrier()
            finally:
                dist.destroy_process_group()


def split_tag(split: str) -> str:
    return "val" if split == "valid" else split
