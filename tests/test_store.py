"""Tests for rundir's atomic writes and bench.store: atomic writes survive failures and kills, keys are stable."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rundir as store
from bench.store import config_key, read_json
from rundir import atomic_copy, atomic_write_bytes, atomic_write_json, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]


def _strict_json_loads(text: str) -> object:
    """json.loads that rejects the non-standard NaN/Infinity tokens."""

    def reject(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


def test_writes_create_parent_dirs_and_replace_content(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    atomic_write_text(tmp_path / "t.txt", "héllo\nworld")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\nworld".encode()
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_json_keeps_key_order_and_turns_non_finite_into_null(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    obj = {"z": 1, "a": math.nan, "m": [1.5, math.inf, (-math.inf, 2)], "d": {"x": math.nan}}
    atomic_write_json(target, obj)
    text = target.read_text()
    loaded = _strict_json_loads(text)
    assert loaded == {"z": 1, "a": None, "m": [1.5, None, [None, 2]], "d": {"x": None}}
    assert list(loaded) == ["z", "a", "m", "d"]
    assert text.startswith('{\n  "z": 1,')
    assert math.isnan(obj["a"])  # the caller's object is not modified
    assert read_json(target) == loaded


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "result.json"
    atomic_write_json(target, {"version": 1})
    original = target.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(store.os, failing, boom)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_json(target, {"version": 2})
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_bytes(tmp_path / "new.bin", b"data")
    monkeypatch.undo()

    assert target.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_atomic_copy(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    dst = tmp_path / "copies" / "dst.bin"
    atomic_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing", dst)
    assert dst.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["dst.bin"]


# Writes version i as (SIZE + i) bytes all equal to i % 256, so a reader can tell whether the
# file it sees is one complete version.
_WRITER_SCRIPT = """
import sys
from rundir import atomic_write_bytes
target, size = sys.argv[1], int(sys.argv[2])
i = 0
while True:
    atomic_write_bytes(target, bytes([i % 256]) * (size + i))
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


def test_sigkill_during_writes_never_leaves_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    size = 4 * 2**20
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER_SCRIPT, str(target), str(size)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(0.4)  # let it be in the middle of a later write
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        assert writer.stdout is not None
        writer.stdout.close()

    data = target.read_bytes()
    version = len(data) - size
    assert version >= 1  # the writer got past the first version
    assert data == bytes([version % 256]) * len(data)
    # A kill cannot clean up, so at most one hidden temp file may be left behind.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "big.bin"]
    assert len(leftovers) <= 1
    assert all(name.startswith(".big.bin.") and name.endswith(".tmp") for name in leftovers)
    # ...which the next owner of the folder removes, and nothing else.
    (tmp_path / ".lock").write_text("")
    (tmp_path / "keep.tmp").write_text("")  # not hidden: not a temporary file of ours
    (tmp_path / ".config.yaml.x1y2.tmp").write_text("half")
    removed = store.remove_partial_writes(tmp_path)
    assert sorted(p.name for p in removed) == sorted([*leftovers, ".config.yaml.x1y2.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "big.bin", "keep.tmp"]


def test_config_key_is_stable_and_canonical() -> None:
    a = {"model": {"hidden": 256, "layers": 3}, "lr": 0.001, "workers": [1, 2]}
    b = {"workers": [1, 2], "lr": 0.001, "model": {"layers": 3, "hidden": 256}}
    key = config_key(a)
    assert key == config_key(b)
    assert len(key) == 12 and all(c in "0123456789abcdef" for c in key)
    canonical = b'{"lr":0.001,"model":{"hidden":256,"layers":3},"workers":[1,2]}'
    assert key == hashlib.sha256(canonical).hexdigest()[:12]
    assert config_key({**a, "lr": 0.002}) != key
    assert config_key({**a, "workers": [2, 1]}) != key


def test_read_json_tolerates_missing_and_corrupt_files(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    atomic_write_json(good, {"a": [1, 2, 3], "b": "x"})
    assert read_json(good) == {"a": [1, 2, 3], "b": "x"}

    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(good.read_bytes()[:-5])
    assert read_json(truncated) is None

    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff\xfe\x00garbage")
    assert read_json(garbage) is None

    not_an_object = tmp_path / "list.json"
    not_an_object.write_text("[1, 2]")
    assert read_json(not_an_object) is None

    assert read_json(tmp_path / "missing.json") is None
