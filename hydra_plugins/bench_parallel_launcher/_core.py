"""The work of the ``bench_parallel`` launcher: one process per running trial.

Processes, not threads: Hydra keeps the current job's config in a process-wide singleton
(``HydraConfig``), and a Ctrl-C reaches every trial's process, so each cancels its own job.
Processes are started with ``spawn`` (safe on every platform); each receives Hydra's global
state, as Hydra's joblib launcher passes it (less OmegaConf's resolvers, which are closures that
only cloudpickle can carry: ``setup_globals`` registers Hydra's again, and the config carries
its resolver cache, so ``${now:...}`` keeps the parent's value), and finds the task function
by name.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.basecontainer import BaseContainer

log = logging.getLogger(__name__)


def launch_parallel(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[JobReturn]:
    """Run the jobs in a pool of ``launcher.max_parallel`` processes; results in job order.

    Ctrl-C reaches every process of the terminal's group: each running trial cancels its job and
    records itself (as it does without this launcher), no further trial starts, and the
    interrupt is raised here once the running ones are done.
    """
    setup_globals()
    config: DictConfig = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    task = launcher.task_function
    task_ref = (task.__module__, task.__qualname__)
    workers = min(launcher.max_parallel, len(job_overrides))
    print(f"Launching {len(job_overrides)} trials, {workers} at a time", flush=True)
    for i, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + i, " ".join(filter_overrides(overrides)))
    singletons = Singleton.get_state()["instances"]
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(stop,)
    ) as pool:
        futures = [
            pool.submit(
                run_one,
                initial_job_idx + i,
                [*overrides, *launcher.extra_overrides],
                launcher.hydra_context,
                config,
                task_ref,
                singletons,
            )
            for i, overrides in enumerate(job_overrides)
        ]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            stop.set()
            for future in futures:
                future.cancel()
            print("interrupted: waiting for the running trials to cancel their jobs", flush=True)
            wait(futures)
            raise


_STOP: Any = None  # set in each pool process: the sweep was interrupted, start no more trials


def _init_worker(stop: Any) -> None:
    """A pool process ignores Ctrl-C while idle (it would break the pool); trials handle it."""
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def find_task(module_name: str, qualname: str) -> Callable[[DictConfig], Any]:
    """The task function by its module and name, under a ``@hydra.main`` wrapper if it has one
    (bench.sweep applies the decorator in ``main()``, so its ``_trial`` has none); ``__main__``
    is the spawned main."""
    found = functools.reduce(getattr, qualname.split("."), importlib.import_module(module_name))
    return inspect.unwrap(found)


def run_one(
    idx: int,
    overrides: list[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_ref: tuple[str, str],
    singletons: dict[Any, Any],
) -> JobReturn:
    """One job in a pool process, as Hydra's basic launcher runs it in its own."""
    if _STOP is not None and _STOP.is_set():
        raise KeyboardInterrupt("the sweep was interrupted before this trial started")
    setup_globals()
    Singleton.set_state({"instances": singletons, "omegaconf_resolvers": BaseContainer._resolvers})
    sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ret = run_job(
            hydra_context=hydra_context,
            task_function=find_task(*task_ref),
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except KeyboardInterrupt:
        if _STOP is not None:
            _STOP.set()
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Back to the parent as plain configs: the typed ones name config classes that Hydra's
    # plugin scan re-created in this process, which pickle refuses to send.
    ret.cfg = _plain(ret.cfg)
    ret.hydra_cfg = _plain(ret.hydra_cfg)
    return ret


def _plain(cfg: Any) -> Any:
    if not isinstance(cfg, DictConfig):
        return cfg
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
