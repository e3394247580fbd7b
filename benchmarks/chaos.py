"""Benchmark 9: a chaos soak of the harness on this machine.

    python -m benchmarks.chaos --seed 1 [--workers 1,2] [--seeds 0,1,2,3] [--epochs 5]

A sweep of ``len(workers) x len(seeds)`` tiny trials (8 by default) is run twice with the local
backend: once without faults (the reference), then under random faults drawn from ``--seed``:

* ``worker``: a running trainer worker is SIGKILLed: its torchrun attempt fails, the harness
  starts another (within the default ``backend.backoff_limit=3``), the trainer resumes from its
  checkpoint;
* ``harness-kill``: a harness running a trial is SIGKILLed (its torchrun follows it by
  PR_SET_PDEATHSIG) and a new one is started on the same sweep, which takes the trial over;
* ``sigint``: a harness running a trial gets SIGINT (Ctrl-C): it cancels the trial, records it
  as cancelled and exits 130; a new one is started when none is left;
* ``second-harness``: a second harness is started on the same sweep while one runs (it waits
  for the trial the other one owns and follows it).

The kinds come in seeded shuffled cycles (worker, worker, worker, harness-kill, sigint,
second-harness), so every kind is thrown; a due fault waits for a target (``--target-wait``) and
a trial takes at most ``--faults-per-trial`` faults, so the faults spread over the sweep. The
seed fixes the draws (the order, the targets, the gaps); what a fault hits also depends on
timing. The soak ends when no harness runs and every trial has a result (a harness is started whenever
none runs and the sweep is unfinished). It then checks: exactly one ``result.json`` per trial,
each parseable and ``succeeded``; the faults that hit a trial are in its ``recoveries`` (and a
trial no fault hit has none); every MRR within ``--tolerance`` of the same trial's fault-free
run; no process of the soak left; no trial lock held. It prints the faults injected and
survived, the trials, and the wall time against the fault-free sweep, saves them to
``benchmarks/results/chaos.json`` and exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.owner import held
from benchmarks.common import REPO, line, save

GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


@dataclass
class Fault:
    kind: str  # worker | harness-kill | sigint | second-harness
    at: float  # unix seconds
    trial: str | None  # the trial it hit (None: none was running, or not a trial's fault)
    landed: bool  # the signal reached a process


class Soak:
    """The harnesses of one sweep and the faults thrown at them."""

    def __init__(self, args: argparse.Namespace, work: Path, data_root: Path):
        self.args, self.work, self.data_root = args, work, data_root
        self.rng = random.Random(args.seed)
        self.harnesses: list[subprocess.Popen] = []
        self.started = 0
        self.faults: list[Fault] = []
        self.exits: list[int] = []
        self._reaped: set[int] = set()
        self._schedule: list[str] = []

    def command(self, sweep: str) -> list[str]:
        return [sys.executable, "-m", "bench.sweep", "dataset=tiny",
                f"workers={self.args.workers}", f"seed={self.args.seeds}",
                f"epochs={self.args.epochs}", f"sweep_name={sweep}",
                f"results_dir={self.work / 'res'}", "backend.poll_interval_s=0.2", "-m"]

    def start_harness(self, sweep: str) -> subprocess.Popen:
        self.started += 1
        log = open(self.work / f"{sweep}-harness-{self.started}.log", "wb")  # noqa: SIM115
        env = {**os.environ, "GNN_BENCH_DATA": str(self.data_root)}
        proc = subprocess.Popen(self.command(sweep), cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.harnesses.append(proc)
        return proc

    def running(self) -> list[subprocess.Popen]:
        alive = []
        for proc in self.harnesses:
            code = proc.poll()
            if code is None:
                alive.append(proc)
            elif proc.pid not in self._reaped:
                self._reaped.add(proc.pid)
                self.exits.append(code)
        return alive

    # -- what a fault hits
    def owned_trial(self, pid: int) -> str | None:
        """The unfinished trial whose lock the harness ``pid`` holds (its .lock names its
        owner): the one a fault of that harness interrupts."""
        for lock in (self.work / "res" / "chaos").glob("*/.lock"):
            try:
                if json.loads(lock.read_text())["pid"] != pid:
                    continue
            except (OSError, ValueError, KeyError):
                continue
            try:  # its result written already: the harness was only letting go of it
                if json.loads((lock.parent / "result.json").read_text())["status"] == "succeeded":
                    return None
            except (OSError, ValueError, KeyError):
                pass
            return lock.parent.name
        return None

    def workers(self) -> list[tuple[psutil.Process, str]]:
        """Running trainer workers of the chaos sweep and their trial: children of a torchrun
        agent whose command line names a run_dir under the sweep."""
        sweep = str(self.work / "res" / "chaos")
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                cmd = proc.info["cmdline"] or []
                run_dir = next((a[len("run_dir="):] for a in cmd if a.startswith("run_dir=")), "")
                if not run_dir.startswith(sweep) or "torch.distributed.run" in cmd:
                    continue
                if "torch.distributed.run" in (proc.parent().cmdline() or []):
                    found.append((proc, Path(run_dir).parent.name))
            except GONE:
                continue
        return found

    # -- faults
    KINDS = ("worker", "harness-kill", "worker", "sigint", "worker", "second-harness")

    def next_kind(self) -> str:
        """The kinds in a cycle, each cycle shuffled by the seed: every kind is thrown, workers
        (the faults of the study's demo) most often."""
        if not self._schedule:
            self._schedule = list(self.KINDS)
            self.rng.shuffle(self._schedule)
        return self._schedule.pop()

    def hits(self, trial: str | None) -> int:
        return sum(f.trial == trial and f.landed for f in self.faults)

    def inject(self, kind: str) -> bool:
        """Throw one fault of ``kind`` at what runs now; False when it has no target yet (a
        worker fault needs a running worker, a harness fault a harness that owns a trial; a
        trial already hit ``--faults-per-trial`` times is no target, so that the faults spread
        over the sweep instead of all landing on whichever trial restarts first)."""
        alive = self.running()
        if kind == "worker":
            victims = [(p, t) for p, t in self.workers()
                       if self.hits(t) < self.args.faults_per_trial]
            if not victims:
                return False
            proc, trial = self.rng.choice(victims)
            self.faults.append(Fault("worker", time.time(), trial, _signal(proc, signal.SIGKILL)))
            return True
        if kind in ("harness-kill", "sigint"):
            owners = [(p, t) for p in alive if (t := self.owned_trial(p.pid))
                      and self.hits(t) < self.args.faults_per_trial]  # fmt: skip
            if not owners:
                return False
            proc, trial = self.rng.choice(owners)
            sig = signal.SIGKILL if kind == "harness-kill" else signal.SIGINT
            try:
                os.kill(proc.pid, sig)
                landed = True
            except ProcessLookupError:
                landed = False
            self.faults.append(Fault(kind, time.time(), trial, landed))
            if kind == "harness-kill":
                proc.wait()
                time.sleep(self.rng.uniform(0.0, 2.0))
                self.start_harness("chaos")  # restarted, as a user (or a supervisor) would
            return True
        if kind == "second-harness" and len(alive) == 1:
            self.start_harness("chaos")
            self.faults.append(Fault(kind, time.time(), None, True))
            return True
        return False


def _signal(proc: psutil.Process, sig: int) -> bool:
    try:
        proc.send_signal(sig)  # psutil checks it is still the same process
        return True
    except GONE:
        return False


def results(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for trial in sorted(d for d in sweep_dir.iterdir() if (d / "config.yaml").exists()):
        try:
            out[trial.name] = json.loads((trial / "result.json").read_text())
        except (OSError, ValueError):
            out[trial.name] = {}
    return out


def leftovers(work: Path) -> list[str]:
    """Processes of the soak still running (their command line names its folder), but not
    this one and what started it (e.g. a ``timeout`` around the soak)."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid not in mine and str(work) in " ".join(proc.info["cmdline"] or []):
                found.append(f"{proc.pid}: {' '.join(proc.info['cmdline'])[:120]}")
        except GONE:
            continue
    return found


def run_clean(soak: Soak) -> float:
    started = time.monotonic()
    proc = soak.start_harness("clean")
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"error: the fault-free sweep failed ({proc.returncode}); see "
                         f"{soak.work}/clean-harness-1.log")
    return time.monotonic() - started


def run_chaos(soak: Soak, trials: int, timeout_s: float) -> float:
    started = time.monotonic()
    sweep_dir = soak.work / "res" / "chaos"
    next_fault = time.monotonic() + soak.rng.uniform(*soak.args.gap)
    kind, waited_since = None, None  # the fault due, and since when it waits for a target
    soak.start_harness("chaos")
    while True:
        alive = soak.running()
        done = results(sweep_dir) if sweep_dir.is_dir() else {}
        finished = {t: r for t, r in done.items() if r.get("status") in ("succeeded", "failed")}
        if not alive:
            if len(finished) >= trials:
                break
            if any(r.get("status") == "failed" for r in finished.values()):
                break  # a trial failed: the checks say so (no second chance hides it)
            soak.start_harness("chaos")  # interrupted or killed with the sweep unfinished
            continue
        if time.monotonic() > started + timeout_s:
            for proc in alive:
                proc.kill()
            raise SystemExit(f"error: the chaos sweep did not finish in {timeout_s:.0f} s")
        injected = sum(f.kind != "second-harness" for f in soak.faults)
        now = time.monotonic()
        if now >= next_fault and injected < soak.args.faults:
            kind = kind or soak.next_kind()
            waited_since = waited_since or now
            if soak.inject(kind):
                kind, waited_since = None, None
                next_fault = now + soak.rng.uniform(*soak.args.gap)
            elif now - waited_since > soak.args.target_wait:
                kind, waited_since = None, None  # no target came: the next kind
        time.sleep(0.1)
    return time.monotonic() - started


def check(soak: Soak, clean: dict[str, dict], chaos: dict[str, dict], trials: int,
          tolerance: float) -> list[str]:
    problems = []
    if sorted(clean) != sorted(chaos) or len(chaos) != trials:
        problems.append(f"trials: {len(chaos)} chaos, {len(clean)} fault-free, {trials} expected")
    by_trial = defaultdict(list)
    for fault in soak.faults:
        if fault.landed and fault.trial:
            by_trial[fault.trial].append(fault)
    for trial, result in chaos.items():
        results_here = list((soak.work / "res" / "chaos" / trial).glob("result*.json"))
        if len(results_here) != 1:
            problems.append(f"{trial}: {len(results_here)} result files")
            continue
        if result.get("status") != "succeeded":
            problems.append(f"{trial}: {result.get('status')}: {result.get('reason')}")
            continue
        recoveries = result.get("recoveries") or []
        if by_trial[trial] and not recoveries:
            problems.append(f"{trial}: {len(by_trial[trial])} faults hit it, none recorded")
        if not by_trial[trial] and recoveries:
            problems.append(f"{trial}: no fault hit it, yet it records {recoveries}")
        first_fault = min((f.at for f in by_trial[trial]), default=None)
        if first_fault is not None and any(r["at"] < first_fault for r in recoveries):
            problems.append(f"{trial}: a recovery recorded before the first fault")
        restarts = sum(r["kind"] == "restart" for r in recoveries)
        if result.get("restarts") != restarts:
            problems.append(f"{trial}: restarts {result.get('restarts')} != {restarts} recorded")
        reference = clean.get(trial, {}).get("val_mrr")
        if reference is None or result.get("val_mrr") is None or \
                abs(result["val_mrr"] - reference) > tolerance:
            problems.append(f"{trial}: val MRR {result.get('val_mrr')} vs {reference} fault-free")
    for lock in (soak.work / "res").glob("*/*/.lock"):
        if held(lock):
            problems.append(f"{lock} is still held")
    problems += [f"left running: {p}" for p in leftovers(soak.work)]
    return problems


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="seed of the faults")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--seeds", default="0,1,2,3", help="the trials' seeds")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--faults", type=int, default=16, help="faults to inject at most")
    parser.add_argument("--faults-per-trial", type=int, default=2,
                        help="faults that may hit one trial (worker kills stay within the "
                             "default backend.backoff_limit=3)")
    parser.add_argument("--gap", type=float, nargs=2, default=(3.0, 10.0),
                        help="seconds between faults: uniform in [a, b]")
    parser.add_argument("--target-wait", type=float, default=20.0,
                        help="seconds a fault waits for a target before the next kind is due")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    trials = len(args.workers.split(",")) * len(args.seeds.split(","))
    with tempfile.TemporaryDirectory(prefix="gnn-bench-chaos-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data_root = work / "data"
        subprocess.run([sys.executable, "-m", "trainer.data", "prepare", "dataset=tiny",
                        f"data_root={data_root}"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        soak = Soak(args, work, data_root)
        print(f"fault-free sweep of {trials} trials ...", flush=True)
        clean_s = run_clean(soak)
        print(f"chaos sweep (seed {args.seed}) ...", flush=True)
        soak.harnesses, soak.exits, soak.started = [], [], 0
        chaos_s = run_chaos(soak, trials, args.timeout)
        time.sleep(1.0)  # the last harness's processes are reaped
        clean = results(work / "res" / "clean")
        chaos = results(work / "res" / "chaos")
        problems = check(soak, clean, chaos, trials, args.tolerance)

    injected = Counter(f.kind for f in soak.faults)
    landed = Counter(f.kind for f in soak.faults if f.landed)
    survived = sum(landed.values()) if not problems else 0
    recoveries = Counter(r["kind"] for res in chaos.values() for r in res.get("recoveries") or [])
    line("trials", trials)
    for kind in ("worker", "harness-kill", "sigint", "second-harness"):
        line(f"faults injected / landed: {kind}", f"{injected[kind]} / {landed[kind]}")
    line("faults survived", survived)
    line("recoveries recorded: restart / resume",
         f"{recoveries['restart']} / {recoveries['resume']}")
    line("harness runs (exit code: count)", f"{soak.started} {dict(Counter(soak.exits))}")
    line("wall: fault-free sweep", clean_s, "s")
    line("wall: chaos sweep", chaos_s, "s")
    line("overhead: chaos / fault-free", chaos_s / clean_s, "x")
    worst = max((abs(chaos[t]["val_mrr"] - clean[t]["val_mrr"]) for t in chaos
                 if chaos[t].get("val_mrr") is not None and clean.get(t, {}).get("val_mrr")
                 is not None), default=None)
    line("largest |MRR - fault-free MRR|", worst if worst is not None else "n/a")
    figures = {
        "seed": args.seed, "trials": trials, "epochs": args.epochs,
        "faults": [asdict(f) for f in soak.faults],
        "injected": dict(injected), "landed": dict(landed), "survived": survived,
        "recoveries": dict(recoveries), "harness_exit_codes": soak.exits,
        "wall_clean_s": clean_s, "wall_chaos_s": chaos_s, "overhead": chaos_s / clean_s,
        "max_mrr_difference": worst, "problems": problems,
    }
    save("chaos", figures)
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems), flush=True)
        raise SystemExit(1)
    print("PASSED: every trial once, succeeded, its faults recorded, its MRR as without them; "
          "no process left, no lock held", flush=True)
    return figures


if __name__ == "__main__":
    main()
