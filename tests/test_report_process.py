"""The process a sweep forks at its start to write its report (bench/report_process.py).

Each case runs in a fresh interpreter (a fork needs a process without other threads, which
pytest's may have), on a hand-made sweep folder.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from test_report import write_trial

_SCRIPT = """
import json, os, signal, sys, time
import psutil
from omegaconf import OmegaConf
from bench import callbacks, report_process

case, sweep = sys.argv[1], sys.argv[2]
report = report_process.ReportProcess.start()
print(json.dumps({"child": report.process.pid}), flush=True)
if case == "callback":
    report.wait_ready()
    os.kill(report.process.pid, signal.SIGINT)  # a Ctrl-C reaches it too: it is the sweep's
    report_process.REPORT_PROCESS = report
    folder = os.path.dirname(sweep)
    callbacks.ReportCallback().on_multirun_end(
        OmegaConf.create({"results_dir": folder, "sweep_name": os.path.basename(sweep)}))
elif case == "died":
    report.process.kill()
    report.process.join()
    print(json.dumps({"wrote": report.write(sweep)}), flush=True)
elif case == "paused":  # a trial starts before the child's import is over, then ends
    report.pause()
    stopped = psutil.Process(report.process.pid).status()
    time.sleep(1.0)  # more than its import needs when it runs; stopped, it cannot say ready
    print(json.dumps({"stopped": stopped, "ready_while_stopped": report.conn.poll()}),
          flush=True)
    report.resume()
    print(json.dumps({"after": psutil.Process(report.process.pid).status()}), flush=True)
    report.pause()  # the next trial: stopped again, and the end continues it
    report_process.REPORT_PROCESS = report
    callbacks.ReportCallback().on_multirun_end(OmegaConf.create(
        {"results_dir": os.path.dirname(sweep), "sweep_name": os.path.basename(sweep)}))
elif case == "pause_when_ready":  # a trial after the import: the child is left alone
    report.pause()  # a first trial, early: its first word read, stopped and continued
    report.resume()
    while not report.conn.poll(0.1):  # its next word: ready
        pass
    report.pause()
    print(json.dumps({"stopped": psutil.Process(report.process.pid).status(),
                      "wrote": report.write(sweep)}), flush=True)
elif case == "killed_while_paused":  # the sweep dies by SIGKILL with its child stopped
    report.pause()
    os.kill(os.getpid(), signal.SIGKILL)
elif case == "unused":
    report.close()
elif case == "exit":
    raise SystemExit(2)  # as a refused sweep exits: its atexit handler stops the child
print(json.dumps({"exitcode": report.process.exitcode,
                  "pandas_here": "pandas" in sys.modules}), flush=True)
