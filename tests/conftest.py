"""Shared fixtures and process helpers for the trainer tests (tests/test_trainer_*.py).

* ``tiny_root``: the ``tiny`` synthetic preset (2,000 nodes), generated once per session into a
  temporary data_root and shared read-only by the tests (a test that damages data copies it).
* ``run_ranks`` / ``torchrun``: real multi-process runs with the gloo backend on loopback only
  (MASTER_ADDR=127.0.0.1, GLOO_SOCKET_IFNAME=lo), one thread per process.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_k8s import LAUNCHER_VARS

REPO = Path(__file__).resolve().parent.parent
# How long a process may take before a test calls it hung: only a guard against hangs, never a
# measurement (tests hold on a machine kept busy by other work; see README, Development).
HANG_S = 600.0



def tiny_overrides(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    """Overrides of a ``tiny`` trainer run whose files all live in temporary folders."""
    return ["dataset=tiny", f"data_root={data_root}", f"run_dir={run_dir}", *extra]


def dataset_dir(data_root: Path) -> Path:
    """``<data_root>/tiny-<hash>`` of the default tiny preset."""
    from trainer.config import compose
    from trainer.data.dataset import dataset_root

    return dataset_root(compose(["dataset=tiny"]).dataset, data_root)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a trainer process: one thread, loopback only, no launcher leftovers."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    env.pop("GNN_BENCH_DATA", None)
    env.update(extra)
    return env


@dataclass
class Proc:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_cmd(args: list[str], timeout: float = HANG_S, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Proc:
    """Run a command to completion (killing it on timeout, which then fails the test)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        args, cwd=cwd or REPO, env=env or process_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        pytest.fail(f"{args} did not finish within {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    return Proc(proc.returncode, out, err, time.monotonic() - started)


def torchrun(args: list[str], nproc: int = 2, timeout: float = HANG_S, **env: str) -> Proc:
    """``torchrun --standalone --nproc-per-node <nproc> <args>`` (the venv's torchrun)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", *args]
    return run_cmd(cmd, timeout=timeout, env=process_env(**env))


def run_ranks(script: Path, args: list[str], world: int = 2, timeout: float = HANG_S) -> list[Proc]:
    """Start ``python script args`` once per rank with torchrun's environment (gloo, loopback)."""
    port = str(free_port())
    procs = []
    started = time.monotonic()
    for rank in range(world):
        env = process_env(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                          LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen(
            [sys.executable, str(script), *args], cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        ))
    results = []
    for rank, proc in enumerate(procs):
        left = max(1.0, timeout - (time.monotonic() - started))
        try:
            out, err = proc.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, 9)
            out, err = proc.communicate()
            pytest.fail(f"rank {rank} of {script.name} hung (> {timeout} s)\n{out}\n{err}")
        results.append(Proc(proc.returncode, out, err, time.monotonic() - started))
    for rank, r in enumerate(results):
        assert r.returncode == 0, f"rank {rank} failed:\n{r.stdout}\n{r.stderr}"
    return results


def write_script(path: Path, source: str) -> Path:
    path.write_text(source)
    return path


# ---------------------------------------------------------------- two-rank probe
# One pair of gloo processes serves two tests (process start-up dominates their cost):
# test_trainer_distributed's DDP step and test_trainer_metrics' distributed evaluation.

# Deterministic full neighbourhoods, no dropout. exclude_target_edges=false: each rank would
# otherwise drop only its own batch's edges from message passing, a different graph than the
# union's (by design, so no equivalence is expected then).
# loss=bce: a sum of per-edge terms, so that the 2-rank step equals one step on the union (the
# in-batch softmax ranks each rank's positives against that rank's batch only).
DDP_STEP_OVERRIDES = ["model.fanouts=[-1,-1]", "model.dropout=0.0", "seed=7", "train.lr=0.01",
                      "train.loss=bce",
                      "train.exclude_target_edges=false"]
EVAL_OVERRIDES = ["model.hidden=64"]
EVAL_MODEL_SEED = 123
DDP_BATCH = 96  # positive edges per rank

