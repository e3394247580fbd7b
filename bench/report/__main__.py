"""``python -m bench.report results/<sweep> [--out DIR] [--trial ID ...]``: rebuild the report."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from bench.report.build import write_report
from bench.report.load import NoResultsError
from bench.report.scaling import POLICIES
from bench.store import unusable_folder
from trainer.config import take_verbose_flag, verbose


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Write Table 1 (md, csv, tex), plots (png, svg), the scaling fits and "
        "report.md from the result.json files of a sweep.",
    )
    parser.add_argument("sweep_dir", help="the sweep's folder, e.g. results/table1-2026-11-28")
    parser.add_argument("--out", help="where to write the report (default: the sweep folder)")
    parser.add_argument(
        "--trial",
        action="append",
        default=[],
        metavar="TRIAL_ID",
        help="trial of the CPU/memory figures (repeatable; default: the succeeded "
        "trial with the most workers)",
    )
    parser.add_argument("--formats", default="png,svg", help="plot formats (default: png,svg)")
    parser.add_argument(
        "--fit-oversubscribed",
        choices=POLICIES,
        default="auto",
        help="oversubscribed points in the scaling fit: auto (left out when enough "
        "others remain), exclude, include",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = take_verbose_flag(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    command = "python -m bench.report " + " ".join(argv)
    out = Path(args.out or args.sweep_dir)
    problem = unusable_folder(out)
    if problem:
        print(f"error: {out} cannot hold the report ({problem}): give --out <a writable folder>",
              file=sys.stderr, flush=True)
        return 2
    try:
        report = write_report(
            args.sweep_dir, args.out, args.trial, formats, args.fit_oversubscribed, command=command
        )
    except (NoResultsError, ValueError, OSError) as exc:
        if verbose():
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"Table 1 ({report.out_dir}/table.md):\n\n{report.table_md}")
    for fit in report.fits:
        print(f"{fit.label}:\n  {fit.amdahl.summary()}\n  {fit.usl.summary()}")
    print(f"\nreport: {report.out_dir / 'report.md'} ({len(report.files)} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
