"""The report (`bench.report`): Table 1 values, scaling fits, plot files, the notebook, the CLI.

Most tests build sweeps by hand: result.json (and resources.csv) files with known numbers, so
the expected speedups, efficiencies and interval widths can be written down. One slow test runs
a real tiny multirun and checks that its end writes the whole report.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.report import (
    NoResultsError,
    fit_amdahl,
    fit_scaling,
    fit_usl,
    load_sweep,
    mean_ci,
    plot_time,
    summarize,
    usl_time,
    write_report,
)
from bench.report.__main__ import main as report_main

REPO = Path(__file__).resolve().parent.parent
T_975_DF2 = 4.302653  # Student t, 97.5th percentile, 2 degrees of freedom (3 runs)


def write_trial(
    sweep: Path,
    workers: int,
    epochs: int,
    seed: int,
    time_s: float | None,
    *,
    status: str = "succeeded",
    reason: str | None = None,
    cores: int = 4,
    mrr: float = 0.05,
    accuracy: float = 0.75,
    setting: dict | None = None,
    tag: str = "hand",
    extra: dict | None = None,
) -> Path:
    """A hand-made trial folder: result.json as the harness writes it, plus resources.csv."""
    trial_id = f"w{workers}-e{epochs}-s{seed}-tiny-{tag}"
    trial = sweep / trial_id
    trial.mkdir(parents=True)
    ok = status == "succeeded"
    ranks = [f"rank{i}" for i in range(workers)]
    config = {
        "workers": workers,
        "epochs": epochs,
        "seed": seed,
        "sweep_name": sweep.name,
        "dataset": {
            "name": "tiny",
            "synthetic": True,
            "num_nodes": 1000,
            "avg_degree": 8.0,
            "feat_dim": 128,
            "num_neg": 1000,
        },
        "model": {
            "name": "sage",
            "num_layers": 3,
            "hidden": 256,
            "aggr": "mean",
            "fanouts": [15, 10, 5],
            "predictor": "dot",
        },
        "backend": {"name": "local", "cores": None},
        **(setting or {}),
    }
    result = {
        "status": status,
        "reason": reason,
        "trial_id": trial_id,
        "workers": workers,
        "epochs": epochs,
        "seed": seed,
        "dataset": "tiny",
        "model": "sage",
        "backend": "local",
        "cores": cores,
        "oversubscribed": workers > cores,
        "threads_per_worker": max(1, cores // workers),
        "time_total_s": time_s if ok else None,
        "time_startup_s": 5.0 + seed if ok else None,
        "epoch_times_s": [1.0] * epochs if ok else [],
        "val_mrr": mrr if ok else None,
        "val_accuracy": accuracy if ok else None,
        "test_mrr": mrr * 0.9 if ok else None,
        "cpu_cores": {r: {"mean": 0.9, "peak": 1.0} for r in ranks},
        "memory_mib": {r: {"mean": 400.0 + seed, "peak": 500.0 + i} for i, r in enumerate(ranks)},
        "cpu_cores_mean": 0.9,
        "memory_mib_mean": 400.0 + seed,
        "restarts": 0,
        "curves": {
            "val/mrr": [[e, mrr * e / epochs] for e in range(1, epochs + 1)] if ok else [],
            "val/accuracy": [[e, 0.5 + 0.25 * e / epochs] for e in range(1, epochs + 1)]
            if ok
            else [],
        },
        "config": config,
        "env": {
            "python": "3.11.7",
            "torch": "2.13.0+cpu",
            "host": "testhost",
            "cpu_count": cores,
            "platform": "Linux-test",
        },
    }
    result.update(extra or {})
    (trial / "result.json").write_text(json.dumps(result))
    lines = ["t,worker,cpu_cores,rss_mib"]
    for step in range(6):
        lines += [
            f"{step + 1.0},{r},{'nan' if step == 0 else 0.8 + 0.01 * step},{300 + 20 * step + i}"
            for i, r in enumerate(ranks)
        ]
    (trial / "resources.csv").write_text("\n".join(lines) + "\n")
    return trial


@pytest.fixture()
def repeats_sweep(tmp_path: Path) -> Path:
    """10 epochs: 1 worker x 3 seeds (100, 110, 90 s), 2 workers x 3 seeds (60, 50, 55 s),
    4 workers x 1 seed (40 s); one failed 4-worker trial; one trial still running."""
    sweep = tmp_path / "rep"
    for seed, t in enumerate((100.0, 110.0, 90.0)):
        write_trial(sweep, 1, 10, seed, t)
    for seed, t in enumerate((60.0, 50.0, 55.0)):
        write_trial(sweep, 2, 10, seed, t)
    write_trial(sweep, 4, 10, 0, 40.0)
    write_trial(
        sweep, 4, 10, 1, None, status="failed", reason="worker rank3 exited with code 137 | OOM"
    )
    running = sweep / "w8-e10-s0-tiny-running"
    running.mkdir()
    (running / "config.yaml").write_text(
        "workers: 8\nepochs: 10\nseed: 0\ndataset:\n  name: tiny\n"
    )
    return sweep


@pytest.fixture()
def scaling_sweep(tmp_path: Path) -> Path:
    """Two epoch budgets on 4 cores; 6 and 8 workers oversubscribed; times follow a USL."""
    sweep = tmp_path / "scal"
    for epochs, t1 in ((10, 100.0), (30, 300.0)):
        for workers in (1, 2, 4, 6, 8):
            for seed in (0, 1):
                t = float(usl_time(workers, t1, 0.05, 0.01)) * (1 + 0.02 * (seed - 0.5))
                write_trial(sweep, workers, epochs, seed, t)
    write_trial(sweep, 8, 30, 2, None, status="failed", reason="timed out after 3600 s")
    return sweep


# --- loading and Table 1 ---------------------------------------------------------------------


def test_mean_ci_is_the_student_t_interval_and_one_run_has_none():
    mean, half, n = mean_ci([10.0, 12.0, 14.0])
    assert (mean, n) == (12.0, 3)
    assert half == pytest.approx(T_975_DF2 * 2.0 / math.sqrt(3), rel=1e-6)
    assert mean_ci([7.0])[0] == 7.0 and math.isnan(mean_ci([7.0])[1])
    assert math.isnan(mean_ci([])[0]) and mean_ci([float("nan"), 3.0])[2] == 1


def test_load_sweep_keeps_every_trial_including_failed_and_incomplete(repeats_sweep):
    df = load_sweep(repeats_sweep)
    assert len(df) == 9
    assert df["status"].value_counts().to_dict() == {"succeeded": 7, "failed": 1, "incomplete": 1}
    running = df[df["status"] == "incomplete"].iloc[0]
    assert running["workers"] == 8 and "still running or was interrupted" in running["reason"]
    assert set(df["setting"]) == {""}  # nothing but workers/epochs/seed varies
    assert df.attrs["sweep_dir"] == str(repeats_sweep)


def test_table_means_intervals_speedup_and_efficiency_match_hand_computation(repeats_sweep):
    table = summarize(load_sweep(repeats_sweep))
    ok = table[table["status"] == "succeeded"].set_index("workers")
    h1 = T_975_DF2 * 10.0 / math.sqrt(3)  # 1 worker: sd 10 s over 3 runs
    h2 = T_975_DF2 * 5.0 / math.sqrt(3)  # 2 workers: sd 5 s over 3 runs
    assert ok.loc[1, ["time_total_s", "n"]].tolist() == [100.0, 3]
    assert ok.loc[1, "time_total_s_ci95"] == pytest.approx(h1, rel=1e-6)
    assert ok.loc[2, "time_total_s_ci95"] == pytest.approx(h2, rel=1e-6)
    speedup = 100.0 / 55.0
    speedup_ci = speedup * math.sqrt((h1 / 100.0) ** 2 + (h2 / 55.0) ** 2)
    assert ok.loc[2, "speedup"] == pytest.approx(speedup)
    assert ok.loc[2, "speedup_ci95"] == pytest.approx(speedup_ci, rel=1e-6)
    assert ok.loc[2, "efficiency"] == pytest.approx(speedup * 1 / 2)
    assert ok.loc[2, "efficiency_ci95"] == pytest.approx(speedup_ci / 2, rel=1e-6)
    assert ok.loc[4, "speedup"] == pytest.approx(2.5) and ok.loc[4, "efficiency"] == pytest.approx(
        0.625
    )
    assert math.isnan(ok.loc[4, "speedup_ci95"])  # one run at 4 workers: no interval
    assert ok.loc[1, "speedup"] == 1.0 and math.isnan(ok.loc[1, "speedup_ci95"])
    assert ok.loc[1, "time_startup_s"] == pytest.approx(6.0)  # seeds 0, 1, 2 start 5, 6, 7 s
    assert ok.loc[2, "seeds"] == "0,1,2" and set(ok["baseline_workers"]) == {1}


def test_table_md_shows_mean_plus_minus_interval_runs_and_failed_rows(repeats_sweep):
    report = write_report(repeats_sweep)
    md = (repeats_sweep / "table.md").read_text().splitlines()
    assert md[0].startswith("| No. of workers | Epochs | Time taken (s) | Accuracy |")
    assert "Speedup" in md[0] and "Efficiency" in md[0] and "Runs" in md[0]
    rows = md[2:md.index("")]  # the notes under the table follow a blank line
    assert len(rows) == 5  # 1, 2, 4 workers + the failed 4-worker trial + the incomplete one
    assert rows[0].startswith(f"| 1 | 10 | 100.0 ± {T_975_DF2 * 10 / math.sqrt(3):.1f} |")
    assert "| 1.00 |" in rows[0] and rows[0].endswith("| 3 | succeeded |")
    assert f"| {100 / 55:.2f} ± " in rows[1]
    assert rows[2].startswith("| 4 | 10 | 40.0 | 0.7500 |") and "| 2.50 | 0.62 |" in rows[2]
    assert rows[3].startswith("| 4 | 10 | - |")
    assert "failed: worker rank3 exited with code 137 \\| OOM" in rows[3]  # '|' escaped
    assert rows[4].startswith("| 8 | 10 |") and "incomplete: no result.json" in rows[4]
    tex = (repeats_sweep / "table.tex").read_text()
    assert r"\toprule" in tex and r"100.0 $\pm$ 24.8" in tex and r"\textbar" not in tex
    csv = (repeats_sweep / "table.csv").read_text().splitlines()
    assert csv[0].startswith("setting,workers,epochs,n,seeds,status,reason")
    assert len(csv) == 6 and report.table_md == "\n".join(md) + "\n"


def test_speedup_baseline_is_the_smallest_worker_count_of_the_same_epoch_budget(tmp_path):
    sweep = tmp_path / "s"
    for workers, epochs, t in ((2, 10, 50.0), (4, 10, 30.0), (4, 30, 120.0), (6, 30, 100.0)):
        write_trial(sweep, workers, epochs, 0, t, cores=8)
    write_trial(sweep, 1, 30, 0, None, status="failed", reason="boom", cores=8)  # not a baseline
    table = summarize(load_sweep(sweep)).set_index(["epochs", "workers", "status"])
    assert table.loc[(10, 4, "succeeded"), "speedup"] == pytest.approx(50 / 30)
    assert table.loc[(10, 4, "succeeded"), "efficiency"] == pytest.approx(50 / 30 * 2 / 4)
    assert table.loc[(30, 6, "succeeded"), "baseline_workers"] == 4
    assert table.loc[(30, 6, "succeeded"), "efficiency"] == pytest.approx(120 / 100 * 4 / 6)
    assert math.isnan(table.loc[(30, 1, "failed"), "speedup"])


def test_a_setting_that_varies_besides_workers_gets_its_own_column_and_baseline(tmp_path):
    sweep = tmp_path / "s"
    for lr, times in ((0.001, (100.0, 60.0)), (0.01, (80.0, 20.0))):
        for workers, t in zip((1, 2), times, strict=True):
            write_trial(sweep, workers, 10, 0, t, setting={"train": {"lr": lr}}, tag=f"lr{lr}")
    table = summarize(load_sweep(sweep))
    assert sorted(table["setting"].unique()) == ["train.lr=0.001", "train.lr=0.01"]
    assert sorted(table["speedup"].round(4)) == [1.0, 1.0, round(100 / 60, 4), 4.0]
    from bench.report import to_markdown

    assert to_markdown(table).splitlines()[0].endswith("| Status | Setting |")


def test_oversubscribed_rows_are_marked(scaling_sweep):
    table = summarize(load_sweep(scaling_sweep))
    ok = table[table["status"] == "succeeded"]
    assert ok.loc[ok["workers"] > 4, "status_text"].eq("succeeded (oversubscribed)").all()
    assert ok.loc[ok["workers"] <= 4, "status_text"].eq("succeeded").all()


def test_an_empty_or_missing_sweep_gives_a_clear_error(tmp_path, capsys):
    with pytest.raises(NoResultsError, match="is not a folder"):
        load_sweep(tmp_path / "nope")
    (tmp_path / "empty" / "stray").mkdir(parents=True)
    with pytest.raises(
        NoResultsError, match="no result.json under .*empty: run a sweep into it first"
    ):
        load_sweep(tmp_path / "empty")
    assert report_main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no result.json under")
    assert not (tmp_path / "empty" / "table.md").exists()


def test_a_sweep_where_every_trial_failed_still_gets_a_table(tmp_path):
    sweep = tmp_path / "f"
    write_trial(sweep, 2, 1, 0, None, status="failed", reason="the dataset cache is corrupt")
    report = write_report(sweep)
    assert "failed: the dataset cache is corrupt" in report.table_md
    text = (sweep / "report.md").read_text()
    assert "No succeeded trial" in text and "**failed**: the dataset cache is corrupt" in text


def test_results_write_table_delegates_to_the_report_table(repeats_sweep):
    from bench.report import write_table

    md = write_table(repeats_sweep)
    assert md == (repeats_sweep / "table.md").read_text()
    assert (repeats_sweep / "table.tex").exists() and (repeats_sweep / "table.csv").exists()
    assert "| 3 | succeeded |" in md


# --- scaling models --------------------------------------------------------------------------


def test_amdahl_fit_recovers_the_serial_fraction():
    n = np.array([1, 2, 4, 8, 16])
    exact = fit_amdahl(n, 120.0 * (0.1 + 0.9 / n))
    assert exact.fitted and exact.params["T1_s"] == pytest.approx(120.0, rel=1e-6)
    assert exact.params["serial_fraction"] == pytest.approx(0.1, abs=1e-6)
    assert exact.best_workers is None and exact.best_time_s == pytest.approx(12.0, rel=1e-6)
    assert exact.max_speedup == pytest.approx(10.0, rel=1e-5)
    rng = np.random.default_rng(0)
    n_rep = np.repeat(n, 3)
    noisy = fit_amdahl(n_rep, 120.0 * (0.1 + 0.9 / n_rep) * (1 + rng.normal(0, 0.02, n_rep.size)))
    assert noisy.params["serial_fraction"] == pytest.approx(0.1, abs=0.02)
    assert noisy.params["T1_s"] == pytest.approx(120.0, rel=0.05)


def test_usl_fit_recovers_contention_coherency_and_the_best_worker_count():
    n = np.arange(1, 17)
    times = usl_time(n, 100.0, 0.05, 0.01)
    fit = fit_usl(n, times)
    assert fit.fitted
    assert fit.params["T1_s"] == pytest.approx(100.0, rel=1e-6)
    assert fit.params["contention"] == pytest.approx(0.05, abs=1e-6)
    assert fit.params["coherency"] == pytest.approx(0.01, abs=1e-7)
    assert fit.best_n == pytest.approx(math.sqrt(0.95 / 0.01), rel=1e-5)
    assert fit.best_workers == int(n[np.argmin(times)]) == 10
    assert fit.best_time_s == pytest.approx(float(times.min()), rel=1e-6)
    rng = np.random.default_rng(1)
    noisy = fit_usl(n, times * (1 + rng.normal(0, 0.01, n.size)))
    assert noisy.params["contention"] == pytest.approx(0.05, abs=0.02)
    assert noisy.params["coherency"] == pytest.approx(0.01, abs=0.002)
    assert abs(noisy.best_workers - 10) <= 1


def test_usl_without_coherency_has_no_finite_optimum():
    n = np.array([1, 2, 4, 8])
    fit = fit_usl(n, usl_time(n, 50.0, 0.2, 0.0))
    assert fit.params["coherency"] == pytest.approx(0.0, abs=1e-9)
    assert fit.best_workers is None and math.isinf(fit.best_n)
    assert fit.best_time_s == pytest.approx(50.0 * 0.2, rel=1e-6)


@pytest.mark.parametrize(
    ("model", "workers", "fitted"),
    [
        ("amdahl", [4], False),
        ("amdahl", [2, 4], True),
        ("usl", [2, 4], False),
        ("usl", [2, 2, 4, 4], False),
        ("usl", [2, 4, 6], True),
    ],
)
def test_too_few_points_are_said_not_fitted(model, workers, fitted):
    fit = (fit_amdahl if model == "amdahl" else fit_usl)(workers, [100.0 / w + 5 for w in workers])
    assert fit.fitted is fitted
    if not fitted:
        assert "too few points to fit" in fit.message and "too few points" in fit.summary()
        assert np.isnan(fit.predict([1, 2])).all()


def test_scaling_fit_leaves_oversubscribed_points_out_when_enough_remain(scaling_sweep):
    table = summarize(load_sweep(scaling_sweep))
    fits = fit_scaling(table)
    assert [f.epochs for f in fits] == [10, 30]
    fit = fits[0]
    assert fit.usl.points == "without oversubscribed" and fit.usl.workers == [1, 2, 4]
    assert "oversubscribed workers 6, 8 left out" in fit.usl.message
    assert fit.usl.params["contention"] == pytest.approx(0.05, abs=0.02)
    alternatives = {(m.model, m.points): m for m in fit.alternatives}
    assert alternatives[("usl", "all points")].workers == [1, 2, 4, 6, 8]
    included = fit_scaling(table, policy="include")[0]
    assert included.usl.workers == [1, 2, 4, 6, 8] and "policy include" in included.usl.message
    with pytest.raises(ValueError, match="policy"):
        fit_scaling(table, policy="sometimes")


def test_scaling_fit_includes_oversubscribed_points_when_too_few_others_remain(tmp_path):
    sweep = tmp_path / "s"
    for workers, t in ((2, 100.0), (4, 70.0), (6, 65.0)):  # 2 cores: 4 and 6 oversubscribed
        write_trial(sweep, workers, 10, 0, t, cores=2)
    fit = fit_scaling(summarize(load_sweep(sweep)))[0]
    assert fit.amdahl.fitted and fit.amdahl.workers == [2, 4, 6]
    assert "included: only 1 worker count(s) are not oversubscribed, 2 needed" in fit.amdahl.message
    assert (
        fit.usl.fitted and fit.usl.workers == [2, 4, 6] and "passes through them" in fit.usl.message
    )
    excluded = fit_scaling(summarize(load_sweep(sweep)), policy="exclude")[0]
    assert not excluded.amdahl.fitted and "too few points" in excluded.amdahl.message


# --- files, plots and the command ------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_real_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, path
    pixels = imread(path)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500, path
    assert pixels[..., :3].std() > 0.05, f"{path} is blank"


def test_write_report_writes_every_file_with_real_images(scaling_sweep, tmp_path):
    out = tmp_path / "example"
    report = write_report(scaling_sweep, out, trials=["w8-e10-s0-tiny-hand"])
    names = {p.relative_to(out).as_posix() for p in report.files}
    stems = [
        "time_vs_workers",
        "speedup_efficiency",
        "validation_curves",
        "scaling_model",
        "cpu_w8-e10-s0-tiny-hand",
        "memory_w8-e10-s0-tiny-hand",
    ]
    assert names == {
        "table.md",
        "table.csv",
        "table.tex",
        "scaling.json",
        "report.md",
        *(f"plots/{s}.{ext}" for s in stems for ext in ("png", "svg")),
    }
    for stem in stems:
        assert_real_png(out / "plots" / f"{stem}.png")
        svg = (out / "plots" / f"{stem}.svg").read_text()
        assert "<svg" in svg and len(svg) > 5_000
    text = (out / "report.md").read_text()
    for link in [
        line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")
    ]:
        assert (out / link).is_file(), link
    assert "host `testhost`" in text and "torch 2.13.0+cpu" in text and "`tiny`" in text
    assert "USL (reported) | without oversubscribed: 1, 2, 4" in text
    assert "| 10 epochs | USL (other point set) | all points: 1, 2, 4, 6, 8 |" in text
    assert "**failed**: timed out after 3600 s" in text
    fits = json.loads((out / "scaling.json").read_text())
    assert fits[0]["usl"]["best_workers"] == 10 and fits[0]["amdahl"]["best_workers"] is None
    assert not (scaling_sweep / "report.md").exists()  # --out leaves the sweep folder alone


def test_time_plot_draws_the_table_means_with_error_bars(repeats_sweep):
    table = summarize(load_sweep(repeats_sweep))
    ax = plot_time(table).axes[0]
    line = next(line for line in ax.lines if line.get_label() == "10 epochs")
    assert list(line.get_xdata()) == [1, 2, 4] and list(line.get_ydata()) == [100.0, 55.0, 40.0]
    bars = ax.containers[0].lines[2][0].get_segments()  # the error bar segments
    assert bars[0][:, 1].tolist() == pytest.approx([100 - 24.841, 100 + 24.841], abs=0.01)


def test_cli_writes_the_report_and_prints_table_and_fits(scaling_sweep, tmp_path, capsys):
    out = tmp_path / "o"
    assert report_main([str(scaling_sweep), "--out", str(out), "--formats", "png"]) == 0
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "USL: T1 = " in printed and "best at 10 workers" in printed
    assert (out / "plots" / "time_vs_workers.png").exists() and not list(out.glob("plots/*.svg"))
    assert (
        f"python -m bench.report {scaling_sweep} --out {out} --formats png"
        in (out / "report.md").read_text()
    )
    assert report_main([str(scaling_sweep), "--trial", "nope"]) == 2
    assert "--trial nope: no such trial" in capsys.readouterr().err


# --- the notebook ----------------------------------------------------------------------------

NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert any("load_sweep(" in "".join(c["source"]) for c in code)


def test_notebook_executes_on_a_sweep(scaling_sweep, tmp_path, monkeypatch):
    import nbclient  # the dev extra installs nbclient, nbformat and ipykernel
    import nbformat

    monkeypatch.setenv("GNN_BENCH_SWEEP", str(scaling_sweep))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # The kernel is the venv's python even when the venv's bin/ is not on PATH.
    monkeypatch.setenv(
        "PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO / "notebooks")}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"sweep: {scaling_sweep}" in text and "USL: T1 = " in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # time, speedup, scaling, curves, cpu, memory
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert any(m.startswith("| No. of workers | Epochs |") for m in markdown)


# --- a real sweep ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_multirun_ends_with_the_whole_report(tmp_path, tiny_root):
    env = {**os.environ, "GNN_BENCH_DATA": str(tiny_root)}
    args = ["dataset=tiny", "workers=1,2", "epochs=1", "results_dir=res", "sweep_name=x", "-m"]
    out = subprocess.run(
        [sys.executable, "-m", "bench.sweep", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    sweep = tmp_path / "res" / "x"
    assert "Table 1" in out.stdout and "Report: res/x/report.md" in out.stdout
    for name in ("table.md", "table.csv", "table.tex", "scaling.json", "report.md"):
        assert (sweep / name).is_file(), name
    for stem in ("time_vs_workers", "speedup_efficiency", "validation_curves", "scaling_model"):
        assert_real_png(sweep / "plots" / f"{stem}.png")
    assert list(sweep.glob("plots/cpu_w2-e1-s0-tiny-*.png")) and list(
        sweep.glob("plots/memory_w2-*.png")
    )
    table = summarize(load_sweep(sweep))
    assert (
        table["status"].tolist() == ["succeeded", "succeeded"] and table["speedup"].iloc[0] == 1.0
    )
    rebuilt = subprocess.run(
        [sys.executable, "-m", "bench.report", str(sweep), "--out", "again"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (tmp_path / "again" / "table.md").read_text() == (sweep / "table.md").read_text()


def test_a_second_report_into_the_same_folder_drops_figures_of_the_first(scaling_sweep, tmp_path):
    out = tmp_path / "o"
    write_report(scaling_sweep, out, trials=["w2-e10-s0-tiny-hand"], formats=["png"])
    assert (out / "plots" / "cpu_w2-e10-s0-tiny-hand.png").exists()
    (out / "plots" / "mine.png").write_bytes(b"kept")  # not a report figure: left alone
    write_report(scaling_sweep, out, trials=["w4-e10-s0-tiny-hand"], formats=["png"])
    names = sorted(p.name for p in (out / "plots").iterdir())
    assert "cpu_w2-e10-s0-tiny-hand.png" not in names and "cpu_w4-e10-s0-tiny-hand.png" in names
    assert "mine.png" in names


def test_the_end_of_a_multirun_writes_the_report_and_survives_a_broken_plot(
    repeats_sweep, monkeypatch, capsys
):
    from omegaconf import OmegaConf

    import bench.report
    from bench.callbacks import ReportCallback as TableCallback

    config = OmegaConf.create({"results_dir": str(repeats_sweep.parent), "sweep_name": "rep"})
    TableCallback().on_multirun_end(config)
    out = capsys.readouterr().out
    assert "Table 1" in out and "| 1 | 10 | 100.0 ± " in out and "report.md" in out
    assert (repeats_sweep / "plots" / "scaling_model.png").exists()

    (repeats_sweep / "table.md").unlink()

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(bench.report, "write_report", broken)
    TableCallback().on_multirun_end(config)
    captured = capsys.readouterr()
    assert "report incomplete (RuntimeError: no fonts)" in captured.err
    assert "| 1 | 10 | 100.0 ± " in captured.out and (repeats_sweep / "table.md").exists()


def test_the_small_nnls_of_the_fits_is_scipys_optimum():
    """bench.report.scaling.nnls (enumeration of supports) against scipy's active-set solver."""
    import numpy as np
    from scipy.optimize import nnls as reference

    from bench.report.scaling import nnls

    rng = np.random.default_rng(0)
    for _ in range(500):
        k = int(rng.integers(1, 4))
        a = rng.normal(size=(int(rng.integers(k, 8)), k)) * rng.choice([1e-3, 1.0, 1e3])
        b = rng.normal(size=a.shape[0])
        x, (y, _) = nnls(a, b), reference(a, b)
        assert np.all(x >= 0)
        assert np.linalg.norm(a @ x - b) <= np.linalg.norm(a @ y - b) + 1e-9