TWO_RANK_PROBE = """
import json, sys, torch, torch.distributed as dist
from trainer.config import compose
from trainer.evaluate import embed_all, evaluate
from trainer.model import LinkModel
from trainer.train import Batch, Trainer
out = sys.argv[1]
ddp_overrides, eval_overrides, model_seed = json.loads(sys.argv[2])

# 1. One DDP step: the Trainer joins the group from RANK, WORLD_SIZE, MASTER_ADDR/PORT.
trainer = Trainer(compose(ddp_overrides))
trainer.setup()
assert trainer.world == 2 and trainer.ddp is not trainer.model and dist.is_initialized()
batch = torch.load(f"{out}/batches.pt", weights_only=True)[trainer.rank]
loss = trainer.train_step(Batch(*batch))
torch.save({
    "loss": loss,
    "grads": {n: p.grad for n, p in trainer.model.named_parameters()},
    "params": {n: p.detach() for n, p in trainer.model.named_parameters()},
}, f"{out}/ddp_rank{trainer.rank}.pt")

# 2. Evaluation of a seeded model, its work split across the two ranks; the layers are shared
# in blocks of 300 rows (tiny's 1,000 rows a rank: three full blocks and a short one).
import trainer.evaluate as evaluation
evaluation.GATHER_BLOCK_ROWS = 300
cfg = compose(eval_overrides)
torch.manual_seed(model_seed)
model = LinkModel(trainer.graph.x.shape[1], cfg.model)
torch.save({
    "valid": evaluate(model, trainer.graph, "valid", None, chunk=97),
    "test33": evaluate(model, trainer.graph, "test", 33, chunk=1000),
    "h": embed_all(model, trainer.graph, 97),
    "training": model.training,
}, f"{out}/eval_rank{trainer.rank}.pt")
trainer.close()
# As trainer/__main__.py does with several ranks: skip the interpreter's teardown, where
# destroying DDP's reducer can deadlock gloo.
import os
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


@pytest.fixture(scope="session")
def two_rank_probe(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs TWO_RANK_PROBE on 2 ranks; returns the folder with batches.pt and their outputs."""
    import json

    import torch

    from trainer.config import compose
    from trainer.data.dataset import load_graph

    out = tmp_path_factory.mktemp("two_rank_probe")
    graph = load_graph(compose(["dataset=tiny"]).dataset, tiny_root)
    train = graph.split["train"]
    gen = torch.Generator().manual_seed(11)
    ids = torch.randperm(graph.num_train_edges, generator=gen)[: 2 * DDP_BATCH].view(2, -1)
    negs = torch.randint(0, graph.num_nodes, (2, DDP_BATCH), generator=gen)
    batches = [(train["source_node"][i].clone(), train["target_node"][i].clone(), n)
               for i, n in zip(ids, negs, strict=True)]
    torch.save(batches, out / "batches.pt")
    configs = [tiny_overrides(tiny_root, out / "ddp", *DDP_STEP_OVERRIDES),
               tiny_overrides(tiny_root, out / "eval", *EVAL_OVERRIDES), EVAL_MODEL_SEED]
    script = write_script(out / "probe.py", TWO_RANK_PROBE)
    run_ranks(script, [str(out), json.dumps(configs)])
    return out


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_root holding the generated and cached ``tiny`` preset (shared; do not modify)."""
    from trainer.config import compose
    from trainer.data.dataset import load_graph

    root = tmp_path_factory.mktemp("data")
    cfg = compose(["dataset=tiny", f"data_root={root}"])
    load_graph(cfg.dataset, root)
    return root


@pytest.fixture(scope="session")
def tiny_graph(tiny_root: Path):
    """The memory-mapped cache of the shared tiny dataset (``trainer.data.dataset.Graph``)."""
    from trainer.config import compose
    from trainer.data.dataset import load_graph

    return load_graph(compose(["dataset=tiny"]).dataset, tiny_root)


@pytest.fixture()
def private_root(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny data_root, for tests that damage or regenerate files."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    return root


@pytest.fixture()
def no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process Trainers must run alone (world size 1) whatever started pytest."""
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def small_disk(tmp_path: Path):
    """``small_disk("300k")``: a folder on a tmpfs of that size, unmounted after the test (root
    only: skipped where mounting is not allowed)."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk-{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)
