"""The fault-tolerance part of the report (bench/report/faults.py), on hand-made result files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_report import write_trial

from bench.report import load_sweep, write_report
from bench.report.faults import fault_table


def add_faults(trial: Path, faults: list[dict], restarts: int, time_s: float | None = None) -> None:
    path = trial / "result.json"
    result = json.loads(path.read_text())
    result.update(faults=faults, restarts=restarts)
    if time_s is not None:
        result["time_total_s"] = time_s
    path.write_text(json.dumps(result))


def fault(epoch: int, recovery_s: float | None, lost_s: float | None = 0.5,
          redone: float | None = 0.25) -> dict:
    return {"epoch": epoch, "rank": 1, "injected_at": 1000.0 + epoch,
            "recovered_at": None if recovery_s is None else 1000.0 + epoch + recovery_s,
            "recovery_s": recovery_s, "resumed_from_epoch": epoch + 1,
            "work_lost_s": lost_s, "epochs_redone": redone}


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    write_trial(root, 2, 6, 0, 10.0, mrr=0.05, accuracy=0.80, tag="twin")
    one = write_trial(root, 2, 6, 0, 99.0, mrr=0.051, accuracy=0.79, tag="f1",
                      setting={"fault": {"kill_at_epoch": 3}})
    add_faults(one, [fault(3, 8.0)], restarts=1, time_s=19.0)
    three = write_trial(root, 2, 6, 0, 99.0, tag="f3", setting={"fault": {"kill_at_epoch": 2}})
    add_faults(three, [fault(2, 6.0), fault(3, 8.0, 1.0, 0.5), fault(4, 10.0)], 3, time_s=40.0)
    orphan = write_trial(root, 4, 6, 1, 99.0, status="failed", reason="exceeded the backoff limit",
                         tag="f9", setting={"fault": {"kill_at_epoch": 2}})
    add_faults(orphan, [fault(2, 7.0), fault(3, None, None, None)], restarts=1)
    return root


def test_each_faulty_trial_is_compared_with_its_fault_free_twin(sweep):
    table = fault_table(load_sweep(sweep)).set_index("trial_id")
    assert sorted(table.index) == ["w2-e6-s0-tiny-f1", "w2-e6-s0-tiny-f3", "w4-e6-s1-tiny-f9"]
    one = table.loc["w2-e6-s0-tiny-f1"]
    assert one["twin"] == "w2-e6-s0-tiny-twin" and one["faults"] == 1 and one["restarts"] == 1
    assert one["recovery_s"] == pytest.approx(8.0)
    assert one["overhead_s"] == pytest.approx(9.0) and one["overhead_pct"] == pytest.approx(90.0)
    assert one["val_mrr_diff"] == pytest.approx(0.001)
    assert one["val_accuracy_diff"] == pytest.approx(-0.01)
    three = table.loc["w2-e6-s0-tiny-f3"]
    assert three["fault_epochs"] == "2,3,4" and three["recovery_s"] == pytest.approx(8.0)
    assert three["epochs_redone"] == pytest.approx(1.0) and three["work_lost_s"] == pytest.approx(2.0)
    assert three["overhead_s"] == pytest.approx(30.0)
    failed = table.loc["w4-e6-s1-tiny-f9"]  # no twin with 4 workers, seed 1; never recovered
    assert failed["status"] == "failed" and pd.isna(failed["twin"])
    assert pd.isna(failed["overhead_s"]) and failed["recovery_s"] == pytest.approx(7.0)


def test_write_report_adds_fault_files_only_when_there_were_faults(sweep, tmp_path):
    report = write_report(sweep, formats=("png",))
    names = {p.name for p in report.files}
    assert {"faults.md", "faults.csv", "faults.png"} <= names
    md = (sweep / "faults.md").read_text()
    assert md.count("\n") == 2 + 3  # header, rule, three trials
    assert "| w2-e6-s0-tiny-f1 | 2 | 6 | 0 | succeeded | 1 | 1 | 3 | 8.0 |" in md
    assert "+0.0010" in md  # MRR difference against the twin
    csv = (sweep / "faults.csv").read_text().splitlines()
    assert csv[0].startswith("trial_id,workers,epochs,seed,status,faults,restarts") and len(csv) == 4
    assert "## Fault tolerance" in (sweep / "report.md").read_text()

    plain = tmp_path / "plain"
    write_trial(plain, 2, 6, 0, 10.0)
    report = write_report(plain, formats=("png",))
    assert not any(p.name.startswith("faults") for p in report.files)
    assert not (plain / "faults.md").exists()
    assert "Fault tolerance" not in (plain / "report.md").read_text()