# --- quality columns and reference rows ---------------------------------------------------------

BASELINES = {
    "adamic_adar": {"val_mrr": 0.41, "val_mrr_se": 0.012, "test_mrr": 0.40, "test_mrr_se": 0.013,
                    "val_sources": 1000, "test_sources": 2970},
    "random": {"val_mrr": 0.0072, "val_mrr_se": 0.0004, "test_mrr": 0.0078,
               "test_mrr_se": 0.0005, "val_sources": 1000, "test_sources": 2970},
}


def _quality(best: float, se: float, at_best: float, to_target: float | None, epoch: int) -> dict:
    return {"best_val_mrr": best, "best_val_mrr_se": se, "test_mrr_at_best": at_best,
            "best_epoch": epoch, "target_mrr": 0.3, "time_to_target_s": to_target,
            "baselines": BASELINES}


def test_table_shows_best_epoch_se_test_at_best_and_time_to_target(tmp_path):
    sweep = tmp_path / "q"
    for seed, (best, se, at_best, reach) in enumerate(
        ((0.50, 0.010, 0.49, 30.0), (0.52, 0.012, 0.50, 40.0), (0.54, 0.014, 0.52, None))
    ):
        write_trial(sweep, 2, 10, seed, 60.0, extra=_quality(best, se, at_best, reach, 9 + seed))
    write_trial(sweep, 4, 10, 0, 50.0, extra=_quality(0.55, 0.02, 0.53, None, 10))
    table = summarize(load_sweep(sweep))
    two = table[table["workers"] == 2].iloc[0]
    mean, half, _ = mean_ci([0.50, 0.52, 0.54])
    assert two["best_val_mrr"] == pytest.approx(mean)
    assert two["best_val_mrr_ci95"] == pytest.approx(half)
    assert two["best_val_mrr_se"] == pytest.approx(0.012)  # the runs' SEs averaged
    assert two["test_mrr_at_best"] == pytest.approx((0.49 + 0.50 + 0.52) / 3)
    assert two["best_epoch_text"] == "9,10,11"
    assert two["time_to_target_text"].endswith("(2/3 runs)")
    assert two["time_to_target_s"] == pytest.approx(35.0)  # over the runs that reached it
    four = table[table["workers"] == 4].iloc[0]
    assert four["time_to_target_text"] == "not reached"
    from bench.report import to_markdown

    md = to_markdown(table)
    header = md.splitlines()[0]
    for column in ("Best val MRR", "SE", "Best epoch", "Test MRR (best)", "Time to target (s)"):
        assert f"| {column} |" in header
    assert "| 0.5200 ± " in md and "not reached" in md
    assert "Target validation MRR (time to target): 0.3." in md


