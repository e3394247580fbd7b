"""Real two-process (gloo, loopback) training: a full torchrun job, DDP step equivalence, resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import DDP_STEP_OVERRIDES, HANG_S, tiny_overrides, torchrun, write_script

from bench.events import read_scalars
from rundir import CHECKPOINT, CHECKPOINT_INFO
from trainer.config import compose
from trainer.evaluate import evaluate
from trainer.model import LinkModel
from trainer.train import Batch, Trainer, epoch_batches

BATCH_SIZE = 512  # train.batch_size default: positive edges per worker per step
# The study's dot-product predictor: on tiny it learns measurably within 2 epochs (val MRR
# ~0.03, accuracy ~0.7), where the MLP predictor is still at the untrained level (~0.013).
MODEL = ["model.predictor=dot"]

# Runs the real entry point (trainer.__main__.main) and, as each rank closes, saves its model
# and optimiser state to $DUMP_DIR/rank{r}.pt (rank 0's are otherwise only in the checkpoint).
DUMP_WRAPPER = """
import os, sys, torch
from pathlib import Path
from trainer import train
out = Path(os.environ["DUMP_DIR"])
_close = train.Trainer.close
def close(self, *args, **kwargs):
    if getattr(self, "optimizer", None) is not None:
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "world": self.world}, out / f"rank{self.rank}.pt")
    _close(self, *args, **kwargs)
