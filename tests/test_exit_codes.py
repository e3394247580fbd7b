"""Permanent failures are not retried: the trainer's exit codes, its failure record, and the
rule (Kubeflow's ``restartPolicy: ExitCode``) that says which codes a restart can fix."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest
from conftest import process_env, run_cmd, tiny_overrides, torchrun

import rundir
from rundir import FailureRecord, retryable
from trainer.config import ConfigError
from trainer.data.dataset import DatasetError
from trainer.failures import classify
from trainer.train import CheckpointError

# ------------------------------------------------------------------ the rule

RULE = [  # exit code, retryable (training-operator v1.9: IsRetryableExitCode is code >= 128)
    (1, False), (2, False), (3, False), (4, False), (127, False),
    (128, True), (137, True), (143, True), (200, True), (255, True),
    (-9, True),  # Popen's "killed by SIGKILL"
]


@pytest.mark.parametrize(("code", "expected"), RULE)
def test_codes_1_to_127_are_permanent_and_128_up_retryable(code, expected):
    assert retryable(code) is expected


def test_the_trainers_own_codes_follow_the_rule():
    permanent = [rundir.EXIT_ERROR, rundir.EXIT_CONFIG, rundir.EXIT_DATA, rundir.EXIT_ENVIRONMENT]
    assert not any(retryable(c) for c in permanent) and retryable(rundir.EXIT_RETRY)
    assert len(set(permanent)) == 4


# ------------------------------------------------------------------ classification


def _os_error(code: int, filename: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), *([filename] if filename else []))


GLOO_RESET = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error "
                          "[127.0.0.1]:4242: Connection reset by peer")
CASES = [
    # name, exception, exit code, words of the line
    ("config", ConfigError("model.hidden=0 is invalid"), 2, "model.hidden=0 is invalid"),
    ("dataset", DatasetError("the dataset cache /d is corrupt"), 3, "the dataset cache /d"),
    ("checkpoint", CheckpointError("checkpoint /c cannot be loaded"), 3, "checkpoint /c"),
    ("disk full", _os_error(errno.ENOSPC, "/r/checkpoints/last.pt"), 4,
     "no space left on device writing /r/checkpoints/last.pt: free space"),
    ("disk full, no file named", _os_error(errno.ENOSPC), 4,
     "no space left on device writing under /run (or the log)"),
    ("quota", _os_error(errno.EDQUOT, "/r/tb"), 4, "no space left on device writing /r/tb"),
    ("read-only", _os_error(errno.EROFS, "/r/tb"), 4, "cannot write /r/tb (Read-only file system)"),
    ("out of memory", MemoryError(), 4, "out of memory"),
    ("peer killed", GLOO_RESET, 200, "the process group failed (Read error [127.0.0.1]:4242: "
                                     "Connection reset by peer)"),
    ("peer closed", RuntimeError("Connection closed by peer [127.0.0.1]:1. This is typically"), 200,
     "Connection closed by peer [127.0.0.1]:1)"),
    ("store gone", ConnectionResetError(errno.ECONNRESET, "reset"), 200, "process group failed"),
    ("a bug", ValueError("boom"), 1, "ValueError: boom"),
    ("a bug that mentions no group", RuntimeError("shape mismatch"), 1, "RuntimeError: shape"),
    ("Ctrl-C", KeyboardInterrupt(), 130, "interrupted"),
]


@pytest.mark.parametrize(("name", "exc", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_each_failure_has_its_code_and_line(name, exc, code, words):
    failure = classify(exc, "/run")
    assert failure.code == code and words in failure.message, failure
    assert "\n" not in failure.message
    assert failure.traceback is (code == 1)  # only an unexpected error shows its traceback


def test_torch_distributed_errors_are_retryable():
    from torch.distributed import DistNetworkError, DistStoreError

    assert classify(DistNetworkError("connect() timed out"), "/r").code == 200
    assert classify(DistStoreError("wait timeout"), "/r").code == 200


# ------------------------------------------------------------------ the record


def test_a_record_round_trips_and_blank_or_foreign_text_is_none(tmp_path):
    record = FailureRecord(4, "environment", "no space left on device writing /x: free", 1, 5.0)
    path = tmp_path / "rank1.json"
    rundir.reserve_record(path)
    assert path.stat().st_size == rundir.FAILURE_RECORD_BYTES
    assert FailureRecord.read(path) is None  # reserved, not written
    record.write(path)
    assert FailureRecord.read(path) == record and not record.retryable
    assert path.read_bytes() == record.to_bytes()  # the blank padding is gone
    for text in (b"", b"   ", b"error: disk full\n", b"[]", b'{"code": "x"}', None):
        assert FailureRecord.parse(text) is None
    long = FailureRecord(1, "error", "x" * 10_000)
    assert len(long.to_bytes()) <= rundir.FAILURE_RECORD_BYTES  # the kubelet keeps 4096 bytes
    assert FailureRecord.parse(long.to_bytes()).error.endswith(" ...")


def test_the_record_path_comes_from_the_environment():
    assert rundir.failure_path(3, {}) is None
    env = {rundir.FAILURE_FILE_ENV: "/f/rank{rank}.json"}
    assert rundir.failure_path(3, env) == Path("/f/rank3.json")
    assert rundir.failure_path(0, {rundir.FAILURE_FILE_ENV: "/dev/termination-log"}) == \
        Path("/dev/termination-log")


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_reserved_record_can_be_written_on_a_full_disk(small_disk):
    tiny_tmpfs = small_disk("256k")
    path = tiny_tmpfs / "failures" / "rank0.json"
    rundir.reserve_record(path)
    _fill(tiny_tmpfs)
    with pytest.raises(OSError) as full:  # the disk is full indeed
        (tiny_tmpfs / "another.json").write_bytes(b"x" * 8192)
    assert full.value.errno == errno.ENOSPC
    record = FailureRecord(4, "environment", "no space left on device writing /x: free space")
    record.write(path)
    assert FailureRecord.read(path) == record


@pytest.mark.slow  # the sweep's full-disk test (test_permanent_failures.py) covers it too
def test_a_full_disk_stops_the_trainer_with_code_4_its_line_and_its_record(small_disk, tmp_path,
                                                                            tiny_root):
    """A real worker, its run_dir on a 256 KiB filesystem: the first checkpoint does not fit."""
    run_dir = small_disk("256k") / "run"
    record_path = tmp_path / "records" / "rank0.json"
    rundir.reserve_record(record_path)
    proc = run_cmd([sys.executable, "-m", "trainer", *tiny_overrides(tiny_root, run_dir,
                                                                     "epochs=2")],
                   timeout=300, env=process_env(**{rundir.FAILURE_FILE_ENV: str(
                       tmp_path / "records" / "rank{rank}.json")}))
    assert proc.returncode == 4, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line == (f"error: no space left on device writing {run_dir}/checkpoints/last.pt: free "
                    "space there, or set run_dir (results_dir in a sweep) to a folder on a "
                    "larger disk")
    record = FailureRecord.read(record_path)
    assert record == FailureRecord(4, "environment", line.removeprefix("error: "), 0, record.at)
    assert not list((run_dir / "checkpoints").glob(".last.pt.*"))  # its temporary file removed


@pytest.mark.slow  # ~30 s; the handle's restart after a kill is in the conformance suite
def test_a_killed_peer_leaves_the_survivor_a_retryable_record(tmp_path, tiny_root):
    """Two real workers under torchrun (which waits 5 s before stopping the survivor): rank 1 is
    SIGKILLed after the first checkpoint, rank 0's next collective fails, it records 200."""
    records = tmp_path / "records"
    for rank in (0, 1):
        rundir.reserve_record(records / f"rank{rank}.json")
    run_dir = tmp_path / "run"
    script = tmp_path / "kill_rank1_after_epoch_1.py"
    # A wrapper of the trainer: rank 1 kills itself once epoch 1 is checkpointed.
    script.write_text(
        "import os, signal, sys, threading, time\n"
        "from pathlib import Path\n"
        "if os.environ['RANK'] == '1':\n"
        "    def watch():\n"
        f"        while not Path({str(run_dir)!r}, 'checkpoints', 'last.json').exists():\n"
        "            time.sleep(0.05)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    threading.Thread(target=watch, daemon=True).start()\n"
        "from trainer.__main__ import main\n"
        "main(sys.argv[1:])\n")
    proc = torchrun(["--max-restarts=0", "--monitor-interval=5", str(script),
                     *tiny_overrides(tiny_root, run_dir, "epochs=50")], timeout=600,
                    **{rundir.FAILURE_FILE_ENV: str(records / "rank{rank}.json")})
    assert proc.returncode != 0
    assert FailureRecord.read(records / "rank1.json") is None  # SIGKILL: no word from it
    survivor = FailureRecord.read(records / "rank0.json")
    assert survivor is not None, proc.stderr[-3000:]
    assert survivor.code == 200 and survivor.retryable and survivor.kind == "distributed"
    assert survivor.error.startswith("the process group failed (")