def test_baseline_rows_appear_under_table_1_and_in_their_own_csv(tmp_path):
    sweep = tmp_path / "b"
    write_trial(sweep, 2, 10, 0, 60.0, extra=_quality(0.5, 0.01, 0.49, 30.0, 10))
    write_trial(sweep, 4, 10, 0, 50.0, extra=_quality(0.5, 0.01, 0.49, 30.0, 10))
    from bench.report import to_markdown
    from bench.report.table import write_tables

    table = summarize(load_sweep(sweep))
    rows = table.attrs["baselines"]
    assert [r["method"] for r in rows] == ["adamic_adar", "random"]  # once per dataset, not per trial
    md = to_markdown(table)
    reference = md.split("Reference rows", 1)[1]
    assert "| Adamic-Adar | 0.4100 ± 0.0120 | 0.4000 ± 0.0130 | 1,000/2,970 |" in reference
    assert "| random | 0.0072 ± 0.0004 |" in reference
    paths = write_tables(table, sweep)
    assert "adamic_adar" in paths["baselines"].read_text()


def test_tiny_tables_say_their_mrr_is_not_on_citation2s_scale(repeats_sweep):
    from bench.report import to_markdown

    assert "not on ogbl-citation2's scale" in to_markdown(summarize(load_sweep(repeats_sweep)))


