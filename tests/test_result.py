"""``result.json`` has one definition (bench/result.py): the README shows it, the report reads it."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.report import load_sweep
from bench.result import FaultRecord, TrialResult, Usage, numeric_fields, schema_markdown

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_table_is_the_schema():
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- result-schema")
    block = readme[readme.index("\n", start) + 1 : readme.index("<!-- /result-schema -->")]
    assert block.strip() == schema_markdown()


def result() -> TrialResult:
    return TrialResult(
        status="succeeded", trial_id="w2-e3-s0-tiny-abc", config_key="abc", sweep_name="s",
        backend="local", workers=2, epochs=3, seed=0, dataset="tiny", model="sage",
        threads_per_worker=1, cores=2, oversubscribed=False, time_total_s=12.5,
        epoch_times_s=[1.0, 1.1, 0.9], val_mrr=0.03, val_hits_at_10=0.2, restarts=1,
        cpu_cores={"rank0": Usage(0.9, 1.0)}, memory_mib={"rank0": Usage(400.0, 450.0)},
        faults=[FaultRecord(2, 1, 100.0, 104.0, 4.0, 3, 0.5, 0.25)],
        curves={"val/mrr": [[1, 0.01], [2, 0.02], [3, 0.03]]},
    )


def test_json_names_and_round_trip():
    data = result().to_json()
    assert data["val_hits@10"] == 0.2 and "val_hits_at_10" not in data
    assert data["cpu_cores"] == {"rank0": {"mean": 0.9, "peak": 1.0}}
    assert data["faults"][0]["recovery_s"] == 4.0
    assert list(data)[:3] == ["schema_version", "status", "reason"]
    assert TrialResult.from_json(json.loads(json.dumps(data))) == result()


def test_a_result_from_an_older_version_reads_with_its_missing_fields_empty():
    old = TrialResult.from_json({"status": "failed", "workers": 2, "not_a_field": 1})
    assert old.status == "failed" and old.workers == 2
    assert old.val_mrr is None and old.trial_id is None and old.faults == []


def test_numeric_fields_come_from_the_types():
    numbers = numeric_fields()
    assert {"val_mrr", "val_hits@10", "time_total_s", "restarts", "cores"} <= set(numbers)
    assert not {"status", "oversubscribed", "curves", "cpu_cores"} & set(numbers)


def test_the_report_reads_every_field_a_trial_writes(tmp_path):
    folder = tmp_path / "s" / "w2-e3-s0-tiny-abc"
    result().write(folder)
    (row,) = load_sweep(tmp_path / "s").to_dict("records")
    assert set(result().to_json()) <= set(row)
    assert row["val_hits@10"] == 0.2 and row["restarts"] == 1.0
    assert math.isnan(row["test_mrr"])  # a number field without a value
