"""Tests for bench.events: scalars written by SummaryWriter are read back, damage is reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter

from bench.events import read_scalars


def _f32(x: float) -> float:
    """add_scalar stores simple_value as float32; this is the value that reads back."""
    return float(np.float32(x))


def _write_run(logdir: Path, steps: range, offset: float = 0.0) -> None:
    """Write tags train/loss, val/acc and lr for ``steps`` with one SummaryWriter."""
    writer = SummaryWriter(log_dir=str(logdir))
    for step in steps:
        writer.add_scalar("train/loss", offset + 1.0 / (step + 1), step)
        writer.add_scalar("val/acc", offset + 0.1 * step, step)
        writer.add_scalar("lr", offset + 0.01, step)
    writer.close()


def _only_event_file(logdir: Path) -> Path:
    (path,) = logdir.glob("events.out.tfevents.*")
    return path


def test_reads_back_exact_values_and_steps(tmp_path: Path) -> None:
    _write_run(tmp_path, range(5))
    result = read_scalars(tmp_path)
    assert result.problems == []
    assert result.files == [str(_only_event_file(tmp_path))]
    assert sorted(result.series) == ["lr", "train/loss", "val/acc"]
    assert result.steps("train/loss") == [0, 1, 2, 3, 4]
    assert result.values("train/loss") == [_f32(1.0 / (s + 1)) for s in range(5)]
    assert result.values("val/acc") == [_f32(0.1 * s) for s in range(5)]
    assert result.last("val/acc") == _f32(0.4)
    assert result.last("missing") is None
    assert result.values("missing") == [] and result.steps("missing") == []
    first = result.first_wall_time("lr")
    assert first is not None and first == result.series["lr"][0].wall_time
    wall_times = [point.wall_time for point in result.series["lr"]]
    assert wall_times == sorted(wall_times)


def test_tensor_encoded_scalars_and_non_scalar_tags(tmp_path: Path) -> None:
    writer = SummaryWriter(log_dir=str(tmp_path))
    for step in range(3):
        writer.add_scalar("f32", 0.5 * step, step, new_style=True)
        writer.add_scalar("f64", 0.1 * step, step, new_style=True, double_precision=True)
        writer.add_text("note", "not a number", step)
    writer.close()
    result = read_scalars(tmp_path)
    assert result.problems == []
    assert sorted(result.series) == ["f32", "f64"]  # the text summary is not a scalar
    assert result.values("f32") == [0.0, 0.5, 1.0]
    assert result.values("f64") == [0.0, 0.1, 0.2]  # float64 tensors keep full precision


def test_resumed_run_keeps_newest_value_per_step(tmp_path: Path) -> None:
    _write_run(tmp_path, range(5))
    _write_run(tmp_path, range(3, 7), offset=100.0)  # resumed from step 3 with new values
    result = read_scalars(tmp_path)
    assert result.problems == []
    assert len(result.files) == 2
    assert result.steps("val/acc") == [0, 1, 2, 3, 4, 5, 6]
    expected = [_f32(0.1 * s) for s in range(3)] + [_f32(100.0 + 0.1 * s) for s in range(3, 7)]
    assert result.values("val/acc") == expected
    assert result.last("lr") == _f32(100.01)


def test_truncated_file_keeps_earlier_records(tmp_path: Path) -> None:
    _write_run(tmp_path / "orig", range(5))
    original = _only_event_file(tmp_path / "orig")
    damaged_dir = tmp_path / "damaged"
    damaged_dir.mkdir()
    damaged = damaged_dir / original.name
    shutil.copyfile(original, damaged)
    with open(damaged, "r+b") as handle:
        handle.truncate(damaged.stat().st_size - 7)  # cut into the last record (lr at step 4)

    result = read_scalars(damaged_dir)
    assert result.steps("train/loss") == [0, 1, 2, 3, 4]
    assert result.steps("val/acc") == [0, 1, 2, 3, 4]
    assert result.steps("lr") == [0, 1, 2, 3]
    assert len(result.problems) == 1
    assert damaged.name in result.problems[0]
    assert "truncated" in result.problems[0]


def test_garbage_file_is_reported_without_exception_or_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _write_run(tmp_path, range(2))
    garbage = tmp_path / "events.out.tfevents.0000000000.garbage"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))

    result = read_scalars(tmp_path)
    assert result.files[0] == str(garbage)  # its name sorts first
    assert result.values("lr") == [_f32(0.01), _f32(0.01)]
    assert len(result.problems) == 1
    assert garbage.name in result.problems[0] and "byte 0 of 4096" in result.problems[0]
    assert capfd.readouterr().err == ""


def _tensor_value(tag: str, value: float, with_metadata: bool) -> summary_pb2.Summary.Value:
    proto = summary_pb2.Summary.Value(tag=tag)
    proto.tensor.CopyFrom(tensor_util.make_tensor_proto(np.float32(value)))
    if with_metadata:
        proto.metadata.plugin_data.plugin_name = "scalars"
    return proto


def test_metadata_on_first_value_only_and_undecodable_record(tmp_path: Path) -> None:
    """TF2 writers attach plugin metadata to the first value of a tag only."""
    path = tmp_path / "events.out.tfevents.1700000000.host.1.0"
    with open(path, "wb") as handle:
        records = RecordWriter(handle)
        for step in range(3):
            event = event_pb2.Event(step=step, wall_time=1_700_000_000.0 + step)
            event.summary.value.append(_tensor_value("tf2/loss", step + 0.5, step == 0))
            records.write(event.SerializeToString())
            if step == 1:
                records.write(b"\xff\xff\xff")  # valid framing, not an Event proto

    result = read_scalars(tmp_path)
    assert result.values("tf2/loss") == [0.5, 1.5, 2.5]
    assert result.first_wall_time("tf2/loss") == 1_700_000_000.0
    assert len(result.problems) == 1 and "not an Event" in result.problems[0]


def test_missing_or_empty_logdir(tmp_path: Path) -> None:
    missing = read_scalars(tmp_path / "nope")
    assert missing.series == {} and missing.files == []
    assert len(missing.problems) == 1 and "does not exist" in missing.problems[0]

    empty = read_scalars(tmp_path)
    assert empty.series == {} and len(empty.problems) == 1


def test_time_to_target_is_the_first_epoch_at_or_above_the_target() -> None:
    from bench.events import EventScalars, ScalarPoint
    from bench.trial import time_to_target

    scalars = EventScalars(series={"val/mrr": [
        ScalarPoint(1, 1010.0, 0.10), ScalarPoint(2, 1020.0, 0.31), ScalarPoint(3, 1030.0, 0.29),
        ScalarPoint(4, 1040.0, 0.40)]})
    assert time_to_target(scalars, 0.30, 1000.0) == (20.0, 2)  # not the later, higher epoch
    assert time_to_target(scalars, 0.40, 1000.0) == (40.0, 4)  # >=: reaching it counts
    assert time_to_target(scalars, 0.50, 1000.0) == (None, None)  # never reached
    assert time_to_target(scalars, None, 1000.0) == (None, None)  # no target for the dataset


def _tensorboards_records(path: Path) -> list[bytes]:
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    return list(RawEventFileLoader(str(path)).Load())


def test_the_record_framing_reads_what_tensorboards_own_loader_reads(tmp_path: Path) -> None:
    """bench.events reads TFRecords itself (not with TensorBoard's loader, which imports its
    TensorFlow stub); on a real file, a cut one and one with a flipped bit, it yields the
    records TensorBoard's ``RawEventFileLoader`` yields, and its CRC is the stub's."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as theirs

    from bench.events import _records, masked_crc32c

    for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
        assert masked_crc32c(data) == theirs(data)
    _write_run(tmp_path / "run", range(6))
    original = _only_event_file(tmp_path / "run")
    data = original.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    cases = {"whole": data, "cut": data[:-7], "flipped": bytes(flipped)}
    counts = {}
    for name, content in cases.items():
        path = tmp_path / name / original.name
        path.parent.mkdir()
        path.write_bytes(content)
        ours = list(_records(content))
        assert ours == _tensorboards_records(path), name
        counts[name] = len(ours)
    assert counts["whole"] == 1 + 6 * 3  # the file-version event, then three tags a step
    assert counts["cut"] == counts["whole"] - 1 and 0 < counts["flipped"] < counts["cut"]
