"""What every benchmark shares: the graph it runs on, a clock, and how figures are stored."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def provenance() -> dict[str, Any]:
    """Command, commit, hardware and versions, stored beside every figure."""
    from bench.result import env_info

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=REPO, capture_output=True, text=True, timeout=10).stdout)
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        threads = None
    return {
        "command": " ".join([Path(sys.executable).name, "-m", *_module_argv()]),
        "commit": commit + ("-dirty" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        **env_info(),
        "machine": platform.machine(),
    }


def _module_argv() -> list[str]:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = spec.name if spec is not None else Path(sys.argv[0]).stem
    return [name, *sys.argv[1:]]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def save(name: str, figures: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` (figures + provenance) and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"benchmark": name, "figures": figures,
                               "provenance": provenance()}, indent=2, default=str) + "\n")
    tmp.replace(path)
    print(f"saved {path.relative_to(REPO)}", flush=True)
    return path


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall seconds."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def line(label: str, value: Any, unit: str = "") -> None:
    """One printed figure, aligned."""
    text = f"{value:,.4g}" if isinstance(value, float) else str(value)
    print(f"  {label:<48} {text} {unit}".rstrip(), flush=True)


def ratio(label: str, ours: float, reference: float, target: float | None = None,
          higher_is_better: bool = True) -> dict[str, Any]:
    """Print and return ``ours / reference`` with its target (met or not)."""
    value = ours / reference if reference else float("inf")
    met = None if target is None else (value >= target if higher_is_better else value <= target)
    verdict = "" if met is None else (f"  target {'>=' if higher_is_better else '<='} {target:g}: "
                                      f"{'MET' if met else 'NOT MET'}")
    print(f"  {label:<48} {value:.3g}x{verdict}", flush=True)
    return {"value": value, "target": target, "met": met}


def load_graph(dataset: str = "medium", data_root: str | None = None):
    """The trainer's Graph for a dataset preset (generated on first use, then cached)."""
    from trainer.config import compose
    from trainer.data.dataset import load_graph as load

    cfg = compose([f"dataset={dataset}"] + ([f"data_root={data_root}"] if data_root else []))
    return load(cfg.dataset, cfg.data_root)


def one_worker_trainer(cfg):
    """Our Trainer set up as a single worker (whatever launcher started us), and the seconds
    its setup took: the start of every benchmark that times the trainer's own steps."""
    from trainer.train import Trainer

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(var, None)
    trainer = Trainer(cfg)
    started = time.perf_counter()
    trainer.setup()
    return trainer, time.perf_counter() - started


def trainer_config(dataset: str, run_dir: str, seed: int, threads: int,
                   data_root: str | None = None):
    """The trainer's composed config for a one-worker benchmark run."""
    from trainer.config import compose

    overrides = [f"dataset={dataset}", f"run_dir={run_dir}", f"seed={seed}",
                 f"train.threads={threads}"]
    return compose(overrides + ([f"data_root={data_root}"] if data_root else []))
