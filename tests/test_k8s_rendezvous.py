"""The trainer's rendezvous without torchrun (trainer/rendezvous.py), with real processes and a
real TCPStore and gloo group: the cases the operator's uncoordinated per-pod restarts create.

* a Worker restarted while the *old* Master is still alive (it has not yet failed its next
  collective) must not join the old group: it waits, and joins the restarted Master's;
* a Worker that starts before the Master listens waits for it.
The sweep-level cases (pods deleted, back-off) are in tests/test_k8s_sweep.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, free_port, process_env, write_script

SCRIPT = """
import datetime, os, sys, time
import torch, torch.distributed as dist
from trainer.rendezvous import generation_store

rank, world, port = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["MASTER_PORT"])
timeout = datetime.timedelta(seconds=90)
store, generation = generation_store("127.0.0.1", port, rank, world, timeout, poll_s=0.1)
dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
value = torch.tensor([rank + 1.0])
dist.all_reduce(value)
print(f"result {generation} {value.item():g}", flush=True)
if sys.argv[1] == "stay":  # a master busy elsewhere: it has not noticed the loss yet
    time.sleep(120)
os._exit(0)
"""


class Rank:
    """One process of the group, its output collected line by line."""

    def __init__(self, script: Path, rank: int, world: int, port: int, mode: str = "leave"):
        env = process_env(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
        self.proc = subprocess.Popen([sys.executable, str(script), mode], cwd=REPO, env=env,
                                     text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if text in line), None)
            if found:
                return found
            if self.proc.poll() is not None and not any(text in line for line in self.lines):
                time.sleep(0.2)  # the reader may still be draining
                found = next((line for line in self.lines if text in line), None)
                if found:
                    return found
                pytest.fail(f"exited ({self.proc.returncode}) without {text!r}:\n" +
                            "\n".join(self.lines))
            time.sleep(0.05)
        pytest.fail(f"no {text!r} within {timeout} s:\n" + "\n".join(self.lines))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture()
def script(tmp_path):
    return write_script(tmp_path / "rendezvous_ranks.py", SCRIPT)


def test_a_restarted_worker_waits_out_the_old_master_and_joins_the_new_one(script):
    port = free_port()
    old_master = Rank(script, 0, 2, port, mode="stay")
    first_worker = Rank(script, 1, 2, port)
    ranks = [old_master, first_worker]
    try:
        old = first_worker.wait_for("result").split()
        assert old_master.wait_for("result").split() == old and old[2] == "3"
        first_worker.proc.wait(timeout=60)
        restarted = Rank(script, 1, 2, port)  # the old master is alive, its group lost rank 1
        ranks.append(restarted)
        restarted.wait_for("already has an earlier run of this rank; waiting")
        assert not any(line.startswith("result") for line in restarted.lines)
        old_master.kill()  # it fails its next collective; the kubelet restarts it
        new_master = Rank(script, 0, 2, port)
        ranks.append(new_master)
        new = restarted.wait_for("result").split()
        assert new_master.wait_for("result").split() == new
        assert new[1] != old[1] and new[2] == "3"  # a new generation, a working group
        assert restarted.proc.wait(timeout=60) == 0 and new_master.proc.wait(timeout=60) == 0
    finally:
        for rank in ranks:
            rank.kill()


def test_a_worker_that_starts_before_the_master_waits_for_it(script):
    port = free_port()
    worker = Rank(script, 1, 2, port)
    ranks = [worker]
    try:
        time.sleep(1.0)  # the worker is up first (connection refused until the master listens)
        assert worker.proc.poll() is None
        master = Rank(script, 0, 2, port)
        ranks.append(master)
        assert worker.wait_for("result").split()[2] == "3"
        assert master.proc.wait(timeout=60) == 0 and worker.proc.wait(timeout=60) == 0
    finally:
        for rank in ranks:
            rank.kill()
