"""report.md: the table, the plots and the fitted scaling models on one page, with provenance."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bench.report.scaling import ModelFit, ScalingFit
from bench.report.table import to_markdown

HOW_TO_READ = """\
How to read it: one row per number of workers and epoch budget. *Time taken* is from
submission to completion as the user waits for it (start-up, data loading, rendezvous,
training, evaluation); *Startup* is submission to the first training step. *Accuracy* is the
binary accuracy of sigmoid(score) >= 0.5 on validation positives and as many negatives (the
study's column, kept as defined there); MRR is the OGB ogbl-citation2 protocol (each positive
ranked against its 1,000 negatives; random scoring gives ~0.0075). The two measure different
things: accuracy depends on where the scores sit around the threshold 0 and on one negative,
MRR only on the order of the scores, so accuracy can stay flat or move the other way while MRR
improves (compare rows by MRR). *Val MRR (last)* is the last epoch's; *Best val MRR* the best
epoch's (*Best epoch*), with *SE* its standard error over the validation sources (the sampling
error of one run); *Test MRR (best)* is the test MRR of the weights after the best validation
epoch, as the OGB leaderboard reports it. *Time to target* is the time from submission to the
first validation MRR at or above the dataset's target (MLPerf's time to quality; "not reached"
when no epoch got there). The reference rows under the table score the same sources and
negatives with parameter-free methods: a trained row below them learned less than they know
without training. *Speedup* is the time taken at
the smallest worker count of the same epoch budget divided by this row's; *Efficiency* is
speedup x smallest workers / workers (1.00 = perfect scaling). *CPU cores* and *Memory* are per
worker, averaged over the run. With repeats, a cell reads mean ± half-width of the 95%
confidence interval (Student t) over the row's *Runs*; one run gives no interval.
*Oversubscribed* rows ran more workers than cores: they measure contention for cores, not the
parallel algorithm."""


def _versions(df: pd.DataFrame) -> list[str]:
    """Distinct host/platform/version descriptions of the trials' ``env``."""
    hosts, versions = set(), set()
    for env in df["env"]:
        if not env:
            continue
        host, cpus, system = (env.get(k, "?") for k in ("host", "cpu_count", "platform"))
        hosts.add(f"host `{host}`, {cpus} CPUs, {system}")
        versions.add(
            ", ".join(
                f"{k} {env[k]}"
                for k in ("python", "torch", "torch_geometric", "ogb", "hydra")
                if k in env
            )
        )
    return [f"- Hardware: {h}" for h in sorted(hosts)] + [
        f"- Versions: {v}" for v in sorted(versions)
    ]


def _datasets(df: pd.DataFrame) -> list[str]:
    lines = set()
    for _, trial in df.iterrows():
        data = trial["config"].get("dataset") or {}
        name = data.get("name") or trial.get("dataset") or "?"
        if data.get("synthetic"):
            nodes, degree, dim, negatives = (
                data.get(k, "?") for k in ("num_nodes", "avg_degree", "feat_dim", "num_neg")
            )
            detail = (
                f"synthetic ogbl-citation2 layout, {nodes:,} papers, average degree {degree}, "
                f"{dim}-d features, {negatives} negatives per source"
            )
        elif data:
            detail = "the real ogbl-citation2"
        else:
            detail = "no config recorded"
        lines.add(f"- Dataset: `{name}` ({detail})")
    return sorted(lines)


def _models(df: pd.DataFrame) -> list[str]:
    lines = set()
    for _, trial in df.iterrows():
        model = trial["config"].get("model") or {}
        if model:
            fanouts = "/".join(str(f) for f in model.get("fanouts") or [])
            name, layers, hidden, aggr, predictor = (
                model.get(k) for k in ("name", "num_layers", "hidden", "aggr", "predictor")
            )
            lines.add(
                f"- Model: `{name}` ({layers} layers, {hidden} hidden, {aggr} aggregation, "
                f"fan-out {fanouts}, {predictor} predictor)"
            )
        elif trial.get("model"):
            lines.add(f"- Model: `{trial['model']}`")
    return sorted(lines)


def _runs(df: pd.DataFrame) -> list[str]:
    counts = df["status"].value_counts()
    status = ", ".join(f"{count} {name}" for name, count in counts.items())
    workers = ", ".join(str(w) for w in sorted(df["workers"].dropna().unique()))
    epochs = ", ".join(str(e) for e in sorted(df["epochs"].dropna().unique()))
    seeds = ", ".join(str(s) for s in sorted(df["seed"].dropna().unique()))
    backends = ", ".join(sorted(str(b) for b in df["backend"].dropna().unique())) or "?"
    cores = ", ".join(f"{c:g}" for c in sorted(df["cores"].dropna().unique())) or "?"
    threads = ", ".join(f"{t:g}" for t in sorted(df["threads_per_worker"].dropna().unique())) or "?"
    return [
        f"- Trials: {len(df)} ({status}); workers {workers}; epochs {epochs}; seeds {seeds}",
        f"- Backend: {backends}; cores available to a trial: {cores}; "
        f"threads per worker: {threads}",
    ]


def _problems(df: pd.DataFrame) -> list[str]:
    bad = df[df["status"] != "succeeded"]
    if bad.empty:
        return []
    lines = ["", "### Trials that did not succeed", ""]
    for _, trial in bad.iterrows():
        reason = " ".join(str(trial["reason"] or "unknown reason").split())
        lines.append(f"- `{trial['trial_id']}`: **{trial['status']}**: {reason}")
    lines.append("")
    lines.append(
        "They are rows of the table above, and left out of speedup, efficiency and the fits."
    )
    return lines


