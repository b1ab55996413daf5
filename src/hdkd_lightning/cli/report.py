"""hdkd-report: compare runs (mean ± std over seeds) -> report.md, report.csv, runs.csv, report.png.

    hdkd-report logs/distill_brain logs/student_brain/multiruns/2026-11-22_10-00-00 --out report/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hdkd-report",
        description="Group runs by the settings that differ between them (seeds excluded) and report test "
                    "accuracy, balanced accuracy, macro F1 and macro AUROC as mean ± std over seeds.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Failed and unfinished runs are listed, not averaged.\n\nExamples:\n"
               "  hdkd-report logs/ --out report/\n"
               "  hdkd-report logs/distill_brain logs/student_brain/multiruns/<date> --out report/\n"
               "  hdkd-report study/runs --out study/report --no-cost")
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, or folders holding runs (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: ./report)")
    parser.add_argument("--no-cost", action="store_true", help="skip the parameter / GFLOP count of each model")
    args = parser.parse_args(argv)

    from hdkd_lightning.evaluation.comparison import build_comparison, find_runs, load_run, write_comparison

    try:
        run_dirs = find_runs(args.paths)
    except FileNotFoundError as exc:
        print(f"hdkd-report: {exc}", file=sys.stderr)
        return 2
    if not run_dirs:
        print(f"hdkd-report: no runs (folders with run.json or config_resolved.yaml) below "
              f"{', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    report = build_comparison([load_run(d) for d in run_dirs], with_cost=not args.no_cost)
    files = write_comparison(report, args.out)
    print(files["markdown"].read_text())
    print("written: " + ", ".join(str(p) for p in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
