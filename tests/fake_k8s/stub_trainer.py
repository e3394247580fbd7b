"""A stand-in for ``python -m trainer`` where a test needs jobs, not training: it takes the same
overrides, sleeps ``STUB_SECONDS`` (default 2), and rank 0 writes the event files and
summary.json a real run writes (fixed values), without importing torch.

    python tests/fake_k8s/stub_trainer.py epochs=2 run_dir=/tmp/x ...   (STUB_EXIT=3 to fail)

Also: ``STUB_SHM_MIB`` / ``STUB_ALLOC_MIB`` write that much to /dev/shm / hold it in memory
before sleeping (to pass a memory limit), ``STUB_IGNORE_TERM=1`` ignores SIGTERM (a process that
needs its whole grace period), ``STUB_MARK`` is printed (to tell runs apart in logs),
``STUB_RECORD=1`` writes a failure record where ``GNN_BENCH_FAILURE_FILE`` says before failing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def scalar(writer: EventFileWriter, tag: str, value: float, step: int) -> None:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))


def main(argv: list[str]) -> int:
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    epochs, run_dir = int(args.get("epochs", 1)), Path(args["run_dir"])
    print(
        f"stub trainer rank {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')}"
        + (f" {os.environ['STUB_MARK']}" if os.environ.get("STUB_MARK") else ""), flush=True
    )
    if os.environ.get("STUB_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    held = []
    if os.environ.get("STUB_SHM_MIB"):
        with open(f"/dev/shm/stub-{os.getpid()}", "wb") as shm:
            for _ in range(int(os.environ["STUB_SHM_MIB"])):
                shm.write(b"\1" * 2**20)
    if os.environ.get("STUB_ALLOC_MIB"):
        held.append(bytearray(b"\1" * (int(os.environ["STUB_ALLOC_MIB"]) * 2**20)))
    time.sleep(float(os.environ.get("STUB_SECONDS", "2")))
    if os.environ.get("STUB_EXIT", "0") != "0":
        code = int(os.environ["STUB_EXIT"])
        if os.environ.get("STUB_RECORD") == "1":  # as the trainer does: its record, then the line
            import rundir

            path = rundir.failure_path(int(os.environ.get("RANK", "0")))
            if path is not None:
                rundir.FailureRecord(code, rundir.KINDS.get(code, "error"),
                                     "the stub was told to fail (its record)").write(path)
        print("error: the stub was told to fail", flush=True)
        return code
    if os.environ.get("RANK", "0") == "0":
        writer = EventFileWriter(str(run_dir / "tb"))
        scalar(writer, "train/loss_step", 1.0, 1)
        for epoch in range(1, epochs + 1):
            for tag, value in (
                ("train/loss", 1.0 / epoch),
                ("val/mrr", 0.1 * epoch),
                ("val/accuracy", 0.6),
                ("time/epoch_s", 0.5),
            ):
                scalar(writer, tag, value, epoch)
        scalar(writer, "test/mrr", 0.1 * epochs, epochs)
        writer.close()
        (run_dir / "summary.json").write_text(json.dumps({"val_mrr": 0.1 * epochs}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