def _fmt(value: float, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}{unit}"


def _fit_row(fit: ScalingFit, model: ModelFit, reported: bool) -> str:
    name = "Amdahl" if model.model == "amdahl" else "USL"
    used = ", ".join(str(w) for w in model.workers) or "-"
    p = model.params
    if not model.fitted:
        params = "-"
    elif model.model == "amdahl":
        params = f"T1 = {p['T1_s']:.1f} s, s = {p['serial_fraction']:.3f}"
    else:
        params = f"T1 = {p['T1_s']:.1f} s, a = {p['contention']:.4f}, b = {p['coherency']:.5f}"
    if not model.fitted:
        best = time = "-"
    elif model.model == "amdahl" and model.params["serial_fraction"] >= 0.999:
        best, time = "none (no speedup)", "-"
    elif model.best_workers is None:
        best, time = "none (keeps falling)", f"→ {_fmt(model.best_time_s)} s"
    else:
        best, time = (
            f"{model.best_workers} (n* = {_fmt(model.best_n, 2)})",
            f"{_fmt(model.best_time_s)} s",
        )
    kind = "reported" if reported else "other point set"
    note = model.message.replace("|", "/") or "-"
    return (
        f"| {fit.label} | {name} ({kind}) | {model.points}: {used} | {params} | {best} | {time} | "
        f"{_fmt(model.rmse_s, 2, ' s')} | {note} |"
    )


def scaling_section(fits: list[ScalingFit]) -> list[str]:
    """The fitted models as a Markdown table (reported fits first, then the other point set)."""
    if not fits:
        return ["No succeeded trial: nothing to fit."]
    lines = [
        "| Budget | Model | Worker counts used | Parameters | Best workers | Predicted time "
        "| RMSE | Note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fit in fits:
        lines += [_fit_row(fit, fit.amdahl, True), _fit_row(fit, fit.usl, True)]
        lines += [_fit_row(fit, model, False) for model in fit.alternatives]
    lines += [
        "",
        "Amdahl: T(n) = T1 (s + (1 - s)/n), serial fraction s; time falls toward T1 s, so it",
        "has no best worker count. USL: T(n) = T1 (1 + a (n - 1) + b n (n - 1)) / n, contention a",
        "and coherency b (the cost of workers keeping each other in sync, which makes time rise",
        "again); best n* = sqrt((1 - a)/b). Fitted by non-negative least squares on relative",
        "errors of the mean time per worker count. Amdahl needs >= 2 distinct worker counts, the",
        "USL >= 3; with exactly that many the curve passes through the points and predicts",
        "without testing.",
    ]
    return lines


def _usage_lines(trial: pd.Series | None, usage_plots: list[str]) -> list[str]:
    if trial is None:
        return ["No succeeded trial: no usage figures."]
    lines = [
        f"Trial `{trial['trial_id']}` (choose another with `--trial`). Means and peaks per worker:",
        "",
        "| Worker | CPU mean (cores) | CPU peak | Memory mean (MiB) | Memory peak |",
        "|---|---|---|---|---|",
    ]
    cpu, mem = trial["cpu_cores"], trial["memory_mib"]
    for worker in sorted(set(cpu) | set(mem)):
        c, m = cpu.get(worker, {}), mem.get(worker, {})
        lines.append(
            f"| {worker} | {_fmt(c.get('mean'), 2)} | {_fmt(c.get('peak'), 2)} | "
            f"{_fmt(m.get('mean'), 0)} | {_fmt(m.get('peak'), 0)} |"
        )
    lines.append("")
    lines += [f"![{Path(p).stem}]({p})" for p in usage_plots]
    return lines


def render_report(
    sweep_dir: str,
    df: pd.DataFrame,
    table: pd.DataFrame,
    fits: list[ScalingFit],
    plots: dict[str, str],
    usage: Iterable[tuple[pd.Series, list[str]]],
    command: str,
) -> str:
    """The text of report.md. ``plots`` maps time/speedup/curves/scaling to relative PNG paths;
    ``usage`` pairs each chosen trial with its usage PNGs."""
    name = Path(sweep_dir).name
    lines = [
        f"# Scaling report: {name}",
        "",
        f"Made from the result files of `{sweep_dir}` by `{command}`.",
        "",
        "## Runs",
        "",
        *_runs(df),
        *_datasets(df),
        *_models(df),
        *_versions(df),
        "",
        "## Table 1",
        "",
        to_markdown(table).rstrip("\n"),
        "",
        "Also as `table.csv` (every mean, interval half-width, seed and trial id) and "
        "`table.tex` (booktabs).",
        "",
        HOW_TO_READ,
        *_problems(df),
        "",
        "## Scaling",
        "",
        f"![time taken against workers]({plots['time']})",
        "",
        f"![speedup and efficiency against workers]({plots['speedup']})",
        "",
        "### Scaling model",
        "",
        *scaling_section(fits),
        "",
        f"![scaling model]({plots['scaling']})",
        "",
        "## Validation curves",
        "",
        "Validation MRR and accuracy after each epoch of every trial, from its TensorBoard "
        "event files.",
        "",
        f"![validation curves]({plots['curves']})",
        "",
        "## CPU and memory per worker",
        "",
    ]
    usage = list(usage)
    if not usage:
        lines += _usage_lines(None, [])
    for trial, paths in usage:
        lines += [*_usage_lines(trial, paths), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