"""


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    folder = tmp_path / "res" / "s"
    for workers in (1, 2):
        write_trial(folder, workers, 2, 0, 10.0 / workers)
    return folder


def _run(case: str, sweep: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str],
                                                              list[dict]]:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, case, str(sweep)], capture_output=True,
                         text=True, timeout=timeout, cwd=Path(__file__).parent.parent)
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return out, records


def test_the_report_is_written_by_the_child_which_ignores_ctrl_c(sweep):
    out, records = _run("callback", sweep)
    assert out.returncode == 0, out.stderr
    assert "Table 1" in out.stdout and "| 1 | 2 |" in out.stdout  # printed by the child
    assert (sweep / "report.md").is_file() and (sweep / "plots" / "time_vs_workers.png").is_file()
    assert not list(sweep.glob("plots/*.svg"))  # a sweep's end draws PNG only
    assert records[-1] == {"exitcode": 0, "pandas_here": False}  # the parent never loaded it


def test_a_trial_stops_a_child_still_importing_and_the_child_goes_on_after_it(sweep):
    out, records = _run("paused", sweep)
    assert out.returncode == 0, out.stderr
    assert {"stopped": "stopped", "ready_while_stopped": False} in records
    assert {"after": "stopped"} not in records and any("after" in r for r in records)
    # stopped again for a second trial, the end of the sweep continues it: it writes the report
    assert "Table 1" in out.stdout and (sweep / "report.md").is_file()
    assert records[-1] == {"exitcode": 0, "pandas_here": False}


def test_a_trial_after_the_childs_import_leaves_it_running(sweep):
    out, records = _run("pause_when_ready", sweep)
    assert out.returncode == 0, out.stderr
    assert records[1]["wrote"] is True and records[1]["stopped"] != "stopped"
    assert (sweep / "report.md").is_file()


def test_a_stopped_child_dies_with_a_sweep_killed_by_sigkill(sweep):
    # (A child left stopped would hold the output pipe open: the run would time out.)
    out, records = _run("killed_while_paused", sweep, timeout=120)
    assert out.returncode == -9
    # Its parent's death sends it SIGKILL (PR_SET_PDEATHSIG): stopped, it would not see its
    # pipe close, and would stay (reparented, stopped) for ever.
    pid = records[0]["child"]
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        psutil.Process(pid).wait(timeout=30)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_a_child_that_died_leaves_the_report_to_the_caller(sweep):
    out, records = _run("died", sweep)
    assert out.returncode == 0, out.stderr
    assert {"wrote": False} in records
    assert not (sweep / "report.md").exists()


@pytest.mark.parametrize("case", ["unused", "exit"])
def test_a_sweep_that_ends_without_a_report_stops_the_child_at_once(sweep, case):
    out, records = _run(case, sweep)
    assert out.returncode == (0 if case == "unused" else 2), out.stderr
    if case == "unused":
        assert records[-1]["exitcode"] == -9  # killed, not left to finish its import
    child = records[0]["child"]
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    assert not (sweep / "report.md").exists()


def test_no_child_is_forked_from_a_process_with_threads():
    script = ("import threading, time; from bench.report_process import ReportProcess; "
              "threading.Thread(target=time.sleep, args=(5,), daemon=True).start(); "
              "print(ReportProcess.start())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


@pytest.mark.parametrize(("argv", "multirun"), [
    (["workers=2,4", "-m"], True),
    (["--multirun", "epochs=3"], True),
    (["workers=2"], False),
    (["-m", "--cfg", "job"], False),  # prints only
    (["--help", "-m"], False),
    (["--info=config", "-m"], False),
    (["sweep_name=-m"], False),  # a value, not the flag
])
def test_the_early_guess_of_a_multirun(argv, multirun):
    from bench.report_process import asks_for_multirun

    assert asks_for_multirun(argv) is multirun


def test_the_fork_comes_before_hydra_and_the_child_never_imports_it():
    """bench.sweep forks the report process before importing Hydra: the modules that fork it
    and the report the child imports must not import Hydra themselves (it would be 0.2 s of
    the child's start-up, or of the sweep's before the fork)."""
    script = ("import sys, bench.sweep, bench.report_process; before = 'hydra' in sys.modules; "
              "import bench.report; print(before, 'hydra' in sys.modules, 'omegaconf' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_the_guess_knows_every_option_of_hydra_that_only_prints():
    """The early guess's list is Hydra's: every spelling of the options whose presence
    bench.preflight.prints_only reads off Hydra's own parser."""
    import argparse

    from hydra._internal.utils import get_args_parser

    from bench.preflight import prints_only
    from bench.report_process import PRINTS_ONLY_OPTIONS

    actions = [a for a in get_args_parser()._actions if a.option_strings and a.dest != "multirun"]
    printing = []
    for action in actions:
        args = argparse.Namespace(**{a.dest: a.default for a in actions})
        setattr(args, action.dest, action.const if action.const is not None else "x")
        if prints_only(args):
            printing.append(action)
    assert {a.dest for a in printing} == {"cfg", "help", "hydra_help", "info", "shell_completion"}
    assert {s for a in printing for s in a.option_strings} == set(PRINTS_ONLY_OPTIONS)
