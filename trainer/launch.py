"""``torchrun`` that exits with its worker's exit code: the entry point of a TrainJob's pods.

    python -m trainer.launch --max-restarts=0 -m trainer dataset=tiny epochs=3

Same arguments as ``torchrun`` (its own parser and launcher, ``torch.distributed.run``), and
the same ``PET_*`` variables, which Kubeflow Trainer's torch runtime injects (``PET_NNODES``,
``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``). One
difference: ``torchrun`` exits with 1 whatever its worker's code was, so a Job's
``podFailurePolicy`` could not tell a bad configuration (2, permanent) from a lost peer (a
restart can fix it). Here the pod's exit code is the first failed worker's (128 + the signal for
a worker killed by one), the agent's own failures to meet its peers (rendezvous, store) are
200 (retryable: the process group failed), and a signal the agent itself received is 128 + it.
"""

from __future__ import annotations

import signal
import sys

EXIT_DISTRIBUTED = 200  # the process group failed: restarting the group can fix it


def exit_code(exc: BaseException) -> int:
    """The pod's exit code for what stopped ``torchrun``."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError

    if isinstance(exc, ChildFailedError):
        _, failure = exc.get_first_failure()
        code = int(failure.exitcode)
        return 128 - code if code < 0 else (code or 1)
    if isinstance(exc, SignalException):
        return 128 + int(exc.sigval)
    if isinstance(exc, KeyboardInterrupt):
        return 128 + int(signal.SIGINT)
    if isinstance(exc, RendezvousError | TimeoutError | ConnectionError) or \
            type(exc).__name__ in ("DistStoreError", "DistNetworkError", "DistError"):
        return EXIT_DISTRIBUTED
    return 1


def main(argv: list[str]) -> int:
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv))
    except BaseException as exc:  # noqa: BLE001 - every way out becomes an exit code
        code = exit_code(exc)
        print(f"launch: torchrun stopped ({type(exc).__name__}); exiting with {code}",
              file=sys.stderr, flush=True)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