def test_the_curve_plot_draws_the_baselines(tmp_path):
    from bench.report.plots import plot_curves

    sweep = tmp_path / "c"
    write_trial(sweep, 2, 10, 0, 60.0, extra=_quality(0.5, 0.01, 0.49, 30.0, 10))
    fig = plot_curves(load_sweep(sweep))
    lines = [ln for ln in fig.axes[0].get_lines() if str(ln.get_label()).startswith("baseline:")]
    assert sorted(round(ln.get_ydata()[0], 4) for ln in lines) == [0.0072, 0.41]
    assert not [ln for ln in fig.axes[1].get_lines() if str(ln.get_label()).startswith("baseline")]


# ------------------------------------------------------------------ figures drawn in parallel


def _png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def _figure(width_in: float):
    from bench.report.plots import new_figure

    fig, (ax,) = new_figure(width=width_in, height=1.5)
    ax.plot([0, 1], [1, 0])
    return fig


def _as_if_single_threaded(monkeypatch):
    """save_figures draws serially in a process with other threads running; tests run before
    these in one pytest process (fake API servers, samplers) may leave daemon threads behind,
    which would make the forking path below go untested. The makers here take no lock such a
    thread could hold across a fork, so the guard is told there are none."""
    import threading

    monkeypatch.setattr(threading, "active_count", lambda: 1)


