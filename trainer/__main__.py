"""One worker of a distributed training job.

    torchrun --standalone --nproc-per-node 2 -m trainer dataset=tiny epochs=3
    python -m trainer dataset=small epochs=5 run_dir=runs/one   # single process

Started by torchrun locally or by the Kubeflow training operator in a pod, it reads RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the environment (and runs alone when
they are absent). Its arguments are Hydra overrides of the project's ``conf/``; ``--verbose``
adds tracebacks to its one-line errors.

Exit codes (trainer/failures.py; which ones a restart can fix is rundir's rule): 0 done, 2 a bad
configuration, 3 a damaged dataset or checkpoint, 4 the environment (no space left, a read-only
path, out of memory), 1 anything else; 200 the process group failed (retryable). Before a
non-zero exit the worker writes a failure record where ``GNN_BENCH_FAILURE_FILE`` says.
"""

from __future__ import annotations

import gc
import os
import sys

import rundir
from trainer.config import ConfigError, compose, take_verbose_flag, validate_trainer
from trainer.failures import Failure, classify, exit_now, give_up


def main(argv: list[str]) -> None:
    rank = int(os.environ.get("RANK", 0))
    try:
        cfg = compose(take_verbose_flag(argv))
        validate_trainer(cfg)
    except ConfigError as exc:
        raise SystemExit(give_up(Failure(rundir.EXIT_CONFIG, str(exc)), rank)) from None
    # Imported after validation: a bad value is reported without loading torch and PyG. Their
    # imports (~7 s of CPU) create objects that trigger ~1 s of garbage collection that finds
    # nothing to free; so the collector is off while they load, and what they made is moved out
    # of its reach (gc.freeze) before it runs again.
    gc.disable()
    try:
        from trainer.train import Trainer
    finally:
        gc.freeze()
        gc.enable()

    trainer = Trainer(cfg)
    code = 0
    try:
        trainer.run()
        trainer.close()  # its closing barrier can still find a peer gone
    except (Exception, KeyboardInterrupt) as exc:
        code = give_up(classify(exc, str(cfg.run_dir)), trainer.rank)
        try:
            trainer.close(clean=False)
        except Exception:  # the group is broken already: nothing left to release cleanly
            pass
    if trainer.world > 1:
        # Skip the interpreter's teardown: destroying DDP's reducer there can deadlock gloo (the
        # destructor joins gloo's worker thread while holding the GIL, and that thread may be
        # waiting for the GIL to free the tensors of a finished collective; seen with 4 workers
        # on 2 cores, torch 2.13). Everything is written, flushed and closed at this point.
        exit_now(code)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
