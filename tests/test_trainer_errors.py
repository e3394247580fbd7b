"""User errors end ``python -m trainer`` with one ``error:`` line and a documented exit code:
2 for a bad configuration, 3 for a damaged dataset or checkpoint (4, the environment, and the
rest: tests/test_exit_codes.py); under torchrun every rank fails the same way, without
hanging (conftest's HANG_S guards against a hang)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import dataset_dir, run_cmd, tiny_overrides, torchrun

from rundir import CHECKPOINT
from trainer.__main__ import main

# (override, text the error line must contain: the key and the bad value or the problem)
BAD_VALUES = [
    ("model.num_layers=0", "model.num_layers=0"),
    ("model.fanouts=[10,5,3]", "model.fanouts"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("dataset=nope", "dataset=nope"),
    ("epochs=abc", "epochs=abc"),
    ("epochs=0", "epochs=0"),
]
IDS = [override.split("=")[0] + "-" + override.split("=")[1] for override, _ in BAD_VALUES]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(("override", "names"), BAD_VALUES, ids=IDS)
def test_bad_value_in_process(override: str, names: str, tmp_path: Path, tiny_root: Path,
                              capsys: pytest.CaptureFixture, no_launcher_env) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(tiny_overrides(tiny_root, run_dir, override))
    assert info.value.code == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and names in lines[0], lines[0]
    assert out == ""
    assert not run_dir.exists()  # failed before writing anything


@pytest.mark.parametrize(
    ("override", "names"),
    [pytest.param(*case, marks=[] if case[0] == "epochs=abc" else [pytest.mark.slow])
     for case in BAD_VALUES],
    ids=IDS,
)
def test_bad_value_exits_2_with_one_line(override: str, names: str, tmp_path: Path,
                                         tiny_root: Path) -> None:
    """The real process: exit status 2 and nothing on stderr but the one line."""
    run_dir = tmp_path / "run"
    proc = run_cmd([sys.executable, "-m", "trainer", *tiny_overrides(tiny_root, run_dir, override)])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and names in lines[0], lines[0]
    assert not run_dir.exists()


def test_bad_value_under_torchrun_fails_every_rank(tmp_path: Path, tiny_root: Path) -> None:
    run_dir = tmp_path / "run"
    proc = torchrun(["-m", "trainer", *tiny_overrides(tiny_root, run_dir, "model.fanouts=[10,5,3]")])
    assert proc.returncode != 0
    errors = _error_lines(proc.stderr)
    # Each rank validates on its own; torchrun stops the group as soon as the first one exits,
    # so the other rank either prints the same line or is terminated before it gets there.
    assert 1 <= len(errors) <= 2, proc.stderr
    assert all("model.fanouts has 3 entries but model.num_layers=2" in e for e in errors)
    assert "[rank0]: Traceback" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr
    assert not run_dir.exists()


def _garbage_checkpoint(run_dir: Path, data: bytes) -> Path:
    path = run_dir / CHECKPOINT
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


GARBAGE = b"this is not a checkpoint\n" * 40


def test_corrupt_checkpoint_exits_3(tmp_path: Path, tiny_root: Path,
                                    capsys: pytest.CaptureFixture, no_launcher_env) -> None:
    """In process (the exit status is SystemExit's code); the torchrun variant is slow."""
    run_dir = tmp_path / "run"
    path = _garbage_checkpoint(run_dir, GARBAGE)
    with pytest.raises(SystemExit) as info:
        main(tiny_overrides(tiny_root, run_dir))
    assert info.value.code == 3
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: checkpoint {path} cannot be loaded")
    assert "delete it" in lines[0]
    assert "epoch " not in out  # no training happened
    assert path.read_bytes() == GARBAGE  # left for the user to inspect, not overwritten
    assert not (run_dir / "summary.json").exists()


@pytest.mark.slow
def test_corrupt_checkpoint_under_torchrun_fails_every_rank(tmp_path: Path,
                                                            tiny_root: Path) -> None:
    """Both ranks have joined the process group when they find the damage: none may hang."""
    run_dir = tmp_path / "run"
    path = _garbage_checkpoint(run_dir, GARBAGE)
    proc = torchrun(["-m", "trainer", *tiny_overrides(tiny_root, run_dir)])
    assert proc.returncode != 0
    errors = _error_lines(proc.stderr)
    assert len(errors) == 2, proc.stderr
    assert all(e.startswith(f"error: checkpoint {path} cannot be loaded") for e in errors)
    assert "exitcode  : 3" in proc.stderr


def test_empty_checkpoint_exits_3(tmp_path: Path, tiny_root: Path,
                                  capsys: pytest.CaptureFixture, no_launcher_env) -> None:
    run_dir = tmp_path / "run"
    path = _garbage_checkpoint(run_dir, b"")
    with pytest.raises(SystemExit) as info:
        main(tiny_overrides(tiny_root, run_dir))
    assert info.value.code == 3
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint {path} cannot be loaded")


def test_corrupt_dataset_cache_exits_3(private_root: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture, no_launcher_env) -> None:
    cache = dataset_dir(private_root) / "cache"
    (cache / "indptr.npy").write_bytes((cache / "indptr.npy").read_bytes()[:200])
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(tiny_overrides(private_root, run_dir))
    assert info.value.code == 3
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: the dataset cache {cache} is corrupt")
    assert "delete that folder" in lines[0]
