"""The process that writes a multirun's report (its callback: bench/callbacks.py).

Importing the report's libraries (pandas, matplotlib) takes 0.5-0.7 s of one core, and the
trials must have the machine to themselves, so a sweep (``bench.sweep`` with ``-m``) forks a
:class:`ReportProcess` first thing, before it imports Hydra: the child makes that import on a
core the harness leaves idle, and then sleeps until the sweep ends and sends it the sweep's
folder. Idle means while the sweep starts (composing and checking every job, one core) and
between trials: a trial that starts before the import is over stops the child (SIGSTOP,
:meth:`ReportProcess.pause`) and continues it when it ends (:meth:`ReportProcess.resume`), so
no trial shares the machine with it and none waits for it. Without one (a report callback in a
test, a platform without ``fork``) the report is written in this process.

This module imports only the standard library, so that the fork comes before anything heavy.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import multiprocessing as mp
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection, wait
from typing import Any

from bench.parent_death import die_with_parent

# PNG only: SVG would add about half the rendering time, and `python -m bench.report` writes it.
SWEEP_FORMATS = ("png",)


def write_sweep_report(sweep_dir: str) -> None:
    """The full report (tables, plots, scaling fits, report.md); Table 1 printed."""
    # matplotlib, pandas and scipy only when a sweep ends (or in the report process)
    from bench.report import NoResultsError, write_report, write_table

    try:
        table = write_report(sweep_dir, formats=SWEEP_FORMATS).table_md
    except NoResultsError as exc:  # no trial ran
        print(f"no table: {exc}", file=sys.stderr)
        return
    except Exception as exc:  # a broken plot must not hide the sweep's numbers
        print(f"report incomplete ({type(exc).__name__}: {exc}); writing the table only",
              file=sys.stderr)
        try:
            table = write_table(sweep_dir)
        except Exception as again:  # the results stay on disk for python -m bench.report
            print(f"no table: {type(again).__name__}: {again}", file=sys.stderr)
            return
    print(f"\nTable 1 ({sweep_dir}/table.md):\n\n{table}", flush=True)
    print(f"Report: {sweep_dir}/report.md (python -m bench.report {sweep_dir} rebuilds it)",
          flush=True)


# Hydra's options that only print (--help, --hydra-help, --cfg, --info, --shell-completion).
PRINTS_ONLY_OPTIONS = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc",
                       "--shell-completion")


def asks_for_multirun(argv: list[str]) -> bool:
    """Whether a command line runs a multirun (``-m``), read before Hydra is imported; a guess
    bench.sweep checks once Hydra has read the command line (bench.preflight)."""
    words = {arg.split("=", 1)[0] for arg in argv if arg.startswith("-")}
    return bool(words & {"-m", "--multirun"}) and not words & set(PRINTS_ONLY_OPTIONS)


class ReportProcess:
    """A child forked before anything else runs that imports the report and waits for the
    sweep's folder; ``start()`` is None where it cannot be forked safely."""

    def __init__(self, process: Any, conn: Connection):
        self.process, self.conn = process, conn
        self.armed: bool | None = None  # whether it dies with this process (its first word)
        self.ready = self.done = self.stopped = False

    @classmethod
    def start(cls) -> ReportProcess | None:
        # A fork copies only the forking thread: with others running it could copy a held lock.
        if threading.active_count() > 1 or "fork" not in mp.get_all_start_methods():
            return None
        ours, theirs = mp.get_context("fork").Pipe()
        # Not a daemon: its renderers are its children, which a daemon may not have.
        process = mp.get_context("fork").Process(target=_serve, args=(theirs, ours, os.getpid()),
                                                 name="report")
        process.start()
        theirs.close()
        started = cls(process, ours)
        atexit.register(started.close)  # before multiprocessing's exit handler joins it
        return started

    def wait_ready(self) -> None:
        """Block until the child has imported the report (or died: then it is not used)."""
        self.resume()
        if not self.ready and self._greeted():
            wait([self.conn, self.process.sentinel])
            self.ready = True

    def pause(self) -> None:
        """A trial is about to start: stop the child if its import is not over yet (or, where
        it would not die with this process, wait for the import)."""
        if self.ready or self.stopped or not self._greeted():
            return
        if self.conn.poll():  # it said it is ready (the message stays for write())
            self.ready = True
        elif self.armed:
            os.kill(self.process.pid, signal.SIGSTOP)
            self.stopped = True
        else:
            self.wait_ready()

    def _greeted(self) -> bool:
        """Whether the child is alive, its first word (a few milliseconds after the fork:
        whether it dies with this process) read."""
        if self.armed is None and self.process.is_alive():
            try:
                wait([self.conn, self.process.sentinel])
                if self.conn.poll():
                    self.armed = self.conn.recv() == "armed"
            except (EOFError, OSError):
                pass
        return self.armed is not None and self.process.is_alive()

    def resume(self) -> None:
        """The trial has ended: the child goes on with its import."""
        if self.stopped:
            self.stopped = False
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)

    def write(self, sweep_dir: str) -> bool:
        """Have the child write the report of ``sweep_dir`` (it prints Table 1 itself); False
        when it could not (it died), so that the caller writes it here."""
        try:
            self.wait_ready()
            if self.armed is None or self.conn.recv() != "ready":
                return False
            sys.stdout.flush()
            sys.stderr.flush()
            self.conn.send(sweep_dir)
            self.done = self.conn.recv() == "done"
            return self.done
        except (EOFError, OSError):
            return False
        finally:
            self.close()

    def close(self) -> None:
        """Done with it: a child that has not written a report (the sweep failed or was
        interrupted, even while it was writing) is stopped at once; one that has is on its way
        out."""
        if self.conn.closed:
            return
        self.conn.close()
        if not self.done:
            self.process.kill()
        self.process.join()


def _serve(conn: Connection, parents_end: Connection, sweep: int) -> None:
    """The report process: import, say ready, write the one report it is sent, exit. It ends
    as well when the sweep goes away without sending one (its end of the pipe closes)."""
    parents_end.close()  # or the pipe would never reach end-of-file here
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the sweep's to handle
    try:
        # SIGKILLed when the sweep dies, even by SIGKILL: stopped (pause), it would not see its
        # pipe close. Where that cannot be armed, it is never stopped.
        conn.send("armed" if die_with_parent(sweep, signal.SIGKILL) else "unarmed")
    except OSError:
        return
    # No garbage collection in this process, which imports, writes one report and exits: the
    # import's ~170k new objects set off ~250 collections that free nothing (0.09 s of its 0.7 s,
    # median of 12 runs each way; trainer/__main__.py does the same for torch's), and a report's
    # garbage is a few figures. Frozen afterwards, the import's objects stay out of any
    # collection a renderer (forked at the end) might make, and so do their pages.
    gc.disable()
    # One BLAS thread: the report's arithmetic is a few fits of a few points, and OpenBLAS
    # starting its pool is a quarter of numpy's import (0.09 -> 0.07 s, median of 6 runs each).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        import bench.report  # noqa: F401  the import this process is for
    except ImportError:
        return
    gc.freeze()
    try:
        conn.send("ready")
        sweep_dir = conn.recv()
    except (EOFError, OSError):
        return
    write_sweep_report(sweep_dir)
    sys.stdout.flush()
    conn.send("done")


# The sweep's report process, if bench.sweep started one (only in its main process).
REPORT_PROCESS: ReportProcess | None = None
