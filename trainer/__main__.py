"""One worker of a distributed training job.

    torchrun --standalone --nproc-per-node 2 -m trainer dataset=tiny epochs=3
    python -m trainer dataset=small epochs=5 run_dir=runs/one   # single process

Started by torchrun locally or by the Kubeflow training operator in a pod, it reads RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from the environment (and runs alone when
they are absent). Its arguments are Hydra overrides of the project's ``conf/``; ``--verbose``
adds tracebacks to its one-line errors.
"""

from __future__ import annotations

import os
import sys
import traceback

from trainer.config import ConfigError, compose, fail, take_verbose_flag, validate_trainer, verbose


def main(argv: list[str]) -> None:
    try:
        cfg = compose(take_verbose_flag(argv))
        validate_trainer(cfg)
    except ConfigError as exc:
        fail(str(exc))
    # Imported after validation: a bad value is reported without loading torch and PyG.
    from trainer.data.dataset import DatasetError
    from trainer.train import CheckpointError, Trainer

    trainer = Trainer(cfg)
    code = 0
    try:
        trainer.run()
    except (DatasetError, CheckpointError) as exc:
        if verbose():
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 3
    except BaseException:
        if trainer.world == 1:
            raise
        traceback.print_exc()
        code = 1
    finally:
        trainer.close(clean=code == 0)
    if trainer.world > 1:
        # Skip the interpreter's teardown: destroying DDP's reducer there can deadlock gloo (the
        # destructor joins gloo's worker thread while holding the GIL, and that thread may be
        # waiting for the GIL to free the tensors of a finished collective; seen with 4 workers
        # on 2 cores, torch 2.13). Everything is written, flushed and closed at this point.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
