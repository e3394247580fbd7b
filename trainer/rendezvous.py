"""A rendezvous that survives uncoordinated restarts: the PyTorchJob case.

Under torchrun, one agent restarts the whole worker group and numbers the attempts
(``TORCHELASTIC_RESTART_COUNT``), so a per-attempt key prefix keeps each attempt's keys apart.
Under the Kubeflow training operator nothing coordinates restarts: the kubelet restarts each
pod's container on its own, with its own back-off (at once, then 10 s, 20 s, ... up to 5 min),
a deleted pod comes back as a new pod, and no restart count is injected. A restarted Worker can
therefore reach the Master's store

* while the Master is down (its container restarting): the client retries the connection
  until the Master's new store listens;
* before the *old* Master has noticed the loss (it is still in a computation, or not yet
  failed its collective): the old store is alive and holds the old group's keys.

The scheme: the Master (rank 0) owns the store (a ``TCPStore`` it serves, as the operator's
``MASTER_ADDR``/``MASTER_PORT`` ask) and starts a new **generation** each time it starts: a
random token under ``gnn-bench/generation``. Every rank joins the current generation by
adding 1 to ``gnn-bench/<generation>/rank-<r>``; the group's keys live under that generation.
A rank whose add returns more than 1 has met a generation that an earlier run of the same rank
already joined, so that group has lost this rank and its Master will fail its next collective:
the rank waits (it does not fail, which would cost a restart against ``backoffLimit``) until
the generation changes or the old Master's store goes away, then joins the new one.

Stale keys can never be read (a new Master has an empty store and a fresh token), and each
restarted rank joins exactly once, so one lost pod costs exactly one restart of every other
replica. Limitation: a rank lost *during* the gloo handshake (between joining and the first
collective) leaves the others waiting up to ``train.dist_timeout_s``.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import torch.distributed as dist

GENERATION_KEY = "gnn-bench/generation"


def _say(message: str) -> None:
    print(f"rendezvous: {message}", flush=True)


def generation_store(host: str, port: int, rank: int, world: int, timeout: timedelta,
                     poll_s: float = 0.5) -> tuple[dist.Store, str]:
    """(the store for ``init_process_group``, the generation joined)."""
    deadline = time.monotonic() + timeout.total_seconds()
    if rank == 0:
        store = dist.TCPStore(host, port, world, is_master=True, timeout=timeout,
                              wait_for_workers=False)
        generation = uuid.uuid4().hex[:12]
        store.set(GENERATION_KEY, generation)
        store.add(f"gnn-bench/{generation}/rank-0", 1)
        _say(f"rank 0 started generation {generation} (world {world})")
        return dist.PrefixStore(f"gnn-bench/{generation}", store), generation
    waited_for: str | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"rank {rank}: no new rendezvous generation from the master at "
                               f"{host}:{port} within {timeout.total_seconds():.0f} s")
        try:
            store = dist.TCPStore(host, port, world, is_master=False,
                                  timeout=timedelta(seconds=left))
            generation = store.get(GENERATION_KEY).decode()
            if generation == waited_for:
                time.sleep(poll_s)
                continue
            if store.add(f"gnn-bench/{generation}/rank-{rank}", 1) == 1:
                _say(f"rank {rank} joined generation {generation}")
                return dist.PrefixStore(f"gnn-bench/{generation}", store), generation
        except RuntimeError as exc:  # DistError: the old master went away meanwhile
            if time.monotonic() >= deadline:
                raise
            _say(f"rank {rank}: the master's store is not reachable ({type(exc).__name__}); "
                 "retrying")
            time.sleep(poll_s)
            continue
        if waited_for != generation:
            _say(f"rank {rank}: generation {generation} already has an earlier run of this "
                 "rank; waiting for the master to restart")
        waited_for = generation
        time.sleep(poll_s)
