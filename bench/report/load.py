"""Loading a sweep: every trial's ``result.json`` as one row of a pandas DataFrame.

A trial folder is a sub-folder of the sweep that holds a ``result.json`` or a ``config.yaml``
(the harness writes the config first and the result last). A folder with a config but no
readable result is a trial that is still running, was killed, or whose result file is
damaged: it is kept as a row with ``status == "incomplete"`` so that nothing is dropped
silently.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.layout import TrialDir
from bench.result import TrialResult, numeric_fields
from bench.store import WHERE_AND_HOW, read_json

# Table dimensions of their own (nullable ints) rather than part of a trial's "setting".
IDENTITY_FIELDS = ("workers", "epochs", "seed")
# Fields of result.json that are numbers (NaN where missing), from the schema.
NUMERIC_FIELDS = tuple(f for f in numeric_fields() if f not in IDENTITY_FIELDS)


class NoResultsError(FileNotFoundError):
    """The sweep folder does not exist or holds no trial."""


def load_sweep(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per trial of ``results/<sweep>``: the fields of its ``result.json`` plus

    * ``trial_dir``: the trial's folder (str);
    * ``setting``: what distinguishes the trial from others of the sweep besides workers, epochs
      and seed, as ``key=value`` words (e.g. ``dataset=tiny``), or ``""`` when the sweep varies
      nothing else. Repeats are the trials with the same setting, epochs and workers;
    * ``memory_mib_peak``: the highest peak RSS among the trial's workers.

    Nested fields (``curves``, ``cpu_cores``, ``memory_mib``, ``config``, ``env``) stay as
    Python objects. Trials without a readable result have ``status == "incomplete"`` and a
    ``reason``. Rows are sorted by setting, epochs, workers and seed; ``df.attrs["sweep_dir"]``
    holds the folder. Raises ``NoResultsError`` when there is no trial at all.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise NoResultsError(
            f"{root} is not a folder: give the folder of a sweep, e.g. results/<sweep_name>"
        )
    records = [_read_trial(d) for d in _trial_dirs(root)]
    if not records:
        raise NoResultsError(
            f"no result.json under {root}: run a sweep into it first "
            f"(python -m bench.sweep ... results_dir={root.parent} sweep_name={root.name} -m)"
        )
    df = pd.DataFrame.from_records(records)
    df = _normalise(df)
    df["setting"] = setting_labels(df)
    df = df.sort_values(["setting", "epochs", "workers", "seed", "trial_id"], na_position="last")
    df = df.reset_index(drop=True)
    df.attrs["sweep_dir"] = str(root)
    return df


def load_resources(trial_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """A trial's ``resources.csv`` (t, worker, cpu_cores, rss_mib); empty if it has none.

    ``t`` is seconds since the sampler started (right after submission); ``cpu_cores`` is NaN
    for a worker's first sample.
    """
    path = TrialDir(Path(trial_dir)).resources
    columns = ["t", "worker", "cpu_cores", "rss_mib"]
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=columns)
    frame = pd.read_csv(path)
    for column in ("t", "cpu_cores", "rss_mib"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def _trial_dirs(root: Path) -> list[Path]:
    return sorted(
        d
        for d in root.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and (TrialDir(d).result.exists() or TrialDir(d).config.exists())
    )


def _read_trial(trial_dir: Path) -> dict[str, Any]:
    """The result of one trial folder, or an ``incomplete`` record built from its config."""
    folder = TrialDir(trial_dir)
    result = read_json(folder.result)
    if result is not None:
        record = TrialResult.from_json(result).to_json()
    else:
        config = _read_config_yaml(folder.config)
        why = (
            "result.json is unreadable (damaged)"
            if folder.result.exists()
            else "no result.json: the trial is still running or was interrupted"
        )
        record = {
            "status": "incomplete",
            "reason": why,
            "trial_id": trial_dir.name,
            **{k: config.get(k) for k in IDENTITY_FIELDS},
            "dataset": (config.get("dataset") or {}).get("name"),
            "model": (config.get("model") or {}).get("name"),
            "backend": (config.get("backend") or {}).get("name"),
            "config": config,
        }
    record["trial_id"] = record.get("trial_id") or trial_dir.name
    record["trial_dir"] = str(trial_dir)
    record["memory_mib_peak"] = _peak(record.get("memory_mib"))
    return record


def _read_config_yaml(path: Path) -> dict[str, Any]:
    try:
        import yaml

        data = yaml.safe_load(path.read_text())
    except Exception:  # a damaged config still leaves a row (with what the name tells)
        return {}
    return data if isinstance(data, dict) else {}


def _peak(per_worker: Any) -> float:
    if not isinstance(per_worker, dict):
        return math.nan
    peaks = [w.get("peak") for w in per_worker.values() if isinstance(w, dict)]
    peaks = [p for p in peaks if isinstance(p, int | float)]
    return max(peaks) if peaks else math.nan


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Make the schema's columns exist with usable types, whatever the files held."""
    for column in ("status", "reason", "dataset", "model", "backend"):
        if column not in df:
            df[column] = None
    df["status"] = df["status"].fillna("failed")
    for column in IDENTITY_FIELDS:
        values = df[column] if column in df else pd.Series([None] * len(df))
        df[column] = pd.to_numeric(values, errors="coerce").astype("Int64")
    for column in NUMERIC_FIELDS:
        values = df[column] if column in df else pd.Series([None] * len(df))
        df[column] = pd.to_numeric(values, errors="coerce").astype(float)
    # Older or hand-made results without the flag: more workers than cores is oversubscribed.
    derived = (df["workers"] > df["cores"]).fillna(False).astype(bool)
    flag = df["oversubscribed"] if "oversubscribed" in df else pd.Series([None] * len(df))
    df["oversubscribed"] = [
        bool(f) if isinstance(f, bool | np.bool_) else bool(d)
        for f, d in zip(flag, derived, strict=True)
    ]
    for column in ("curves", "cpu_cores", "memory_mib", "config", "env", "baselines"):
        if column not in df:
            df[column] = None
        df[column] = [v if isinstance(v, dict) else {} for v in df[column]]
    return df


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = (
            json.dumps(value) if isinstance(value, list | bool) or value is None else str(value)
        )


def trial_setting(row: pd.Series) -> dict[str, str]:
    """The flattened config of a trial that defines its numbers, minus workers/epochs/seed."""
    config = dict(row.get("config") or {})
    flat: dict[str, str] = {}
    for key in ("dataset", "model", "backend"):  # the top-level names, for hand-made results
        if isinstance(row.get(key), str):
            flat[key] = row[key]
    backend = config.pop("backend", None)
    for key in (*WHERE_AND_HOW, *IDENTITY_FIELDS):
        config.pop(key, None)
    _flat("", config, flat)
    if isinstance(backend, dict) and backend.get("name"):
        flat["backend"] = str(backend["name"])
    for key in ("dataset", "model"):  # dataset.name and model.name say it once
        if f"{key}.name" in flat:
            flat[key] = flat.pop(f"{key}.name")
    return flat


def setting_labels(df: pd.DataFrame) -> list[str]:
    """For each trial, the ``key=value`` words of the setting keys that vary within the sweep.

    A key varies when the trials that record it hold more than one value; a trial without it
    (e.g. an incomplete one whose config is partial) leaves it out of its label.
    """
    settings = [trial_setting(row) for _, row in df.iterrows()]
    keys = sorted({k for s in settings for k in s})
    varying = [k for k in keys if len({s[k] for s in settings if k in s}) > 1]
    return [" ".join(f"{k}={s[k]}" for k in varying if k in s) for s in settings]