def test_every_figure_is_drawn_by_this_process_or_a_renderer_and_listed_in_job_order(tmp_path,
                                                                                    monkeypatch):
    from bench.report.plots import save_figures

    monkeypatch.setattr(os, "cpu_count", lambda: 3)  # two renderers beside this process
    _as_if_single_threaded(monkeypatch)
    jobs = [(lambda w=w: _figure(w), tmp_path / f"fig{w}") for w in (2, 3, 4, 5, 6)]
    paths = save_figures(jobs, ("png",))
    assert paths == [tmp_path / f"fig{w}.png" for w in (2, 3, 4, 5, 6)]
    assert [_png_width(p) for p in paths] == [120 * w for w in (2, 3, 4, 5, 6)]  # dpi 120
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_a_renderer_that_fails_fails_the_figures_with_its_error_on_stderr(tmp_path, capfd,
                                                                          monkeypatch):
    """The first figure this process takes waits until a renderer has taken one, which raises:
    whichever jobs each takes, a renderer fails."""
    import select

    from bench.report.plots import save_figures

    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # one renderer beside this process
    _as_if_single_threaded(monkeypatch)
    here = os.getpid()
    signal_read, signal_write = os.pipe()
    waited = []

    def make():
        if os.getpid() != here:
            os.write(signal_write, b"x")
            raise ValueError("cannot draw this one")
        if not waited:  # (a guard, not a timing: a renderer takes a job at once)
            assert select.select([signal_read], [], [], 120)[0], "no renderer took a figure"
            waited.append(os.read(signal_read, 1))
        return _figure(2)

    with pytest.raises(RuntimeError, match="a figure renderer exited with code 1"):
        save_figures([(make, tmp_path / "a"), (make, tmp_path / "b")], ("png",))
    assert "ValueError: cannot draw this one" in capfd.readouterr().err
    assert waited == [b"x"]