train.Trainer.close = close
from trainer.__main__ import main
main(sys.argv[1:])
"""


TINY_STEPS = compose(["dataset=tiny"]).train.steps_per_epoch  # tiny's epochs: capped steps


def _steps_per_epoch(num_train_edges: int, world: int = 2) -> int:
    """Each rank's steps: its share of the epoch's min(all, TINY_STEPS x batch) edges."""
    return math.ceil((min(num_train_edges, TINY_STEPS * BATCH_SIZE) // world) / BATCH_SIZE)


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def two_epoch_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """``torchrun --nproc-per-node 2`` of the trainer for 2 epochs; ranks dump their state."""
    base = tmp_path_factory.mktemp("two_epochs")
    run_dir, dump = base / "run", base / "dump"
    dump.mkdir()
    script = write_script(base / "dump_wrapper.py", DUMP_WRAPPER)
    proc = torchrun([str(script), *tiny_overrides(tiny_root, run_dir, "epochs=2", *MODEL)],
                    timeout=HANG_S, DUMP_DIR=str(dump))
    return proc, run_dir, dump


def test_torchrun_two_epochs_writes_results(two_epoch_run, tiny_graph) -> None:
    proc, run_dir, _ = two_epoch_run
    assert proc.returncode == 0, proc.stderr
    assert "resuming" not in proc.stdout
    assert [line.split()[1] for line in proc.stdout.splitlines()
            if line.startswith("epoch ")] == ["1/2", "2/2"]  # rank 0 alone prints

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["world_size"] == 2
    assert summary["resumed_from_epoch"] is None
    assert summary["num_nodes"] == 2000
    assert summary["num_train_edges"] == tiny_graph.num_train_edges
    assert len(summary["epoch_times_s"]) == 2 and all(t > 0 for t in summary["epoch_times_s"])
    # Random scores give MRR ~0.0075 (1000 negatives), the untrained model (seed 0) ~0.01 and
    # accuracy 0.5; two epochs reach MRR ~0.03 and accuracy ~0.7 (69 validation sources).
    assert summary["val_mrr"] > 0.015, summary
    assert summary["val_accuracy"] > 0.6, summary
    assert summary["test_mrr"] > 0.01, summary
    torch.manual_seed(0)
    untrained = evaluate(LinkModel(128, compose(["dataset=tiny", *MODEL]).model), tiny_graph,
                         "valid", None)
    assert summary["val_mrr"] > untrained["mrr"] + 0.005
    assert summary["val_accuracy"] > untrained["accuracy"] + 0.1

    state = _load(run_dir / CHECKPOINT)
    assert state["epoch"] == 2
    # The sidecar the harness's fault injector reads says the same, without torch.
    assert json.loads((run_dir / CHECKPOINT_INFO).read_text())["epoch"] == 2
    history = state["history"]
    assert [h["epoch"] for h in history] == [1.0, 2.0]
    assert history[1]["train/loss"] < history[0]["train/loss"]
    assert history[-1]["val/mrr"] == summary["val_mrr"]
    # Both ranks' edges are counted: each takes `steps` batches of its shard (num_edges // 2).
    steps = _steps_per_epoch(tiny_graph.num_train_edges)
    assert history[0]["train/edges"] == 2 * min(tiny_graph.num_train_edges // 2, steps * BATCH_SIZE)
    assert history[0]["train/steps"] == steps
    assert int(state["optimizer"]["state"][0]["step"]) == 2 * steps

    # TensorBoard events: epoch scalars at steps 1, 2 with the checkpoint's values.
    tb = run_dir / "tb"
    assert list(tb.glob("events.out.tfevents.*"))
    scalars = read_scalars(tb)
    assert scalars.problems == []
    assert scalars.steps("val/mrr") == [1, 2]
    assert scalars.values("val/mrr") == pytest.approx([h["val/mrr"] for h in history], rel=1e-6)
    assert scalars.values("train/loss") == pytest.approx([h["train/loss"] for h in history],
                                                         rel=1e-6)
    assert scalars.steps("test/mrr") == [2]
    assert scalars.last("test/mrr") == pytest.approx(summary["test_mrr"], rel=1e-6)

    # The OGB leaderboard's figures: the best validation epoch and test MRR at it.
    curve = [h["val/mrr"] for h in history]
    assert summary["val_mrr_curve"] == pytest.approx(curve)
    assert summary["best_val_mrr"] == pytest.approx(max(curve))
    assert summary["best_epoch"] == 1 + curve.index(max(curve))
    assert scalars.last("best/test_mrr") == pytest.approx(summary["test_mrr_at_best"], rel=1e-6)
    if summary["best_epoch"] == 2:  # the last model is the best: no second test evaluation
        assert summary["test_mrr_at_best"] == summary["test_mrr"]
    n_valid = tiny_graph.split["valid"]["source_node"].numel()
    se = summary["val_mrr_se"]
    assert 0 < se < 0.5 and se == pytest.approx(history[-1]["val/mrr_se"])
    # The reference rows ride along in summary.json, on the same sources as the evaluation.
    from trainer.data.baselines import METHODS

    assert set(summary["baselines"]) == set(METHODS)
    assert summary["baselines"]["random"]["val_sources"] == min(1000, n_valid)
    assert summary["baselines"]["random"]["val_mrr"] < 0.05
    assert scalars.steps("train/loss_step") == [0, steps]  # log_every=20 > steps per epoch


def test_ranks_end_with_identical_parameters(two_epoch_run, tiny_graph) -> None:
    proc, run_dir, dump = two_epoch_run
    assert proc.returncode == 0, proc.stderr
    r0, r1 = _load(dump / "rank0.pt"), _load(dump / "rank1.pt")
    assert r0["world"] == r1["world"] == 2
    assert r0["model"].keys() == r1["model"].keys() and len(r0["model"]) > 0
    for name, value in r0["model"].items():
        assert torch.equal(value, r1["model"][name]), name
    # Adam's moments agree too: both ranks applied the same averaged gradients.
    for index, s0 in r0["optimizer"]["state"].items():
        s1 = r1["optimizer"]["state"][index]
        assert torch.equal(s0["step"], s1["step"])
        assert torch.equal(s0["exp_avg"], s1["exp_avg"])
        assert torch.equal(s0["exp_avg_sq"], s1["exp_avg_sq"])
    # The checkpoint holds the same (final) weights.
    saved = _load(run_dir / CHECKPOINT)["model"]
    assert all(torch.equal(saved[k], v) for k, v in r0["model"].items())
    # Not vacuous: the weights moved away from their seeded initialisation.
    torch.manual_seed(0)
    init = LinkModel(128, compose(["dataset=tiny", *MODEL]).model).state_dict()
    moved = [(r0["model"][k] - v).abs().max().item() for k, v in init.items()]
    assert min(moved) > 1e-4


def test_epoch_batches_shard_the_edges_evenly() -> None:
    edges, world, batch = 6017, 2, 512
    per_rank = [epoch_batches(edges, batch, 1, 0, r, world, None) for r in range(world)]
    assert len(per_rank[0]) == len(per_rank[1]) == math.ceil((edges // world) / batch)
    ids = [torch.cat(b) for b in per_rank]
    assert all(i.numel() == edges // world for i in ids)
    assert all(b.numel() <= batch for bs in per_rank for b in bs)
    union = torch.cat(ids)
    assert union.unique().numel() == union.numel() == world * (edges // world)  # disjoint
    assert union.min() >= 0 and union.max() < edges
    # Same epoch and seed: the same deal (every rank derives it alone); other epochs reshuffle.
    again = epoch_batches(edges, batch, 1, 0, 0, world, None)
    assert all(torch.equal(a, b) for a, b in zip(again, per_rank[0], strict=True))
    assert not torch.equal(epoch_batches(edges, batch, 2, 0, 0, world, None)[0], again[0])
    assert not torch.equal(epoch_batches(edges, batch, 1, 1, 0, world, None)[0], again[0])
    assert len(epoch_batches(edges, batch, 1, 0, 1, world, 4)) == 2  # cap: 4 x 512 edges in all


def test_a_capped_epoch_is_the_same_edges_for_every_world_size() -> None:
    """Strong scaling: the cap bounds the epoch (steps of one worker), not each rank's steps,
    so 1, 2 or 3 workers train on the same first edges of the epoch's shuffle, each its share."""
    edges, batch, cap = 6017, 512, 5
    alone = torch.cat(epoch_batches(edges, batch, 1, 0, 0, 1, cap))
    assert alone.numel() == cap * batch
    for world in (2, 3):
        shares = [torch.cat(epoch_batches(edges, batch, 1, 0, r, world, cap)) for r in range(world)]
        assert {s.numel() for s in shares} == {(cap * batch) // world}
        assert len(epoch_batches(edges, batch, 1, 0, 0, world, cap)) == math.ceil(
            (cap * batch) // world / batch)
        union = torch.cat(shares)
        assert union.unique().numel() == union.numel()  # disjoint
        assert set(union.tolist()) <= set(alone.tolist())  # the same epoch, dealt out
        assert alone.numel() - union.numel() < world  # less only by the remainder


# ---------------------------------------------------------------- DDP step == union step

def _single_step(overrides: list[str], batch: Batch) -> dict:
    trainer = Trainer(compose(overrides))
    trainer.setup()
    try:
        assert trainer.world == 1 and trainer.ddp is trainer.model
        loss = trainer.train_step(batch)
        return {
            "loss": loss,
            "grads": {n: p.grad.clone() for n, p in trainer.model.named_parameters()},
            "params": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
        }
    finally:
        trainer.close()


def test_ddp_step_equals_single_step_on_union(two_rank_probe: Path, tmp_path: Path,
                                              tiny_root: Path, no_launcher_env) -> None:
    """Rank 0 steps on batch A, rank 1 on B (conftest.TWO_RANK_PROBE, DDP over gloo); one
    process steps on cat(A, B). DDP averages the gradients, which equals the union's."""
    common = DDP_STEP_OVERRIDES
    batches = torch.load(two_rank_probe / "batches.pt", weights_only=True)
    ranks = [_load(two_rank_probe / f"ddp_rank{r}.pt") for r in range(2)]

    union = Batch(*(torch.cat([a, b]) for a, b in zip(*batches, strict=True)))
    single = _single_step(tiny_overrides(tiny_root, tmp_path / "single", *common), union)
    alone = _single_step(tiny_overrides(tiny_root, tmp_path / "alone", *common), Batch(*batches[0]))

    # The union's loss is the mean of the two equal-sized halves' losses.
    assert single["loss"] == pytest.approx((ranks[0]["loss"] + ranks[1]["loss"]) / 2, abs=1e-5)
    assert ranks[0]["loss"] == pytest.approx(alone["loss"], abs=1e-5)
    for rank in ranks:
        clear_total, elements = 0, 0
        for name, grad in single["grads"].items():
            diff = (rank["grads"][name] - grad).abs().max().item()
            assert diff <= 1e-9 + 1e-4 * grad.abs().max().item(), (name, diff)
            # Parameters after the step. Adam's first step moves each weight by about
            # lr * sign(grad) = +-0.01, so a wrong step is off by ~1e-2. Where |grad| is below
            # ~Adam's eps (1e-8), the rounding of the averaged gradient changes that step, so
            # those weights are left out.
            clear = grad.abs() > 2e-8
            clear_total, elements = clear_total + int(clear.sum()), elements + grad.numel()
            moved = (rank["params"][name] - single["params"][name]).abs()
            assert moved[clear].max().item() < 1e-5, name
        assert clear_total > 0.5 * elements
    # Not vacuous: rank 0's own half alone gives clearly different gradients.
    differs = [(alone["grads"][n] - g).abs().max().item() / (g.abs().max().item() + 1e-12)
               for n, g in single["grads"].items()]
    assert max(differs) > 0.05


# ---------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def resumed_run(two_epoch_run, tmp_path_factory: pytest.TempPathFactory, tiny_root: Path):
    """The 2-epoch run dir (copied), continued by ``torchrun -m trainer ... epochs=3``."""
    _, run_dir, _ = two_epoch_run
    copy = tmp_path_factory.mktemp("resume") / "run"
    shutil.copytree(run_dir, copy)
    proc = torchrun(["-m", "trainer", *tiny_overrides(tiny_root, copy, "epochs=3", *MODEL)],
                    timeout=HANG_S)
    return proc, run_dir, copy


def test_resume_continues_at_the_next_epoch(resumed_run, tiny_graph) -> None:
    proc, before_dir, run_dir = resumed_run
    assert proc.returncode == 0, proc.stderr
    assert f"resuming from {run_dir / CHECKPOINT} at epoch 3" in proc.stdout
    assert [line.split()[1] for line in proc.stdout.splitlines()
            if line.startswith("epoch ")] == ["3/3"]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["resumed_from_epoch"] == 3
    assert len(summary["epoch_times_s"]) == 3 and len(summary["edges_per_s"]) == 3

    before, after = _load(before_dir / CHECKPOINT), _load(run_dir / CHECKPOINT)
    assert after["epoch"] == 3
    assert [h["epoch"] for h in after["history"]] == [1.0, 2.0, 3.0]
    assert after["history"][:2] == before["history"]  # carried over unchanged
    assert summary["val_mrr"] == after["history"][2]["val/mrr"]
    steps = _steps_per_epoch(tiny_graph.num_train_edges)
    for index, state in after["optimizer"]["state"].items():
        assert int(before["optimizer"]["state"][index]["step"]) == 2 * steps
        assert int(state["step"]) == 3 * steps  # continued, not restarted at 0
    assert any(not torch.equal(before["model"][k], v) for k, v in after["model"].items())

    # TensorBoard shows each epoch once, old and new events merged.
    scalars = read_scalars(run_dir / "tb")
    assert scalars.steps("val/mrr") == [1, 2, 3]
    assert scalars.values("val/mrr") == pytest.approx(
        [h["val/mrr"] for h in after["history"]], rel=1e-6)


def test_resumed_trainer_loads_the_saved_state(two_epoch_run, tmp_path: Path, tiny_root: Path,
                                               no_launcher_env) -> None:
    _, run_dir, _ = two_epoch_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    saved = _load(copy / CHECKPOINT)
    trainer = Trainer(compose(tiny_overrides(tiny_root, copy, "epochs=3", *MODEL)))
    rng = torch.get_rng_state()
    try:
        trainer.setup()
        assert trainer.start_epoch == 3
        assert trainer.history.epochs == saved["history"]
        loaded = trainer.optimizer.state_dict()
        assert loaded["param_groups"] == saved["optimizer"]["param_groups"]
        assert loaded["state"].keys() == saved["optimizer"]["state"].keys()
        for index, state in saved["optimizer"]["state"].items():
            for key, value in state.items():
                assert torch.equal(loaded["state"][index][key], value), (index, key)
        for name, value in trainer.model.state_dict().items():
            assert torch.equal(value, saved["model"][name]), name
    finally:
        trainer.close()
        torch.set_rng_state(rng)


def test_resume_keeps_step_level_tensorboard_points(resumed_run, tiny_graph) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc, _, run_dir = resumed_run
    assert proc.returncode == 0, proc.stderr
    steps = _steps_per_epoch(tiny_graph.num_train_edges)
    epochs = EventAccumulator(str(run_dir / "tb"))
    epochs.Reload()
    assert [e.step for e in epochs.Scalars("val/mrr")] == [1, 2, 3]  # epoch scale
    # Step scalars have their own writer (and purge step) on the global-step scale.
    # log_every=20 > steps per epoch: one point at the first step of each epoch.
    acc = EventAccumulator(str(run_dir / "tb" / "steps"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss_step")] == [0, steps, 2 * steps]


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(resumed_run, tmp_path: Path,
                                              tiny_root: Path) -> None:
    """Stopping after epoch 2 and resuming gives the same epoch 3 as running straight through."""
    proc, _, resumed_dir = resumed_run
    assert proc.returncode == 0, proc.stderr
    straight_dir = tmp_path / "run"
    straight = torchrun(
        ["-m", "trainer", *tiny_overrides(tiny_root, straight_dir, "epochs=3", *MODEL)],
        timeout=HANG_S)
    assert straight.returncode == 0, straight.stderr
    a, b = _load(straight_dir / CHECKPOINT), _load(resumed_dir / CHECKPOINT)
    for key in ("train/loss", "val/mrr", "val/accuracy", "train/edges"):
        assert a["history"][2][key] == pytest.approx(b["history"][2][key], abs=1e-6), key
    for name, value in a["model"].items():
        assert torch.allclose(value, b["model"][name], atol=1e-6), name


def test_test_at_best_evaluates_the_best_epochs_weights_and_restores_the_last(tiny_root: Path,
                                                                             tmp_path: Path) -> None:
    cfg = compose(tiny_overrides(tiny_root, tmp_path / "run", "epochs=3", *MODEL))
    trainer = Trainer(cfg)
    trainer.setup()
    trainer.train_epoch(1)
    first = trainer.evaluate("valid", None)
    trainer.best.offer(1, first, trainer.model)
    after_one = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_epoch(2)
    worse = {**trainer.evaluate("valid", None), "val/mrr": -1.0}  # never better than epoch 1
    trainer.best.offer(2, worse, trainer.model)
    last = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.epochs = 2
    best = trainer.test_at_best(trainer.evaluate("test", None))
    assert best["best/epoch"] == 1 and best["best/val_mrr"] == first["val/mrr"]
    assert all(torch.equal(v, last[k]) for k, v in trainer.model.state_dict().items())  # restored
    trainer.model.load_state_dict(after_one)
    assert best["best/test_mrr"] == pytest.approx(trainer.evaluate("test", None)["test/mrr"])
    trainer.close()
