"""Read scalar series back from TensorBoard event files.

Records are parsed as TensorBoard's ``Event`` protos. The records themselves are read here, not
with TensorBoard's ``RawEventFileLoader``: that loader imports TensorBoard's TensorFlow stub and
numpy (about 0.18 s of every sweep's start-up, bench/trial.py imports this module) for what is a
framing of a few lines (see ``_records``); the tests check that the two read the same records.
Two encodings of a scalar are understood:

* ``simple_value`` (a float32), written by ``SummaryWriter.add_scalar`` by default;
* a single-element numeric ``tensor`` whose tag carries the "scalars" plugin metadata (or the
  scalar data class), written by ``add_scalar(..., new_style=True)`` and by TF2's
  ``tf.summary.scalar``. Such writers may attach the metadata only to the first value of a tag,
  so the metadata seen first is remembered per tag.

Reading stops, as TensorBoard's loader does, at a truncated record or one whose checksum is
wrong; the bytes of the records read are then compared with the file size and the difference
reported. A file that is still being written can also end in a partial record and is then
reported in the same way.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, summary_pb2

EVENT_FILE_PATTERN = "events.out.tfevents.*"
_LENGTH_BYTES, _CRC_BYTES = 8, 4
_HEADER_BYTES = _LENGTH_BYTES + _CRC_BYTES  # the length and its CRC, before the data
_RECORD_FRAMING_BYTES = _HEADER_BYTES + _CRC_BYTES  # and the data's CRC after it
_SCALARS_PLUGIN_NAME = "scalars"


# TFRecord framing, as TensorFlow's TFRecord format documents it: each record is its length (a
# little-endian uint64), the masked CRC-32C of those 8 bytes (uint32), the data, and the masked
# CRC-32C of the data. CRC-32C is the Castagnoli polynomial (reflected, 0x82F63B78); masking
# rotates the CRC right by 15 bits and adds 0xA282EAD8.
def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(data: bytes) -> Iterator[bytes]:
    """The records of a TFRecord file's bytes, up to the first one cut short or with a wrong
    checksum."""
    offset = 0
    while offset + _HEADER_BYTES <= len(data):
        length_bytes = data[offset:offset + _LENGTH_BYTES]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack_from("<I", data, offset + _LENGTH_BYTES)
        end = offset + _HEADER_BYTES + length
        if length_crc != masked_crc32c(length_bytes) or end + _CRC_BYTES > len(data):
            return
        record = data[offset + _HEADER_BYTES:end]
        if struct.unpack_from("<I", data, end)[0] != masked_crc32c(record):
            return
        yield record
        offset = end + _CRC_BYTES


@dataclass
class ScalarPoint:
    """One value of a scalar series."""

    step: int
    wall_time: float
    value: float


@dataclass
class EventScalars:
    """Scalar series read from a log directory.

    ``series`` maps each tag to its points sorted by step (one point per step), ``files`` lists
    the event files in the order they were read, and ``problems`` holds one human-readable line
    per problem met (missing directory, unreadable, truncated or corrupt file).
    """

    series: dict[str, list[ScalarPoint]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def last(self, tag: str) -> float | None:
        """Value at the highest step of ``tag``, or None if the tag has no points."""
        points = self.series.get(tag)
        return points[-1].value if points else None

    def values(self, tag: str) -> list[float]:
        """Values of ``tag`` in step order (empty if the tag is unknown)."""
        return [point.value for point in self.series.get(tag, [])]

    def steps(self, tag: str) -> list[int]:
        """Steps of ``tag`` in increasing order (empty if the tag is unknown)."""
        return [point.step for point in self.series.get(tag, [])]

    def first_wall_time(self, tag: str) -> float | None:
        """Earliest wall time (seconds since the epoch) among the points of ``tag``."""
        points = self.series.get(tag)
        return min(point.wall_time for point in points) if points else None


def _is_scalar_metadata(metadata: summary_pb2.SummaryMetadata) -> bool:
    return (
        metadata.plugin_data.plugin_name == _SCALARS_PLUGIN_NAME
        or metadata.data_class == summary_pb2.DATA_CLASS_SCALAR
    )


class _ScalarCollector:
    """Accumulates scalar points from events, keeping the last-written point per (tag, step)."""

    def __init__(self) -> None:
        self.points: dict[str, dict[int, ScalarPoint]] = {}
        # Whether a tag holds scalars, decided by the first value of the tag that had metadata.
        self.tag_is_scalar: dict[str, bool] = {}

    def add_event(self, event: event_pb2.Event) -> None:
        for value in event.summary.value:
            scalar = self._scalar_of(value)
            if scalar is None:
                continue
            point = ScalarPoint(step=int(event.step), wall_time=event.wall_time, value=scalar)
            by_step = self.points.setdefault(value.tag, {})
            previous = by_step.get(point.step)
            if previous is None or point.wall_time >= previous.wall_time:
                by_step[point.step] = point

    def _scalar_of(self, value: summary_pb2.Summary.Value) -> float | None:
        if value.HasField("metadata") and value.tag not in self.tag_is_scalar:
            self.tag_is_scalar[value.tag] = _is_scalar_metadata(value.metadata)
        kind = value.WhichOneof("value")
        if kind == "simple_value":
            return float(value.simple_value)
        if kind != "tensor" or not self.tag_is_scalar.get(value.tag, False):
            return None
        import numpy as np  # only for tensor-encoded scalars (our trainer writes simple_value)
        from tensorboard.util import tensor_util

        array = tensor_util.make_ndarray(value.tensor)
        if array.size != 1 or not np.issubdtype(array.dtype, np.number):
            return None
        return float(array.reshape(-1)[0])

    def series(self) -> dict[str, list[ScalarPoint]]:
        return {
            tag: sorted(by_step.values(), key=lambda point: point.step)
            for tag, by_step in sorted(self.points.items())
        }


def _read_event_file(path: Path, collector: _ScalarCollector, problems: list[str]) -> None:
    """Feed the events of one file to ``collector``; report damage to ``problems``."""
    bytes_read = 0
    records = 0
    try:
        data = path.read_bytes()
        file_size = len(data)
        for record in _records(data):
            offset = bytes_read
            bytes_read += len(record) + _RECORD_FRAMING_BYTES
            records += 1
            try:
                event = event_pb2.Event.FromString(record)
            except DecodeError:
                problems.append(f"{path}: record at byte {offset} is not an Event; skipped it")
                continue
            collector.add_event(event)
    except Exception as exc:  # one unreadable file must not stop the others
        problems.append(
            f"{path}: reading stopped after {records} records: {type(exc).__name__}: {exc}"
        )
        return
    if bytes_read < file_size:
        problems.append(
            f"{path}: truncated or corrupt record at byte {bytes_read} of {file_size}; "
            f"kept the {records} records before it"
        )


def _event_files(logdir: Path) -> list[Path]:
    """Event files under ``logdir``, ordered by file name (which starts with a timestamp)."""
    files = [path for path in logdir.rglob(EVENT_FILE_PATTERN) if path.is_file()]
    return sorted(files, key=lambda path: (path.name, str(path)))


def read_scalars(logdir: str | os.PathLike[str]) -> EventScalars:
    """Read all scalar series from the event files found recursively under ``logdir``.

    Files are read in file-name order. When a (tag, step) occurs more than once, as when a
    resumed run writes a new file that repeats steps, the point with the latest wall time is
    kept. Series from all files (and subdirectories) are merged by tag. Damaged files do not
    raise: the records before the damage are kept and a line is added to ``problems``.
    """
    root = Path(logdir)
    result = EventScalars()
    if not root.is_dir():
        result.problems.append(f"{root}: log directory does not exist")
        return result
    files = _event_files(root)
    if not files:
        result.problems.append(f"{root}: no {EVENT_FILE_PATTERN} files found")
        return result
    collector = _ScalarCollector()
    for path in files:
        result.files.append(str(path))
        _read_event_file(path, collector, result.problems)
    result.series = collector.series()
    return result
